#pragma once
// Few-shot visual memory: the patch features of the k normal shots of every category, in one bank
// for all categories. At test time the category is not given, so a query image is first routed to
// the category whose shots its global embedding resembles most; each query patch is then scored
// by its cosine distance to the nearest normal patch of that category. A patch unlike every
// normal patch seen is anomalous.
//
// Features live in CLIP's joint image-text space (one width D for patches and global embeddings)
// and are stored L2-normalised, so a cosine is a dot product and a whole query image against a
// category is one matrix product per layer. "Layer" is whatever feature extraction point the
// caller uses (e.g. the ViT block index whose tokens were projected); several may be stored and
// their distances are averaged.
//
// A built bank is saved as a .fpw file (general.architecture = "focuspatch-memory") so the shots
// are encoded once. It records an identifier of the CLIP weights it was built with; features
// from other weights live in another space, so loading with a different identifier is refused.
//
// Each category may carry its calibration (anomaly/calibration.hpp): the thresholds and the normal
// images' scores they came from are data of the deployment, so they travel with the bank. Format
// version 2 added them; a version-1 file still loads, with every category uncalibrated.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "focuspatch/anomaly/calibration.hpp"
#include "focuspatch/core/error.hpp"
#include "focuspatch/core/tensor.hpp"
#include "focuspatch/io/weight_file.hpp"
#include "focuspatch/io/weight_writer.hpp"

namespace focuspatch {

// Where a query image was routed. similarity is the best cosine between the query's global
// embedding and one shot of the category; margin is that minus the best cosine reached by any
// other category (how clear the choice was), +infinity when the bank holds a single category.
struct CategoryRoute {
  std::string category;
  float similarity = 0.0f;
  float margin = 0.0f;
};

class MemoryBank {
 public:
  static constexpr const char* kArchitecture = "focuspatch-memory";
  static constexpr std::int64_t kFormatVersion = 2;  // 2: per-category calibration
  static constexpr std::int64_t kOldestReadableVersion = 1;
  // Memory rows scored per matrix product: the similarity block is P x kDefaultBlockRows floats
  // (about 22 MB for a 37x37 patch grid), whatever the bank's size.
  static constexpr std::int64_t kDefaultBlockRows = 4096;

  // layers: identifiers of the feature extraction points (distinct; their order is the order in
  // which add_shot and nearest_distances take per-layer tensors). weights_id: identifies the CLIP
  // weights the features come from (e.g. the weight file's data checksum).
  MemoryBank(std::vector<std::int64_t> layers, std::int64_t feature_dim, std::string weights_id)
      : layers_(std::move(layers)), feature_dim_(feature_dim), weights_id_(std::move(weights_id)) {
    require(!layers_.empty(), "memory bank: at least one feature layer is needed");
    for (std::size_t i = 0; i < layers_.size(); ++i)
      for (std::size_t j = i + 1; j < layers_.size(); ++j)
        require(layers_[i] != layers_[j], "memory bank: layer ", layers_[i], " is listed twice");
    require(feature_dim_ > 0, "memory bank: feature dimension must be positive, got ", feature_dim_);
    require(!weights_id_.empty(), "memory bank: the CLIP weights identifier is empty");
  }

