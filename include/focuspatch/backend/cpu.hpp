#pragma once
// The CPU backend, with OpenMP threads; its kernels live in backend/cpu/, one family per file and
// ISA, and backend/cpu/gemm.hpp is where the linear layers' kernel is picked.
//
// Precision (CpuOptions): f32 (default) or bf16 matrix products. With bf16, linear layers multiply
// bf16 operands with fp32 sums, on AMX tiles or AVX512-BF16 as cpuid allows (else fp32: the path
// actually run is linear_path(), reported by description()); their weights are converted and
// packed into the kernels' layout once, here at load. Attention's two products (Q K^T, P V) then
// run in bf16 too, on the same instructions (AMX tiles, else vdpbf16ps; attention_path()). LayerNorm,
// softmax, the residual streams and everything downstream stay fp32, as on the GPU.
//
// In f32, linear layers run our own fused GEMM: fp32 weights are used in place from the mapped
// weight file; fp16/bf16 matrices too (widened while the GEMM packs them). Other fp16/bf16
// weights are decoded to fp32 once, at load.
//
// Every backend offers this same small op set over row-major matrices addressed by raw pointers
// into its own memory (host memory here, device memory for CUDA): fp32 residual streams, and
// Operand matrices (fp32 here) for what feeds products; model/ is written once against it.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "focuspatch/backend/cpu/attention.hpp"
#include "focuspatch/backend/cpu/gemm.hpp"
#include "focuspatch/backend/cpu/isa.hpp"
#include "focuspatch/backend/ops.hpp"
#include "focuspatch/core/error.hpp"
#include "focuspatch/core/tensor.hpp"

namespace focuspatch {

struct CpuOptions {
  CpuPrecision precision = CpuPrecision::F32;
  // A ceiling on the instruction set, below the process's (cpuid and FOCUSPATCH_CPU_ISA): lets a
  // test or benchmark run every path the machine has in one process.
  CpuIsa max_isa = CpuIsa::Amx;
};

class CpuBackend {
 public:
  static constexpr const char* name() { return "cpu"; }

  CpuBackend() : CpuBackend(CpuOptions{}) {}
  explicit CpuBackend(const CpuOptions& options)
      : precision_(options.precision),
        isa_(std::min(options.max_isa, cpu_isa())),
        path_(choose_linear_path(precision_, isa_)),
        attention_path_(choose_attention_path(is_bf16(path_), isa_)) {}

  CpuPrecision precision() const { return precision_; }
  CpuIsa isa() const { return isa_; }
  CpuLinearPath linear_path() const { return path_; }
  CpuAttentionPath attention_path() const { return attention_path_; }
  // "cpu f32 avx512", "cpu bf16 avx512bf16", or for a bf16 request the CPU cannot serve
  // "cpu f32 avx512 (bf16 requested; this CPU lacks avx512_bf16)".
  std::string description() const {
    std::string text = std::string("cpu ") + cpu_linear_path_name(path_);
    if (precision_ == CpuPrecision::BF16 && !is_bf16(path_)) {
      const std::string& missing = cpu_features().missing(CpuIsa::Avx512Bf16);
      text += missing.empty() ? " (bf16 requested; capped by FOCUSPATCH_CPU_ISA or the build)"
                              : " (bf16 requested; this CPU lacks " + missing + ")";
    }
    return text;
  }

  // A read-only parameter in backend memory. `owner` keeps decoded or computed data alive; it is
  // empty for fp32 weights that point straight into the mapped file. `stored` is the matrix as
  // linear() reads it, in its stored dtype: for upload_matrix() of an fp16/bf16 view it points into
  // the mapped file and `data` is null (the GEMM widens panels while packing them).
  // `packed` is set instead for a matrix of a bf16 backend: converted and packed at load.
  struct Weight {
    const float* data = nullptr;
    Shape shape;
    std::shared_ptr<const std::vector<float>> owner;
    DType dtype = DType::F32;
    const void* stored = nullptr;
    std::shared_ptr<const PackedBf16Matrix> packed;
    std::int64_t numel() const { return element_count(shape); }
  };

  // Activation memory, 64-byte aligned for the vector units.
  class Buffer {
   public:
    Buffer() = default;
    explicit Buffer(std::size_t count) : count_(count), data_(allocate(count)) {}
    float* data() { return data_.get(); }
    const float* data() const { return data_.get(); }
    std::size_t size() const { return count_; }

   private:
    struct Free {
      void operator()(float* p) const { std::free(p); }
    };
    static float* allocate(std::size_t count) {
      if (count == 0) return nullptr;
      const std::size_t bytes = (count * sizeof(float) + 63) / 64 * 64;
      void* p = std::aligned_alloc(64, bytes);
      if (!p) fail("cpu backend: out of memory allocating ", bytes, " bytes of activations");
      return static_cast<float*>(p);
    }
    std::size_t count_ = 0;
    std::unique_ptr<float[], Free> data_;
  };

