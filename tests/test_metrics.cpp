// Binary classification metrics and AUPRO against scikit-learn and an independent Python AUPRO
// (tests/reference/gen_metric_cases.py -> tests/fixtures/metrics/), plus cases computed by hand.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "focuspatch/eval/metrics.hpp"
#include "focuspatch/eval/pro.hpp"
#include "focuspatch/io/json.hpp"
#include "test_paths.hpp"

using namespace focuspatch;
using namespace focuspatch::eval;

namespace {

constexpr double kTolerance = 1e-9;

json::Value load_fixture(const std::string& name) {
  const std::filesystem::path p = test::fixtures_dir() / "metrics" / name;
  std::ifstream in(p, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "missing fixture ", p.string(), " (run tests/reference/gen_metric_cases.py)");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return json::parse(text, p.string());
}

std::vector<double> doubles(const json::Value& array) {
  std::vector<double> out;
  for (const json::Value& v : array.as_array()) out.push_back(v.as_double());
  return out;
}
std::vector<float> floats(const json::Value& array) {
  std::vector<float> out;
  for (const json::Value& v : array.as_array()) out.push_back(static_cast<float>(v.as_double()));
  return out;
}
std::vector<std::uint8_t> labels_of(const std::string& s, std::uint8_t one = 1) {
  std::vector<std::uint8_t> out;
  for (char c : s) out.push_back(c == '1' ? one : 0);
  return out;
}

using test::contains;
using test::error_of;

// F1 at "score >= threshold", counted directly.
double f1_at(std::span<const double> scores, std::span<const std::uint8_t> labels, double threshold) {
  double tp = 0, fp = 0, positives = 0;
  for (std::size_t i = 0; i < scores.size(); ++i) {
    positives += labels[i] != 0;
    if (scores[i] >= threshold) (labels[i] != 0 ? tp : fp) += 1;
  }
  return 2 * tp / (tp + fp + positives);
}

void check_against_sklearn(const ThresholdSweep& sweep, const json::Value& expected, const std::string& name) {
  INFO("case ", name);
  const json::Value& auroc = expected.at("roc_auc");
  if (auroc.is_null()) {
    CHECK(contains(error_of([&] { (void)sweep.roc_auc(); }), "AUROC is undefined"));
    CHECK_THROWS_AS((void)sweep.metrics(), Error);
  } else {
    CHECK(std::abs(sweep.roc_auc() - auroc.as_double()) <= kTolerance);
  }
  if (sweep.positives() == 0) {
    // sklearn warns and returns 0 here; we refuse (see metrics.hpp).
    REQUIRE(expected.contains("warnings"));
    CHECK(contains(expected.at("warnings")[0].as_string(), "No positive class"));
    CHECK(contains(error_of([&] { (void)sweep.average_precision(); }), "average precision is undefined"));
    CHECK(contains(error_of([&] { (void)sweep.f1_max(); }), "F1-max is undefined"));
    return;
  }
  CHECK(std::abs(sweep.average_precision() - expected.at("average_precision").as_double()) <= kTolerance);
  CHECK(std::abs(sweep.f1_max() - expected.at("f1_max").as_double()) <= kTolerance);
}

}  // namespace

TEST_CASE("image-level metrics match scikit-learn on random, tied, imbalanced and degenerate cases") {
  const json::Value fixture = load_fixture("binary_cases.json");
  int checked = 0;
  for (const json::Value& c : fixture.at("cases").as_array()) {
    const std::string name = c.at("name").as_string();
    const std::vector<double> scores = doubles(c.at("scores"));
    const std::vector<std::uint8_t> labels = labels_of(c.at("labels").as_string());
    REQUIRE(scores.size() == labels.size());
    const ThresholdSweep sweep = sweep_scores(scores, labels, name);
    check_against_sklearn(sweep, c.at("sklearn"), name);
    if (sweep.positives() > 0) {
      // The threshold reported for F1-max attains it.
      CHECK(std::abs(f1_at(scores, labels, sweep.f1_max_threshold()) - sweep.f1_max()) <= 1e-15);
      CHECK(average_precision(scores, labels) == sweep.average_precision());
      CHECK(f1_max(scores, labels) == sweep.f1_max());
    }
    ++checked;
  }
  CHECK(checked == 11);
}

