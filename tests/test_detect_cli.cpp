// focuspatch-detect end to end: memory from normal folders, overlays, raw maps readable as .npy,
// results JSON, and a saved memory bank that reproduces the same scores.
#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "browser_support.hpp"
#include "cli_support.hpp"
#include "focuspatch/eval/synthetic_dataset.hpp"
#include "focuspatch/io/image.hpp"
#include "focuspatch/io/json.hpp"
#include "test_paths.hpp"

using namespace focuspatch;
namespace fs = std::filesystem;

TEST_CASE("focuspatch-detect writes overlays, maps and scores, and reuses a saved memory bank") {
  if (!test::have_shared_vocab()) {
    MESSAGE("skipped: ", test::shared_vocab_path().string(), " is absent");
    return;
  }
  test::TempDir tmp("test_detect_cli");
  SyntheticDatasetOptions o;
  o.image_size = 48;
  o.train_good = 2;
  o.test_good = 1;
  o.test_per_defect = 1;
  o.categories = {"capsule", "grain"};
  const fs::path data = tmp / "data";
  write_synthetic_dataset(data, o);
  const std::string weights = (tmp / "tiny.fpw").string();
  REQUIRE(test::run_tool("focuspatch-convert", "--random tiny --vocab " + test::shared_vocab_path().string() + " -o " + weights, tmp / "log").status == 0);

  const std::string normals = " --normal " + (data / "capsule/train/good").string() + " --normal " + (data / "grain/train/good").string();
  const std::string images = " --image " + (data / "capsule/test/hole/000.png").string() + " --image " + (data / "grain/test/good").string();
  const std::string bank = (tmp / "bank.fpw").string();
  auto run = [&](const std::string& extra, const std::string& out) {
    const auto r = test::run_tool("focuspatch-detect", "--weights " + weights + images + " --memory " + bank + " --out " + out + extra, tmp / "log");
    INFO(r.output);
    REQUIRE(r.status == 0);
    return json::parse(test::read_all(fs::path(out) / "results.json"), "results.json");
  };
  const json::Value first = run(normals, (tmp / "a").string());
  REQUIRE(fs::exists(bank));
  // report.html shows both images, their heat maps and predicted masks (2 shots per category:
  // calibrated leave-one-shot-out) in a headless browser (skipped without one).
  if (const auto browser = test::find_browser()) {
    const test::PageCheck page = test::check_page_in_browser(*browser, tmp / "a" / "report.html", tmp.path());
    INFO(test::summary(page));
    REQUIRE(page.loaded);
    CHECK(page.images == 2 * 3);
    CHECK(page.broken.empty());
    CHECK(page.errors.empty());
    CHECK(page.external.empty());
  } else {
    MESSAGE(test::browser_missing_message());
  }
  const auto& list = first.at("images");
  REQUIRE(list.size() == 2);
  CHECK(list[0].at("category").as_string() == "capsule");  // routed from the normal folders' names
  CHECK(list[1].at("category").as_string() == "grain");
  for (const auto& item : list.as_array()) {
    CHECK(item.at("top_keywords").size() == 3);
    const Image overlay = load_image(item.at("overlay").as_string());
    CHECK(overlay.width == 48);
    CHECK(overlay.height == 48);
    // The raw map: a version 1.0 .npy header declaring float32 [48, 48], then the values.
    const std::string npy = test::read_all(item.at("map").as_string());
    REQUIRE(npy.size() > 10);
    CHECK(npy.compare(0, 6, "\x93NUMPY") == 0);
    const std::size_t header = static_cast<unsigned char>(npy[8]) | static_cast<std::size_t>(static_cast<unsigned char>(npy[9])) << 8;
    CHECK((10 + header) % 64 == 0);
    CHECK(npy.find("'descr': '<f4'") != std::string::npos);
    CHECK(npy.find("'shape': (48,48)") != std::string::npos);
    CHECK(npy.size() == 10 + header + 48 * 48 * 4);
  }
  // Second run: the memory bank comes from the file; same scores without the normal images.
  const json::Value second = run("", (tmp / "b").string());
  for (std::size_t i = 0; i < 2; ++i) CHECK(second.at("images")[i].at("score").as_double() == first.at("images")[i].at("score").as_double());

  SUBCASE("bad input is named") {
    fs::create_directories(tmp / "empty");
    test::write_all(tmp / "broken.png", "\x89PNG\r\n\x1a\n not really");
    const std::string base = "--weights " + weights + " --out " + (tmp / "c").string();
    struct Bad {
      std::string arguments, message;
    };
    const Bad cases[] = {
        {base + normals, "no --image"},
        {base + images, "no --normal images"},
        {base + normals + " --image " + (tmp / "empty").string(), "holds no images"},
        {base + normals + " --image " + (tmp / "broken.png").string(), "broken.png"},
        {base + " --normal " + (tmp / "empty").string() + images, "holds no images"},
    };
    for (const Bad& bad : cases) {
      CAPTURE(bad.arguments);
      const auto r = test::run_tool("focuspatch-detect", bad.arguments, tmp / "log");
      INFO(r.output);
      CHECK(r.status == 1);
      CHECK(r.output.find(bad.message) != std::string::npos);
    }
  }
}
