#pragma once
// The image-space steps of an anomaly map on the GPU: bilinear upsampling of the patch-grid map to
// the image size and Gaussian smoothing, the device counterparts of upsample_bilinear and
// gaussian_smooth in anomaly/anomaly_map.hpp (PyTorch's interpolate with align_corners=False and
// scipy's gaussian_filter with mode="reflect"), with the same sampling, boundary handling and
// weights. Plain host declarations (no kernels), so host C++ compiled by g++ may include it.
//
// Maps are row-major fp32 planes in device memory; a batch is `count` maps of one size stored one
// after another. Work is enqueued on `stream`. Sizes are checked (focuspatch::Error) before any
// work is enqueued.
#include <cuda_runtime.h>

namespace focuspatch::cuda {

// The widest Gaussian the kernels take: radius int(truncate * sigma + 0.5) <= this (sigma up to
// 100 at scipy's truncate = 4). The one-sided weights travel as a kernel argument, which keeps
// concurrent calls with different sigmas on different streams independent, and the argument must
// stay within the 4 KB every CUDA toolkit accepts.
inline constexpr long long kMaxGaussianRadius = 400;

// out [out_h, out_w] = in [in_h, in_w] resampled as PyTorch's F.interpolate(mode="bilinear",
// align_corners=False) with an output size (edge replicated, no antialias when shrinking). in and
// out must not overlap.
void upsample_bilinear(const float* in, long long in_h, long long in_w, float* out, long long out_h, long long out_w,
                       cudaStream_t stream);
void upsample_bilinear_batch(const float* in, long long count, long long in_h, long long in_w, float* out, long long out_h,
                             long long out_w, cudaStream_t stream);

// out = scipy.ndimage.gaussian_filter(in, sigma, truncate=truncate, mode="reflect") on float32: axis 0
// first into scratch (same size as in, rounded to float as scipy's float32 intermediate is), then
// axis 1 into out. The weights are computed on the host by the CPU code's own functions. sigma <= 1e-15
// copies in to out, as the CPU code does. out may be in; scratch must overlap neither.
void gaussian_smooth(const float* in, long long h, long long w, double sigma, double truncate, float* out, float* scratch,
                     cudaStream_t stream);
void gaussian_smooth_batch(const float* in, long long count, long long h, long long w, double sigma, double truncate, float* out,
                           float* scratch, cudaStream_t stream);

}  // namespace focuspatch::cuda
