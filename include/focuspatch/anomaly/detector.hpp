#pragma once
// FocusPatch AD end to end: one CLIP model and one unified memory bank serve every category.
//
//   image -> CLIP (direct resize to the model's resolution, so no border is cropped away)
//         -> global embedding: routes the image to its category (the category is not given)
//         -> patch tokens of several blocks, each through ln_post and the projection
//              -> visual map: distance of each patch to the nearest normal patch of the category
//         -> patch tokens of the value-value path (or the final tokens)
//              -> text map and focused keyword score against the unified keyword prompts
//         -> fused map, upsampled bilinearly to the input resolution, Gaussian-smoothed
//         -> image score from the fused map's top pixels and the focused text score
//         -> decisions (anomaly/calibration.hpp): verdict and normalized score against the
//            category's calibrated image threshold, a binary mask from its pixel threshold and
//            the mask's defect regions (anomaly/defect_regions.hpp)
//
// Calibration is a method of the detector, so embedded users and the programs decide alike:
// calibrate() scores normal images held out from the bank; calibrate_leave_one_shot_out() scores
// each of k >= 2 shots against a bank of the other k - 1 (a bank one shot smaller scores normal
// images a little higher, so these thresholds err towards fewer false alarms). The result is
// stored in the memory bank and saved with it. A category with neither is uncalibrated: its
// verdict says so, and no threshold is invented.
//
// The paper leaves the fusion weights open; ours are options with documented defaults.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "focuspatch/anomaly/anomaly_map.hpp"
#include "focuspatch/anomaly/calibration.hpp"
#include "focuspatch/anomaly/defect_regions.hpp"
#include "focuspatch/anomaly/learned_prompts.hpp"
#include "focuspatch/anomaly/memory_bank.hpp"
#include "focuspatch/anomaly/patch_focus.hpp"
#include "focuspatch/anomaly/prompt_bank.hpp"
#include "focuspatch/core/finite.hpp"
#include "focuspatch/io/image.hpp"
#include "focuspatch/io/preprocess.hpp"
#include "focuspatch/io/resample.hpp"
#include "focuspatch/model/clip_model.hpp"

namespace focuspatch {

struct DetectorOptions {
  // Blocks (0-based) whose projected patch tokens make the visual memory; empty: the blocks at
  // one half, three quarters and the end of the image tower, where patch tokens still carry local
  // detail but already live near the joint space.
  std::vector<int> feature_layers;
  // Last blocks run with the value-value attention path for the text map; -1: half the blocks;
  // 0: use the ordinary final patch tokens.
  int value_value_blocks = -1;
  FocusOptions focus;
  // Down-weights grid positions whose features vary freely across the normal shots (needs >= 2
  // shots). Off by default: measured on the synthetic dataset (random ViT-B/16, 2 shots, 4
  // categories) it cut pixel AUROC from 80.3 to 42.1 %, because where objects are not aligned the positions that vary
  // across shots are the object itself, which is where defects are.
  bool suppress_background = false;
  double text_weight = 0.5;         // fused map = w * text map + (1 - w) * visual map / 2
  double text_score_weight = 0.5;   // image score = w * focused text score + (1 - w) * top of fused map
  double image_top_fraction = 0.01; // share of the fused map's pixels whose mean is its top score
  double sigma = 4.0;               // Gaussian smoothing of the upsampled map, in pixels
  int batch_size = 8;
};

struct ImageFeatures {
  std::vector<float> global;               // [D] image embedding
  std::vector<FloatTensor> layer_patches;  // per feature layer: [P, D], CLS removed
  FloatTensor text_patches;                // [P, D] patches compared with the keywords
};

struct Detection {
  CategoryRoute route;
  float image_score = 0, text_score = 0, visual_score = 0;  // raw scores
  AnomalyMap map;                          // fused, at the model's input resolution
  AnomalyMap text_map, visual_map;         // patch grids, before fusion
  std::vector<FocusedKeyword> top_keywords;  // the 3 best anomaly keywords
  std::vector<FocusedKeyword> keywords;      // every anomaly keyword's focus, bank order

