// Calibration end to end with the programs on synthetic data and small random weights:
//   - the statistical check: focuspatch-detect calibrated on held-out normal images reaches,
//     on many more normal test images, a false-alarm rate inside the range the order-statistic
//     rule predicts (a beta-binomial, since the threshold itself comes from a finite sample);
//   - what results.json says per image and per category, masks, and an uncalibrated category;
//   - focuspatch-eval's operating point recomputed from the verdicts it writes;
//   - bad input named.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>

#include "cli_support.hpp"
#include "focuspatch/anomaly/calibration.hpp"
#include "focuspatch/eval/synthetic_dataset.hpp"
#include "focuspatch/io/image.hpp"
#include "focuspatch/io/json.hpp"
#include "test_paths.hpp"

using namespace focuspatch;
namespace fs = std::filesystem;

namespace {

// P(X = x) for X ~ BetaBinomial(m, alpha, beta): the count of m new normal images above a
// threshold whose exceedance probability is Beta(alpha, beta) distributed.
double beta_binomial_pmf(int x, int m, double alpha, double beta) {
  auto lbeta = [](double a, double b) { return std::lgamma(a) + std::lgamma(b) - std::lgamma(a + b); };
  const double log_choose = std::lgamma(m + 1.0) - std::lgamma(x + 1.0) - std::lgamma(m - x + 1.0);
  return std::exp(log_choose + lbeta(x + alpha, m - x + beta) - lbeta(alpha, beta));
}

// The central interval holding at least `mass` of the distribution.
std::pair<int, int> beta_binomial_interval(int m, double alpha, double beta, double mass) {
  const double tail = (1.0 - mass) / 2.0;
  double below = 0.0;
  int lo = 0;
  while (lo < m && below + beta_binomial_pmf(lo, m, alpha, beta) <= tail) below += beta_binomial_pmf(lo++, m, alpha, beta);
  double above = 0.0;
  int hi = m;
  while (hi > 0 && above + beta_binomial_pmf(hi, m, alpha, beta) <= tail) above += beta_binomial_pmf(hi--, m, alpha, beta);
  return {lo, hi};
}

void copy_images(const fs::path& from, int first, int count, const fs::path& to) {
  fs::create_directories(to);
  for (int i = first; i < first + count; ++i) {
    char name[16];
    std::snprintf(name, sizeof name, "%03d.png", i);
    fs::copy_file(from / name, to / name);
  }
}

}  // namespace

TEST_CASE("calibrated on held-out normal images, the realized false-alarm rate is where the quantile rule puts it") {
  if (!test::have_shared_vocab()) {
    MESSAGE("skipped: ", test::shared_vocab_path().string(), " is absent");
    return;
  }
  test::TempDir tmp("test_calibration_cli");
  SyntheticDatasetOptions o;
  o.image_size = 48;
  o.train_good = 61;   // 2 shots + 59 calibration images
  o.test_good = 150;   // where the false alarms are counted
  o.test_per_defect = 0;
  o.categories = {"washer"};
  write_synthetic_dataset(tmp / "data", o);
  const std::string weights = (tmp / "tiny.fpw").string();
  REQUIRE(test::run_tool("focuspatch-convert", "--random tiny --seed 5 --vocab " + test::shared_vocab_path().string() + " -o " + weights, tmp / "log")
              .status == 0);
  const fs::path train = tmp / "data/washer/train/good";
  copy_images(train, 0, 2, tmp / "shots");
  copy_images(train, 2, 59, tmp / "calibration");
  const double rate = 0.1;  // n = 59: j = ceil(0.9 * 60) = 54, expected rate (60 - 54) / 60 = 0.1
  const auto r = test::run_tool("focuspatch-detect", "--weights " + weights + " --normal washer=" + (tmp / "shots").string() + " --calibration washer=" +
                                                         (tmp / "calibration").string() + " --false-alarm-rate 0.1 --image " +
                                                         (tmp / "data/washer/test/good").string() + " --out " + (tmp / "out").string(),
                                tmp / "log");
  REQUIRE_MESSAGE(r.status == 0, r.output);
  const json::Value res = json::parse(test::read_all(tmp / "out/results.json"), "results.json");
  const auto& cal = res.at("calibration").at("washer");
  CHECK(cal.at("method").as_string() == "held-out normal images");
  CHECK(cal.at("images").as_int64() == 59);
  CHECK(cal.at("threshold_rank").as_int64() == 54);
  CHECK(cal.at("expected_false_alarm_rate").as_double() == doctest::Approx(0.1));
  CHECK(cal.at("calibration_images").size() == 59);
  const int m = static_cast<int>(res.at("images").size());
  REQUIRE(m == 150);
  int alarms = 0;
  for (const auto& img : res.at("images").as_array()) {
    const bool anomalous = img.at("verdict").as_string() == "anomalous";
    alarms += anomalous;
    CHECK(anomalous == (img.at("score").as_double() > cal.at("image_threshold").as_double()));
    CHECK(anomalous == (img.at("normalized_score").as_double() > 0.5));
  }
  // Given the calibration, X ~ Binomial(m, p); over calibration draws p ~ Beta(n + 1 - j, j) =
  // Beta(6, 54): X is beta-binomial, mean 15, s.d. about 6.6 for m = 150.
  const auto [lo, hi] = beta_binomial_interval(m, 6.0, 54.0, 0.999);
  MESSAGE("realized false alarms: ", alarms, " of ", m, " normal test images (", 100.0 * alarms / m, " %) for a target of ", 100 * rate,
          " %; 99.9 % beta-binomial range [", lo, ", ", hi, "]");
  CHECK(alarms >= lo);
  CHECK(alarms <= hi);
}

