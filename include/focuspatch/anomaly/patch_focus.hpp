#pragma once
// Keyword focus: links every anomaly keyword of the unified prompt bank to the few image patches
// most relevant to it, and scores the image from those focused patches rather than from the
// global CLS alignment. The paper (FocusPatch AD, Ding et al.) is not available here; the steps
// below are our reading of its description, and each choice is stated where it is made.
//
//   (a) text map: per patch, logits = scale * cos(patch, keyword) over the normal and anomaly
//       keywords, softmax over keywords; the patch's anomaly probability is the sum of the anomaly
//       keywords' probabilities.
//   (b) focus: per anomaly keyword, its relevance to each patch is its softmax probability there
//       (times an optional background weight); the top-m patches are its focused patches and its
//       score is their mean relevance. The image score combines the keyword scores (max by default).
//   (c) background suppression: per-patch weights in [0, 1] multiply relevance before selection;
//       helpers compute them from the normal shots (positions whose features vary freely) or from
//       background prompts.
// Everything is deterministic: ties in top-m go to the lower patch index, ties between keywords
// to the keyword listed first in the bank.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "focuspatch/anomaly/prompt_bank.hpp"
#include "focuspatch/core/error.hpp"
#include "focuspatch/core/tensor.hpp"

namespace focuspatch {

// CLIP stores the log of its logit multiplier; this is the multiplier (about 100 for trained models).
inline float logit_multiplier(double stored_log_scale) {
  const double m = std::exp(stored_log_scale);
  require(std::isfinite(m) && m > 0.0, "CLIP logit scale ", stored_log_scale, " gives no usable multiplier");
  return static_cast<float>(m);
}

enum class ImageScoreRule {
  Max,              // the best keyword decides: one clear defect kind is enough evidence
  SoftmaxWeighted,  // sum_k s_k * softmax(s / T)_k: near max for small T, near the mean for large T
};

struct FocusOptions {
  // Focused patches per keyword. A defect usually covers only a few patches, so a small m keeps
  // the score from being diluted by the rest of the image while still averaging out single-patch
  // noise.
  std::int64_t top_m = 3;
  // When > 0, m = max(1, ceil(top_fraction * P)) instead of top_m, so m follows the grid size.
  double top_fraction = 0.0;
  // With N normal and A anomaly keywords, a featureless patch would get anomaly probability
  // A / (A + N) just from the counts. Adding ln(A / N) to every normal logit gives both groups equal
  // prior mass: the anomaly probability becomes mean_a(e^l) / (mean_a(e^l) + mean_n(e^l)).
  bool balance_prior = true;
  ImageScoreRule image_rule = ImageScoreRule::Max;
  double combine_temperature = 0.05;  // T of SoftmaxWeighted; keyword scores are probabilities in [0, 1]
};

struct FocusedKeyword {
  std::size_t keyword = 0;  // row in the KeywordEmbeddings
  std::string name;
  float score = 0.0f;                 // mean relevance over the focused patches
  std::vector<std::int64_t> patches;  // focused patch indices (row-major in the grid), most relevant first
  std::vector<float> relevance;       // weight * probability of each focused patch
};

struct FocusResult {
  std::int64_t grid = 0;                 // g: patches form a g x g grid
  FloatTensor probabilities;             // [P, K] softmax over keywords; background columns are 0
  FloatTensor anomaly_map;               // [g, g] sum of anomaly probabilities, before any background weight
  std::vector<FocusedKeyword> keywords;  // one per anomaly keyword, in bank order
  float image_score = 0.0f;

  // The n best keywords, highest score first (ties: bank order), for reports.
  std::vector<FocusedKeyword> top_keywords(std::size_t n) const {
    std::vector<FocusedKeyword> sorted = keywords;
    std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.score > b.score; });
    if (sorted.size() > n) sorted.resize(n);
    return sorted;
  }
};