  // ---- decisions, from the routed category's thresholds (anomaly/calibration.hpp) ----
  DecisionThresholds thresholds;             // what the decisions below used
  Verdict verdict = Verdict::Uncalibrated;   // image_score > thresholds.image: Anomalous
  std::optional<float> normalized_score;     // 0.5 = the image threshold; absent when uncalibrated
  // 1 where the map is above the pixel threshold, row-major mask_width x mask_height: the
  // inspected image's size for detect(images), the map's for detect_features(). Empty without a
  // pixel threshold.
  int mask_width = 0, mask_height = 0;
  std::vector<std::uint8_t> mask;
  std::vector<DefectRegion> regions;         // connected components of the mask, in its pixels
};

struct CalibrationOptions {
  double false_alarm_rate = kDefaultFalseAlarmRate;              // image level, on normal images
  double pixel_false_alarm_rate = kDefaultPixelFalseAlarmRate;   // share of normal pixels above the pixel threshold
};

// Thread safety: building (add_normal, set_memory, set_keywords, set_prompt_bank, calibrate*,
// set_threshold_override) and the first detection of a category, which computes its keywords and
// background weights, change the detector. After prepare(), the overloads taking a Workspace are const and may run from several
// threads at once, each thread with its own Workspace.
template <class Backend = CpuBackend>
class Detector {
 public:
  struct Workspace {
    typename ClipModel<Backend>::Workspace clip;
  };

  // The model must outlive the detector. weights_id ties memory banks to these weights.
  Detector(ClipModel<Backend>& model, DetectorOptions options = {})
      : model_(model), options_(std::move(options)), memory_(resolve_layers(model.config(), options_), model.config().embed_dim,
                                                              weights_id(model)) {
    const int layers = model.config().vision.layers;
    if (options_.value_value_blocks < 0) options_.value_value_blocks = std::max(1, layers / 2);
    require(options_.value_value_blocks <= layers, "detector: ", options_.value_value_blocks, " value-value blocks requested but the ",
            "image tower has ", layers);
    options_.feature_layers.assign(memory_.layers().begin(), memory_.layers().end());
    require(options_.text_weight >= 0 && options_.text_weight <= 1 && options_.text_score_weight >= 0 && options_.text_score_weight <= 1,
            "detector: fusion weights must lie in [0, 1]");
    require(options_.batch_size > 0, "detector: batch size must be positive");
  }

  const DetectorOptions& options() const { return options_; }
  ClipModel<Backend>& model() { return model_; }
  MemoryBank& memory() { return memory_; }
  const MemoryBank& memory() const { return memory_; }
  int resolution() const { return model_.config().vision.image_size; }

  // Identifies the weights' content (the data section's CRC-32 and size, as recorded in the file),
  // so a memory bank built with other weights is refused when loaded.
  static std::string weights_id(const ClipModel<Backend>& model) {
    const auto& f = model.weights();
    char crc[16];
    std::snprintf(crc, sizeof crc, "%08x", static_cast<unsigned>(f.data_checksum()));
    return "fpw-crc32:" + std::string(crc) + ":" + std::to_string(f.file_size());
  }
  void set_memory(MemoryBank bank) {
    require(bank.layers() == memory_.layers(), "detector: the memory bank was built from blocks other than this detector's");
    memory_ = std::move(bank);
    background_.clear();
    device_memory_.clear();
    shot_features_.clear();
  }

  // ---- keywords --------------------------------------------------------------------------------
  // stored_first: keyword embeddings stored in the weight file win even when they were computed
  // from another bank (for a built-in default bank that should not override what was deployed).
  void set_prompt_bank(PromptBank bank, bool stored_first = false) {
    bank_ = std::move(bank);
    stored_first_ = stored_first;
    keywords_.clear();
  }
  void set_keywords(const std::string& category, KeywordEmbeddings keywords) {
    keywords.validate("keywords of " + category);
    require(keywords.dim() == model_.config().embed_dim, "detector: keywords of ", category, " have width ", keywords.dim(),
            ", the model's embeddings ", model_.config().embed_dim);
    keywords_[category] = std::move(keywords);
  }
  // The category's keyword embeddings: set explicitly, else stored in the weight file for its
  // object word (when they match the bank in use), else computed with the text tower. Learned
  // prompt contexts stored in the weight file join them as extra normal/anomaly rows.
  const KeywordEmbeddings& keywords(const std::string& category) {
    auto it = keywords_.find(category);
    if (it != keywords_.end()) return it->second;
    KeywordEmbeddings kw = bank_keywords(category);
    const auto& file = model_.weights();
    if (has_learned_prompts(file)) {
      require(model_.has_tokenizer(), file.path(), ": learned prompts need the tokenizer for their object word; convert with --vocab");
      if (!learned_) learned_ = load_learned_prompts(file);
      kw = append_keywords(std::move(kw), learned_state_embeddings(model_, *learned_, object_word_for_category(category)));
    }
    return keywords_[category] = std::move(kw);
  }