TEST_CASE("focuspatch-detect reports verdicts, masks, regions and calibrations, and names bad input") {
  if (!test::have_shared_vocab()) return;
  test::TempDir tmp("test_calibration_cli_detect");
  SyntheticDatasetOptions o;
  o.image_size = 48;
  o.train_good = 6;
  o.test_good = 1;
  o.test_per_defect = 1;
  o.categories = {"capsule", "grain"};
  write_synthetic_dataset(tmp / "data", o);
  const std::string weights = (tmp / "tiny.fpw").string();
  REQUIRE(test::run_tool("focuspatch-convert", "--random tiny --vocab " + test::shared_vocab_path().string() + " -o " + weights, tmp / "log").status == 0);
  copy_images(tmp / "data/capsule/train/good", 0, 3, tmp / "capsule_shots");
  copy_images(tmp / "data/capsule/train/good", 3, 3, tmp / "capsule_cal");
  copy_images(tmp / "data/grain/train/good", 0, 1, tmp / "grain_shot");
  const std::string common = "--weights " + weights + " --image " + (tmp / "data/capsule/test").string() + "/hole/000.png --image " +
                             (tmp / "data/grain/test/good").string();
  const std::string normals = " --normal capsule=" + (tmp / "capsule_shots").string() + " --normal grain=" + (tmp / "grain_shot").string();
  const std::string bank = (tmp / "bank.fpw").string();

  const auto first = test::run_tool("focuspatch-detect", common + normals + " --calibration capsule=" + (tmp / "capsule_cal").string() +
                                                              " --memory " + bank + " --pixel-false-alarm-rate 0.05 --out " + (tmp / "a").string(),
                                    tmp / "log");
  INFO(first.output);
  REQUIRE(first.status == 0);
  CHECK(test::contains(first.output, "grain: UNCALIBRATED"));
  CHECK(test::contains(first.output, "3 calibration images cannot resolve a false-alarm rate of 0.01"));
  const json::Value res = json::parse(test::read_all(tmp / "a/results.json"), "results.json");
  const auto& capsule = res.at("calibration").at("capsule");
  CHECK(capsule.at("calibrated").as_bool());
  CHECK(capsule.at("images").as_int64() == 3);
  CHECK(capsule.at("smallest_resolvable_rate").as_double() == doctest::Approx(0.25));
  CHECK(capsule.at("warning").is_string());
  const auto& grain = res.at("calibration").at("grain");
  CHECK_FALSE(grain.at("calibrated").as_bool());
  CHECK(grain.at("image_threshold").is_null());
  const auto& images = res.at("images");
  REQUIRE(images.size() == 2);
  const auto& hole = images[0];
  CHECK(hole.at("category").as_string() == "capsule");
  CHECK(hole.at("verdict").as_string() != "uncalibrated");
  CHECK(hole.at("normalized_score").is_number());
  // The mask: 255 where the map (the .npy) is above the pixel threshold.
  REQUIRE(hole.at("mask").is_string());
  const Image mask = load_image(hole.at("mask").as_string());
  CHECK(mask.width == 48);
  const std::string npy = test::read_all(hole.at("map").as_string());
  const std::size_t header = 10 + (static_cast<unsigned char>(npy[8]) | static_cast<std::size_t>(static_cast<unsigned char>(npy[9])) << 8);
  const double pixel_threshold = capsule.at("pixel_threshold").as_double();
  std::int64_t marked = 0, area = 0;
  for (std::size_t i = 0; i < 48 * 48; ++i) {
    float v;
    std::memcpy(&v, npy.data() + header + 4 * i, 4);
    CHECK((mask.rgb[3 * i] == 255) == (v > pixel_threshold));
    marked += mask.rgb[3 * i] == 255;
  }
  for (const auto& region : hole.at("regions").as_array()) {
    area += region.at("area").as_int64();
    CHECK(region.at("peak_score").as_double() > pixel_threshold);
    CHECK(region.at("width").as_int64() * region.at("height").as_int64() >= region.at("area").as_int64());
  }
  CHECK(area == marked);
  CHECK(images[1].at("verdict").as_string() == "uncalibrated");
  CHECK(images[1].at("normalized_score").is_null());
  CHECK(images[1].at("mask").is_null());
  const Image overlay = load_image(hole.at("overlay").as_string());
  CHECK(overlay.width == 48);

  // The bank keeps the calibration: a second run without normals or calibration images decides alike.
  const auto second = test::run_tool("focuspatch-detect", common + " --memory " + bank + " --out " + (tmp / "b").string(), tmp / "log");
  INFO(second.output);
  REQUIRE(second.status == 0);
  const json::Value again = json::parse(test::read_all(tmp / "b/results.json"), "results.json");
  CHECK(again.at("calibration").at("capsule").at("image_threshold").as_double() == capsule.at("image_threshold").as_double());
  CHECK(again.at("images")[0].at("verdict").as_string() == hole.at("verdict").as_string());
  // A new rate for the stored calibration: the threshold is re-derived from the stored scores and saved.
  const auto looser = test::run_tool("focuspatch-detect", common + " --memory " + bank + " --false-alarm-rate 0.5 --out " + (tmp / "r").string(),
                                     tmp / "log");
  INFO(looser.output);
  REQUIRE(looser.status == 0);
  CHECK(test::contains(looser.output, "capsule: image threshold re-derived from the 3 stored calibration scores"));
  const json::Value rl = json::parse(test::read_all(tmp / "r/results.json"), "results.json");
  const auto& rc = rl.at("calibration").at("capsule");
  CHECK(rc.at("threshold_rank").as_int64() == 2);  // n = 3: ceil(0.5 * 4) = 2
  CHECK(rc.at("image_threshold").as_double() <= capsule.at("image_threshold").as_double());
  CHECK(rc.at("pixel_threshold").as_double() == capsule.at("pixel_threshold").as_double());
  // Back to the default rate for what follows.
  REQUIRE(test::run_tool("focuspatch-detect", common + " --memory " + bank + " --false-alarm-rate 0.01 --out " + (tmp / "r2").string(), tmp / "log")
              .status == 0);

  // Overrides, per category or for all, are used and reported.
  const auto over = test::run_tool("focuspatch-detect", common + " --memory " + bank + " --threshold -5 --threshold capsule=1e9 --out " +
                                                            (tmp / "c").string(), tmp / "log");
  INFO(over.output);
  REQUIRE(over.status == 0);
  const json::Value o3 = json::parse(test::read_all(tmp / "c/results.json"), "results.json");
  CHECK(o3.at("images")[0].at("verdict").as_string() == "normal");     // capsule: 1e9
  CHECK(o3.at("images")[1].at("verdict").as_string() == "anomalous");  // grain: -5, though uncalibrated
  CHECK(o3.at("calibration").at("grain").at("image_threshold_overridden").as_bool());

  SUBCASE("bad input is named") {
    fs::create_directories(tmp / "empty");
    struct Bad {
      std::string arguments, message;
    };
    const std::string base = common + normals + " --out " + (tmp / "d").string();
    const Bad cases[] = {
        {base + " --calibration capsule=" + (tmp / "empty").string(), "--calibration " + (tmp / "empty").string() + ": the folder holds no images"},
        {base + " --calibration bolt=" + (tmp / "capsule_cal").string(), "category 'bolt' is not in the memory bank"},
        {base + " --false-alarm-rate 0", "option --false-alarm-rate: 0 is outside (0, 1)"},
        {base + " --false-alarm-rate 1.5", "option --false-alarm-rate: 1.5 is outside (0, 1)"},
        {base + " --false-alarm-rate often", "option --false-alarm-rate: 'often' is not a finite number"},
        {base + " --pixel-false-alarm-rate -1", "option --pixel-false-alarm-rate: -1 is outside (0, 1)"},
        {base + " --threshold nan", "option --threshold: 'nan' is not a finite number"},
        {base + " --pixel-threshold capsule=inf", "option --pixel-threshold: 'inf' is not a finite number"},
        {base + " --threshold 0.1 --threshold 0.2", "a threshold for every category is given twice"},
        {base + " --threshold bolt=0.2", "option --threshold: no category 'bolt'"},
    };
    for (const Bad& bad : cases) {
      CAPTURE(bad.arguments);
      const auto b = test::run_tool("focuspatch-detect", bad.arguments, tmp / "log");
      INFO(b.output);
      CHECK(b.status == 1);
      CHECK(test::contains(b.output, bad.message));
    }
  }
}

