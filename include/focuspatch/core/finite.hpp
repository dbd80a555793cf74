#pragma once
// Finding NaN and infinity in stored or computed values. A NaN in a weight or an input does not
// stop a forward pass: it spreads through every later sum and comes out as a NaN score that
// compares false with every threshold, i.e. an anomalous part passes inspection. So values that
// enter the model are checked where they enter, and an error names where the first bad one is.
//
// The tests look at the bits, not at std::isfinite, so they hold under -ffast-math too (which lets
// the compiler assume no NaN exists and fold isfinite to true).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>

#include "focuspatch/core/dtype.hpp"

namespace focuspatch {

struct NonFinite {
  std::size_t index;  // element index of the first NaN or infinity
  const char* what;   // "NaN", "+inf" or "-inf"
};

namespace detail {

// Index of the first element whose exponent bits are all set (NaN or infinity). Blocks are scanned
// without an early exit so the compiler vectorises the common case: no bad value at all.
template <class Bits>
std::optional<std::size_t> first_full_exponent(const unsigned char* bytes, std::size_t count, Bits exponent) {
  constexpr std::size_t kBlock = 4096;
  auto bits_at = [bytes](std::size_t i) {
    Bits b;
    std::memcpy(&b, bytes + i * sizeof(Bits), sizeof(Bits));
    return b;
  };
  for (std::size_t start = 0; start < count; start += kBlock) {
    const std::size_t end = std::min(count, start + kBlock);
    bool any = false;
    for (std::size_t i = start; i < end; ++i) any |= (bits_at(i) & exponent) == exponent;
    if (!any) continue;
    for (std::size_t i = start; i < end; ++i)
      if ((bits_at(i) & exponent) == exponent) return i;
  }
  return std::nullopt;
}

template <class Bits>
std::optional<NonFinite> find_non_finite_bits(const void* data, std::size_t count, Bits exponent, Bits mantissa) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  const auto i = first_full_exponent<Bits>(bytes, count, exponent);
  if (!i) return std::nullopt;
  Bits b;
  std::memcpy(&b, bytes + *i * sizeof(Bits), sizeof(Bits));
  const bool negative = (b >> (8 * sizeof(Bits) - 1)) != 0;
  return NonFinite{*i, (b & mantissa) ? "NaN" : (negative ? "-inf" : "+inf")};
}

}  // namespace detail

// The first NaN or infinity among count elements of dtype at data, if any. Integer dtypes hold
// neither.
inline std::optional<NonFinite> find_non_finite(DType dtype, const void* data, std::size_t count) {
  switch (dtype) {
    case DType::F32: return detail::find_non_finite_bits<std::uint32_t>(data, count, 0x7f800000u, 0x007fffffu);
    case DType::F16: return detail::find_non_finite_bits<std::uint16_t>(data, count, 0x7c00u, 0x03ffu);
    case DType::BF16: return detail::find_non_finite_bits<std::uint16_t>(data, count, 0x7f80u, 0x007fu);
    case DType::F64:
      return detail::find_non_finite_bits<std::uint64_t>(data, count, 0x7ff0000000000000ull, 0x000fffffffffffffull);
    default: return std::nullopt;
  }
}

inline std::optional<NonFinite> find_non_finite(std::span<const float> values) {
  return find_non_finite(DType::F32, values.data(), values.size());
}

}  // namespace focuspatch
