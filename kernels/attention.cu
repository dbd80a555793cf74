// Multi-head attention, flash-attention style: per (batch, head) softmax(q k^T / sqrt(d)) v without
// ever materialising the seq x seq scores in global memory.
//
// Tiled kernel (head_dim d a multiple of 16, at most 128; 16-byte aligned qkv):
//   One thread block of 4 warps takes 64 queries of one (batch, head); warp w owns queries
//   16w .. 16w + 15. The block walks the keys in tiles of 64 (causal: only up to the tile holding its
//   last query). Per key tile:
//     1. all 128 threads stage the K and V tiles (64 x d each, 16-bit) in shared memory, rows past
//        seq as zeros (a padded V row must be 0, not garbage, since 0 * NaN = NaN);
//     2. each warp computes its S = Q K^T (16 x 64, fp32) with wmma 16x16x16 from Q fragments that
//        stay in registers for the whole kernel, and stores S to its own shared slice;
//     3. lanes 2r and 2r + 1 own query row r of the warp (32 key columns each): masked keys (past seq,
//        or after the query when causal) become -inf before the max, then the running max m and sum
//        l are updated (online softmax, in fp32, base-2 exponent with log2(e) / sqrt(d) folded into
//        the scale), P = exp2(s - m) is written to shared memory as 16-bit for the tensor cores, and
//        the row of the output accumulator is rescaled by exp2(m_old - m_new);
//     4. each warp adds P V (16 x 64 times 64 x d) to its output accumulator with wmma.
//   The output accumulator O (16 x d fp32 per warp) lives in shared memory, not in wmma fragments:
//   the element-to-row mapping of an accumulator fragment is unspecified, and step 3 must scale
//   whole rows. At the end the owning lanes divide by l and write rows < seq (padded query rows,
//   which see zero q and so finite scores, are never written). A row always has key 0 visible, so l
//   is at least 1 once key 0 is seen (its own maximum gives exp2(0) = 1); the -inf guards only keep
//   a fully masked tile from producing inf - inf.
//   Shared memory per block (16-bit T, rows padded by 8 elements or 4 floats so that consecutive rows
//   start in different banks and every wmma pointer stays 32-byte aligned):
//     Q 64 x (d+8) x 2 + K, V 2 x 64 x (d+8) x 2 + S 4 x 16 x 68 x 4 + P 4 x 16 x 72 x 2 + O 4 x 16 x (d+4) x 4
//     = 30 KB + 640 bytes x d: 40 KB at d = 16, 70 KB at d = 64, 80 KB at d = 80, 110 KB at d = 128
//   (above the 48 KB default from d = 48 on, so every launch opts in; A100 allows 163 KB, H100 227 KB).
//   Work per (query tile, key tile): 2 x 64 x 64 x d FLOPs for S and as many for P V (1 MFLOP at
//   d = 64) and 4096 exponentials, against 2 x 64 x d x 2 bytes of K and V read (16 KB at d = 64,
//   mostly from L2: every query tile of a head reads the same keys): 64 FLOPs per byte.
//
// Generic kernel (any head_dim 1..256, or when the tiled one cannot run): one warp per query row,
// lane l holding dimensions l, l + 32, ... of q and of the fp32 output accumulator; for each visible
// key the warp reduces q . k by shuffles and applies the same online-softmax update. No shared memory,
// no tensor cores; it is the plain statement of the math and the fallback.
#include "attention.cuh"

#include <mma.h>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "cuda_check.cuh"
#include "device_types.cuh"
#include "focuspatch/core/error.hpp"

