// From scores to decisions: quantile thresholds, the normalized score, defect regions (against
// scipy.ndimage), operating points (against scikit-learn), calibration stored with the memory bank
// (and an old bank without it), and the detector's two calibration methods on a small random CLIP.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <unistd.h>

#include "focuspatch/anomaly/calibration.hpp"
#include "focuspatch/anomaly/defect_regions.hpp"
#include "focuspatch/anomaly/detector.hpp"
#include "focuspatch/anomaly/heatmap_overlay.hpp"
#include "focuspatch/convert/convert_checkpoint.hpp"
#include "focuspatch/convert/random_clip.hpp"
#include "focuspatch/eval/metrics.hpp"
#include "focuspatch/eval/synthetic_dataset.hpp"
#include "focuspatch/io/json.hpp"
#include "test_paths.hpp"
#include "tiny_detector_fixture.hpp"

using namespace focuspatch;
namespace fs = std::filesystem;

namespace {

json::Value fixture(const std::string& relative) {
  const std::string path = (test::fixtures_dir() / relative).string();
  const auto bytes = test::file_bytes(path);
  return json::parse(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()), path);
}

}  // namespace

TEST_CASE("the image threshold is the ceil((1 - a)(n + 1))-th smallest normal score") {
  // 1..9 shuffled: n = 9.
  const std::vector<float> scores = {5, 9, 1, 7, 3, 8, 2, 6, 4};
  SUBCASE("a = 0.2: j = ceil(0.8 * 10) = 8") {
    const QuantileThreshold q = quantile_threshold(scores, 0.2);
    CHECK(q.rank == 8);
    CHECK(q.threshold == 8.0);
    CHECK(q.resolved);
    CHECK(q.expected_rate == doctest::Approx(0.2));                              // (10 - 8) / 10
    CHECK(q.rate_sd == doctest::Approx(std::sqrt(2.0 * 8.0 / (100.0 * 11.0))));  // Beta(2, 8)
  }
  SUBCASE("a = 0.1: j = ceil(0.9 * 10) = 9, exactly n despite 0.9 * 10 rounding above 9") {
    const QuantileThreshold q = quantile_threshold(scores, 0.1);
    CHECK(q.rank == 9);
    CHECK(q.threshold == 9.0);
    CHECK(q.resolved);
    CHECK(q.expected_rate == doctest::Approx(0.1));
  }
  SUBCASE("a = 0.05 is below 1/(n+1) = 0.1: the highest score, flagged unresolved") {
    const QuantileThreshold q = quantile_threshold(scores, 0.05);
    CHECK(q.rank == 9);
    CHECK(q.threshold == 9.0);
    CHECK_FALSE(q.resolved);
    CHECK(q.expected_rate == doctest::Approx(0.1));
  }
  SUBCASE("a = 0.5: j = 5, the median") { CHECK(quantile_threshold(scores, 0.5).threshold == 5.0); }
  CHECK(threshold_rank(19, 0.05) == 19);  // 0.95 * 20 = 19
  CHECK(threshold_rank(99, 0.01) == 99);
  CHECK(threshold_rank(98, 0.01) == 99);  // ceil(98.01) = 99 > 98: unresolved
  CHECK(median_of({3, 1, 2}) == 2.0);
  CHECK(median_of({4, 1, 3, 2}) == 2.5);
  for (double bad : {0.0, 1.0, -0.1, 1.5, std::nan("")})
    CHECK(test::contains(test::error_of([&] { (void)quantile_threshold(scores, bad); }), "not a rate strictly between 0 and 1"));
  CHECK(test::contains(test::error_of([&] { (void)quantile_threshold({}, 0.1); }), "no scores"));
  CHECK(test::contains(test::error_of([&] { (void)quantile_threshold({1.0f, NAN}, 0.1); }), "score 1 is nan"));
}

