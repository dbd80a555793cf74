#pragma once
// Pillow's bicubic resize (Image.resize(size, Image.BICUBIC)), reproduced bit for bit for 8-bit
// images so that our CLIP inputs equal those of the Python pipeline. Follows Pillow 9.x
// src/libImaging/Resample.c:
//   - cubic convolution kernel with a = -0.5 and support 2;
//   - when shrinking, the kernel is stretched by the scale factor (support 2 * scale), which is
//     what makes Pillow's downsampling antialiased, unlike a plain 4-tap bicubic;
//   - per output pixel, the weights are normalised to sum 1, then converted to 22-bit fixed point
//     (rounded away from zero); each pass accumulates integers with a half-unit bias and clips
//     to 0..255;
//   - separable: a horizontal pass into an 8-bit intermediate image, then a vertical pass. A pass
//     whose size does not change is skipped entirely (Pillow skips it too; running it would not
//     be the identity, since the kernel still spans neighbours).
// Images with alpha are resized the way Pillow resizes RGBA/LA: converted to premultiplied alpha
// ("RGBa") with Pillow's rounding, resampled, then un-premultiplied with its truncating division.
// Float planes (for score maps) follow Pillow's mode "F" path: the same double weights, summed in
// double, stored as float, no rounding or clipping.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "focuspatch/core/error.hpp"
#include "focuspatch/io/image.hpp"