  // Adds one normal shot of `category`: its patch features per layer (layer_patches[l] is [P, D],
  // patch tokens only, CLS removed; P equal across layers) and its global embedding [D]. Rows
  // are L2-normalised here. shot_file is kept for provenance (saved with the bank).
  void add_shot(const std::string& category, std::span<const FloatTensor> layer_patches, std::span<const float> global_embedding,
                std::string shot_file) {
    require(!category.empty(), "memory bank: category name is empty (shot ", shot_file, ")");
    require(layer_patches.size() == layers_.size(), "memory bank: shot ", shot_file, " has features for ", layer_patches.size(),
            " layers, the bank stores ", layers_.size());
    require(static_cast<std::int64_t>(global_embedding.size()) == feature_dim_, "memory bank: shot ", shot_file,
            " has a global embedding of ", global_embedding.size(), " values, the bank's feature dimension is ", feature_dim_);
    const std::int64_t rows = layer_patches[0].shape().empty() ? 0 : layer_patches[0].dim(0);
    for (std::size_t l = 0; l < layer_patches.size(); ++l) {
      const Shape& s = layer_patches[l].shape();
      require(s.size() == 2 && s[1] == feature_dim_, "memory bank: shot ", shot_file, " layer ", layers_[l],
              " features have shape ", shape_string(s), ", expected [patches, ", feature_dim_, "]");
      require(s[0] > 0 && s[0] == rows, "memory bank: shot ", shot_file, " has ", s[0], " patches at layer ", layers_[l], " but ",
              rows, " at layer ", layers_[0]);
    }
    std::vector<float> global(global_embedding.begin(), global_embedding.end());
    normalize_rows(global, 1, "global embedding of shot " + shot_file);
    std::vector<std::vector<float>> normalized(layer_patches.size());
    for (std::size_t l = 0; l < layer_patches.size(); ++l) {
      normalized[l].assign(layer_patches[l].values().begin(), layer_patches[l].values().end());
      normalize_rows(normalized[l], rows, "layer " + std::to_string(layers_[l]) + " patches of shot " + shot_file);
    }
    // Everything is validated before the bank changes, so a failed add leaves it as it was.
    Category& c = categories_[category];
    if (c.layer_patches.empty()) c.layer_patches.resize(layers_.size());
    for (std::size_t l = 0; l < normalized.size(); ++l)
      c.layer_patches[l].insert(c.layer_patches[l].end(), normalized[l].begin(), normalized[l].end());
    c.shots.insert(c.shots.end(), global.begin(), global.end());
    c.shot_files.push_back(std::move(shot_file));
    // Thresholds describe the scores against the bank as it was; another shot changes them.
    c.calibration.reset();
  }

  // ---- calibration ----------------------------------------------------------------------------
  // The category's calibration, or nullptr when it has none (never calibrated, a shot was added
  // since, or the bank was saved before calibrations were stored).
  const CategoryCalibration* calibration(const std::string& name) const {
    const auto& c = category(name).calibration;
    return c ? &*c : nullptr;
  }
  void set_calibration(const std::string& name, CategoryCalibration calibration) {
    validate_calibration(calibration, "memory bank: calibration of '" + name + "'");
    categories_.at(category_key(name)).calibration = std::move(calibration);
  }
  void clear_calibration(const std::string& name) { categories_.at(category_key(name)).calibration.reset(); }

  // ---- what the bank holds --------------------------------------------------------------------
  const std::vector<std::int64_t>& layers() const { return layers_; }
  std::int64_t feature_dim() const { return feature_dim_; }
  const std::string& weights_id() const { return weights_id_; }
  bool empty() const { return categories_.empty(); }
  // Category names in sorted order (the order routing breaks ties in).
  std::vector<std::string> categories() const {
    std::vector<std::string> names;
    for (const auto& [name, c] : categories_) names.push_back(name);
    return names;
  }
  bool has_category(const std::string& name) const { return categories_.count(name) != 0; }
  std::int64_t shot_count(const std::string& name) const { return static_cast<std::int64_t>(category(name).shot_files.size()); }
  const std::vector<std::string>& shot_files(const std::string& name) const { return category(name).shot_files; }
  // Memory patches of one category (the same count at every layer).
  std::int64_t patch_count(const std::string& name) const {
    return static_cast<std::int64_t>(category(name).layer_patches[0].size()) / feature_dim_;
  }
  // Row-major [patch_count, D], L2-normalised rows.
  std::span<const float> patches(const std::string& name, std::size_t layer_index) const {
    require(layer_index < layers_.size(), "memory bank: layer index ", layer_index, " out of range (", layers_.size(),
            " layers)");
    return category(name).layer_patches[layer_index];
  }
  // Row-major [shot_count, D], L2-normalised rows.
  std::span<const float> shot_embeddings(const std::string& name) const { return category(name).shots; }

  void set_block_rows(std::int64_t rows) {
    require(rows > 0, "memory bank: block size must be positive, got ", rows);
    block_rows_ = rows;
  }
  std::int64_t block_rows() const { return block_rows_; }

