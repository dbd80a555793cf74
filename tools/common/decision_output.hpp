#pragma once
// What focuspatch-detect and focuspatch-eval write about decisions: a category's calibration and
// the thresholds in use (JSON and one line for the terminal), and an image's defect regions.
#include <cstdio>
#include <string>

#include "focuspatch/anomaly/calibration.hpp"
#include "focuspatch/anomaly/defect_regions.hpp"
#include "focuspatch/io/json.hpp"

namespace focuspatch::tools {

inline void write_optional(json::Writer& w, const char* key, const std::optional<double>& v) {
  w.key(key);
  if (v) w.value(*v); else w.null();
}

// {"calibrated", "method", "images", "false_alarm_rate", "smallest_resolvable_rate",
//  "expected_false_alarm_rate", "false_alarm_rate_sd", "image_threshold", "image_normal_level",
//  "pixel_false_alarm_rate", "pixel_threshold", "pixel_normal_level", "pixel_count",
//  "image_threshold_overridden", "pixel_threshold_overridden", "warning", "calibration_images"}.
// Thresholds are the ones in use (after --threshold / --pixel-threshold); uncalibrated fields are null.
inline void write_calibration(json::Writer& w, const CategoryCalibration* c, const DecisionThresholds& t) {
  w.begin_object().member("calibrated", c != nullptr);
  w.key("method");
  if (c) w.value(calibration_method_name(c->method)); else w.null();
  w.key("images");
  if (c) w.value(c->image_scores.size()); else w.null();
  if (c) {
    const QuantileThreshold q = c->image_quantile();
    w.member("false_alarm_rate", c->false_alarm_rate).member("smallest_resolvable_rate", c->smallest_resolvable_rate());
    w.member("expected_false_alarm_rate", q.expected_rate).member("false_alarm_rate_sd", q.rate_sd);
    w.member("threshold_rank", q.rank).member("pixel_false_alarm_rate", c->pixel_false_alarm_rate).member("pixel_count", c->pixel_count);
  }
  write_optional(w, "image_threshold", t.image);
  write_optional(w, "image_normal_level", t.image_normal_level);
  write_optional(w, "pixel_threshold", t.pixel);
  write_optional(w, "pixel_normal_level", t.pixel_normal_level);
  w.member("image_threshold_overridden", t.image_overridden).member("pixel_threshold_overridden", t.pixel_overridden);
  w.key("warning");
  const std::string warning = c ? c->warning() : "uncalibrated: no normal images held out from the bank and fewer than 2 shots; no threshold is invented";
  if (warning.empty()) w.null(); else w.value(warning);
  w.key("calibration_images").begin_array();
  if (c)
    for (const auto& name : c->images) w.value(name);
  w.end_array().end_object();
}

// One line: "bottle: calibrated on 40 held-out normal images, image threshold 0.31 ..." or why not.
inline std::string calibration_summary(const std::string& category, const CategoryCalibration* c, const DecisionThresholds& t) {
  char buf[512];
  std::string s = category + ": ";
  if (c) {
    const QuantileThreshold q = c->image_quantile();
    std::snprintf(buf, sizeof buf, "calibrated (%s, %zu images): false-alarm rate %g -> image threshold %.6g (rank %zu of %zu; expected rate %.3g +- %.3g), pixel threshold %.6g",
                  calibration_method_name(c->method), c->image_scores.size(), c->false_alarm_rate, c->image_threshold, q.rank, q.count,
                  q.expected_rate, q.rate_sd, c->pixel_threshold);
    s += buf;
    if (const std::string w = c->warning(); !w.empty()) s += "\n  warning: " + w;
  } else {
    s += "UNCALIBRATED (no --calibration images and fewer than 2 shots): verdicts are 'uncalibrated'";
  }
  if (t.image_overridden) std::snprintf(buf, sizeof buf, "\n  image threshold set by option: %.6g", *t.image), s += buf;
  if (t.pixel_overridden) std::snprintf(buf, sizeof buf, "\n  pixel threshold set by option: %.6g", *t.pixel), s += buf;
  return s;
}

// [{"x", "y", "width", "height", "area", "peak_score", "mean_score", "keyword", "keyword_overlap"}]
inline void write_regions(json::Writer& w, const std::vector<DefectRegion>& regions) {
  w.begin_array();
  for (const auto& r : regions) {
    w.begin_object().member("x", r.x).member("y", r.y).member("width", r.width).member("height", r.height).member("area", r.area);
    w.member("peak_score", r.peak_score).member("mean_score", r.mean_score).key("keyword");
    if (r.keyword.empty()) w.null(); else w.value(r.keyword);
    w.member("keyword_overlap", r.keyword_overlap).end_object();
  }
  w.end_array();
}

}  // namespace focuspatch::tools