TEST_CASE("focuspatch-eval's operating point follows from the verdicts it writes") {
  if (!test::have_shared_vocab()) return;
  test::TempDir tmp("test_calibration_cli_eval");
  SyntheticDatasetOptions o;
  o.image_size = 48;
  o.train_good = 6;
  o.test_good = 4;
  o.test_per_defect = 1;
  o.categories = {"washer", "weave"};
  write_synthetic_dataset(tmp / "data", o);
  const std::string weights = (tmp / "tiny.fpw").string();
  REQUIRE(test::run_tool("focuspatch-convert", "--random tiny --vocab " + test::shared_vocab_path().string() + " -o " + weights, tmp / "log").status == 0);
  const auto r = test::run_tool("focuspatch-eval", "--weights " + weights + " --data " + (tmp / "data").string() +
                                                       " --shots 2 --seed 3 --false-alarm-rate 0.3 --quiet --overlays 1 --out " + (tmp / "eval").string(),
                                tmp / "log");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(test::contains(r.output, "| category | calibration | images | I-threshold"));
  const json::Value res = json::parse(test::read_all(tmp / "eval/results.json"), "results.json");
  for (const auto& c : res.at("categories").as_array()) {
    const std::string name = c.at("name").as_string();
    CAPTURE(name);
    CHECK(c.at("calibration").as_string() == "held-out normal images");
    // The 4 training images outside the 2 shots, none of them a shot or a test image.
    std::set<std::string> shots, calibration;
    for (const auto& s : c.at("shots").as_array()) shots.insert(s.as_string());
    for (const auto& s : c.at("calibration_images").as_array()) calibration.insert(s.as_string());
    CHECK(calibration.size() == 4);
    for (const auto& p : calibration) {
      CHECK_FALSE(shots.count(p));
      CHECK(test::contains(p, "/train/good/"));
    }
    // n = 4, a = 0.3: j = ceil(0.7 * 5) = 4, the highest calibration score.
    CHECK(res.at("calibration").at(name).at("threshold_rank").as_int64() == 4);
    std::uint64_t tp = 0, fp = 0, tn = 0, fn = 0;
    for (const auto& img : res.at("images").as_array()) {
      if (img.at("category").as_string() != name) continue;
      // Decided by the thresholds of the category the image was routed to.
      const double threshold = res.at("calibration").at(img.at("routed").as_string()).at("image_threshold").as_double();
      const bool predicted = img.at("verdict").as_string() == "anomalous";
      CHECK(predicted == (img.at("score").as_double() > threshold));
      const bool actual = img.at("anomalous").as_bool();
      (predicted ? (actual ? tp : fp) : (actual ? fn : tn)) += 1;
    }
    CHECK(c.at("image_counts").at("tp").as_int64() == static_cast<std::int64_t>(tp));
    CHECK(c.at("image_counts").at("fp").as_int64() == static_cast<std::int64_t>(fp));
    CHECK(tn + fp == 4);  // the good test images
    CHECK(c.at("false_alarm_rate").as_double() == doctest::Approx(static_cast<double>(fp) / 4.0));
    CHECK(c.at("image_recall").as_double() == doctest::Approx(static_cast<double>(tp) / static_cast<double>(tp + fn)));
    if (tp + fp > 0) CHECK(c.at("image_precision").as_double() == doctest::Approx(static_cast<double>(tp) / static_cast<double>(tp + fp)));
    const auto& pc = c.at("pixel_counts");
    const auto ptp = static_cast<double>(pc.at("tp").as_int64()), pfp = static_cast<double>(pc.at("fp").as_int64()),
               pfn = static_cast<double>(pc.at("fn").as_int64());
    CHECK(pc.at("tp").as_int64() + pc.at("fp").as_int64() + pc.at("tn").as_int64() + pc.at("fn").as_int64() == 8 * 32 * 32);
    if (ptp + pfp + pfn > 0) CHECK(c.at("pixel_iou").as_double() == doctest::Approx(ptp / (ptp + pfp + pfn)));
  }

  SUBCASE("bad rates are named") {
    for (const char* bad : {"0", "1", "-0.5", "x"}) {
      const auto b = test::run_tool("focuspatch-eval", "--weights " + weights + " --data " + (tmp / "data").string() + " --false-alarm-rate " + bad +
                                                           " --quiet --out " + (tmp / "bad").string(),
                                    tmp / "log");
      CHECK(b.status == 1);
      CHECK(test::contains(b.output, "option --false-alarm-rate"));
    }
  }
}
