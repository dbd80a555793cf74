#pragma once
// The libFuzzer side of one target: focuspatch::Error is the library's defined answer to bad input
// and counts as handled; any other exception aborts, so libFuzzer records it as a finding with the
// input that caused it.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <span>
#include <typeinfo>

#include "fuzz_targets.hpp"

namespace focuspatch::fuzz {
template <class Entry>
int run_one(const std::uint8_t* data, std::size_t size, Entry entry) {
  try {
    entry(Bytes(data, size));
  } catch (const Error& e) {
    // handled: a clear message for bad input (FOCUSPATCH_FUZZ_VERBOSE=1 shows it, to check seeds)
    static const bool verbose = std::getenv("FOCUSPATCH_FUZZ_VERBOSE") != nullptr;
    if (verbose) std::fprintf(stderr, "focuspatch::Error: %s\n", e.what());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "focuspatch fuzz: exception other than focuspatch::Error escaped: %s: %s\n", typeid(e).name(),
                 e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "focuspatch fuzz: a non-std exception escaped\n");
    std::abort();
  }
  return 0;
}
}  // namespace focuspatch::fuzz

#define FOCUSPATCH_FUZZ_TARGET(entry)                                                     \
  extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {     \
    return focuspatch::fuzz::run_one(data, size, [](focuspatch::fuzz::Bytes b) { focuspatch::fuzz::entry(b); }); \
  }
