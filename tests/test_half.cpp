#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "focuspatch/core/half.hpp"

using namespace focuspatch;

TEST_CASE("fp16 decoding matches IEEE binary16 bit patterns") {
  CHECK(half_to_float(0x3c00) == 1.0f);
  CHECK(half_to_float(0xc000) == -2.0f);
  CHECK(half_to_float(0x7bff) == 65504.0f);
  CHECK(half_to_float(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(half_to_float(0x03ff) == std::ldexp(1023.0f, -24));  // largest subnormal
  CHECK(std::isinf(half_to_float(0x7c00)));
  CHECK(std::isnan(half_to_float(0x7e00)));
  CHECK(std::signbit(half_to_float(0x8000)));
}

TEST_CASE("fp16 encoding rounds to nearest even and round-trips every half value") {
  CHECK(float_to_half(1.0f) == 0x3c00);
  CHECK(float_to_half(65520.0f) == 0x7c00);  // halfway above max rounds to inf
  CHECK(float_to_half(65519.0f) == 0x7bff);
  CHECK(float_to_half(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);       // tie -> even
  CHECK(float_to_half(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);   // tie -> even (up)
  CHECK(float_to_half(std::ldexp(1.0f, -25)) == 0x0000);              // tie at half of min subnormal -> 0
  CHECK(float_to_half(std::ldexp(1.5f, -25)) == 0x0001);
  for (unsigned h = 0; h < 0x10000; ++h) {
    const auto bits = static_cast<std::uint16_t>(h);
    const float f = half_to_float(bits);
    if (std::isnan(f)) continue;
    REQUIRE(float_to_half(f) == bits);
  }
}

TEST_CASE("bf16 conversion keeps the top 16 bits with round to nearest even") {
  CHECK(bf16_to_float(0x3f80) == 1.0f);
  CHECK(float_to_bf16(1.0f) == 0x3f80);
  CHECK(float_to_bf16(std::bit_cast<float>(0x3f808000u)) == 0x3f80);  // tie -> even (down)
  CHECK(float_to_bf16(std::bit_cast<float>(0x3f818000u)) == 0x3f82);  // tie -> even (up)
  CHECK(float_to_bf16(std::bit_cast<float>(0x3f808001u)) == 0x3f81);
  CHECK(std::isnan(bf16_to_float(float_to_bf16(std::numeric_limits<float>::quiet_NaN()))));
}
