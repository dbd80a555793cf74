#pragma once
// What people look at: an anomaly map as a colour heat map blended over the inspected image, and,
// for a decision, the colour scale anchored to the category's calibration, the defect regions'
// outlines and the verdict written on the image.
//
// Why anchored: the fused map's values sit in a narrow band (around 0.1 on a 0..1 scale for real
// photographs), so a fixed 0..1 scale paints every image uniformly blue. Anchored, the normal
// pixels' median is the cold end (dark blue), the pixel threshold the middle (green) and twice the
// threshold's distance above the median the hot end (dark red): yellow to red is above threshold.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <span>
#include <string>
#include <utility>

#include "focuspatch/anomaly/anomaly_map.hpp"
#include "focuspatch/anomaly/calibration.hpp"
#include "focuspatch/core/error.hpp"
#include "focuspatch/io/image.hpp"
#include "focuspatch/io/image_text.hpp"

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

// The colour scale [lo, hi] of a decision overlay: calibrated, lo = the normal pixel level and
// hi = 2 * pixel threshold - lo, so the threshold is the scale's middle. With a pixel threshold but
// no normal level (set by hand), lo = the map's minimum. Uncalibrated: the map's own range, so the
// picture still shows where the map is highest (and the label says it is uncalibrated).
inline std::pair<float, float> decision_colour_scale(const DecisionThresholds& t, const AnomalyMap& map) {
  detail::require_map(map, "decision overlay");
  const auto [mn, mx] = std::minmax_element(map.values.begin(), map.values.end());
  double lo = *mn, hi = *mx;
  if (t.pixel) {
    lo = t.pixel_normal_level ? std::min(*t.pixel_normal_level, *t.pixel) : std::min<double>(*mn, *t.pixel);
    hi = 2.0 * *t.pixel - lo;
  }
  if (!(hi > lo)) hi = lo + 1e-6 * std::max(1.0, std::abs(lo));
  return {static_cast<float>(lo), static_cast<float>(hi)};
}

// "ANOMALY 0.83", "OK 0.21" (the normalized score), or "UNCALIBRATED 0.123" (the raw score);
// compact ("NG 0.83", "OK 0.21", "? 0.123") when the long form would not fit max_chars.
inline std::string verdict_label(Verdict verdict, std::optional<float> normalized, float raw_score, std::size_t max_chars = 64) {
  char number[32];
  std::snprintf(number, sizeof number, normalized ? "%.2f" : "%.3g", static_cast<double>(normalized ? *normalized : raw_score));
  const char* word = verdict == Verdict::Anomalous ? "ANOMALY" : verdict == Verdict::Normal ? "OK" : "UNCALIBRATED";
  const char* short_word = verdict == Verdict::Anomalous ? "NG" : verdict == Verdict::Normal ? "OK" : "?";
  std::string label = std::string(word) + " " + number;
  if (label.size() > max_chars) label = std::string(short_word) + " " + number;
  return label;
}

// The decision drawn for a person: heat map on the calibrated scale, a white outline around each
// region of the mask (row-major, the image's size; empty: none), the verdict label on a dark box at
// the top-left (red for anomalous, green for normal, grey when uncalibrated). scale_override: a
// fixed colour scale [lo, hi] instead of the calibrated one.
inline Image overlay_decision(const Image& image, const AnomalyMap& map, const DecisionThresholds& thresholds,
                              std::span<const std::uint8_t> mask, Verdict verdict, std::optional<float> normalized, float raw_score,
                              std::optional<std::pair<float, float>> scale_override = std::nullopt, float alpha = 0.45f) {
  const auto [lo, hi] = scale_override ? *scale_override : decision_colour_scale(thresholds, map);
  Image out = overlay_heatmap(image, map, lo, hi, alpha);
  const int w = out.width, h = out.height;
  require(mask.empty() || mask.size() == out.pixel_count(), "decision overlay: the mask has ", mask.size(), " pixels, the image ",
          out.pixel_count());
  if (!mask.empty()) {
    // Outline: mask pixels within `r` pixels (Chebyshev) of a pixel outside the mask or the border.
    const int r = std::max(1, std::min(w, h) / 256);
    auto inside = [&](int x, int y) { return x >= 0 && y >= 0 && x < w && y < h && mask[static_cast<std::size_t>(y) * w + x] != 0; };
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        if (!inside(x, y)) continue;
        bool edge = false;
        for (int dy = -r; dy <= r && !edge; ++dy)
          for (int dx = -r; dx <= r && !edge; ++dx) edge = !inside(x + dx, y + dy);
        if (edge) std::fill_n(out.rgb.begin() + (static_cast<std::ptrdiff_t>(y) * w + x) * 3, 3, std::uint8_t{255});
      }
  }
  const int margin = 2;
  const std::size_t fit = static_cast<std::size_t>(std::max(1, (w - 2 * margin + 1) / 6));
  const std::string label = verdict_label(verdict, normalized, raw_score, fit);
  const int scale = std::clamp(std::min((w - 2 * margin) / std::max(1, text_width(label, 1)), h / 96), 1, 8);
  const std::array<std::uint8_t, 3> colour = verdict == Verdict::Anomalous ? std::array<std::uint8_t, 3>{255, 64, 64}
                                             : verdict == Verdict::Normal  ? std::array<std::uint8_t, 3>{80, 230, 80}
                                                                           : std::array<std::uint8_t, 3>{200, 200, 200};
  fill_rect(out, 0, 0, text_width(label, scale) + 2 * margin * scale, text_height(scale) + 2 * margin * scale, {0, 0, 0});
  draw_text(out, margin * scale, margin * scale, label, scale, colour);
  return out;
}

}  // namespace focuspatch
