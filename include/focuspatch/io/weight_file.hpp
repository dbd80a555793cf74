#pragma once
// Reads a .fpw weight file in place from a memory mapping. Every count and offset in the header is
// checked against the bytes actually present before it is used, so a truncated or bit-flipped file
// is reported by name instead of crashing or allocating wildly.
#include <cstring>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "focuspatch/core/error.hpp"
#include "focuspatch/core/finite.hpp"
#include "focuspatch/core/tensor.hpp"
#include "focuspatch/io/fpw_format.hpp"
#include "focuspatch/io/inflate.hpp"
#include "focuspatch/io/mapped_file.hpp"

namespace focuspatch {

namespace detail {
// Bounds-checked little-endian reader over a byte span.
class ByteCursor {
 public:
  ByteCursor(std::span<const std::byte> bytes, std::size_t pos, std::string_view what)
      : bytes_(bytes), pos_(pos), what_(what) {}
  std::size_t pos() const { return pos_; }
  void need(std::size_t n, std::string_view field) const {
    if (n > bytes_.size() || pos_ > bytes_.size() - n)
      fail(what_, ": truncated while reading ", field, " at byte ", pos_, " (file has ", bytes_.size(), " bytes)");
  }
  template <class T>
  T read(std::string_view field) {
    need(sizeof(T), field);
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string read_string(std::string_view field) {
    const auto n = read<std::uint32_t>(field);
    require(n <= fpw::kMaxStringBytes, what_, ": ", field, " claims ", n, " bytes, more than any valid entry");
    need(n, field);
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  // A count of items each at least min_item_bytes long cannot exceed what is left of the input.
  std::uint64_t read_count(std::string_view field, std::size_t min_item_bytes) {
    const auto n = read<std::uint64_t>(field);
    require(n <= (bytes_.size() - pos_) / min_item_bytes, what_, ": ", field, " of ", n,
            " cannot fit in the file; it is corrupt or truncated");
    return n;
  }

 private:
  std::span<const std::byte> bytes_;
  std::size_t pos_;
  std::string_view what_;
};
}  // namespace detail

class WeightFile {
 public:
  explicit WeightFile(std::string path) : file_(std::move(path)) { parse(); }
  WeightFile(const WeightFile&) = delete;
  WeightFile& operator=(const WeightFile&) = delete;
  WeightFile(WeightFile&&) = default;

  const std::string& path() const { return file_.path(); }
  std::size_t file_size() const { return file_.size(); }

  // ---- metadata -------------------------------------------------------------------------------
  bool has_meta(const std::string& key) const { return meta_.count(key) != 0; }
  const fpw::MetaValue& meta(const std::string& key) const {
    auto it = meta_.find(key);
    if (it == meta_.end()) fail(path(), ": metadata key '", key, "' is missing");
    return it->second;
  }
  std::int64_t meta_int(const std::string& key) const { return typed(key, fpw::MetaKind::Int).int_value; }
  double meta_float(const std::string& key) const { return typed(key, fpw::MetaKind::Float).float_value; }
  const std::string& meta_string(const std::string& key) const { return typed(key, fpw::MetaKind::String).string_value; }
  const std::vector<double>& meta_floats(const std::string& key) const { return typed(key, fpw::MetaKind::FloatArray).floats; }
  const std::vector<std::string>& meta_strings(const std::string& key) const { return typed(key, fpw::MetaKind::StringArray).strings; }
  const std::map<std::string, fpw::MetaValue>& metadata() const { return meta_; }

  // ---- tensors --------------------------------------------------------------------------------
  const std::vector<std::string>& tensor_names() const { return order_; }
  const TensorView* find(const std::string& name) const {
    auto it = tensors_.find(name);
    return it == tensors_.end() ? nullptr : &it->second;
  }
  const TensorView& tensor(const std::string& name) const {
    const TensorView* t = find(name);
    if (!t) fail(path(), ": tensor '", name, "' is missing");
    return *t;
  }
  // The tensor, checked against the shape the model configuration implies.
  const TensorView& tensor(const std::string& name, const Shape& expected) const {
    const TensorView& t = tensor(name);
    require(t.shape == expected, path(), ": tensor '", name, "' has shape ", shape_string(t.shape), " but the model configuration needs ",
            shape_string(expected));
    return t;
  }