  // ---- routing --------------------------------------------------------------------------------
  // Per category (sorted by name): the highest cosine between the query's global embedding and
  // the category's shots. The best single shot, not the mean, so one close shot is enough even
  // when the category's shots vary (different views, colours).
  std::vector<std::pair<std::string, float>> category_similarities(std::span<const float> query_embedding) const {
    require(!empty(), "memory bank: it is empty, no category to route to");
    require(static_cast<std::int64_t>(query_embedding.size()) == feature_dim_, "memory bank: query embedding has ",
            query_embedding.size(), " values, the bank's feature dimension is ", feature_dim_);
    std::vector<float> q(query_embedding.begin(), query_embedding.end());
    normalize_rows(q, 1, "query global embedding");
    const Eigen::Map<const Eigen::VectorXf> qv(q.data(), feature_dim_);
    std::vector<std::pair<std::string, float>> out;
    for (const auto& [name, c] : categories_) {
      const RowMatrixMap shots(c.shots.data(), static_cast<Eigen::Index>(c.shot_files.size()), feature_dim_);
      const Eigen::VectorXf sims = shots * qv;
      out.emplace_back(name, *std::max_element(sims.data(), sims.data() + sims.size()));
    }
    return out;
  }

  // The category with the highest similarity; on a tie the first by name.
  CategoryRoute route(std::span<const float> query_embedding) const {
    const auto sims = category_similarities(query_embedding);
    std::size_t best = 0;
    for (std::size_t i = 1; i < sims.size(); ++i)
      if (sims[i].second > sims[best].second) best = i;
    float runner_up = -std::numeric_limits<float>::infinity();
    for (std::size_t i = 0; i < sims.size(); ++i)
      if (i != best) runner_up = std::max(runner_up, sims[i].second);
    return {sims[best].first, sims[best].second, sims[best].second - runner_up};
  }

  // ---- visual scores --------------------------------------------------------------------------
  // For each query patch (query is [P, D]; rows need not be normalised), 1 - max cosine to the
  // category's memory patches at one layer, clamped to [0, 2] against rounding.
  std::vector<float> nearest_distances(const std::string& name, std::size_t layer_index, const FloatTensor& query) const {
    require(layer_index < layers_.size(), "memory bank: layer index ", layer_index, " out of range (", layers_.size(),
            " layers)");
    const Category& c = category(name);
    return search_layer(c, layer_index, normalized_query(query, layers_[layer_index]), query.dim(0));
  }

  // The per-layer distances averaged over all layers; query_layers[l] is [P, D] for layer l.
  std::vector<float> nearest_distances(const std::string& name, std::span<const FloatTensor> query_layers) const {
    const Category& c = category(name);
    return nearest_distances(name, query_layers, [&](std::size_t l, const std::vector<float>& q, std::int64_t p) {
      return search_layer(c, l, q, p);
    });
  }

  // The same with the per-layer search done elsewhere (a GPU holding a copy of the category's
  // rows): search(layer_index, query rows L2-normalised here [P, D], P) returns the P distances.
  // Validation, normalisation and the averaging stay here, identical for every search.
  template <class Search>
  std::vector<float> nearest_distances(const std::string& name, std::span<const FloatTensor> query_layers, Search&& search) const {
    require(query_layers.size() == layers_.size(), "memory bank: query has features for ", query_layers.size(),
            " layers, the bank stores ", layers_.size());
    category(name);  // a clear error for an unknown category before any search
    std::vector<double> sum;
    for (std::size_t l = 0; l < query_layers.size(); ++l) {
      const std::vector<float> q = normalized_query(query_layers[l], layers_[l]);
      const std::vector<float> d = search(l, q, query_layers[l].dim(0));
      if (l == 0) sum.assign(d.size(), 0.0);
      require(d.size() == sum.size(), "memory bank: query has ", d.size(), " patches at layer ", layers_[l], " but ", sum.size(),
              " at layer ", layers_[0]);
      for (std::size_t i = 0; i < d.size(); ++i) sum[i] += d[i];
    }
    std::vector<float> out(sum.size());
    for (std::size_t i = 0; i < sum.size(); ++i) out[i] = static_cast<float>(sum[i] / static_cast<double>(layers_.size()));
    return out;
  }

