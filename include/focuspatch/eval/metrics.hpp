#pragma once
// Threshold-free binary classification metrics over (score, label) pairs: AUROC, average precision
// and F1-max, exact (no binning), with the conventions of scikit-learn 1.2 so that published numbers
// computed with it can be compared with ours:
//   - higher score = more anomalous; a label is anomalous (positive) when it is nonzero;
//   - every distinct score is a threshold and a sample is predicted positive when score >= threshold,
//     so tied scores enter the curves together (sklearn's _binary_clf_curve);
//   - AUROC is the trapezoidal area under the ROC curve (roc_auc_score): a tie between a positive
//     and a negative counts one half;
//   - average precision is sklearn's step-wise sum over thresholds of (R_k - R_{k-1}) * P_k
//     (average_precision_score), not the trapezoidal area under the PR curve;
//   - F1-max is the largest F1 = 2PR / (P + R) over the points of precision_recall_curve, where
//     points with P + R = 0 are skipped (the usual `f1[np.isfinite(f1)].max()`).
//
// Inputs with a single class are handled per metric (sklearn's behaviour in brackets):
//   - no positives and no negatives (empty input): Error;
//   - AUROC: Error when either class is missing [sklearn raises ValueError];
//   - average precision and F1-max without positives: Error [sklearn warns "No positive class found
//     in y_true" and returns 0: recall is undefined there, so a number would only hide the mistake];
//   - average precision and F1-max without negatives: 1 [sklearn: 1; every threshold has
//     precision 1, and the lowest one has recall 1].
// Non-finite scores are errors [sklearn: "Input contains NaN/infinity"]. -0.0 and +0.0 tie.
//
// Pixel-level metrics run over millions of pixels, so PixelScoreAccumulator packs each (float score,
// label) pair into one 64-bit key (8 bytes a pixel), sorts the keys in place once (O(n log n)), and
// one sweep over the sorted keys yields all three metrics.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "focuspatch/core/error.hpp"

namespace focuspatch::eval {

struct BinaryMetrics {
  double auroc = 0.0;
  double average_precision = 0.0;
  double f1_max = 0.0;
};

// What one pass over all thresholds (highest first) learns. The accessors apply the rules above for
// single-class inputs, so the same summary serves callers that only need the metrics defined there.
class ThresholdSweep {
 public:
  ThresholdSweep() = default;

  std::uint64_t positives() const { return positives_; }
  std::uint64_t negatives() const { return negatives_; }
  std::uint64_t threshold_count() const { return thresholds_; }

  double roc_auc() const {
    require(positives_ > 0 && negatives_ > 0, what_, ": AUROC is undefined with ", positives_, " anomalous and ",
            negatives_, " normal samples (both classes are needed)");
    // The area is accumulated in units of (negatives x positives) / 2 with integer counts, so it is
    // exact until 2^53 and the only rounding is this division.
    return roc_area_twice_ / (2.0 * static_cast<double>(positives_) * static_cast<double>(negatives_));
  }
  double average_precision() const {
    require_positives("average precision");
    return precision_sum_ / static_cast<double>(positives_);
  }
  double f1_max() const {
    require_positives("F1-max");
    return f1_max_;
  }
  // The score of the threshold where F1 is largest (the highest one on a tie): predicting
  // "anomalous" for score >= this value attains f1_max().
  double f1_max_threshold() const {
    require_positives("F1-max");
    return f1_threshold_;
  }
  BinaryMetrics metrics() const { return {roc_auc(), average_precision(), f1_max()}; }

 private:
  friend class SweepBuilder;
  void require_positives(std::string_view metric) const {
    require(positives_ > 0, what_, ": ", metric, " is undefined without anomalous samples (", negatives_,
            " normal samples, 0 anomalous)");
  }

  std::string what_ = "scores";
  std::uint64_t positives_ = 0;
  std::uint64_t negatives_ = 0;
  std::uint64_t thresholds_ = 0;
  double roc_area_twice_ = 0.0;  // sum over thresholds of dFP * (TP_prev + TP)
  double precision_sum_ = 0.0;   // sum over thresholds of dTP * precision
  double f1_max_ = 0.0;
  double f1_threshold_ = 0.0;
};

// Feeds a ThresholdSweep the cumulative counts at each distinct threshold, highest threshold first.
// The class totals must be known up front (F1 needs the number of positives at every threshold).
class SweepBuilder {
 public:
  SweepBuilder(std::uint64_t positives, std::uint64_t negatives, std::string_view what) {
    require(positives + negatives > 0, what, ": no samples to evaluate");
    s_.what_ = std::string(what);
    s_.positives_ = positives;
    s_.negatives_ = negatives;
  }