TEST_CASE("pixel accumulator matches scikit-learn on float32 scores fed image by image") {
  const json::Value fixture = load_fixture("binary_cases.json");
  int checked = 0;
  for (const json::Value& c : fixture.at("cases").as_array()) {
    const std::string name = c.at("name").as_string();
    // Only the float32 case: rounding the others to float32 could merge scores into new ties.
    if (c.at("dtype").as_string() != "float32") continue;
    const std::vector<float> scores = floats(c.at("scores"));
    const std::vector<std::uint8_t> labels = labels_of(c.at("labels").as_string(), 255);
    PixelScoreAccumulator acc;
    std::size_t offset = 0;
    for (const json::Value& chunk : c.at("chunks").as_array()) {
      const auto n = static_cast<std::size_t>(chunk.as_int64());
      acc.add(std::span(scores).subspan(offset, n), std::span(labels).subspan(offset, n), name);
      offset += n;
    }
    REQUIRE(offset == scores.size());
    CHECK(acc.size() == scores.size());
    check_against_sklearn(acc.sweep(name), c.at("sklearn"), name);
    ++checked;
  }
  CHECK(checked == 1);
}

TEST_CASE("metrics computed by hand") {
  SUBCASE("perfect separation, reversed, all tied") {
    const std::vector<double> s{4, 3, 2, 1};
    const std::vector<std::uint8_t> perfect{1, 1, 0, 0};
    const std::vector<std::uint8_t> reversed{0, 0, 1, 1};
    CHECK(roc_auc(s, perfect) == 1.0);
    CHECK(average_precision(s, perfect) == 1.0);
    CHECK(f1_max(s, perfect) == 1.0);
    CHECK(sweep_scores(s, perfect).f1_max_threshold() == 3.0);
    CHECK(roc_auc(s, reversed) == 0.0);
    // thresholds 2 (P 1/3, R 1/2) and 1 (P 1/2, R 1): AP = 1/2 * 1/3 + 1/2 * 1/2 = 5/12
    CHECK(average_precision(s, reversed) == doctest::Approx(5.0 / 12.0).epsilon(1e-15));
    CHECK(f1_max(s, reversed) == doctest::Approx(2.0 / 3.0).epsilon(1e-15));
    const std::vector<double> tied(7, 0.5);
    const std::vector<std::uint8_t> three_of_seven{1, 0, 0, 1, 0, 1, 0};
    CHECK(roc_auc(tied, three_of_seven) == 0.5);
    CHECK(average_precision(tied, three_of_seven) == doctest::Approx(3.0 / 7.0).epsilon(1e-15));
    CHECK(f1_max(tied, three_of_seven) == doctest::Approx(2.0 * 3.0 / 10.0).epsilon(1e-15));
  }
  SUBCASE("average precision on four points") {
    // 0.9+ (P 1, R 1/2), 0.8- (P 1/2), 0.7+ (P 2/3, R 1), 0.6- (P 1/2): AP = 1/2 + 1/2 * 2/3 = 5/6.
    const std::vector<double> s{0.7, 0.9, 0.6, 0.8};
    const std::vector<std::uint8_t> y{1, 1, 0, 0};
    const ThresholdSweep sweep = sweep_scores(s, y);
    CHECK(sweep.average_precision() == doctest::Approx(5.0 / 6.0).epsilon(1e-15));
    CHECK(sweep.roc_auc() == 0.75);  // positive > negative in 3 of the 4 pairs
    CHECK(sweep.f1_max() == doctest::Approx(0.8).epsilon(1e-15));  // at 0.7: 2 * 2/3 * 1 / (5/3)
    CHECK(sweep.f1_max_threshold() == 0.7);
    CHECK(sweep.threshold_count() == 4);
  }
  SUBCASE("ties between classes count one half") {
    const std::vector<double> s{1, 1, 0, 0};
    const std::vector<std::uint8_t> y{1, 0, 1, 0};
    CHECK(roc_auc(s, y) == 0.5);
    CHECK(average_precision(s, y) == 0.5);
    const std::vector<double> s2{2, 1, 1, 0};
    const std::vector<std::uint8_t> y2{1, 1, 0, 0};
    CHECK(roc_auc(s2, y2) == 0.875);  // pairs: (2>1) (2>0) (1=1 -> 1/2) (1>0) -> 3.5 / 4
  }
  SUBCASE("-0.0 ties with +0.0") {
    const std::vector<double> s{0.0, -0.0};
    const std::vector<std::uint8_t> y{0, 1};
    CHECK(roc_auc(s, y) == 0.5);
    PixelScoreAccumulator acc;
    const std::vector<float> f{-0.0f, 0.0f};
    acc.add(f, std::vector<std::uint8_t>{1, 0});
    CHECK(acc.sweep().roc_auc() == 0.5);
    CHECK(acc.sweep().threshold_count() == 1);
  }
}

