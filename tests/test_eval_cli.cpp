// focuspatch-eval end to end on a synthesized MVTec-layout dataset with small random weights: the
// reported metrics are recomputed here from the per-image scores it writes, by definition.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <string>

#include "browser_support.hpp"
#include "cli_support.hpp"
#include "focuspatch/eval/synthetic_dataset.hpp"
#include "focuspatch/io/json.hpp"
#include "test_paths.hpp"

using namespace focuspatch;
namespace fs = std::filesystem;

namespace {

// AUROC as the probability that an anomalous image outscores a normal one (ties count half):
// the Mann-Whitney definition, pair by pair.
double pairwise_auroc(const std::vector<double>& anomalous, const std::vector<double>& normal) {
  double wins = 0;
  for (double a : anomalous)
    for (double n : normal) wins += a > n ? 1.0 : a == n ? 0.5 : 0.0;
  return wins / static_cast<double>(anomalous.size() * normal.size());
}

struct Fixture {
  test::TempDir tmp{"test_eval_cli"};
  std::string weights = (tmp / "tiny.fpw").string();
  std::string data = (tmp / "data").string();
  Fixture() {
    SyntheticDatasetOptions o;
    o.image_size = 64;
    o.train_good = 3;
    o.test_good = 2;
    o.test_per_defect = 1;
    o.categories = {"washer", "weave"};
    write_synthetic_dataset(data, o);
    const auto r = test::run_tool("focuspatch-convert", "--random tiny --seed 3 --vocab " + test::shared_vocab_path().string() + " -o " + weights,
                                  tmp / "log");
    REQUIRE(r.status == 0);
  }
};

}  // namespace

TEST_CASE("focuspatch-eval reports metrics that follow from the scores it writes") {
  if (!test::have_shared_vocab()) {
    MESSAGE("skipped: ", test::shared_vocab_path().string(), " is absent");
    return;
  }
  Fixture f;
  const std::string out = (f.tmp / "eval").string();
  const auto r = test::run_tool("focuspatch-eval", "--weights " + f.weights + " --data " + f.data + " --shots 2 --seed 1 --quiet --out " + out,
                                f.tmp / "log");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(r.output.find("| category | images | routed | I-AUROC") != std::string::npos);
  const json::Value res = json::parse(test::read_all(fs::path(out) / "results.json"), "results.json");
  CHECK(res.at("setting").as_string() == "unified");
  std::map<std::string, std::pair<std::vector<double>, std::vector<double>>> scores;  // anomalous, normal
  for (const auto& img : res.at("images").as_array()) {
    auto& s = scores[img.at("category").as_string()];
    (img.at("anomalous").as_bool() ? s.first : s.second).push_back(img.at("score").as_double());
  }
  double mean = 0;
  for (const auto& c : res.at("categories").as_array()) {
    const std::string name = c.at("name").as_string();
    CAPTURE(name);
    CHECK(c.at("test_images").as_int64() == 6);  // 2 good + 1 for each of 4 defects
    CHECK(c.at("anomalous").as_int64() == 4);
    CHECK(c.at("shots").size() == 2);
    CHECK(c.at("image_auroc").as_double() == doctest::Approx(pairwise_auroc(scores[name].first, scores[name].second)).epsilon(1e-12));
    for (const char* key : {"image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro"}) {
      CAPTURE(key);
      CHECK(c.at(key).as_double() >= 0.0);
      CHECK(c.at(key).as_double() <= 1.0);
    }
    mean += c.at("image_auroc").as_double() / 2;
    // Overlays: the default 3 per category of anomalous images and as many normal ones (2 exist),
    // each with its predicted mask (the categories are calibrated leave-one-shot-out or on the
    // training images outside the shots).
    std::size_t overlay_files = 0, mask_files = 0;
    for (const auto& e : fs::directory_iterator(fs::path(out) / "overlays" / name))
      ++(e.path().stem().string().ends_with("_mask") ? mask_files : overlay_files);
    CHECK(overlay_files == 3 + 2);
    CHECK(mask_files == 3 + 2);
  }
  CHECK(res.at("mean").at("image_auroc").as_double() == doctest::Approx(mean).epsilon(1e-12));
  CHECK(fs::exists(fs::path(out) / "results.md"));

  SUBCASE("the per-class setting knows each image's category") {
    const auto pc = test::run_tool("focuspatch-eval", "--weights " + f.weights + " --data " + f.data + " --shots 1 --per-class --quiet --overlays 0 --out " +
                                       out + "_pc",
                                   f.tmp / "log");
    INFO(pc.output);
    REQUIRE(pc.status == 0);
    const json::Value p = json::parse(test::read_all(fs::path(out + "_pc") / "results.json"), "results.json");
    CHECK(p.at("setting").as_string() == "per-class");
    for (const auto& img : p.at("images").as_array()) CHECK(img.at("routed").as_string() == img.at("category").as_string());
  }
}