TEST_CASE("the normalized score is 0 at the normal level, 0.5 at the threshold and monotone") {
  // level 0.2, threshold 0.6: z = (s - 0.2) / 0.4.
  CHECK(normalized_score(0.2, 0.2, 0.6) == doctest::Approx(0.5 / std::exp(1.0)));  // z = 0 -> e^-1 / 2 = 0.184
  CHECK(normalized_score(0.0, 0.2, 0.6) == doctest::Approx(0.5 * std::exp(-1.5)));  // z = -0.5
  CHECK(normalized_score(0.4, 0.2, 0.6) == doctest::Approx(0.5 * std::exp(-0.5)));  // z = 0.5
  CHECK(normalized_score(-50.0, 0.2, 0.6) > 0.0);
  CHECK(normalized_score(0.6, 0.2, 0.6) == doctest::Approx(0.5));
  CHECK(normalized_score(1.0, 0.2, 0.6) == doctest::Approx(0.75));        // z = 2 -> 1 - 1 / 4
  CHECK(normalized_score(1.4, 0.2, 0.6) == doctest::Approx(1.0 - 1.0 / 6));  // z = 3
  double previous = -1;
  for (int i = -100; i < 500; ++i) {
    const double s = i / 100.0;
    const double n = normalized_score(s, 0.2, 0.6);
    CHECK(n > previous);
    CHECK(n < 1.0);
    if (i != 60) CHECK((n > 0.5) == (s > 0.6));
    previous = n;
  }
  // Threshold not above the level: a spread of 1e-6 * max(1, |t|) keeps 0.5 at the threshold.
  CHECK(normalized_score(0.6 + 1e-9, 0.2, 0.6) > 0.5);
  CHECK(normalized_score(0.6 - 1e-9, 0.2, 0.6) < 0.5);
  CHECK(normalized_score(0.5, 0.5, 0.5) == doctest::Approx(0.5));
  CHECK(normalized_score(0.5 + 1e-6, 0.5, 0.5) == doctest::Approx(0.75));
  CHECK(normalized_score(0.3, 0.9, 0.3) == doctest::Approx(0.5));

  DecisionThresholds none;
  CHECK(none.verdict(0.9) == Verdict::Uncalibrated);
  CHECK_FALSE(none.normalized(0.9).has_value());
  const DecisionThresholds only_override = thresholds_from(nullptr, 0.4);
  CHECK(only_override.verdict(0.41) == Verdict::Anomalous);
  CHECK(only_override.verdict(0.4) == Verdict::Normal);  // equal to the threshold: normal
  CHECK_FALSE(only_override.normalized(0.41).has_value());  // no normal level to normalize with
  CHECK(test::contains(test::error_of([] { (void)thresholds_from(nullptr, INFINITY); }), "not a finite number"));
}