  // ---- features --------------------------------------------------------------------------------
  // Resizes straight to the model's square input (no crop: a defect at the border must stay in
  // view) and normalizes with the model's mean and std.
  void preprocess_into(const Image& image, float* out) const {
    const int n = resolution();
    const Image resized = image.width == n && image.height == n ? image : resize_bicubic(image, n, n);
    normalize_to_chw(resized, model_.config().image_mean, model_.config().image_std, out);
  }

  std::vector<ImageFeatures> encode(std::span<const Image> images) { return encode(images, own_); }
  std::vector<ImageFeatures> encode(std::span<const Image> images, Workspace& ws) const {
    std::vector<ImageFeatures> out;
    out.reserve(images.size());
    const int n = resolution();
    const std::int64_t D = model_.config().embed_dim;
    VisionRequest request;
    request.patch_tokens = options_.value_value_blocks == 0;
    request.projected_layers = options_.feature_layers;
    request.value_value_blocks = options_.value_value_blocks;
    for (std::size_t begin = 0; begin < images.size(); begin += static_cast<std::size_t>(options_.batch_size)) {
      const auto count = static_cast<std::int64_t>(std::min<std::size_t>(static_cast<std::size_t>(options_.batch_size), images.size() - begin));
      std::vector<float> pixels(static_cast<std::size_t>(count) * 3 * static_cast<std::size_t>(n) * static_cast<std::size_t>(n));
      for (std::int64_t b = 0; b < count; ++b)
        preprocess_into(images[begin + static_cast<std::size_t>(b)], pixels.data() + b * 3 * n * n);
      const VisionOutput v = std::as_const(model_).encode_images(pixels, count, request, ws.clip);
      const FloatTensor& text_source = options_.value_value_blocks > 0 ? v.value_value_tokens : v.patch_tokens;
      for (std::int64_t b = 0; b < count; ++b) {
        ImageFeatures f;
        f.global.assign(v.image_embeddings.data() + b * D, v.image_embeddings.data() + (b + 1) * D);
        for (int layer : options_.feature_layers) f.layer_patches.push_back(drop_cls(v.projected_layers.at(layer), b));
        f.text_patches = drop_cls(text_source, b);
        out.push_back(std::move(f));
      }
    }
    return out;
  }

  // ---- few-shot memory -------------------------------------------------------------------------
  void add_normal(const std::string& category, std::span<const Image> shots, std::span<const std::string> names) {
    require(shots.size() == names.size(), "detector: ", shots.size(), " shots but ", names.size(), " names");
    auto features = encode(shots);
    for (std::size_t i = 0; i < features.size(); ++i) memory_.add_shot(category, features[i].layer_patches, features[i].global, names[i]);
    // Kept for leave-one-shot-out calibration, which needs the shots' text-path tokens too (the
    // bank stores only what the visual memory searches).
    auto& kept = shot_features_[category];
    if (static_cast<std::int64_t>(kept.size()) + static_cast<std::int64_t>(features.size()) != memory_.shot_count(category)) kept.clear();
    for (auto& f : features) kept.push_back(std::move(f));
    background_.erase(category);
    device_memory_.erase(category);
  }

