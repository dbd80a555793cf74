#pragma once
#include <cuda_runtime.h>

#include "focuspatch/backend/ops.hpp"

namespace focuspatch::cuda {

// y[r, c] = act(y[r, c] + bias[c]) in place over rows x cols, in fp32; bias may be null. The
// epilogue of linear layers that cuBLASLt cannot fuse: QuickGELU and exact erf GELU (its own GELU
// epilogue is the tanh approximation).
template <class T>
void bias_activation(T* y, long long rows, int cols, const float* bias, Epilogue activation, cudaStream_t stream);

}  // namespace focuspatch::cuda
