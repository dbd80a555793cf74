#pragma once
// Where tests find committed fixtures and the shared material beside the project.
#include <filesystem>
#include <string>

namespace focuspatch::test {

inline std::filesystem::path fixtures_dir() { return FOCUSPATCH_FIXTURES_DIR; }

// CLIP's real BPE vocabulary lives in ../shared/clip beside the project; tests that need it skip
// when it is absent rather than fail.
inline std::filesystem::path shared_vocab_path() {
  return std::filesystem::path(FOCUSPATCH_SHARED_DIR) / "clip" / "bpe_simple_vocab_16e6.txt.gz";
}
inline bool have_shared_vocab() { return std::filesystem::exists(shared_vocab_path()); }

}  // namespace focuspatch::test