TEST_CASE("a calibration from scores: thresholds, levels and how rough it is") {
  const std::vector<double> scores = {0.30, 0.10, 0.20, 0.40};
  std::vector<float> pixels(1000);
  for (std::size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<float>(i + 1) / 1000.0f;  // 0.001 .. 1
  const CategoryCalibration c = calibrate_from_scores(CalibrationMethod::HeldOutImages, {"a", "b", "c", "d"}, scores, pixels, 0.4, 0.01);
  CHECK(c.image_threshold == doctest::Approx(0.30));   // j = ceil(0.6 * 5) = 3
  CHECK(c.image_normal_level == doctest::Approx(0.25));
  CHECK(c.pixel_threshold == doctest::Approx(0.991));  // j = ceil(0.99 * 1001) = 991
  CHECK(c.pixel_normal_level == doctest::Approx(0.5005));
  CHECK(c.pixel_count == 1000);
  CHECK(c.smallest_resolvable_rate() == doctest::Approx(0.2));
  CHECK(test::contains(c.warning(), "rough estimate"));  // sd of Beta(2, 3) = 0.2 >= 0.4 / 2
  const CategoryCalibration strict = calibrate_from_scores(CalibrationMethod::HeldOutImages, {"a", "b", "c", "d"}, scores, pixels, 0.01, 0.01);
  CHECK(strict.image_threshold == doctest::Approx(0.40));
  CHECK(test::contains(strict.warning(), "cannot resolve a false-alarm rate of 0.01 (the smallest is 1/(n+1) = 0.2)"));
  std::vector<double> many(999);
  for (std::size_t i = 0; i < many.size(); ++i) many[i] = static_cast<double>(i);
  const CategoryCalibration fine = calibrate_from_scores(CalibrationMethod::HeldOutImages, std::vector<std::string>(999, "x"), many, pixels, 0.1, 0.01);
  CHECK(fine.image_threshold == 899.0);  // j = ceil(0.9 * 1000) = 900, the 900th smallest of 0..998
  CHECK(fine.warning().empty());
  const CategoryCalibration looser = fine.at_false_alarm_rate(0.5);  // j = ceil(0.5 * 1000) = 500
  CHECK(looser.image_threshold == 499.0);
  CHECK(looser.false_alarm_rate == 0.5);
  CHECK(looser.pixel_threshold == fine.pixel_threshold);
}

TEST_CASE("defect regions are scipy.ndimage's 8-connected components, with their boxes, areas, peaks and means") {
  const json::Value cases = fixture("regions/label_cases.json");
  REQUIRE(cases.size() >= 10);
  for (const auto& c : cases.as_array()) {
    const int w = static_cast<int>(c.at("width").as_int64()), h = static_cast<int>(c.at("height").as_int64());
    CAPTURE(w);
    CAPTURE(h);
    std::vector<std::uint8_t> mask;
    for (const auto& v : c.at("mask").as_array()) mask.push_back(static_cast<std::uint8_t>(v.as_int64()));
    AnomalyMap map(h, w);
    for (std::size_t i = 0; i < map.values.size(); ++i) map.values[i] = static_cast<float>(c.at("map")[i].as_double());
    const RegionLabels labels = label_regions(mask, w, h);
    REQUIRE(labels.count() == c.at("count").as_int64());
    for (std::size_t i = 0; i < labels.labels.size(); ++i) CHECK(labels.labels[i] == c.at("labels")[i].as_int64());
    const std::vector<DefectRegion> regions = defect_regions(map, mask);
    REQUIRE(regions.size() == labels.count());
    // defect_regions sorts by peak; scipy lists by label. Each scipy region is found by its box and area.
    for (const auto& expected : c.at("regions").as_array()) {
      const auto found = std::find_if(regions.begin(), regions.end(), [&](const DefectRegion& r) {
        return r.x == expected.at("x").as_int64() && r.y == expected.at("y").as_int64() && r.width == expected.at("width").as_int64() &&
               r.height == expected.at("height").as_int64() && static_cast<std::int64_t>(r.area) == expected.at("area").as_int64() &&
               r.peak_score == static_cast<float>(expected.at("peak").as_double());
      });
      REQUIRE(found != regions.end());
      CHECK(found->mean_score == doctest::Approx(expected.at("mean").as_double()).epsilon(1e-6));
      CHECK(found->keyword.empty());
    }
    for (std::size_t i = 1; i < regions.size(); ++i) CHECK(regions[i - 1].peak_score >= regions[i].peak_score);
  }
}

TEST_CASE("a defect region is named after the keyword whose focused patches cover most of it") {
  // 8 x 8 map on a 2 x 2 patch grid (4 x 4 pixels a patch). One region covering patch 0 entirely
  // and 4 pixels of patch 1; another inside patch 3.
  AnomalyMap map(8, 8, 0.0f);
  std::vector<std::uint8_t> mask(64, 0);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 5; ++x) mask[static_cast<std::size_t>(y * 8 + x)] = 1, map.at(y, x) = 0.5f;
  mask[7 * 8 + 7] = 1;
  map.at(7, 7) = 0.9f;
  FocusedKeyword scratch, hole, crack;
  scratch.name = "scratch", scratch.score = 0.9f, scratch.patches = {1};  // 4 pixels of region A
  hole.name = "hole", hole.score = 0.2f, hole.patches = {0, 2};           // 16 pixels of region A
  crack.name = "crack", crack.score = 0.3f, crack.patches = {2};          // nothing
  const std::vector<FocusedKeyword> keywords = {scratch, hole, crack};
  const auto regions = defect_regions(map, mask, keywords, 2);
  REQUIRE(regions.size() == 2);
  CHECK(regions[0].area == 1);  // the 0.9 peak first
  CHECK(regions[0].keyword.empty());
  CHECK(regions[1].area == 20);
  CHECK(regions[1].x == 0);
  CHECK(regions[1].width == 5);
  CHECK(regions[1].height == 4);
  CHECK(regions[1].keyword == "hole");
  CHECK(regions[1].keyword_overlap == doctest::Approx(16.0 / 20.0));
  // A tie in pixels goes to the higher keyword score.
  FocusedKeyword other = scratch;
  other.name = "stain", other.score = 0.95f, other.patches = {0};
  const std::vector<FocusedKeyword> tied = {hole, other};
  CHECK(defect_regions(map, mask, tied, 2)[1].keyword == "stain");
}

