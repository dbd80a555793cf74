#pragma once
// Writes a .fpw weight file (layout in fpw_format.hpp). Tensors are produced one at a time when the
// file is written, so converting a multi-gigabyte checkpoint never holds more than one tensor in
// memory. The file appears under its name only once it is complete (io/output_file.hpp).
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "focuspatch/core/error.hpp"
#include "focuspatch/core/finite.hpp"
#include "focuspatch/core/half.hpp"
#include "focuspatch/core/tensor.hpp"
#include "focuspatch/io/fpw_format.hpp"
#include "focuspatch/io/inflate.hpp"
#include "focuspatch/io/output_file.hpp"

namespace focuspatch {

class WeightWriter {
 public:
  using Producer = std::function<FloatTensor()>;

  void set_meta(const std::string& key, fpw::MetaValue value) {
    if (!meta_.count(key)) meta_order_.push_back(key);
    meta_[key] = std::move(value);
  }
  void set_meta(const std::string& key, std::int64_t v) { set_meta(key, fpw::MetaValue::of(v)); }
  void set_meta(const std::string& key, int v) { set_meta(key, fpw::MetaValue::of(std::int64_t{v})); }
  void set_meta(const std::string& key, double v) { set_meta(key, fpw::MetaValue::of(v)); }
  void set_meta(const std::string& key, std::string v) { set_meta(key, fpw::MetaValue::of(std::move(v))); }
  void set_meta(const std::string& key, const char* v) { set_meta(key, fpw::MetaValue::of(std::string(v))); }

  // Adds a tensor stored as `dtype` (F32, F16 or BF16); produce() is called once, at write time, and
  // must return a tensor of exactly `shape`.
  void add_tensor(std::string name, DType dtype, Shape shape, Producer produce) {
    require(dtype == DType::F32 || dtype == DType::F16 || dtype == DType::BF16, "weight file tensor '", name,
            "': storage dtype ", dtype_name(dtype), " is not supported (f32, f16, bf16)");
    for (const auto& e : entries_) require(e.name != name, "weight file: tensor '", name, "' added twice");
    entries_.push_back({std::move(name), dtype, std::move(shape), std::move(produce)});
  }
  void add_tensor(std::string name, DType dtype, FloatTensor value) {
    Shape shape = value.shape();
    auto holder = std::make_shared<FloatTensor>(std::move(value));
    add_tensor(std::move(name), dtype, std::move(shape), [holder] { return *holder; });
  }

