#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "focuspatch/anomaly/anomaly_map.hpp"
#include "test_paths.hpp"

using namespace focuspatch;
namespace fs = std::filesystem;

namespace {

fs::path maps_dir() { return test::fixtures_dir() / "maps"; }

std::vector<float> read_f32(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot open ", p.string());
  std::vector<char> bytes{std::istreambuf_iterator<char>(in), {}};
  REQUIRE(bytes.size() % 4 == 0);
  std::vector<float> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

struct MapCase {
  std::string kind, name;
  std::int64_t in_h, in_w, out_h, out_w;
  double sigma, truncate;
};

std::vector<MapCase> read_cases() {
  std::ifstream in(maps_dir() / "cases.txt");
  REQUIRE(in.good());
  std::vector<MapCase> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream s(line);
    MapCase c;
    s >> c.kind >> c.name >> c.in_h >> c.in_w >> c.out_h >> c.out_w >> c.sigma >> c.truncate;
    REQUIRE_MESSAGE(!s.fail(), "bad line in cases.txt: ", line);
    cases.push_back(c);
  }
  return cases;
}

double max_abs_diff(const AnomalyMap& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (std::size_t i = 0; i < b.size(); ++i) worst = std::max(worst, double(std::abs(a.values[i] - b[i])));
  return worst;
}

// The Gaussian kernel straight from its definition, in the test's own words.
std::vector<double> unit_gaussian(double sigma, int radius) {
  std::vector<double> k;
  double sum = 0;
  for (int x = -radius; x <= radius; ++x) {
    k.push_back(std::exp(-(x * x) / (2 * sigma * sigma)));
    sum += k.back();
  }
  for (auto& v : k) v /= sum;
  return k;
}

}  // namespace

TEST_CASE("bilinear 2x2 -> 4x4 by hand") {
  // align_corners=False, scale 1/2: output columns sample at 0, 0.25, 0.75, 1 (the first clamped
  // from -0.25, the last keeps the edge pixel), so a row [a, b] becomes [a, .75a+.25b, .25a+.75b, b].
  const AnomalyMap in(2, 2, {0.0f, 4.0f, 8.0f, 12.0f});
  const AnomalyMap out = upsample_bilinear(in, 4, 4);
  const std::vector<float> expected = {0, 1, 3, 4, 2, 3, 5, 6, 6, 7, 9, 10, 8, 9, 11, 12};
  CHECK(out.height == 4);
  CHECK(out.width == 4);
  for (std::size_t i = 0; i < expected.size(); ++i) {
    CAPTURE(i);
    CHECK(out.values[i] == doctest::Approx(expected[i]).epsilon(1e-7));
  }
}

TEST_CASE("bilinear to the same size is the identity; a constant map stays constant") {
  const AnomalyMap in(3, 5, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15});
  CHECK(upsample_bilinear(in, 3, 5).values == in.values);
  const AnomalyMap flat = upsample_bilinear(AnomalyMap(4, 3, 0.25f), 13, 7);
  for (float v : flat.values) CHECK(v == 0.25f);
}

TEST_CASE("bilinear matches torch F.interpolate(align_corners=False), gaussian matches scipy gaussian_filter") {
  const auto cases = read_cases();
  REQUIRE(cases.size() >= 10);
  for (const auto& c : cases) {
    CAPTURE(c.name);
    const std::vector<float> in = read_f32(maps_dir() / (c.name + ".in.f32"));
    const std::vector<float> ref = read_f32(maps_dir() / (c.name + ".out.f32"));
    REQUIRE(in.size() == static_cast<std::size_t>(c.in_h * c.in_w));
    REQUIRE(ref.size() == static_cast<std::size_t>(c.out_h * c.out_w));
    const AnomalyMap map(c.in_h, c.in_w, in);
    AnomalyMap ours;
    if (c.kind == "bilinear") {
      ours = upsample_bilinear(map, c.out_h, c.out_w);
    } else if (c.kind == "gaussian") {
      ours = gaussian_smooth(map, c.sigma, c.truncate);
    } else {
      REQUIRE(c.kind == "pipeline");
      REQUIRE(c.truncate == 4.0);
      ours = upsample_and_smooth(map, c.out_h, c.out_w, c.sigma);
    }
    REQUIRE(ours.height == c.out_h);
    REQUIRE(ours.width == c.out_w);
    // float32 rounding only (values are at most ~3, where a float ulp is 2.4e-7): the Gaussian is
    // computed exactly as scipy does (differences 0); PyTorch's bilinear kernel rounds its
    // multiply-adds differently by 1 ulp. A wrong convention (align_corners, another boundary
    // mode, a kernel radius off by one) moves values by 1e-3 or more.
    const double worst = max_abs_diff(ours, ref);
    MESSAGE(c.name, ": max |ours - reference| = ", worst);
    CHECK(worst <= 5e-7);
  }
}