  // What feeds matrix products and attention; fp32 here (the CUDA backend's is 16-bit).
  using Operand = float;
  using OperandBuffer = Buffer;

  Weight upload(const TensorView& view) const {
    if (view.dtype == DType::F32) {
      const auto* data = static_cast<const float*>(view.data);
      return {data, view.shape, nullptr, DType::F32, data, nullptr};
    }
    auto decoded = std::make_shared<std::vector<float>>(static_cast<std::size_t>(view.numel()));
    decode_to_float(view.dtype, view.data, decoded->size(), decoded->data());
    return {decoded->data(), view.shape, decoded, DType::F32, decoded->data(), nullptr};
  }
  // A weight only ever read by linear(). bf16 backends pack it for their kernel here, once. In f32,
  // fp16 and bf16 stay in the mapped file, half the memory of a decoded copy; fp32 is used in
  // place as by upload().
  Weight upload_matrix(const TensorView& view) const {
    if (is_bf16(path_) && view.shape.size() >= 2 && (view.dtype == DType::F32 || view.dtype == DType::F16 || view.dtype == DType::BF16)) {
      const std::int64_t out = view.shape.at(0);
      const std::int64_t in = out == 0 ? 0 : view.numel() / out;
      Weight w{nullptr, view.shape, nullptr, DType::BF16, nullptr, nullptr};
      w.packed = std::make_shared<const PackedBf16Matrix>(StoredMatrix{view.dtype, view.data, out, in});
      return w;
    }
    if (view.dtype != DType::F16 && view.dtype != DType::BF16) return upload(view);
    return {nullptr, view.shape, nullptr, view.dtype, view.data, nullptr};
  }
  Weight upload(const FloatTensor& host) const {
    auto copy = std::make_shared<std::vector<float>>(host.values().begin(), host.values().end());
    return {copy->data(), host.shape(), copy, DType::F32, copy->data(), nullptr};
  }
  Buffer allocate(std::size_t count) const { return Buffer(count); }
  OperandBuffer allocate_operands(std::size_t count) const { return Buffer(count); }
  void write(float* dst, const float* host, std::size_t count) const { std::memcpy(dst, host, count * sizeof(float)); }
  void read(const float* src, float* host, std::size_t count) const { std::memcpy(host, src, count * sizeof(float)); }
  // Both pointers in backend memory.
  void copy(const float* src, float* dst, std::size_t count) const { std::memcpy(dst, src, count * sizeof(float)); }

  // y[rows, out] (=|+=) act(x[rows, in] W^T + b), W stored [out, in] as PyTorch's Linear does.
  // accumulate adds the result into y: the residual connection, fused (y += act(x W^T + b)).
  void linear(const float* x, std::int64_t rows, const Weight& w, const Weight* bias, float* y, Epilogue epilogue = Epilogue::None,
              bool accumulate = false) const {
    const std::int64_t out = w.shape.at(0);
    const std::int64_t in = out == 0 ? 0 : w.numel() / out;
    const float* b = bias ? bias->data : nullptr;
    if (w.packed) return gemm_linear_bf16(x, in, rows, *w.packed, b, y, out, epilogue, accumulate, path_);
    const StoredMatrix matrix{w.dtype, w.stored ? w.stored : w.data, out, in};
    gemm_linear(x, in, rows, matrix, b, y, out, epilogue, accumulate, isa_);
  }

  void layer_norm(const float* x, std::int64_t rows, const Weight& gamma, const Weight& beta, float eps, float* y) const {
    const std::int64_t width = gamma.numel();
#pragma omp parallel for schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* in = x + r * width;
      float* o = y + r * width;
      // Two passes in double: LayerNorm of large-magnitude residual streams loses digits otherwise.
      // Each pass keeps 16 partial sums, so that it vectorises (two zmm of doubles) instead of
      // waiting on one scalar add chain: one running sum made LayerNorm 4x slower than memory.
      const double mean = row_sum(in, width, [](double v) { return v; }) / static_cast<double>(width);
      const double var = row_sum(in, width, [mean](double v) { return (v - mean) * (v - mean); }) / static_cast<double>(width);
      const float inv = static_cast<float>(1.0 / std::sqrt(var + eps));
      const float m = static_cast<float>(mean);
      for (std::int64_t c = 0; c < width; ++c) o[c] = (in[c] - m) * inv * gamma.data[c] + beta.data[c];
    }
  }

