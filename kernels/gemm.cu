// cuBLASLt column-major view of a row-major linear layer: y^T[out, rows] = W[out, in] x^T[in, rows],
// with W read as its row-major [out, in] = column-major [in, out] transposed (TRANSA = T) and x as
// column-major [in, rows] (TRANSB = N): the "TN" layout tensor-core GEMMs run fastest, no copies.
// The bias epilogue adds a vector of length `out` (D's rows in this view) to every column.
#include <vector>

#include "cuda_check.cuh"
#include "gemm.cuh"

namespace focuspatch::cuda {

namespace {
// cuBLAS's recommendation for Hopper; Ampere needs less, and one buffer serves every plan.
constexpr std::size_t kWorkspaceBytes = 32u << 20;

cudaDataType_t operand_type(Precision p) { return p == Precision::BF16 ? CUDA_R_16BF : CUDA_R_16F; }
}  // namespace

struct LinearGemm::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool fused_bias = false;

  ~Plan() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

LinearGemm::LinearGemm() {
  check(cublasLtCreate(&handle_), "cublasLtCreate");
  if (const cudaError_t status = cudaMalloc(&workspace_, kWorkspaceBytes); status != cudaSuccess) {
    cublasLtDestroy(handle_);  // the destructor does not run for a constructor that throws
    check(status, "cudaMalloc of the cuBLASLt workspace");
  }
  workspace_bytes_ = kWorkspaceBytes;
}

LinearGemm::~LinearGemm() {
  plans_.clear();
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(handle_);
}

LinearGemm::Plan& LinearGemm::plan_for(Precision precision, long long rows, long long out, long long in, bool bias, bool y_is_f32,
                                       bool accumulate) {
  const Key key{static_cast<int>(precision), rows, out, in, bias, y_is_f32, accumulate};
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;

  const cudaDataType_t ab = operand_type(precision);
  const cudaDataType_t cd = y_is_f32 ? CUDA_R_32F : ab;
  auto make = [&](bool with_bias) {
    auto plan = std::make_unique<Plan>();
    check(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    const cublasOperation_t transpose = CUBLAS_OP_T, keep = CUBLAS_OP_N;
    check(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof transpose), "set TRANSA");
    check(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof keep), "set TRANSB");
    const cublasLtEpilogue_t epilogue = with_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    check(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue), "set EPILOGUE");
    check(cublasLtMatrixLayoutCreate(&plan->a, ab, static_cast<std::uint64_t>(in), static_cast<std::uint64_t>(out), in),
          "layout of W");
    check(cublasLtMatrixLayoutCreate(&plan->b, ab, static_cast<std::uint64_t>(in), static_cast<std::uint64_t>(rows), in),
          "layout of x");
    check(cublasLtMatrixLayoutCreate(&plan->c, cd, static_cast<std::uint64_t>(out), static_cast<std::uint64_t>(rows), out),
          "layout of y");

    cublasLtMatmulPreference_t preference = nullptr;
    check(cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate");
    check(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_,
                                               sizeof workspace_bytes_),
          "set MAX_WORKSPACE_BYTES");
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t status =
        cublasLtMatmulAlgoGetHeuristic(handle_, plan->desc, plan->a, plan->b, plan->c, plan->c, preference, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(preference);
    if (status != CUBLAS_STATUS_SUCCESS || found == 0) return std::unique_ptr<Plan>{};
    plan->algo = result.algo;
    plan->fused_bias = with_bias;
    return plan;
  };
  std::unique_ptr<Plan> plan = make(bias);
  if (!plan && bias) plan = make(false);  // bias then added by the caller's kernel
  require(plan != nullptr, "cuda linear: cuBLASLt has no algorithm for ", rows, " x ", in, " times ", in, " x ", out,
          y_is_f32 ? " (fp32 output)" : " (16-bit output)");
  return *plans_.emplace(key, std::move(plan)).first->second;
}

bool LinearGemm::run(Precision precision, const void* x, long long rows, const void* w, long long out, long long in,
                     const void* bias, bool y_is_f32, void* y, bool accumulate, cudaStream_t stream) {
  require(rows >= 0 && out > 0 && in > 0, "cuda linear: bad shape ", rows, " x ", in, " -> ", out);
  require(!accumulate || y_is_f32, "cuda linear: accumulating into a 16-bit output is not supported");
  if (rows == 0) return true;
  std::lock_guard lock(mutex_);
  Plan& plan = plan_for(precision, rows, out, in, bias != nullptr, y_is_f32, accumulate);
  if (plan.fused_bias)
    check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias), "set BIAS_POINTER");
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  check(cublasLtMatmul(handle_, plan.desc, &alpha, w, plan.a, x, plan.b, &beta, y, plan.c, y, plan.c, &plan.algo, workspace_,
                       workspace_bytes_, stream),
        "cublasLtMatmul");
  return plan.fused_bias || bias == nullptr;
}

}  // namespace focuspatch::cuda
