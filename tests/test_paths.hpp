#pragma once
// Where tests find committed fixtures and the shared material beside the project.
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "focuspatch/core/error.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace focuspatch::test {

inline std::filesystem::path fixtures_dir() { return FOCUSPATCH_FIXTURES_DIR; }

// A checkpoint-reader fixture (tests/fixtures/readers, made by gen_reader_fixtures.py).
inline std::string reader_fixture(const std::string& name) { return (fixtures_dir() / "readers" / name).string(); }

// A file's bytes, for tests that corrupt them before parsing.
inline std::vector<std::byte> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> chars{std::istreambuf_iterator<char>(in), {}};
  std::vector<std::byte> out(chars.size());
  if (!chars.empty()) std::memcpy(out.data(), chars.data(), chars.size());
  return out;
}

// CLIP's real BPE vocabulary lives in ../shared/clip beside the project; tests that need it skip
// when it is absent rather than fail.
inline std::filesystem::path shared_vocab_path() {
  return std::filesystem::path(FOCUSPATCH_SHARED_DIR) / "clip" / "bpe_simple_vocab_16e6.txt.gz";
}
inline bool have_shared_vocab() { return std::filesystem::exists(shared_vocab_path()); }

// Error text, or "" when f does not throw focuspatch::Error.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// OpenMP threads for what follows (kernels that split work by thread count are tested at 1 and 2).
inline void set_threads(int threads) {
#ifdef _OPENMP
  omp_set_num_threads(threads);
#else
  (void)threads;
#endif
}

}  // namespace focuspatch::test