TEST_CASE("operating points agree with scikit-learn at the same threshold") {
  const json::Value cases = fixture("metrics/operating_point_cases.json");
  REQUIRE(cases.size() >= 5);
  for (const auto& c : cases.as_array()) {
    std::vector<double> scores;
    std::vector<std::uint8_t> labels;
    for (const auto& v : c.at("scores").as_array()) scores.push_back(v.as_double());
    for (const auto& v : c.at("labels").as_array()) labels.push_back(static_cast<std::uint8_t>(v.as_int64()));
    const eval::OperatingPoint p = eval::operating_point(scores, labels, c.at("threshold").as_double());
    CAPTURE(c.at("threshold").as_double());
    CHECK(p.tp == static_cast<std::uint64_t>(c.at("tp").as_int64()));
    CHECK(p.fp == static_cast<std::uint64_t>(c.at("fp").as_int64()));
    CHECK(p.tn == static_cast<std::uint64_t>(c.at("tn").as_int64()));
    CHECK(p.fn == static_cast<std::uint64_t>(c.at("fn").as_int64()));
    CHECK(p.precision() == doctest::Approx(c.at("precision").as_double()).epsilon(1e-12));
    CHECK(p.recall() == doctest::Approx(c.at("recall").as_double()).epsilon(1e-12));
    CHECK(p.f1() == doctest::Approx(c.at("f1").as_double()).epsilon(1e-12));
    CHECK(p.iou() == doctest::Approx(c.at("iou").as_double()).epsilon(1e-12));
    if (c.at("false_alarm_rate").is_null())
      CHECK(std::isnan(p.false_alarm_rate()));
    else
      CHECK(p.false_alarm_rate() == doctest::Approx(c.at("false_alarm_rate").as_double()).epsilon(1e-12));
  }
}

// ---- with a model -----------------------------------------------------------------------------

namespace {

using test::hand_keywords;
using test::tiny_weights;

Image good(int index) { return render_synthetic_sample("washer", SyntheticSplit::train, "good", index, 64, 3).image; }

Detector<> detector_with_shots(ClipModel<>& model, const std::vector<int>& shots) {
  Detector<> d(model);
  d.set_keywords("washer", hand_keywords(model.config().embed_dim));
  std::vector<Image> images;
  std::vector<std::string> names;
  for (int i : shots) images.push_back(good(i)), names.push_back("shot" + std::to_string(i));
  d.add_normal("washer", images, names);
  return d;
}

std::string temp_path(const std::string& name) {
  return test::scratch_path(name);
}

}  // namespace

