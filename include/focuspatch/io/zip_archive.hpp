#pragma once
// Reads ZIP archives in place from a byte span (normally a MappedFile). PyTorch checkpoints are zip
// archives whose tensor storages are STORED (uncompressed, 64-byte aligned), so a stored entry is
// returned as a span into the mapping without copying; DEFLATE entries are inflated into an owned
// buffer. ZIP64 is supported because PyTorch always writes the ZIP64 end records. Every offset and
// size from the archive is checked against the bytes present before use.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "focuspatch/core/error.hpp"
#include "focuspatch/io/inflate.hpp"
#include "focuspatch/io/little_endian.hpp"

namespace focuspatch {

struct ZipEntry {
  std::string name;
  std::uint16_t method = 0;  // 0 = stored, 8 = deflate
  std::uint16_t flags = 0;
  std::uint32_t crc32 = 0;
  std::uint64_t compressed_size = 0;
  std::uint64_t uncompressed_size = 0;
  std::uint64_t local_header_offset = 0;

  bool is_directory() const { return !name.empty() && name.back() == '/'; }
};

// The contents of one entry: a view into the archive for stored entries, or an owned buffer for
// inflated ones. Moving keeps bytes() valid.
class ZipEntryData {
 public:
  ZipEntryData() = default;
  static ZipEntryData view(std::span<const std::byte> bytes) {
    ZipEntryData d;
    d.bytes_ = bytes;
    return d;
  }
  static ZipEntryData own(std::string buffer) {
    ZipEntryData d;
    d.owned_ = std::make_unique<std::string>(std::move(buffer));
    d.bytes_ = std::as_bytes(std::span(d.owned_->data(), d.owned_->size()));
    return d;
  }

  std::span<const std::byte> bytes() const { return bytes_; }
  std::string_view text() const { return {reinterpret_cast<const char*>(bytes_.data()), bytes_.size()}; }
  std::size_t size() const { return bytes_.size(); }
  bool is_owned() const { return owned_ != nullptr; }
  // Hands the owned buffer over (for a container that must keep it alive); null for views.
  std::unique_ptr<std::string> release_buffer() { return std::move(owned_); }

 private:
  std::span<const std::byte> bytes_;
  std::unique_ptr<std::string> owned_;
};

namespace zip {
inline constexpr std::uint32_t kLocalHeaderSig = 0x04034b50;
inline constexpr std::uint32_t kCentralHeaderSig = 0x02014b50;
inline constexpr std::uint32_t kEndSig = 0x06054b50;
inline constexpr std::uint32_t kEnd64Sig = 0x06064b50;
inline constexpr std::uint32_t kEnd64LocatorSig = 0x07064b50;
inline constexpr std::size_t kEndSize = 22;
inline constexpr std::size_t kEnd64Size = 56;
inline constexpr std::size_t kEnd64LocatorSize = 20;
inline constexpr std::size_t kCentralHeaderSize = 46;
inline constexpr std::size_t kLocalHeaderSize = 30;
inline constexpr std::size_t kMaxCommentSize = 0xffff;
// DEFLATE cannot expand data by more than about 1032:1; a larger claimed size means corruption.
inline constexpr std::uint64_t kMaxDeflateRatio = 1032;

inline bool has_signature(std::span<const std::byte> bytes) {
  return bytes.size() >= 4 && load_le<std::uint32_t>(bytes.data()) == kLocalHeaderSig;
}
}  // namespace zip

class ZipArchive {
 public:
  // `bytes` must outlive the archive; `name` (usually the path) appears in error messages.
  ZipArchive(std::span<const std::byte> bytes, std::string name) : bytes_(bytes), name_(std::move(name)) { parse(); }

  const std::string& name() const { return name_; }
  const std::vector<ZipEntry>& entries() const { return entries_; }

