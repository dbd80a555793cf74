// Pure data movement: each kernel reads and writes every element once, so all are bound by memory
// bandwidth; rows are walked by blocks and columns by threads, so consecutive threads touch
// consecutive addresses and no per-element division by the width is needed.
#include <algorithm>

#include "cuda_check.cuh"
#include "device_types.cuh"
#include "embedding.cuh"

namespace focuspatch::cuda {
namespace {

constexpr int kThreads = 256;

// Row-walking grids: enough blocks to fill any current GPU, each then strides over rows.
unsigned row_blocks(long long rows) { return static_cast<unsigned>(std::clamp<long long>(rows, 1, 8192)); }

// One block per patch row; a thread per (channel, ky, kx) element. Reads are `patch` consecutive
// floats at a time (a patch row of the image), writes fully consecutive.
template <class T>
__global__ void patchify_kernel(const float* images, long long patch_rows, int size, int patch, T* patches) {
  const int grid = size / patch;
  const int row_len = 3 * patch * patch;
  for (long long r = blockIdx.x; r < patch_rows; r += gridDim.x) {
    const long long b = r / (grid * grid);
    const int cell = static_cast<int>(r % (grid * grid));
    const int gy = cell / grid, gx = cell % grid;
    for (int e = threadIdx.x; e < row_len; e += blockDim.x) {
      const int c = e / (patch * patch), ky = (e / patch) % patch, kx = e % patch;
      const float v = images[((b * 3 + c) * size + gy * patch + ky) * static_cast<long long>(size) + gx * patch + kx];
      patches[r * row_len + e] = from_float<T>(v);
    }
  }
}

__global__ void assemble_kernel(const float* patch_embeds, const float* cls, const float* pos, long long rows, long long seq,
                                int width, float* tokens) {
  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
    const long long b = r / seq, t = r % seq;
    const float* src = t == 0 ? cls : patch_embeds + (b * (seq - 1) + t - 1) * width;
    const float* p = pos + t * width;
    for (int c = threadIdx.x; c < width; c += blockDim.x) tokens[r * width + c] = src[c] + p[c];
  }
}

__global__ void embed_kernel(const int* ids, long long rows, long long seq, int width, const float* table, const float* pos,
                             float* out) {
  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* e = table + static_cast<long long>(ids[r]) * width;
    const float* p = pos + (r % seq) * width;
    for (int c = threadIdx.x; c < width; c += blockDim.x) out[r * width + c] = e[c] + p[c];
  }
}

__global__ void add_positions_kernel(float* x, long long rows, long long seq, int width, const float* pos) {
  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* p = pos + (r % seq) * width;
    for (int c = threadIdx.x; c < width; c += blockDim.x) x[r * width + c] += p[c];
  }
}

__global__ void gather_kernel(const float* x, int width, const long long* rows, long long count, float* out) {
  for (long long i = blockIdx.x; i < count; i += gridDim.x) {
    const float* src = x + rows[i] * width;
    for (int c = threadIdx.x; c < width; c += blockDim.x) out[i * width + c] = src[c];
  }
}

}  // namespace

template <class T>
void patchify(const float* images, long long batch, int size, int patch, T* patches, cudaStream_t stream) {
  require(batch >= 0 && patch > 0 && size >= patch && size % patch == 0, "cuda patchify: image size ", size,
          " is not a positive multiple of the patch size ", patch);
  const long long rows = batch * (size / patch) * (size / patch);
  if (rows == 0) return;
  patchify_kernel<T><<<row_blocks(rows), kThreads, 0, stream>>>(images, rows, size, patch, patches);
  check_launch("patchify kernel");
}

void assemble_vision_tokens(const float* patch_embeds, const float* cls, const float* pos, long long batch, long long seq, int width,
                            float* tokens, cudaStream_t stream) {
  require(batch >= 0 && seq >= 1 && width > 0, "cuda assemble_vision_tokens: bad shape");
  if (batch == 0) return;
  assemble_kernel<<<row_blocks(batch * seq), kThreads, 0, stream>>>(patch_embeds, cls, pos, batch * seq, seq, width, tokens);
  check_launch("assemble_vision_tokens kernel");
}

void embed_tokens(const int* ids, long long rows, long long seq, int width, const float* table, const float* pos, float* out,
                  cudaStream_t stream) {
  require(rows >= 0 && seq >= 1 && width > 0, "cuda embed_tokens: bad shape");
  if (rows == 0) return;
  embed_kernel<<<row_blocks(rows), kThreads, 0, stream>>>(ids, rows, seq, width, table, pos, out);
  check_launch("embed_tokens kernel");
}

void add_positions(float* x, long long rows, long long seq, int width, const float* pos, cudaStream_t stream) {
  require(rows >= 0 && seq >= 1 && width > 0, "cuda add_positions: bad shape");
  if (rows == 0) return;
  add_positions_kernel<<<row_blocks(rows), kThreads, 0, stream>>>(x, rows, seq, width, pos);
  check_launch("add_positions kernel");
}

void gather_rows(const float* x, int width, const long long* rows, long long count, float* out, cudaStream_t stream) {
  require(count >= 0 && width > 0, "cuda gather_rows: bad shape");
  if (count == 0) return;
  gather_kernel<<<row_blocks(count), kThreads, 0, stream>>>(x, width, rows, count, out);
  check_launch("gather_rows kernel");
}

template void patchify<__half>(const float*, long long, int, int, __half*, cudaStream_t);
template void patchify<__nv_bfloat16>(const float*, long long, int, int, __nv_bfloat16*, cudaStream_t);

}  // namespace focuspatch::cuda
