// Nearest normal patch by cosine, blocked over the memory bank.
//
// Cost, for P query patches, N memory patches of width D (e.g. P = 1369, N = 4096 per block,
// D = 768): the similarities are a GEMM of 2 P N D flops (8.6 GFLOP per 4096-row block) reading
// (P + N) D floats, so it is compute-bound (P N / (2 (P + N)) flops per byte of operands, ~500). Each
// block's P x B similarities are written once by cuBLAS and read once by the max-fold kernel:
// 8 P N bytes in all, D / 4 flops per byte of that round trip (192 at D = 768), well above an
// H100's fp32 ridge (~50 TFLOP/s over ~3 TB/s, about 17), so the round trip costs a few percent
// of the GEMM. Fusing the maximum into a hand-written GEMM epilogue would save only that and give
// up cuBLAS's tuned fp32 kernels. The scratch holds one block (P x B floats, 22 MB at the sizes
// above) however large the bank is.
//
// The fold reads each query's B similarities contiguously (the GEMM writes them so: column-major
// C = memory_block * queries^T with ldc = B), one warp per query, so every load is a coalesced
// 128-byte line. Row normalisation is one warp per row with the squared norm in double, as the
// CPU code does, so its output equals MemoryBank's up to the order of that double sum.
#include "memory_search.cuh"

#include <climits>
#include <cmath>
#include <cstdint>

#include "cuda_check.cuh"
#include "focuspatch/core/error.hpp"

namespace focuspatch::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / kWarp;
constexpr unsigned kFullMask = 0xffffffffu;

// Folds one block of similarities into the running maximum of each query. sims holds query q's
// `rows` similarities at sims[q * rows ...]. best[q] is read unless this is the first block and
// written as the running maximum, or as the final distance clamp(1 - max, 0, 2) after the last
// block. NaN is sticky: fmaxf would drop it, hiding a broken input behind a plausible distance.
__global__ void fold_block_max(const float* __restrict__ sims, long long query_rows, long long rows, float* __restrict__ best,
                               bool first_block, bool last_block) {
  const long long q = static_cast<long long>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / kWarp;
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  if (q >= query_rows) return;  // uniform across the warp: all its lanes share q
  const float* row = sims + q * rows;
  float m = -INFINITY;
  bool saw_nan = false;
  for (long long b = lane; b < rows; b += kWarp) {
    const float v = row[b];
    saw_nan = saw_nan || isnan(v);
    m = fmaxf(m, v);
  }
  for (int offset = kWarp / 2; offset > 0; offset /= 2) m = fmaxf(m, __shfl_xor_sync(kFullMask, m, offset));
  saw_nan = __any_sync(kFullMask, saw_nan);
  if (lane != 0) return;
  const float previous = first_block ? -INFINITY : best[q];
  float running = fmaxf(previous, m);
  if (saw_nan || isnan(previous)) running = NAN;
  if (last_block && !isnan(running)) running = fminf(fmaxf(__fsub_rn(1.0f, running), 0.0f), 2.0f);
  best[q] = running;
}

// One warp per row (grid-stride over rows). The squared norm is summed in double like the CPU
// code (the products of floats are exact in double; only the order of the sum differs) and the
// butterfly leaves the same sum in every lane, so the degenerate test is warp-uniform. The _rn
// intrinsics keep the compiler from fusing multiply-adds, so each step rounds as the CPU's does.
__global__ void normalize_rows_kernel(float* __restrict__ rows, long long count, long long dim, int* degenerate_rows) {
  const int lane = static_cast<int>(threadIdx.x % kWarp);
  const long long first = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x / kWarp;
  for (long long r = first; r < count; r += stride) {
    float* row = rows + r * dim;
    double sq = 0.0;
    for (long long j = lane; j < dim; j += kWarp) {
      const double v = row[j];
      sq = __dadd_rn(sq, __dmul_rn(v, v));
    }
    for (int offset = kWarp / 2; offset > 0; offset /= 2) sq = __dadd_rn(sq, __shfl_xor_sync(kFullMask, sq, offset));
    if (isfinite(sq) && sq > 0.0) {
      const double inv = __ddiv_rn(1.0, __dsqrt_rn(sq));
      for (long long j = lane; j < dim; j += kWarp) row[j] = __double2float_rn(__dmul_rn(static_cast<double>(row[j]), inv));
    } else {
      for (long long j = lane; j < dim; j += kWarp) row[j] = NAN;
      if (lane == 0 && degenerate_rows != nullptr) atomicAdd(degenerate_rows, 1);
    }
  }
}

// Sets the handle's stream and host pointer mode (alpha and beta live on the host) for the
// duration of a call, and puts the caller's back afterwards, also when a check throws.
// cublasSetStream resets a workspace set with cublasSetWorkspace, so the stream is only touched
// when it differs from the one asked for.
class HandleState {
 public:
  HandleState(cublasHandle_t handle, cudaStream_t stream) : handle_(handle) {
    check(cublasGetStream(handle_, &saved_stream_), "cublasGetStream");
    check(cublasGetPointerMode(handle_, &saved_mode_), "cublasGetPointerMode");
    try {
      if (saved_stream_ != stream) {
        check(cublasSetStream(handle_, stream), "cublasSetStream");
        stream_changed_ = true;
      }
      if (saved_mode_ != CUBLAS_POINTER_MODE_HOST) {
        check(cublasSetPointerMode(handle_, CUBLAS_POINTER_MODE_HOST), "cublasSetPointerMode");
        mode_changed_ = true;
      }
    } catch (...) {
      restore();
      throw;
    }
  }
  ~HandleState() { restore(); }
  HandleState(const HandleState&) = delete;
  HandleState& operator=(const HandleState&) = delete;