namespace focuspatch {

namespace detail {

inline double pil_bicubic(double x) {
  // Kept in Pillow's evaluation order (a = -0.5: a + 2 = 1.5, a + 3 = 2.5) so weights match exactly.
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Resampling weights for one axis: output i reads inputs [first[i], first[i] + count[i]) with
// weights at offset[i] in `weights`.
struct AxisWeights {
  std::vector<int> first, count;
  std::vector<std::size_t> offset;
  std::vector<double> weights;      // normalised to sum 1 per output
  std::vector<std::int32_t> fixed;  // the same in Pillow's 8-bit fixed point
};

inline constexpr int kPrecisionBits = 32 - 8 - 2;

inline AxisWeights bicubic_axis_weights(int in_size, int out_size) {
  AxisWeights aw;
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 2.0 * filterscale;
  const double ss = 1.0 / filterscale;
  aw.first.resize(static_cast<std::size_t>(out_size));
  aw.count.resize(static_cast<std::size_t>(out_size));
  aw.offset.resize(static_cast<std::size_t>(out_size));
  aw.weights.reserve(static_cast<std::size_t>(out_size) * (2 * static_cast<std::size_t>(std::ceil(support)) + 1));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    // Pillow truncates toward zero after adding 0.5; keep it (not floor) for identical bounds.
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    const int xmax = std::min(static_cast<int>(center + support + 0.5), in_size) - xmin;
    const std::size_t off = aw.weights.size();
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      const double w = pil_bicubic((x + xmin - center + 0.5) * ss);
      aw.weights.push_back(w);
      ww += w;
    }
    if (ww != 0.0)
      for (int x = 0; x < xmax; ++x) aw.weights[off + static_cast<std::size_t>(x)] /= ww;
    aw.first[static_cast<std::size_t>(xx)] = xmin;
    aw.count[static_cast<std::size_t>(xx)] = std::max(xmax, 0);
    aw.offset[static_cast<std::size_t>(xx)] = off;
  }
  aw.fixed.resize(aw.weights.size());
  for (std::size_t i = 0; i < aw.weights.size(); ++i) {
    const double k = aw.weights[i] * (1 << kPrecisionBits);
    aw.fixed[i] = static_cast<std::int32_t>(aw.weights[i] < 0 ? -0.5 + k : 0.5 + k);
  }
  return aw;
}

inline std::uint8_t clip8_fixed(std::int32_t acc) {
  return static_cast<std::uint8_t>(std::clamp(acc >> kPrecisionBits, 0, 255));
}

// An interleaved 8-bit image with any channel count, the working form of both passes.
struct Plane8 {
  int width = 0, height = 0, channels = 0;
  std::vector<std::uint8_t> data;
};

// Horizontal pass over source rows [row0, row0 + rows) for output columns [x0, x1). The channel
// count is a template parameter so the inner loops unroll (this pass dominates the cost).
template <int C>
inline void resample_rows_n(const Plane8& in, const AxisWeights& aw, int x0, int x1, int row0, Plane8& out) {
  static_assert(C == 1 || C == 3 || C == 4);
  constexpr std::int32_t bias = 1 << (kPrecisionBits - 1);
  for (int y = 0; y < out.height; ++y) {
    const std::uint8_t* src = in.data.data() + static_cast<std::size_t>(row0 + y) * static_cast<std::size_t>(in.width) * C;
    std::uint8_t* dst = out.data.data() + static_cast<std::size_t>(y) * static_cast<std::size_t>(out.width) * C;
    for (int xx = x0; xx < x1; ++xx) {
      const auto i = static_cast<std::size_t>(xx);
      const std::int32_t* k = aw.fixed.data() + aw.offset[i];
      const std::uint8_t* s = src + static_cast<std::size_t>(aw.first[i]) * C;
      // Separate accumulators rather than an array: they stay in registers.
      std::int32_t a0 = bias, a1 = bias, a2 = bias, a3 = bias;
      for (int x = 0; x < aw.count[i]; ++x, s += C) {
        const std::int32_t kx = k[x];
        a0 += s[0] * kx;
        if constexpr (C >= 3) {
          a1 += s[1] * kx;
          a2 += s[2] * kx;
        }
        if constexpr (C == 4) a3 += s[3] * kx;
      }
      *dst++ = clip8_fixed(a0);
      if constexpr (C >= 3) {
        *dst++ = clip8_fixed(a1);
        *dst++ = clip8_fixed(a2);
      }
      if constexpr (C == 4) *dst++ = clip8_fixed(a3);
    }
  }
}

inline Plane8 resample_rows(const Plane8& in, const AxisWeights& aw, int x0, int x1, int row0, int rows) {
  Plane8 out{x1 - x0, rows, in.channels, {}};
  out.data.resize(static_cast<std::size_t>(out.width) * static_cast<std::size_t>(rows) * static_cast<std::size_t>(in.channels));
  switch (in.channels) {
    case 1: resample_rows_n<1>(in, aw, x0, x1, row0, out); break;
    case 3: resample_rows_n<3>(in, aw, x0, x1, row0, out); break;
    case 4: resample_rows_n<4>(in, aw, x0, x1, row0, out); break;
    default: fail("resize: ", in.channels, " channels are not supported");
  }
  return out;
}

// Vertical pass for output rows [y0, y1); `row0` is the source row that in's first row holds.
inline Plane8 resample_columns(const Plane8& in, const AxisWeights& aw, int y0, int y1, int row0) {
  Plane8 out{in.width, y1 - y0, in.channels, {}};
  const auto C = static_cast<std::size_t>(in.channels);
  const std::size_t stride = static_cast<std::size_t>(in.width) * C;
  out.data.resize(stride * static_cast<std::size_t>(out.height));
  std::vector<std::int32_t> acc(stride);
  for (int yy = y0; yy < y1; ++yy) {
    const auto i = static_cast<std::size_t>(yy);
    const std::int32_t* k = aw.fixed.data() + aw.offset[i];
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    for (int y = 0; y < aw.count[i]; ++y) {
      const std::uint8_t* s = in.data.data() + static_cast<std::size_t>(aw.first[i] + y - row0) * stride;
      for (std::size_t j = 0; j < stride; ++j) acc[j] += s[j] * k[y];
    }
    std::uint8_t* dst = out.data.data() + static_cast<std::size_t>(yy - y0) * stride;
    for (std::size_t j = 0; j < stride; ++j) dst[j] = clip8_fixed(acc[j]);
  }
  return out;
}

// Pillow's two-pass resample of `in` to out_w x out_h, computing only the output window
// [x0, x1) x [y0, y1). Every output pixel depends only on its own weights, so a window equals the
// same region of the full resize.
inline Plane8 resample_window(const Plane8& in, int out_w, int out_h, int x0, int y0, int x1, int y1) {
  Plane8 cur;
  const Plane8* src = &in;
  int row0 = 0;
  const bool horizontal = out_w != in.width, vertical = out_h != in.height;
  AxisWeights wy;
  int rows_first = y0, rows_last = y1;  // source rows the vertical pass will read
  if (vertical) {
    wy = bicubic_axis_weights(in.height, out_h);
    rows_first = wy.first[static_cast<std::size_t>(y0)];
    rows_last = 0;
    for (int yy = y0; yy < y1; ++yy)
      rows_last = std::max(rows_last, wy.first[static_cast<std::size_t>(yy)] + wy.count[static_cast<std::size_t>(yy)]);
  }
  if (horizontal) {
    const AxisWeights wx = bicubic_axis_weights(in.width, out_w);
    cur = resample_rows(in, wx, x0, x1, rows_first, rows_last - rows_first);
    src = &cur;
    row0 = rows_first;
  } else if (x0 != 0 || x1 != in.width) {
    // No horizontal resampling, but only columns [x0, x1) are wanted.
    cur = Plane8{x1 - x0, rows_last - rows_first, in.channels, {}};
    const auto C = static_cast<std::size_t>(in.channels);
    const std::size_t row_bytes = static_cast<std::size_t>(x1 - x0) * C;
    cur.data.resize(row_bytes * static_cast<std::size_t>(cur.height));
    for (int y = 0; y < cur.height; ++y)
      std::copy_n(in.data.data() + (static_cast<std::size_t>(rows_first + y) * static_cast<std::size_t>(in.width) +
                                    static_cast<std::size_t>(x0)) * C,
                  row_bytes, cur.data.data() + static_cast<std::size_t>(y) * row_bytes);
    src = &cur;
    row0 = rows_first;
  }
  if (vertical) return resample_columns(*src, wy, y0, y1, row0);
  // No vertical resampling: rows [y0, y1) of the (horizontally resampled) source.
  Plane8 out{src->width, y1 - y0, src->channels, {}};
  const std::size_t row_bytes = static_cast<std::size_t>(src->width) * static_cast<std::size_t>(src->channels);
  out.data.assign(src->data.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(y0 - row0) * row_bytes),
                  src->data.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(y1 - row0) * row_bytes));
  return out;
}