namespace focuspatch::cuda {

namespace attention_detail {

namespace wmma = nvcuda::wmma;

constexpr float kMinusInfinity = -std::numeric_limits<float>::infinity();
constexpr unsigned kFullMask = 0xffffffffu;

// ---- tiled (tensor-core) kernel ------------------------------------------------------------------

constexpr int kTileQueries = 64;
constexpr int kTileKeys = 64;
constexpr int kWarpQueries = 16;  // one wmma row block per warp
constexpr int kTileWarps = kTileQueries / kWarpQueries;
constexpr int kTileThreads = kTileWarps * 32;
constexpr int kStageElements = 8;  // 16-bit elements per 16-byte global load
static_assert(kTileKeys == 2 * 32, "softmax step: each of a row's two lanes handles 32 key columns");
static_assert(kWarpQueries * 2 == 32, "softmax step: two lanes per query row fill a warp");

// Byte offsets of the shared-memory regions of the tiled kernel; each region starts 128-byte aligned.
template <class T, int Dim>
struct TiledLayout {
  static constexpr int q_ld = Dim + 8;         // Q tile row stride, elements
  static constexpr int kv_ld = Dim + 8;        // K and V tile row stride, elements
  static constexpr int s_ld = kTileKeys + 4;   // scores row stride, floats
  static constexpr int p_ld = kTileKeys + 8;   // probabilities row stride, elements
  static constexpr int o_ld = Dim + 4;         // output accumulator row stride, floats
  static constexpr std::size_t aligned(std::size_t bytes) { return (bytes + 127) / 128 * 128; }
  static constexpr std::size_t q_offset = 0;
  static constexpr std::size_t k_offset = q_offset + aligned(std::size_t{kTileQueries} * q_ld * sizeof(T));
  static constexpr std::size_t v_offset = k_offset + aligned(std::size_t{kTileKeys} * kv_ld * sizeof(T));
  static constexpr std::size_t s_offset = v_offset + aligned(std::size_t{kTileKeys} * kv_ld * sizeof(T));
  static constexpr std::size_t p_offset = s_offset + aligned(std::size_t{kTileWarps} * kWarpQueries * s_ld * sizeof(float));
  static constexpr std::size_t o_offset = p_offset + aligned(std::size_t{kTileWarps} * kWarpQueries * p_ld * sizeof(T));
  static constexpr std::size_t bytes = o_offset + aligned(std::size_t{kTileWarps} * kWarpQueries * o_ld * sizeof(float));
  static_assert(Dim % 16 == 0 && Dim >= 16, "wmma needs whole 16-wide fragments");
  static_assert(q_ld % 8 == 0 && kv_ld % 8 == 0 && p_ld % 8 == 0, "wmma: 16-bit ldm a multiple of 8");
  static_assert(s_ld % 4 == 0 && o_ld % 4 == 0, "wmma: float ldm a multiple of 4");
};

// tile[r][0, Dim) = part row (first + r) for r < count, zeros where first + r >= seq. part points at
// this head's columns of row 0; rows are `stride` elements apart. Called by every thread of the block.
template <class T, int Dim>
__device__ void stage_rows(const T* __restrict__ part, long long stride, long long first, long long seq, int count, T* tile,
                           int ld) {
  constexpr int chunks_per_row = Dim / kStageElements;
  for (int index = threadIdx.x; index < count * chunks_per_row; index += kTileThreads) {
    const int r = index / chunks_per_row, chunk = index % chunks_per_row;
    const long long row = first + r;
    uint4 value = make_uint4(0u, 0u, 0u, 0u);
    if (row < seq) value = *reinterpret_cast<const uint4*>(part + row * stride + chunk * kStageElements);
    *reinterpret_cast<uint4*>(tile + r * ld + chunk * kStageElements) = value;
  }
}

// Grid: x = batch * heads (batch item x / heads, head x % heads), y = query tile. Block: kTileThreads.
template <class T, int Dim>
__global__ void __launch_bounds__(kTileThreads)
    tiled_attention_kernel(const T* __restrict__ qkv, long long seq, int heads, bool causal, bool value_value,
                           float scale_log2, T* __restrict__ out) {
  using Layout = TiledLayout<T, Dim>;
  extern __shared__ __align__(128) unsigned char shared[];
  T* q_tile = reinterpret_cast<T*>(shared + Layout::q_offset);
  T* k_tile = reinterpret_cast<T*>(shared + Layout::k_offset);
  T* v_tile = reinterpret_cast<T*>(shared + Layout::v_offset);
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  float* s_warp = reinterpret_cast<float*>(shared + Layout::s_offset) + warp * kWarpQueries * Layout::s_ld;
  T* p_warp = reinterpret_cast<T*>(shared + Layout::p_offset) + warp * kWarpQueries * Layout::p_ld;
  float* o_warp = reinterpret_cast<float*>(shared + Layout::o_offset) + warp * kWarpQueries * Layout::o_ld;

  const long long batch_head = blockIdx.x;
  const int head = static_cast<int>(batch_head % heads);
  const long long item = batch_head / heads;
  const long long width = static_cast<long long>(heads) * Dim, stride = 3 * width;
  const T* head_rows = qkv + item * seq * stride + static_cast<long long>(head) * Dim;
  const T* q_part = head_rows + (value_value ? 2 * width : 0);
  const T* k_part = head_rows + (value_value ? 2 * width : width);
  const T* v_part = head_rows + 2 * width;
  const long long first_query = static_cast<long long>(blockIdx.y) * kTileQueries;

  stage_rows<T, Dim>(q_part, stride, first_query, seq, kTileQueries, q_tile, Layout::q_ld);
  for (int i = lane; i < kWarpQueries * Layout::o_ld; i += 32) o_warp[i] = 0.0f;
  __syncthreads();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> q_fragments[Dim / 16];
#pragma unroll
  for (int c = 0; c < Dim / 16; ++c)
    wmma::load_matrix_sync(q_fragments[c], q_tile + warp * kWarpQueries * Layout::q_ld + c * 16, Layout::q_ld);

  // Softmax ownership: lanes 2r and 2r + 1 hold row r of this warp, key columns [32 * half, +32) of
  // each tile and output columns [Dim / 2 * half, +Dim / 2). Both lanes keep identical m and l.
  const int row = lane / 2, half = lane % 2;
  const long long query = first_query + warp * kWarpQueries + row;
  float row_max = kMinusInfinity, row_sum = 0.0f;

  const long long key_tiles_all = (seq + kTileKeys - 1) / kTileKeys;
  const long long last_query = (first_query + kTileQueries < seq ? first_query + kTileQueries : seq) - 1;
  const long long key_tiles = causal && last_query / kTileKeys + 1 < key_tiles_all ? last_query / kTileKeys + 1 : key_tiles_all;

  for (long long tile = 0; tile < key_tiles; ++tile) {
    const long long first_key = tile * kTileKeys;
    __syncthreads();  // every warp is done with the previous K and V tiles (and the Q fragments are loaded)
    stage_rows<T, Dim>(k_part, stride, first_key, seq, kTileKeys, k_tile, Layout::kv_ld);
    stage_rows<T, Dim>(v_part, stride, first_key, seq, kTileKeys, v_tile, Layout::kv_ld);
    __syncthreads();

    // S (16 x 64) = Q (16 x Dim) K^T: K rows are keys, so K^T is K read column-major.
#pragma unroll
    for (int n = 0; n < kTileKeys / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> s_fragment;
      wmma::fill_fragment(s_fragment, 0.0f);
#pragma unroll
      for (int c = 0; c < Dim / 16; ++c) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> k_fragment;
        wmma::load_matrix_sync(k_fragment, k_tile + n * 16 * Layout::kv_ld + c * 16, Layout::kv_ld);
        wmma::mma_sync(s_fragment, q_fragments[c], k_fragment, s_fragment);
      }
      wmma::store_matrix_sync(s_warp + n * 16, s_fragment, Layout::s_ld, wmma::mem_row_major);
    }
    __syncwarp();

    {  // online softmax for row `row`, columns [32 * half, +32) of this key tile
      const float* s_row = s_warp + row * Layout::s_ld + half * 32;
      T* p_row = p_warp + row * Layout::p_ld + half * 32;
      float scores[32];
      float tile_max = kMinusInfinity;
#pragma unroll
      for (int c = 0; c < 32; ++c) {
        const long long key = first_key + half * 32 + c;
        const bool visible = key < seq && (!causal || key <= query);
        scores[c] = visible ? s_row[c] * scale_log2 : kMinusInfinity;
        tile_max = fmaxf(tile_max, scores[c]);
      }
      tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 1));
      const float new_max = fmaxf(row_max, tile_max);
      const float base = new_max == kMinusInfinity ? 0.0f : new_max;  // all masked so far: exp2(-inf) = 0, no NaN
      float tile_sum = 0.0f;
#pragma unroll
      for (int c = 0; c < 32; ++c) {
        // l sums the rounded weights that P V actually uses, so the normalisation matches them.
        const T weight = from_float<T>(exp2f(scores[c] - base));
        p_row[c] = weight;
        tile_sum += to_float(weight);
      }
      tile_sum += __shfl_xor_sync(kFullMask, tile_sum, 1);
      const float rescale = exp2f(row_max - base);  // 0 on the first visible tile (row_max = -inf)
      row_sum = row_sum * rescale + tile_sum;
      row_max = new_max;
      float* o_row = o_warp + row * Layout::o_ld + half * (Dim / 2);
#pragma unroll 8
      for (int c = 0; c < Dim / 2; ++c) o_row[c] *= rescale;
    }
    __syncwarp();