namespace focus_detail {
struct PatchMatrix {
  std::int64_t count = 0;
  std::int64_t dim = 0;
  std::int64_t grid = 0;
  const float* data = nullptr;
};

// Accepts [P, D] with P a square number, or [g, g, D].
inline PatchMatrix patch_matrix(const FloatTensor& patches) {
  PatchMatrix m;
  const auto& s = patches.shape();
  if (s.size() == 3) {
    require(s[0] == s[1] && s[0] > 0 && s[2] > 0, "keyword focus: patch features of shape ", shape_string(s),
            " are not a [g, g, D] grid");
    m.grid = s[0];
    m.count = s[0] * s[1];
    m.dim = s[2];
  } else {
    require(s.size() == 2 && s[0] > 0 && s[1] > 0, "keyword focus: patch features must be [P, D] or [g, g, D], got ",
            shape_string(s));
    m.count = s[0];
    m.dim = s[1];
    m.grid = static_cast<std::int64_t>(std::llround(std::sqrt(static_cast<double>(m.count))));
    require(m.grid * m.grid == m.count, "keyword focus: ", m.count,
            " patches do not form a square grid (pass the patch tokens without the CLS token)");
  }
  m.data = patches.data();
  return m;
}

// cos(patch p, keyword k) for every pair, [P][K]; keyword rows are unit length (validated).
inline std::vector<double> cosines(const PatchMatrix& p, const KeywordEmbeddings& kw) {
  require(p.dim == kw.dim(), "keyword focus: patch features have dimension ", p.dim, " but the keyword embeddings have ",
          kw.dim(), "; both must come from the same CLIP model");
  const auto K = static_cast<std::int64_t>(kw.size());
  std::vector<double> cos(static_cast<std::size_t>(p.count * K));
  for (std::int64_t i = 0; i < p.count; ++i) {
    const float* f = p.data + i * p.dim;
    double norm2 = 0.0;
    for (std::int64_t d = 0; d < p.dim; ++d) norm2 += double(f[d]) * double(f[d]);
    require(std::isfinite(norm2) && norm2 > 0.0, "keyword focus: patch ", i, " has a ", norm2 > 0.0 ? "non-finite" : "zero",
            " feature vector");
    const double inv = 1.0 / std::sqrt(norm2);
    for (std::int64_t k = 0; k < K; ++k) {
      const float* e = kw.matrix.data() + k * p.dim;
      double dot = 0.0;
      for (std::int64_t d = 0; d < p.dim; ++d) dot += double(f[d]) * double(e[d]);
      cos[static_cast<std::size_t>(i * K + k)] = dot * inv;
    }
  }
  return cos;
}

inline void check_scale(float logit_scale) {
  require(std::isfinite(logit_scale) && logit_scale > 0.0f,
          "keyword focus: logit scale must be a positive multiplier (e.g. 100), got ", logit_scale,
          "; pass exp() of CLIP's stored value");
}
}  // namespace focus_detail

