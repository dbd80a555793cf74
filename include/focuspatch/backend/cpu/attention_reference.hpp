#pragma once
// The plain reference for the CPU attention kernels (as gemm_reference.hpp is for the linear
// layers): softmax(q k^T / sqrt(d)) v per head from the definition, in double. With bf16_operands
// q, k, v and the unnormalised probabilities exp(s - max) are rounded to bf16 as the bf16 kernels
// round them, the denominator summing the unrounded ones as there; what remains between that
// kernel and this is its fp32 arithmetic. Slow; for tests and for checking a new path.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "focuspatch/backend/ops.hpp"
#include "focuspatch/core/half.hpp"

namespace focuspatch {

// out[batch * seq][heads * head_dim] for the same arguments as cpu_attention.
inline std::vector<double> attention_reference(const float* qkv, std::int64_t batch, std::int64_t seq, int heads, int head_dim,
                                               bool causal, AttentionKind kind, bool bf16_operands) {
  const std::int64_t dim = head_dim, width = std::int64_t{heads} * dim, stride = 3 * width;
  auto round = [&](double v) { return bf16_operands ? double{bf16_to_float(float_to_bf16(static_cast<float>(v)))} : v; };
  const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
  std::vector<double> out(static_cast<std::size_t>(batch * seq * width));
  std::vector<double> weights(static_cast<std::size_t>(seq));
  const bool value_value = kind == AttentionKind::ValueValue;
  for (std::int64_t b = 0; b < batch; ++b)
    for (int h = 0; h < heads; ++h) {
      const float* rows = qkv + b * seq * stride;
      const std::int64_t q_col = (value_value ? 2 * width : 0) + h * dim, k_col = (value_value ? 2 * width : width) + h * dim,
                         v_col = 2 * width + h * dim;
      for (std::int64_t i = 0; i < seq; ++i) {
        const std::int64_t keys = causal ? i + 1 : seq;
        double top = -std::numeric_limits<double>::infinity();
        for (std::int64_t j = 0; j < keys; ++j) {
          double dot = 0;
          for (std::int64_t c = 0; c < dim; ++c) dot += round(rows[i * stride + q_col + c]) * round(rows[j * stride + k_col + c]);
          weights[static_cast<std::size_t>(j)] = dot;
          top = std::max(top, dot);
        }
        double sum = 0;
        for (std::int64_t j = 0; j < keys; ++j) {
          double& w = weights[static_cast<std::size_t>(j)];
          w = std::exp((w - top) * scale);
          sum += w;
          w = round(w);
        }
        for (std::int64_t c = 0; c < dim; ++c) {
          double acc = 0;
          for (std::int64_t j = 0; j < keys; ++j) acc += weights[static_cast<std::size_t>(j)] * round(rows[j * stride + v_col + c]);
          out[static_cast<std::size_t>((b * seq + i) * width + h * dim + c)] = acc / sum;
        }
      }
    }
  return out;
}

}  // namespace focuspatch