    // O (16 x Dim) += P (16 x 64) V (64 x Dim).
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> p_fragments[kTileKeys / 16];
#pragma unroll
    for (int k = 0; k < kTileKeys / 16; ++k) wmma::load_matrix_sync(p_fragments[k], p_warp + k * 16, Layout::p_ld);
#pragma unroll
    for (int n = 0; n < Dim / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> o_fragment;
      wmma::load_matrix_sync(o_fragment, o_warp + n * 16, Layout::o_ld, wmma::mem_row_major);
#pragma unroll
      for (int k = 0; k < kTileKeys / 16; ++k) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> v_fragment;
        wmma::load_matrix_sync(v_fragment, v_tile + k * 16 * Layout::kv_ld + n * 16, Layout::kv_ld);
        wmma::mma_sync(o_fragment, p_fragments[k], v_fragment, o_fragment);
      }
      wmma::store_matrix_sync(o_warp + n * 16, o_fragment, Layout::o_ld, wmma::mem_row_major);
    }
  }
  __syncwarp();

  if (query < seq) {
    const float inverse_sum = row_sum > 0.0f ? 1.0f / row_sum : 0.0f;
    const float* o_row = o_warp + row * Layout::o_ld + half * (Dim / 2);
    T* out_row = out + (item * seq + query) * width + static_cast<long long>(head) * Dim + half * (Dim / 2);
    for (int c = 0; c < Dim / 2; ++c) out_row[c] = from_float<T>(o_row[c] * inverse_sum);
  }
}

