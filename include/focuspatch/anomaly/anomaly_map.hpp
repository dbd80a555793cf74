#pragma once
// Anomaly score maps and the image-space operations on them: the patch-grid scores (text and
// visual) are combined, upsampled to the image size and smoothed, and an image score is read
// from the map's highest values.
//
// The two resampling steps reproduce the Python pipelines the method is defined with, so maps
// and scores can be compared with published numbers:
//   - upsample_bilinear   == torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear",
//                            align_corners=False) (no antialias), for any ratio, up or down;
//   - gaussian_smooth     == scipy.ndimage.gaussian_filter(x, sigma, truncate=4.0, mode="reflect")
//                            on a float32 array (the float32 intermediate between the two passes
//                            included).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <vector>

#include "focuspatch/core/error.hpp"
#include "focuspatch/core/tensor.hpp"

namespace focuspatch {

// A row-major [height, width] plane of scores.
struct AnomalyMap {
  std::int64_t height = 0;
  std::int64_t width = 0;
  std::vector<float> values;

  AnomalyMap() = default;
  AnomalyMap(std::int64_t h, std::int64_t w, float fill = 0.0f) : height(h), width(w) {
    require(h > 0 && w > 0, "anomaly map: size ", h, "x", w, " is empty");
    values.assign(static_cast<std::size_t>(h * w), fill);
  }
  AnomalyMap(std::int64_t h, std::int64_t w, std::vector<float> v) : height(h), width(w), values(std::move(v)) {
    require(h > 0 && w > 0, "anomaly map: size ", h, "x", w, " is empty");
    require(static_cast<std::int64_t>(values.size()) == h * w, "anomaly map: ", values.size(), " values do not fill ", h, "x", w);
  }

  static AnomalyMap from_tensor(const FloatTensor& t) {
    require(t.shape().size() == 2, "anomaly map: expected a [H, W] tensor, got ", shape_string(t.shape()));
    return AnomalyMap(t.dim(0), t.dim(1), std::vector<float>(t.values().begin(), t.values().end()));
  }
  FloatTensor to_tensor() const { return FloatTensor({height, width}, values); }

