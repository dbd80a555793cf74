#include <doctest/doctest.h>

#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include "focuspatch/anomaly/patch_focus.hpp"

using namespace focuspatch;

// The cases use 2-D unit vectors at chosen angles and a logit scale of s = 2 ln 2, so that
// exp(s * cos) is a power of two for the cosines that occur:
//   cos =  1   -> e^(2 ln 2)  = 4        cos = 0    -> 1
//   cos =  0.5 -> e^(ln 2)    = 2        cos = -0.5 -> 0.5        cos = -1 -> 0.25
namespace {

const float kScale = static_cast<float>(2.0 * std::numbers::ln2);

std::vector<float> unit(double degrees) {
  const double r = degrees * std::numbers::pi / 180.0;
  return {static_cast<float>(std::cos(r)), static_cast<float>(std::sin(r))};
}

FloatTensor patches_at(const std::vector<double>& degrees) {
  std::vector<float> data;
  for (double d : degrees)
    for (float v : unit(d)) data.push_back(v);
  return FloatTensor({static_cast<std::int64_t>(degrees.size()), 2}, std::move(data));
}

struct Kw {
  std::string name;
  KeywordKind kind;
  double degrees;
};

KeywordEmbeddings keywords_at(const std::vector<Kw>& list) {
  KeywordEmbeddings e;
  std::vector<float> data;
  for (const auto& k : list) {
    e.names.push_back(k.name);
    e.kinds.push_back(k.kind);
    for (float v : unit(k.degrees)) data.push_back(v);
  }
  e.matrix = FloatTensor({static_cast<std::int64_t>(list.size()), 2}, std::move(data));
  return e;
}

// normal N at 0 degrees, anomaly A1 at +60, anomaly A2 at -60.
KeywordEmbeddings three_keywords() {
  return keywords_at(
      {{"normal", KeywordKind::Normal, 0}, {"crack", KeywordKind::Anomaly, 60}, {"hole", KeywordKind::Anomaly, -60}});
}

// Patches p0 at 0, p1 at 60, p2 at -60, p3 at 180 degrees (2 x 2 grid, row-major).
FloatTensor four_patches() { return patches_at({0, 60, -60, 180}); }

FocusOptions unbalanced(std::int64_t m) {
  FocusOptions o;
  o.top_m = m;
  o.balance_prior = false;
  return o;
}

float prob(const FocusResult& r, std::int64_t patch, std::int64_t keyword) {
  return r.probabilities.data()[patch * r.probabilities.dim(1) + keyword];
}

std::string error_of(auto&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("softmax over keywords gives the hand-computed text map") {
  // exp(s * cos) for (N, A1, A2):
  //   p0 (0):    cos (1, .5, .5)     -> (4, 2, 2),     total 8    -> (1/2, 1/4, 1/4),    anomaly 1/2
  //   p1 (60):   cos (.5, 1, -.5)    -> (2, 4, .5),    total 6.5  -> (4/13, 8/13, 1/13), anomaly 9/13
  //   p2 (-60):  cos (.5, -.5, 1)    -> (2, .5, 4),    total 6.5  -> (4/13, 1/13, 8/13), anomaly 9/13
  //   p3 (180):  cos (-1, -.5, -.5)  -> (.25, .5, .5), total 1.25 -> (.2, .4, .4),       anomaly .8
  const FocusResult r = focus_patches(four_patches(), three_keywords(), kScale, unbalanced(2));
  REQUIRE(r.probabilities.shape() == Shape{4, 3});
  const double expected[4][3] = {
      {0.5, 0.25, 0.25}, {4.0 / 13, 8.0 / 13, 1.0 / 13}, {4.0 / 13, 1.0 / 13, 8.0 / 13}, {0.2, 0.4, 0.4}};
  for (int p = 0; p < 4; ++p)
    for (int k = 0; k < 3; ++k) CHECK(prob(r, p, k) == doctest::Approx(expected[p][k]).epsilon(1e-5));
  CHECK(r.grid == 2);
  REQUIRE(r.anomaly_map.shape() == Shape{2, 2});
  CHECK(r.anomaly_map.data()[0] == doctest::Approx(0.5).epsilon(1e-5));
  CHECK(r.anomaly_map.data()[1] == doctest::Approx(9.0 / 13).epsilon(1e-5));
  CHECK(r.anomaly_map.data()[2] == doctest::Approx(9.0 / 13).epsilon(1e-5));
  CHECK(r.anomaly_map.data()[3] == doctest::Approx(0.8).epsilon(1e-5));
}

TEST_CASE("each anomaly keyword focuses on its most relevant patches") {
  // crack (A1) probabilities over p0..p3: (.25, 8/13, 1/13, .4); hole (A2): (.25, 1/13, 8/13, .4).
  SUBCASE("m = 2") {
    const FocusResult r = focus_patches(four_patches(), three_keywords(), kScale, unbalanced(2));
    REQUIRE(r.keywords.size() == 2);
    CHECK(r.keywords[0].name == "crack");
    CHECK(r.keywords[0].keyword == 1);
    CHECK(r.keywords[0].patches == std::vector<std::int64_t>{1, 3});
    // (8/13 + .4) / 2 = (.6153846 + .4) / 2 = .5076923
    CHECK(r.keywords[0].score == doctest::Approx(0.5076923).epsilon(1e-5));
    CHECK(r.keywords[0].relevance[0] == doctest::Approx(8.0 / 13).epsilon(1e-5));
    CHECK(r.keywords[1].name == "hole");
    CHECK(r.keywords[1].patches == std::vector<std::int64_t>{2, 3});
    CHECK(r.keywords[1].score == doctest::Approx(0.5076923).epsilon(1e-5));
    CHECK(r.image_score == doctest::Approx(0.5076923).epsilon(1e-5));
    // Equal scores (the setup is mirror-symmetric): the keyword listed first leads.
    const auto top = r.top_keywords(5);
    REQUIRE(top.size() == 2);
    CHECK(top[0].name == "crack");
    CHECK(top[1].name == "hole");
    CHECK(r.top_keywords(1).size() == 1);
  }
  SUBCASE("m = 1 and m = 3") {
    const FocusResult r1 = focus_patches(four_patches(), three_keywords(), kScale, unbalanced(1));
    CHECK(r1.keywords[0].patches == std::vector<std::int64_t>{1});
    CHECK(r1.keywords[0].score == doctest::Approx(8.0 / 13).epsilon(1e-5));
    const FocusResult r3 = focus_patches(four_patches(), three_keywords(), kScale, unbalanced(3));
    CHECK(r3.keywords[0].patches == std::vector<std::int64_t>{1, 3, 0});
    // (8/13 + .4 + .25) / 3 = 1.2653846 / 3 = .4217949
    CHECK(r3.keywords[0].score == doctest::Approx(0.4217949).epsilon(1e-5));
    const FocusResult r9 = focus_patches(four_patches(), three_keywords(), kScale, unbalanced(9));
    CHECK(r9.keywords[0].patches.size() == 4);  // m is capped at the number of patches
  }
  SUBCASE("top_fraction sets m from the grid size") {
    FocusOptions o = unbalanced(1);
    o.top_fraction = 0.3;  // ceil(0.3 * 4) = 2
    CHECK(focus_patches(four_patches(), three_keywords(), kScale, o).keywords[0].patches == std::vector<std::int64_t>{1, 3});
    o.top_fraction = 0.25;  // ceil(1) = 1
    CHECK(focus_patches(four_patches(), three_keywords(), kScale, o).keywords[0].patches == std::vector<std::int64_t>{1});
  }
}

TEST_CASE("balancing the prior gives the normal group the same mass as the anomaly group") {
  // 1 normal, 2 anomaly keywords: ln(2/1) is added to the normal logit, doubling its exp.
  //   p0: (8, 2, 2),     total 12  -> (2/3, 1/6, 1/6),      anomaly 1/3
  //   p1: (4, 4, .5),    total 8.5 -> (8/17, 8/17, 1/17),   anomaly 9/17
  //   p3: (.5, .5, .5),  total 1.5 -> (1/3, 1/3, 1/3),      anomaly 2/3
  FocusOptions o;
  o.top_m = 2;
  REQUIRE(o.balance_prior);
  const FocusResult r = focus_patches(four_patches(), three_keywords(), kScale, o);
  CHECK(prob(r, 0, 0) == doctest::Approx(2.0 / 3).epsilon(1e-5));
  CHECK(prob(r, 0, 1) == doctest::Approx(1.0 / 6).epsilon(1e-5));
  CHECK(prob(r, 1, 1) == doctest::Approx(8.0 / 17).epsilon(1e-5));
  CHECK(prob(r, 1, 2) == doctest::Approx(1.0 / 17).epsilon(1e-5));
  CHECK(r.anomaly_map.data()[0] == doctest::Approx(1.0 / 3).epsilon(1e-5));
  CHECK(r.anomaly_map.data()[1] == doctest::Approx(9.0 / 17).epsilon(1e-5));
  CHECK(r.anomaly_map.data()[3] == doctest::Approx(2.0 / 3).epsilon(1e-5));
  // crack: (1/6, 8/17, 1/17, 1/3) -> focus (1, 3), score (8/17 + 1/3) / 2 = (.4705882 + .3333333) / 2 = .4019608
  CHECK(r.keywords[0].patches == std::vector<std::int64_t>{1, 3});
  CHECK(r.keywords[0].score == doctest::Approx(0.4019608).epsilon(1e-5));
}

TEST_CASE("background weights steer the selection and scale the score") {
  SUBCASE("a weight of 0 excludes a patch") {
    const std::vector<float> w = {1, 0, 1, 1};
    const FocusResult r = focus_patches(four_patches(), three_keywords(), kScale, unbalanced(2), w);
    // crack loses p1: remaining (.25, -, 1/13, .4) -> focus (3, 0), score (.4 + .25) / 2 = .325
    CHECK(r.keywords[0].patches == std::vector<std::int64_t>{3, 0});
    CHECK(r.keywords[0].score == doctest::Approx(0.325).epsilon(1e-5));
    // hole did not use p1: unchanged focus (2, 3) and score .5076923, which now leads.
    CHECK(r.keywords[1].patches == std::vector<std::int64_t>{2, 3});
    CHECK(r.image_score == doctest::Approx(0.5076923).epsilon(1e-5));
    CHECK(r.top_keywords(1).at(0).name == "hole");
    // The text map itself is not weighted.
    CHECK(r.anomaly_map.data()[1] == doctest::Approx(9.0 / 13).epsilon(1e-5));

    SUBCASE("softmax-weighted image score") {
      FocusOptions o = unbalanced(2);
      o.image_rule = ImageScoreRule::SoftmaxWeighted;
      o.combine_temperature = 0.1;
      const FocusResult s = focus_patches(four_patches(), three_keywords(), kScale, o, w);
      const double s1 = 0.325, s2 = 0.5076923076923077;
      const double e1 = std::exp(s1 / 0.1), e2 = std::exp(s2 / 0.1);
      CHECK(s.image_score == doctest::Approx((s1 * e1 + s2 * e2) / (e1 + e2)).epsilon(1e-5));
    }
  }
  SUBCASE("a partial weight multiplies relevance before selection") {
    const std::vector<float> w = {1, 0.5f, 1, 1};
    const FocusResult r = focus_patches(four_patches(), three_keywords(), kScale, unbalanced(2), w);
    // crack relevance: (.25, .5 * 8/13 = 4/13 = .3076923, 1/13, .4) -> focus (3, 1), score (.4 + .3076923) / 2 = .3538462
    CHECK(r.keywords[0].patches == std::vector<std::int64_t>{3, 1});
    CHECK(r.keywords[0].score == doctest::Approx(0.3538462).epsilon(1e-5));
    CHECK(r.keywords[0].relevance[1] == doctest::Approx(4.0 / 13).epsilon(1e-5));
  }
  SUBCASE("fewer usable patches than m") {
    const std::vector<float> one = {0, 0, 0, 1};
    const FocusResult r = focus_patches(four_patches(), three_keywords(), kScale, unbalanced(2), one);
    CHECK(r.keywords[0].patches == std::vector<std::int64_t>{3});
    CHECK(r.keywords[0].score == doctest::Approx(0.4).epsilon(1e-5));
    const std::vector<float> none = {0, 0, 0, 0};
    const FocusResult z = focus_patches(four_patches(), three_keywords(), kScale, unbalanced(2), none);
    CHECK(z.keywords[0].patches.empty());
    CHECK(z.keywords[0].score == 0.0f);
    CHECK(z.image_score == 0.0f);
  }
}

TEST_CASE("ties in the focus go to the lower patch index") {
  // p1 and p3 are the same vector (60 degrees), as are p0 and p2 (0 degrees).
  const FloatTensor patches = patches_at({0, 60, 0, 60});
  const auto kw = three_keywords();
  CHECK(focus_patches(patches, kw, kScale, unbalanced(1)).keywords[0].patches == std::vector<std::int64_t>{1});
  CHECK(focus_patches(patches, kw, kScale, unbalanced(2)).keywords[0].patches == std::vector<std::int64_t>{1, 3});
  CHECK(focus_patches(patches, kw, kScale, unbalanced(3)).keywords[0].patches == std::vector<std::int64_t>{1, 3, 0});
  // With p1 weighted out, its twin p3 is chosen, not p1.
  const std::vector<float> w = {1, 0, 1, 1};
  CHECK(focus_patches(patches, kw, kScale, unbalanced(1), w).keywords[0].patches == std::vector<std::int64_t>{3});
}

TEST_CASE("background keywords take no part in the anomaly softmax") {
  auto kw = keywords_at({{"normal", KeywordKind::Normal, 0},
                         {"crack", KeywordKind::Anomaly, 60},
                         {"background", KeywordKind::Background, 180},
                         {"hole", KeywordKind::Anomaly, -60}});
  const FocusResult r = focus_patches(four_patches(), kw, kScale, unbalanced(2));
  CHECK(prob(r, 3, 2) == 0.0f);
  CHECK(prob(r, 3, 0) == doctest::Approx(0.2).epsilon(1e-5));
  CHECK(prob(r, 3, 3) == doctest::Approx(0.4).epsilon(1e-5));
  REQUIRE(r.keywords.size() == 2);
  CHECK(r.keywords[1].keyword == 3);
  CHECK(r.keywords[1].patches == std::vector<std::int64_t>{2, 3});
}

TEST_CASE("bad inputs to the keyword focus are reported") {
  const auto kw = three_keywords();
  CHECK(error_of([&] {
          focus_patches(FloatTensor({4, 3}, std::vector<float>(12, 1.0f)), kw, kScale);
        }).find("patch features have dimension 3 but the keyword embeddings have 2") != std::string::npos);
  CHECK(error_of([&] {
          focus_patches(patches_at({0, 60, 90}), kw, kScale);
        }).find("3 patches do not form a square grid") != std::string::npos);
  const std::vector<float> short_weights = {1, 1, 1};
  CHECK(error_of([&] { focus_patches(four_patches(), kw, kScale, {}, short_weights); }).find("3 patch weights for 4 patches") !=
        std::string::npos);
  const std::vector<float> big_weight = {1, 1.5f, 1, 1};
  CHECK(error_of([&] {
          focus_patches(four_patches(), kw, kScale, {}, big_weight);
        }).find("patch weight 1 is 1.5, outside [0, 1]") != std::string::npos);
  CHECK(error_of([&] { focus_patches(four_patches(), kw, 0.0f); }).find("logit scale must be a positive multiplier") !=
        std::string::npos);
  const auto no_normal = keywords_at({{"crack", KeywordKind::Anomaly, 60}});
  CHECK(error_of([&] { focus_patches(four_patches(), no_normal, kScale); }).find("at least one normal and one anomaly keyword") !=
        std::string::npos);
  auto long_row = three_keywords();
  long_row.matrix.data()[2] = 2.0f;
  CHECK(error_of([&] { focus_patches(four_patches(), long_row, kScale); }).find("keyword 'crack' is not unit length") !=
        std::string::npos);
  FloatTensor zero_patch = four_patches();
  zero_patch.data()[4] = zero_patch.data()[5] = 0.0f;
  CHECK(error_of([&] { focus_patches(zero_patch, kw, kScale); }).find("patch 2 has a zero feature vector") != std::string::npos);
  FocusOptions bad;
  bad.top_m = 0;
  CHECK(error_of([&] { focus_patches(four_patches(), kw, kScale, bad); }).find("top_m must be positive") != std::string::npos);
  // A [g, g, D] grid is accepted like [P, D].
  const FloatTensor flat = four_patches();
  const FloatTensor grid({2, 2, 2}, std::vector<float>(flat.values().begin(), flat.values().end()));
  CHECK(focus_patches(grid, kw, kScale, unbalanced(2)).keywords[0].patches == std::vector<std::int64_t>{1, 3});
}

TEST_CASE("free-variation weights down-weight positions that vary across the normal shots") {
  // 3 shots x 4 positions of 2-D features (normalized inside, so (2,0) counts as (1,0)):
  //   pos 0: (1,0) (1,0) (2,0)           mean (1,0)      v = 1 - 1 = 0
  //   pos 1: (1,0) (1,0) (0,2)           mean (2/3,1/3)  v = 1 - (4/9 + 1/9) = 4/9
  //   pos 2: (1,0) (0,1) (-1,0)          mean (0,1/3)    v = 1 - 1/9 = 8/9
  //   pos 3: 90, 210, 330 degrees        mean (0,0)      v = 1
  const auto a = unit(90), b = unit(210), c = unit(330);
  const FloatTensor shots({3, 4, 2}, {1, 0, 1, 0, 1,  0, a[0], a[1],  //
                                      1, 0, 1, 0, 0,  1, b[0], b[1],  //
                                      2, 0, 0, 2, -1, 0, c[0], c[1]});
  const auto v = position_variances(shots);
  REQUIRE(v.size() == 4);
  CHECK(v[0] == doctest::Approx(0.0));
  CHECK(v[1] == doctest::Approx(4.0 / 9));
  CHECK(v[2] == doctest::Approx(8.0 / 9));
  CHECK(v[3] == doctest::Approx(1.0));
  // median of (0, 4/9, 8/9, 1) = (4/9 + 8/9) / 2 = 2/3; above it the weight is (2/3) / v:
  //   pos 2: (2/3) / (8/9) = .75, pos 3: 2/3.
  const auto w = free_variation_weights(shots);
  REQUIRE(w.size() == 4);
  CHECK(w[0] == 1.0f);
  CHECK(w[1] == 1.0f);
  CHECK(w[2] == doctest::Approx(0.75).epsilon(1e-5));
  CHECK(w[3] == doctest::Approx(2.0 / 3).epsilon(1e-5));
  FreeVariationOptions steep;
  steep.exponent = 2.0;  // .75^2 = .5625, (2/3)^2 = 4/9
  const auto w2 = free_variation_weights(v, steep);
  CHECK(w2[2] == doctest::Approx(0.5625).epsilon(1e-5));
  CHECK(w2[3] == doctest::Approx(4.0 / 9).epsilon(1e-5));
  FreeVariationOptions floored;
  floored.floor = 0.7;
  CHECK(free_variation_weights(v, floored)[3] == doctest::Approx(0.7).epsilon(1e-6));
  // A texture that varies the same everywhere is not suppressed.
  const std::vector<double> even = {0.3, 0.3, 0.3, 0.3};
  CHECK(free_variation_weights(even) == std::vector<float>{1, 1, 1, 1});

  CHECK(error_of([&] {
          position_variances(FloatTensor({1, 4, 2}, std::vector<float>(8, 1.0f)));
        }).find("at least 2 normal shots") != std::string::npos);
  CHECK(error_of([&] {
          position_variances(FloatTensor({4, 2}, std::vector<float>(8, 1.0f)));
        }).find("must be [S, P, D]") != std::string::npos);
}

TEST_CASE("text background weights compare background prompts with object prompts") {
  // N at 0, A at 90, B(ackground) at 180 degrees; weight = mean_obj / (mean_obj + mean_bg) of exp(s * cos).
  //   patch 0:   N 4,   A 1,   B .25 -> obj (4 + 1) / 2 = 2.5,     w = 2.5 / 2.75    = 10/11
  //   patch 90:  N 1,   A 4,   B 1   -> obj 2.5,                  w = 2.5 / 3.5     = 5/7
  //   patch 180: N .25, A 1,   B 4   -> obj .625,                 w = .625 / 4.625  = 5/37
  //   patch 270: N 1,   A .25, B 1   -> obj .625,                 w = .625 / 1.625  = 5/13
  const auto kw = keywords_at(
      {{"normal", KeywordKind::Normal, 0}, {"crack", KeywordKind::Anomaly, 90}, {"background", KeywordKind::Background, 180}});
  const auto w = text_background_weights(patches_at({0, 90, 180, 270}), kw, kScale);
  REQUIRE(w.size() == 4);
  CHECK(w[0] == doctest::Approx(10.0 / 11).epsilon(1e-5));
  CHECK(w[1] == doctest::Approx(5.0 / 7).epsilon(1e-5));
  CHECK(w[2] == doctest::Approx(5.0 / 37).epsilon(1e-5));
  CHECK(w[3] == doctest::Approx(5.0 / 13).epsilon(1e-5));
  CHECK(error_of([&] { text_background_weights(four_patches(), three_keywords(), kScale); }).find("no [background] keyword") !=
        std::string::npos);
}

TEST_CASE("CLIP's stored log scale becomes the multiplier") {
  CHECK(logit_multiplier(std::log(100.0)) == doctest::Approx(100.0f));
  CHECK(logit_multiplier(0.0) == 1.0f);
}
