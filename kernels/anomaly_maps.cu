// Bilinear upsampling and separable Gaussian smoothing of anomaly maps.
//
// Cost: these maps are small (a 14x14 to 37x37 patch grid upsampled to e.g. 224x224 = 50K pixels,
// 200 KB), so both kernels are bound by memory traffic and launch latency, not arithmetic.
// Upsampling: per output pixel 4 loads of an input plane that stays in L1/L2 (a few KB), ~30
// double-precision operations for the taps and the blend, 1 store: DRAM traffic is the output
// written once. Gaussian, radius r: per pixel and pass 2r + 1 loads and ~2r double additions and
// r multiplications (sigma 4: r = 16, 50K pixels x 33 taps x 2 passes = 3.3M loads, ~5M FP64
// operations), the loads hitting L1/L2 since neighbouring threads share taps. Pass 0 (along
// columns) reads each tap as a coalesced row segment; pass 1 (along rows) reads consecutive
// addresses per warp. DRAM traffic is about one read and one write of the map per pass. A shared
// memory tile would save L1 traffic only, which does not matter at these sizes; one thread per
// output pixel keeps the correspondence with the CPU loops plain.
//
// Arithmetic is done in the CPU code's order and precision (double accumulation, float results),
// through _rn intrinsics so nvcc cannot fuse a multiply-add and round differently; the Gaussian
// weights come from the CPU code's own gaussian_weights, passed as a kernel argument.
#include "anomaly_maps.cuh"

#include <climits>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cuda_check.cuh"
#include "focuspatch/anomaly/anomaly_map.hpp"
#include "focuspatch/core/error.hpp"

namespace focuspatch::cuda {
namespace {

constexpr int kThreads = 256;
// Enough threads to fill any current GPU; grid-stride loops cover larger maps.
constexpr long long kMaxBlocks = 1 << 16;

unsigned grid_for(long long total) {
  const long long blocks = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

// count x h x w elements, refusing empty sizes and 64-bit overflow.
long long checked_elements(const char* what, const char* which, long long count, long long h, long long w) {
  require(count > 0, what, ": the batch holds no maps (", count, ")");
  require(h > 0 && w > 0, what, ": ", which, " size ", h, "x", w, " is empty");
  require(h <= LLONG_MAX / w && count <= LLONG_MAX / (h * w), what, ": ", count, " maps of ", h, "x", w,
          " overflow a 64-bit element count");
  return count * h * w;
}

// The two source samples of one output coordinate along one axis: detail::linear_taps
// (anomaly_map.hpp) for a single index, with the same float and double roundings.
struct LinearTap {
  long long i0, i1;
  float w0, w1;
};

__device__ LinearTap linear_tap(long long in_size, long long out_size, long long d) {
  if (in_size == out_size) return {d, d, 1.0f, 0.0f};  // PyTorch copies an axis whose size does not change
  const double scale = static_cast<double>(__fdiv_rn(__ll2float_rn(in_size), __ll2float_rn(out_size)));
  const double src = fmax(__dadd_rn(__dmul_rn(scale, __dadd_rn(__ll2double_rn(d), 0.5)), -0.5), 0.0);
  long long i0 = static_cast<long long>(src);
  // Never true for a valid scale (src < in_size - 0.5); keeps a rounding surprise from reading out of bounds.
  if (i0 > in_size - 1) i0 = in_size - 1;
  const float lambda1 = __double2float_rn(fmin(__dsub_rn(src, __ll2double_rn(i0)), 1.0));
  return {i0, i0 + (i0 < in_size - 1 ? 1 : 0), __fsub_rn(1.0f, lambda1), lambda1};
}

__global__ void upsample_bilinear_kernel(const float* __restrict__ in, long long in_h, long long in_w, float* __restrict__ out,
                                         long long out_h, long long out_w, long long total) {
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const long long x = idx % out_w;
    const long long rest = idx / out_w;
    const long long y = rest % out_h;
    const long long map = rest / out_h;
    const LinearTap ty = linear_tap(in_h, out_h, y);
    const LinearTap tx = linear_tap(in_w, out_w, x);
    const float* plane = in + map * in_h * in_w;
    const float* r0 = plane + ty.i0 * in_w;
    const float* r1 = plane + ty.i1 * in_w;
    // Products of two floats are exact in double; each sum rounds once, as in the CPU code.
    const double top = __dadd_rn(__dmul_rn(static_cast<double>(tx.w0), static_cast<double>(r0[tx.i0])),
                                 __dmul_rn(static_cast<double>(tx.w1), static_cast<double>(r0[tx.i1])));
    const double bottom = __dadd_rn(__dmul_rn(static_cast<double>(tx.w0), static_cast<double>(r1[tx.i0])),
                                    __dmul_rn(static_cast<double>(tx.w1), static_cast<double>(r1[tx.i1])));
    const double blended = __dadd_rn(__dmul_rn(static_cast<double>(ty.w0), top), __dmul_rn(static_cast<double>(ty.w1), bottom));
    out[idx] = __double2float_rn(blended);
  }
}

// weights[j] is the Gaussian weight at offset +-j (the kernel is symmetric), j = 0..radius.
struct OneSidedWeights {
  double weights[kMaxGaussianRadius + 1];
};
static_assert(sizeof(OneSidedWeights) + 128 <= 4096, "the Gaussian weights must fit a 4 KB kernel argument list");

// scipy's "reflect" extension: detail::reflect_index (periodic with period 2n, so kernels wider
// than the map reflect repeatedly).
__device__ long long reflect_index(long long i, long long n) {
  if (i >= 0 && i < n) return i;
  const long long period = 2 * n;
  long long m = i % period;
  if (m < 0) m += period;
  return m < n ? m : period - 1 - m;
}

// One pass of detail::correlate_lines over every line along one axis of a batch of h x w maps:
// axis 0 correlates down columns (neighbours w apart), axis 1 along rows (neighbours adjacent).
// Same order as the CPU: centre tap first, then (right + left) * weight for j = 1..radius.
__global__ void correlate_axis_kernel(const float* __restrict__ in, float* __restrict__ out, long long total, long long h,
                                      long long w, bool along_columns, int radius,
                                      const __grid_constant__ OneSidedWeights taps) {
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const long long x = idx % w;
    const long long y = (idx / w) % h;
    const long long pos = along_columns ? y : x;
    const long long length = along_columns ? h : w;
    const long long step = along_columns ? w : 1;
    const float* line = in + (idx - pos * step);
    double acc = __dmul_rn(static_cast<double>(line[pos * step]), taps.weights[0]);
    for (int j = 1; j <= radius; ++j) {
      const double right = line[reflect_index(pos + j, length) * step];
      const double left = line[reflect_index(pos - j, length) * step];
      acc = __dadd_rn(acc, __dmul_rn(__dadd_rn(right, left), taps.weights[j]));
    }
    out[idx] = __double2float_rn(acc);
  }
}

}  // namespace

