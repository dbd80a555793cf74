#pragma once
// From scores to decisions, calibrated on normal images only: defect samples are what a line does
// not have when it starts, so every threshold here is a quantile of scores of NORMAL images.
//
// Image threshold at a target false-alarm rate a (default 1 %). With the n calibration scores
// sorted ascending, x(1) <= ... <= x(n), the threshold is the order statistic x(j) with
//     j = ceil((1 - a) (n + 1)),
// and an image is anomalous when its score is strictly above it. For a new normal image whose
// score is exchangeable with the calibration scores (same line, same conditions), the chance that
// it exceeds x(j) is at most (n + 1 - j) / (n + 1) <= a (exactly that for continuous scores): the
// split-conformal quantile, which needs no assumption about the scores' distribution. Over draws
// of the calibration set that realized rate is itself random, Beta(n + 1 - j, j) distributed; its
// mean and standard deviation are reported so users see how rough an estimate from n images is.
// The smallest rate n images can resolve is 1 / (n + 1): when a is below it, j would exceed n, the
// threshold is the highest calibration score, the expected rate is 1 / (n + 1) (above the
// target), and the calibration says so (resolved() is false).
//
// Pixel threshold: the same rule over all pixels of the normal images' anomaly maps, at a pixel
// false-alarm rate (default 0.1 %): on a normal image about that share of pixels is expected above
// it. Neighbouring map pixels are strongly correlated (the map is upsampled and smoothed), so the
// exchangeability argument does not make this a guarantee per image; it is a high quantile of the
// normal pixels, nothing more.
//
// Normal levels: the median calibration image score and the median normal pixel value. They anchor
// the normalized score (below) and the cold end of the overlays' colour scale.
//
// Normalized score (0.5 = the threshold, strictly increasing, in (0, 1)): with
// z = (s - level) / (t - level),
//     n(s) = exp(z - 1) / 2 for z <= 1,   1 - 1 / (2 z) for z > 1,
// continuous with a continuous slope at z = 1 (1/2 on both sides), so n > 0.5 exactly when the
// raw score is above the threshold. The normal level scores 1 / (2e) = 0.18, scores far below it
// approach 0, and twice the threshold's distance above the level scores 0.75. When the threshold is not above the level (all calibration scores
// equal, or a --threshold set below it) the spread t - level is taken as 1e-6 * max(1, |t|).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "focuspatch/core/error.hpp"

namespace focuspatch {

inline constexpr double kDefaultFalseAlarmRate = 0.01;
inline constexpr double kDefaultPixelFalseAlarmRate = 0.001;

// A target rate must lie strictly inside (0, 1); `what` names the option or field.
inline void require_rate(double rate, std::string_view what) {
  require(std::isfinite(rate) && rate > 0.0 && rate < 1.0, what, ": ", rate, " is not a rate strictly between 0 and 1");
}

// The 1-based rank j = ceil((1 - a)(n + 1)) of the threshold among n sorted scores (may exceed n).
inline std::size_t threshold_rank(std::size_t n, double rate) {
  require_rate(rate, "false-alarm rate");
  const double v = (1.0 - rate) * (static_cast<double>(n) + 1.0);
  // (1 - a)(n + 1) is often an integer spoilt by rounding (0.9 * 10 = 9.000000000000002).
  return static_cast<std::size_t>(std::ceil(v - 1e-9 * std::max(1.0, v)));
}

struct QuantileThreshold {
  double threshold = 0.0;
  std::size_t rank = 0;   // j, clamped to n
  std::size_t count = 0;  // n
  bool resolved = true;   // false when the target rate is below 1 / (n + 1)
  double expected_rate = 0.0;  // (n + 1 - j) / (n + 1): mean of the realized false-alarm rate
  double rate_sd = 0.0;        // its standard deviation over calibration draws (Beta(n + 1 - j, j))
};

// The order-statistic threshold of `values` at false-alarm rate `rate` (see the top of the file).
// Takes the values by copy: it partially sorts them.
inline QuantileThreshold quantile_threshold(std::vector<float> values, double rate, std::string_view what = "calibration scores") {
  require(!values.empty(), what, ": no scores to calibrate a threshold from");
  for (std::size_t i = 0; i < values.size(); ++i)
    require(std::isfinite(values[i]), what, ": score ", i, " is ", values[i], " (scores must be finite)");
  QuantileThreshold q;
  q.count = values.size();
  const std::size_t j = threshold_rank(q.count, rate);
  q.resolved = j <= q.count;
  q.rank = std::min(j, q.count);
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(q.rank - 1), values.end());
  q.threshold = values[q.rank - 1];
  const double n1 = static_cast<double>(q.count) + 1.0;
  const double alpha = n1 - static_cast<double>(q.rank), beta = static_cast<double>(q.rank);
  q.expected_rate = alpha / n1;
  q.rate_sd = std::sqrt(alpha * beta / (n1 * n1 * (n1 + 1.0)));
  return q;
}

