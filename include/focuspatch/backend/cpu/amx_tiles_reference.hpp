#pragma once
// A software model of the eight AMX tile registers with AmxTiles' interface (amx_tiles.hpp), so
// that the AMX kernels, unchanged, run on any CPU: on one without AMX this is how they are tested.
// It follows the pseudo-code of Intel's SDM (vol. 2, LDTILECFG, TILELOADD, TILESTORED, TILEZERO,
// TDPBF16PS) and raises as an Error what the hardware would fault on (#GP on a bad configuration,
// #UD on a tile used unconfigured or with shapes that do not match), so a kernel that passes here
// uses its tiles as the hardware demands:
//
//   * a load copies `rows` rows of `bytes_per_row` bytes, row r from base + r * stride, and zeroes
//     the rest of the tile; a store writes the same rows back;
//   * tdpbf16ps needs rows(A) = rows(C), bytes(B) = bytes(C) and bytes(A) / 4 = rows(B) (A's bf16
//     pairs are B's rows), then for every C[m][n], for k in order, adds A[m][2k] B[k][2n] and then
//     A[m][2k + 1] B[k][2n + 1] in fp32, bf16 inputs that are denormal read as zero and denormal
//     results flushed to zero, rounding to nearest even.
//
// Each thread has its own tiles, as on the hardware. Memory is read and written with memcpy, so a
// sanitizer build checks every tile access against its buffer.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "focuspatch/backend/cpu/amx_tiles.hpp"
#include "focuspatch/core/error.hpp"
#include "focuspatch/core/half.hpp"

namespace focuspatch {

struct AmxTilesReference {
  static constexpr const char* name = "amx (software model)";

  static void configure(const AmxTileConfig& config) {
    require(config.palette == 1, "amx tile model: ldtilecfg with palette ", int{config.palette}, " (only palette 1 is modelled)");
    require(config.start_row == 0, "amx tile model: ldtilecfg with start_row ", int{config.start_row}, " (must be 0)");
    for (const std::uint8_t byte : config.reserved) require(byte == 0, "amx tile model: ldtilecfg with reserved bytes set");
    for (int t = 0; t < 16; ++t) {
      const int rows = config.rows[t], bytes = config.bytes_per_row[t];
      if (t >= kAmxTiles) {
        require(rows == 0 && bytes == 0, "amx tile model: ldtilecfg configures tile ", t, " of palette 1's ", kAmxTiles);
        continue;
      }
      require(rows <= kAmxMaxRows && bytes <= kAmxMaxBytesPerRow, "amx tile model: tile ", t, " configured as ", rows, " rows x ",
              bytes, " bytes, more than ", kAmxMaxRows, " x ", kAmxMaxBytesPerRow);
      require((rows == 0) == (bytes == 0), "amx tile model: tile ", t, " configured with ", rows, " rows of ", bytes, " bytes");
    }
    State& s = state();
    s.config = config;
    s.configured = true;
    std::memset(s.data, 0, sizeof s.data);  // ldtilecfg zeroes every tile
  }

  template <int T>
  static void zero() {
    static_assert(T >= 0 && T < kAmxTiles);
    check_configured(T, "tilezero");
    std::memset(state().data[T], 0, sizeof state().data[T]);
  }

  template <int T>
  static void load(const void* base, std::int64_t stride) {
    static_assert(T >= 0 && T < kAmxTiles);
    State& s = state();
    check_configured(T, "tileloadd");
    std::memset(s.data[T], 0, sizeof s.data[T]);
    for (int r = 0; r < s.config.rows[T]; ++r)
      std::memcpy(s.data[T][r], static_cast<const std::uint8_t*>(base) + r * stride, s.config.bytes_per_row[T]);
  }

  template <int T>
  static void store(void* base, std::int64_t stride) {
    static_assert(T >= 0 && T < kAmxTiles);
    State& s = state();
    check_configured(T, "tilestored");
    for (int r = 0; r < s.config.rows[T]; ++r)
      std::memcpy(static_cast<std::uint8_t*>(base) + r * stride, s.data[T][r], s.config.bytes_per_row[T]);
  }

  template <int C, int A, int B>
  static void dot_bf16() {
    static_assert(C != A && C != B && A != B, "tdpbf16ps needs three distinct tiles");
    State& s = state();
    check_configured(C, "tdpbf16ps");
    check_configured(A, "tdpbf16ps");
    check_configured(B, "tdpbf16ps");
    const int m_rows = s.config.rows[C], c_bytes = s.config.bytes_per_row[C];
    const int a_bytes = s.config.bytes_per_row[A], b_rows = s.config.rows[B];
    require(s.config.rows[A] == m_rows, "amx tile model: tdpbf16ps with ", int{s.config.rows[A]}, " rows in A (tmm", A, ") but ",
            m_rows, " in C (tmm", C, ")");
    require(s.config.bytes_per_row[B] == c_bytes, "amx tile model: tdpbf16ps with ", int{s.config.bytes_per_row[B]},
            " bytes per row in B (tmm", B, ") but ", c_bytes, " in C (tmm", C, ")");
    require(a_bytes % 4 == 0 && c_bytes % 4 == 0 && a_bytes / 4 == b_rows, "amx tile model: tdpbf16ps with ", a_bytes / 4,
            " bf16 pairs per row of A (tmm", A, ") but ", b_rows, " rows in B (tmm", B, ")");
    for (int m = 0; m < m_rows; ++m) {
      float row[16];
      std::memcpy(row, s.data[C][m], sizeof row);
      for (int k = 0; k < a_bytes / 4; ++k)
        for (int n = 0; n < c_bytes / 4; ++n) {
          row[n] = flush(std::fma(bf16(s.data[A][m], 2 * k), bf16(s.data[B][k], 2 * n), row[n]));
          row[n] = flush(std::fma(bf16(s.data[A][m], 2 * k + 1), bf16(s.data[B][k], 2 * n + 1), row[n]));
        }
      std::memset(s.data[C][m], 0, sizeof s.data[C][m]);
      std::memcpy(s.data[C][m], row, static_cast<std::size_t>(c_bytes));
    }
  }

 private:
  struct State {
    AmxTileConfig config;
    bool configured = false;
    alignas(64) std::uint8_t data[kAmxTiles][kAmxMaxRows][kAmxMaxBytesPerRow] = {};
  };
  static State& state() {
    thread_local State s;
    return s;
  }
  static void check_configured(int t, const char* instruction) {
    const State& s = state();
    require(s.configured, "amx tile model: ", instruction, " before ldtilecfg");
    require(s.config.rows[t] != 0, "amx tile model: ", instruction, " on tmm", t, ", which is not configured");
  }
  // Element i of a row of bf16, denormals read as zero.
  static float bf16(const std::uint8_t* row, int i) {
    std::uint16_t bits;
    std::memcpy(&bits, row + 2 * i, sizeof bits);
    if ((bits & 0x7f80u) == 0) bits &= 0x8000u;
    return bf16_to_float(bits);
  }
  static float flush(float x) { return std::fpclassify(x) == FP_SUBNORMAL ? std::copysign(0.0f, x) : x; }
};

}  // namespace focuspatch