// Runs steps (a) and (b). patch_weights: empty (all 1) or one value in [0, 1] per patch; a patch
// of weight 0 is never focused.
inline FocusResult focus_patches(const FloatTensor& patches, const KeywordEmbeddings& keywords, float logit_scale,
                                 const FocusOptions& options = {}, std::span<const float> patch_weights = {}) {
  const auto grid = focus_detail::patch_matrix(patches);
  keywords.validate("keyword focus");
  focus_detail::check_scale(logit_scale);
  const std::int64_t P = grid.count;
  const auto K = static_cast<std::int64_t>(keywords.size());
  const std::size_t normal_count = keywords.count(KeywordKind::Normal);
  const std::size_t anomaly_count = keywords.count(KeywordKind::Anomaly);
  require(normal_count > 0 && anomaly_count > 0, "keyword focus: needs at least one normal and one anomaly keyword (have ",
          normal_count, " normal, ", anomaly_count, " anomaly)");
  require(patch_weights.empty() || static_cast<std::int64_t>(patch_weights.size()) == P, "keyword focus: ", patch_weights.size(),
          " patch weights for ", P, " patches");
  for (std::size_t i = 0; i < patch_weights.size(); ++i)
    require(std::isfinite(patch_weights[i]) && patch_weights[i] >= 0.0f && patch_weights[i] <= 1.0f,
            "keyword focus: patch weight ", i, " is ", patch_weights[i], ", outside [0, 1]");
  require(options.top_m > 0 || options.top_fraction > 0.0, "keyword focus: top_m must be positive");
  require(std::isfinite(options.top_fraction) && options.top_fraction >= 0.0 && options.top_fraction <= 1.0,
          "keyword focus: top_fraction ", options.top_fraction, " must be 0 (use top_m) or in (0, 1]");
  std::int64_t m = options.top_m;
  if (options.top_fraction > 0.0)
    m = std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil(options.top_fraction * static_cast<double>(P) - 1e-9)));
  m = std::min(m, P);

  // (a) softmax over the normal and anomaly keywords; background keywords take no part.
  const auto cos = focus_detail::cosines(grid, keywords);
  const double normal_bias =
      options.balance_prior ? std::log(static_cast<double>(anomaly_count) / static_cast<double>(normal_count)) : 0.0;
  FocusResult result;
  result.grid = grid.grid;
  result.probabilities = FloatTensor({P, K});
  result.anomaly_map = FloatTensor({grid.grid, grid.grid});
  std::vector<double> prob(static_cast<std::size_t>(P * K), 0.0);
  std::vector<double> logits(static_cast<std::size_t>(K));
  for (std::int64_t i = 0; i < P; ++i) {
    double top = -INFINITY;
    for (std::int64_t k = 0; k < K; ++k) {
      const auto kind = keywords.kinds[static_cast<std::size_t>(k)];
      if (kind == KeywordKind::Background) continue;
      auto& l = logits[static_cast<std::size_t>(k)];
      l = double(logit_scale) * cos[static_cast<std::size_t>(i * K + k)] + (kind == KeywordKind::Normal ? normal_bias : 0.0);
      top = std::max(top, l);
    }
    double total = 0.0;
    for (std::int64_t k = 0; k < K; ++k)
      if (keywords.kinds[static_cast<std::size_t>(k)] != KeywordKind::Background)
        total += prob[static_cast<std::size_t>(i * K + k)] = std::exp(logits[static_cast<std::size_t>(k)] - top);
    double anomaly = 0.0;
    for (std::int64_t k = 0; k < K; ++k) {
      auto& p = prob[static_cast<std::size_t>(i * K + k)];
      p /= total;
      result.probabilities.data()[i * K + k] = static_cast<float>(p);
      if (keywords.is_anomaly(static_cast<std::size_t>(k))) anomaly += p;
    }
    result.anomaly_map.data()[i] = static_cast<float>(anomaly);
  }

  // (b) per anomaly keyword, the m most relevant patches among those with positive weight.
  std::vector<std::int64_t> order;
  std::vector<double> relevance(static_cast<std::size_t>(P));
  for (std::int64_t k = 0; k < K; ++k) {
    if (!keywords.is_anomaly(static_cast<std::size_t>(k))) continue;
    order.clear();
    for (std::int64_t i = 0; i < P; ++i) {
      const double w = patch_weights.empty() ? 1.0 : double(patch_weights[static_cast<std::size_t>(i)]);
      relevance[static_cast<std::size_t>(i)] = w * prob[static_cast<std::size_t>(i * K + k)];
      if (w > 0.0) order.push_back(i);
    }
    const auto take = std::min<std::int64_t>(m, static_cast<std::int64_t>(order.size()));
    std::partial_sort(order.begin(), order.begin() + take, order.end(), [&](std::int64_t a, std::int64_t b) {
      const double ra = relevance[static_cast<std::size_t>(a)], rb = relevance[static_cast<std::size_t>(b)];
      return ra > rb || (ra == rb && a < b);
    });
    FocusedKeyword focused;
    focused.keyword = static_cast<std::size_t>(k);
    focused.name = keywords.names[static_cast<std::size_t>(k)];
    double sum = 0.0;
    for (std::int64_t j = 0; j < take; ++j) {
      const auto i = order[static_cast<std::size_t>(j)];
      focused.patches.push_back(i);
      focused.relevance.push_back(static_cast<float>(relevance[static_cast<std::size_t>(i)]));
      sum += relevance[static_cast<std::size_t>(i)];
    }
    // The weighted relevance, not the bare probability, is averaged: a suppressed patch that is
    // still picked (because nothing else is left) must not bring its full probability back.
    focused.score = take > 0 ? static_cast<float>(sum / static_cast<double>(take)) : 0.0f;
    result.keywords.push_back(std::move(focused));
  }

  if (options.image_rule == ImageScoreRule::Max) {
    double best = 0.0;
    for (const auto& f : result.keywords) best = std::max(best, double(f.score));
    result.image_score = static_cast<float>(best);
  } else {
    const double T = options.combine_temperature;
    require(std::isfinite(T) && T > 0.0, "keyword focus: combine_temperature must be positive, got ", T);
    double top = -INFINITY;
    for (const auto& f : result.keywords) top = std::max(top, double(f.score) / T);
    double num = 0.0, den = 0.0;
    for (const auto& f : result.keywords) {
      const double w = std::exp(double(f.score) / T - top);
      num += w * double(f.score);
      den += w;
    }
    result.image_score = static_cast<float>(num / den);
  }
  return result;
}

// ---- (c) background weights ------------------------------------------------------------------

