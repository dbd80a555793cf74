#pragma once
// Decoding image files into 8-bit RGB through stb_image (Debian's libstb: the implementation lives
// in the linked libstb.so, so STB_IMAGE_IMPLEMENTATION must not be defined anywhere).
//
// What a decoded Image holds is what CLIP's Python pipeline sees after `image.convert("RGB")`:
//   - grey images have their value replicated into R, G and B;
//   - grey+alpha and RGBA images have the alpha dropped from `rgb` (colours are the stored,
//     straight-alpha colours, not composited onto any background).
// The alpha plane is still kept beside the colours (Image::alpha) because CLIP resizes *before*
// converting to RGB, and Pillow resizes LA/RGBA images in premultiplied alpha; io/resample.hpp uses
// it to reproduce that. Formats whose alpha Pillow would not see as an alpha channel (palette PNGs,
// GIFs) come back without one.
//
// 16-bit PNGs are decoded at 16 bits and scaled to 8 bits by round(v * 255 / 65535). Pillow gets
// this wrong in two different ways (16-bit RGB keeps only the high byte; 16-bit grey opens as
// mode "I" and convert("RGB") clips every value above 255 to white), so here we deliberately do
// the arithmetic right rather than copy it.
//
// Other differences from Pillow, all rare: EXIF orientation is ignored by both (so that matches);
// Radiance HDR is refused (stb would tone-map it, Pillow cannot open it); CMYK JPEGs are converted
// by stb's formula; a 32-bit BMP's fourth byte is taken as alpha by stb unless it is all zero,
// while Pillow ignores it.
//
// Truncated files are errors: the decoders read through stb's callback interface so that a read
// past the end is noticed (from plain memory, stb zero-fills a truncated BMP, TGA or JPEG).
// decode_image may run on several threads at once: Debian's libstb keeps its failure reason in
// thread-local storage, and we never set stb's global flags (a program that calls
// stbi_set_flip_vertically_on_load would flip our images too).
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include "focuspatch/core/error.hpp"
#include "focuspatch/io/mapped_file.hpp"
#include "focuspatch/io/output_file.hpp"

namespace focuspatch {

struct Image {
  int width = 0;
  int height = 0;
  std::vector<std::uint8_t> rgb;    // width * height * 3 bytes, rows top to bottom, R G B interleaved
  std::vector<std::uint8_t> alpha;  // width * height straight alpha, or empty when the image has none

  bool has_alpha() const { return !alpha.empty(); }
  std::size_t pixel_count() const { return static_cast<std::size_t>(width) * static_cast<std::size_t>(height); }
  const std::uint8_t* pixel(int x, int y) const {
    return rgb.data() + (static_cast<std::size_t>(y) * static_cast<std::size_t>(width) + static_cast<std::size_t>(x)) * 3;
  }
};

struct ImageLoadOptions {
  // Refuse images with more pixels than this before decoding them: a decoded image costs 3 bytes
  // per pixel (8 for 16-bit files while converting), and a corrupt or hostile header can claim
  // billions of pixels.
  std::int64_t max_pixels = 100'000'000;
  // Keep the alpha plane (see above). Without it, LA/RGBA images are resized as if opaque, which
  // differs from CLIP's pipeline wherever alpha is not 255.
  bool keep_alpha = true;
};

// Throws unless img is a well-formed image (positive size, buffers of matching length).
inline void check_image(const Image& img, std::string_view what) {
  require(img.width > 0 && img.height > 0, what, ": image has size ", img.width, "x", img.height);
  require(img.rgb.size() == img.pixel_count() * 3, what, ": image buffer holds ", img.rgb.size(), " bytes, a ",
          img.width, "x", img.height, " RGB image needs ", img.pixel_count() * 3);
  require(img.alpha.empty() || img.alpha.size() == img.pixel_count(), what, ": alpha plane holds ", img.alpha.size(),
          " bytes for ", img.pixel_count(), " pixels");
}

namespace detail {

inline std::string stb_reason() {
  const char* r = stbi_failure_reason();
  return r ? r : "no reason given";
}

inline bool is_png(std::span<const std::byte> bytes) {
  static constexpr unsigned char kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  return bytes.size() >= 8 && std::memcmp(bytes.data(), kSignature, 8) == 0;
}

// stb reports 4 channels for palette PNGs with transparency and for every GIF. Pillow opens both
// as palette images ("P"), whose transparency convert("RGB") discards, so their alpha is not kept.
inline bool alpha_is_palette_transparency(std::span<const std::byte> bytes) {
  auto at = [&](std::size_t i) { return i < bytes.size() ? static_cast<unsigned char>(bytes[i]) : 0u; };
  if (is_png(bytes) && bytes.size() > 25) return at(25) == 3;  // IHDR colour type 3: palette
  return at(0) == 'G' && at(1) == 'I' && at(2) == 'F' && at(3) == '8';
}

// Feeds stb from memory through its callback interface. That is the only way to learn whether a
// decoder asked for bytes past the end: reading from plain memory, stb's BMP, TGA, PNM and JPEG
// readers take a truncated file's missing bytes as zeros and report success. (stb's format probes
// read a few leading bytes each; one that runs off a tiny file also counts as an overrun, and
// such a file is refused, which is right: no complete image is that short.)
struct StbReader {
  std::span<const std::byte> bytes;
  std::size_t pos = 0;
  bool overran = false;