  std::size_t size() const { return values.size(); }
  float at(std::int64_t y, std::int64_t x) const { return values[static_cast<std::size_t>(y * width + x)]; }
  float& at(std::int64_t y, std::int64_t x) { return values[static_cast<std::size_t>(y * width + x)]; }
  bool same_size(const AnomalyMap& o) const { return height == o.height && width == o.width; }
};

namespace detail {

inline void require_map(const AnomalyMap& m, const char* what) {
  require(m.height > 0 && m.width > 0 && m.values.size() == static_cast<std::size_t>(m.height * m.width), what,
          ": the anomaly map is empty or its values do not fill ", m.height, "x", m.width);
}

// One axis of PyTorch's align_corners=False linear interpolation (aten/src/ATen/native/UpSample.h:
// area_pixel_compute_scale, compute_source_index_and_lambda). The output size alone fixes the
// scale, in / out, in float; the source coordinate scale * (dst + 0.5) - 0.5 is evaluated in
// double (PyTorch's literals are double) and its fractional part rounded to float. Checked
// against torch 1.13: these weights equal PyTorch's bit for bit.
struct LinearTaps {
  std::vector<std::int64_t> i0, i1;
  std::vector<float> w0, w1;
};

inline LinearTaps linear_taps(std::int64_t in_size, std::int64_t out_size) {
  LinearTaps t;
  const auto n = static_cast<std::size_t>(out_size);
  t.i0.resize(n);
  t.i1.resize(n);
  t.w0.resize(n);
  t.w1.resize(n);
  const double scale = static_cast<double>(static_cast<float>(in_size) / static_cast<float>(out_size));
  for (std::int64_t d = 0; d < out_size; ++d) {
    const auto k = static_cast<std::size_t>(d);
    if (in_size == out_size) {  // PyTorch copies an axis whose size does not change
      t.i0[k] = t.i1[k] = d;
      t.w0[k] = 1.0f;
      t.w1[k] = 0.0f;
      continue;
    }
    // Source coordinates left of the first pixel centre are clamped, so the edge is replicated.
    const double src = std::max(scale * (static_cast<double>(d) + 0.5) - 0.5, 0.0);
    const auto i0 = static_cast<std::int64_t>(src);
    const auto lambda1 = static_cast<float>(std::min(src - static_cast<double>(i0), 1.0));
    t.i0[k] = i0;
    t.i1[k] = i0 + (i0 < in_size - 1 ? 1 : 0);
    t.w1[k] = lambda1;
    t.w0[k] = 1.0f - lambda1;
  }
  return t;
}

// scipy.ndimage._gaussian_kernel1d(sigma, 0, radius): exp(-x^2 / (2 sigma^2)) normalised to sum 1.
inline std::vector<double> gaussian_weights(double sigma, std::int64_t radius) {
  std::vector<double> w(static_cast<std::size_t>(2 * radius + 1));
  double sum = 0.0;
  for (std::int64_t x = -radius; x <= radius; ++x) {
    const double v = std::exp(-0.5 / (sigma * sigma) * static_cast<double>(x * x));
    w[static_cast<std::size_t>(x + radius)] = v;
    sum += v;
  }
  for (auto& v : w) v /= sum;
  return w;
}

// scipy's "reflect" extension (d c b a | a b c d | d c b a): the mirror passes through the edge
// of the outer pixel, so the edge pixel repeats. Periodic with period 2n, which covers kernels
// wider than the map itself (scipy extends a line by repeated reflection).
inline std::int64_t reflect_index(std::int64_t i, std::int64_t n) {
  const std::int64_t period = 2 * n;
  std::int64_t m = i % period;
  if (m < 0) m += period;
  return m < n ? m : period - 1 - m;
}

// Correlates every line of `count` samples spaced `stride` apart (lines start `line_step` apart)
// with the symmetric kernel, accumulating in double like scipy's NI_Correlate1D.
inline void correlate_lines(const std::vector<float>& in, std::vector<float>& out, std::int64_t lines, std::int64_t line_step,
                            std::int64_t count, std::int64_t stride, const std::vector<double>& weights, std::int64_t radius) {
  std::vector<double> line(static_cast<std::size_t>(count + 2 * radius));
  for (std::int64_t l = 0; l < lines; ++l) {
    const std::int64_t base = l * line_step;
    for (std::int64_t i = -radius; i < count + radius; ++i)
      line[static_cast<std::size_t>(i + radius)] = in[static_cast<std::size_t>(base + reflect_index(i, count) * stride)];
    for (std::int64_t i = 0; i < count; ++i) {
      const double* c = line.data() + (i + radius);
      double acc = c[0] * weights[static_cast<std::size_t>(radius)];
      for (std::int64_t j = 1; j <= radius; ++j) acc += (c[j] + c[-j]) * weights[static_cast<std::size_t>(radius + j)];
      out[static_cast<std::size_t>(base + i * stride)] = static_cast<float>(acc);
    }
  }
}

}  // namespace detail

// Bilinear resampling to out_height x out_width, equal to PyTorch's F.interpolate(mode="bilinear",
// align_corners=False) called with an output size. Shrinking samples two taps per axis without
// antialiasing, as PyTorch does.
inline AnomalyMap upsample_bilinear(const AnomalyMap& in, std::int64_t out_height, std::int64_t out_width) {
  detail::require_map(in, "upsample_bilinear");
  require(out_height > 0 && out_width > 0, "upsample_bilinear: output size ", out_height, "x", out_width, " is empty");
  const detail::LinearTaps ty = detail::linear_taps(in.height, out_height);
  const detail::LinearTaps tx = detail::linear_taps(in.width, out_width);
  AnomalyMap out(out_height, out_width);
  for (std::int64_t y = 0; y < out_height; ++y) {
    const auto ky = static_cast<std::size_t>(y);
    const float* r0 = in.values.data() + ty.i0[ky] * in.width;
    const float* r1 = in.values.data() + ty.i1[ky] * in.width;
    for (std::int64_t x = 0; x < out_width; ++x) {
      const auto kx = static_cast<std::size_t>(x);
      const std::int64_t x0 = tx.i0[kx], x1 = tx.i1[kx];
      // Summed in double and rounded once, so the result does not depend on whether the compiler
      // fuses multiply-adds; PyTorch's float kernels land within 1-2 float ulps of it (their
      // rounding differs with the instruction set they were built for).
      const double top = double{tx.w0[kx]} * r0[x0] + double{tx.w1[kx]} * r0[x1];
      const double bottom = double{tx.w0[kx]} * r1[x0] + double{tx.w1[kx]} * r1[x1];
      out.at(y, x) = static_cast<float>(double{ty.w0[ky]} * top + double{ty.w1[ky]} * bottom);
    }
  }
  return out;
}

// Radius of the Gaussian kernel scipy uses: int(truncate * sigma + 0.5) taps either side.
inline std::int64_t gaussian_radius(double sigma, double truncate = 4.0) {
  return static_cast<std::int64_t>(truncate * sigma + 0.5);
}

// Separable Gaussian smoothing equal to scipy.ndimage.gaussian_filter(map, sigma, truncate=truncate,
// mode="reflect") on float32 data: rows direction (axis 0) first, rounded to float32, then axis 1.
// sigma = 0 leaves the map unchanged (scipy skips axes with sigma <= 1e-15).
inline AnomalyMap gaussian_smooth(const AnomalyMap& in, double sigma, double truncate = 4.0) {
  detail::require_map(in, "gaussian_smooth");
  require(std::isfinite(sigma) && sigma >= 0.0, "gaussian_smooth: sigma must be a finite value >= 0, got ", sigma);
  require(std::isfinite(truncate) && truncate > 0.0, "gaussian_smooth: truncate must be > 0, got ", truncate);
  if (sigma <= 1e-15) return in;
  const std::int64_t radius = gaussian_radius(sigma, truncate);
  const std::vector<double> weights = detail::gaussian_weights(sigma, radius);
  AnomalyMap columns_done(in.height, in.width);
  detail::correlate_lines(in.values, columns_done.values, in.width, 1, in.height, in.width, weights, radius);
  AnomalyMap out(in.height, in.width);
  detail::correlate_lines(columns_done.values, out.values, in.height, in.width, in.width, 1, weights, radius);
  return out;
}

// The usual last step: the patch-grid map resized to the image and smoothed (sigma in output pixels).
inline AnomalyMap upsample_and_smooth(const AnomalyMap& grid, std::int64_t out_height, std::int64_t out_width, double sigma) {
  return gaussian_smooth(upsample_bilinear(grid, out_height, out_width), sigma);
}

// (v - min) / (max - min) over the map. A constant map carries no ranking, so it becomes all zeros
// rather than dividing by zero.
inline AnomalyMap normalize_min_max(const AnomalyMap& in) {
  detail::require_map(in, "normalize_min_max");
  const auto [lo_it, hi_it] = std::minmax_element(in.values.begin(), in.values.end());
  const float lo = *lo_it, hi = *hi_it;
  AnomalyMap out(in.height, in.width);
  if (!(hi > lo)) return out;
  const float span = hi - lo;
  for (std::size_t i = 0; i < in.size(); ++i) out.values[i] = (in.values[i] - lo) / span;
  return out;
}

// (v - lo) / (hi - lo) with a range fixed in advance (e.g. the score range seen on normal
// validation images), so maps of different images stay comparable; clamp keeps the result in
// [0, 1].
inline AnomalyMap normalize_range(const AnomalyMap& in, float lo, float hi, bool clamp = true) {
  detail::require_map(in, "normalize_range");
  require(std::isfinite(lo) && std::isfinite(hi) && hi > lo, "normalize_range: range [", lo, ", ", hi,
          "] is empty or not finite");
  AnomalyMap out(in.height, in.width);
  const float span = hi - lo;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const float v = (in.values[i] - lo) / span;
    out.values[i] = clamp ? std::clamp(v, 0.0f, 1.0f) : v;
  }
  return out;
}