  // ---- calibration (anomaly/calibration.hpp) ---------------------------------------------------
  // Scores normal images of `category` that are not in the bank (the category is given, not
  // routed) and stores the calibration in the memory bank. load(i) returns image i of
  // names.size(); images are loaded one batch at a time, so a large calibration set never sits in
  // memory at once.
  const CategoryCalibration& calibrate(const std::string& category, std::span<const std::string> names,
                                       const std::function<Image(std::size_t)>& load, const CalibrationOptions& options = {}) {
    require(memory_.has_category(category), "calibration: the memory bank holds no category '", category, "'; add its shots first");
    require(!names.empty(), "calibration of '", category, "': no normal images given");
    // A shot scores near zero against its own bank: calibrating on it would set thresholds far too low.
    const auto& shot_files = memory_.shot_files(category);
    for (const auto& name : names)
      require(std::find(shot_files.begin(), shot_files.end(), name) == shot_files.end(), "calibration of '", category, "': ", name,
              " is one of the category's shots; calibration needs normal images that are not in the memory bank");
    require_rate(options.false_alarm_rate, "calibration: false-alarm rate");
    require_rate(options.pixel_false_alarm_rate, "calibration: pixel false-alarm rate");
    prepare();
    std::vector<double> scores;
    std::vector<float> pixels;
    const auto batch = static_cast<std::size_t>(options_.batch_size);
    for (std::size_t begin = 0; begin < names.size(); begin += batch) {
      std::vector<Image> images;
      for (std::size_t i = begin; i < std::min(names.size(), begin + batch); ++i) images.push_back(load(i));
      for (const auto& f : encode(images)) {
        const Detection d = std::as_const(*this).score_features(f, category, nullptr);
        scores.push_back(d.image_score);
        pixels.insert(pixels.end(), d.map.values.begin(), d.map.values.end());
      }
    }
    memory_.set_calibration(category, calibrate_from_scores(CalibrationMethod::HeldOutImages, {names.begin(), names.end()}, scores,
                                                            std::move(pixels), options.false_alarm_rate, options.pixel_false_alarm_rate));
    return *memory_.calibration(category);
  }
  const CategoryCalibration& calibrate(const std::string& category, std::span<const Image> images, std::span<const std::string> names,
                                       const CalibrationOptions& options = {}) {
    require(images.size() == names.size(), "calibration of '", category, "': ", images.size(), " images but ", names.size(), " names");
    return calibrate(category, names, [&](std::size_t i) { return images[i]; }, options);
  }

  // Each shot scored against a bank of the category's other shots. Needs k >= 2 shots added with
  // add_normal in this detector (a bank loaded from a file lacks the shots' text-path features).
  const CategoryCalibration& calibrate_leave_one_shot_out(const std::string& category, const CalibrationOptions& options = {}) {
    const std::int64_t k = memory_.shot_count(category);
    require(k >= 2, "calibration of '", category, "': leave-one-shot-out needs at least 2 shots, the bank holds ", k,
            "; give normal images held out from the bank instead");
    auto it = shot_features_.find(category);
    require(it != shot_features_.end() && static_cast<std::int64_t>(it->second.size()) == k, "calibration of '", category,
            "': leave-one-shot-out needs the shots' features, kept only for shots added with add_normal in this detector; give ",
            "normal images held out from the bank instead");
    require_rate(options.false_alarm_rate, "calibration: false-alarm rate");
    require_rate(options.pixel_false_alarm_rate, "calibration: pixel false-alarm rate");
    prepare();
    const std::vector<ImageFeatures>& shots = it->second;
    const auto& files = memory_.shot_files(category);
    std::vector<double> scores;
    std::vector<float> pixels;
    for (std::int64_t left_out = 0; left_out < k; ++left_out) {
      MemoryBank others(memory_.layers(), memory_.feature_dim(), memory_.weights_id());
      for (std::int64_t s = 0; s < k; ++s)
        if (s != left_out)
          others.add_shot(category, shots[static_cast<std::size_t>(s)].layer_patches, shots[static_cast<std::size_t>(s)].global,
                          files[static_cast<std::size_t>(s)]);
      const Detection d = std::as_const(*this).score_features(shots[static_cast<std::size_t>(left_out)], category, &others);
      scores.push_back(d.image_score);
      pixels.insert(pixels.end(), d.map.values.begin(), d.map.values.end());
    }
    memory_.set_calibration(category, calibrate_from_scores(CalibrationMethod::LeaveOneShotOut, files, scores, std::move(pixels),
                                                            options.false_alarm_rate, options.pixel_false_alarm_rate));
    return *memory_.calibration(category);
  }

  // Explicit thresholds replace the calibrated ones (not saved with the bank). category "" = every
  // category without its own override; nullopt leaves that threshold as it is.
  void set_threshold_override(const std::string& category, std::optional<double> image, std::optional<double> pixel) {
    for (const auto* v : {&image, &pixel})
      if (*v) require(std::isfinite(**v), "threshold override for '", category.empty() ? "every category" : category, "': ", **v,
                      " is not a finite number");
    auto& o = overrides_[category];
    if (image) o.first = image;
    if (pixel) o.second = pixel;
  }
  // The thresholds decisions for `category` use: its calibration, then the overrides.
  DecisionThresholds thresholds(const std::string& category) const {
    std::optional<double> image, pixel;
    for (const std::string& key : {std::string(), category}) {
      auto it = overrides_.find(key);
      if (it == overrides_.end()) continue;
      if (it->second.first) image = it->second.first;
      if (it->second.second) pixel = it->second.second;
    }
    return thresholds_from(memory_.has_category(category) ? memory_.calibration(category) : nullptr, image, pixel);
  }