  static int read(void* user, char* out, int n) {
    auto& r = *static_cast<StbReader*>(user);
    const std::size_t left = r.bytes.size() - r.pos;
    if (left == 0 || n <= 0) {
      r.overran = r.overran || n > 0;
      return 0;
    }
    const std::size_t k = std::min(left, static_cast<std::size_t>(n));
    std::memcpy(out, r.bytes.data() + r.pos, k);
    r.pos += k;
    return static_cast<int>(k);
  }
  static void skip(void* user, int n) {
    auto& r = *static_cast<StbReader*>(user);
    if (n < 0) {  // "unget", per stbi_io_callbacks
      r.pos -= std::min(r.pos, static_cast<std::size_t>(-static_cast<std::int64_t>(n)));
    } else if (static_cast<std::size_t>(n) > r.bytes.size() - r.pos) {
      r.overran = true;
      r.pos = r.bytes.size();
    } else {
      r.pos += static_cast<std::size_t>(n);
    }
  }
  static int eof(void* user) {
    const auto& r = *static_cast<StbReader*>(user);
    return r.pos >= r.bytes.size() ? 1 : 0;
  }
};

// stb_image 2.27 (Debian 12's libstb) has two memory-safety bugs in its JPEG reader, fixed in
// later releases: a Huffman table whose 16 code counts sum to more than 256 overflows the table
// (stb issue #1289, CVE-2022-28042), and a scan may decode with a table that no DHT segment
// defined, whose contents are uninitialized heap memory (found by fuzz/fuzz_image). This walks the
// segments in the order stb does (from SOI, skipping fill bytes; past each scan's entropy-coded
// data to the first marker other than RSTn) and refuses both before stb sees the file.
inline void check_jpeg_huffman_tables(std::span<const std::byte> bytes, std::string_view name) {
  auto at = [&](std::size_t i) { return static_cast<unsigned>(bytes[i]); };
  const std::size_t n = bytes.size();
  std::size_t pos = 0;
  while (pos < n && at(pos) == 0xff) ++pos;
  if (pos == 0 || pos >= n || at(pos) != 0xd8) return;  // not what stb takes for a JPEG
  ++pos;
  bool defined[2][4] = {};
  bool progressive = false;
  auto bad = [&](std::string_view what) { fail(name, ": corrupt JPEG: ", what); };
  while (pos < n) {
    if (at(pos) != 0xff) {  // stb skips stray bytes between segments (or fails after them)
      ++pos;
      continue;
    }
    while (pos < n && at(pos) == 0xff) ++pos;
    if (pos >= n) return;
    const unsigned marker = at(pos++);
    if (marker == 0xd9) return;                                                   // EOI
    if (marker == 0x00 || marker == 0x01 || (marker >= 0xd0 && marker <= 0xd8)) continue;  // no length
    if (n - pos < 2) return;  // truncated: stb reads zeros and fails
    const std::size_t length = at(pos) << 8 | at(pos + 1);
    const std::size_t end = std::min(n, pos + std::max<std::size_t>(length, 2));
    if (marker == 0xc0 || marker == 0xc1 || marker == 0xc2) progressive = marker == 0xc2;
    if (marker == 0xc4) {  // DHT: tables while the length lasts; stb reads each table whole, past the length if need be
      std::int64_t left = static_cast<std::int64_t>(length) - 2;
      std::size_t p = pos + 2;
      while (left > 0 && p < n) {  // past the end stb reads zeros: no codes, no overflow
        const unsigned cls = at(p) >> 4, id = at(p) & 15;
        if (cls > 1 || id > 3) return;  // stb refuses the file here
        std::size_t symbols = 0;
        for (std::size_t i = 1; i <= 16; ++i) symbols += p + i < n ? at(p + i) : 0;
        if (symbols > 256) bad("a Huffman table declares " + std::to_string(symbols) + " codes (at most 256)");
        defined[cls][id] = true;
        p += 17 + symbols;
        left -= static_cast<std::int64_t>(17 + symbols);
      }
      if (left != 0) return;  // stb refuses a DHT whose tables do not fill it exactly
      pos = p;
      continue;
    }
    if (marker == 0xda && end - pos >= 3) {  // SOS: which tables the scan decodes with
      const std::size_t components = at(pos + 2);
      const std::size_t header = 3 + 2 * components;
      if (end - pos < header + 3) return;  // stb refuses a short scan header
      const unsigned spectral_start = at(pos + header), approx_high = at(pos + header + 2) >> 4;
      const bool uses_dc = !progressive || (spectral_start == 0 && approx_high == 0);
      const bool uses_ac = !progressive || spectral_start > 0;
      for (std::size_t c = 0; c < components; ++c) {
        const unsigned tables = at(pos + 4 + 2 * c), dc = tables >> 4, ac = tables & 15;
        if ((uses_dc && dc <= 3 && !defined[0][dc]) || (uses_ac && ac <= 3 && !defined[1][ac]))
          bad("a scan uses a Huffman table that no DHT segment defines");
      }
      pos = end;
      // The entropy-coded data runs to the first marker; 0xff 0x00 is a stuffed byte, RSTn stays inside.
      while (pos + 1 < n && !(at(pos) == 0xff && at(pos + 1) != 0x00 && at(pos + 1) != 0xff &&
                              !(at(pos + 1) >= 0xd0 && at(pos + 1) <= 0xd7)))
        ++pos;
      continue;
    }
    pos = end;
  }
}

// The size a PNG's IHDR declares, or {0, 0} for anything else. stb refuses PNGs over 2^30 decoded
// bytes inside stbi_info, with a reason ("unknown image type") that hides that the file is simply
// too large; knowing the size first lets the pixel limit, and an honest message, come first.
inline std::pair<std::uint64_t, std::uint64_t> png_declared_size(std::span<const std::byte> bytes) {
  if (!is_png(bytes) || bytes.size() < 24 || std::memcmp(bytes.data() + 12, "IHDR", 4) != 0)
    return {0, 0};
  auto be32 = [&](std::size_t at) {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < 4; ++i) v = v << 8 | std::to_integer<std::uint64_t>(bytes[at + i]);
    return v;
  };
  return {be32(16), be32(20)};
}

}  // namespace detail

