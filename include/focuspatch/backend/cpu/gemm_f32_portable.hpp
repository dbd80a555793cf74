#pragma once
// The portable fp32 linear layer: W decoded in panels, multiplied with Eigen. It runs in builds
// without AVX-512 and wherever FOCUSPATCH_CPU_ISA=portable asks for it; it passes the same tests
// as the AVX-512 kernels (tests/test_gemm.cpp).
#include <Eigen/Core>
#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "focuspatch/backend/cpu/gemm_common.hpp"
#include "focuspatch/backend/cpu/scratch_buffer.hpp"
#include "focuspatch/backend/cpu/vector_math.hpp"
#include "focuspatch/core/half.hpp"
#include "focuspatch/core/tensor.hpp"

namespace focuspatch {
namespace gemm_detail {

// W decoded kPanel rows at a time into a per-thread buffer, multiplied with Eigen into a scratch
// tile, then bias, activation and residual applied while storing.
inline void gemm_portable(const float* a, std::int64_t lda, std::int64_t m, const StoredMatrix& w, const float* bias, float* c,
                          std::int64_t ldc, Epilogue epilogue, bool accumulate) {
  using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Strided = Eigen::OuterStride<>;
  constexpr std::int64_t kPanel = 256;
  thread_local ScratchBuffer w_buffer, t_buffer;
  const std::int64_t k = w.in;
  Eigen::Map<const RowMatrix, 0, Strided> A(a, m, k, Strided(lda));
  for (std::int64_t n0 = 0; n0 < w.out; n0 += kPanel) {
    const std::int64_t nb = std::min(kPanel, w.out - n0);
    const float* panel;
    if (w.dtype == DType::F32) {
      panel = static_cast<const float*>(w.data) + n0 * k;
    } else {
      float* decoded = w_buffer.get(static_cast<std::size_t>(std::max<std::int64_t>(nb * k, 1)), "cpu gemm");
      decode_to_float(w.dtype, static_cast<const std::byte*>(w.data) + static_cast<std::size_t>(n0 * k) * 2,
                      static_cast<std::size_t>(nb * k), decoded);
      panel = decoded;
    }
    float* t = t_buffer.get(static_cast<std::size_t>(std::max<std::int64_t>(m * nb, 1)), "cpu gemm");
    Eigen::Map<RowMatrix> T(t, m, nb);
    if (k == 0) T.setZero();
    else T.noalias() = A * Eigen::Map<const RowMatrix>(panel, nb, k).transpose();
    for (std::int64_t r = 0; r < m; ++r) {
      float* row = c + r * ldc + n0;
      for (std::int64_t j = 0; j < nb; ++j) {
        float v = t[r * nb + j] + (bias ? bias[n0 + j] : 0.0f);
        if (epilogue == Epilogue::QuickGelu) v = vector_math::quick_gelu(v);
        else if (epilogue == Epilogue::Gelu) v = vector_math::gelu(v);
        row[j] = accumulate ? row[j] + v : v;
      }
    }
  }
}

}  // namespace gemm_detail
}  // namespace focuspatch