  // ---- persistence ----------------------------------------------------------------------------
  // Metadata: general.architecture, memory.version, memory.weights_id, memory.feature_dim,
  // memory.layers, memory.categories (sorted), memory.category.<i>.shot_files; for a calibrated
  // category memory.category.<i>.calibration.{method (string), false_alarm_rate,
  // pixel_false_alarm_rate, image_threshold, image_normal_level, pixel_threshold,
  // pixel_normal_level (floats), pixel_count (int), images (strings), image_scores (floats)}.
  // Tensors (f32, so a round trip is exact): category.<i>.shots [k, D] and
  // category.<i>.layer.<j>.patches [N, D].
  void save(const std::filesystem::path& path) const {
    require(!empty(), path.string(), ": refusing to save an empty memory bank");
    WeightWriter w;
    w.set_meta("general.architecture", kArchitecture);
    w.set_meta("memory.version", kFormatVersion);
    w.set_meta("memory.weights_id", weights_id_);
    w.set_meta("memory.feature_dim", feature_dim_);
    w.set_meta("memory.layers", fpw::MetaValue::of(layers_));
    w.set_meta("memory.categories", fpw::MetaValue::of(categories()));
    std::size_t i = 0;
    for (const auto& [name, c] : categories_) {
      const std::string prefix = "category." + std::to_string(i);
      w.set_meta("memory." + prefix + ".shot_files", fpw::MetaValue::of(c.shot_files));
      if (c.calibration) {
        const CategoryCalibration& cal = *c.calibration;
        const std::string k = "memory." + prefix + ".calibration.";
        w.set_meta(k + "method", calibration_method_name(cal.method));
        w.set_meta(k + "false_alarm_rate", cal.false_alarm_rate);
        w.set_meta(k + "pixel_false_alarm_rate", cal.pixel_false_alarm_rate);
        w.set_meta(k + "image_threshold", cal.image_threshold);
        w.set_meta(k + "image_normal_level", cal.image_normal_level);
        w.set_meta(k + "pixel_threshold", cal.pixel_threshold);
        w.set_meta(k + "pixel_normal_level", cal.pixel_normal_level);
        w.set_meta(k + "pixel_count", static_cast<std::int64_t>(cal.pixel_count));
        w.set_meta(k + "images", fpw::MetaValue::of(cal.images));
        w.set_meta(k + "image_scores", fpw::MetaValue::of(cal.image_scores));
      }
      const auto k = static_cast<std::int64_t>(c.shot_files.size());
      w.add_tensor(prefix + ".shots", DType::F32, FloatTensor({k, feature_dim_}, c.shots));
      for (std::size_t l = 0; l < layers_.size(); ++l) {
        const auto n = static_cast<std::int64_t>(c.layer_patches[l].size()) / feature_dim_;
        w.add_tensor(prefix + ".layer." + std::to_string(l) + ".patches", DType::F32,
                     FloatTensor({n, feature_dim_}, c.layer_patches[l]));
      }
      ++i;
    }
    w.write(path);
  }