TEST_CASE("focuspatch-eval refuses datasets it cannot evaluate, naming the file") {
  if (!test::have_shared_vocab()) return;
  Fixture f;
  const std::string base = "--weights " + f.weights + " --quiet --out " + (f.tmp / "o").string();
  fs::create_directories(f.tmp / "empty");
  // A mask of another size than its image.
  const fs::path mask = fs::path(f.data) / "weave/ground_truth/hole/000_mask.png";
  std::vector<std::uint8_t> small(16 * 16, 255);
  write_grey_png(mask.string(), 16, 16, small);
  struct Bad {
    std::string arguments, message;
  };
  const Bad cases[] = {
      {"--data " + (f.tmp / "missing").string(), "missing: the dataset root does not exist"},
      {"--data " + (f.tmp / "empty").string(), "empty: no categories found"},
      {"--data " + f.data + " --shots 2 --shots 3", "--shots is given 2 times"},
      {"--data " + f.data + " --shots=4", "cannot draw 4 few-shot images"},
      {"--data " + f.data + " --layout coco", "coco"},
      {"--data " + f.data + " --shots 2 --categories washer", "000_mask.png"},
      {"--data " + f.data + " --shots 2", "000_mask.png: mask is 16x16 but its image"},
  };
  for (const Bad& bad : cases) {
    CAPTURE(bad.arguments);
    const auto r = test::run_tool("focuspatch-eval", base + " " + bad.arguments, f.tmp / "log");
    INFO(r.output);
    if (bad.arguments.find("--categories washer") != std::string::npos) {
      CHECK(r.status == 0);  // the broken mask belongs to weave, which is left out
      continue;
    }
    CHECK(r.status == 1);
    CHECK(r.output.find(bad.message) != std::string::npos);
  }
}

TEST_CASE("focuspatch-eval --runs: every draw's shots, and mean and sample std that follow from the single runs") {
  if (!test::have_shared_vocab()) {
    MESSAGE("skipped: ", test::shared_vocab_path().string(), " is absent");
    return;
  }
  Fixture f;
  const std::string base = "--weights " + f.weights + " --data " + f.data + " --shots 2 --quiet --overlays 0 --out ";
  const auto r = test::run_tool("focuspatch-eval", base + (f.tmp / "runs").string() + " --seed 5 --runs 2", f.tmp / "log");
  INFO(r.output);
  REQUIRE(r.status == 0);
  const auto single = test::run_tool("focuspatch-eval", base + (f.tmp / "seed6").string() + " --seed 6", f.tmp / "log");
  REQUIRE(single.status == 0);
  const json::Value runs = json::parse(test::read_all(f.tmp / "runs" / "results.json"), "results.json");
  const json::Value six = json::parse(test::read_all(f.tmp / "seed6" / "results.json"), "results.json");
  REQUIRE(runs.at("runs").size() == 2);
  CHECK(runs.at("runs")[0].at("seed").as_int64() == 5);
  CHECK(runs.at("runs")[1].at("seed").as_int64() == 6);
  CHECK(test::contains(test::read_all(f.tmp / "runs" / "results.md"), "2 shot draws (seeds 5..6): mean ± sample standard deviation"));
  const json::Value& summary = runs.at("runs_summary");
  CHECK(summary.at("runs").as_int64() == 2);
  for (std::size_t c = 0; c < 2; ++c) {
    const std::string name = runs.at("categories")[c].at("name").as_string();
    CAPTURE(name);
    // The second draw's shots are those a plain run with seed 6 draws.
    const json::Value& shots6 = runs.at("runs")[1].at("shots").at(name);
    REQUIRE(shots6.size() == 2);
    for (std::size_t i = 0; i < 2; ++i) CHECK(shots6[i].as_string() == six.at("categories")[c].at("shots")[i].as_string());
    for (const char* key : {"image_auroc", "image_ap", "pixel_auroc", "aupro"}) {
      CAPTURE(key);
      const double a = runs.at("categories")[c].at(key).as_double();  // the first draw is the detailed one
      const double b = six.at("categories")[c].at(key).as_double();
      const json::Value& m = summary.at("categories")[c].at("metrics").at(key);
      CHECK(m.at("values")[0].as_double() == doctest::Approx(a).epsilon(1e-12));
      CHECK(m.at("values")[1].as_double() == doctest::Approx(b).epsilon(1e-12));
      CHECK(m.at("mean").as_double() == doctest::Approx((a + b) / 2).epsilon(1e-12));
      // Two values: sample std = |a - b| / sqrt(2).
      CHECK(m.at("std").as_double() == doctest::Approx(std::abs(a - b) / std::sqrt(2.0)).epsilon(1e-9));
    }
  }
  const auto bad = test::run_tool("focuspatch-eval", base + (f.tmp / "bad").string() + " --runs 0", f.tmp / "log");
  CHECK(bad.status == 1);
  CHECK(test::contains(bad.output, "option --runs: 0 is outside 1..1000"));
}

