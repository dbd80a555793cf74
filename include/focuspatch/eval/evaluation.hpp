#pragma once
// Few-shot evaluation of the detector on a dataset, as papers report it.
//
// Unified multi-class setting (default): k normal shots of every category go into one memory
// bank; each test image is routed to a category by the detector itself (the category is never
// given), then scored. Per-class setting: one bank per category and the category known, the
// classic protocol. Metrics per category, then their mean: image AUROC / AP / F1-max, pixel
// AUROC / AP / F1-max and AUPRO up to FPR 0.3. Maps are scored at the model's input resolution,
// against masks resized to it with nearest-neighbour sampling (the common practice). Pixel metrics
// use the images with pixel ground truth (normal images, anomalous images with a mask): a dataset
// of the folder layout may leave a defect kind without masks, which CategoryResult lists; a
// category none of whose anomalous images has a mask gets no pixel metrics (pixel_evaluated false,
// the fields zero and meaningless), and the mean's pixel metrics average the categories that have them.
//
// Operating point: each category is calibrated on normal images only (anomaly/calibration.hpp):
// its normal TRAINING images that are not among the shots (never the test split), or, when none
// remain, leave-one-shot-out with k >= 2 shots; with neither it stays uncalibrated and its
// operating-point figures are NaN. At the calibrated thresholds: image precision, recall and F1
// over the test images, the false-alarm rate on test/good, and pixel precision, recall and IoU
// over the test pixels with ground truth (eval/metrics.hpp's OperatingPoint). The decisions counted are the
// detector's own, as deployed: by the thresholds of the category each image is routed to (in the
// unified setting a misrouted image is judged by the other category's thresholds). The mean row
// averages them over the calibrated categories.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "focuspatch/anomaly/detector.hpp"
#include "focuspatch/eval/dataset.hpp"
#include "focuspatch/eval/metrics.hpp"
#include "focuspatch/eval/pro.hpp"
#include "focuspatch/io/image.hpp"

namespace focuspatch::eval {

struct EvaluationOptions {
  std::size_t shots = 4;
  std::uint64_t seed = 0;
  bool per_class = false;
  double aupro_limit = 0.3;
  ImageLoadOptions images;  // for shots, test images and masks alike
  CalibrationOptions calibration;
  // Calibration images per category, drawn from the normal training images left after the shots
  // (seeded like the shots); 0 = all of them.
  std::size_t calibration_images = 0;
};

struct CategoryResult {
  std::string name;
  std::size_t test_images = 0, anomalous = 0, routed_correctly = 0;
  BinaryMetrics image, pixel;
  double aupro = 0.0;
  bool pixel_evaluated = true;  // false: no anomalous image with a mask; pixel and aupro are not measured
  std::size_t pixel_evaluated_categories = 0;     // the mean only: how many categories its pixel metrics average
  std::vector<std::string> kinds_without_masks;  // defect kinds left out of the pixel metrics
  std::vector<std::filesystem::path> shots;