  // The data section's CRC-32 as the header records it: identifies the weights' content cheaply.
  std::uint32_t data_checksum() const { return data_crc_; }

  // Recomputes the data section's CRC-32 (one pass over the file) and compares with the header's.
  void verify_data_checksum() const {
    const std::uint32_t actual = crc32(file_.bytes().subspan(data_offset_, data_size_));
    require(actual == data_crc_, path(), ": data checksum mismatch (file says ", data_crc_, ", data gives ", actual,
            "); the file is corrupt");
  }

  // Every floating-point tensor holds only finite values. The checksum cannot catch a NaN that was
  // already in the checkpoint (a diverged run, a broken export); see core/finite.hpp for the harm.
  void verify_finite() const {
    for (const auto& name : order_) {
      const TensorView& t = tensors_.at(name);
      if (const auto bad = find_non_finite(t.dtype, t.data, static_cast<std::size_t>(t.numel())))
        fail(path(), ": tensor '", name, "' holds ", bad->what, " at element ", bad->index, " of ", t.numel(),
             "; the weights are damaged (was the checkpoint saved from a diverged run?)");
    }
  }

 private:
  const fpw::MetaValue& typed(const std::string& key, fpw::MetaKind kind) const {
    const fpw::MetaValue& v = meta(key);
    require(v.kind == kind, path(), ": metadata key '", key, "' is a ", fpw::meta_kind_name(v.kind), ", expected a ",
            fpw::meta_kind_name(kind));
    return v;
  }

