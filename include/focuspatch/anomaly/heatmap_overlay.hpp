#pragma once
// What people look at: an anomaly map as a colour heat map blended over the inspected image.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>

#include "focuspatch/anomaly/anomaly_map.hpp"
#include "focuspatch/core/error.hpp"
#include "focuspatch/io/image.hpp"

namespace focuspatch {

// The "jet" colour map (matplotlib's piecewise-linear definition): 0 dark blue, 0.35 cyan-ish,
// 0.5 green, 0.65 yellow, 1 dark red. Values outside [0, 1] are clamped.
inline std::array<std::uint8_t, 3> jet_colour(float t) {
  const double x = std::clamp(static_cast<double>(std::isfinite(t) ? t : 0.0f), 0.0, 1.0);
  auto ramp = [](double v) { return static_cast<std::uint8_t>(std::lround(std::clamp(v, 0.0, 1.0) * 255.0)); };
  // matplotlib _jet_data: red (0.35,0)->(0.66,1)->(0.89,1)->(1,0.5); green (0.125,0)->(0.375,1)->(0.64,1)->(0.91,0);
  // blue (0,0.5)->(0.11,1)->(0.34,1)->(0.65,0).
  const double r = x < 0.35 ? 0.0 : x < 0.66 ? (x - 0.35) / 0.31 : x < 0.89 ? 1.0 : 1.0 - 0.5 * (x - 0.89) / 0.11;
  const double g = x < 0.125 ? 0.0 : x < 0.375 ? (x - 0.125) / 0.25 : x < 0.64 ? 1.0 : x < 0.91 ? 1.0 - (x - 0.64) / 0.27 : 0.0;
  const double b = x < 0.11 ? 0.5 + 0.5 * x / 0.11 : x < 0.34 ? 1.0 : x < 0.65 ? 1.0 - (x - 0.34) / 0.31 : 0.0;
  return {ramp(r), ramp(g), ramp(b)};
}

// Blends jet((map - lo) / (hi - lo)) over the image with weight alpha. The map must have the
// image's size; lo/hi fix the colour scale so overlays of different images compare.
inline Image overlay_heatmap(const Image& image, const AnomalyMap& map, float lo, float hi, float alpha = 0.5f) {
  check_image(image, "heat-map overlay");
  require(map.width == image.width && map.height == image.height, "heat-map overlay: the map is ", map.width, "x", map.height,
          " but the image is ", image.width, "x", image.height);
  require(hi > lo, "heat-map overlay: colour scale [", lo, ", ", hi, "] is empty");
  require(alpha >= 0.0f && alpha <= 1.0f, "heat-map overlay: alpha ", alpha, " is outside [0, 1]");
  Image out;
  out.width = image.width;
  out.height = image.height;
  out.rgb.resize(image.rgb.size());
  for (std::size_t i = 0; i < image.pixel_count(); ++i) {
    const auto c = jet_colour((map.values[i] - lo) / (hi - lo));
    for (std::size_t k = 0; k < 3; ++k)
      out.rgb[i * 3 + k] = static_cast<std::uint8_t>(std::lround((1.0f - alpha) * image.rgb[i * 3 + k] + alpha * c[k]));
  }
  return out;
}

}  // namespace focuspatch