  const ZipEntry* find(std::string_view entry_name) const {
    auto it = by_name_.find(entry_name);
    return it == by_name_.end() ? nullptr : &entries_[it->second];
  }
  const ZipEntry& get(std::string_view entry_name) const {
    const ZipEntry* e = find(entry_name);
    if (!e) fail(name_, ": archive has no entry '", entry_name, "'");
    return *e;
  }

  // The entry's bytes as stored in the archive (compressed for DEFLATE entries), located through
  // its local header.
  std::span<const std::byte> raw_data(const ZipEntry& e) const {
    const std::uint64_t at = e.local_header_offset;
    require(at <= central_dir_offset_ && central_dir_offset_ - at >= zip::kLocalHeaderSize, name_, ": entry '", e.name,
            "' has a local header offset ", at, " outside the archive's data area");
    const std::byte* p = bytes_.data() + at;
    require(load_le<std::uint32_t>(p) == zip::kLocalHeaderSig, name_, ": entry '", e.name,
            "' has a corrupt local header (bad signature at byte ", at, ")");
    const std::uint64_t name_len = load_le<std::uint16_t>(p + 26);
    const std::uint64_t extra_len = load_le<std::uint16_t>(p + 28);
    const std::uint64_t data_at = at + zip::kLocalHeaderSize + name_len + extra_len;
    require(data_at <= central_dir_offset_ && e.compressed_size <= central_dir_offset_ - data_at, name_, ": entry '",
            e.name, "' is truncated: its data (", e.compressed_size, " bytes at byte ", data_at,
            ") runs past the end of the data area");
    const std::string_view local_name(reinterpret_cast<const char*>(p + zip::kLocalHeaderSize), name_len);
    require(local_name == e.name, name_, ": entry '", e.name, "' has a local header naming '", local_name,
            "'; the archive is corrupt");
    return bytes_.subspan(static_cast<std::size_t>(data_at), static_cast<std::size_t>(e.compressed_size));
  }

  // The entry's contents. Stored entries come back as a view without copying and their CRC-32 is
  // checked only when asked (it costs a pass over the data); inflated entries are always checked,
  // since inflating reads every byte anyway.
  ZipEntryData read(const ZipEntry& e, bool verify_crc = false) const {
    require((e.flags & 0x1) == 0, name_, ": entry '", e.name, "' is encrypted, which is not supported");
    const auto raw = raw_data(e);
    if (e.method == 0) {
      require(e.compressed_size == e.uncompressed_size, name_, ": stored entry '", e.name, "' has compressed size ",
              e.compressed_size, " but uncompressed size ", e.uncompressed_size);
      if (verify_crc) check_crc(e, raw);
      return ZipEntryData::view(raw);
    }
    if (e.method == 8) {
      require(e.uncompressed_size <= (e.compressed_size + 1) * zip::kMaxDeflateRatio, name_, ": entry '", e.name,
              "' claims ", e.uncompressed_size, " bytes from ", e.compressed_size,
              " compressed bytes, more than DEFLATE can produce");
      const std::string what = name_ + ": entry '" + e.name + "'";
      std::string out = inflate_padded(raw, static_cast<std::size_t>(e.uncompressed_size), what);
      require(out.size() == e.uncompressed_size, what, " inflates to ", out.size(), " bytes but the archive says ",
              e.uncompressed_size);
      const auto data = std::as_bytes(std::span(out.data(), out.size()));
      check_crc(e, data);
      return ZipEntryData::own(std::move(out));
    }
    fail(name_, ": entry '", e.name, "' uses compression method ", e.method, " (only stored and DEFLATE are supported)");
  }
  ZipEntryData read(std::string_view entry_name, bool verify_crc = false) const { return read(get(entry_name), verify_crc); }