 private:
  // Best effort: a destructor cannot report, and a failure here means the context is already broken.
  void restore() noexcept {
    if (mode_changed_) cublasSetPointerMode(handle_, saved_mode_);
    if (stream_changed_) cublasSetStream(handle_, saved_stream_);
    mode_changed_ = stream_changed_ = false;
  }

  cublasHandle_t handle_;
  cudaStream_t saved_stream_ = nullptr;
  cublasPointerMode_t saved_mode_ = CUBLAS_POINTER_MODE_HOST;
  bool stream_changed_ = false;
  bool mode_changed_ = false;
};

}  // namespace

std::size_t nearest_cosine_scratch_floats(long long query_rows, long long block_rows) {
  require(query_rows > 0, "nearest_cosine_scratch_floats: query rows must be positive, got ", query_rows);
  require(block_rows > 0, "nearest_cosine_scratch_floats: block rows must be positive, got ", block_rows);
  require(query_rows <= LLONG_MAX / block_rows, "nearest_cosine_scratch_floats: ", query_rows, " x ", block_rows,
          " similarities overflow a 64-bit count");
  return static_cast<std::size_t>(query_rows) * static_cast<std::size_t>(block_rows);
}

void nearest_cosine_distances(cublasHandle_t handle, const float* queries, long long query_rows, const float* memory,
                              long long memory_rows, long long dim, float* distances, float* scratch, long long block_rows,
                              cudaStream_t stream) {
  const char* what = "nearest_cosine_distances";
  require(query_rows > 0, what, ": there are no query rows (", query_rows, ")");
  require(memory_rows > 0, what, ": the memory bank has no rows (", memory_rows, "), nothing to compare with");
  require(dim > 0, what, ": feature dimension must be positive, got ", dim);
  require(block_rows > 0, what, ": block rows must be positive, got ", block_rows);
  // cuBLAS takes int sizes and leading dimensions.
  const long long block = block_rows < memory_rows ? block_rows : memory_rows;
  require(query_rows <= INT_MAX && dim <= INT_MAX && block <= INT_MAX, what, ": ", query_rows, " queries, block of ", block,
          " memory rows or dimension ", dim, " exceeds cuBLAS's int sizes (", INT_MAX, ")");
  require(memory_rows <= LLONG_MAX / dim && query_rows <= LLONG_MAX / dim, what, ": ", memory_rows, " or ", query_rows,
          " rows of ", dim, " values overflow a 64-bit offset");
  nearest_cosine_scratch_floats(query_rows, block);  // checks the scratch size fits
  require(handle != nullptr, what, ": the cuBLAS handle is null");
  require(queries != nullptr && memory != nullptr && distances != nullptr && scratch != nullptr, what,
          ": a device pointer is null (queries, memory, distances or scratch)");

  HandleState state(handle, stream);
  const float alpha = 1.0f, beta = 0.0f;
  const unsigned grid = blocks_for(query_rows, kWarpsPerBlock);
  for (long long start = 0; start < memory_rows; start += block) {
    const long long rows = block < memory_rows - start ? block : memory_rows - start;
    // Column-major C [rows, P] = (memory block [D, rows])^T * queries [D, P]: query q's
    // similarities are C's column q, contiguous at scratch + q * rows.
    const int m = static_cast<int>(rows), n = static_cast<int>(query_rows), k = static_cast<int>(dim);
    check(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, memory + start * dim, CUDA_R_32F, k, queries,
                       CUDA_R_32F, k, &beta, scratch, CUDA_R_32F, m, CUBLAS_COMPUTE_32F_PEDANTIC, CUBLAS_GEMM_DEFAULT),
          "cublasGemmEx (query x memory block similarities)");
    fold_block_max<<<grid, kThreads, 0, stream>>>(scratch, query_rows, rows, distances, start == 0, start + rows >= memory_rows);
    check_launch("fold_block_max");
  }
}

void normalize_rows(float* rows, long long count, long long dim, cudaStream_t stream, int* degenerate_rows) {
  require(count > 0, "normalize_rows: there are no rows (", count, ")");
  require(dim > 0, "normalize_rows: row width must be positive, got ", dim);
  require(rows != nullptr, "normalize_rows: the device pointer is null");
  require(count <= LLONG_MAX / dim, "normalize_rows: ", count, " rows of ", dim, " values overflow a 64-bit offset");
  // Enough warps to fill any current GPU; more rows are covered by the grid-stride loop.
  constexpr long long kMaxBlocks = 8192;
  const long long wanted = (count + kWarpsPerBlock - 1) / kWarpsPerBlock;
  const auto grid = static_cast<unsigned>(wanted < kMaxBlocks ? wanted : kMaxBlocks);
  normalize_rows_kernel<<<grid, kThreads, 0, stream>>>(rows, count, dim, degenerate_rows);
  check_launch("normalize_rows_kernel");
}

}  // namespace focuspatch::cuda