namespace detail {

// decode_image's work. With keep_nonzero, a non-zero 16-bit value never rounds to 0 in 8 bits
// (a 16-bit label mask holding 1 must stay anomalous), which is what masks need.
inline Image decode_image_pixels(std::span<const std::byte> bytes, std::string_view name, const ImageLoadOptions& options,
                                 bool keep_nonzero) {
  require(!bytes.empty(), name, ": file is empty, expected an image");
  require(bytes.size() <= static_cast<std::size_t>(INT_MAX), name, ": ", bytes.size(),
          " bytes is larger than stb_image can read (2 GiB)");
  const auto* data = reinterpret_cast<const stbi_uc*>(bytes.data());
  const int len = static_cast<int>(bytes.size());
  detail::check_jpeg_huffman_tables(bytes, name);  // before stb reads any of it, stbi_info included

  // Read only the header first, so the pixel limit is enforced before any large allocation. The
  // sizes come from the file: up to 2^32 - 1 each, so their product is formed in unsigned 64-bit
  // arithmetic, where it cannot overflow.
  auto check_pixel_limit = [&](std::uint64_t width, std::uint64_t height) {
    const std::uint64_t pixels = width * height;
    require(options.max_pixels >= 0 && pixels <= static_cast<std::uint64_t>(options.max_pixels), name, ": image is ", width, "x", height, " = ", pixels,
            " pixels, more than the limit of ", options.max_pixels,
            " (raise ImageLoadOptions::max_pixels, or --max-image-pixels of the focuspatch programs, to load it)");
  };
  const auto [png_w, png_h] = detail::png_declared_size(bytes);
  check_pixel_limit(png_w, png_h);
  int w = 0, h = 0, channels = 0;
  if (!stbi_info_from_memory(data, len, &w, &h, &channels)) {
    require(png_w * png_h <= (std::uint64_t{1} << 30) / 4, name, ": PNG of ", png_w, "x", png_h,
            " pixels is larger than stb_image decodes (2^30 bytes per image); split or shrink it");
    fail(name, ": not a supported image or its header is corrupt (stb_image: ", detail::stb_reason(),
         "); PNG, JPEG, BMP, TGA, GIF, PSD, PNM and PIC files are supported");
  }
  require(w > 0 && h > 0, name, ": image has size ", w, "x", h, ", nothing to decode");
  check_pixel_limit(static_cast<std::uint64_t>(w), static_cast<std::uint64_t>(h));
  // stb would tone-map a Radiance HDR file to 8 bits by its own rules, which nothing in CLIP's
  // pipeline does (Pillow cannot open them); refuse rather than guess.
  require(!stbi_is_hdr_from_memory(data, len), name,
          ": Radiance HDR images are not supported; convert it to an 8-bit format first");

  const bool alpha = options.keep_alpha && (channels == 2 || channels == 4) && !detail::alpha_is_palette_transparency(bytes);
  const int want = alpha ? 4 : 3;
  const auto n = static_cast<std::size_t>(w) * static_cast<std::size_t>(h);

  detail::StbReader reader{bytes};
  stbi_io_callbacks callbacks{&detail::StbReader::read, &detail::StbReader::skip, &detail::StbReader::eof};
  // Runs an stb loader through the callbacks and checks what it returned.
  auto decode = [&](auto* (*loader)(const stbi_io_callbacks*, void*, int*, int*, int*, int)) {
    int dw = 0, dh = 0, dc = 0;
    auto* px = loader(&callbacks, &reader, &dw, &dh, &dc, want);
    std::unique_ptr<std::remove_pointer_t<decltype(px)>, decltype(&stbi_image_free)> owned(px, &stbi_image_free);
    if (!owned)
      fail(name, ": cannot decode the image data, the file is corrupt or truncated (stb_image: ", detail::stb_reason(),
           ")");
    require(!reader.overran, name, ": file is truncated, its image data ends early (", bytes.size(), " bytes for a ", w,
            "x", h, " image)");
    require(dw == w && dh == h, name, ": header says ", w, "x", h, " but the data decodes as ", dw, "x", dh);
    return owned;
  };

  Image img;
  img.width = w;
  img.height = h;
  if (stbi_is_16_bit_from_memory(data, len)) {
    const auto px = decode(&stbi_load_16_from_callbacks);
    // round(v * 255 / 65535); the quotient never ends in exactly .5, so the rounding mode is moot.
    auto to8 = [keep_nonzero](stbi_us v) {
      const auto v8 = static_cast<std::uint8_t>((std::uint32_t{v} * 255u + 32767u) / 65535u);
      return keep_nonzero && v != 0 && v8 == 0 ? std::uint8_t{1} : v8;
    };
    img.rgb.resize(n * 3);
    if (alpha) img.alpha.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      const stbi_us* p = px.get() + i * static_cast<std::size_t>(want);
      for (std::size_t c = 0; c < 3; ++c) img.rgb[i * 3 + c] = to8(p[c]);
      if (alpha) img.alpha[i] = to8(p[3]);
    }
  } else if (!alpha) {
    const auto px = decode(&stbi_load_from_callbacks);
    img.rgb.assign(px.get(), px.get() + n * 3);
  } else {
    const auto px = decode(&stbi_load_from_callbacks);
    img.rgb.resize(n * 3);
    img.alpha.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      const stbi_uc* p = px.get() + i * 4;
      img.rgb[i * 3 + 0] = p[0];
      img.rgb[i * 3 + 1] = p[1];
      img.rgb[i * 3 + 2] = p[2];
      img.alpha[i] = p[3];
    }
  }
  return img;
}

}  // namespace detail

