#pragma once
// Reads .safetensors files (Hugging Face's format): an 8-byte little-endian header length, a JSON
// header mapping tensor names to {dtype, shape, data_offsets} plus optional string __metadata__,
// then the tensor bytes. Tensors are returned as zero-copy views into the mapping. We apply the
// reference implementation's validation: the header is bounded in size, offsets lie within the
// data, each tensor's byte count matches its shape and dtype, and the tensors cover the data
// exactly, without overlaps or holes (which is what keeps a file from being two formats at once).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "focuspatch/core/dtype.hpp"
#include "focuspatch/core/error.hpp"
#include "focuspatch/io/json.hpp"
#include "focuspatch/io/little_endian.hpp"
#include "focuspatch/io/mapped_file.hpp"
#include "focuspatch/io/tensor_source.hpp"

namespace focuspatch {

namespace safetensors {

inline constexpr std::uint64_t kMaxHeaderSize = 100'000'000;  // the reference implementation's limit

inline std::optional<DType> dtype_from_name(std::string_view n) {
  if (n == "F32") return DType::F32;
  if (n == "F16") return DType::F16;
  if (n == "BF16") return DType::BF16;
  if (n == "F64") return DType::F64;
  if (n == "I64") return DType::I64;
  if (n == "I32") return DType::I32;
  if (n == "I16") return DType::I16;
  if (n == "I8") return DType::I8;
  if (n == "U8") return DType::U8;
  if (n == "BOOL") return DType::Bool;
  return std::nullopt;
}

// Cheap sniff used for format detection: a plausible header length followed by '{'.
inline bool looks_like_safetensors(std::span<const std::byte> bytes) {
  if (bytes.size() < 10) return false;
  const auto n = load_le<std::uint64_t>(bytes.data());
  return n >= 2 && n <= kMaxHeaderSize && n <= bytes.size() - 8 && bytes[8] == std::byte{'{'};
}

namespace detail {

inline void read_into(TensorArchive& out) {
  const auto bytes = out.file_bytes();
  const std::string& what = out.path();
  require(bytes.size() >= 8, what, ": too small to be a safetensors file (", bytes.size(), " bytes)");
  const auto header_size = load_le<std::uint64_t>(bytes.data());
  require(header_size <= kMaxHeaderSize, what, ": safetensors header length ", header_size,
          " is larger than the format allows (", kMaxHeaderSize, "); not a safetensors file or corrupt");
  require(header_size <= bytes.size() - 8, what, ": safetensors header length ", header_size, " runs past the end of the ",
          bytes.size(), "-byte file; it is truncated");
  const std::string_view header(reinterpret_cast<const char*>(bytes.data()) + 8, static_cast<std::size_t>(header_size));
  require(!header.empty() && header[0] == '{', what, ": safetensors header does not start with '{'; not a safetensors file");
  const json::Value root = json::parse(header, what + " (safetensors header)");
  require(root.is_object(), what, ": safetensors header is not a JSON object");

  const auto data = bytes.subspan(8 + static_cast<std::size_t>(header_size));
  struct Span {
    std::uint64_t begin, end;
    std::size_t member;
  };
  std::vector<Span> spans;
  std::vector<StoredTensor> tensors;
  const auto& members = root.as_object();
  for (std::size_t m = 0; m < members.size(); ++m) {
    const std::string& name = members[m].first;  // not a structured binding: lambdas below capture it
    const json::Value& info = members[m].second;
    if (name == "__metadata__") {
      require(info.is_object(), what, ": __metadata__ is not a JSON object");
      for (const auto& [key, value] : info.as_object()) {
        require(value.is_string(), what, ": __metadata__ entry '", key, "' is not a string");
        out.add_metadata(key, value.as_string());
      }
      continue;
    }
    auto bad = [&](auto&&... parts) { fail(what, ": tensor '", name, "' ", parts...); };
    if (!info.is_object()) bad("is described by a JSON ", json::type_name(info.type()), ", not an object");
    const json::Value* dtype = info.find("dtype");
    const json::Value* shape = info.find("shape");
    const json::Value* offsets = info.find("data_offsets");
    if (!dtype || !dtype->is_string()) bad("has no dtype string");
    if (!shape || !shape->is_array()) bad("has no shape array");
    if (!offsets || !offsets->is_array() || offsets->size() != 2) bad("has no data_offsets pair");
    const auto dt = dtype_from_name(dtype->as_string());
    if (!dt) bad("has dtype '", dtype->as_string(), "', which is not supported (F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL)");

    StoredTensor t;
    t.name = name;
    t.dtype = *dt;
    if (shape->size() > kMaxTensorRank) bad("has rank ", shape->size(), " (at most ", kMaxTensorRank, ")");
    std::int64_t count = 1;
    for (const json::Value& d : shape->as_array()) {
      if (!d.is_integer() || d.as_int64() < 0) bad("has a shape entry that is not a non-negative integer");
      if (focuspatch::detail::mul_overflows(count, d.as_int64(), count)) bad("has a shape whose element count overflows");
      t.shape.push_back(d.as_int64());
    }
    const json::Value& b = (*offsets)[0];
    const json::Value& e = (*offsets)[1];
    if (!b.is_integer() || !e.is_integer() || b.as_int64() < 0 || e.as_int64() < b.as_int64())
      bad("has invalid data_offsets");
    const auto begin = static_cast<std::uint64_t>(b.as_int64());
    const auto end = static_cast<std::uint64_t>(e.as_int64());
    if (end > data.size())
      bad("has data_offsets [", begin, ", ", end, "] beyond the ", data.size(), " data bytes; the file is truncated or corrupt");
    std::int64_t nbytes = 0;
    if (focuspatch::detail::mul_overflows(count, static_cast<std::int64_t>(dtype_size(t.dtype)), nbytes) ||
        static_cast<std::uint64_t>(nbytes) != end - begin)
      bad("has shape ", shape_string(t.shape), " of ", dtype_name(t.dtype), " but data_offsets span ", end - begin, " bytes");

    t.strides.assign(t.shape.size(), 1);
    // With a zero dimension first the element count is 0 whatever follows, so the strides (products
    // of the later dimensions) are checked on their own.
    for (std::size_t d = t.shape.size(); d-- > 1;)
      if (focuspatch::detail::mul_overflows(t.strides[d], t.shape[d], t.strides[d - 1])) bad("has a shape whose strides overflow");
    t.storage = data.subspan(static_cast<std::size_t>(begin), static_cast<std::size_t>(end - begin));
    spans.push_back({begin, end, tensors.size()});
    tensors.push_back(std::move(t));
  }

  std::sort(spans.begin(), spans.end(), [](const Span& x, const Span& y) {
    return x.begin != y.begin ? x.begin < y.begin : x.end < y.end;
  });
  std::uint64_t covered = 0;
  for (const Span& s : spans) {
    const std::string& name = tensors[s.member].name;
    require(s.begin >= covered, what, ": tensor '", name, "' overlaps another tensor's data (bytes ", s.begin, "..", s.end, ")");
    require(s.begin == covered, what, ": data bytes ", covered, "..", s.begin, " before tensor '", name,
            "' belong to no tensor; the file is corrupt");
    covered = s.end;
  }
  require(covered == data.size(), what, ": the last ", data.size() - covered,
          " data bytes belong to no tensor; the file is corrupt or has trailing data");
  for (StoredTensor& t : tensors) out.add(std::move(t));
}

}  // namespace detail
}  // namespace safetensors

inline TensorArchive read_safetensors(const std::string& path) {
  TensorArchive archive(MappedFile(path), "safetensors");
  safetensors::detail::read_into(archive);
  return archive;
}

// The same for bytes already in memory; `name` appears in error messages.
inline TensorArchive read_safetensors(std::vector<std::byte> bytes, std::string name) {
  TensorArchive archive(std::move(bytes), std::move(name), "safetensors");
  safetensors::detail::read_into(archive);
  return archive;
}

}  // namespace focuspatch