  // Fills d's decisions from its category's thresholds, with the mask and regions at width x
  // height (the map is resampled bilinearly to that size when it differs).
  void decide(Detection& d, int width, int height) const {
    d.thresholds = thresholds(d.route.category);
    d.verdict = d.thresholds.verdict(d.image_score);
    const auto normalized = d.thresholds.normalized(d.image_score);
    d.normalized_score = normalized ? std::optional<float>(static_cast<float>(*normalized)) : std::nullopt;
    d.mask.clear();
    d.regions.clear();
    d.mask_width = d.mask_height = 0;
    if (!d.thresholds.pixel) return;
    const AnomalyMap map = d.map.width == width && d.map.height == height ? d.map : upsample_bilinear(d.map, height, width);
    d.mask_width = width;
    d.mask_height = height;
    d.mask = threshold_mask(map, *d.thresholds.pixel);
    d.regions = defect_regions(map, d.mask, d.keywords, d.text_map.width);
  }

  // ---- detection -------------------------------------------------------------------------------
  // Computes what detection needs per category (keywords, background weights) for every
  // category in the memory bank, so that the const detect overloads can run concurrently.
  void prepare() {
    for (const auto& c : memory_.categories()) {
      keywords(c);
      background_weights_for(c);
      if constexpr (kDeviceMemorySearch) device_memory_for(c);
    }
  }

  std::vector<Detection> detect(std::span<const Image> images) {
    prepare();
    return detect(images, own_);
  }
  std::vector<Detection> detect(std::span<const Image> images, Workspace& ws) const {
    require(!memory_.empty(), "detector: the memory bank is empty; add normal shots first");
    const auto features = encode(images, ws);
    std::vector<Detection> out;
    out.reserve(features.size());
    for (std::size_t i = 0; i < features.size(); ++i) {
      out.push_back(score_features(features[i], std::nullopt, nullptr));
      decide(out.back(), images[i].width, images[i].height);
    }
    return out;
  }

  Detection detect_features(const ImageFeatures& f, const std::optional<std::string>& category = std::nullopt) {
    prepare();
    return std::as_const(*this).detect_features(f, category);
  }
  // Decisions at the map's resolution (the model's input size).
  Detection detect_features(const ImageFeatures& f, const std::optional<std::string>& category = std::nullopt) const {
    Detection d = score_features(f, category, nullptr);
    decide(d, static_cast<int>(d.map.width), static_cast<int>(d.map.height));
    return d;
  }

