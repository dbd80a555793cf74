#pragma once
// What the detector suites share: the tiny random CLIP (32 px, patch 8: a 4 x 4 grid, 2 blocks),
// written once per process and seed, scratch file names that are all removed at exit, and
// keywords set by hand so that no tokenizer is needed.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <system_error>
#include <unistd.h>

#include "focuspatch/anomaly/prompt_bank.hpp"
#include "focuspatch/convert/convert_checkpoint.hpp"
#include "focuspatch/convert/random_clip.hpp"

namespace focuspatch::test {

inline std::string scratch_prefix() { return "focuspatch_test_scratch_" + std::to_string(::getpid()) + "_"; }

// A file in the temporary folder, removed (with the tiny weights) when the test binary exits.
inline std::string scratch_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / (scratch_prefix() + name)).string();
}

struct ScratchCleanup {
  ~ScratchCleanup() {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(std::filesystem::temp_directory_path(), ec))
      if (e.path().filename().string().rfind(scratch_prefix(), 0) == 0) std::filesystem::remove(e.path(), ec);
  }
};
inline ScratchCleanup scratch_cleanup;

inline const std::string& tiny_weights(int seed = 7) {
  static std::map<int, std::string> paths;
  auto& path = paths[seed];
  if (path.empty()) {
    path = scratch_path("tiny_" + std::to_string(seed) + ".fpw");
    write_clip_weights(random_clip_plan(clip_preset("tiny"), static_cast<std::uint64_t>(seed)), ConvertOptions{}, path);
  }
  return path;
}

// Keywords for a model of width D: one normal and two anomaly directions, unit length.
inline KeywordEmbeddings hand_keywords(std::int64_t D) {
  KeywordEmbeddings k;
  k.object = "thing";
  k.names = {"flawless", "scratch", "hole"};
  k.kinds = {KeywordKind::Normal, KeywordKind::Anomaly, KeywordKind::Anomaly};
  k.matrix = FloatTensor({3, D});
  for (std::int64_t r = 0; r < 3; ++r) k.matrix.data()[r * D + r] = 1.0f;
  return k;
}

}  // namespace focuspatch::test