 private:
  // stb_image 2.27's inflater refuses to decode the last Huffman codes once fewer than 16 bits of
  // input remain (PNG streams never notice: an Adler-32 trailer follows them). Raw zip streams end
  // right after their last code, so we hand it a copy with zero bytes appended; the size and
  // CRC-32 checks after inflating catch any stream that would run on into them.
  static std::string inflate_padded(std::span<const std::byte> raw, std::size_t expected_size, const std::string& what) {
    std::string padded(reinterpret_cast<const char*>(raw.data()), raw.size());
    padded.append(8, '\0');
    return inflate_raw(std::as_bytes(std::span(padded.data(), padded.size())), expected_size, what);
  }

  void check_crc(const ZipEntry& e, std::span<const std::byte> data) const {
    const std::uint32_t actual = crc32(data);
    require(actual == e.crc32, name_, ": entry '", e.name, "' fails its CRC-32 check (archive says ", e.crc32,
            ", data gives ", actual, "); the file is corrupt");
  }

  // The end-of-central-directory record sits in the last 22 + 65535 bytes; scanning backwards finds
  // the last candidate whose comment length matches what follows it.
  std::size_t find_end_record() const {
    const std::size_t size = bytes_.size();
    require(size >= zip::kEndSize, name_, ": too small to be a zip archive (", size, " bytes)");
    const std::size_t lowest = size > zip::kEndSize + zip::kMaxCommentSize ? size - zip::kEndSize - zip::kMaxCommentSize : 0;
    for (std::size_t at = size - zip::kEndSize + 1; at-- > lowest;) {
      const std::byte* p = bytes_.data() + at;
      if (load_le<std::uint32_t>(p) != zip::kEndSig) continue;
      const std::size_t comment = load_le<std::uint16_t>(p + 20);
      if (at + zip::kEndSize + comment <= size) return at;
    }
    fail(name_, ": not a zip archive or truncated (no end-of-central-directory record)");
  }

  void parse() {
    const std::size_t size = bytes_.size();
    const std::size_t end_at = find_end_record();
    const std::byte* end = bytes_.data() + end_at;
    const std::uint16_t this_disk = load_le<std::uint16_t>(end + 4);
    const std::uint16_t cd_disk = load_le<std::uint16_t>(end + 6);
    std::uint64_t count = load_le<std::uint16_t>(end + 10);
    std::uint64_t cd_size = load_le<std::uint32_t>(end + 12);
    std::uint64_t cd_offset = load_le<std::uint32_t>(end + 16);
    std::size_t cd_limit = end_at;  // the central directory ends before the end records

    const bool zip64 = count == 0xffff || cd_size == 0xffffffffu || cd_offset == 0xffffffffu;
    if (end_at >= zip::kEnd64LocatorSize &&
        load_le<std::uint32_t>(end - zip::kEnd64LocatorSize) == zip::kEnd64LocatorSig) {
      const std::byte* loc = end - zip::kEnd64LocatorSize;
      const std::uint64_t end64_at = load_le<std::uint64_t>(loc + 8);
      require(end64_at <= end_at - zip::kEnd64LocatorSize && end_at - zip::kEnd64LocatorSize - end64_at >= zip::kEnd64Size,
              name_, ": ZIP64 end record offset ", end64_at, " is invalid");
      const std::byte* e64 = bytes_.data() + end64_at;
      require(load_le<std::uint32_t>(e64) == zip::kEnd64Sig, name_, ": corrupt ZIP64 end record (bad signature)");
      count = load_le<std::uint64_t>(e64 + 32);
      cd_size = load_le<std::uint64_t>(e64 + 40);
      cd_offset = load_le<std::uint64_t>(e64 + 48);
      cd_limit = static_cast<std::size_t>(end64_at);
    } else {
      require(!zip64, name_, ": archive needs ZIP64 records but they are missing; the file is truncated or corrupt");
      require(this_disk == 0 && cd_disk == 0, name_, ": multi-part zip archives are not supported");
    }
    require(cd_offset <= cd_limit && cd_size <= cd_limit - cd_offset, name_, ": central directory (", cd_size,
            " bytes at byte ", cd_offset, ") does not fit in the ", size, "-byte archive; it is truncated or corrupt");
    require(count <= cd_size / zip::kCentralHeaderSize, name_, ": central directory claims ", count,
            " entries, more than its ", cd_size, " bytes can hold");
    central_dir_offset_ = cd_offset;

    entries_.reserve(static_cast<std::size_t>(count));
    std::uint64_t pos = cd_offset;
    const std::uint64_t cd_end = cd_offset + cd_size;
    for (std::uint64_t i = 0; i < count; ++i) {
      require(cd_end - pos >= zip::kCentralHeaderSize, name_, ": central directory is truncated at entry ", i);
      const std::byte* h = bytes_.data() + pos;
      require(load_le<std::uint32_t>(h) == zip::kCentralHeaderSig, name_, ": corrupt central directory entry ", i,
              " (bad signature at byte ", pos, ")");
      ZipEntry e;
      e.flags = load_le<std::uint16_t>(h + 8);
      e.method = load_le<std::uint16_t>(h + 10);
      e.crc32 = load_le<std::uint32_t>(h + 16);
      e.compressed_size = load_le<std::uint32_t>(h + 20);
      e.uncompressed_size = load_le<std::uint32_t>(h + 24);
      const std::uint64_t name_len = load_le<std::uint16_t>(h + 28);
      const std::uint64_t extra_len = load_le<std::uint16_t>(h + 30);
      const std::uint64_t comment_len = load_le<std::uint16_t>(h + 32);
      e.local_header_offset = load_le<std::uint32_t>(h + 42);
      require(cd_end - pos - zip::kCentralHeaderSize >= name_len + extra_len + comment_len, name_,
              ": central directory entry ", i, " runs past the end of the directory");
      const std::byte* name_at = h + zip::kCentralHeaderSize;
      e.name.assign(reinterpret_cast<const char*>(name_at), name_len);
      read_zip64_extra(e, std::span(name_at + name_len, static_cast<std::size_t>(extra_len)));
      pos += zip::kCentralHeaderSize + name_len + extra_len + comment_len;
      // Two entries of one name would let the archive mean different things to different readers.
      require(by_name_.emplace(e.name, entries_.size()).second, name_, ": archive has two entries named '", e.name, "'");
      entries_.push_back(std::move(e));
    }
  }

