// LayerNorm, one warp per row. A row of CLIP (512..1664 fp32 values, 2..6.5 KB) is read three
// times, the second and third from L1, and written once: the kernel moves ~6 bytes per element
// (4 in, 2 or 4 out), so it is bound by memory bandwidth. Two passes (mean, then the squared
// deviations from it) rather than E[x^2] - E[x]^2, which cancels badly on residual streams whose
// mean is large against their spread.
#include "cuda_check.cuh"
#include "device_types.cuh"
#include "layer_norm.cuh"

namespace focuspatch::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;

__device__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <class Out>
__global__ void layer_norm_kernel(const float* x, long long rows, int width, const float* gamma, const float* beta, float eps,
                                  Out* y) {
  const long long row = static_cast<long long>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;  // whole warps leave together: row is uniform across a warp
  const int lane = threadIdx.x % 32;
  const float* in = x + row * width;
  Out* out = y + row * width;

  float sum = 0.0f;
  for (int c = lane; c < width; c += 32) sum += in[c];
  const float mean = warp_sum(sum) / static_cast<float>(width);
  float squares = 0.0f;
  for (int c = lane; c < width; c += 32) {
    const float d = in[c] - mean;
    squares += d * d;
  }
  const float inv = rsqrtf(warp_sum(squares) / static_cast<float>(width) + eps);
  for (int c = lane; c < width; c += 32) out[c] = from_float<Out>((in[c] - mean) * inv * gamma[c] + beta[c]);
}

}  // namespace

template <class Out>
void layer_norm(const float* x, long long rows, int width, const float* gamma, const float* beta, float eps, Out* y,
                cudaStream_t stream) {
  require(rows >= 0 && width > 0, "cuda layer_norm: bad shape ", rows, " x ", width);
  if (rows == 0) return;
  layer_norm_kernel<Out><<<blocks_for(rows, kWarpsPerBlock), kWarpsPerBlock * 32, 0, stream>>>(x, rows, width, gamma, beta, eps, y);
  check_launch("layer_norm kernel");
}

template void layer_norm<float>(const float*, long long, int, const float*, const float*, float, float*, cudaStream_t);
template void layer_norm<__half>(const float*, long long, int, const float*, const float*, float, __half*, cudaStream_t);
template void layer_norm<__nv_bfloat16>(const float*, long long, int, const float*, const float*, float, __nv_bfloat16*,
                                        cudaStream_t);

}  // namespace focuspatch::cuda