 private:
  // Raw scores and maps, no decisions. visual_bank: the bank the visual memory searches (nullptr:
  // the detector's own; leave-one-shot-out passes a smaller one).
  Detection score_features(const ImageFeatures& f, const std::optional<std::string>& category, const MemoryBank* visual_bank) const {
    // A NaN would reach the score as NaN, which passes every "score > threshold" test; a part
    // must never pass inspection because its numbers broke (see core/finite.hpp).
    require_finite_features(f);
    Detection d;
    if (category) {
      d.route.category = *category;
      const auto sims = memory_.category_similarities(f.global);
      for (const auto& [name, sim] : sims)
        if (name == *category) d.route.similarity = sim;
    } else {
      d.route = memory_.route(f.global);
    }
    const std::string& cat = d.route.category;
    const std::int64_t P = f.text_patches.dim(0);
    const auto g = static_cast<std::int64_t>(std::lround(std::sqrt(static_cast<double>(P))));

    const std::vector<float> distances =
        visual_bank ? visual_bank->nearest_distances(cat, f.layer_patches) : visual_distances(cat, f.layer_patches);
    d.visual_map = AnomalyMap(g, g, distances);

    const KeywordEmbeddings& kw = prepared(keywords_, cat, "keywords");
    const std::vector<float>& weights = prepared(background_, cat, "background weights");
    const FocusResult focus = focus_patches(f.text_patches, kw, logit_multiplier(model_.config().logit_scale), options_.focus, weights);
    d.text_map = AnomalyMap::from_tensor(focus.anomaly_map);
    d.text_score = focus.image_score;
    d.top_keywords = focus.top_keywords(3);
    d.keywords = focus.keywords;

    AnomalyMap fused(g, g);
    const auto w = static_cast<float>(options_.text_weight);
    for (std::size_t i = 0; i < fused.values.size(); ++i) {
      // Distances are 1 - cosine in [0, 2]; halving puts them on the probabilities' [0, 1] scale.
      fused.values[i] = w * d.text_map.values[i] + (1.0f - w) * 0.5f * d.visual_map.values[i];
      if (!weights.empty()) fused.values[i] *= weights[i];
    }
    const int n = resolution();
    if constexpr (kDeviceMaps)
      d.map = AnomalyMap(n, n, model_.backend().upsample_and_smooth(fused.values, g, g, n, n, options_.sigma));
    else
      d.map = upsample_and_smooth(fused, n, n, options_.sigma);
    d.visual_score = image_score_top_fraction(upsample_bilinear(d.visual_map, n, n), options_.image_top_fraction);
    const float map_top = image_score_top_fraction(d.map, options_.image_top_fraction);
    d.image_score = static_cast<float>(options_.text_score_weight * d.text_score + (1.0 - options_.text_score_weight) * map_top);
    const float scores[] = {d.image_score, d.text_score, d.visual_score};
    require(!find_non_finite(scores) && !find_non_finite(d.map.values), "detector: the anomaly score or map of an image in ",
            "category '", cat, "' is not finite although its features were; overflow in the model?");
    return d;
  }

  // Backends that search the few-shot memory on their own device (CudaBackend) get each category's
  // rows uploaded once, in prepare(); the others search the host bank. Likewise for the final map's
  // upsampling and smoothing, the other per-image cost that grows with the image.
  static constexpr bool kDeviceMemorySearch =
      requires(const Backend& be, std::span<const float> q, const typename Backend::Weight& w) { be.nearest_cosine_distances(q, 1, w); };
  static constexpr bool kDeviceMaps =
      requires(const Backend& be, std::span<const float> m) { be.upsample_and_smooth(m, 1, 1, 1, 1, 1.0); };

  std::vector<float> visual_distances(const std::string& category, std::span<const FloatTensor> layer_patches) const {
    if constexpr (kDeviceMemorySearch) {
      const auto& device = prepared(device_memory_, category, "device copy of the memory bank");
      return memory_.nearest_distances(category, layer_patches, [&](std::size_t l, const std::vector<float>& q, std::int64_t p) {
        // memory() hands out the bank for changes; a copy older than the bank would score wrongly.
        require(device[l].numel() == static_cast<std::int64_t>(memory_.patches(category, l).size()), "detector: the memory bank of '",
                category, "' changed since prepare(); call prepare() again");
        return model_.backend().nearest_cosine_distances(q, p, device[l]);
      });
    } else {
      return memory_.nearest_distances(category, layer_patches);
    }
  }

  void device_memory_for(const std::string& category) {
    if (device_memory_.count(category)) return;
    std::vector<typename Backend::Weight> layers;
    const std::int64_t D = memory_.feature_dim();
    for (std::size_t l = 0; l < memory_.layers().size(); ++l) {
      const auto rows = memory_.patches(category, l);
      FloatTensor matrix({static_cast<std::int64_t>(rows.size()) / D, D}, std::vector<float>(rows.begin(), rows.end()));
      layers.push_back(model_.backend().upload(matrix));
    }
    device_memory_[category] = std::move(layers);
  }

  static void require_finite_features(const ImageFeatures& f) {
    auto check = [](std::span<const float> values, const char* what) {
      if (const auto bad = find_non_finite(values))
        fail("detector: the image's ", what, " holds ", bad->what, " at element ", bad->index, " of ", values.size(),
             "; refusing to score it (NaN/inf in the input or the weights?)");
    };
    check(f.global, "global embedding");
    for (const auto& layer : f.layer_patches) check(layer.values(), "patch features");
    check(f.text_patches.values(), "text-aligned patch features");
  }

