// CudaBackend (include/focuspatch/backend/cuda.hpp): host-side bookkeeping around the kernels of
// this folder. Weights and activations live in device memory; each op is one or two launches on
// the backend's stream; host data crosses only in upload/write/read and the small index lists of
// embed_tokens and gather_rows.
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <vector>

#include "activation.cuh"
#include "anomaly_maps.cuh"
#include "attention.cuh"
#include "cuda_check.cuh"
#include "device_types.cuh"
#include "embedding.cuh"
#include "focuspatch/backend/cuda.hpp"
#include "focuspatch/core/half.hpp"
#include "gemm.cuh"
#include "layer_norm.cuh"
#include "memory_search.cuh"

namespace focuspatch {

namespace cuda_detail {
void* allocate_bytes(std::size_t bytes) {
  void* p = nullptr;
  const cudaError_t status = cudaMalloc(&p, bytes);
  if (status != cudaSuccess) {
    cudaGetLastError();
    fail("cuda backend: cannot allocate ", bytes, " bytes of device memory: ", cudaGetErrorString(status));
  }
  return p;
}
void free_bytes(void* p) noexcept {
  if (p) cudaFree(p);
}
}  // namespace cuda_detail

using cuda::check;

struct CudaBackend::State {
  int device = 0;
  CudaPrecision precision = CudaPrecision::F16;
  cudaStream_t stream = nullptr;
  std::string name;
  cuda::LinearGemm gemm;
  // Staging for the host index lists of embed_tokens and gather_rows; grows, is reused. Guarded
  // because several threads may enqueue through one backend.
  std::mutex staging_mutex;
  DeviceArray<int> ids;
  DeviceArray<long long> rows;
  // Memory search: a cuBLAS handle for its fp32 products and grow-only query/result/scratch buffers,
  // under staging_mutex too.
  cublasHandle_t blas = nullptr;
  DeviceArray<float> queries, distances, similarities;
  DeviceArray<float> grid, map, map_scratch;  // upsample_and_smooth

  // Makes this backend's GPU current for the calling thread: the CUDA runtime's current device is
  // per thread, and a model on GPU 1 may be used from threads that never selected it.
  void activate() const {
    int current = -1;
    if (cudaGetDevice(&current) != cudaSuccess || current != device) check(cudaSetDevice(device), "cudaSetDevice");
  }