// ---- generic kernel --------------------------------------------------------------------------------

constexpr int kRowWarps = 8;
constexpr int kRowThreads = kRowWarps * 32;
constexpr int kRowPerLane = attention_max_head_dim / 32;  // dimensions each lane holds
static_assert(attention_max_head_dim % 32 == 0);

// Grid: x covers batch * heads * seq query rows, kRowWarps per block; row index
// ((item * heads) + head) * seq + query.
template <class T>
__global__ void __launch_bounds__(kRowThreads)
    row_attention_kernel(const T* __restrict__ qkv, long long batch, long long seq, int heads, int head_dim, bool causal,
                         bool value_value, float scale_log2, T* __restrict__ out) {
  const long long task = static_cast<long long>(blockIdx.x) * kRowWarps + static_cast<long long>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  if (task >= batch * heads * seq) return;  // the same for the whole warp, so the shuffles below see all 32 lanes
  const long long query = task % seq, batch_head = task / seq;
  const int head = static_cast<int>(batch_head % heads);
  const long long item = batch_head / heads;
  const long long width = static_cast<long long>(heads) * head_dim, stride = 3 * width;
  const T* head_rows = qkv + item * seq * stride + static_cast<long long>(head) * head_dim;
  const T* q_part = head_rows + (value_value ? 2 * width : 0);
  const T* k_part = head_rows + (value_value ? 2 * width : width);
  const T* v_part = head_rows + 2 * width;

  float q[kRowPerLane], accumulator[kRowPerLane];
#pragma unroll
  for (int t = 0; t < kRowPerLane; ++t) {
    const int d = lane + 32 * t;
    q[t] = d < head_dim ? to_float(q_part[query * stride + d]) : 0.0f;
    accumulator[t] = 0.0f;
  }
  float row_max = kMinusInfinity, row_sum = 0.0f;
  const long long keys = causal ? query + 1 : seq;
  for (long long key = 0; key < keys; ++key) {
    const T* k_row = k_part + key * stride;
    float dot = 0.0f;
#pragma unroll
    for (int t = 0; t < kRowPerLane; ++t) {
      const int d = lane + 32 * t;
      if (d < head_dim) dot += q[t] * to_float(k_row[d]);
    }
    // A butterfly: every lane ends with the same bits (each step adds a pair in either order).
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) dot += __shfl_xor_sync(kFullMask, dot, offset);
    const float score = dot * scale_log2;
    const float new_max = fmaxf(row_max, score);
    const float rescale = exp2f(row_max - new_max);  // 0 for the first key
    const float weight = exp2f(score - new_max);
    row_sum = row_sum * rescale + weight;
    row_max = new_max;
    const T* v_row = v_part + key * stride;
#pragma unroll
    for (int t = 0; t < kRowPerLane; ++t) {
      const int d = lane + 32 * t;
      if (d < head_dim) accumulator[t] = accumulator[t] * rescale + weight * to_float(v_row[d]);
    }
  }
  T* out_row = out + (item * seq + query) * width + static_cast<long long>(head) * head_dim;
  const float inverse_sum = 1.0f / row_sum;  // row_sum >= 1: the row's maximum contributes exp2(0)