// Weighted mean sum_i w_i m_i / sum_i w_i of maps of one size. Weights must be >= 0 with a
// positive sum; a zero weight drops a map.
inline AnomalyMap combine_maps(std::span<const AnomalyMap> maps, std::span<const double> weights) {
  require(!maps.empty(), "combine_maps: no maps given");
  require(maps.size() == weights.size(), "combine_maps: ", maps.size(), " maps but ", weights.size(), " weights");
  double total = 0.0;
  for (std::size_t i = 0; i < maps.size(); ++i) {
    detail::require_map(maps[i], "combine_maps");
    require(maps[i].same_size(maps[0]), "combine_maps: map ", i, " is ", maps[i].height, "x", maps[i].width, " but map 0 is ",
            maps[0].height, "x", maps[0].width);
    require(std::isfinite(weights[i]) && weights[i] >= 0.0, "combine_maps: weight ", i, " is ", weights[i], " (must be >= 0)");
    total += weights[i];
  }
  require(total > 0.0, "combine_maps: the weights sum to zero");
  AnomalyMap out(maps[0].height, maps[0].width);
  for (std::size_t p = 0; p < out.size(); ++p) {
    double acc = 0.0;
    for (std::size_t i = 0; i < maps.size(); ++i) acc += weights[i] * maps[i].values[p];
    out.values[p] = static_cast<float>(acc / total);
  }
  return out;
}

// Image score: the mean of the k largest values of the map. k = 1 is the maximum; a larger k
// makes the score robust to a single noisy patch while still driven by the most anomalous region.
// k larger than the map uses every value (the plain mean).
inline float image_score_top_k(const AnomalyMap& map, std::int64_t k) {
  detail::require_map(map, "image_score_top_k");
  require(k >= 1, "image_score_top_k: k must be >= 1, got ", k);
  std::vector<float> v = map.values;
  const auto n = std::min<std::size_t>(static_cast<std::size_t>(k), v.size());
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n - 1), v.end(), std::greater<float>());
  double sum = 0.0;
  for (std::size_t i = 0; i < n; ++i) sum += v[i];
  return static_cast<float>(sum / static_cast<double>(n));
}

// Image score from the top fraction (0, 1] of the map's values: k = ceil(fraction * size), at least
// 1 (fraction * size is computed in double; a product within 1e-9 of an integer counts as that
// integer, so 0.4 of 5 values is 2, not 3).
inline float image_score_top_fraction(const AnomalyMap& map, double fraction) {
  detail::require_map(map, "image_score_top_fraction");
  require(std::isfinite(fraction) && fraction > 0.0 && fraction <= 1.0,
          "image_score_top_fraction: fraction must be in (0, 1], got ", fraction);
  const double wanted = fraction * static_cast<double>(map.size());
  const auto k = std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(wanted - 1e-9)));
  return image_score_top_k(map, k);
}

}  // namespace focuspatch