TEST_CASE("the kernel radius is int(truncate * sigma + 0.5)") {
  CHECK(gaussian_radius(4.0) == 16);
  CHECK(gaussian_radius(1.5) == 6);
  CHECK(gaussian_radius(0.7) == 3);  // 2.8 + 0.5 = 3.3
  CHECK(gaussian_radius(0.6) == 2);  // 2.4 + 0.5 = 2.9
  CHECK(gaussian_radius(2.3, 2.0) == 5);
}

TEST_CASE("smoothing an impulse gives the normalised kernel, summing to 1") {
  const double sigma = 2.0;
  const int radius = 8;
  AnomalyMap impulse(41, 41);
  impulse.at(20, 20) = 1.0f;
  const AnomalyMap out = gaussian_smooth(impulse, sigma);
  const auto k = unit_gaussian(sigma, radius);
  double total = 0;
  for (std::int64_t y = 0; y < 41; ++y)
    for (std::int64_t x = 0; x < 41; ++x) {
      const std::int64_t dy = y - 20, dx = x - 20;
      const double expected = (std::abs(dy) <= radius && std::abs(dx) <= radius) ? k[dy + radius] * k[dx + radius] : 0.0;
      CAPTURE(y);
      CAPTURE(x);
      CHECK(out.at(y, x) == doctest::Approx(expected).epsilon(1e-6));
      total += out.at(y, x);
    }
  CHECK(total == doctest::Approx(1.0).epsilon(1e-6));
}

TEST_CASE("reflect mode folds the kernel back at the edge (d c b a | a b c d)") {
  // A 1-row map: the vertical pass sees only reflected copies of the one row (weights sum to 1),
  // so it is the identity. Horizontally, an impulse at x = 0 also appears at x = -1, so
  // out[i] = k(i) + k(i + 1) while the right edge stays out of reach.
  const double sigma = 1.5;
  const int radius = 6;
  AnomalyMap row(1, 20);
  row.at(0, 0) = 1.0f;
  const AnomalyMap out = gaussian_smooth(row, sigma);
  const auto k = unit_gaussian(sigma, radius);
  for (int i = 0; i < 20; ++i) {
    const double expected = (i <= radius ? k[i + radius] : 0.0) + (i + 1 <= radius ? k[i + 1 + radius] : 0.0);
    CAPTURE(i);
    CHECK(out.at(0, i) == doctest::Approx(expected).epsilon(1e-6));
  }
}

TEST_CASE("sigma 0 leaves the map unchanged; bad sigma is refused") {
  const AnomalyMap in(2, 3, {1, -2, 3, 0.5f, 7, 9});
  CHECK(gaussian_smooth(in, 0.0).values == in.values);
  CHECK_THROWS_WITH_AS(gaussian_smooth(in, -1.0), doctest::Contains("sigma"), Error);
  CHECK_THROWS_WITH_AS(gaussian_smooth(in, std::nan("")), doctest::Contains("sigma"), Error);
}

TEST_CASE("image score: mean of the top k values, or of the top fraction") {
  const AnomalyMap m(1, 5, {0.1f, 0.9f, 0.3f, 0.7f, 0.5f});
  CHECK(image_score_top_k(m, 1) == doctest::Approx(0.9));
  CHECK(image_score_top_k(m, 2) == doctest::Approx(0.8));
  CHECK(image_score_top_k(m, 3) == doctest::Approx(0.7));
  CHECK(image_score_top_k(m, 100) == doctest::Approx(0.5));          // every value: the mean
  CHECK(image_score_top_fraction(m, 0.4) == doctest::Approx(0.8));   // 2 of 5, not 3
  CHECK(image_score_top_fraction(m, 0.5) == doctest::Approx(0.7));   // ceil(2.5) = 3
  CHECK(image_score_top_fraction(m, 0.01) == doctest::Approx(0.9));  // at least one value
  CHECK(image_score_top_fraction(m, 1.0) == doctest::Approx(0.5));
  CHECK_THROWS_AS(image_score_top_k(m, 0), Error);
  CHECK_THROWS_AS(image_score_top_fraction(m, 0.0), Error);
  CHECK_THROWS_AS(image_score_top_fraction(m, 1.5), Error);
}

