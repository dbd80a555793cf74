#pragma once
// Nearest-neighbour search of query patches in the few-shot memory of normal patches, on the GPU:
// the device counterpart of MemoryBank::nearest_distances (anomaly/memory_bank.hpp) for one layer.
// Plain host declarations (no kernels), so host C++ compiled by g++ may include it.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>

namespace focuspatch::cuda {

// Floats of scratch nearest_cosine_distances needs: one similarity block of query_rows x
// block_rows, however many memory rows are searched (a block never holds more rows than that).
std::size_t nearest_cosine_scratch_floats(long long query_rows, long long block_rows);

// distances[q] = clamp(1 - max_m dot(queries[q], memory[m]), 0, 2) for row-major queries
// [query_rows, dim] and memory [memory_rows, dim] whose rows the caller has L2-normalised (the
// clamp against rounding is MemoryBank's). The dot products are cuBLAS fp32 GEMMs with
// CUBLAS_COMPUTE_32F_PEDANTIC, so neither TF32 nor an emulation mode is used whatever the handle's
// math mode or the environment says: distances near 0 (a patch like a normal one) need fp32.
// Memory is searched block_rows rows at a time, each block's similarities going through
// `scratch` (nearest_cosine_scratch_floats(query_rows, block_rows) floats) and folded into the
// running maximum, which is kept in `distances` until the last block turns it into distances.
// A NaN similarity makes that query's distance NaN (never silently dropped by the maximum).
// All pointers are device memory; distances must not overlap scratch or the inputs. The work is
// enqueued on `stream`; the handle's stream and pointer mode are restored before returning.
// Sizes are checked (focuspatch::Error): all counts > 0, and the GEMM sizes within cuBLAS's int.
void nearest_cosine_distances(cublasHandle_t handle, const float* queries, long long query_rows, const float* memory,
                              long long memory_rows, long long dim, float* distances, float* scratch, long long block_rows,
                              cudaStream_t stream);

// Scales each of `count` rows of width `dim` to unit L2 norm in place, as MemoryBank does with query
// patches: the squared norm summed in double, each value multiplied by 1 / sqrt(norm) in double and
// rounded to float. A row that is all zeros or not finite has no direction: MemoryBank refuses it;
// here it is set to NaN (so every distance computed from it is NaN) and, when degenerate_rows is
// given (a device int the caller zeroed), counted there, so the caller can fail with a message.
void normalize_rows(float* rows, long long count, long long dim, cudaStream_t stream, int* degenerate_rows = nullptr);

}  // namespace focuspatch::cuda