  // Loads a saved bank, refusing one built with other CLIP weights than expected_weights_id.
  static MemoryBank load(const std::filesystem::path& path, const std::string& expected_weights_id) {
    const WeightFile f(path.string());
    const std::string where = path.string();
    const bool has_arch = f.has_meta("general.architecture") && f.meta("general.architecture").kind == fpw::MetaKind::String;
    const std::string arch = has_arch ? f.meta_string("general.architecture") : std::string("missing");
    require(arch == kArchitecture, where, ": not a focuspatch memory bank (general.architecture is '", arch, "', expected '",
            kArchitecture, "')");
    const std::int64_t version = f.meta_int("memory.version");
    require(version >= kOldestReadableVersion && version <= kFormatVersion, where, ": memory bank format version ", version,
            " is not supported (this build reads ", kOldestReadableVersion, " to ", kFormatVersion, ")");
    const std::string& built_with = f.meta_string("memory.weights_id");
    require(built_with == expected_weights_id, where, ": this memory bank was built with CLIP weights '", built_with,
            "' but the weights in use are '", expected_weights_id,
            "'; its features are in another space. Rebuild the memory bank from the shots with these weights");
    f.verify_data_checksum();
    f.verify_finite();

    const fpw::MetaValue& layers = f.meta("memory.layers");
    require(layers.kind == fpw::MetaKind::IntArray, where, ": metadata memory.layers is a ", fpw::meta_kind_name(layers.kind),
            ", expected an int array");
    MemoryBank bank = [&] {
      try {
        return MemoryBank(layers.ints, f.meta_int("memory.feature_dim"), built_with);
      } catch (const Error& e) {
        fail(where, ": ", e.what());
      }
    }();
    const std::int64_t d = bank.feature_dim_;
    const auto& names = f.meta_strings("memory.categories");
    require(!names.empty(), where, ": the memory bank holds no category");
    for (std::size_t i = 0; i < names.size(); ++i) {
      const std::string prefix = "category." + std::to_string(i);
      require(!names[i].empty() && !bank.categories_.count(names[i]), where, ": category name '", names[i],
              "' is empty or repeated");
      Category c;
      c.shot_files = f.meta_strings("memory." + prefix + ".shot_files");
      const auto k = static_cast<std::int64_t>(c.shot_files.size());
      require(k > 0, where, ": category '", names[i], "' has no shots");
      c.shots = read_rows(f, prefix + ".shots", {k, d}, names[i]);
      std::int64_t n = -1;
      for (std::size_t l = 0; l < bank.layers_.size(); ++l) {
        const std::string tensor = prefix + ".layer." + std::to_string(l) + ".patches";
        const TensorView& v = f.tensor(tensor);
        require(v.shape.size() == 2 && v.shape[0] > 0 && v.shape[1] == d && (n < 0 || v.shape[0] == n), where, ": tensor '",
                tensor, "' (category '", names[i], "') has shape ", shape_string(v.shape), ", expected [",
                n < 0 ? std::string("patches") : std::to_string(n), ", ", d, "]");
        n = v.shape[0];
        c.layer_patches.push_back(read_rows(f, tensor, v.shape, names[i]));
      }
      if (version >= 2 && f.has_meta("memory." + prefix + ".calibration.method")) c.calibration = read_calibration(f, prefix, names[i]);
      bank.categories_.emplace(names[i], std::move(c));
    }
    return bank;
  }

 private:
  using RowMatrixMap = Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;

  struct Category {
    std::vector<std::vector<float>> layer_patches;  // per layer, row-major [N, D]
    std::vector<float> shots;                       // row-major [k, D]
    std::vector<std::string> shot_files;
    std::optional<CategoryCalibration> calibration;
  };

  const std::string& category_key(const std::string& name) const {
    category(name);  // the error naming the categories held
    return name;
  }

  static CategoryCalibration read_calibration(const WeightFile& f, const std::string& prefix, const std::string& name) {
    const std::string k = "memory." + prefix + ".calibration.";
    const std::string where = f.path() + ": calibration of category '" + name + "'";
    CategoryCalibration c;
    c.method = parse_calibration_method(f.meta_string(k + "method"), where);
    c.false_alarm_rate = f.meta_float(k + "false_alarm_rate");
    c.pixel_false_alarm_rate = f.meta_float(k + "pixel_false_alarm_rate");
    c.image_threshold = f.meta_float(k + "image_threshold");
    c.image_normal_level = f.meta_float(k + "image_normal_level");
    c.pixel_threshold = f.meta_float(k + "pixel_threshold");
    c.pixel_normal_level = f.meta_float(k + "pixel_normal_level");
    const std::int64_t pixels = f.meta_int(k + "pixel_count");
    require(pixels > 0, where, ": pixel_count is ", pixels);
    c.pixel_count = static_cast<std::uint64_t>(pixels);
    c.images = f.meta_strings(k + "images");
    c.image_scores = f.meta_floats(k + "image_scores");
    validate_calibration(c, where);
    return c;
  }

  const Category& category(const std::string& name) const {
    require(!empty(), "memory bank: it is empty (no shots added), cannot look up category '", name, "'");
    auto it = categories_.find(name);
    if (it != categories_.end()) return it->second;
    std::string known;
    for (const auto& [n, c] : categories_) known += (known.empty() ? "" : ", ") + n;
    fail("memory bank: no category '", name, "' (it holds: ", known, ")");
  }

