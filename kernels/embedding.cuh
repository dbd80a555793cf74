#pragma once
// The element-wise ops that build and move token rows: patch extraction, class token and position
// embeddings, token lookup, row gathers. All row-major.
#include <cuda_runtime.h>

namespace focuspatch::cuda {

// images [batch, 3, size, size] -> patches [batch * grid^2, 3 * patch^2], each row a flattened
// conv kernel (channel, ky, kx), so the patch embedding is one matrix product.
template <class T>
void patchify(const float* images, long long batch, int size, int patch, T* patches, cudaStream_t stream);

// tokens[b, 0] = cls + pos[0]; tokens[b, t] = patch_embeds[b, t - 1] + pos[t] (width-wide rows).
void assemble_vision_tokens(const float* patch_embeds, const float* cls, const float* pos, long long batch, long long seq, int width,
                            float* tokens, cudaStream_t stream);

// out[r] = table[ids[r]] + pos[r % seq]; ids in device memory, already range-checked.
void embed_tokens(const int* ids, long long rows, long long seq, int width, const float* table, const float* pos, float* out,
                  cudaStream_t stream);

// x[r] += pos[r % seq].
void add_positions(float* x, long long rows, long long seq, int width, const float* pos, cudaStream_t stream);

// out[i] = x[rows[i]]; rows in device memory.
void gather_rows(const float* x, int width, const long long* rows, long long count, float* out, cudaStream_t stream);

}  // namespace focuspatch::cuda
