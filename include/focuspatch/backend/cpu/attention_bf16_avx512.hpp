#pragma once
// Attention's two products in bf16 on AVX-512 BF16 (vdpbf16ps, Intel Cooper Lake and later, AMD
// Zen 4): S = bf16(Q) bf16(K)^T and O = bf16(P) bf16(V), products summed in fp32. The blocking,
// the scale folded into the exponent, the causal mask and the fp32 softmax are attention_f32.hpp's
// (run_attention); only what the two products read changes:
//
//  * vdpbf16ps multiplies PAIRS of bf16 along the summed dimension, lane i of the result gaining
//    a[2i] b[2i] + a[2i+1] b[2i+1]. For Q K^T the sum runs over the head dimension: K is packed per
//    head, once, as panels of 64 keys of dimension pairs, [panel][pair p][key] = (k[key][2p],
//    k[key][2p+1]) (rounded while a 16 x 16 transpose puts keys across lanes), and each query row
//    as its own pairs, so one 32-bit broadcast of a query pair feeds 4 vdpbf16ps across 64 keys.
//  * For P V the sum runs over keys: V is packed as key pairs, [pair j][column c] = (v[2j][c],
//    v[2j+1][c]), and the tile's probabilities are rounded to bf16 in key order, so that a 32-bit
//    read of a probability row is already the pair (p[2j], p[2j+1]).
// An odd head dimension or key count is padded with a zero half; keys past the sequence are zero
// rows. The probabilities rounded are the unnormalised exp(s - max) in (0, 1]; 1 / sum stays the
// fp32 sum of the unrounded ones, applied at the store as in fp32.
//
// The functions carry their own target attribute (gemm_bf16_avx512.hpp's), so an AVX-512 build for
// a CPU without BF16 compiles them; attention.hpp runs them only where cpuid says the CPU has it.
#include <algorithm>
#include <cstdint>

#include "focuspatch/backend/cpu/attention_f32.hpp"
#include "focuspatch/backend/cpu/gemm_bf16_avx512.hpp"
#include "focuspatch/backend/cpu/scratch_buffer.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>

namespace focuspatch {
namespace attention_bf16_detail {

using attention_detail::kBlockRows;
using attention_detail::kLanes;
using attention_detail::kPanelKeys;
using attention_detail::kSlabVectors;
using attention_detail::kTileRows;
using attention_detail::round_up;
using attention_detail::tail_mask;

inline __mmask32 tail_mask32(std::int64_t count) {
  return count >= 32 ? __mmask32(0xFFFFFFFFu) : static_cast<__mmask32>((1u << std::max<std::int64_t>(count, 0)) - 1u);
}

// 32 floats from p, the first `valid` of them (zeros after), as bf16 rounded to nearest even:
// 32-bit lane j = (p[2j], p[2j + 1]).
FOCUSPATCH_TARGET_AVX512BF16 inline __m512i bf16_pairs(const float* p, std::int64_t valid) {
  const __m512 x0 = _mm512_maskz_loadu_ps(tail_mask(valid), p);
  const __m512 x1 = _mm512_maskz_loadu_ps(tail_mask(std::max<std::int64_t>(valid - 16, 0)), p + 16);
  return reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(x1, x0));
}

// K of one head (rows `stride` apart) in panels of kPanelKeys keys of dimension pairs,
// [panel][pair p][key in panel] = (k[key][2p], k[key][2p + 1]) rounded to bf16, for `pairs` pairs
// per key (at least ceil(dim / 2); pairs past the dimension and keys from seq up to keys_padded are
// zero). A panel's pair rows are its width apart: kPanelKeys, or what is left of keys_padded.
FOCUSPATCH_TARGET_AVX512BF16 inline void pack_key_pairs(const float* k, std::int64_t stride, std::int64_t seq, std::int64_t keys_padded,
                                                        std::int64_t dim, std::int64_t pairs, std::uint32_t* k_pairs) {
  for (std::int64_t first = 0; first < keys_padded; first += kPanelKeys) {
    const std::int64_t width = std::min<std::int64_t>(kPanelKeys, keys_padded - first);
    std::uint32_t* panel = k_pairs + first * pairs;
    for (std::int64_t key0 = 0; key0 < width; key0 += kLanes)
      for (std::int64_t p0 = 0; p0 < pairs; p0 += kLanes) {
        __m512 rows[kLanes];  // row l lane p = key (key0 + l)'s pair (p0 + p); zero past dim
        for (int l = 0; l < kLanes; ++l) {
          const std::int64_t j = first + key0 + l;
          rows[l] = j < seq ? _mm512_castsi512_ps(bf16_pairs(k + j * stride + 2 * p0, dim - 2 * p0)) : _mm512_setzero_ps();
        }
        gemm_detail::transpose16(rows);  // now row p lane l
        for (std::int64_t p = 0; p < kLanes && p0 + p < pairs; ++p)
          _mm512_store_ps(reinterpret_cast<float*>(panel + (p0 + p) * width + key0), rows[p]);
      }
  }
}

// V of one head as key pairs, [pair j][column c] = (v[2j][c], v[2j + 1][c]) rounded to bf16, rows
// dim_padded apart (a multiple of 16); columns past dim, the missing half after an odd last key,
// and pairs from ceil(seq / 2) up to `key_pairs` are zero.
FOCUSPATCH_TARGET_AVX512BF16 inline void pack_value_pairs(const float* v, std::int64_t stride, std::int64_t seq, std::int64_t key_pairs,
                                                          std::int64_t dim, std::int64_t dim_padded, std::uint32_t* v_pairs) {
  for (std::int64_t j = 0; j < key_pairs; ++j) {
    const float* even = 2 * j < seq ? v + 2 * j * stride : nullptr;
    const float* odd = 2 * j + 1 < seq ? even + stride : nullptr;
    for (std::int64_t c = 0; c < dim_padded; c += kLanes) {
      const __mmask16 m = c < dim ? tail_mask(dim - c) : __mmask16(0);
      const __m512 a = even ? _mm512_maskz_loadu_ps(m, even + c) : _mm512_setzero_ps();
      const __m512 b = odd ? _mm512_maskz_loadu_ps(m, odd + c) : _mm512_setzero_ps();
      const __m512i low = _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(a)));
      const __m512i high = _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(b)));
      _mm512_store_si512(v_pairs + j * dim_padded + c, _mm512_or_si512(low, _mm512_slli_epi32(high, 16)));
    }
  }
}

