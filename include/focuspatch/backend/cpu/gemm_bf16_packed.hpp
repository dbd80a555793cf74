#pragma once
// A linear layer's weight matrix W[out, in] in bf16, converted and packed ONCE, at load, into the
// layout both bf16 kernels (vdpbf16ps in gemm_bf16_avx512.hpp, AMX tiles in gemm_bf16_amx.hpp)
// read as it is, so no call ever converts or repacks a weight.
//
// Both instructions multiply PAIRS of bf16 along K: lane n of a 32-bit lane vector holds
// (W[n][k], W[n][k + 1]). So W^T is cut into panels of 32 output columns; a panel holds, for each
// K pair p, 32 columns x 2 values = 64 bf16 = 128 bytes (two zmm rows of 16 columns):
//
//   element (n, k) -> panel n / 32, at  p * 64 + (n % 32) * 2 + (k % 2),  p = k / 2
//
// vdpbf16ps loads the two halves of one pair row; an AMX B tile is 16 consecutive pair rows of
// one half (row stride 128 bytes), exactly what tdpbf16ps wants. K is zero-padded to a multiple of
// 32 (one AMX tile depth) and N to whole panels, so neither kernel ever reads past the buffer.
// Stored bf16 weights are copied bit for bit; fp32 and fp16 ones are rounded to nearest even.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "focuspatch/backend/cpu/gemm_common.hpp"
#include "focuspatch/core/half.hpp"

namespace focuspatch {

class PackedBf16Matrix {
 public:
  static constexpr std::int64_t kPanelColumns = 32;  // output columns per panel
  static constexpr std::int64_t kKAlign = 32;        // K padded to this (one AMX tile of pairs)

  explicit PackedBf16Matrix(const StoredMatrix& w)
      : out_(w.out), in_(w.in), pairs_((w.in + kKAlign - 1) / kKAlign * kKAlign / 2), panels_((w.out + kPanelColumns - 1) / kPanelColumns) {
    require(w.dtype == DType::F32 || w.dtype == DType::F16 || w.dtype == DType::BF16, "cpu bf16 packing: weights of dtype ",
            dtype_name(w.dtype), " are not supported (f32, f16, bf16 are)");
    const std::size_t count = static_cast<std::size_t>(std::max<std::int64_t>(panels_ * panel_elements(), 1));
    void* p = std::aligned_alloc(64, (count * sizeof(std::uint16_t) + 63) / 64 * 64);
    if (!p) fail("cpu bf16 packing: out of memory for a ", w.out, " x ", w.in, " matrix");
    data_.reset(static_cast<std::uint16_t*>(p));
    std::fill_n(data_.get(), count, std::uint16_t{0});
    const auto* f32 = static_cast<const float*>(w.data);
    const auto* u16 = static_cast<const std::uint16_t*>(w.data);
    for (std::int64_t n = 0; n < out_; ++n) {
      std::uint16_t* column = data_.get() + (n / kPanelColumns) * panel_elements() + (n % kPanelColumns) * 2;
      for (std::int64_t k = 0; k < in_; ++k) {
        const std::int64_t at = n * in_ + k;
        std::uint16_t bits;
        if (w.dtype == DType::BF16) bits = u16[at];
        else if (w.dtype == DType::F16) bits = float_to_bf16(half_to_float(u16[at]));
        else bits = float_to_bf16(f32[at]);
        column[(k / 2) * 2 * kPanelColumns + (k % 2)] = bits;
      }
    }
  }

  std::int64_t out() const { return out_; }
  std::int64_t in() const { return in_; }
  std::int64_t pairs() const { return pairs_; }  // K pairs per panel, padding included
  std::int64_t panels() const { return panels_; }
  std::int64_t panel_elements() const { return pairs_ * 2 * kPanelColumns; }
  // Panel j (columns [32 j, 32 j + 32)) from K pair p on.
  const std::uint16_t* panel(std::int64_t j, std::int64_t p = 0) const {
    return data_.get() + j * panel_elements() + p * 2 * kPanelColumns;
  }
  // The value packed for W[n][k] (tests, and the reference that checks the packing).
  float at(std::int64_t n, std::int64_t k) const { return bf16_to_float(panel(n / kPanelColumns, k / 2)[(n % kPanelColumns) * 2 + k % 2]); }
  std::size_t bytes() const { return static_cast<std::size_t>(panels_ * panel_elements()) * sizeof(std::uint16_t); }

 private:
  struct Free {
    void operator()(std::uint16_t* p) const { std::free(p); }
  };
  std::int64_t out_, in_, pairs_, panels_;
  std::unique_ptr<std::uint16_t, Free> data_;
};

}  // namespace focuspatch
