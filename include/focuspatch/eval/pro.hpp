#pragma once
// AUPRO: the area under the per-region-overlap curve, as in the MVTec AD evaluation protocol
// (Bergmann et al., IJCV 2021; the official evaluation code's pro_curve_util.compute_pro and
// generic_util.trapezoid, which this follows without copying):
//   - the ground-truth regions are the connected components of each mask's nonzero pixels under
//     8-connectivity (scipy.ndimage.label with a 3x3 all-ones structure); regions never span images;
//   - every distinct score over all pixels of all images is a threshold, highest first, and a pixel
//     is predicted anomalous when score >= threshold (ties enter together);
//   - at each threshold, PRO is the mean over ALL regions of all images of the fraction of the
//     region's pixels predicted anomalous (each region weighs the same, whatever its size), and
//     FPR is the fraction of normal pixels predicted anomalous, over all images;
//   - the curve runs (0, 0), then one (FPR, PRO) point per threshold, then (1, 1); it is integrated
//     with the trapezoidal rule from FPR 0 up to the limit (0.3 by default), the PRO at the limit
//     linearly interpolated between the last point below and the first point above it; the area is
//     divided by the limit, so a perfect map scores 1.
// The official code turns FPRs into float32 before integrating (a relative difference of ~1e-7 in
// the result); we keep exact counts and doubles. Images may differ in size.
//
// Cost: like PixelScoreAccumulator, 8 bytes a pixel (score and region id packed into one key) and
// one in-place sort; the curve comes out of a single sweep over the sorted keys.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "focuspatch/anomaly/defect_regions.hpp"
#include "focuspatch/core/error.hpp"
#include "focuspatch/eval/metrics.hpp"

namespace focuspatch::eval {

struct ProPoint {
  double fpr = 0.0;
  double pro = 0.0;
};

namespace detail {
// Trapezoidal integration of a curve fed point by point (fpr nondecreasing), stopping at fpr = limit
// with the curve's value there interpolated between its neighbours (the official trapezoid(x_max)).
class TrapezoidToLimit {
 public:
  explicit TrapezoidToLimit(double limit) : limit_(limit) {
    require(limit > 0.0 && limit <= 1.0, "PRO integration limit ", limit, " is outside (0, 1]");
  }
  // Returns false once the limit is reached; later points change nothing.
  bool add(const ProPoint& p) {
    if (done_) return false;
    if (!started_) {
      prev_ = p;
      started_ = true;
      return true;
    }
    if (p.fpr <= limit_) {
      area_ += 0.5 * (prev_.pro + p.pro) * (p.fpr - prev_.fpr);
      prev_ = p;
      return true;
    }
    if (prev_.fpr < limit_) {
      const double pro_at_limit = prev_.pro + (p.pro - prev_.pro) * (limit_ - prev_.fpr) / (p.fpr - prev_.fpr);
      area_ += 0.5 * (prev_.pro + pro_at_limit) * (limit_ - prev_.fpr);
    }
    done_ = true;
    return false;
  }
  bool reached_limit() const { return done_ || (started_ && prev_.fpr == limit_); }
  double normalized_area() const { return area_ / limit_; }

 private:
  double limit_;
  double area_ = 0.0;
  ProPoint prev_;
  bool started_ = false;
  bool done_ = false;
};
}  // namespace detail

// Area under a curve with nondecreasing fpr from its first point up to fpr = limit, divided by the
// limit. The curve must reach the limit.
inline double normalized_area_to(std::span<const ProPoint> curve, double limit) {
  detail::TrapezoidToLimit integral(limit);
  for (const ProPoint& p : curve)
    if (!integral.add(p)) break;
  require(integral.reached_limit(), "PRO curve ends before FPR ", limit);
  return integral.normalized_area();
}

// Collects anomaly maps with their ground-truth masks, image by image; aupro() then sorts every
// pixel once. The same pixels also give the pixel-level AUROC / AP / F1-max (pixel_sweep()), so an
// evaluation needs only this one copy of the scores.
class ProAccumulator {
 public:
  void reserve(std::size_t pixels) { keys_.reserve(pixels); }