#pragma unroll
  for (int t = 0; t < kRowPerLane; ++t) {
    const int d = lane + 32 * t;
    if (d < head_dim) out_row[d] = from_float<T>(accumulator[t] * inverse_sum);
  }
}

// ---- launches ---------------------------------------------------------------------------------------

struct Problem {
  long long batch, seq;
  int heads, head_dim;
  bool causal, value_value;
  float scale_log2;
  cudaStream_t stream;
};

constexpr long long kMaxGridX = 2147483647LL, kMaxGridY = 65535LL;
constexpr int kCachedDevices = 64;

// Whether this device can give the tiled kernel its shared memory, opting in once per kernel and
// device: the attribute query and set are driver calls of microseconds each, a sizable share of a
// batch-1 attention if repeated on every call. (Two threads racing here both set the same value.)
template <class T, int Dim>
bool tiled_fits_device(int device) {
  constexpr std::size_t bytes = TiledLayout<T, Dim>::bytes;
  static std::atomic<signed char> known[kCachedDevices] = {};  // 0 unknown, 1 fits (opted in), -1 not
  const bool cacheable = device >= 0 && device < kCachedDevices;
  if (cacheable) {
    if (const signed char k = known[device].load(std::memory_order_acquire)) return k > 0;
  }
  int limit = 0;
  check(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
        "cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)");
  const bool fits = bytes <= static_cast<std::size_t>(limit);
  if (fits)
    check(cudaFuncSetAttribute(tiled_attention_kernel<T, Dim>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
          "cudaFuncSetAttribute(attention MaxDynamicSharedMemorySize)");
  if (cacheable) known[device].store(fits ? 1 : -1, std::memory_order_release);
  return fits;
}

// Launches the tiled kernel; false when this device or problem cannot run it (then the caller uses
// the generic kernel).
template <class T, int Dim>
bool launch_tiled(const T* qkv, T* out, const Problem& p) {
  constexpr std::size_t bytes = TiledLayout<T, Dim>::bytes;
  const long long query_tiles = (p.seq + kTileQueries - 1) / kTileQueries;
  if (p.batch * p.heads > kMaxGridX || query_tiles > kMaxGridY) return false;
  int device = 0;
  check(cudaGetDevice(&device), "cudaGetDevice");
  if (!tiled_fits_device<T, Dim>(device)) return false;
  auto* kernel = tiled_attention_kernel<T, Dim>;
  const dim3 grid(static_cast<unsigned>(p.batch * p.heads), static_cast<unsigned>(query_tiles));
  kernel<<<grid, kTileThreads, bytes, p.stream>>>(qkv, p.seq, p.heads, p.causal, p.value_value, p.scale_log2, out);
  check_launch("tiled attention kernel");
  return true;
}

template <class T>
bool launch_tiled_for_head_dim(const T* qkv, T* out, const Problem& p) {
  switch (p.head_dim) {
    case 16: return launch_tiled<T, 16>(qkv, out, p);
    case 32: return launch_tiled<T, 32>(qkv, out, p);
    case 48: return launch_tiled<T, 48>(qkv, out, p);
    case 64: return launch_tiled<T, 64>(qkv, out, p);
    case 80: return launch_tiled<T, 80>(qkv, out, p);
    case 96: return launch_tiled<T, 96>(qkv, out, p);
    case 112: return launch_tiled<T, 112>(qkv, out, p);
    case 128: return launch_tiled<T, 128>(qkv, out, p);
    default: return false;
  }
}
static_assert(attention_max_tiled_head_dim == 128, "launch_tiled_for_head_dim lists the tiled head sizes");

template <class T>
void launch_rows(const T* qkv, T* out, const Problem& p) {
  const long long rows = p.batch * p.heads * p.seq;
  const long long blocks = (rows + kRowWarps - 1) / kRowWarps;
  require(blocks <= kMaxGridX, "attention: ", rows, " query rows (batch x heads x seq) exceed one launch");
  row_attention_kernel<T><<<static_cast<unsigned>(blocks), kRowThreads, 0, p.stream>>>(
      qkv, p.batch, p.seq, p.heads, p.head_dim, p.causal, p.value_value, p.scale_log2, out);
  check_launch("attention kernel");
}

}  // namespace attention_detail

