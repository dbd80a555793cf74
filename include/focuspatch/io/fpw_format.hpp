#pragma once
// The .fpw weight file: one file holding a model's named tensors and typed key/value metadata,
// laid out like GGUF so it can be memory-mapped and used in place.
//
//   offset  size  field
//   0       8     magic "FPWEIGHT"
//   8       4     u32 version (1)
//   12      4     u32 alignment of every tensor's data (64)
//   16      8     u64 metadata entry count
//   24      8     u64 tensor count
//   32      8     u64 data section offset (absolute, multiple of alignment)
//   40      8     u64 data section size
//   48      4     u32 CRC-32 of bytes [56, data offset): metadata and tensor table
//   52      4     u32 CRC-32 of the data section (checked on demand: it costs a pass over the file)
//   56      ...   metadata entries: str key, u32 kind, value
//                 tensor table: str name, u32 dtype, u32 ndim, u64 dims[ndim], u64 offset, u64 nbytes
//   (pad)         zeros up to data offset
//   data          each tensor at data offset + its offset, aligned
// A str is a u32 byte length and the UTF-8 bytes. Everything is little-endian.
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace focuspatch::fpw {

inline constexpr std::array<char, 8> kMagic = {'F', 'P', 'W', 'E', 'I', 'G', 'H', 'T'};
inline constexpr std::uint32_t kVersion = 1;
inline constexpr std::uint32_t kAlignment = 64;
inline constexpr std::size_t kHeaderSize = 56;
inline constexpr std::uint32_t kMaxDims = 8;
inline constexpr std::uint32_t kMaxStringBytes = 64u << 20;

enum class MetaKind : std::uint32_t { Int = 0, Float = 1, String = 2, IntArray = 3, FloatArray = 4, StringArray = 5 };

struct MetaValue {
  MetaKind kind = MetaKind::Int;
  std::int64_t int_value = 0;
  double float_value = 0.0;
  std::string string_value;
  std::vector<std::int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;

  static MetaValue of(std::int64_t v) { MetaValue m; m.kind = MetaKind::Int; m.int_value = v; return m; }
  static MetaValue of(double v) { MetaValue m; m.kind = MetaKind::Float; m.float_value = v; return m; }
  static MetaValue of(std::string v) { MetaValue m; m.kind = MetaKind::String; m.string_value = std::move(v); return m; }
  static MetaValue of(std::vector<std::int64_t> v) { MetaValue m; m.kind = MetaKind::IntArray; m.ints = std::move(v); return m; }
  static MetaValue of(std::vector<double> v) { MetaValue m; m.kind = MetaKind::FloatArray; m.floats = std::move(v); return m; }
  static MetaValue of(std::vector<std::string> v) { MetaValue m; m.kind = MetaKind::StringArray; m.strings = std::move(v); return m; }
};

inline std::string_view meta_kind_name(MetaKind k) {
  switch (k) {
    case MetaKind::Int: return "int";
    case MetaKind::Float: return "float";
    case MetaKind::String: return "string";
    case MetaKind::IntArray: return "int array";
    case MetaKind::FloatArray: return "float array";
    case MetaKind::StringArray: return "string array";
  }
  return "unknown";
}

inline constexpr std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace focuspatch::fpw