// The median (mean of the two middle values for an even count).
inline double median_of(std::vector<float> values, std::string_view what = "calibration scores") {
  require(!values.empty(), what, ": no values for a median");
  const std::size_t mid = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(mid), values.end());
  const double upper = values[mid];
  if (values.size() % 2) return upper;
  const double lower = *std::max_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(mid));
  return 0.5 * (lower + upper);
}

// The normalized score n(s) defined at the top of the file.
inline double normalized_score(double score, double normal_level, double threshold) {
  const double spread_floor = 1e-6 * std::max(1.0, std::abs(threshold));
  const double spread = std::max(threshold - normal_level, spread_floor);
  const double z = (score - (threshold - spread)) / spread;
  if (z <= 1.0) return 0.5 * std::exp(z - 1.0);
  return 1.0 - 0.5 / z;
}

enum class Verdict { Uncalibrated, Normal, Anomalous };

inline const char* verdict_name(Verdict v) {
  switch (v) {
    case Verdict::Anomalous: return "anomalous";
    case Verdict::Normal: return "normal";
    default: return "uncalibrated";
  }
}

enum class CalibrationMethod { HeldOutImages, LeaveOneShotOut };

inline const char* calibration_method_name(CalibrationMethod m) {
  return m == CalibrationMethod::HeldOutImages ? "held-out normal images" : "leave-one-shot-out";
}
inline CalibrationMethod parse_calibration_method(const std::string& name, std::string_view where) {
  if (name == calibration_method_name(CalibrationMethod::HeldOutImages)) return CalibrationMethod::HeldOutImages;
  if (name == calibration_method_name(CalibrationMethod::LeaveOneShotOut)) return CalibrationMethod::LeaveOneShotOut;
  fail(where, ": unknown calibration method '", name, "'");
}

// What calibrating one category learned; stored with its memory bank (anomaly/memory_bank.hpp).
struct CategoryCalibration {
  CalibrationMethod method = CalibrationMethod::HeldOutImages;
  double false_alarm_rate = kDefaultFalseAlarmRate;
  double pixel_false_alarm_rate = kDefaultPixelFalseAlarmRate;
  std::vector<std::string> images;  // the normal images scored (for leave-one-shot-out: the shots)
  std::vector<double> image_scores; // their raw image scores, in the same order
  double image_threshold = 0.0, image_normal_level = 0.0;
  double pixel_threshold = 0.0, pixel_normal_level = 0.0;
  std::uint64_t pixel_count = 0;    // normal pixels behind the pixel threshold

  // The order statistic behind image_threshold, recomputed from the stored scores.
  QuantileThreshold image_quantile() const {
    return quantile_threshold(std::vector<float>(image_scores.begin(), image_scores.end()), false_alarm_rate);
  }
  // The same calibration at another image false-alarm rate: the threshold re-derived from the
  // stored scores (no image is scored again). The pixel threshold stays as it was: the normal
  // pixels' values are not stored.
  CategoryCalibration at_false_alarm_rate(double rate) const {
    require_rate(rate, "calibration: false-alarm rate");
    CategoryCalibration c = *this;
    c.false_alarm_rate = rate;
    c.image_threshold = c.image_quantile().threshold;
    return c;
  }
  double smallest_resolvable_rate() const { return 1.0 / (static_cast<double>(image_scores.size()) + 1.0); }
  // A sentence for the output when the estimate is rough: the target is below what n images
  // resolve, or the realized rate's spread is at least half the target. Empty otherwise.
  std::string warning() const {
    const QuantileThreshold q = image_quantile();
    char buf[400];
    if (!q.resolved) {
      std::snprintf(buf, sizeof buf,
                    "%zu calibration images cannot resolve a false-alarm rate of %g (the smallest is 1/(n+1) = %.3g): the "
                    "threshold is the highest normal score and about %.3g of normal images are expected above it; add "
                    "normal images",
                    q.count, false_alarm_rate, smallest_resolvable_rate(), q.expected_rate);
      return buf;
    }
    if (q.rate_sd >= 0.5 * false_alarm_rate) {
      std::snprintf(buf, sizeof buf,
                    "rough estimate: with %zu calibration images the realized false-alarm rate is %.3g +- %.3g (1 s.d. "
                    "over draws of the calibration set) for a target of %g",
                    q.count, q.expected_rate, q.rate_sd, false_alarm_rate);
      return buf;
    }
    return "";
  }
};

