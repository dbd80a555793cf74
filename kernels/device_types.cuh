#pragma once
// The 16-bit types GEMM operands and attention inputs are kept in on the GPU (fp16 or bf16, chosen
// per backend), and their conversions to and from fp32, in which every kernel computes.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "focuspatch/backend/cuda.hpp"

namespace focuspatch::cuda {

using Precision = CudaPrecision;  // the public option, F16 or BF16

__host__ __device__ inline float to_float(float x) { return x; }
__host__ __device__ inline float to_float(__half x) { return __half2float(x); }
__host__ __device__ inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T>
__host__ __device__ inline T from_float(float x);
template <>
__host__ __device__ inline float from_float<float>(float x) { return x; }
template <>
__host__ __device__ inline __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__host__ __device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Calls f with a value of the element type that `precision` names, so a launch function is written
// once as a template and dispatched at run time.
template <class F>
decltype(auto) with_precision(Precision precision, F&& f) {
  if (precision == Precision::BF16) return f(__nv_bfloat16{});
  return f(__half{});
}

}  // namespace focuspatch::cuda
