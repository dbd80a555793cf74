#pragma once
// DEFLATE decoding for gzip files (CLIP's BPE vocabulary ships gzipped) and compressed zip entries.
// stb_image already carries a small inflater; we reuse it rather than add zlib.
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include <stb/stb_image.h>

#include "focuspatch/core/error.hpp"

namespace focuspatch {

// CRC-32 (zlib's polynomial), eight bytes per step ("slicing-by-8"): a model load verifies a
// whole weight file with it, and the byte-at-a-time loop managed only ~0.5 GB/s.
inline std::uint32_t crc32(std::span<const std::byte> data, std::uint32_t crc = 0) {
  using Tables = std::array<std::array<std::uint32_t, 256>, 8>;
  static const Tables tables = [] {
    Tables t{};
    for (std::uint32_t i = 0; i < 256; ++i) {
      std::uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (std::uint32_t i = 0; i < 256; ++i)
      for (std::size_t s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xffu];
    return t;
  }();
  crc = ~crc;
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  std::size_t n = data.size();
  for (; n >= 8; n -= 8, p += 8) {
    const std::uint32_t lo = crc ^ (std::uint32_t{p[0]} | std::uint32_t{p[1]} << 8 | std::uint32_t{p[2]} << 16 | std::uint32_t{p[3]} << 24);
    const std::uint32_t hi = std::uint32_t{p[4]} | std::uint32_t{p[5]} << 8 | std::uint32_t{p[6]} << 16 | std::uint32_t{p[7]} << 24;
    crc = tables[7][lo & 0xffu] ^ tables[6][(lo >> 8) & 0xffu] ^ tables[5][(lo >> 16) & 0xffu] ^ tables[4][lo >> 24] ^
          tables[3][hi & 0xffu] ^ tables[2][(hi >> 8) & 0xffu] ^ tables[1][(hi >> 16) & 0xffu] ^ tables[0][hi >> 24];
  }
  for (; n > 0; --n, ++p) crc = tables[0][(crc ^ *p) & 0xffu] ^ (crc >> 8);
  return ~crc;
}

// Decodes a raw DEFLATE stream (no zlib header) that should produce expected_size bytes; `what`
// names the input in error messages. The output buffer has exactly that size and stb stops with an
// error where the stream would write past it: sizes come from headers that may lie, and DEFLATE
// expands data up to about 1000-fold, so an unbounded decoder would let a small entry claiming a
// few bytes demand gigabytes. A stream that ends early comes back shorter (callers compare).
inline std::string inflate_raw(std::span<const std::byte> compressed, std::size_t expected_size, std::string_view what) {
  require(compressed.size() <= static_cast<std::size_t>(std::numeric_limits<int>::max() - 8), what,
          ": compressed stream larger than 2 GiB is not supported");
  require(expected_size <= static_cast<std::size_t>(std::numeric_limits<int>::max()), what,
          ": decompressed size larger than 2 GiB is not supported");
  // stb's bit reader refuses to refill past the end of its buffer even when the bits it would read
  // are never used, so a valid stream whose last code ends in the final two bytes is rejected.
  // Decoding a copy with zero padding lets it finish; the padding is never consumed as data.
  std::string padded(compressed.size() + 8, '\0');
  if (!compressed.empty()) std::memcpy(padded.data(), compressed.data(), compressed.size());
  std::string out(expected_size, '\0');
  const int out_len = stbi_zlib_decode_noheader_buffer(out.data(), static_cast<int>(expected_size), padded.data(),
                                                       static_cast<int>(padded.size()));
  if (out_len < 0)
    fail(what, ": corrupt DEFLATE data, or more than the ", expected_size, " bytes expected (",
         stbi_failure_reason() ? stbi_failure_reason() : "unknown", ")");
  out.resize(static_cast<std::size_t>(out_len));
  return out;
}

// Decodes a single-member gzip file (RFC 1952) and verifies its CRC-32 and length.
inline std::string gunzip(std::span<const std::byte> file, std::string_view what) {
  auto byte = [&](std::size_t i) { return static_cast<std::uint8_t>(file[i]); };
  require(file.size() >= 18, what, ": too short to be a gzip file (", file.size(), " bytes)");
  require(byte(0) == 0x1f && byte(1) == 0x8b, what, ": not a gzip file (bad magic)");
  require(byte(2) == 8, what, ": gzip compression method ", int(byte(2)), " is not DEFLATE");
  const std::uint8_t flags = byte(3);
  require((flags & 0xe0) == 0, what, ": gzip header has reserved flag bits set");
  std::size_t pos = 10;
  const std::size_t trailer = file.size() - 8;
  if (flags & 0x04) {  // FEXTRA
    require(pos + 2 <= trailer, what, ": truncated gzip header");
    const std::size_t xlen = byte(pos) | (std::size_t(byte(pos + 1)) << 8);
    pos += 2 + xlen;
  }
  for (std::uint8_t field : {std::uint8_t{0x08}, std::uint8_t{0x10}}) {  // FNAME, FCOMMENT
    if (!(flags & field)) continue;
    while (pos < trailer && byte(pos) != 0) ++pos;
    ++pos;
  }
  if (flags & 0x02) pos += 2;  // FHCRC
  require(pos < trailer, what, ": truncated gzip header");
  auto le32 = [&](std::size_t i) {
    return std::uint32_t(byte(i)) | std::uint32_t(byte(i + 1)) << 8 | std::uint32_t(byte(i + 2)) << 16 |
           std::uint32_t(byte(i + 3)) << 24;
  };
  const std::uint32_t expected_crc = le32(trailer);
  const std::uint32_t expected_len = le32(trailer + 4);
  std::string out = inflate_raw(file.subspan(pos, trailer - pos), expected_len, what);
  require(static_cast<std::uint32_t>(out.size()) == expected_len, what, ": gzip length mismatch (file says ",
          expected_len, ", decoded ", out.size(), ")");
  require(crc32(std::as_bytes(std::span(out.data(), out.size()))) == expected_crc, what,
          ": gzip CRC-32 mismatch, the file is corrupt");
  return out;
}

}  // namespace focuspatch