  // tp, fp: samples with score >= threshold_score that are anomalous / normal (cumulative).
  void threshold(std::uint64_t tp, std::uint64_t fp, double threshold_score) {
    ++s_.thresholds_;
    const auto d_tp = static_cast<double>(tp - tp_);
    const auto d_fp = static_cast<double>(fp - fp_);
    s_.roc_area_twice_ += d_fp * static_cast<double>(tp_ + tp);
    if (tp > tp_) s_.precision_sum_ += d_tp * (static_cast<double>(tp) / static_cast<double>(tp + fp));
    if (tp > 0) {
      // 2PR / (P + R) with P = tp / (tp + fp), R = tp / positives.
      const double f1 = 2.0 * static_cast<double>(tp) / static_cast<double>(tp + fp + s_.positives_);
      if (f1 > s_.f1_max_) {
        s_.f1_max_ = f1;
        s_.f1_threshold_ = threshold_score;
      }
    }
    tp_ = tp;
    fp_ = fp;
  }

  ThresholdSweep finish() {
    require(tp_ == s_.positives_ && fp_ == s_.negatives_, s_.what_, ": the sweep ended at ", tp_, " anomalous and ",
            fp_, " normal samples of ", s_.positives_, " and ", s_.negatives_);
    return std::move(s_);
  }