  // Calibration and the operating point at its thresholds (NaN when uncalibrated).
  std::string calibration = "uncalibrated";  // calibration_method_name(), or "uncalibrated"
  std::vector<std::filesystem::path> calibration_images;  // for leave-one-shot-out: the shots
  double image_threshold = std::numeric_limits<double>::quiet_NaN();
  double pixel_threshold = std::numeric_limits<double>::quiet_NaN();
  double image_precision = std::numeric_limits<double>::quiet_NaN();
  double image_recall = std::numeric_limits<double>::quiet_NaN();
  double image_f1 = std::numeric_limits<double>::quiet_NaN();
  double false_alarm_rate = std::numeric_limits<double>::quiet_NaN();  // on test/good
  double pixel_precision = std::numeric_limits<double>::quiet_NaN();
  double pixel_recall = std::numeric_limits<double>::quiet_NaN();
  double pixel_iou = std::numeric_limits<double>::quiet_NaN();
  OperatingPoint image_counts, pixel_counts;  // the confusion counts behind them (summed in the mean)
  std::optional<CategoryCalibration> calibration_details;  // what calibrating learned (absent: uncalibrated)
  DecisionThresholds thresholds;                           // the thresholds the operating point used
};

struct ImageResult {
  std::filesystem::path path;
  std::string category, routed, defect;
  bool anomalous = false;
  float score = 0, text_score = 0, visual_score = 0;
  std::string verdict = "uncalibrated";  // verdict_name() at the calibrated threshold
};

struct EvaluationReport {
  std::string setting;  // "unified" or "per-class"
  std::size_t shots = 0;
  std::uint64_t seed = 0;
  std::vector<CategoryResult> categories;
  CategoryResult mean;  // metrics averaged over categories; counts summed
  std::vector<ImageResult> images;
  double memory_seconds = 0, prompt_seconds = 0, detect_seconds = 0, calibration_seconds = 0;
};

// Nearest-neighbour resize of a mask (io/image.hpp: any non-zero value = anomalous) to size x size.
inline std::vector<std::uint8_t> resized_mask(const BinaryMask& mask, int size) {
  std::vector<std::uint8_t> out(static_cast<std::size_t>(size) * static_cast<std::size_t>(size));
  for (int y = 0; y < size; ++y) {
    const int sy = std::min(mask.height - 1, static_cast<int>((y + 0.5) * mask.height / size));
    for (int x = 0; x < size; ++x) {
      const int sx = std::min(mask.width - 1, static_cast<int>((x + 0.5) * mask.width / size));
      out[static_cast<std::size_t>(y) * static_cast<std::size_t>(size) + static_cast<std::size_t>(x)] = mask.at(sx, sy) ? 1 : 0;
    }
  }
  return out;
}

struct EvaluationCallbacks {
  std::function<void(std::size_t done, std::size_t total)> progress;
  // Every test image once scored: for overlays and per-image output.
  std::function<void(const TestImage&, const std::string& category, const Image&, const Detection&)> on_image;
};

template <class Backend>
EvaluationReport evaluate(Detector<Backend>& detector, const Dataset& data, const EvaluationOptions& options,
                          const EvaluationCallbacks& callbacks = {}) {
  using clock = std::chrono::steady_clock;
  require(!data.categories.empty(), data.root.string(), ": the dataset has no categories");
  require(options.shots > 0, "evaluation: at least one shot per category is needed");
  EvaluationReport report;
  report.setting = options.per_class ? "per-class" : "unified";
  report.shots = options.shots;
  report.seed = options.seed;
  const int res = detector.resolution();
  const MemoryBank empty_bank(detector.memory().layers(), detector.memory().feature_dim(), detector.memory().weights_id());

  auto add_shots = [&](const Category& c, CategoryResult& r) {
    r.shots = sample_few_shot(c, options.shots, options.seed);
    std::vector<Image> images;
    std::vector<std::string> names;
    for (const auto& p : r.shots) {
      images.push_back(load_image(p.string(), options.images));
      names.push_back(p.string());
    }
    const auto t0 = clock::now();
    detector.add_normal(c.name, images, names);
    report.memory_seconds += std::chrono::duration<double>(clock::now() - t0).count();
  };

  // Calibration on the category's normal training images outside the shots (see the top).
  auto calibrate = [&](const Category& c, CategoryResult& r) {
    const auto t0 = clock::now();
    std::vector<std::filesystem::path> remaining;
    for (const auto& p : c.train_normal)
      if (std::find(r.shots.begin(), r.shots.end(), p) == r.shots.end()) remaining.push_back(p);
    if (options.calibration_images > 0 && remaining.size() > options.calibration_images) {
      std::vector<std::filesystem::path> drawn;
      for (std::size_t i : sample_indices(remaining.size(), options.calibration_images, ~options.seed ^ detail::fnv1a64(c.name)))
        drawn.push_back(remaining[i]);
      remaining = std::move(drawn);
    }
    if (!remaining.empty()) {
      std::vector<std::string> names;
      for (const auto& p : remaining) names.push_back(p.string());
      detector.calibrate(c.name, names, [&](std::size_t i) { return load_image(names[i], options.images); }, options.calibration);
      r.calibration_images = remaining;
    } else if (detector.memory().shot_count(c.name) >= 2) {
      detector.calibrate_leave_one_shot_out(c.name, options.calibration);
      r.calibration_images = r.shots;
    }
    if (const CategoryCalibration* cal = detector.memory().calibration(c.name)) {
      r.calibration = calibration_method_name(cal->method);
      r.calibration_details = *cal;
    }
    report.calibration_seconds += std::chrono::duration<double>(clock::now() - t0).count();
  };

  std::size_t total = 0, done = 0;
  for (const auto& c : data.categories) total += c.test.size();
  report.categories.resize(data.categories.size());
  if (!options.per_class) {
    detector.set_memory(empty_bank);
    for (std::size_t i = 0; i < data.categories.size(); ++i) add_shots(data.categories[i], report.categories[i]);
    for (std::size_t i = 0; i < data.categories.size(); ++i) calibrate(data.categories[i], report.categories[i]);
  }

  // Keyword embeddings are computed (or read from the weights) once per category, before the
  // clock for detection starts: they are a set-up cost, not a per-image one.
  const auto t_prompts = clock::now();
  for (const auto& c : data.categories) detector.keywords(c.name);
  report.prompt_seconds = std::chrono::duration<double>(clock::now() - t_prompts).count();

  for (std::size_t ci = 0; ci < data.categories.size(); ++ci) {
    const Category& c = data.categories[ci];
    CategoryResult& r = report.categories[ci];
    r.name = c.name;
    if (options.per_class) {
      detector.set_memory(empty_bank);
      add_shots(c, r);
      calibrate(c, r);
    }
    // The category's thresholds, reported with its operating point; the decisions counted are the
    // detector's (see the top).
    const DecisionThresholds thresholds = r.thresholds = detector.thresholds(c.name);
    std::optional<OperatingPointCounter> image_counter, pixel_counter;
    if (thresholds.image) image_counter.emplace(*thresholds.image);
    if (thresholds.pixel) pixel_counter.emplace(*thresholds.pixel);
    bool undecided = false;  // an image routed to an uncalibrated category
    std::vector<double> scores;
    std::vector<std::uint8_t> labels;
    ProAccumulator pixels;
    std::size_t masked_anomalous = 0;
    pixels.reserve(c.test.size() * static_cast<std::size_t>(res) * static_cast<std::size_t>(res));
    const std::size_t batch = static_cast<std::size_t>(detector.options().batch_size);
    for (std::size_t begin = 0; begin < c.test.size(); begin += batch) {
      const std::size_t end = std::min(c.test.size(), begin + batch);
      std::vector<Image> images;
      for (std::size_t i = begin; i < end; ++i) images.push_back(load_image(c.test[i].image.string(), options.images));
      const auto t0 = clock::now();
      const auto features = detector.encode(images);
      std::vector<Detection> detections;
      for (const auto& f : features)
        detections.push_back(detector.detect_features(f, options.per_class ? std::optional<std::string>(c.name) : std::nullopt));
      report.detect_seconds += std::chrono::duration<double>(clock::now() - t0).count();
      for (std::size_t i = begin; i < end; ++i) {
        const TestImage& t = c.test[i];
        const Detection& d = detections[i - begin];
        std::vector<std::uint8_t> mask(static_cast<std::size_t>(res) * static_cast<std::size_t>(res), 0);
        if (!t.mask.empty()) {
          const BinaryMask m = load_mask(t.mask.string(), options.images);
          const Image& img = images[i - begin];
          require(m.width == img.width && m.height == img.height, t.mask.string(), ": mask is ", m.width, "x", m.height, " but its image ",
                  t.image.string(), " is ", img.width, "x", img.height);
          mask = resized_mask(m, res);
        }
        if (image_counter) {
          undecided |= d.verdict == Verdict::Uncalibrated;
          image_counter->add_decision(d.verdict == Verdict::Anomalous, t.anomalous);
        }
        if (t.has_pixel_truth()) {
          pixels.add(d.map.values, mask, res, res, t.image.string());
          masked_anomalous += t.anomalous ? 1 : 0;
          // d's decisions are at the map's resolution, the masks' here.
          if (pixel_counter) {
            undecided |= d.mask.empty();
            if (!d.mask.empty()) pixel_counter->add_decisions(d.mask, mask, t.image.string());
          }
        } else if (std::find(r.kinds_without_masks.begin(), r.kinds_without_masks.end(), t.defect) == r.kinds_without_masks.end()) {
          r.kinds_without_masks.push_back(t.defect);
        }
        scores.push_back(d.image_score);
        labels.push_back(t.anomalous ? 1 : 0);
        r.test_images++;
        r.anomalous += t.anomalous ? 1 : 0;
        r.routed_correctly += d.route.category == c.name ? 1 : 0;
        report.images.push_back({t.image, c.name, d.route.category, t.defect, t.anomalous, d.image_score, d.text_score, d.visual_score,
                                 verdict_name(d.verdict)});
        if (callbacks.on_image) callbacks.on_image(t, c.name, images[i - begin], d);
        if (callbacks.progress) callbacks.progress(++done, total);
      }
    }
    const std::string what = "category '" + c.name + "'";
    r.image = binary_metrics(scores, labels, what + " image scores");
    r.pixel_evaluated = masked_anomalous > 0;
    if (r.pixel_evaluated) {
      r.pixel = pixels.pixel_sweep(what + " pixel scores").metrics();
      r.aupro = pixels.aupro(options.aupro_limit, what + " AUPRO");
    } else {
      pixel_counter.reset();  // no pixel ground truth for the anomalous images: no pixel operating point
    }
    if (undecided) image_counter.reset(), pixel_counter.reset();  // a partial count would mislead
    if (image_counter) {
      r.image_counts = image_counter->point();
      r.image_threshold = *thresholds.image;
      r.image_precision = r.image_counts.precision();
      r.image_recall = r.image_counts.recall();
      r.image_f1 = r.image_counts.f1();
      r.false_alarm_rate = r.image_counts.false_alarm_rate();
    }
    if (pixel_counter) {
      r.pixel_counts = pixel_counter->point();
      r.pixel_threshold = *thresholds.pixel;
      r.pixel_precision = r.pixel_counts.precision();
      r.pixel_recall = r.pixel_counts.recall();
      r.pixel_iou = r.pixel_counts.iou();
    }
  }

  CategoryResult& m = report.mean;
  m.name = "mean";
  const auto n = static_cast<double>(report.categories.size());
  for (const auto& r : report.categories) m.pixel_evaluated_categories += r.pixel_evaluated ? 1 : 0;
  m.pixel_evaluated = m.pixel_evaluated_categories > 0;
  const auto n_pixel = static_cast<double>(std::max<std::size_t>(1, m.pixel_evaluated_categories));
  for (const auto& r : report.categories) {
    m.test_images += r.test_images;
    m.anomalous += r.anomalous;
    m.routed_correctly += r.routed_correctly;
    m.image.auroc += r.image.auroc / n;
    m.image.average_precision += r.image.average_precision / n;
    m.image.f1_max += r.image.f1_max / n;
    for (auto counts : {&CategoryResult::image_counts, &CategoryResult::pixel_counts}) {
      OperatingPoint& sum = m.*counts;
      const OperatingPoint& add = r.*counts;
      sum.tp += add.tp, sum.fp += add.fp, sum.tn += add.tn, sum.fn += add.fn;
    }
    for (const auto& kind : r.kinds_without_masks) m.kinds_without_masks.push_back(r.name + "/" + kind);
    if (!r.pixel_evaluated) continue;
    m.pixel.auroc += r.pixel.auroc / n_pixel;
    m.pixel.average_precision += r.pixel.average_precision / n_pixel;
    m.pixel.f1_max += r.pixel.f1_max / n_pixel;
    m.aupro += r.aupro / n_pixel;
  }
  // Operating-point figures: the mean over the categories where they are defined.
  auto mean_of = [&](double CategoryResult::*field) {
    double sum = 0;
    std::size_t count = 0;
    for (const auto& r : report.categories)
      if (std::isfinite(r.*field)) sum += r.*field, ++count;
    m.*field = count ? sum / static_cast<double>(count) : std::numeric_limits<double>::quiet_NaN();
  };
  for (auto field : {&CategoryResult::image_precision, &CategoryResult::image_recall, &CategoryResult::image_f1,
                     &CategoryResult::false_alarm_rate, &CategoryResult::pixel_precision, &CategoryResult::pixel_recall,
                     &CategoryResult::pixel_iou})
    mean_of(field);
  m.calibration = "mean over calibrated categories";
  return report;
}

}  // namespace focuspatch::eval
