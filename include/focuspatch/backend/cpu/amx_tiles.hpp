#pragma once
// The eight AMX tile registers (Intel Sapphire Rapids and later) as the AMX kernels use them:
// configure, zero, load, store, and tdpbf16ps (C += A B over bf16 pairs, fp32 sums). Kernels take
// the tile file as a template parameter, `Tiles`: AmxTiles below is the hardware; its software
// model, AmxTilesReference (amx_tiles_reference.hpp), runs the same kernel code on a CPU without
// AMX, checking every tile shape as the hardware would, which is how the kernels are tested on
// machines without AMX.
//
// The instructions are written as inline assembly with the tile number an immediate operand (%c)
// rather than through GCC's _tile_* macros, which paste the number into the mnemonic and so
// cannot take a template parameter. Two more reasons: GCC 12's _tile_loadd declares no memory
// input (the compiler may move stores to the loaded buffer past it) and _tile_loadconfig passes
// only 8 of the 64 configuration bytes as its memory operand; here every load and store clobbers
// memory and ldtilecfg reads the whole struct.
//
// Linux grants the tile data state only on request (arch_prctl, done once by CpuFeatures::detect
// in isa.hpp): the hardware tiles may only be used where cpu_features().amx is true.
#include <cstdint>

namespace focuspatch {

// ldtilecfg's 64-byte operand, palette 1: the rows and bytes per row of each tile (16 slots, 8 used).
struct alignas(64) AmxTileConfig {
  std::uint8_t palette = 1, start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t bytes_per_row[16] = {};
  std::uint8_t rows[16] = {};
};
static_assert(sizeof(AmxTileConfig) == 64);

inline constexpr int kAmxTiles = 8, kAmxMaxRows = 16, kAmxMaxBytesPerRow = 64;

// All eight tiles at their largest, 16 rows x 64 bytes (16 x 16 fp32, or 16 x 32 bf16): the one
// shape every kernel here uses; edges are handled by zero padding in memory, not smaller tiles.
inline AmxTileConfig full_amx_tiles() {
  AmxTileConfig config;
  for (int t = 0; t < kAmxTiles; ++t) {
    config.bytes_per_row[t] = kAmxMaxBytesPerRow;
    config.rows[t] = kAmxMaxRows;
  }
  return config;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FOCUSPATCH_HAVE_AMX_TILES 1

// The hardware tile file. Strides are in bytes, as the instructions take them.
struct AmxTiles {
  static constexpr const char* name = "amx";

  static void configure(const AmxTileConfig& config) { __asm__ volatile("ldtilecfg %0" ::"m"(config)); }

  template <int T>
  static void zero() {
    static_assert(T >= 0 && T < kAmxTiles);
    __asm__ volatile("tilezero %%tmm%c0" ::"i"(T));
  }

  template <int T>
  static void load(const void* base, std::int64_t stride) {
    static_assert(T >= 0 && T < kAmxTiles);
    __asm__ volatile("tileloadd (%0,%1,1), %%tmm%c2" ::"r"(base), "r"(stride), "i"(T) : "memory");
  }

  template <int T>
  static void store(void* base, std::int64_t stride) {
    static_assert(T >= 0 && T < kAmxTiles);
    __asm__ volatile("tilestored %%tmm%c2, (%0,%1,1)" ::"r"(base), "r"(stride), "i"(T) : "memory");
  }

  // tmm C += tmm A . tmm B: C[m][n] += sum_k A[m][2k] B[k][2n] + A[m][2k + 1] B[k][2n + 1].
  template <int C, int A, int B>
  static void dot_bf16() {
    static_assert(C != A && C != B && A != B, "tdpbf16ps needs three distinct tiles");
    __asm__ volatile("tdpbf16ps %%tmm%c2, %%tmm%c1, %%tmm%c0" ::"i"(C), "i"(A), "i"(B));  // AT&T: src2, src1, dst
  }
};
#endif

// The block product every AMX kernel here is built on, 32 x 32 fp32 from tiles as
//   tmm0..3  C: rows [0, 16) and [16, 32) x columns [0, 16) and [16, 32)
//   tmm4..5  A: rows [0, 16) and [16, 32), 32 bf16 (16 pairs) of the summed dimension each
//   tmm6..7  B: 16 pair rows of columns [0, 16) and [16, 32)
// so each step loads 4 tiles and runs 4 tdpbf16ps (16 x 16 x 32 multiply-adds each):
//   out[32][32] (rows out_stride bytes apart) (= | +=) A B over `steps` steps of 32 summed
// elements, A row r, step s at a + r * a_stride + 64 s bytes; B pair row q of step s at b + (16 s
// + q) * b_stride bytes, its columns [16, 32) 64 bytes further. Strides are in bytes; `add` loads
// the C tiles from `out` instead of zeroing them (partial sums of an earlier K block).
//
// Each load is issued right after the last product reading its tile and as early as the next
// product needing it allows: the tiles are not renamed, so a load into tmm5 waits for both
// products still reading it. Measured on a Xeon with AMX (2 cores, operands in L1, 8 steps), this
// order ran 75 % of the tdpbf16ps peak against 63 % for all four loads first.
template <class Tiles>
inline void amx_product_32x32(const void* a, std::int64_t a_stride, const void* b, std::int64_t b_stride, std::int64_t steps, float* out,
                              std::int64_t out_stride, bool add = false) {
  const auto* a_bytes = static_cast<const std::uint8_t*>(a);
  const auto* b_bytes = static_cast<const std::uint8_t*>(b);
  auto* out_bytes = reinterpret_cast<std::uint8_t*>(out);
  if (add) {
    Tiles::template load<0>(out_bytes, out_stride);
    Tiles::template load<1>(out_bytes + 64, out_stride);
    Tiles::template load<2>(out_bytes + 16 * out_stride, out_stride);
    Tiles::template load<3>(out_bytes + 16 * out_stride + 64, out_stride);
  } else {
    Tiles::template zero<0>();
    Tiles::template zero<1>();
    Tiles::template zero<2>();
    Tiles::template zero<3>();
  }
  for (std::int64_t s = 0; s < steps; ++s) {
    Tiles::template load<4>(a_bytes + 64 * s, a_stride);
    Tiles::template load<6>(b_bytes + 16 * s * b_stride, b_stride);
    Tiles::template dot_bf16<0, 4, 6>();
    Tiles::template load<7>(b_bytes + 16 * s * b_stride + 64, b_stride);
    Tiles::template dot_bf16<1, 4, 7>();
    Tiles::template load<5>(a_bytes + 16 * a_stride + 64 * s, a_stride);
    Tiles::template dot_bf16<2, 5, 6>();
    Tiles::template dot_bf16<3, 5, 7>();
  }
  Tiles::template store<0>(out_bytes, out_stride);
  Tiles::template store<1>(out_bytes + 64, out_stride);
  Tiles::template store<2>(out_bytes + 16 * out_stride, out_stride);
  Tiles::template store<3>(out_bytes + 16 * out_stride + 64, out_stride);
}

}  // namespace focuspatch