 private:
  ThresholdSweep s_;
  std::uint64_t tp_ = 0;
  std::uint64_t fp_ = 0;
};

namespace detail {

inline void check_lengths(std::size_t scores, std::size_t labels, std::string_view what) {
  require(scores == labels, what, ": ", scores, " scores but ", labels, " labels");
}

// Maps a finite float to an unsigned integer with the same order (-0.0 and +0.0 map together), so
// that pixel keys sort as plain integers.
inline std::uint32_t ordered_bits(float score) {
  if (score == 0.0f) score = 0.0f;
  const auto bits = std::bit_cast<std::uint32_t>(score);
  return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}
inline float from_ordered_bits(std::uint32_t key) {
  const std::uint32_t bits = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
  return std::bit_cast<float>(bits);
}

// Score in the high 32 bits, a payload (label or region id) in the low 32.
inline std::uint64_t make_key(float score, std::uint32_t payload) {
  return (static_cast<std::uint64_t>(ordered_bits(score)) << 32) | payload;
}
inline std::uint32_t key_score_bits(std::uint64_t key) { return static_cast<std::uint32_t>(key >> 32); }
inline std::uint32_t key_payload(std::uint64_t key) { return static_cast<std::uint32_t>(key & 0xffffffffu); }

inline void check_finite(std::span<const float> scores, std::string_view what) {
  for (std::size_t i = 0; i < scores.size(); ++i)
    require(std::isfinite(scores[i]), what, ": score ", i, " is ", scores[i], " (scores must be finite)");
}

// Keys sorted from the highest score down; walks the groups of equal scores and reports the
// cumulative (tp, fp) after each, treating a nonzero payload as anomalous.
inline ThresholdSweep sweep_sorted_keys(std::span<const std::uint64_t> keys, std::uint64_t positives,
                                        std::string_view what) {
  SweepBuilder builder(positives, keys.size() - positives, what);
  std::uint64_t tp = 0;
  std::uint64_t fp = 0;
  for (std::size_t i = 0; i < keys.size();) {
    const std::uint32_t score = key_score_bits(keys[i]);
    std::size_t j = i;
    for (; j < keys.size() && key_score_bits(keys[j]) == score; ++j) {
      if (key_payload(keys[j]) != 0) ++tp; else ++fp;
    }
    builder.threshold(tp, fp, static_cast<double>(from_ordered_bits(score)));
    i = j;
  }
  return builder.finish();
}

}  // namespace detail

// The three metrics (and class counts) of image-level scores. Scores need not be sorted; labels are
// nonzero for anomalous samples.
inline ThresholdSweep sweep_scores(std::span<const double> scores, std::span<const std::uint8_t> labels,
                                   std::string_view what = "scores") {
  detail::check_lengths(scores.size(), labels.size(), what);
  std::vector<std::pair<double, bool>> samples(scores.size());
  std::uint64_t positives = 0;
  for (std::size_t i = 0; i < scores.size(); ++i) {
    require(std::isfinite(scores[i]), what, ": score ", i, " is ", scores[i], " (scores must be finite)");
    samples[i] = {scores[i], labels[i] != 0};
    positives += labels[i] != 0;
  }
  std::sort(samples.begin(), samples.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  SweepBuilder builder(positives, samples.size() - positives, what);
  std::uint64_t tp = 0;
  std::uint64_t fp = 0;
  for (std::size_t i = 0; i < samples.size();) {
    const double score = samples[i].first;
    std::size_t j = i;
    for (; j < samples.size() && samples[j].first == score; ++j) {
      if (samples[j].second) ++tp; else ++fp;
    }
    builder.threshold(tp, fp, score);
    i = j;
  }
  return builder.finish();
}

inline double roc_auc(std::span<const double> scores, std::span<const std::uint8_t> labels,
                      std::string_view what = "scores") {
  return sweep_scores(scores, labels, what).roc_auc();
}
inline double average_precision(std::span<const double> scores, std::span<const std::uint8_t> labels,
                                std::string_view what = "scores") {
  return sweep_scores(scores, labels, what).average_precision();
}
inline double f1_max(std::span<const double> scores, std::span<const std::uint8_t> labels,
                     std::string_view what = "scores") {
  return sweep_scores(scores, labels, what).f1_max();
}
// All three; needs both classes (AUROC does).
inline BinaryMetrics binary_metrics(std::span<const double> scores, std::span<const std::uint8_t> labels,
                                    std::string_view what = "scores") {
  return sweep_scores(scores, labels, what).metrics();
}

// Collects pixel scores and labels image by image, then computes the pixel-level metrics over all of
// them at once. 8 bytes a pixel; sweep() sorts the stored pixels in place, and more can be added
// afterwards.
class PixelScoreAccumulator {
 public:
  void reserve(std::size_t pixels) { keys_.reserve(pixels); }

  // labels: nonzero = anomalous (a ground-truth mask as stored, 0/255 or 0/1).
  void add(std::span<const float> scores, std::span<const std::uint8_t> labels,
           std::string_view what = "anomaly map") {
    detail::check_lengths(scores.size(), labels.size(), what);
    detail::check_finite(scores, what);
    for (std::size_t i = 0; i < scores.size(); ++i) {
      keys_.push_back(detail::make_key(scores[i], labels[i] != 0 ? 1u : 0u));
      positives_ += labels[i] != 0;
    }
    sorted_ = false;
  }

  std::size_t size() const { return keys_.size(); }
  std::uint64_t positives() const { return positives_; }

  ThresholdSweep sweep(std::string_view what = "pixel scores") {
    if (!sorted_) std::sort(keys_.begin(), keys_.end(), std::greater<>());
    sorted_ = true;
    return detail::sweep_sorted_keys(keys_, positives_, what);
  }
  BinaryMetrics metrics(std::string_view what = "pixel scores") { return sweep(what).metrics(); }

  void clear() {
    keys_.clear();
    positives_ = 0;
    sorted_ = true;
  }

 private:
  std::vector<std::uint64_t> keys_;
  std::uint64_t positives_ = 0;
  bool sorted_ = true;
};

// ---- operating point: the metrics at one fixed threshold ----------------------------------------
// What a deployed detector does at its calibrated threshold (anomaly/calibration.hpp): a sample is
// predicted anomalous when its score is strictly ABOVE the threshold (a score equal to it is
// normal, as the verdict decides). Zero divisions give 0, as scikit-learn 1.2's precision_score,
// recall_score, f1_score and jaccard_score do by default (zero_division="warn"), except the
// false-alarm rate without normal samples, which is NaN (undefined; written as null in JSON).
struct OperatingPoint {
  std::uint64_t tp = 0, fp = 0, tn = 0, fn = 0;
  double threshold = 0.0;

  static double ratio(std::uint64_t num, std::uint64_t den) { return den ? static_cast<double>(num) / static_cast<double>(den) : 0.0; }
  double precision() const { return ratio(tp, tp + fp); }
  double recall() const { return ratio(tp, tp + fn); }
  double f1() const { return ratio(2 * tp, 2 * tp + fp + fn); }
  double iou() const { return ratio(tp, tp + fp + fn); }  // of the anomalous class (jaccard_score)
  double false_alarm_rate() const {
    return fp + tn ? static_cast<double>(fp) / static_cast<double>(fp + tn) : std::numeric_limits<double>::quiet_NaN();
  }
};

// Counts predictions against labels (nonzero = anomalous) at a fixed threshold, batch by batch
// (pixel maps need not be kept).
class OperatingPointCounter {
 public:
  explicit OperatingPointCounter(double threshold) {
    require(std::isfinite(threshold), "operating point: threshold ", threshold, " is not finite");
    point_.threshold = threshold;
  }
  template <class Score>
  void add(std::span<const Score> scores, std::span<const std::uint8_t> labels, std::string_view what = "scores") {
    detail::check_lengths(scores.size(), labels.size(), what);
    for (std::size_t i = 0; i < scores.size(); ++i) {
      require(std::isfinite(static_cast<double>(scores[i])), what, ": score ", i, " is ", scores[i], " (scores must be finite)");
      add_decision(static_cast<double>(scores[i]) > point_.threshold, labels[i] != 0);
    }
  }
  // A decision taken elsewhere (e.g. by a detector whose threshold depends on the image's route).
  void add_decision(bool predicted, bool actual) { (predicted ? (actual ? point_.tp : point_.fp) : (actual ? point_.fn : point_.tn)) += 1; }
  // Masks of predictions and labels (nonzero = anomalous), pixel by pixel.
  void add_decisions(std::span<const std::uint8_t> predicted, std::span<const std::uint8_t> labels, std::string_view what = "mask") {
    detail::check_lengths(predicted.size(), labels.size(), what);
    for (std::size_t i = 0; i < predicted.size(); ++i) add_decision(predicted[i] != 0, labels[i] != 0);
  }
  const OperatingPoint& point() const { return point_; }

 private:
  OperatingPoint point_;
};

inline OperatingPoint operating_point(std::span<const double> scores, std::span<const std::uint8_t> labels, double threshold,
                                      std::string_view what = "scores") {
  OperatingPointCounter c(threshold);
  c.add(scores, labels, what);
  return c.point();
}

}  // namespace focuspatch::eval