TEST_CASE("single-class and malformed inputs") {
  const std::vector<double> s{0.1, 0.5, 0.5, 0.9};
  const std::vector<std::uint8_t> normal(4, 0);
  const std::vector<std::uint8_t> anomalous(4, 1);
  CHECK(contains(error_of([&] { (void)roc_auc(s, normal, "bottle image scores"); }),
                 "bottle image scores: AUROC is undefined with 0 anomalous and 4 normal samples"));
  CHECK(contains(error_of([&] { (void)roc_auc(s, anomalous); }), "AUROC is undefined with 4 anomalous and 0 normal"));
  CHECK(contains(error_of([&] { (void)average_precision(s, normal); }), "average precision is undefined"));
  CHECK(contains(error_of([&] { (void)f1_max(s, normal); }), "F1-max is undefined"));
  CHECK_THROWS_AS((void)binary_metrics(s, anomalous), Error);
  // Without negatives every threshold has precision 1 (sklearn: AP 1), and the lowest has recall 1.
  CHECK(average_precision(s, anomalous) == 1.0);
  CHECK(f1_max(s, anomalous) == 1.0);

  CHECK(contains(error_of([] { (void)roc_auc({}, {}); }), "no samples"));
  CHECK(contains(error_of([&] { (void)roc_auc(s, std::vector<std::uint8_t>{1, 0}); }), "4 scores but 2 labels"));
  const std::vector<double> with_nan{0.1, std::nan(""), 0.3};
  const std::vector<double> with_inf{0.1, 0.2, std::numeric_limits<double>::infinity()};
  const std::vector<std::uint8_t> y3{1, 0, 1};
  CHECK(contains(error_of([&] { (void)roc_auc(with_nan, y3); }), "score 1 is nan"));
  CHECK(contains(error_of([&] { (void)roc_auc(with_inf, y3); }), "score 2 is inf"));
  PixelScoreAccumulator acc;
  const std::vector<float> f{0.1f, std::numeric_limits<float>::quiet_NaN()};
  CHECK(contains(error_of([&] { acc.add(f, std::vector<std::uint8_t>{0, 1}, "map 3"); }), "map 3: score 1 is nan"));
  CHECK(contains(error_of([&] { acc.add(f, std::vector<std::uint8_t>{0}, "map 4"); }), "map 4: 2 scores but 1 labels"));
  CHECK(acc.size() == 0);
  CHECK(contains(error_of([&] { (void)acc.sweep(); }), "no samples"));
}

TEST_CASE("pixel accumulator keeps working after a sweep and agrees with the image-level path") {
  std::vector<float> a{0.25f, 0.5f, 0.125f, 0.5f, 1.0f};
  std::vector<std::uint8_t> la{0, 1, 0, 0, 1};
  std::vector<float> b{0.75f, 0.25f, 0.5f};
  std::vector<std::uint8_t> lb{1, 0, 1};
  PixelScoreAccumulator acc;
  acc.add(a, la);
  const double first = acc.sweep().roc_auc();
  CHECK(first == roc_auc(std::vector<double>(a.begin(), a.end()), la));
  acc.add(b, lb);
  std::vector<double> all(a.begin(), a.end());
  all.insert(all.end(), b.begin(), b.end());
  std::vector<std::uint8_t> labels = la;
  labels.insert(labels.end(), lb.begin(), lb.end());
  const BinaryMetrics m = acc.metrics();
  const BinaryMetrics expected = binary_metrics(all, labels);
  CHECK(m.auroc == expected.auroc);
  CHECK(m.average_precision == expected.average_precision);
  CHECK(m.f1_max == expected.f1_max);
  CHECK(acc.positives() == 4);
  acc.clear();
  CHECK(acc.size() == 0);
}