  KeywordEmbeddings bank_keywords(const std::string& category) {
    const std::string word = object_word_for_category(category);
    const auto& file = model_.weights();
    if (has_keyword_embeddings(file, word)) {
      KeywordEmbeddings stored = load_keyword_embeddings(file, word);
      if (!bank_ || stored_first_ || stored.bank_fingerprint == bank_->fingerprint()) return stored;
    }
    require(bank_.has_value(), file.path(), ": holds no keyword embeddings for '", word, "' and no prompt bank was given to compute them");
    require(model_.has_tokenizer(), file.path(), ": no tokenizer to encode the prompt bank; convert with --vocab");
    return compute_keyword_embeddings(*bank_, word, [this](std::span<const std::string> texts) {
      return model_.encode_texts(texts, TextOverflow::Refuse);
    });
  }

  static KeywordEmbeddings append_keywords(KeywordEmbeddings a, const KeywordEmbeddings& b) {
    require(a.dim() == b.dim(), "detector: keyword embeddings of width ", a.dim(), " and ", b.dim(), " cannot be combined");
    FloatTensor m({a.matrix.dim(0) + b.matrix.dim(0), a.dim()});
    std::copy(b.matrix.values().begin(), b.matrix.values().end(),
              std::copy(a.matrix.values().begin(), a.matrix.values().end(), m.data()));
    a.matrix = std::move(m);
    a.names.insert(a.names.end(), b.names.begin(), b.names.end());
    a.kinds.insert(a.kinds.end(), b.kinds.begin(), b.kinds.end());
    return a;
  }

  static std::vector<std::int64_t> resolve_layers(const ClipConfig& c, const DetectorOptions& o) {
    std::vector<int> layers = o.feature_layers;
    const int L = c.vision.layers;
    if (layers.empty()) layers = {std::max(0, L / 2 - 1), std::max(0, 3 * L / 4 - 1), L - 1};
    std::vector<std::int64_t> out;
    for (int l : layers) {
      require(l >= 0 && l < L, "detector: feature block ", l, " does not exist (the image tower has blocks 0..", L - 1, ")");
      if (std::find(out.begin(), out.end(), l) == out.end()) out.push_back(l);
    }
    return out;
  }

  static FloatTensor drop_cls(const FloatTensor& tokens, std::int64_t b) {
    const std::int64_t T = tokens.dim(1), D = tokens.dim(2);
    FloatTensor out({T - 1, D});
    std::copy_n(tokens.data() + (b * T + 1) * D, (T - 1) * D, out.data());
    return out;
  }

  // Free-variation weights of the category's shots (computed once; none with fewer than 2 shots).
  // Every shot contributes the same number of patches, one grid per shot.
  const std::vector<float>& background_weights_for(const std::string& category) {
    auto it = background_.find(category);
    if (it != background_.end()) return it->second;
    std::vector<float> w;
    const std::int64_t D = memory_.feature_dim();
    const std::int64_t shots = memory_.shot_count(category);
    const auto patches = memory_.patches(category, memory_.layers().size() - 1);
    const std::int64_t P = shots > 0 ? static_cast<std::int64_t>(patches.size()) / (shots * D) : 0;
    if (options_.suppress_background && shots >= 2 && shots * P * D == static_cast<std::int64_t>(patches.size()))
      w = free_variation_weights(FloatTensor({shots, P, D}, std::vector<float>(patches.begin(), patches.end())));
    return background_[category] = std::move(w);
  }

  template <class Map>
  static const typename Map::mapped_type& prepared(const Map& map, const std::string& category, const char* what) {
    auto it = map.find(category);
    require(it != map.end(), "detector: no ", what, " for category '", category, "'; call prepare() after adding shots");
    return it->second;
  }

  ClipModel<Backend>& model_;
  DetectorOptions options_;
  MemoryBank memory_;
  std::optional<PromptBank> bank_;
  bool stored_first_ = false;
  std::optional<LearnedPrompts> learned_;
  Workspace own_;
  std::map<std::string, KeywordEmbeddings> keywords_;
  std::map<std::string, std::vector<float>> background_;
  std::map<std::string, std::vector<typename Backend::Weight>> device_memory_;  // kDeviceMemorySearch only
  std::map<std::string, std::vector<ImageFeatures>> shot_features_;  // per category, in shot order
  std::map<std::string, std::pair<std::optional<double>, std::optional<double>>> overrides_;  // image, pixel; "" = all
};

}  // namespace focuspatch