// Per grid position, how freely the normal shots' features vary there: with each feature first
// L2-normalized, v(p) = (1/S) sum_s |f_s(p) - mean_s f(p)|^2 (population variance, = 1 - |mean|^2).
// shots: [S, P, D] (or [S, g, g, D]) patch features of S >= 2 normal images, CLS excluded.
inline std::vector<double> position_variances(const FloatTensor& shots) {
  const auto& s = shots.shape();
  require((s.size() == 3 || (s.size() == 4 && s[1] == s[2])) && s[0] > 0,
          "free variation: shot features must be [S, P, D] or [S, g, g, D], got ", shape_string(s));
  const std::int64_t S = s[0];
  const std::int64_t P = s.size() == 3 ? s[1] : s[1] * s[2];
  const std::int64_t D = s.back();
  require(S >= 2, "free variation: needs at least 2 normal shots to see how features vary, got ", S);
  require(P > 0 && D > 0, "free variation: empty shot features ", shape_string(s));
  std::vector<double> variances(static_cast<std::size_t>(P));
  std::vector<double> mean(static_cast<std::size_t>(D));
  for (std::int64_t p = 0; p < P; ++p) {
    std::fill(mean.begin(), mean.end(), 0.0);
    for (std::int64_t shot = 0; shot < S; ++shot) {
      const float* f = shots.data() + (shot * P + p) * D;
      double norm2 = 0.0;
      for (std::int64_t d = 0; d < D; ++d) norm2 += double(f[d]) * double(f[d]);
      require(std::isfinite(norm2) && norm2 > 0.0, "free variation: shot ", shot, " patch ", p,
              " has a zero or non-finite feature");
      const double inv = 1.0 / std::sqrt(norm2);
      for (std::int64_t d = 0; d < D; ++d) mean[static_cast<std::size_t>(d)] += double(f[d]) * inv / double(S);
    }
    double mean2 = 0.0;
    for (double v : mean) mean2 += v * v;
    variances[static_cast<std::size_t>(p)] = std::max(0.0, 1.0 - mean2);
  }
  return variances;
}

struct FreeVariationOptions {
  double exponent = 1.0;  // steepness: weight = (median / v)^exponent above the median
  double floor = 0.0;     // lowest weight given; 0 lets a position be ignored entirely
};

// Positions that vary more than is typical for this category get lower weight. The reference is
// the median variance over positions, so the weights are relative: a texture that varies freely
// everywhere keeps weights near 1 instead of being suppressed as a whole. Positions at or below
// the median keep weight 1; above it, weight = max(floor, (median / v)^exponent).
inline std::vector<float> free_variation_weights(std::span<const double> variances, const FreeVariationOptions& options = {}) {
  require(!variances.empty(), "free variation: no positions");
  require(std::isfinite(options.exponent) && options.exponent > 0.0, "free variation: exponent must be positive");
  require(std::isfinite(options.floor) && options.floor >= 0.0 && options.floor <= 1.0,
          "free variation: floor must be in [0, 1]");
  for (std::size_t i = 0; i < variances.size(); ++i)
    require(std::isfinite(variances[i]) && variances[i] >= 0.0, "free variation: variance ", i, " is ", variances[i]);
  std::vector<double> sorted(variances.begin(), variances.end());
  std::sort(sorted.begin(), sorted.end());
  const std::size_t n = sorted.size();
  const double median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
  std::vector<float> weights(n);
  for (std::size_t i = 0; i < n; ++i) {
    const double v = variances[i];
    weights[i] = v <= median ? 1.0f : static_cast<float>(std::max(options.floor, std::pow(median / v, options.exponent)));
  }
  return weights;
}

inline std::vector<float> free_variation_weights(const FloatTensor& shots, const FreeVariationOptions& options = {}) {
  const auto variances = position_variances(shots);
  return free_variation_weights(variances, options);
}

// Weight = 1 - P(background) per patch, where P(background) compares the background keywords with
// the object keywords (normal and anomaly together). Each group's evidence is the mean of its
// exp(logits), so the number of prompts in a group does not tilt the result:
//   P(bg) = mean_bg(e^l) / (mean_bg(e^l) + mean_obj(e^l)).
inline std::vector<float> text_background_weights(const FloatTensor& patches, const KeywordEmbeddings& keywords,
                                                  float logit_scale) {
  const auto grid = focus_detail::patch_matrix(patches);
  keywords.validate("background weights");
  focus_detail::check_scale(logit_scale);
  const std::size_t background_count = keywords.count(KeywordKind::Background);
  const std::size_t object_count = keywords.size() - background_count;
  require(background_count > 0, "background weights: the keyword embeddings hold no [background] keyword");
  require(object_count > 0, "background weights: the keyword embeddings hold no normal or anomaly keyword");
  const auto cos = focus_detail::cosines(grid, keywords);
  const auto K = static_cast<std::int64_t>(keywords.size());
  std::vector<float> weights(static_cast<std::size_t>(grid.count));
  for (std::int64_t i = 0; i < grid.count; ++i) {
    double top = -INFINITY;
    for (std::int64_t k = 0; k < K; ++k) top = std::max(top, double(logit_scale) * cos[static_cast<std::size_t>(i * K + k)]);
    double background = 0.0, object = 0.0;
    for (std::int64_t k = 0; k < K; ++k) {
      const double e = std::exp(double(logit_scale) * cos[static_cast<std::size_t>(i * K + k)] - top);
      (keywords.kinds[static_cast<std::size_t>(k)] == KeywordKind::Background ? background : object) += e;
    }
    background /= static_cast<double>(background_count);
    object /= static_cast<double>(object_count);
    weights[static_cast<std::size_t>(i)] = static_cast<float>(object / (background + object));
  }
  return weights;
}

}  // namespace focuspatch