void upsample_bilinear_batch(const float* in, long long count, long long in_h, long long in_w, float* out, long long out_h,
                             long long out_w, cudaStream_t stream) {
  const char* what = "upsample_bilinear";
  checked_elements(what, "input", count, in_h, in_w);
  const long long total = checked_elements(what, "output", count, out_h, out_w);
  require(in != nullptr && out != nullptr, what, ": a device pointer is null");
  upsample_bilinear_kernel<<<grid_for(total), kThreads, 0, stream>>>(in, in_h, in_w, out, out_h, out_w, total);
  check_launch("upsample_bilinear_kernel");
}

void upsample_bilinear(const float* in, long long in_h, long long in_w, float* out, long long out_h, long long out_w,
                       cudaStream_t stream) {
  upsample_bilinear_batch(in, 1, in_h, in_w, out, out_h, out_w, stream);
}

void gaussian_smooth_batch(const float* in, long long count, long long h, long long w, double sigma, double truncate, float* out,
                           float* scratch, cudaStream_t stream) {
  const char* what = "gaussian_smooth";
  const long long total = checked_elements(what, "map", count, h, w);
  require(std::isfinite(sigma) && sigma >= 0.0, what, ": sigma must be a finite value >= 0, got ", sigma);
  require(std::isfinite(truncate) && truncate > 0.0, what, ": truncate must be > 0, got ", truncate);
  require(in != nullptr && out != nullptr, what, ": a device pointer is null");
  if (sigma <= 1e-15) {  // as the CPU code (and scipy): no smoothing
    if (out != in)
      check(cudaMemcpyAsync(out, in, static_cast<std::size_t>(total) * sizeof(float), cudaMemcpyDeviceToDevice, stream),
            "cudaMemcpyAsync (gaussian_smooth with sigma 0)");
    return;
  }
  // Checked before gaussian_radius converts to an integer, which would overflow for a huge sigma.
  require(truncate * sigma + 0.5 < static_cast<double>(kMaxGaussianRadius + 1), what, ": sigma ", sigma, " with truncate ",
          truncate, " needs a kernel radius above the ", kMaxGaussianRadius, " this GPU implementation supports");
  require(scratch != nullptr, what, ": the scratch pointer is null");
  require(scratch != in && scratch != out, what, ": scratch must be a buffer of its own, not the input or output");
  const std::int64_t radius = gaussian_radius(sigma, truncate);
  const std::vector<double> full = detail::gaussian_weights(sigma, radius);
  OneSidedWeights taps{};
  for (std::int64_t j = 0; j <= radius; ++j) taps.weights[j] = full[static_cast<std::size_t>(radius + j)];
  const unsigned grid = grid_for(total);
  correlate_axis_kernel<<<grid, kThreads, 0, stream>>>(in, scratch, total, h, w, true, static_cast<int>(radius), taps);
  check_launch("correlate_axis_kernel (axis 0)");
  correlate_axis_kernel<<<grid, kThreads, 0, stream>>>(scratch, out, total, h, w, false, static_cast<int>(radius), taps);
  check_launch("correlate_axis_kernel (axis 1)");
}

void gaussian_smooth(const float* in, long long h, long long w, double sigma, double truncate, float* out, float* scratch,
                     cudaStream_t stream) {
  gaussian_smooth_batch(in, 1, h, w, sigma, truncate, out, scratch, stream);
}

}  // namespace focuspatch::cuda