  // scores and mask: width x height, row-major; mask nonzero = anomalous (0/255 or 0/1). A mask
  // without anomalous pixels (a good image) adds only normal pixels.
  void add(std::span<const float> scores, std::span<const std::uint8_t> mask, int width, int height,
           std::string_view what = "anomaly map") {
    const RegionLabels regions = label_regions(mask, width, height, what);
    require(scores.size() == regions.labels.size(), what, ": ", scores.size(), " scores for a ", width, "x", height,
            " mask");
    detail::check_finite(scores, what);
    require(inverse_sizes_.size() + regions.count() < std::numeric_limits<std::uint32_t>::max(), what,
            ": too many ground-truth regions in one evaluation");
    // Region ids continue across images; inverse_sizes_[id] belongs to region id (0 = background).
    const auto id_base = static_cast<std::uint32_t>(inverse_sizes_.size() - 1);
    for (std::uint32_t size : regions.sizes) inverse_sizes_.push_back(1.0 / static_cast<double>(size));
    for (std::size_t i = 0; i < scores.size(); ++i) {
      const std::uint32_t r = regions.labels[i];
      keys_.push_back(detail::make_key(scores[i], r == 0 ? 0u : id_base + r));
      if (r == 0) ++normal_pixels_;
    }
    sorted_ = false;
  }

  std::size_t pixel_count() const { return keys_.size(); }
  std::uint64_t normal_pixels() const { return normal_pixels_; }
  std::size_t region_count() const { return inverse_sizes_.size() - 1; }

  // The full curve: (0, 0), one point per distinct score, (1, 1). For inspection and plots; aupro()
  // does not build it.
  std::vector<ProPoint> curve(std::string_view what = "PRO curve") {
    std::vector<ProPoint> points{{0.0, 0.0}};
    sweep(what, [&](const ProPoint& p) {
      points.push_back(p);
      return true;
    });
    points.push_back({1.0, 1.0});
    return points;
  }

  // Normalized area under the PRO curve up to FPR = fpr_limit.
  double aupro(double fpr_limit = 0.3, std::string_view what = "AUPRO") {
    require(fpr_limit > 0.0 && fpr_limit <= 1.0, what, ": integration limit ", fpr_limit, " is outside (0, 1]");
    detail::TrapezoidToLimit integral(fpr_limit);
    integral.add({0.0, 0.0});
    sweep(what, [&](const ProPoint& p) { return integral.add(p); });
    integral.add({1.0, 1.0});
    return integral.normalized_area();
  }

  // Pixel-level AUROC / AP / F1-max over the same pixels (anomalous = inside any region).
  ThresholdSweep pixel_sweep(std::string_view what = "pixel scores") {
    sort();
    return detail::sweep_sorted_keys(keys_, keys_.size() - normal_pixels_, what);
  }

  void clear() {
    keys_.clear();
    inverse_sizes_.assign(1, 0.0);
    normal_pixels_ = 0;
    sorted_ = true;
  }

 private:
  void sort() {
    if (!sorted_) std::sort(keys_.begin(), keys_.end(), std::greater<>());
    sorted_ = true;
  }

  // Calls visit(point) after each group of equal scores, highest first, while visit returns true.
  template <class Visit>
  void sweep(std::string_view what, Visit&& visit) {
    const std::size_t regions = region_count();
    require(regions > 0, what, ": the ground truth has no anomalous pixels (", keys_.size(),
            " pixels, all normal); PRO is undefined");
    require(normal_pixels_ > 0, what, ": the ground truth has no normal pixels (", keys_.size(),
            " pixels, all anomalous); the false positive rate is undefined");
    sort();
    const auto normal = static_cast<double>(normal_pixels_);
    const auto region_total = static_cast<double>(regions);
    std::uint64_t false_positives = 0;
    // Neumaier-compensated sum of 1 / region size over the anomalous pixels seen so far: millions of
    // small terms would otherwise drift by ~n * eps.
    double overlap_sum = 0.0;
    double compensation = 0.0;
    for (std::size_t i = 0; i < keys_.size();) {
      const std::uint32_t score = detail::key_score_bits(keys_[i]);
      std::size_t j = i;
      for (; j < keys_.size() && detail::key_score_bits(keys_[j]) == score; ++j) {
        const std::uint32_t r = detail::key_payload(keys_[j]);
        if (r == 0) {
          ++false_positives;
          continue;
        }
        const double term = inverse_sizes_[r];
        const double t = overlap_sum + term;
        compensation += std::abs(overlap_sum) >= term ? (overlap_sum - t) + term : (term - t) + overlap_sum;
        overlap_sum = t;
      }
      i = j;
      const ProPoint p{static_cast<double>(false_positives) / normal,
                       std::min(1.0, (overlap_sum + compensation) / region_total)};
      if (!visit(p)) return;
    }
  }

  std::vector<std::uint64_t> keys_;
  std::vector<double> inverse_sizes_ = std::vector<double>(1, 0.0);  // index 0: background, unused
  std::uint64_t normal_pixels_ = 0;
  bool sorted_ = true;
};

}  // namespace focuspatch::eval