  void parse() {
    const auto bytes = file_.bytes();
    const std::string& what = file_.path();
    require(bytes.size() >= fpw::kHeaderSize, what, ": too small to be a focuspatch weight file (", bytes.size(), " bytes)");
    if (std::memcmp(bytes.data(), fpw::kMagic.data(), fpw::kMagic.size()) != 0) {
      if (bytes.size() >= 4 && std::memcmp(bytes.data(), "PK\x03\x04", 4) == 0)
        fail(what, ": this is a PyTorch/zip checkpoint, not a .fpw file; convert it with focuspatch-convert");
      if (bytes.size() >= 4 && std::memcmp(bytes.data(), "GGUF", 4) == 0)
        fail(what, ": this is a GGUF file, not a .fpw file");
      fail(what, ": not a focuspatch weight file (bad magic)");
    }
    detail::ByteCursor cur(bytes, fpw::kMagic.size(), what);
    const auto version = cur.read<std::uint32_t>("version");
    require(version == fpw::kVersion, what, ": format version ", version, " is not supported (this build reads version ",
            fpw::kVersion, ")");
    const auto alignment = cur.read<std::uint32_t>("alignment");
    require(alignment >= 16 && alignment <= 4096 && (alignment & (alignment - 1)) == 0, what, ": invalid alignment ", alignment);
    const auto meta_count = cur.read<std::uint64_t>("metadata count");
    const auto tensor_count = cur.read<std::uint64_t>("tensor count");
    data_offset_ = cur.read<std::uint64_t>("data offset");
    data_size_ = cur.read<std::uint64_t>("data size");
    const auto header_crc = cur.read<std::uint32_t>("header checksum");
    data_crc_ = cur.read<std::uint32_t>("data checksum");

    require(data_offset_ >= fpw::kHeaderSize && data_offset_ <= bytes.size() && data_offset_ % alignment == 0, what,
            ": data section offset ", data_offset_, " is invalid for a file of ", bytes.size(), " bytes");
    require(data_size_ <= bytes.size() - data_offset_, what, ": truncated: data section needs ", data_size_, " bytes but only ",
            bytes.size() - data_offset_, " are present");
    require(crc32(bytes.subspan(fpw::kHeaderSize, data_offset_ - fpw::kHeaderSize)) == header_crc, what,
            ": header checksum mismatch; the metadata or tensor table is corrupt");

    // After the checksum, the table is what the writer wrote; the checks below guard against a
    // writer bug or a deliberately crafted file.
    const auto table = bytes.first(data_offset_);
    detail::ByteCursor t(table, fpw::kHeaderSize, what);
    require(meta_count <= table.size() && tensor_count <= table.size(), what, ": implausible entry counts");
    for (std::uint64_t i = 0; i < meta_count; ++i) {
      std::string key = t.read_string("metadata key");
      const auto kind = t.read<std::uint32_t>("metadata kind");
      fpw::MetaValue v;
      switch (static_cast<fpw::MetaKind>(kind)) {
        case fpw::MetaKind::Int: v = fpw::MetaValue::of(t.read<std::int64_t>(key)); break;
        case fpw::MetaKind::Float: v = fpw::MetaValue::of(t.read<double>(key)); break;
        case fpw::MetaKind::String: v = fpw::MetaValue::of(t.read_string(key)); break;
        case fpw::MetaKind::IntArray: {
          std::vector<std::int64_t> xs(t.read_count(key, 8));
          for (auto& x : xs) x = t.read<std::int64_t>(key);
          v = fpw::MetaValue::of(std::move(xs));
          break;
        }
        case fpw::MetaKind::FloatArray: {
          std::vector<double> xs(t.read_count(key, 8));
          for (auto& x : xs) x = t.read<double>(key);
          v = fpw::MetaValue::of(std::move(xs));
          break;
        }
        case fpw::MetaKind::StringArray: {
          std::vector<std::string> xs(t.read_count(key, 4));
          for (auto& x : xs) x = t.read_string(key);
          v = fpw::MetaValue::of(std::move(xs));
          break;
        }
        default: fail(what, ": metadata key '", key, "' has unknown kind ", kind);
      }
      require(meta_.emplace(key, std::move(v)).second, what, ": metadata key '", key, "' appears twice");
    }
    for (std::uint64_t i = 0; i < tensor_count; ++i) {
      std::string name = t.read_string("tensor name");
      const auto dtype_code = t.read<std::uint32_t>("tensor dtype");
      require(is_valid_dtype_code(dtype_code), what, ": tensor '", name, "' has unknown dtype code ", dtype_code);
      const auto ndim = t.read<std::uint32_t>("tensor rank");
      require(ndim <= fpw::kMaxDims, what, ": tensor '", name, "' has rank ", ndim, " (at most ", fpw::kMaxDims, ")");
      TensorView view;
      view.dtype = static_cast<DType>(dtype_code);
      std::uint64_t count = 1;
      for (std::uint32_t d = 0; d < ndim; ++d) {
        const auto dim = t.read<std::uint64_t>("tensor dimension");
        require(dim <= data_size_ && (dim == 0 || count <= data_size_ / dim), what, ": tensor '", name,
                "' has a dimension that cannot fit in the file");
        count *= dim;
        view.shape.push_back(static_cast<std::int64_t>(dim));
      }
      const auto offset = t.read<std::uint64_t>("tensor offset");
      const auto nbytes = t.read<std::uint64_t>("tensor size");
      require(nbytes == count * dtype_size(view.dtype), what, ": tensor '", name, "' size ", nbytes, " bytes does not match shape ",
              shape_string(view.shape), " of ", dtype_name(view.dtype));
      require(offset % alignment == 0, what, ": tensor '", name, "' data is not aligned");
      require(offset <= data_size_ && nbytes <= data_size_ - offset, what, ": tensor '", name,
              "' lies outside the data section; the file is truncated or corrupt");
      view.data = bytes.data() + data_offset_ + offset;
      require(tensors_.emplace(name, std::move(view)).second, what, ": tensor '", name, "' appears twice");
      order_.push_back(std::move(name));
    }
  }

  MappedFile file_;
  std::uint64_t data_offset_ = 0;
  std::uint64_t data_size_ = 0;
  std::uint32_t data_crc_ = 0;
  std::map<std::string, fpw::MetaValue> meta_;
  std::map<std::string, TensorView> tensors_;
  std::vector<std::string> order_;
};

}  // namespace focuspatch