// Query rows (q: the first, rows stride apart) as `pairs` dim pairs each (zero past dim), then zero
// rows up to rows_padded.
FOCUSPATCH_TARGET_AVX512BF16 inline void load_query_pairs(const float* q, std::int64_t stride, std::int64_t rows, std::int64_t rows_padded,
                                                          std::int64_t dim, std::int64_t pairs, std::uint32_t* q_pairs) {
  for (std::int64_t r = 0; r < rows_padded; ++r) {
    std::uint32_t* dst = q_pairs + r * pairs;
    if (r >= rows) {
      std::fill(dst, dst + pairs, 0u);
      continue;
    }
    for (std::int64_t p0 = 0; p0 < pairs; p0 += kLanes)
      _mm512_mask_storeu_epi32(dst + p0, tail_mask(pairs - p0), bf16_pairs(q + r * stride + 2 * p0, dim - 2 * p0));
  }
}

// scores[r][16 * vec + l] = sum_p q[r][p] . panel[p][16 * vec + l] over `pairs` dimension pairs, for
// kTileRows query rows (q rows `pairs` apart) and Vectors vectors of keys; panel rows are
// panel_width apart.
template <int Vectors>
FOCUSPATCH_TARGET_AVX512BF16 inline void score_block(const std::uint32_t* q, std::int64_t pairs, const std::uint32_t* panel,
                                                     std::int64_t panel_width, float* scores, std::int64_t score_stride) {
  __m512 acc[kTileRows][Vectors];
#pragma GCC unroll 8
  for (int r = 0; r < kTileRows; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) acc[r][v] = _mm512_setzero_ps();
  for (std::int64_t p = 0; p < pairs; ++p) {
    __m512bh keys[Vectors];
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) keys[v] = reinterpret_cast<__m512bh>(_mm512_load_si512(panel + p * panel_width + v * kLanes));
#pragma GCC unroll 8
    for (int r = 0; r < kTileRows; ++r) {
      const __m512bh qr = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(q[r * pairs + p])));
#pragma GCC unroll 4
      for (int v = 0; v < Vectors; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], qr, keys[v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kTileRows; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < Vectors; ++v) _mm512_store_ps(scores + r * score_stride + v * kLanes, acc[r][v]);
}