  // Multi-head attention over packed projections: qkv holds rows [q | k | v] of width 3 * heads *
  // head_dim for batch x seq tokens; out receives batch x seq rows of heads * head_dim.
  void attention(const float* qkv, std::int64_t batch, std::int64_t seq, int heads, int head_dim, bool causal, float* out,
                 AttentionKind kind = AttentionKind::QueryKey) const {
    cpu_attention(qkv, batch, seq, heads, head_dim, causal, out, kind, attention_path_);
  }

  // images [batch, 3, size, size] -> patches [batch * grid * grid, 3 * patch * patch], each row laid
  // out like a flattened conv kernel (channel, ky, kx) so the patch embedding is one GEMM.
  void patchify(const float* images, std::int64_t batch, int size, int patch, float* patches) const {
    const int grid = size / patch;
    const std::int64_t row_len = 3LL * patch * patch;
#pragma omp parallel for collapse(2) schedule(static)
    for (std::int64_t b = 0; b < batch; ++b) {
      for (int gy = 0; gy < grid; ++gy) {
        for (int gx = 0; gx < grid; ++gx) {
          float* dst = patches + ((b * grid + gy) * grid + gx) * row_len;
          for (int c = 0; c < 3; ++c) {
            for (int ky = 0; ky < patch; ++ky) {
              const float* src = images + ((b * 3 + c) * size + (gy * patch + ky)) * std::int64_t{size} + gx * patch;
              std::memcpy(dst + (c * patch + ky) * patch, src, sizeof(float) * static_cast<std::size_t>(patch));
            }
          }
        }
      }
    }
  }

  // tokens[b, 0] = cls + pos[0]; tokens[b, 1 + i] = patch_embeds[b, i] + pos[1 + i].
  void assemble_vision_tokens(const float* patch_embeds, const Weight& cls, const Weight& pos, std::int64_t batch, std::int64_t seq,
                              float* tokens) const {
    const std::int64_t width = cls.numel();
#pragma omp parallel for schedule(static)
    for (std::int64_t b = 0; b < batch; ++b) {
      for (std::int64_t t = 0; t < seq; ++t) {
        const float* src = t == 0 ? cls.data : patch_embeds + (b * (seq - 1) + t - 1) * width;
        const float* p = pos.data + t * width;
        float* dst = tokens + (b * seq + t) * width;
        for (std::int64_t c = 0; c < width; ++c) dst[c] = src[c] + p[c];
      }
    }
  }

  // out[r] = table[ids[r]] + pos[r % seq]; ids are host memory and already range-checked.
  void embed_tokens(std::span<const std::int32_t> ids, std::int64_t seq, const Weight& table, const Weight& pos, float* out) const {
    const std::int64_t width = table.shape.at(1);
    const auto rows = static_cast<std::int64_t>(ids.size());
#pragma omp parallel for schedule(static)
    for (std::int64_t r = 0; r < rows; ++r) {
      const float* e = table.data + std::int64_t{ids[static_cast<std::size_t>(r)]} * width;
      const float* p = pos.data + (r % seq) * width;
      float* dst = out + r * width;
      for (std::int64_t c = 0; c < width; ++c) dst[c] = e[c] + p[c];
    }
  }

  // x[r] += pos[r % seq] for caller-supplied token embeddings.
  void add_positions(float* x, std::int64_t rows, std::int64_t seq, const Weight& pos) const {
    const std::int64_t width = pos.shape.at(1);
#pragma omp parallel for schedule(static)
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < width; ++c) x[r * width + c] += pos.data[(r % seq) * width + c];
  }

  // out[i] = x[rows[i]] for width-wide rows; rows are host memory.
  void gather_rows(const float* x, std::int64_t width, std::span<const std::int64_t> rows, float* out) const {
    for (std::size_t i = 0; i < rows.size(); ++i)
      std::memcpy(out + static_cast<std::int64_t>(i) * width, x + rows[i] * width, sizeof(float) * static_cast<std::size_t>(width));
  }

 private:
  // sum over c of f(in[c]) in double, as 16 interleaved partial sums added at the end.
  template <class F>
  static double row_sum(const float* in, std::int64_t width, F f) {
    constexpr int kPartials = 16;
    double partial[kPartials] = {};
    std::int64_t c = 0;
    for (; c + kPartials <= width; c += kPartials)
      for (int l = 0; l < kPartials; ++l) partial[l] += f(static_cast<double>(in[c + l]));
    for (int l = 0; c < width; ++c, ++l) partial[l] += f(static_cast<double>(in[c]));
    double sum = 0.0;
    for (const double p : partial) sum += p;
    return sum;
  }

  CpuPrecision precision_;
  CpuIsa isa_;
  CpuLinearPath path_;
  CpuAttentionPath attention_path_;
  using RowMatrixType = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Matrix = Eigen::Map<RowMatrixType>;
  using ConstMatrix = Eigen::Map<const RowMatrixType>;
};

}  // namespace focuspatch
