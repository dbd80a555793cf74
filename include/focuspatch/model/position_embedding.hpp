#pragma once
// Resizing a ViT's learned position embedding for another input resolution. The grid part is
// resampled with PyTorch's bicubic interpolation (F.interpolate(mode="bicubic", align_corners=False),
// A = -0.75, edge indices clamped), as open_clip and Hugging Face do; the class position is kept.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

#include "focuspatch/core/error.hpp"
#include "focuspatch/core/tensor.hpp"

namespace focuspatch {

namespace detail {
// Weights of the four taps around a source position at fractional offset t (Keys' cubic, A=-0.75).
inline std::array<double, 4> cubic_taps(double t) {
  constexpr double A = -0.75;
  auto near = [](double x) { return ((A + 2) * x - (A + 3)) * x * x + 1; };        // |x| <= 1
  auto far = [](double x) { return ((A * x - 5 * A) * x + 8 * A) * x - 4 * A; };   // 1 < |x| < 2
  return {far(t + 1), near(t), near(1 - t), far(2 - t)};
}

// Resamples `in` (in_size entries spaced `stride` apart, `channels` values each) to out_size.
inline void bicubic_1d(const double* in, std::int64_t in_size, std::int64_t stride, std::int64_t channels, double* out,
                       std::int64_t out_size, std::int64_t out_stride) {
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  for (std::int64_t o = 0; o < out_size; ++o) {
    const double src = (static_cast<double>(o) + 0.5) * scale - 0.5;
    const double base = std::floor(src);
    const auto taps = cubic_taps(src - base);
    for (std::int64_t c = 0; c < channels; ++c) {
      double acc = 0;
      for (int k = 0; k < 4; ++k) {
        const auto idx = std::clamp<std::int64_t>(static_cast<std::int64_t>(base) - 1 + k, 0, in_size - 1);
        acc += taps[static_cast<std::size_t>(k)] * in[idx * stride + c];
      }
      out[o * out_stride + c] = acc;
    }
  }
}
}  // namespace detail

// pos: [1 + g*g, W] -> [1 + new_grid^2, W].
inline FloatTensor interpolate_position_embedding(const FloatTensor& pos, int new_grid) {
  const std::int64_t tokens = pos.dim(0), width = pos.dim(1);
  const auto grid = static_cast<std::int64_t>(std::llround(std::sqrt(static_cast<double>(tokens - 1))));
  require(grid * grid + 1 == tokens, "position embedding of ", tokens, " tokens is not a class token plus a square grid");
  require(new_grid > 0, "position embedding: target grid must be positive");
  const std::int64_t ng = new_grid;
  FloatTensor result({1 + ng * ng, width});
  std::copy_n(pos.data(), width, result.data());
  if (ng == grid) {
    std::copy_n(pos.data(), pos.numel(), result.data());
    return result;
  }
  // Layout [y][x][channel]; resample rows (x) first, then columns (y).
  std::vector<double> src(static_cast<std::size_t>(grid * grid * width));
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = pos.data()[width + static_cast<std::int64_t>(i)];
  std::vector<double> wide(static_cast<std::size_t>(grid * ng * width));
  for (std::int64_t y = 0; y < grid; ++y)
    detail::bicubic_1d(src.data() + y * grid * width, grid, width, width, wide.data() + y * ng * width, ng, width);
  std::vector<double> full(static_cast<std::size_t>(ng * ng * width));
  for (std::int64_t x = 0; x < ng; ++x)
    detail::bicubic_1d(wide.data() + x * width, grid, ng * width, width, full.data() + x * width, ng, ng * width);
  for (std::size_t i = 0; i < full.size(); ++i) result.data()[width + static_cast<std::int64_t>(i)] = static_cast<float>(full[i]);
  return result;
}

}  // namespace focuspatch
