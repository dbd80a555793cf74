// --device and --precision in the programs: refused with a reason where they cannot work, and on a
// GPU the same outputs as the CPU (cosine) through focuspatch-embed and focuspatch-eval.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "cli_support.hpp"
#include "eval_pair_support.hpp"
#include "cuda_test_support.hpp"
#include "focuspatch/eval/synthetic_dataset.hpp"
#include "focuspatch/io/json.hpp"
#include "test_paths.hpp"

using namespace focuspatch;
namespace fs = std::filesystem;

namespace {

struct Fixture {
  test::TempDir tmp{"test_cuda_cli"};
  std::string weights = (tmp / "model.fpw").string();
  std::string image = (test::fixtures_dir() / "images" / "rgb_37x53.png").string();
  Fixture() {
    const auto r = test::run_tool("focuspatch-convert", "--random tiny --seed 4 -o " + weights, tmp / "log");
    INFO(r.output);
    REQUIRE(r.status == 0);
  }
};

std::vector<double> numbers(const json::Value& array) {
  std::vector<double> out;
  for (const auto& v : array.as_array()) out.push_back(v.as_double());
  return out;
}

double cosine(const std::vector<double>& a, const std::vector<double>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (std::size_t i = 0; i < a.size(); ++i) ab += a[i] * b[i], aa += a[i] * a[i], bb += b[i] * b[i];
  return ab / std::sqrt(aa * bb);
}

}  // namespace

TEST_CASE("--device and --precision are checked before anything runs") {
  Fixture f;
  const std::pair<std::string, std::string> cases[] = {
      {"--device gpu", "'gpu' is neither cpu nor cuda[:N]"},
      {"--device cuda:x", "does not name a GPU number"},
      {"--device cuda:", "does not name a GPU number"},
      {"--precision f16", "is neither f32 nor bf16 (the values for --device cpu)"},
  };
  for (const auto& [arguments, message] : cases) {
    CAPTURE(arguments);
    const auto r = test::run_tool("focuspatch-embed", "--weights " + f.weights + " --image " + f.image + " " + arguments, f.tmp / "log");
    CHECK(r.status == 1);
    CHECK(test::contains(r.output, message));
  }
}

TEST_CASE("--device cuda without a GPU says why; with one it gives the CPU's embeddings") {
  Fixture f;
  const std::string common = "--weights " + f.weights + " --image " + f.image + " --json --out ";
  if (const std::string reason = test::cuda_unavailable_reason(); !reason.empty()) {
    const auto r = test::run_tool("focuspatch-embed", common + (f.tmp / "gpu.json").string() + " --device cuda", f.tmp / "log");
    CHECK(r.status == 1);
    CHECK(test::contains(r.output, "cuda backend: no"));
    MESSAGE("no GPU here (" << reason << "): checked the refusal only");
    return;
  }
  REQUIRE(test::run_tool("focuspatch-embed", common + (f.tmp / "cpu.json").string(), f.tmp / "log").status == 0);
  const json::Value cpu = json::parse(test::read_all(f.tmp / "cpu.json"), "cpu.json");
  for (const char* precision : {"f16", "bf16"}) {
    CAPTURE(precision);
    const auto r = test::run_tool("focuspatch-embed", common + (f.tmp / "gpu.json").string() + " --device cuda --precision " + precision,
                                  f.tmp / "log");
    INFO(r.output);
    REQUIRE(r.status == 0);
    const json::Value gpu = json::parse(test::read_all(f.tmp / "gpu.json"), "gpu.json");
    // bf16 keeps 8 mantissa bits against fp16's 11: a looser bound, still a clear agreement.
    const double bound = std::string(precision) == "f16" ? 0.9999 : 0.999;
    CHECK(cosine(numbers(cpu.at("image_embeddings")[0]), numbers(gpu.at("image_embeddings")[0])) >= bound);
    const auto& cpu_tokens = cpu.at("patch_tokens")[0];
    const auto& gpu_tokens = gpu.at("patch_tokens")[0];
    REQUIRE(cpu_tokens.size() == gpu_tokens.size());
    for (std::size_t t = 0; t < cpu_tokens.size(); ++t) CHECK(cosine(numbers(cpu_tokens[t]), numbers(gpu_tokens[t])) >= bound);
  }
}

TEST_CASE("focuspatch-eval --device cuda reports the GPU and the CPU's metrics") {
  FOCUSPATCH_REQUIRE_GPU();
  if (!test::have_shared_vocab()) {
    MESSAGE("skipped: ", test::shared_vocab_path().string(), " is absent (the default prompt bank needs the tokenizer)");
    return;
  }
  SyntheticDatasetOptions o;
  o.image_size = 96;
  o.train_good = 2;
  o.test_good = 2;
  o.test_per_defect = 1;
  o.categories = {"washer", "weave"};
  const auto results = test::eval_pair("test_cuda_cli_eval", o, {"--device cpu", "--device cuda"});
  CHECK(results[0].at("device").as_string().rfind("cpu f32 ", 0) == 0);
  CHECK(results[1].at("device").as_string().rfind("cuda ", 0) == 0);
  // AUROCs are fractions here; the bound on pixel ranking is 0.001.
  CHECK(std::fabs(results[0].at("mean").at("pixel_auroc").as_double() - results[1].at("mean").at("pixel_auroc").as_double()) <= 0.001);
  CHECK(std::fabs(results[0].at("mean").at("image_auroc").as_double() - results[1].at("mean").at("image_auroc").as_double()) <= 0.001);
}

TEST_CASE("--device cuda computes in bf16 for a bf16 weight file unless told otherwise") {
  FOCUSPATCH_REQUIRE_GPU();
  if (!test::have_shared_vocab()) {
    MESSAGE("skipped: ", test::shared_vocab_path().string(), " is absent (the default prompt bank needs the tokenizer)");
    return;
  }
  test::TempDir tmp("test_cuda_cli_bf16");
  const std::string weights = (tmp / "tiny_bf16.fpw").string();
  REQUIRE(test::run_tool("focuspatch-convert",
                         "--random tiny --seed 5 --dtype bf16 --vocab " + test::shared_vocab_path().string() + " -o " + weights, tmp / "log")
              .status == 0);
  const std::string image = (test::fixtures_dir() / "images" / "rgb_37x53.png").string();
  for (const auto& [option, expected] : {std::pair{std::string(""), std::string(" bf16")}, std::pair{std::string(" --precision f16"),
                                                                                                  std::string(" f16")}}) {
    CAPTURE(option);
    const std::string out = (tmp / "out").string();
    const auto r = test::run_tool("focuspatch-detect", "--weights " + weights + " --normal part=" + image + " --image " + image +
                                                           " --device cuda --out " + out + option,
                                  tmp / "log");
    INFO(r.output);
    REQUIRE(r.status == 0);
    const std::string device = json::parse(test::read_all(fs::path(out) / "results.json"), "results.json").at("device").as_string();
    CHECK(device.size() > expected.size());
    CHECK(device.substr(device.size() - expected.size()) == expected);
  }
}