  void write(const std::filesystem::path& path) const {
    std::string table;
    auto put = [&table](const void* p, std::size_t n) { table.append(static_cast<const char*>(p), n); };
    auto put_u32 = [&](std::uint32_t v) { put(&v, 4); };
    auto put_u64 = [&](std::uint64_t v) { put(&v, 8); };
    auto put_str = [&](const std::string& s) {
      require(s.size() <= fpw::kMaxStringBytes, "weight file: string of ", s.size(), " bytes is too long");
      put_u32(static_cast<std::uint32_t>(s.size()));
      put(s.data(), s.size());
    };
    for (const auto& key : meta_order_) {
      const auto& v = meta_.at(key);
      put_str(key);
      put_u32(static_cast<std::uint32_t>(v.kind));
      switch (v.kind) {
        case fpw::MetaKind::Int: put(&v.int_value, 8); break;
        case fpw::MetaKind::Float: put(&v.float_value, 8); break;
        case fpw::MetaKind::String: put_str(v.string_value); break;
        case fpw::MetaKind::IntArray: put_u64(v.ints.size()); put(v.ints.data(), 8 * v.ints.size()); break;
        case fpw::MetaKind::FloatArray: put_u64(v.floats.size()); put(v.floats.data(), 8 * v.floats.size()); break;
        case fpw::MetaKind::StringArray: put_u64(v.strings.size()); for (const auto& s : v.strings) put_str(s); break;
      }
    }
    std::uint64_t data_size = 0;
    std::vector<std::uint64_t> offsets;
    for (const auto& e : entries_) {
      require(e.shape.size() <= fpw::kMaxDims, "weight file: tensor '", e.name, "' has too many dimensions");
      put_str(e.name);
      put_u32(static_cast<std::uint32_t>(e.dtype));
      put_u32(static_cast<std::uint32_t>(e.shape.size()));
      for (auto d : e.shape) put_u64(static_cast<std::uint64_t>(d));
      const std::uint64_t nbytes = static_cast<std::uint64_t>(element_count(e.shape)) * dtype_size(e.dtype);
      data_size = fpw::align_up(data_size, fpw::kAlignment);
      offsets.push_back(data_size);
      put_u64(data_size);
      put_u64(nbytes);
      data_size += nbytes;
    }
    const std::uint64_t data_offset = fpw::align_up(fpw::kHeaderSize + table.size(), fpw::kAlignment);
    table.resize(data_offset - fpw::kHeaderSize, '\0');
    const std::uint32_t header_crc = crc32(std::as_bytes(std::span(table.data(), table.size())));

    // Written beside and renamed into place (output_file.hpp): a failure below (a producer's
    // error, a full disk) leaves no half-written file, and an existing file stays as it was.
    OutputFile out(path);
    out.write(fpw::kMagic.data(), fpw::kMagic.size());
    auto write_pod = [&out](const auto& v) { out.write(&v, sizeof(v)); };
    write_pod(fpw::kVersion);
    write_pod(fpw::kAlignment);
    write_pod(static_cast<std::uint64_t>(meta_order_.size()));
    write_pod(static_cast<std::uint64_t>(entries_.size()));
    write_pod(data_offset);
    write_pod(data_size);
    write_pod(header_crc);
    write_pod(std::uint32_t{0});  // data checksum, patched below once known
    out.write(table);

    std::uint32_t data_crc = 0;
    std::uint64_t written = 0;
    std::string buffer;
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      const auto& e = entries_[i];
      const std::string pad(offsets[i] - written, '\0');
      data_crc = crc32(std::as_bytes(std::span(pad.data(), pad.size())), data_crc);
      out.write(pad);
      const FloatTensor value = e.produce();
      require(value.shape() == e.shape, "weight file: tensor '", e.name, "' was declared ", shape_string(e.shape), " but produced ",
              shape_string(value.shape()));
      // A NaN or infinity would be refused by every model load (core/finite.hpp); better refused
      // here, naming the tensor, than written. Encoding can make one: fp16 tops out at 65504.
      if (const auto bad = find_non_finite(value.values()))
        fail("weight file: tensor '", e.name, "' holds ", bad->what, " at element ", bad->index, " of ", value.numel(),
             "; the source weights are damaged");
      encode(value, e.dtype, buffer);
      if (const auto bad = find_non_finite(e.dtype, buffer.data(), static_cast<std::size_t>(value.numel())))
        fail("weight file: tensor '", e.name, "' element ", bad->index, " (", value.data()[bad->index], ") does not fit in ",
             dtype_name(e.dtype), "; store the weights as f32 or bf16");
      data_crc = crc32(std::as_bytes(std::span(buffer.data(), buffer.size())), data_crc);
      out.write(buffer);
      written = offsets[i] + buffer.size();
    }
    out.write_at(52, &data_crc, sizeof data_crc);
    out.commit();
  }

 private:
  struct Entry {
    std::string name;
    DType dtype;
    Shape shape;
    Producer produce;
  };

  static void encode(const FloatTensor& value, DType dtype, std::string& out) {
    const auto values = value.values();
    if (dtype == DType::F32) {
      out.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
      return;
    }
    out.resize(values.size() * 2);
    auto* dst = reinterpret_cast<std::uint16_t*>(out.data());
    for (std::size_t i = 0; i < values.size(); ++i)
      dst[i] = dtype == DType::F16 ? float_to_half(values[i]) : float_to_bf16(values[i]);
  }

  std::map<std::string, fpw::MetaValue> meta_;
  std::vector<std::string> meta_order_;
  std::vector<Entry> entries_;
};

}  // namespace focuspatch