TEST_CASE("normalisation helpers") {
  const AnomalyMap m(2, 2, {2.0f, 4.0f, 6.0f, 10.0f});
  const AnomalyMap mm = normalize_min_max(m);
  CHECK(mm.values[0] == 0.0f);
  CHECK(mm.values[1] == doctest::Approx(0.25));
  CHECK(mm.values[2] == doctest::Approx(0.5));
  CHECK(mm.values[3] == 1.0f);
  // A constant map has no ranking: all zeros, not NaN.
  for (float v : normalize_min_max(AnomalyMap(3, 3, 5.0f)).values) CHECK(v == 0.0f);

  const AnomalyMap fixed = normalize_range(m, 4.0f, 8.0f);
  CHECK(fixed.values[0] == 0.0f);  // clamped from -0.5
  CHECK(fixed.values[1] == 0.0f);
  CHECK(fixed.values[2] == doctest::Approx(0.5));
  CHECK(fixed.values[3] == 1.0f);  // clamped from 1.5
  const AnomalyMap unclamped = normalize_range(m, 4.0f, 8.0f, false);
  CHECK(unclamped.values[0] == doctest::Approx(-0.5));
  CHECK(unclamped.values[3] == doctest::Approx(1.5));
  CHECK_THROWS_AS(normalize_range(m, 1.0f, 1.0f), Error);
}

TEST_CASE("combining maps is the weighted mean") {
  const std::vector<AnomalyMap> maps = {AnomalyMap(1, 3, {0.0f, 1.0f, 2.0f}), AnomalyMap(1, 3, {4.0f, 4.0f, 8.0f})};
  const std::vector<double> weights = {3.0, 1.0};
  const AnomalyMap c = combine_maps(maps, weights);
  CHECK(c.values[0] == doctest::Approx(1.0));   // (3*0 + 4) / 4
  CHECK(c.values[1] == doctest::Approx(1.75));  // (3*1 + 4) / 4
  CHECK(c.values[2] == doctest::Approx(3.5));   // (3*2 + 8) / 4
  const std::vector<double> only_second = {0.0, 2.0};
  CHECK(combine_maps(maps, only_second).values == maps[1].values);

  const std::vector<AnomalyMap> mismatched = {AnomalyMap(1, 3), AnomalyMap(3, 1)};
  CHECK_THROWS_WITH_AS(combine_maps(mismatched, weights), doctest::Contains("map 1 is 3x1 but map 0 is 1x3"), Error);
  const std::vector<double> zero = {0.0, 0.0};
  CHECK_THROWS_WITH_AS(combine_maps(maps, zero), doctest::Contains("sum to zero"), Error);
  const std::vector<double> negative = {1.0, -1.0};
  CHECK_THROWS_AS(combine_maps(maps, negative), Error);
  const std::vector<double> one = {1.0};
  CHECK_THROWS_AS(combine_maps(maps, one), Error);
}

TEST_CASE("maps convert to and from [H, W] tensors; bad sizes are refused") {
  const FloatTensor t({2, 3}, {1, 2, 3, 4, 5, 6});
  const AnomalyMap m = AnomalyMap::from_tensor(t);
  CHECK(m.height == 2);
  CHECK(m.width == 3);
  CHECK(m.at(1, 0) == 4.0f);
  CHECK(m.to_tensor().shape() == Shape{2, 3});
  CHECK_THROWS_AS(AnomalyMap::from_tensor(FloatTensor({6})), Error);
  CHECK_THROWS_AS(AnomalyMap(2, 2, std::vector<float>{1, 2, 3}), Error);
  CHECK_THROWS_AS(upsample_bilinear(m, 0, 4), Error);
  CHECK_THROWS_AS(upsample_bilinear(AnomalyMap{}, 4, 4), Error);
}