// Pillow's MULDIV255: round(c * a / 255) computed its way.
inline std::uint8_t premultiply(std::uint8_t c, std::uint8_t a) {
  const std::uint32_t t = std::uint32_t{c} * a + 128;
  return static_cast<std::uint8_t>(((t >> 8) + t) >> 8);
}

// Pillow's RGBa -> RGBA: alpha 0 and 255 pass the colour through, otherwise 255 * c / a truncated
// and clipped.
inline std::uint8_t unpremultiply(std::uint8_t c, std::uint8_t a) {
  if (a == 0 || a == 255) return c;
  return static_cast<std::uint8_t>(std::min<std::uint32_t>(255u * c / a, 255u));
}

}  // namespace detail

// The region [left, left + width) x [top, top + height) of an image.
struct PixelBox {
  int left = 0, top = 0, width = 0, height = 0;
};

// Resizes to out_width x out_height with Pillow's BICUBIC filter, returning only the pixels inside
// `window` (a box within the out_width x out_height result). Alpha, if present, is resized too.
inline Image resize_bicubic_window(const Image& img, int out_width, int out_height, PixelBox window) {
  check_image(img, "resize");
  require(out_width > 0 && out_height > 0, "resize: output size ", out_width, "x", out_height, " is not positive");
  require(window.left >= 0 && window.top >= 0 && window.width > 0 && window.height > 0 &&
              window.left <= out_width - window.width && window.top <= out_height - window.height,
          "resize: window ", window.width, "x", window.height, " at (", window.left, ", ", window.top,
          ") is not inside the ", out_width, "x", out_height, " output");
  const int x0 = window.left, y0 = window.top, x1 = x0 + window.width, y1 = y0 + window.height;
  const std::size_t n = img.pixel_count();
  Image out;
  out.width = window.width;
  out.height = window.height;

  if (out_width == img.width && out_height == img.height) {
    // Pillow returns a copy when the size does not change (before any premultiplication).
    out.rgb.resize(static_cast<std::size_t>(window.width) * static_cast<std::size_t>(window.height) * 3);
    if (img.has_alpha()) out.alpha.resize(out.pixel_count());
    for (int y = 0; y < window.height; ++y) {
      const std::size_t src = static_cast<std::size_t>(y0 + y) * static_cast<std::size_t>(img.width) + static_cast<std::size_t>(x0);
      const std::size_t dst = static_cast<std::size_t>(y) * static_cast<std::size_t>(window.width);
      std::copy_n(img.rgb.data() + src * 3, static_cast<std::size_t>(window.width) * 3, out.rgb.data() + dst * 3);
      if (img.has_alpha())
        std::copy_n(img.alpha.data() + src, static_cast<std::size_t>(window.width), out.alpha.data() + dst);
    }
    return out;
  }

  if (!img.has_alpha()) {
    detail::Plane8 in{img.width, img.height, 3, img.rgb};
    out.rgb = detail::resample_window(in, out_width, out_height, x0, y0, x1, y1).data;
    return out;
  }

  detail::Plane8 in{img.width, img.height, 4, std::vector<std::uint8_t>(n * 4)};
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint8_t a = img.alpha[i];
    for (std::size_t c = 0; c < 3; ++c) in.data[i * 4 + c] = detail::premultiply(img.rgb[i * 3 + c], a);
    in.data[i * 4 + 3] = a;
  }
  const detail::Plane8 r = detail::resample_window(in, out_width, out_height, x0, y0, x1, y1);
  out.rgb.resize(out.pixel_count() * 3);
  out.alpha.resize(out.pixel_count());
  for (std::size_t i = 0; i < out.pixel_count(); ++i) {
    const std::uint8_t a = r.data[i * 4 + 3];
    for (std::size_t c = 0; c < 3; ++c) out.rgb[i * 3 + c] = detail::unpremultiply(r.data[i * 4 + c], a);
    out.alpha[i] = a;
  }
  return out;
}