TEST_CASE("focuspatch-eval --layout folder: pixel metrics n/a without masks, and said so") {
  if (!test::have_shared_vocab()) {
    MESSAGE("skipped: ", test::shared_vocab_path().string(), " is absent");
    return;
  }
  Fixture f;
  // The synthetic MVTec tree rearranged as users' folders: weave keeps its masks, washer has none.
  const fs::path root = f.tmp / "folder";
  for (const char* category : {"washer", "weave"}) {
    const fs::path src = fs::path(f.data) / category;
    fs::create_directories(root / category);
    fs::copy(src / "train", root / category / "train", fs::copy_options::recursive);
    for (const auto& kind : fs::directory_iterator(src / "test"))
      fs::copy(kind.path(), root / category / kind.path().filename(), fs::copy_options::recursive);
  }
  fs::copy(fs::path(f.data) / "weave" / "ground_truth", root / "weave" / "ground_truth", fs::copy_options::recursive);
  const std::string out = (f.tmp / "folder_out").string();
  const auto r = test::run_tool("focuspatch-eval", "--weights " + f.weights + " --data " + root.string() +
                                                       " --layout folder --shots 2 --quiet --out " + out,
                                f.tmp / "log");
  INFO(r.output);
  REQUIRE(r.status == 0);
  const json::Value res = json::parse(test::read_all(fs::path(out) / "results.json"), "results.json");
  CHECK(res.at("layout").as_string() == "folder");
  const json::Value& washer = res.at("categories")[0];
  const json::Value& weave = res.at("categories")[1];
  REQUIRE(washer.at("name").as_string() == "washer");
  CHECK(washer.at("test_images").as_int64() == 6);
  CHECK_FALSE(washer.at("pixel_evaluated").as_bool());
  for (const char* key : {"pixel_auroc", "pixel_ap", "pixel_f1_max", "aupro"}) {
    CAPTURE(key);
    CHECK(washer.at(key).is_null());
    CHECK(weave.at(key).is_number());
    // The mean's pixel metrics are weave's alone.
    CHECK(res.at("mean").at(key).as_double() == doctest::Approx(weave.at(key).as_double()).epsilon(1e-12));
  }
  CHECK(washer.at("kinds_without_masks").size() == 4);
  CHECK(res.at("runs_summary").at("categories")[0].at("metrics").at("pixel_auroc").at("mean").is_null());
  const std::string md = test::read_all(fs::path(out) / "results.md");
  CHECK(test::contains(md, "| washer | 6 | "));
  CHECK(test::contains(md, "| n/a | n/a | n/a | n/a |"));
  CHECK(test::contains(md, "washer: pixel metrics skipped"));
  CHECK(test::contains(md, "mean: pixel metrics average the 1 of 2 categories that have them"));
  const std::string page = test::read_all(fs::path(out) / "report.html");
  CHECK(test::contains(page, "pixel metrics skipped: no masks"));
  CHECK(test::contains(page, "<td class=\"num\">n/a</td>"));

  SUBCASE("a mask that matches no image is refused, naming it") {
    test::write_all(root / "weave" / "ground_truth" / "hole" / "999_mask.png", test::read_all(root / "weave" / "ground_truth" / "hole" / "000_mask.png"));
    const auto bad = test::run_tool("focuspatch-eval", "--weights " + f.weights + " --data " + root.string() +
                                                           " --layout folder --shots 2 --quiet --out " + out + "_bad",
                                    f.tmp / "log");
    CHECK(bad.status == 1);
    CHECK(test::contains(bad.output, (root / "weave" / "ground_truth" / "hole" / "999_mask.png").string() + ": mask matches no image"));
  }
}

TEST_CASE("focuspatch-eval report.html opens offline, from a moved folder, with every image") {
  if (!test::have_shared_vocab()) {
    MESSAGE("skipped: ", test::shared_vocab_path().string(), " is absent");
    return;
  }
  const auto browser = test::find_browser();
  if (!browser) {
    MESSAGE(test::browser_missing_message());
    return;
  }
  Fixture f;
  const fs::path out = f.tmp / "eval";
  const auto r = test::run_tool("focuspatch-eval", "--weights " + f.weights + " --data " + f.data + " --shots 2 --overlays 2 --quiet --out " + out.string(),
                                f.tmp / "log");
  INFO(r.output);
  REQUIRE(r.status == 0);
  // Moved elsewhere, the folder still holds everything the page shows.
  const fs::path moved = f.tmp / "moved";
  fs::copy(out, moved, fs::copy_options::recursive);
  fs::remove_all(out);
  const test::PageCheck c = test::check_page_in_browser(*browser, moved / "report.html", f.tmp.path());
  INFO(test::summary(c));
  REQUIRE(c.loaded);
  // Per category 2 anomalous rows (image, ground truth, heat map, predicted mask) and 2 normal rows
  // (image, heat map, predicted mask).
  CHECK(c.images == 2 * (2 * 4 + 2 * 3));
  CHECK(c.broken.empty());
  CHECK(c.errors.empty());
  CHECK(c.external.empty());
}
