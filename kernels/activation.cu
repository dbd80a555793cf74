// Bias and activation over a matrix product's output, in place: 2 x 2 bytes per element moved for
// a 16-bit output (4 x 2 for fp32) and ~20 flops, so bandwidth-bound. For ViT-B/16 at batch 64 the
// MLP hidden is 12608 x 3072: 155 MB per layer, ~46 us at the H100's data-sheet 3.35 TB/s (arithmetic).
#include <algorithm>

#include "activation.cuh"
#include "cuda_check.cuh"
#include "device_types.cuh"

namespace focuspatch::cuda {
namespace {

__device__ float activate(float v, Epilogue activation) {
  switch (activation) {
    case Epilogue::QuickGelu: return v / (1.0f + __expf(-1.702f * v));
    case Epilogue::Gelu: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case Epilogue::None: break;
  }
  return v;
}

// Blocks stride over rows and threads over a row's columns: no division per element.
template <class T>
__global__ void bias_activation_kernel(T* y, long long rows, int cols, const float* bias, Epilogue activation) {
  for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
    T* row = y + r * cols;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
      float v = to_float(row[c]);
      if (bias) v += bias[c];
      row[c] = from_float<T>(activate(v, activation));
    }
  }
}

}  // namespace

template <class T>
void bias_activation(T* y, long long rows, int cols, const float* bias, Epilogue activation, cudaStream_t stream) {
  require(rows >= 0 && cols > 0, "cuda bias_activation: bad shape ", rows, " x ", cols);
  if (rows == 0 || (!bias && activation == Epilogue::None)) return;
  constexpr int threads = 256;
  // Enough blocks to fill any current GPU several times over; each then walks several rows.
  const auto blocks = static_cast<unsigned>(std::min<long long>(rows, 8192));
  bias_activation_kernel<T><<<blocks, threads, 0, stream>>>(y, rows, cols, bias, activation);
  check_launch("bias_activation kernel");
}

template void bias_activation<float>(float*, long long, int, const float*, Epilogue, cudaStream_t);
template void bias_activation<__half>(__half*, long long, int, const float*, Epilogue, cudaStream_t);
template void bias_activation<__nv_bfloat16>(__nv_bfloat16*, long long, int, const float*, Epilogue, cudaStream_t);

}  // namespace focuspatch::cuda