TEST_CASE("connected components are 8-connected") {
  // Two pixels touching at a corner form one region; a third pixel two columns away is its own.
  const std::vector<std::uint8_t> mask{
      255, 0, 0, 0,  //
      0, 255, 0, 255,  //
      0, 0, 0, 0};
  const RegionLabels r = label_regions(mask, 4, 3);
  REQUIRE(r.count() == 2);
  CHECK(r.sizes == std::vector<std::uint32_t>{2, 1});
  CHECK(r.labels[0] == 1);
  CHECK(r.labels[5] == 1);
  CHECK(r.labels[7] == 2);
  CHECK(r.labels[1] == 0);
  // A ring: its hole is background and the ring one region.
  const std::vector<std::uint8_t> ring{1, 1, 1, 1, 0, 1, 1, 1, 1};
  const RegionLabels rr = label_regions(ring, 3, 3);
  CHECK(rr.count() == 1);
  CHECK(rr.sizes[0] == 8);
  CHECK(rr.labels[4] == 0);
  CHECK(contains(error_of([&] { (void)label_regions(ring, 4, 3, "gt.png"); }), "gt.png: mask holds 9 pixels"));
}

TEST_CASE("PRO computed by hand on a 4x4 mask") {
  // Regions: A = (0,0) (0,1) (1,0), 3 pixels; B = (2,3), 1 pixel; 12 normal pixels.
  const std::vector<std::uint8_t> mask{
      1, 1, 0, 0,  //
      1, 0, 0, 0,  //
      0, 0, 0, 1,  //
      0, 0, 0, 0};
  const std::vector<float> scores{
      0.9f, 0.5f, 0.1f, 0.1f,  //
      0.3f, 0.1f, 0.1f, 0.1f,  //
      0.1f, 0.1f, 0.6f, 0.7f,  //
      0.1f, 0.1f, 0.1f, 0.2f};
  ProAccumulator acc;
  acc.add(scores, mask, 4, 4);
  CHECK(acc.region_count() == 2);
  CHECK(acc.normal_pixels() == 12);
  // Thresholds 0.9: PRO (1/3 + 0)/2; 0.7: (1/3 + 1)/2; 0.6: FPR 1/12; 0.5: PRO (2/3 + 1)/2; 0.3: PRO 1;
  // 0.2: FPR 2/12; 0.1: FPR 1.
  const std::vector<ProPoint> expected{{0, 0},          {0, 1.0 / 6},          {0, 2.0 / 3},    {1.0 / 12, 2.0 / 3},
                                       {1.0 / 12, 5.0 / 6}, {1.0 / 12, 1}, {2.0 / 12, 1}, {1, 1}, {1, 1}};
  const std::vector<ProPoint> curve = acc.curve();
  REQUIRE(curve.size() == expected.size());
  for (std::size_t i = 0; i < curve.size(); ++i) {
    INFO("point ", i);
    CHECK(curve[i].fpr == doctest::Approx(expected[i].fpr).epsilon(1e-15));
    CHECK(curve[i].pro == doctest::Approx(expected[i].pro).epsilon(1e-15));
  }
  // Up to 0.3: 1/12 * 2/3 + 1/12 * 1 + (0.3 - 1/6) * 1 = 49/180, normalized: 49/54.
  CHECK(acc.aupro() == doctest::Approx(49.0 / 54.0).epsilon(1e-14));
  // Up to 0.05, inside the first flat stretch at PRO 2/3.
  CHECK(acc.aupro(0.05) == doctest::Approx(2.0 / 3.0).epsilon(1e-14));
  // Up to 1/8, between FPR 1/12 and 1/6 where PRO is 1: (1/18 + (1/8 - 1/12)) / (1/8) = 7/9.
  CHECK(acc.aupro(0.125) == doctest::Approx(7.0 / 9.0).epsilon(1e-14));
  CHECK(normalized_area_to(curve, 0.3) == doctest::Approx(49.0 / 54.0).epsilon(1e-14));
  // Pixel AUROC over the same 16 pixels: 0.9 and 0.7 beat all 12 normal pixels, 0.5 and 0.3 all but
  // the 0.6 one: 46 of 48 pairs.
  CHECK(acc.pixel_sweep().roc_auc() == doctest::Approx(46.0 / 48.0).epsilon(1e-15));
}