  // Sizes and offsets that overflow 32 bits are 0xffffffff in the header and follow, in this
  // order and only when overflowed, in the ZIP64 extra field (tag 1).
  void read_zip64_extra(ZipEntry& e, std::span<const std::byte> extra) const {
    const bool need_u = e.uncompressed_size == 0xffffffffu;
    const bool need_c = e.compressed_size == 0xffffffffu;
    const bool need_o = e.local_header_offset == 0xffffffffu;
    if (!need_u && !need_c && !need_o) return;
    std::size_t pos = 0;
    while (extra.size() - pos >= 4) {
      const std::uint16_t tag = load_le<std::uint16_t>(extra.data() + pos);
      const std::size_t len = load_le<std::uint16_t>(extra.data() + pos + 2);
      pos += 4;
      require(len <= extra.size() - pos, name_, ": entry '", e.name, "' has a truncated extra field");
      if (tag == 0x0001) {
        std::size_t at = pos;
        auto take = [&](std::uint64_t& field) {
          require(pos + len - at >= 8, name_, ": entry '", e.name, "' has a truncated ZIP64 extra field");
          field = load_le<std::uint64_t>(extra.data() + at);
          at += 8;
        };
        if (need_u) take(e.uncompressed_size);
        if (need_c) take(e.compressed_size);
        if (need_o) take(e.local_header_offset);
        return;
      }
      pos += len;
    }
    fail(name_, ": entry '", e.name, "' needs a ZIP64 extra field but has none");
  }

  std::span<const std::byte> bytes_;
  std::string name_;
  std::vector<ZipEntry> entries_;
  std::map<std::string, std::size_t, std::less<>> by_name_;
  std::uint64_t central_dir_offset_ = 0;
};

}  // namespace focuspatch