TEST_CASE("leave-one-shot-out scores each shot against a bank of the other shots") {
  ClipModel<> model(tiny_weights());
  Detector<> d = detector_with_shots(model, {0, 1, 2});
  CalibrationOptions options;
  options.false_alarm_rate = 0.5;  // n = 3: j = ceil(0.5 * 4) = 2
  const CategoryCalibration c = d.calibrate_leave_one_shot_out("washer", options);
  CHECK(c.method == CalibrationMethod::LeaveOneShotOut);
  REQUIRE(c.image_scores.size() == 3);
  std::vector<double> independent;
  for (int left_out = 0; left_out < 3; ++left_out) {
    std::vector<int> others;
    for (int s = 0; s < 3; ++s)
      if (s != left_out) others.push_back(s);
    Detector<> two = detector_with_shots(model, others);
    const Image shot = good(left_out);
    independent.push_back(two.detect(std::span<const Image>(&shot, 1)).front().image_score);
    CHECK(c.image_scores[static_cast<std::size_t>(left_out)] == doctest::Approx(independent.back()).epsilon(1e-6));
    CHECK(c.images[static_cast<std::size_t>(left_out)] == "shot" + std::to_string(left_out));
  }
  std::sort(independent.begin(), independent.end());
  CHECK(c.image_threshold == doctest::Approx(independent[1]).epsilon(1e-6));
  CHECK(c.image_normal_level == doctest::Approx(independent[1]).epsilon(1e-6));
  CHECK(c.pixel_count == 3u * 32u * 32u);
  // A shot's score against its own full bank is lower than left out: its patches are in the bank.
  const Image shot0 = good(0);
  const Detection self = d.detect(std::span<const Image>(&shot0, 1)).front();
  CHECK(self.image_score < c.image_scores[0]);
  CHECK(self.verdict == Verdict::Normal);
  REQUIRE(self.normalized_score.has_value());
  CHECK(*self.normalized_score < 0.5f);

  SUBCASE("k = 1, or a bank from a file: no leave-one-shot-out, plainly uncalibrated") {
    Detector<> one = detector_with_shots(model, {0});
    CHECK(test::contains(test::error_of([&] { (void)one.calibrate_leave_one_shot_out("washer"); }), "needs at least 2 shots, the bank holds 1"));
    const Detection u = one.detect(std::span<const Image>(&shot0, 1)).front();
    CHECK(u.verdict == Verdict::Uncalibrated);
    CHECK_FALSE(u.normalized_score.has_value());
    CHECK(u.mask.empty());
    CHECK(u.regions.empty());
    const std::string bank = temp_path("loo.fpw");
    d.memory().save(bank);
    Detector<> loaded(model);
    loaded.set_keywords("washer", hand_keywords(model.config().embed_dim));
    loaded.set_memory(MemoryBank::load(bank, Detector<>::weights_id(model)));
    CHECK(test::contains(test::error_of([&] { (void)loaded.calibrate_leave_one_shot_out("washer"); }), "needs the shots' features"));
  }
}

