#pragma once
// For CUDA tests: whether a GPU can run them, and if not, why. Machines without a GPU (CI) build
// every CUDA test; each case then reports the reason it skipped and passes.
#include <cuda_runtime.h>
#include <doctest/doctest.h>

#include <string>

namespace focuspatch::test {

// Empty when a CUDA device is usable, else the reason it is not.
inline std::string cuda_unavailable_reason() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls in this process are not blamed
    return std::string("no usable CUDA device (") + cudaGetErrorName(status) + ": " + cudaGetErrorString(status) + ")";
  }
  if (count == 0) return "no CUDA device on this machine";
  return {};
}

}  // namespace focuspatch::test

// First statement of a CUDA test case: returns from it with a message when no GPU can run it.
#define FOCUSPATCH_REQUIRE_GPU()                                                      \
  do {                                                                                \
    if (const std::string reason = ::focuspatch::test::cuda_unavailable_reason();     \
        !reason.empty()) {                                                            \
      MESSAGE("skipped, needs a GPU: " << reason);                                    \
      return;                                                                         \
    }                                                                                 \
  } while (0)
