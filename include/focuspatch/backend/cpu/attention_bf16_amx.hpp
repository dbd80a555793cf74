#pragma once
// Attention's two products on AMX tiles: S = bf16(Q) bf16(K)^T and O = bf16(P) bf16(V), fp32
// sums, each a sequence of amx_product_32x32 blocks (amx_tiles.hpp). The blocking, the causal mask,
// the scale folded into the exponent and the fp32 softmax are attention_f32.hpp's run_attention;
// this family gives it tiles of 32 query rows (one tile block high) and tasks of 64.
//
// tdpbf16ps sums PAIRS of bf16 along the reduced dimension, so the operands are laid out as the
// vdpbf16ps family lays them (attention_bf16_avx512.hpp's packers), padded to whole tiles:
//  * Q K^T reduces over the head dimension: query rows as dimension pairs (A, 16 pairs = one tile
//    row of 64 bytes), K in panels of 64 keys of dimension pairs (B: a tile is 16 pair rows of 16
//    keys), pairs padded with zeros to a multiple of 16, keys to a multiple of 32;
//  * P V reduces over keys: the probabilities rounded to bf16 in key order (A) and V as key pairs
//    (B: 16 key pairs of 16 columns), keys padded with zero probabilities and zero value rows to a
//    multiple of 32, columns to a multiple of 32.
// The probabilities rounded are the unnormalised exp(s - max) in (0, 1]; 1 / sum stays the fp32
// sum of the unrounded ones, applied at the store, as in the other families.
//
// A template over the tile file: AmxTiles (the hardware) where cpuid says AMX and Linux granted it
// (attention.hpp), AmxTilesReference (the software model) in the tests on any AVX512-BF16 CPU.
// Runs on the hardware tiles on a Xeon with AMX (tests/test_cpu_bf16_attention, 2026-12-04).
#include <algorithm>
#include <cstdint>

#include "focuspatch/backend/cpu/amx_tiles.hpp"
#include "focuspatch/backend/cpu/attention_bf16_avx512.hpp"
#include "focuspatch/backend/cpu/scratch_buffer.hpp"

#if defined(__AVX512F__) && defined(FOCUSPATCH_HAVE_AMX_TILES)

namespace focuspatch {
namespace attention_amx_detail {

using attention_detail::kLanes;
using attention_detail::kPanelKeys;
using attention_detail::round_up;

inline constexpr int kTile = 32;        // query rows, keys and columns per block product
inline constexpr int kPairsPerStep = 16;  // dimension pairs one A tile row holds

template <class Tiles>
class AmxFamily {
 public:
  static constexpr int kTileRows = kTile, kBlockRows = 2 * kTile, kKeyAlign = kTile, kDimAlign = kTile;

  std::uint32_t* k_pairs = nullptr;    // K in panels of kPanelKeys keys: [panel][dim pair][key in panel]
  std::uint32_t* v_pairs = nullptr;    // V as key pairs: [key pair][dim_padded], keys_padded / 2 rows
  std::uint32_t* q_pairs = nullptr;    // the task's query rows as dim pairs: [kBlockRows][pairs_]
  std::uint16_t* p_bf16 = nullptr;     // one tile's probabilities in bf16: [kTileRows][keys_padded]
  float* scores = nullptr;             // scores, then fp32 probabilities, of one tile: [kTileRows][keys_padded]
  float* block = nullptr;              // one 32 x 32 block of P V before its rows are scaled and stored
  float* inv_sum = nullptr;            // 1 / softmax denominator per block row
  const float* packed_head = nullptr;  // the K (or V) pointer whose panels are packed now

  // keys_padded and dim_padded are multiples of 32 (run_attention pads to kKeyAlign, kDimAlign).
  void reserve(std::int64_t keys_padded, std::int64_t dim, std::int64_t dim_padded) {
    Tiles::configure(full_amx_tiles());  // per call: tiles are per-thread state others may change
    pairs_ = round_up((dim + 1) / 2, kPairsPerStep);
    // In 32-bit units, each part a multiple of 16 so that every part starts 64-byte aligned.
    const std::int64_t k = keys_padded * pairs_, v = keys_padded / 2 * dim_padded, q = kBlockRows * pairs_,
                       s = kTileRows * keys_padded, p = kTileRows * keys_padded / 2, out = kTile * kTile, sums = kBlockRows;
    float* base = memory_.get(static_cast<std::size_t>(k + v + q + s + p + out + round_up(sums, kLanes)), "cpu amx attention");
    k_pairs = reinterpret_cast<std::uint32_t*>(base);
    v_pairs = k_pairs + k;
    q_pairs = v_pairs + v;
    scores = base + (k + v + q);
    p_bf16 = reinterpret_cast<std::uint16_t*>(scores + s);
    block = scores + s + p;
    inv_sum = block + out;
    packed_head = nullptr;  // the buffer may hold new contents at the same address: always repack
  }