  ~State() {
    int previous = -1;
    cudaGetDevice(&previous);
    cudaSetDevice(device);  // the handle and stream belong to it
    if (stream) cudaStreamSynchronize(stream);
    if (blas) cublasDestroy(blas);
    if (stream) cudaStreamDestroy(stream);
    if (previous >= 0) cudaSetDevice(previous);
  }
};

namespace {


// Host fp32 -> the backend's 16-bit encoding. fp16 tops out at 65504: a larger weight or input
// would silently become infinity and poison everything downstream, so it is refused.
std::vector<std::uint16_t> encode16(const float* values, std::size_t count, CudaPrecision precision, const std::string& what) {
  std::vector<std::uint16_t> bits(count);
  for (std::size_t i = 0; i < count; ++i) {
    const float v = values[i];
    if (precision == CudaPrecision::BF16) {
      bits[i] = float_to_bf16(v);
    } else {
      if (std::isfinite(v) && std::fabs(v) > 65504.0f)
        fail("cuda backend: ", what, " value ", v, " (element ", i, ") does not fit in fp16; use bf16 precision (--precision bf16)");
      bits[i] = float_to_half(v);
    }
  }
  return bits;
}

std::vector<float> decode16(const std::uint16_t* bits, std::size_t count, CudaPrecision precision) {
  std::vector<float> out(count);
  for (std::size_t i = 0; i < count; ++i) out[i] = precision == CudaPrecision::BF16 ? bf16_to_float(bits[i]) : half_to_float(bits[i]);
  return out;
}

// Device copies owned by a Weight.
struct WeightStorage {
  CudaBackend::Buffer values;
  CudaBackend::OperandBuffer operands;
};

}  // namespace

CudaBackend::CudaBackend(const CudaOptions& options) {
  int count = 0;
  if (const cudaError_t status = cudaGetDeviceCount(&count); status != cudaSuccess) {
    cudaGetLastError();
    fail("cuda backend: no usable CUDA device (", cudaGetErrorName(status), ": ", cudaGetErrorString(status), ")");
  }
  require(count > 0, "cuda backend: no CUDA device on this machine");
  require(options.device >= 0 && options.device < count, "cuda backend: device ", options.device, " requested but this machine has ",
          count);
  check(cudaSetDevice(options.device), "cudaSetDevice");
  cudaDeviceProp props{};
  check(cudaGetDeviceProperties(&props, options.device), "cudaGetDeviceProperties");
  require(props.major >= 8, "cuda backend: ", props.name, " has compute capability ", props.major, ".", props.minor,
          "; the kernels need 8.0 or newer (Ampere, Hopper)");
  state_ = std::make_shared<State>();  // after the checks: it creates the cuBLASLt handle on the device
  state_->device = options.device;
  state_->precision = options.precision;
  state_->name = std::string(props.name) + " (sm_" + std::to_string(props.major * 10 + props.minor) + ", " +
                 std::to_string(props.multiProcessorCount) + " SMs)";
  check(cudaStreamCreateWithFlags(&state_->stream, cudaStreamNonBlocking), "cudaStreamCreate");
  check(cublasCreate(&state_->blas), "cublasCreate");
}

CudaPrecision CudaBackend::precision() const { return state_->precision; }
std::string CudaBackend::device_name() const { return state_->name; }
void CudaBackend::synchronize() const {
  state_->activate();
  check(cudaStreamSynchronize(state_->stream), "synchronizing the stream");
}

CudaBackend::Buffer CudaBackend::allocate(std::size_t count) const {
  state_->activate();
  return Buffer(count);
}
CudaBackend::OperandBuffer CudaBackend::allocate_operands(std::size_t count) const {
  state_->activate();
  return OperandBuffer(count);
}

// ---- parameters ---------------------------------------------------------------------------------
CudaBackend::Weight CudaBackend::upload(const TensorView& view) const {
  state_->activate();
  std::vector<float> host(static_cast<std::size_t>(view.numel()));
  decode_to_float(view.dtype, view.data, host.size(), host.data());
  return upload(FloatTensor(view.shape, std::move(host)));
}

CudaBackend::Weight CudaBackend::upload(const FloatTensor& host) const {
  state_->activate();
  auto storage = std::make_shared<WeightStorage>();
  const auto count = static_cast<std::size_t>(host.numel());
  storage->values = allocate(count);
  write(storage->values.data(), host.data(), count);
  // Vectors also get a 16-bit copy: the bias of a product with a 16-bit output must be 16-bit.
  if (host.shape().size() == 1) {
    storage->operands = allocate_operands(count);
    write(storage->operands.data(), host.data(), count);
  }
  synchronize();  // the host vectors behind the asynchronous copies die with this call
  Weight w;
  w.data = storage->values.data();
  w.matrix = storage->operands.data();
  w.shape = host.shape();
  w.owner = std::move(storage);
  return w;
}

CudaBackend::Weight CudaBackend::upload_matrix(const TensorView& view) const {
  state_->activate();
  auto storage = std::make_shared<WeightStorage>();
  const auto count = static_cast<std::size_t>(view.numel());
  storage->operands = allocate_operands(count);
  const bool as_stored = (view.dtype == DType::F16 && state_->precision == CudaPrecision::F16) ||
                         (view.dtype == DType::BF16 && state_->precision == CudaPrecision::BF16);
  // On our stream, not cudaMemcpy's legacy default stream: our non-blocking stream does not wait for
  // that one, and a pageable cudaMemcpy returns before its last DMA lands, so a product enqueued next
  // could read a partly written weight. Waited for below, as in upload(), while `bits` still lives.
  std::vector<std::uint16_t> bits;
  if (as_stored) {  // straight from the mapped file
    check(cudaMemcpyAsync(storage->operands.data(), view.data, count * sizeof(Operand), cudaMemcpyHostToDevice, state_->stream),
          "uploading a weight matrix");
  } else {
    std::vector<float> host(count);
    decode_to_float(view.dtype, view.data, count, host.data());
    bits = encode16(host.data(), count, state_->precision, "weight matrix " + shape_string(view.shape));
    check(cudaMemcpyAsync(storage->operands.data(), bits.data(), count * sizeof(Operand), cudaMemcpyHostToDevice, state_->stream),
          "uploading a weight matrix");
  }
  synchronize();
  Weight w;
  w.matrix = storage->operands.data();
  w.shape = view.shape;
  w.owner = std::move(storage);
  return w;
}

// ---- transfers ----------------------------------------------------------------------------------
// Copies from pageable host memory return once the data is staged, so the host side may be freed
// or reused as soon as they return.
void CudaBackend::write(float* dst, const float* host, std::size_t count) const {
  state_->activate();
  if (count) check(cudaMemcpyAsync(dst, host, count * sizeof(float), cudaMemcpyHostToDevice, state_->stream), "write to device");
}
void CudaBackend::write(Operand* dst, const float* host, std::size_t count) const {
  state_->activate();
  if (!count) return;
  const auto bits = encode16(host, count, state_->precision, "input");
  check(cudaMemcpyAsync(dst, bits.data(), count * sizeof(Operand), cudaMemcpyHostToDevice, state_->stream), "write to device");
  synchronize();  // `bits` dies here; not a hot path (inputs of tests and tools)
}
void CudaBackend::read(const float* src, float* host, std::size_t count) const {
  state_->activate();
  if (count) check(cudaMemcpyAsync(host, src, count * sizeof(float), cudaMemcpyDeviceToHost, state_->stream), "read from device");
  synchronize();
}
void CudaBackend::read(const Operand* src, float* host, std::size_t count) const {
  state_->activate();
  std::vector<std::uint16_t> bits(count);
  if (count) check(cudaMemcpyAsync(bits.data(), src, count * sizeof(Operand), cudaMemcpyDeviceToHost, state_->stream), "read from device");
  synchronize();
  const auto values = decode16(bits.data(), count, state_->precision);
  std::copy(values.begin(), values.end(), host);
}
void CudaBackend::copy(const float* src, float* dst, std::size_t count) const {
  state_->activate();
  if (count) check(cudaMemcpyAsync(dst, src, count * sizeof(float), cudaMemcpyDeviceToDevice, state_->stream), "device copy");
}

// ---- compute --------------------------------------------------------------------------------------
namespace {
struct LinearShape {
  std::int64_t out, in;
};
LinearShape checked_linear(const CudaBackend::Weight& w, const CudaBackend::Weight* bias, Epilogue epilogue, bool accumulate) {
  require(w.matrix != nullptr && w.shape.size() >= 2, "cuda linear: the weight was not uploaded as a matrix (upload_matrix)");
  const std::int64_t out = w.shape.at(0);
  require(!bias || (bias->numel() == out && bias->data), "cuda linear: bias of ", bias ? bias->numel() : 0, " values for ", out,
          " outputs (a bias is uploaded with upload())");
  // The GEMM adds into y before our kernel applies the activation, which would give act(y + x W^T + b).
  require(!accumulate || epilogue == Epilogue::None, "cuda linear: accumulating an activated output is not supported");
  return {out, out == 0 ? 0 : w.numel() / out};
}
}  // namespace

void CudaBackend::linear(const Operand* x, std::int64_t rows, const Weight& w, const Weight* bias, float* y, Epilogue epilogue,
                         bool accumulate) const {
  state_->activate();
  const auto [out, in] = checked_linear(w, bias, epilogue, accumulate);
  // An activation is applied by our kernel, which adds the bias in the same pass.
  const bool fuse_bias = bias && epilogue == Epilogue::None;
  const bool fused = state_->gemm.run(state_->precision, x, rows, w.matrix, out, in, fuse_bias ? bias->data : nullptr, true, y,
                                      accumulate, state_->stream);
  const float* pending_bias = bias && !(fuse_bias && fused) ? bias->data : nullptr;
  cuda::bias_activation(y, rows, static_cast<int>(out), pending_bias, epilogue, state_->stream);
}

void CudaBackend::linear(const Operand* x, std::int64_t rows, const Weight& w, const Weight* bias, Operand* y, Epilogue epilogue,
                         bool accumulate) const {
  state_->activate();
  const auto [out, in] = checked_linear(w, bias, epilogue, accumulate);
  require(!bias || bias->matrix, "cuda linear: the bias has no 16-bit copy (upload it with upload())");
  const bool fuse_bias = bias && epilogue == Epilogue::None;
  const bool fused = state_->gemm.run(state_->precision, x, rows, w.matrix, out, in, fuse_bias ? bias->matrix : nullptr, false, y,
                                      accumulate, state_->stream);
  const float* pending_bias = bias && !(fuse_bias && fused) ? bias->data : nullptr;
  cuda::with_precision(state_->precision, [&](auto zero) {
    using T = decltype(zero);
    cuda::bias_activation(reinterpret_cast<T*>(y), rows, static_cast<int>(out), pending_bias, epilogue, state_->stream);
  });
}

namespace {
void require_layer_norm_parameters(const CudaBackend::Weight& gamma, const CudaBackend::Weight& beta) {
  require(gamma.data && beta.data && gamma.numel() == beta.numel() && gamma.numel() <= std::numeric_limits<int>::max(),
          "cuda layer_norm: gamma of ", gamma.numel(), " and beta of ", beta.numel(), " values");
}
}  // namespace

void CudaBackend::layer_norm(const float* x, std::int64_t rows, const Weight& gamma, const Weight& beta, float eps, float* y) const {
  state_->activate();
  require_layer_norm_parameters(gamma, beta);
  cuda::layer_norm(x, rows, static_cast<int>(gamma.numel()), gamma.data, beta.data, eps, y, state_->stream);
}

void CudaBackend::layer_norm(const float* x, std::int64_t rows, const Weight& gamma, const Weight& beta, float eps, Operand* y) const {
  state_->activate();
  require_layer_norm_parameters(gamma, beta);
  cuda::with_precision(state_->precision, [&](auto zero) {
    using T = decltype(zero);
    cuda::layer_norm(x, rows, static_cast<int>(gamma.numel()), gamma.data, beta.data, eps, reinterpret_cast<T*>(y), state_->stream);
  });
}

void CudaBackend::attention(const Operand* qkv, std::int64_t batch, std::int64_t seq, int heads, int head_dim, bool causal, Operand* out,
                            AttentionKind kind) const {
  state_->activate();
  cuda::with_precision(state_->precision, [&](auto zero) {
    using T = decltype(zero);
    cuda::attention(reinterpret_cast<const T*>(qkv), batch, seq, heads, head_dim, causal, kind == AttentionKind::ValueValue,
                    reinterpret_cast<T*>(out), state_->stream);
  });
}

void CudaBackend::patchify(const float* images, std::int64_t batch, int size, int patch, Operand* patches) const {
  state_->activate();
  cuda::with_precision(state_->precision, [&](auto zero) {
    using T = decltype(zero);
    cuda::patchify(images, batch, size, patch, reinterpret_cast<T*>(patches), state_->stream);
  });
}

void CudaBackend::assemble_vision_tokens(const float* patch_embeds, const Weight& cls, const Weight& pos, std::int64_t batch,
                                         std::int64_t seq, float* tokens) const {
  state_->activate();
  cuda::assemble_vision_tokens(patch_embeds, cls.data, pos.data, batch, seq, static_cast<int>(cls.numel()), tokens, state_->stream);
}

void CudaBackend::embed_tokens(std::span<const std::int32_t> ids, std::int64_t seq, const Weight& table, const Weight& pos,
                               float* out) const {
  state_->activate();
  std::lock_guard lock(state_->staging_mutex);
  if (state_->ids.size() < ids.size()) state_->ids = DeviceArray<int>(ids.size());
  if (!ids.empty())
    check(cudaMemcpyAsync(state_->ids.data(), ids.data(), ids.size_bytes(), cudaMemcpyHostToDevice, state_->stream), "staging token ids");
  cuda::embed_tokens(state_->ids.data(), static_cast<long long>(ids.size()), seq, static_cast<int>(table.shape.at(1)), table.data,
                     pos.data, out, state_->stream);
}

void CudaBackend::add_positions(float* x, std::int64_t rows, std::int64_t seq, const Weight& pos) const {
  state_->activate();
  cuda::add_positions(x, rows, seq, static_cast<int>(pos.shape.at(1)), pos.data, state_->stream);
}

void CudaBackend::gather_rows(const float* x, std::int64_t width, std::span<const std::int64_t> rows, float* out) const {
  state_->activate();
  std::lock_guard lock(state_->staging_mutex);
  if (state_->rows.size() < rows.size()) state_->rows = DeviceArray<long long>(rows.size());
  static_assert(sizeof(long long) == sizeof(std::int64_t));
  if (!rows.empty())
    check(cudaMemcpyAsync(state_->rows.data(), rows.data(), rows.size_bytes(), cudaMemcpyHostToDevice, state_->stream),
          "staging row indices");
  cuda::gather_rows(x, static_cast<int>(width), state_->rows.data(), static_cast<long long>(rows.size()), out, state_->stream);
}

// ---- anomaly ------------------------------------------------------------------------------------------
std::vector<float> CudaBackend::nearest_cosine_distances(std::span<const float> queries, std::int64_t rows, const Weight& memory) const {
  state_->activate();
  require(memory.data && memory.shape.size() == 2 && memory.shape[0] > 0,
          "cuda memory search: the memory is not an uploaded [rows, D] matrix");
  const std::int64_t dim = memory.shape[1], memory_rows = memory.shape[0];
  require(rows > 0 && static_cast<std::int64_t>(queries.size()) == rows * dim, "cuda memory search: ", queries.size(),
          " query values for ", rows, " rows of ", dim);
  // As MemoryBank's search: the similarity block stays P x 4096 floats however large the bank.
  constexpr long long kBlockRows = 4096;
  std::lock_guard lock(state_->staging_mutex);
  State& s = *state_;
  auto grow = [](DeviceArray<float>& a, std::size_t n) {
    if (a.size() < n) a = DeviceArray<float>(n);
  };
  grow(s.queries, queries.size());
  grow(s.distances, static_cast<std::size_t>(rows));
  grow(s.similarities, cuda::nearest_cosine_scratch_floats(rows, kBlockRows));
  check(cudaMemcpyAsync(s.queries.data(), queries.data(), queries.size_bytes(), cudaMemcpyHostToDevice, s.stream), "staging queries");
  cuda::nearest_cosine_distances(s.blas, s.queries.data(), rows, memory.data, memory_rows, dim, s.distances.data(), s.similarities.data(),
                                 kBlockRows, s.stream);
  std::vector<float> out(static_cast<std::size_t>(rows));
  check(cudaMemcpyAsync(out.data(), s.distances.data(), out.size() * sizeof(float), cudaMemcpyDeviceToHost, s.stream), "reading distances");
  synchronize();
  return out;
}

std::vector<float> CudaBackend::upsample_and_smooth(std::span<const float> grid, std::int64_t grid_h, std::int64_t grid_w,
                                                    std::int64_t out_h, std::int64_t out_w, double sigma) const {
  state_->activate();
  require(grid_h > 0 && grid_w > 0 && out_h > 0 && out_w > 0 && static_cast<std::int64_t>(grid.size()) == grid_h * grid_w,
          "cuda upsample_and_smooth: a ", grid_h, "x", grid_w, " map of ", grid.size(), " values to ", out_h, "x", out_w);
  // The same convention as the CPU version (anomaly_map.hpp): scipy's truncate = 4.
  constexpr double kTruncate = 4.0;
  std::lock_guard lock(state_->staging_mutex);
  State& s = *state_;
  const auto pixels = static_cast<std::size_t>(out_h * out_w);
  if (s.grid.size() < grid.size()) s.grid = DeviceArray<float>(grid.size());
  if (s.map.size() < pixels) s.map = DeviceArray<float>(pixels), s.map_scratch = DeviceArray<float>(pixels);
  check(cudaMemcpyAsync(s.grid.data(), grid.data(), grid.size_bytes(), cudaMemcpyHostToDevice, s.stream), "staging a map");
  cuda::upsample_bilinear(s.grid.data(), grid_h, grid_w, s.map.data(), out_h, out_w, s.stream);
  cuda::gaussian_smooth(s.map.data(), out_h, out_w, sigma, kTruncate, s.map.data(), s.map_scratch.data(), s.stream);
  std::vector<float> out(pixels);
  check(cudaMemcpyAsync(out.data(), s.map.data(), pixels * sizeof(float), cudaMemcpyDeviceToHost, s.stream), "reading a map");
  synchronize();
  return out;
}

}  // namespace focuspatch
