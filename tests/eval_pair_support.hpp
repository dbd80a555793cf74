#pragma once
// Two focuspatch-eval runs that must agree (two precisions, two devices): the same random ViT-B/16
// weights and synthetic data, one option string per run; returns each run's results.json.
#include <doctest/doctest.h>

#include <array>
#include <filesystem>
#include <string>

#include "cli_support.hpp"
#include "focuspatch/eval/synthetic_dataset.hpp"
#include "focuspatch/io/json.hpp"
#include "test_paths.hpp"

namespace focuspatch::test {

inline std::array<json::Value, 2> eval_pair(const std::string& tag, const SyntheticDatasetOptions& data,
                                            const std::array<std::string, 2>& run_options) {
  TempDir tmp(tag);
  const std::string weights = (tmp / "b16.fpw").string();
  REQUIRE(run_tool("focuspatch-convert", "--random ViT-B/16 --seed 3 --vocab " + shared_vocab_path().string() + " -o " + weights, tmp / "log")
              .status == 0);
  write_synthetic_dataset((tmp / "data").string(), data);
  std::array<json::Value, 2> results;
  for (std::size_t i = 0; i < 2; ++i) {
    const std::string out = (tmp / ("run" + std::to_string(i))).string();
    const auto r = run_tool("focuspatch-eval", "--weights " + weights + " --data " + (tmp / "data").string() + " --shots 2 --seed 1 --quiet " +
                                                   run_options[i] + " --out " + out,
                            tmp / "log");
    INFO(r.output);
    REQUIRE(r.status == 0);
    results[i] = json::parse(read_all(std::filesystem::path(out) / "results.json"), "results.json");
  }
  return results;
}

}  // namespace focuspatch::test