  // K pair panels and V key pairs of one head, zero-padded to whole tiles.
  void pack(const float* k, const float* v, std::int64_t stride, std::int64_t seq, std::int64_t keys_padded, std::int64_t dim,
            std::int64_t dim_padded) {
    attention_bf16_detail::pack_key_pairs(k, stride, seq, keys_padded, dim, pairs_, k_pairs);
    attention_bf16_detail::pack_value_pairs(v, stride, seq, keys_padded / 2, dim, dim_padded, v_pairs);
  }

  void load_queries(const float* q, std::int64_t stride, std::int64_t rows, std::int64_t rows_padded, std::int64_t dim) {
    attention_bf16_detail::load_query_pairs(q, stride, rows, rows_padded, dim, pairs_, q_pairs);
  }

  // scores[32][keys_vec) of the tile at block row t (keys_vec a multiple of 32).
  void score_tile(std::int64_t t, std::int64_t /*dim*/, std::int64_t keys_vec, std::int64_t keys_padded) {
    const std::uint32_t* q = q_pairs + t * pairs_;
    for (std::int64_t j = 0; j < keys_vec; j += kTile) {
      const std::int64_t first = j / kPanelKeys * kPanelKeys;
      const std::int64_t width = std::min<std::int64_t>(kPanelKeys, keys_padded - first);
      const std::uint32_t* panel = k_pairs + first * pairs_ + (j - first);
      amx_product_32x32<Tiles>(q, pairs_ * 4, panel, width * 4, pairs_ / kPairsPerStep, scores + j, keys_padded * 4);
    }
  }

  // out = bf16(probabilities in scores) bf16(V) / sum, the tile's first rows_out rows stored.
  FOCUSPATCH_TARGET_AVX512BF16 void value_tile(std::int64_t t, std::int64_t keys, std::int64_t dim, std::int64_t dim_padded,
                                               std::int64_t keys_padded, std::int64_t rows_out, float* out, std::int64_t out_stride) {
    const std::int64_t keys_tiled = round_up(keys, kTile);
    for (int r = 0; r < kTileRows; ++r)
      for (std::int64_t j = 0; j < keys_tiled; j += 32)
        _mm512_storeu_si512(p_bf16 + r * keys_padded + j, attention_bf16_detail::bf16_pairs(scores + r * keys_padded + j, keys - j));
    for (std::int64_t c0 = 0; c0 < dim; c0 += kTile) {
      amx_product_32x32<Tiles>(p_bf16, keys_padded * 2, v_pairs + c0, dim_padded * 4, keys_tiled / kTile, block, kTile * 4);
      const __mmask16 lo = attention_detail::tail_mask(dim - c0);
      const __mmask16 hi = dim - c0 > kLanes ? attention_detail::tail_mask(dim - c0 - kLanes) : __mmask16(0);
      for (std::int64_t r = 0; r < rows_out; ++r) {
        const __m512 inv = _mm512_set1_ps(inv_sum[t + r]);
        float* dst = out + r * out_stride + c0;
        _mm512_mask_storeu_ps(dst, lo, _mm512_mul_ps(_mm512_load_ps(block + r * kTile), inv));
        _mm512_mask_storeu_ps(dst + kLanes, hi, _mm512_mul_ps(_mm512_load_ps(block + r * kTile + kLanes), inv));
      }
    }
  }

 private:
  std::int64_t pairs_ = 0;  // dimension pairs per key and query: ceil(head_dim / 2) rounded up to 16
  ScratchBuffer memory_;
};

}  // namespace attention_amx_detail

// cpu_attention_f32's attention with both products on AMX tiles (bf16 operands, fp32 sums); with
// Tiles = AmxTiles it needs cpu_features().amx.
template <class Tiles = AmxTiles>
inline void cpu_attention_bf16_amx(const float* qkv, std::int64_t batch, std::int64_t seq, int heads, int head_dim, bool causal, float* out,
                                   AttentionKind kind = AttentionKind::QueryKey) {
  attention_detail::run_attention<attention_amx_detail::AmxFamily<Tiles>>(qkv, batch, seq, heads, head_dim, causal, out, kind);
}

}  // namespace focuspatch

#endif
