#pragma once
#include <cuda_runtime.h>

namespace focuspatch::cuda {

// y[r] = (x[r] - mean) / sqrt(var + eps) * gamma + beta over rows of `width` fp32 values; Out is
// float (y may be x: each value is rewritten by the lane that read it) or a 16-bit operand type.
template <class Out>
void layer_norm(const float* x, long long rows, int width, const float* gamma, const float* beta, float eps, Out* y,
                cudaStream_t stream);

}  // namespace focuspatch::cuda
