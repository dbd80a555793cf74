#pragma once
// Multi-head attention on the GPU, the CUDA backend's counterpart of cpu_attention
// (include/focuspatch/backend/cpu/attention.hpp), over the same packed layout. Host code may
// include this header (the tests do, compiled by the host compiler); the kernels are in attention.cu.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace focuspatch::cuda {

// Head sizes attention accepts; those that are a multiple of 16 up to attention_max_tiled_head_dim
// run on the tiled tensor-core kernel, every other one on the generic (one warp per query) kernel.
inline constexpr int attention_max_head_dim = 256;
inline constexpr int attention_max_tiled_head_dim = 128;

// qkv: batch * seq rows, each [q | k | v] with q, k and v heads * head_dim wide (row stride
// 3 * heads * head_dim), head h in columns h * head_dim .. of each part. out: batch * seq rows of
// heads * head_dim, head h at column h * head_dim; it must not overlap qkv.
// Per batch item and head: softmax(q k^T / sqrt(head_dim)) v, scores and softmax in fp32; when
// causal, key j is masked for query i < j; when value_value, q = k = v = the v part (CLIP Surgery's
// value-value attention). Enqueued on `stream`; arguments are checked (focuspatch::Error) before
// any CUDA call. T is __half or __nv_bfloat16.
template <class T>
void attention(const T* qkv, long long batch, long long seq, int heads, int head_dim, bool causal, bool value_value, T* out,
               cudaStream_t stream);

extern template void attention<__half>(const __half*, long long, long long, int, int, bool, bool, __half*, cudaStream_t);
extern template void attention<__nv_bfloat16>(const __nv_bfloat16*, long long, long long, int, int, bool, bool,
                                              __nv_bfloat16*, cudaStream_t);

}  // namespace focuspatch::cuda