// out[r][...] = inv_sum[r] * sum_j p[r][j] . v[j][...] over key_pairs pairs, for kTileRows rows (p
// rows p_stride pairs apart; the first rows_out stored) and `columns` columns, Vectors =
// ceil(columns / 16); v rows (key pairs) are v_stride apart.
template <int Vectors>
FOCUSPATCH_TARGET_AVX512BF16 inline void value_block(const std::uint32_t* p, std::int64_t p_stride, std::int64_t key_pairs,
                                                     const std::uint32_t* v, std::int64_t v_stride, const float* inv_sum,
                                                     std::int64_t rows_out, std::int64_t columns, float* out, std::int64_t out_stride) {
  __m512 acc[kTileRows][Vectors];
#pragma GCC unroll 8
  for (int r = 0; r < kTileRows; ++r)
#pragma GCC unroll 4
    for (int vec = 0; vec < Vectors; ++vec) acc[r][vec] = _mm512_setzero_ps();
  for (std::int64_t j = 0; j < key_pairs; ++j) {
    __m512bh values[Vectors];
#pragma GCC unroll 4
    for (int vec = 0; vec < Vectors; ++vec)
      values[vec] = reinterpret_cast<__m512bh>(_mm512_load_si512(v + j * v_stride + vec * kLanes));
#pragma GCC unroll 8
    for (int r = 0; r < kTileRows; ++r) {
      const __m512bh pr = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(p[r * p_stride + j])));
#pragma GCC unroll 4
      for (int vec = 0; vec < Vectors; ++vec) acc[r][vec] = _mm512_dpbf16_ps(acc[r][vec], pr, values[vec]);
    }
  }
  for (int r = 0; r < kTileRows; ++r) {
    if (r >= rows_out) break;
    const __m512 inv = _mm512_set1_ps(inv_sum[r]);
#pragma GCC unroll 4
    for (int vec = 0; vec < Vectors; ++vec)
      _mm512_mask_storeu_ps(out + r * out_stride + vec * kLanes, tail_mask(columns - vec * kLanes), _mm512_mul_ps(acc[r][vec], inv));
  }
}

// Per-thread working memory of the bf16 kernels, 64-byte aligned, grown on demand and kept; the
// kernels run_attention calls (attention_f32.hpp's F32Family has the same shape).
class Bf16Family : public attention_detail::RegisterTileShape {
 public:
  std::uint32_t* k_pairs = nullptr;    // K in panels of kPanelKeys keys: [panel][dim pair][key in panel]
  std::uint32_t* v_pairs = nullptr;    // V as key pairs: [key pair][dim_padded]
  std::uint32_t* q_pairs = nullptr;    // the task's query rows as dim pairs, zero rows up to whole tiles
  std::uint16_t* p_bf16 = nullptr;     // one tile's probabilities in bf16: [kTileRows][keys_padded]
  float* scores = nullptr;             // scores, then fp32 probabilities, of one tile: [kTileRows][keys_padded]
  float* inv_sum = nullptr;            // 1 / softmax denominator per block row
  const float* packed_head = nullptr;  // the K (or V) pointer whose panels are packed now

  void reserve(std::int64_t keys_padded, std::int64_t dim, std::int64_t dim_padded) {
    pairs_ = (dim + 1) / 2;
    // In 32-bit units; keys_padded is a multiple of 16, so every part starts 64-byte aligned.
    const std::int64_t k = keys_padded * pairs_, v = keys_padded / 2 * dim_padded, q = kBlockRows * pairs_,
                       s = kTileRows * keys_padded, p = kTileRows * keys_padded / 2, sums = kBlockRows;
    const std::int64_t total = round_up(k, kLanes) + round_up(v, kLanes) + round_up(q, kLanes) + s + round_up(p, kLanes) + sums;
    float* base = memory_.get(static_cast<std::size_t>(round_up(total, kLanes)), "cpu bf16 attention");
    // 32-bit pairs and floats share the buffer's alignment and size, as gemm_bf16_avx512.hpp's packed A.
    k_pairs = reinterpret_cast<std::uint32_t*>(base);
    v_pairs = k_pairs + round_up(k, kLanes);
    q_pairs = v_pairs + round_up(v, kLanes);
    scores = base + (round_up(k, kLanes) + round_up(v, kLanes) + round_up(q, kLanes));
    p_bf16 = reinterpret_cast<std::uint16_t*>(scores + s);
    inv_sum = scores + s + round_up(p, kLanes);
    packed_head = nullptr;  // the buffer may hold new contents at the same address: always repack
  }