TEST_CASE("held-out calibration, decisions, overrides, and the calibration saved with the bank") {
  ClipModel<> model(tiny_weights());
  Detector<> d = detector_with_shots(model, {0, 1});
  std::vector<Image> held_out;
  std::vector<std::string> names;
  for (int i = 2; i < 7; ++i) held_out.push_back(good(i)), names.push_back("good" + std::to_string(i));
  CHECK(test::contains(test::error_of([&] { (void)d.calibrate("washer", std::span<const Image>(), std::span<const std::string>()); }),
                       "calibration of 'washer': no normal images given"));
  CHECK(test::contains(test::error_of([&] { (void)d.calibrate("bolt", held_out, names); }), "no category 'bolt'"));
  CalibrationOptions bad;
  bad.false_alarm_rate = 1.0;
  CHECK(test::contains(test::error_of([&] { (void)d.calibrate("washer", held_out, names, bad); }), "false-alarm rate: 1 is not a rate"));
  const std::vector<std::string> shot_name = {"shot1"};
  CHECK(test::contains(test::error_of([&] { (void)d.calibrate("washer", std::span<const Image>(&held_out[0], 1), shot_name); }),
                       "shot1 is one of the category's shots"));
  CHECK(d.memory().calibration("washer") == nullptr);

  const CategoryCalibration c = d.calibrate("washer", held_out, names);  // a = 0.01 with 5 images: the maximum
  REQUIRE(c.image_scores.size() == 5);
  for (std::size_t i = 0; i < held_out.size(); ++i) {
    const Detection det = d.detect(std::span<const Image>(&held_out[i], 1)).front();
    CHECK(c.image_scores[i] == doctest::Approx(det.image_score).epsilon(1e-6));
    CHECK(det.verdict == Verdict::Normal);  // none is above the highest of them
  }
  CHECK(c.image_threshold == doctest::Approx(*std::max_element(c.image_scores.begin(), c.image_scores.end())));
  CHECK(test::contains(c.warning(), "5 calibration images cannot resolve a false-alarm rate of 0.01"));

  // A defective image, decided at its own size with a pixel threshold low enough to mark pixels.
  const auto defect = render_synthetic_sample("washer", SyntheticSplit::test, "scratch", 0, 48, 3);
  const Detection raw = d.detect(std::span<const Image>(&defect.image, 1)).front();
  d.set_threshold_override("", std::nullopt, raw.map.values[0] * 0.5f + *std::max_element(raw.map.values.begin(), raw.map.values.end()) * 0.5f);
  const Detection det = d.detect(std::span<const Image>(&defect.image, 1)).front();
  CHECK(det.mask_width == 48);
  CHECK(det.mask_height == 48);
  const AnomalyMap at_image = upsample_bilinear(det.map, 48, 48);
  std::uint64_t marked = 0;
  for (std::size_t i = 0; i < det.mask.size(); ++i) {
    CHECK(det.mask[i] == (at_image.values[i] > *det.thresholds.pixel ? 1 : 0));
    marked += det.mask[i];
  }
  CHECK(marked > 0);
  std::uint64_t area = 0;
  for (const auto& r : det.regions) area += r.area;
  CHECK(area == marked);
  CHECK(det.regions.size() == label_regions(det.mask, 48, 48).count());
  CHECK(det.thresholds.pixel_overridden);
  CHECK_FALSE(det.thresholds.image_overridden);
  d.set_threshold_override("washer", -1.0, std::nullopt);
  CHECK(d.detect(std::span<const Image>(&defect.image, 1)).front().verdict == Verdict::Anomalous);
  CHECK(test::contains(test::error_of([&] { d.set_threshold_override("", NAN, std::nullopt); }), "is not a finite number"));

  // Saved and loaded: the calibration is data of the bank.
  const std::string bank = temp_path("held_out.fpw");
  d.memory().save(bank);
  const MemoryBank loaded = MemoryBank::load(bank, Detector<>::weights_id(model));
  const CategoryCalibration* back = loaded.calibration("washer");
  REQUIRE(back != nullptr);
  CHECK(back->method == CalibrationMethod::HeldOutImages);
  CHECK(back->images == c.images);
  CHECK(back->image_scores == c.image_scores);
  CHECK(back->image_threshold == c.image_threshold);
  CHECK(back->pixel_threshold == c.pixel_threshold);
  CHECK(back->pixel_normal_level == c.pixel_normal_level);
  CHECK(back->pixel_count == c.pixel_count);
  CHECK(back->false_alarm_rate == c.false_alarm_rate);
  // Another shot makes the thresholds stale.
  d.add_normal("washer", std::span<const Image>(&held_out[0], 1), std::span<const std::string>(&names[0], 1));
  CHECK(d.memory().calibration("washer") == nullptr);

  SUBCASE("a bank in the format before calibrations (version 1) loads, uncalibrated") {
    const MemoryBank& m = loaded;
    WeightWriter w;
    w.set_meta("general.architecture", MemoryBank::kArchitecture);
    w.set_meta("memory.version", std::int64_t{1});
    w.set_meta("memory.weights_id", m.weights_id());
    w.set_meta("memory.feature_dim", m.feature_dim());
    w.set_meta("memory.layers", fpw::MetaValue::of(m.layers()));
    w.set_meta("memory.categories", fpw::MetaValue::of(std::vector<std::string>{"washer"}));
    w.set_meta("memory.category.0.shot_files", fpw::MetaValue::of(m.shot_files("washer")));
    const auto sh = m.shot_embeddings("washer");
    w.add_tensor("category.0.shots", DType::F32, FloatTensor({m.shot_count("washer"), m.feature_dim()}, std::vector<float>(sh.begin(), sh.end())));
    for (std::size_t l = 0; l < m.layers().size(); ++l) {
      const auto p = m.patches("washer", l);
      w.add_tensor("category.0.layer." + std::to_string(l) + ".patches", DType::F32,
                   FloatTensor({m.patch_count("washer"), m.feature_dim()}, std::vector<float>(p.begin(), p.end())));
    }
    const std::string old = temp_path("v1.fpw");
    w.write(old);
    const MemoryBank v1 = MemoryBank::load(old, Detector<>::weights_id(model));
    CHECK(v1.calibration("washer") == nullptr);
    Detector<> old_detector(model);
    old_detector.set_keywords("washer", hand_keywords(model.config().embed_dim));
    old_detector.set_memory(v1);
    const Detection u = old_detector.detect(std::span<const Image>(&defect.image, 1)).front();
    CHECK(u.verdict == Verdict::Uncalibrated);
    CHECK(u.image_score == doctest::Approx(raw.image_score).epsilon(1e-6));  // same shots, same score
  }
}