// Decodes an image held in memory; `name` is used in error messages.
inline Image decode_image(std::span<const std::byte> bytes, std::string_view name, const ImageLoadOptions& options = {}) {
  return detail::decode_image_pixels(bytes, name, options, /*keep_nonzero=*/false);
}

inline Image load_image(const std::string& path, const ImageLoadOptions& options = {}) {
  MappedFile file(path);
  return decode_image(file.bytes(), path, options);
}

// A ground-truth mask: which pixels are anomalous. Datasets store masks in many ways (MVTec AD:
// 0/255 grey; VisA: 0/1 label values; others: small class labels, 16-bit labels, colours on any
// channel), and all agree on one thing: a pixel is anomalous when any of its values is non-zero.
// Alpha is not a value here (an opaque normal pixel has alpha 255) and is ignored.
struct BinaryMask {
  int width = 0;
  int height = 0;
  std::vector<std::uint8_t> anomalous;  // width * height, 1 = anomalous, rows top to bottom

  bool at(int x, int y) const {
    return anomalous[static_cast<std::size_t>(y) * static_cast<std::size_t>(width) + static_cast<std::size_t>(x)] != 0;
  }
};

inline BinaryMask decode_mask(std::span<const std::byte> bytes, std::string_view name, const ImageLoadOptions& options = {}) {
  ImageLoadOptions opaque = options;
  opaque.keep_alpha = false;
  const Image img = detail::decode_image_pixels(bytes, name, opaque, /*keep_nonzero=*/true);
  BinaryMask mask{img.width, img.height, std::vector<std::uint8_t>(img.pixel_count())};
  for (std::size_t i = 0; i < mask.anomalous.size(); ++i)
    mask.anomalous[i] = (img.rgb[i * 3] | img.rgb[i * 3 + 1] | img.rgb[i * 3 + 2]) != 0 ? 1 : 0;
  return mask;
}