// Pillow's img.resize((out_width, out_height), Image.BICUBIC).
inline Image resize_bicubic(const Image& img, int out_width, int out_height) {
  return resize_bicubic_window(img, out_width, out_height, {0, 0, out_width, out_height});
}

// Pillow's BICUBIC resize of a single-channel float image (mode "F"), e.g. a score map; row-major
// width x height in, out_width x out_height out. No rounding and no clipping: the cubic kernel's
// negative lobes can overshoot the input range near edges.
inline std::vector<float> resize_bicubic_plane(std::span<const float> in, int width, int height, int out_width,
                                               int out_height) {
  require(width > 0 && height > 0 && out_width > 0 && out_height > 0, "resize: sizes ", width, "x", height, " -> ",
          out_width, "x", out_height, " must be positive");
  require(in.size() == static_cast<std::size_t>(width) * static_cast<std::size_t>(height), "resize: plane holds ",
          in.size(), " values, a ", width, "x", height, " plane needs ", static_cast<std::size_t>(width) * static_cast<std::size_t>(height));
  std::vector<float> cur(in.begin(), in.end());
  int w = width;
  if (out_width != width) {
    const detail::AxisWeights aw = detail::bicubic_axis_weights(width, out_width);
    std::vector<float> next(static_cast<std::size_t>(out_width) * static_cast<std::size_t>(height));
    for (int y = 0; y < height; ++y) {
      const float* src = cur.data() + static_cast<std::size_t>(y) * static_cast<std::size_t>(width);
      for (int xx = 0; xx < out_width; ++xx) {
        const auto i = static_cast<std::size_t>(xx);
        double ss = 0.0;
        for (int x = 0; x < aw.count[i]; ++x)
          ss += src[aw.first[i] + x] * aw.weights[aw.offset[i] + static_cast<std::size_t>(x)];
        next[static_cast<std::size_t>(y) * static_cast<std::size_t>(out_width) + i] = static_cast<float>(ss);
      }
    }
    cur.swap(next);
    w = out_width;
  }
  if (out_height != height) {
    const detail::AxisWeights aw = detail::bicubic_axis_weights(height, out_height);
    std::vector<float> next(static_cast<std::size_t>(w) * static_cast<std::size_t>(out_height));
    for (int yy = 0; yy < out_height; ++yy) {
      const auto i = static_cast<std::size_t>(yy);
      for (int x = 0; x < w; ++x) {
        double ss = 0.0;
        for (int y = 0; y < aw.count[i]; ++y)
          ss += cur[static_cast<std::size_t>(aw.first[i] + y) * static_cast<std::size_t>(w) + static_cast<std::size_t>(x)] *
                aw.weights[aw.offset[i] + static_cast<std::size_t>(y)];
        next[i * static_cast<std::size_t>(w) + static_cast<std::size_t>(x)] = static_cast<float>(ss);
      }
    }
    cur.swap(next);
  }
  return cur;
}

}  // namespace focuspatch
