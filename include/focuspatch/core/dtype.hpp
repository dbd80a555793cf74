#pragma once
// Element types that appear in weight files. The runtime computes in fp32; F16 and BF16 are
// storage formats decoded on load.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "focuspatch/core/error.hpp"

namespace focuspatch {

enum class DType : std::uint32_t { F32 = 0, F16 = 1, BF16 = 2, F64 = 3, I64 = 4, I32 = 5, I16 = 6, I8 = 7, U8 = 8, Bool = 9 };

inline std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::F64: case DType::I64: return 8;
    case DType::I8: case DType::U8: case DType::Bool: return 1;
  }
  fail("unknown dtype code ", static_cast<std::uint32_t>(t));
}

inline std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::F64: return "f64";
    case DType::I64: return "i64";
    case DType::I32: return "i32";
    case DType::I16: return "i16";
    case DType::I8: return "i8";
    case DType::U8: return "u8";
    case DType::Bool: return "bool";
  }
  return "unknown";
}

inline bool is_valid_dtype_code(std::uint32_t code) { return code <= static_cast<std::uint32_t>(DType::Bool); }

}  // namespace focuspatch
