#pragma once
// The CUDA backend: the same op set as CpuBackend (backend/cpu.hpp), run on one NVIDIA GPU by the
// kernels in kernels/ and cuBLASLt. This header needs no CUDA headers; the implementation is the
// compiled library focuspatch::cuda (link it, and define nothing).
//
// Numbers: the residual streams, LayerNorm, softmax and every accumulation are fp32; what feeds a
// matrix product (weight matrices, normalized activations, q/k/v, attention output, MLP hidden)
// is 16-bit (fp16 by default, bf16 on request), so products run on tensor cores. This is the
// split PyTorch's autocast makes, and it keeps the long residual sums out of fp16's 11-bit mantissa.
//
// Weights are uploaded once; .fpw fp16 (or bf16, with bf16 precision) matrices go to the device as
// they are. Every op is enqueued on the backend's own stream; read() waits for it. One backend may
// serve several threads, each with its own workspace: their work is serialized on the stream; every
// op makes the backend's GPU current for the calling thread first.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "focuspatch/backend/ops.hpp"
#include "focuspatch/core/tensor.hpp"

namespace focuspatch {

enum class CudaPrecision { F16, BF16 };

struct CudaOptions {
  int device = 0;
  CudaPrecision precision = CudaPrecision::F16;
};

namespace cuda_detail {
void* allocate_bytes(std::size_t bytes);  // device memory; throws with the size and the reason
void free_bytes(void* p) noexcept;
}  // namespace cuda_detail

class CudaBackend {
 public:
  static constexpr const char* name() { return "cuda"; }

  // One fp16 or bf16 value in device memory (which of the two is the backend's precision()).
  struct Operand {
    std::uint16_t bits;
  };

  // Device memory for count elements of T; empty when count is 0.
  template <class T>
  class DeviceArray {
   public:
    DeviceArray() = default;
    explicit DeviceArray(std::size_t count)
        : count_(count), data_(count ? static_cast<T*>(cuda_detail::allocate_bytes(count * sizeof(T))) : nullptr) {}
    T* data() { return data_.get(); }
    const T* data() const { return data_.get(); }
    std::size_t size() const { return count_; }

   private:
    struct Free {
      void operator()(T* p) const noexcept { cuda_detail::free_bytes(p); }
    };
    std::size_t count_ = 0;
    std::unique_ptr<T, Free> data_;
  };
  using Buffer = DeviceArray<float>;
  using OperandBuffer = DeviceArray<Operand>;

  // A read-only parameter on the device. data: fp32 copy (vectors, tables, anything read by
  // element); matrix: 16-bit copy in the backend's precision (linear weights, and vectors too so
  // they can serve as the bias of a 16-bit product). Either may be null when not needed.
  struct Weight {
    const float* data = nullptr;
    const Operand* matrix = nullptr;
    Shape shape;
    std::shared_ptr<void> owner;
    std::int64_t numel() const { return element_count(shape); }
  };

  // Throws (with the CUDA error) when the device is missing, unusable or older than compute
  // capability 8.0 (the kernels are built for sm_80 and sm_90).
  explicit CudaBackend(const CudaOptions& options);
  CudaBackend() : CudaBackend(CudaOptions{}) {}

  CudaPrecision precision() const;
  std::string device_name() const;    // e.g. "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)"
  void synchronize() const;           // waits for all enqueued work; reports errors of earlier kernels

  Weight upload(const TensorView& view) const;         // fp32 copy (+ 16-bit copy for vectors)
  Weight upload_matrix(const TensorView& view) const;  // 16-bit copy only
  Weight upload(const FloatTensor& host) const;
  Buffer allocate(std::size_t count) const;  // on this backend's GPU, whichever thread asks
  OperandBuffer allocate_operands(std::size_t count) const;

  // Host <-> device, counts in elements; operands are converted from/to fp32 on the way.
  void write(float* dst, const float* host, std::size_t count) const;
  void write(Operand* dst, const float* host, std::size_t count) const;
  void read(const float* src, float* host, std::size_t count) const;
  void read(const Operand* src, float* host, std::size_t count) const;
  void copy(const float* src, float* dst, std::size_t count) const;

  // y[rows, out] (=|+=) act(x[rows, in] W^T + b); accumulate adds into y (fp32 outputs only).
  void linear(const Operand* x, std::int64_t rows, const Weight& w, const Weight* bias, float* y,
              Epilogue epilogue = Epilogue::None, bool accumulate = false) const;
  void linear(const Operand* x, std::int64_t rows, const Weight& w, const Weight* bias, Operand* y,
              Epilogue epilogue = Epilogue::None, bool accumulate = false) const;

  // Rows of gamma.numel() values; y may be x (fp32 in place).
  void layer_norm(const float* x, std::int64_t rows, const Weight& gamma, const Weight& beta, float eps, float* y) const;
  void layer_norm(const float* x, std::int64_t rows, const Weight& gamma, const Weight& beta, float eps, Operand* y) const;

  void attention(const Operand* qkv, std::int64_t batch, std::int64_t seq, int heads, int head_dim, bool causal, Operand* out,
                 AttentionKind kind = AttentionKind::QueryKey) const;

  void patchify(const float* images, std::int64_t batch, int size, int patch, Operand* patches) const;
  void assemble_vision_tokens(const float* patch_embeds, const Weight& cls, const Weight& pos, std::int64_t batch,
                              std::int64_t seq, float* tokens) const;
  void embed_tokens(std::span<const std::int32_t> ids, std::int64_t seq, const Weight& table, const Weight& pos, float* out) const;
  void add_positions(float* x, std::int64_t rows, std::int64_t seq, const Weight& pos) const;
  void gather_rows(const float* x, std::int64_t width, std::span<const std::int64_t> rows, float* out) const;

  // Few-shot memory search (anomaly/detector.hpp uses it when a backend has it): for each of `rows`
  // L2-normalised query rows (host memory) clamp(1 - the best cosine against memory's rows, 0, 2),
  // as MemoryBank's own search; memory is a category's normalised rows [M, D] uploaded with upload().
  std::vector<float> nearest_cosine_distances(std::span<const float> queries, std::int64_t rows, const Weight& memory) const;

  // A [grid_h, grid_w] map (host) upsampled bilinearly to [out_h, out_w] and smoothed with a
  // Gaussian of sigma output pixels, as anomaly/anomaly_map.hpp's upsample_and_smooth.
  std::vector<float> upsample_and_smooth(std::span<const float> grid, std::int64_t grid_h, std::int64_t grid_w, std::int64_t out_h,
                                         std::int64_t out_w, double sigma) const;

  struct State;  // CUDA stream, cuBLASLt handle and plans, staging memory (kernels/cuda_backend.cu)

 private:
  std::shared_ptr<State> state_;
};

}  // namespace focuspatch