  // K pair panels (zero keys from seq up to keys_padded) and V key pairs (a zero row after an odd
  // last key) for one head, read rows `stride` apart.
  void pack(const float* k, const float* v, std::int64_t stride, std::int64_t seq, std::int64_t keys_padded, std::int64_t dim,
            std::int64_t dim_padded) {
    pack_key_pairs(k, stride, seq, keys_padded, dim, pairs_, k_pairs);
    pack_value_pairs(v, stride, seq, (seq + 1) / 2, dim, dim_padded, v_pairs);
  }

  // The block's query rows (q: its first, rows stride apart) as dim pairs, then zero rows up to rows_padded.
  void load_queries(const float* q, std::int64_t stride, std::int64_t rows, std::int64_t rows_padded, std::int64_t dim) {
    load_query_pairs(q, stride, rows, rows_padded, dim, pairs_, q_pairs);
  }

  // scores[kTileRows][keys_vec] of the tile at block row t.
  FOCUSPATCH_TARGET_AVX512BF16 void score_tile(std::int64_t t, std::int64_t /*dim*/, std::int64_t keys_vec, std::int64_t keys_padded) {
    const std::uint32_t* q = q_pairs + t * pairs_;
    for (std::int64_t first = 0; first < keys_vec; first += kPanelKeys) {
      // A panel's rows are its packed width apart, even when fewer of its keys are needed (causal).
      const std::int64_t packed_width = std::min<std::int64_t>(kPanelKeys, keys_padded - first);
      const std::int64_t needed = std::min<std::int64_t>(kPanelKeys, keys_vec - first);
      const std::uint32_t* panel = k_pairs + first * pairs_;
      float* out = scores + first;
      switch (needed / kLanes) {
        case 4: score_block<4>(q, pairs_, panel, packed_width, out, keys_padded); break;
        case 3: score_block<3>(q, pairs_, panel, packed_width, out, keys_padded); break;
        case 2: score_block<2>(q, pairs_, panel, packed_width, out, keys_padded); break;
        default: score_block<1>(q, pairs_, panel, packed_width, out, keys_padded); break;
      }
    }
  }

  // out = bf16(probabilities in scores) bf16(V) / sum, the tile's first rows_out rows stored.
  FOCUSPATCH_TARGET_AVX512BF16 void value_tile(std::int64_t t, std::int64_t keys, std::int64_t dim, std::int64_t dim_padded,
                                               std::int64_t keys_padded, std::int64_t rows_out, float* out, std::int64_t out_stride) {
    const std::int64_t key_pairs = (keys + 1) / 2;
    for (int r = 0; r < kTileRows; ++r)
      for (std::int64_t j = 0; j < 2 * key_pairs; j += 32)
        _mm512_mask_storeu_epi16(p_bf16 + r * keys_padded + j, tail_mask32(2 * key_pairs - j),
                                 bf16_pairs(scores + r * keys_padded + j, keys - j));
    const auto* p = reinterpret_cast<const std::uint32_t*>(p_bf16);
    const std::int64_t p_stride = keys_padded / 2;
    constexpr std::int64_t slab = kSlabVectors * kLanes;
    for (std::int64_t c0 = 0; c0 < dim; c0 += slab) {
      const std::int64_t columns = std::min(slab, dim - c0);
      const std::uint32_t* v = v_pairs + c0;
      switch ((columns + kLanes - 1) / kLanes) {
        case 4: value_block<4>(p, p_stride, key_pairs, v, dim_padded, inv_sum + t, rows_out, columns, out + c0, out_stride); break;
        case 3: value_block<3>(p, p_stride, key_pairs, v, dim_padded, inv_sum + t, rows_out, columns, out + c0, out_stride); break;
        case 2: value_block<2>(p, p_stride, key_pairs, v, dim_padded, inv_sum + t, rows_out, columns, out + c0, out_stride); break;
        default: value_block<1>(p, p_stride, key_pairs, v, dim_padded, inv_sum + t, rows_out, columns, out + c0, out_stride); break;
      }
    }
  }

 private:
  std::int64_t pairs_ = 0;  // ceil(head_dim / 2)
  ScratchBuffer memory_;
};

}  // namespace attention_bf16_detail

// cpu_attention_f32's attention with both products in bf16 (fp32 sums); needs avx512_bf16.
inline void cpu_attention_bf16_avx512(const float* qkv, std::int64_t batch, std::int64_t seq, int heads, int head_dim, bool causal,
                                      float* out, AttentionKind kind = AttentionKind::QueryKey) {
  attention_detail::run_attention<attention_bf16_detail::Bf16Family>(qkv, batch, seq, heads, head_dim, causal, out, kind);
}

}  // namespace focuspatch

#endif  // __AVX512F__
