#pragma once
// Every CUDA and cuBLAS call is checked; a failure becomes a focuspatch::Error that says which
// call failed and why, so a tool prints one line instead of crashing or computing on garbage.
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "focuspatch/core/error.hpp"

namespace focuspatch::cuda {

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) fail("cuda: ", what, " failed: ", cudaGetErrorName(status), " (", cudaGetErrorString(status), ")");
}

inline void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    fail("cublas: ", what, " failed: ", cublasGetStatusName(status), " (", cublasGetStatusString(status), ")");
}

// After a kernel launch: catches bad launch configurations at once instead of at the next sync.
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

// Blocks of `threads` that cover `count` items, one per thread.
inline unsigned blocks_for(long long count, int threads) {
  return static_cast<unsigned>((count + threads - 1) / threads);
}

}  // namespace focuspatch::cuda