  // 1 - the best cosine of each normalised query row against the category's rows at one layer,
  // memory scored block_rows_ rows at a time.
  std::vector<float> search_layer(const Category& c, std::size_t layer_index, const std::vector<float>& q, std::int64_t query_rows) const {
    const auto p = static_cast<Eigen::Index>(query_rows);
    const std::vector<float>& memory = c.layer_patches[layer_index];
    const auto n = static_cast<std::int64_t>(memory.size()) / feature_dim_;
    const RowMatrixMap qm(q.data(), p, feature_dim_);
    std::vector<float> best(static_cast<std::size_t>(p), -std::numeric_limits<float>::infinity());
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> sims(p, std::min(n, block_rows_));
    for (std::int64_t start = 0; start < n; start += block_rows_) {
      const auto rows = static_cast<Eigen::Index>(std::min(block_rows_, n - start));
      const RowMatrixMap block(memory.data() + start * feature_dim_, rows, feature_dim_);
      sims.leftCols(rows).noalias() = qm * block.transpose();
      for (Eigen::Index i = 0; i < p; ++i) {
        const float* row = sims.data() + i * sims.cols();
        best[static_cast<std::size_t>(i)] = std::max(best[static_cast<std::size_t>(i)], *std::max_element(row, row + rows));
      }
    }
    std::vector<float> out(best.size());
    for (std::size_t i = 0; i < best.size(); ++i) out[i] = std::clamp(1.0f - best[i], 0.0f, 2.0f);
    return out;
  }

  // Scales each of `rows` rows of width D to unit length (norm taken in double).
  void normalize_rows(std::vector<float>& data, std::int64_t rows, const std::string& what) const {
    for (std::int64_t r = 0; r < rows; ++r) {
      float* row = data.data() + r * feature_dim_;
      double sq = 0.0;
      for (std::int64_t j = 0; j < feature_dim_; ++j) sq += static_cast<double>(row[j]) * row[j];
      require(std::isfinite(sq) && sq > 0.0, "memory bank: ", what, ": row ", r, " is ",
              std::isfinite(sq) ? "all zeros, it has no direction" : "not finite (NaN or inf)");
      const double inv = 1.0 / std::sqrt(sq);
      for (std::int64_t j = 0; j < feature_dim_; ++j) row[j] = static_cast<float>(row[j] * inv);
    }
  }

  std::vector<float> normalized_query(const FloatTensor& query, std::int64_t layer) const {
    const Shape& s = query.shape();
    require(s.size() == 2 && s[0] > 0 && s[1] == feature_dim_, "memory bank: query features at layer ", layer, " have shape ",
            shape_string(s), ", expected [patches, ", feature_dim_, "]");
    std::vector<float> q(query.values().begin(), query.values().end());
    normalize_rows(q, s[0], "query patches at layer " + std::to_string(layer));
    return q;
  }

  // A stored [rows, D] tensor; rows must be unit length (a corrupt or hand-made file otherwise
  // gives distances outside [0, 2] without any error).
  static std::vector<float> read_rows(const WeightFile& f, const std::string& name, const Shape& shape,
                                      const std::string& category) {
    const TensorView& v = f.tensor(name, shape);
    require(v.dtype == DType::F32, f.path(), ": tensor '", name, "' is ", dtype_name(v.dtype), ", memory banks store f32");
    const FloatTensor t = FloatTensor::from_view(v);
    const std::int64_t d = shape[1];
    for (std::int64_t r = 0; r < shape[0]; ++r) {
      double sq = 0.0;
      for (std::int64_t j = 0; j < d; ++j) sq += static_cast<double>(t.data()[r * d + j]) * t.data()[r * d + j];
      require(std::abs(sq - 1.0) < 1e-3, f.path(), ": tensor '", name, "' (category '", category, "') row ", r,
              " is not unit length (squared norm ", sq, "); the file is corrupt");
    }
    return {t.values().begin(), t.values().end()};
  }

  std::vector<std::int64_t> layers_;
  std::int64_t feature_dim_;
  std::string weights_id_;
  std::map<std::string, Category> categories_;
  std::int64_t block_rows_ = kDefaultBlockRows;
};

}  // namespace focuspatch