// A calibration fit for use (as built here, or as read from a file): rates inside (0, 1), one score
// per image name, every number finite. `where` names its origin in the error.
inline void validate_calibration(const CategoryCalibration& c, std::string_view where) {
  require_rate(c.false_alarm_rate, std::string(where) + ": false-alarm rate");
  require_rate(c.pixel_false_alarm_rate, std::string(where) + ": pixel false-alarm rate");
  require(!c.image_scores.empty() && c.images.size() == c.image_scores.size(), where, ": ", c.images.size(), " image names but ",
          c.image_scores.size(), " scores");
  require(c.pixel_count > 0, where, ": no pixels behind the pixel threshold");
  const double values[] = {c.image_threshold, c.image_normal_level, c.pixel_threshold, c.pixel_normal_level};
  for (double v : values) require(std::isfinite(v), where, ": a threshold or normal level is not finite");
  for (double v : c.image_scores) require(std::isfinite(v), where, ": a calibration score is not finite");
}

// Calibration from the normal images' raw image scores and the pooled values of their anomaly maps.
inline CategoryCalibration calibrate_from_scores(CalibrationMethod method, std::vector<std::string> images,
                                                 std::span<const double> image_scores, std::vector<float> pixels,
                                                 double false_alarm_rate = kDefaultFalseAlarmRate,
                                                 double pixel_false_alarm_rate = kDefaultPixelFalseAlarmRate) {
  require_rate(false_alarm_rate, "calibration: false-alarm rate");
  require_rate(pixel_false_alarm_rate, "calibration: pixel false-alarm rate");
  require(images.size() == image_scores.size(), "calibration: ", images.size(), " image names but ", image_scores.size(), " scores");
  require(!image_scores.empty(), "calibration: no normal images were scored");
  CategoryCalibration c;
  c.method = method;
  c.false_alarm_rate = false_alarm_rate;
  c.pixel_false_alarm_rate = pixel_false_alarm_rate;
  c.images = std::move(images);
  c.image_scores.assign(image_scores.begin(), image_scores.end());
  const std::vector<float> scores(image_scores.begin(), image_scores.end());
  c.image_threshold = quantile_threshold(scores, false_alarm_rate, "calibration image scores").threshold;
  c.image_normal_level = median_of(scores, "calibration image scores");
  c.pixel_count = pixels.size();
  c.pixel_normal_level = median_of(pixels, "calibration pixels");
  c.pixel_threshold = quantile_threshold(std::move(pixels), pixel_false_alarm_rate, "calibration pixels").threshold;
  return c;
}

// The thresholds a decision uses for one category: from its calibration, each replaceable by an
// explicit value (--threshold / --pixel-threshold). Absent = no decision possible.
struct DecisionThresholds {
  std::optional<double> image, pixel;
  std::optional<double> image_normal_level, pixel_normal_level;  // from the calibration only
  bool image_overridden = false, pixel_overridden = false;

  Verdict verdict(double score) const {
    if (!image) return Verdict::Uncalibrated;
    return score > *image ? Verdict::Anomalous : Verdict::Normal;
  }
  // Needs a threshold and a normal level; absent otherwise (never invented).
  std::optional<double> normalized(double score) const {
    if (!image || !image_normal_level) return std::nullopt;
    return normalized_score(score, *image_normal_level, *image);
  }
};

inline DecisionThresholds thresholds_from(const CategoryCalibration* calibration, std::optional<double> image_override = std::nullopt,
                                          std::optional<double> pixel_override = std::nullopt) {
  DecisionThresholds t;
  if (calibration) {
    t.image = calibration->image_threshold;
    t.pixel = calibration->pixel_threshold;
    t.image_normal_level = calibration->image_normal_level;
    t.pixel_normal_level = calibration->pixel_normal_level;
  }
  if (image_override) {
    require(std::isfinite(*image_override), "image threshold ", *image_override, " is not a finite number");
    t.image = *image_override, t.image_overridden = true;
  }
  if (pixel_override) {
    require(std::isfinite(*pixel_override), "pixel threshold ", *pixel_override, " is not a finite number");
    t.pixel = *pixel_override, t.pixel_overridden = true;
  }
  return t;
}

}  // namespace focuspatch
