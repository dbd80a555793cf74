#pragma once
// The plain reference for every CPU linear-layer kernel (llm.c keeps one beside each kernel the
// same way): a triple loop summing in double, activations in double. With bf16_operands both A
// and W are first rounded to bf16 as the bf16 kernels round them, so what remains between a kernel
// and this is only the kernel's fp32 summation order. Slow; for tests and for checking a new path.
#include <cmath>
#include <cstdint>
#include <vector>

#include "focuspatch/backend/cpu/gemm_common.hpp"
#include "focuspatch/core/half.hpp"

namespace focuspatch {

inline double reference_activation(double v, Epilogue e) {
  if (e == Epilogue::QuickGelu) return v / (1.0 + std::exp(-1.702 * v));
  if (e == Epilogue::Gelu) return 0.5 * v * std::erfc(-v / std::sqrt(2.0));
  return v;
}

// W's element (n, k) as fp32.
inline float stored_value(const StoredMatrix& w, std::int64_t n, std::int64_t k) {
  const std::int64_t at = n * w.in + k;
  if (w.dtype == DType::F16) return half_to_float(static_cast<const std::uint16_t*>(w.data)[at]);
  if (w.dtype == DType::BF16) return bf16_to_float(static_cast<const std::uint16_t*>(w.data)[at]);
  return static_cast<const float*>(w.data)[at];
}

// C[m, w.out] (=|+=) act(A W^T + bias), as gemm_linear computes it.
inline void gemm_reference(const float* a, std::int64_t lda, std::int64_t m, const StoredMatrix& w, const float* bias, float* c,
                           std::int64_t ldc, Epilogue epilogue, bool accumulate, bool bf16_operands) {
  gemm_detail::check(w, m, lda, ldc);
  auto round = [&](float v) { return bf16_operands ? bf16_to_float(float_to_bf16(v)) : v; };
  std::vector<double> wt(static_cast<std::size_t>(w.out * w.in));
  for (std::int64_t n = 0; n < w.out; ++n)
    for (std::int64_t k = 0; k < w.in; ++k) wt[static_cast<std::size_t>(n * w.in + k)] = round(stored_value(w, n, k));
  std::vector<double> row(static_cast<std::size_t>(w.in));
  for (std::int64_t i = 0; i < m; ++i) {
    for (std::int64_t k = 0; k < w.in; ++k) row[static_cast<std::size_t>(k)] = round(a[i * lda + k]);
    for (std::int64_t n = 0; n < w.out; ++n) {
      double sum = bias ? bias[n] : 0.0;
      for (std::int64_t k = 0; k < w.in; ++k) sum += row[static_cast<std::size_t>(k)] * wt[static_cast<std::size_t>(n * w.in + k)];
      const double v = reference_activation(sum, epilogue);
      float& out = c[i * ldc + n];
      out = static_cast<float>(accumulate ? out + v : v);
    }
  }
}

}  // namespace focuspatch
