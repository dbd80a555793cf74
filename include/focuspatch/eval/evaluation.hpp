#pragma once
// Few-shot evaluation of the detector on a dataset, as papers report it.
//
// Unified multi-class setting (default): k normal shots of every category go into one memory
// bank; each test image is routed to a category by the detector itself (the category is never
// given), then scored. Per-class setting: one bank per category and the category known, the
// classic protocol. Metrics per category, then their mean: image AUROC / AP / F1-max, pixel
// AUROC / AP / F1-max and AUPRO up to FPR 0.3. Maps are scored at the model's input resolution,
// against masks resized to it with nearest-neighbour sampling (the common practice).
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
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
};

struct CategoryResult {
  std::string name;
  std::size_t test_images = 0, anomalous = 0, routed_correctly = 0;
  BinaryMetrics image, pixel;
  double aupro = 0.0;
  std::vector<std::filesystem::path> shots;
};

struct ImageResult {
  std::filesystem::path path;
  std::string category, routed, defect;
  bool anomalous = false;
  float score = 0, text_score = 0, visual_score = 0;
};

struct EvaluationReport {
  std::string setting;  // "unified" or "per-class"
  std::size_t shots = 0;
  std::uint64_t seed = 0;
  std::vector<CategoryResult> categories;
  CategoryResult mean;  // metrics averaged over categories; counts summed
  std::vector<ImageResult> images;
  double memory_seconds = 0, prompt_seconds = 0, detect_seconds = 0;
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

  std::size_t total = 0, done = 0;
  for (const auto& c : data.categories) total += c.test.size();
  report.categories.resize(data.categories.size());
  if (!options.per_class) {
    detector.set_memory(empty_bank);
    for (std::size_t i = 0; i < data.categories.size(); ++i) add_shots(data.categories[i], report.categories[i]);
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
    }
    std::vector<double> scores;
    std::vector<std::uint8_t> labels;
    ProAccumulator pixels;
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
        if (t.anomalous) {
          const BinaryMask m = load_mask(t.mask.string(), options.images);
          const Image& img = images[i - begin];
          require(m.width == img.width && m.height == img.height, t.mask.string(), ": mask is ", m.width, "x", m.height, " but its image ",
                  t.image.string(), " is ", img.width, "x", img.height);
          mask = resized_mask(m, res);
        }
        pixels.add(d.map.values, mask, res, res, t.image.string());
        scores.push_back(d.image_score);
        labels.push_back(t.anomalous ? 1 : 0);
        r.test_images++;
        r.anomalous += t.anomalous ? 1 : 0;
        r.routed_correctly += d.route.category == c.name ? 1 : 0;
        report.images.push_back({t.image, c.name, d.route.category, t.defect, t.anomalous, d.image_score, d.text_score, d.visual_score});
        if (callbacks.on_image) callbacks.on_image(t, c.name, images[i - begin], d);
        if (callbacks.progress) callbacks.progress(++done, total);
      }
    }
    const std::string what = "category '" + c.name + "'";
    r.image = binary_metrics(scores, labels, what + " image scores");
    r.pixel = pixels.pixel_sweep(what + " pixel scores").metrics();
    r.aupro = pixels.aupro(options.aupro_limit, what + " AUPRO");
  }

  CategoryResult& m = report.mean;
  m.name = "mean";
  const auto n = static_cast<double>(report.categories.size());
  for (const auto& r : report.categories) {
    m.test_images += r.test_images;
    m.anomalous += r.anomalous;
    m.routed_correctly += r.routed_correctly;
    m.image.auroc += r.image.auroc / n;
    m.image.average_precision += r.image.average_precision / n;
    m.image.f1_max += r.image.f1_max / n;
    m.pixel.auroc += r.pixel.auroc / n;
    m.pixel.average_precision += r.pixel.average_precision / n;
    m.pixel.f1_max += r.pixel.f1_max / n;
    m.aupro += r.aupro / n;
  }
  return report;
}

}  // namespace focuspatch::eval