TEST_CASE("decision overlays: the colour scale is anchored to the calibration, regions are outlined, the verdict is written") {
  DecisionThresholds t;
  t.pixel = 0.3, t.pixel_normal_level = 0.1;
  AnomalyMap map(64, 64, 0.05f);
  CHECK(decision_colour_scale(t, map) == std::pair(0.1f, 0.5f));  // level cold, threshold the middle
  DecisionThresholds by_hand;
  by_hand.pixel = 0.3;
  CHECK(decision_colour_scale(by_hand, map) == std::pair(0.05f, 0.55f));  // the map's minimum cold
  map.at(3, 4) = 0.25f;
  CHECK(decision_colour_scale({}, map) == std::pair(0.05f, 0.25f));  // uncalibrated: the map's range

  CHECK(verdict_label(Verdict::Anomalous, 0.8349f, 0.7f) == "ANOMALY 0.83");
  CHECK(verdict_label(Verdict::Normal, 0.21f, 0.7f) == "OK 0.21");
  CHECK(verdict_label(Verdict::Uncalibrated, std::nullopt, 0.12345f) == "UNCALIBRATED 0.123");
  CHECK(verdict_label(Verdict::Anomalous, 0.8349f, 0.7f, 8) == "NG 0.83");

  Image grey;
  grey.width = grey.height = 64;
  grey.rgb.assign(64 * 64 * 3, 100);
  AnomalyMap block(64, 64, 0.0f);
  std::vector<std::uint8_t> mask(64 * 64, 0);
  for (int y = 30; y < 40; ++y)
    for (int x = 30; x < 40; ++x) block.at(y, x) = 1.0f, mask[static_cast<std::size_t>(y * 64 + x)] = 1;
  DecisionThresholds calibrated;
  calibrated.pixel = 0.5, calibrated.pixel_normal_level = 0.0;
  const Image out = overlay_decision(grey, block, calibrated, mask, Verdict::Anomalous, 0.83f, 0.7f);
  auto px = [&](int x, int y) { return std::array<int, 3>{out.pixel(x, y)[0], out.pixel(x, y)[1], out.pixel(x, y)[2]}; };
  CHECK(px(30, 30) == std::array<int, 3>{255, 255, 255});  // outline on the region's edge
  CHECK(px(39, 35) == std::array<int, 3>{255, 255, 255});
  CHECK(px(35, 35) != std::array<int, 3>{255, 255, 255});  // inside: the heat map (value 1 = dark red)
  CHECK(px(35, 35)[0] > px(35, 35)[2]);
  CHECK(px(50, 50)[2] > px(50, 50)[0]);                    // normal level: blue
  // The label "NG 0.83" (the long form does not fit 64 px) in red on black at the top-left.
  int red = 0, black = 0;
  for (int y = 0; y < 12; ++y)
    for (int x = 0; x < 48; ++x) {
      red += px(x, y) == std::array<int, 3>{255, 64, 64};
      black += px(x, y) == std::array<int, 3>{0, 0, 0};
    }
  CHECK(red > 20);
  CHECK(black > 100);
}