inline BinaryMask load_mask(const std::string& path, const ImageLoadOptions& options = {}) {
  MappedFile file(path);
  return decode_mask(file.bytes(), path, options);
}

namespace detail {
// Encodes to memory with stb, then writes through OutputFile: stbi_write_png itself ignores every
// write error (it reports success on a full disk) and leaves a partial file behind.
inline void write_png_pixels(const std::string& path, int width, int height, int comp, const std::uint8_t* data) {
  std::string png;
  auto append = [](void* context, void* bytes, int size) {
    static_cast<std::string*>(context)->append(static_cast<const char*>(bytes), static_cast<std::size_t>(size));
  };
  if (!stbi_write_png_to_func(append, &png, width, height, comp, data, width * comp) || png.empty())
    fail(path, ": cannot encode the PNG (stb_image_write failed)");
  write_file(path, png);
}
}  // namespace detail

// Writes img as an 8-bit PNG: RGBA when it carries alpha, RGB otherwise.
inline void write_png(const std::string& path, const Image& img) {
  check_image(img, path);
  require(img.width <= INT_MAX / 4, path, ": image is too wide to write (", img.width, " pixels)");
  const int comp = img.has_alpha() ? 4 : 3;
  std::vector<std::uint8_t> rgba;
  const std::uint8_t* data = img.rgb.data();
  if (img.has_alpha()) {
    rgba.resize(img.pixel_count() * 4);
    for (std::size_t i = 0; i < img.pixel_count(); ++i) {
      std::memcpy(&rgba[i * 4], &img.rgb[i * 3], 3);
      rgba[i * 4 + 3] = img.alpha[i];
    }
    data = rgba.data();
  }
  detail::write_png_pixels(path, img.width, img.height, comp, data);
}

// Writes one 8-bit channel (a mask, a grey map) as a greyscale PNG, as MVTec AD stores its masks.
inline void write_grey_png(const std::string& path, int width, int height, std::span<const std::uint8_t> values) {
  require(width > 0 && height > 0 && values.size() == static_cast<std::size_t>(width) * static_cast<std::size_t>(height), path,
          ": ", values.size(), " grey values for a ", width, "x", height, " image");
  detail::write_png_pixels(path, width, height, 1, values.data());
}

// A binary mask (non-zero = anomalous) as an 8-bit grey PNG, 255 on 0: what people and the mask
// readers of every dataset (MVTec's 0/255) expect to see.
inline void write_mask_png(const std::string& path, int width, int height, std::span<const std::uint8_t> anomalous) {
  std::vector<std::uint8_t> grey(anomalous.size());
  for (std::size_t i = 0; i < grey.size(); ++i) grey[i] = anomalous[i] ? 255 : 0;
  write_grey_png(path, width, height, grey);
}

}  // namespace focuspatch