template <class T>
void attention(const T* qkv, long long batch, long long seq, int heads, int head_dim, bool causal, bool value_value, T* out,
               cudaStream_t stream) {
  using namespace attention_detail;
  // Every check comes before the first CUDA call, so bad arguments fail the same with or without a GPU.
  require(heads >= 1, "attention: heads is ", heads, ", must be at least 1");
  require(head_dim >= 1 && head_dim <= attention_max_head_dim, "attention: head_dim ", head_dim,
          " is outside the supported range 1..", attention_max_head_dim);
  require(batch >= 0 && seq >= 0, "attention: batch (", batch, ") and seq (", seq, ") must not be negative");
  if (batch == 0 || seq == 0) return;
  require(qkv != nullptr && out != nullptr, "attention: qkv or out is a null pointer");
  const long long width = static_cast<long long>(heads) * head_dim;
  // Element counts stay far below 2^62, so every index product in the kernels fits a long long.
  require(batch <= (1LL << 62) / seq / (3 * width), "attention: batch ", batch, " x seq ", seq, " x 3 x ", width,
          " elements is too large");
  const std::uintptr_t in_begin = reinterpret_cast<std::uintptr_t>(qkv), out_begin = reinterpret_cast<std::uintptr_t>(out);
  const std::uintptr_t in_end = in_begin + static_cast<std::uintptr_t>(batch * seq * 3 * width) * sizeof(T);
  const std::uintptr_t out_end = out_begin + static_cast<std::uintptr_t>(batch * seq * width) * sizeof(T);
  require(out_end <= in_begin || in_end <= out_begin, "attention: out overlaps qkv (kernels read keys of other rows "
                                                      "while writing outputs)");

  const Problem problem{batch, seq, heads, head_dim, causal, value_value,
                        static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(head_dim))), stream};
  // The tiled kernel stages rows with 16-byte loads: with head_dim a multiple of 16 every row of
  // every head starts 32-byte aligned relative to qkv, so qkv itself must be 16-byte aligned.
  const bool tiled_shape = head_dim % 16 == 0 && head_dim <= attention_max_tiled_head_dim && in_begin % 16 == 0;
  if (tiled_shape && launch_tiled_for_head_dim(qkv, out, problem)) return;
  launch_rows(qkv, out, problem);
}

template void attention<__half>(const __half*, long long, long long, int, int, bool, bool, __half*, cudaStream_t);
template void attention<__nv_bfloat16>(const __nv_bfloat16*, long long, long long, int, int, bool, bool, __nv_bfloat16*,
                                       cudaStream_t);

}  // namespace focuspatch::cuda