TEST_CASE("AUPRO matches the independent MVTec-protocol reference on hand-made masks") {
  const json::Value fixture = load_fixture("pro_cases.json");
  int checked = 0;
  for (const json::Value& c : fixture.at("cases").as_array()) {
    const std::string name = c.at("name").as_string();
    INFO("case ", name);
    ProAccumulator acc;
    ProAccumulator reversed;  // the same images in the opposite order
    const json::Value::Array& images = c.at("images").as_array();
    for (const json::Value& img : images) {
      const std::vector<std::uint8_t> mask = labels_of(img.at("mask").as_string(), 255);
      const std::vector<float> scores = floats(img.at("scores"));
      acc.add(scores, mask, static_cast<int>(img.at("width").as_int64()), static_cast<int>(img.at("height").as_int64()),
              img.at("mask_name").as_string());
    }
    for (auto it = images.rbegin(); it != images.rend(); ++it) {
      reversed.add(floats(it->at("scores")), labels_of(it->at("mask").as_string()),
                   static_cast<int>(it->at("width").as_int64()), static_cast<int>(it->at("height").as_int64()));
    }
    CHECK(acc.region_count() == static_cast<std::size_t>(c.at("regions").as_int64()));
    CHECK(acc.normal_pixels() == static_cast<std::uint64_t>(c.at("normal_pixels").as_int64()));
    const std::vector<ProPoint> curve = acc.curve();
    CHECK(curve.size() == static_cast<std::size_t>(c.at("curve_points").as_int64()));
    const bool exact_point = c.at("fpr_0.3_is_a_curve_point").as_bool();
    CHECK(exact_point == std::any_of(curve.begin(), curve.end(), [](const ProPoint& p) { return p.fpr == 0.3; }));
    for (const json::Value& limit : c.at("aupro").as_array()) {
      const double l = limit.at("limit").as_double();
      const double want = limit.at("value").as_double();
      INFO("limit ", l);
      CHECK(std::abs(acc.aupro(l) - want) <= kTolerance);
      CHECK(std::abs(reversed.aupro(l) - want) <= kTolerance);
      CHECK(std::abs(normalized_area_to(curve, l) - want) <= kTolerance);
    }
    check_against_sklearn(acc.pixel_sweep(name), c.at("pixel_sklearn"), name);
    ++checked;
  }
  CHECK(checked == 3);
}

TEST_CASE("AUPRO refuses undefined inputs") {
  const std::vector<float> scores{0.1f, 0.2f, 0.3f, 0.4f};
  const std::vector<std::uint8_t> good(4, 0);
  const std::vector<std::uint8_t> all_bad(4, 255);
  ProAccumulator only_good;
  only_good.add(scores, good, 2, 2);
  only_good.add(scores, good, 4, 1);
  CHECK(contains(error_of([&] { (void)only_good.aupro(); }), "no anomalous pixels (8 pixels, all normal)"));
  ProAccumulator only_bad;
  only_bad.add(scores, all_bad, 2, 2);
  CHECK(contains(error_of([&] { (void)only_bad.aupro(); }), "no normal pixels"));
  ProAccumulator acc;
  const std::vector<std::uint8_t> mask{0, 1, 0, 0};
  acc.add(scores, mask, 2, 2);
  CHECK(contains(error_of([&] { (void)acc.aupro(0.0); }), "outside (0, 1]"));
  CHECK(contains(error_of([&] { (void)acc.aupro(1.5); }), "outside (0, 1]"));
  CHECK(acc.aupro(1.0) > 0.0);
  CHECK(contains(error_of([&] { acc.add(scores, mask, 4, 2, "map.tiff"); }), "map.tiff: mask holds 4 pixels"));
  const std::vector<float> short_scores{0.1f, 0.2f};
  CHECK(contains(error_of([&] { acc.add(short_scores, mask, 2, 2, "m"); }), "m: 2 scores for a 2x2 mask"));
  const std::vector<float> nan_scores{0.1f, 0.2f, std::nanf(""), 0.4f};
  CHECK(contains(error_of([&] { acc.add(nan_scores, mask, 2, 2, "m"); }), "m: score 2 is nan"));
  CHECK(acc.pixel_count() == 4);
  CHECK(contains(error_of([&] { (void)normalized_area_to(std::vector<ProPoint>{{0, 0}, {0.2, 1}}, 0.3); }),
                 "ends before FPR 0.3"));
}
