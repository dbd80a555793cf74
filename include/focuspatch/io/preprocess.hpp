#pragma once
// CLIP's image preprocessing, step for step as OpenAI's clip._transform(n) runs it on a PIL image:
//   Resize(n, interpolation=BICUBIC)  shorter side to n, longer side int(n * long / short)
//   CenterCrop(n)                     torchvision's offsets: round((size - n) / 2), ties to even
//   convert("RGB")                    alpha dropped (after resizing, see io/resample.hpp)
//   ToTensor()                        v / 255 in fp32, channels first
//   Normalize(mean, std)              (x - mean) / std in fp32
// With Pillow's resampling reproduced exactly (io/resample.hpp) the output matches torchvision's
// bit for bit on 8-bit inputs (tests/test_image.cpp checks it). Known differences:
//   - palette images (palette PNG, GIF, 1-bit): Pillow resizes mode "P" and "1" with NEAREST even
//     when BICUBIC is asked for; we resize their decoded colours bicubically;
//   - 16-bit PNGs: scaled to 8 bits correctly first (see io/image.hpp);
//   - JPEG: stb's decoder differs from libjpeg's by a few levels (IDCT, chroma upsampling).
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string_view>

#include "focuspatch/core/error.hpp"
#include "focuspatch/core/tensor.hpp"
#include "focuspatch/io/image.hpp"
#include "focuspatch/io/resample.hpp"

namespace focuspatch {

struct ClipPreprocess {
  int resolution = 224;
  // OpenAI CLIP's normalisation constants (clip/clip.py, _transform); named as in Normalize.
  std::array<float, 3> mean = {0.48145466f, 0.4578275f, 0.40821073f};
  std::array<float, 3> std = {0.26862954f, 0.26130258f, 0.27577711f};
};

struct ImageSize {
  int width = 0, height = 0;
};

// torchvision's _compute_resized_output_size for Resize(shorter) (a single int): the shorter side
// becomes `shorter`, the longer int(shorter * long / short), truncated. The quotient is computed in
// double, which is exact for the products involved and correctly rounded like Python's int / int.
inline ImageSize resized_shorter_side(int width, int height, int shorter) {
  require(width > 0 && height > 0 && shorter > 0, "resize: cannot resize ", width, "x", height, " to shorter side ",
          shorter);
  const bool portrait = width <= height;
  const int short_side = portrait ? width : height, long_side = portrait ? height : width;
  const double longer = static_cast<double>(std::int64_t{shorter} * long_side) / short_side;
  require(longer < static_cast<double>(std::numeric_limits<int>::max()), "resize: ", width, "x", height,
          " resized to shorter side ", shorter, " is too large");
  const int new_long = static_cast<int>(longer);
  return portrait ? ImageSize{shorter, new_long} : ImageSize{new_long, shorter};
}

namespace detail {
// Python's round(v / 2) for v >= 0: an exact half goes to the even neighbour (round(1.5) == 2,
// round(2.5) == 2), so an odd margin is not always split the same way.
inline int round_half_even_div2(int v) {
  const int q = v / 2;
  return (v % 2 == 0 || q % 2 == 0) ? q : q + 1;
}
}  // namespace detail

// Where torchvision's CenterCrop((crop_height, crop_width)) takes its pixels from in a width x
// height image. A crop larger than the image is first padded with zeros (left/top by
// (crop - size) // 2), which shows here as a negative left/top.
inline PixelBox center_crop_box(int width, int height, int crop_width, int crop_height) {
  require(width > 0 && height > 0 && crop_width > 0 && crop_height > 0, "center crop: cannot crop ", width, "x", height,
          " to ", crop_width, "x", crop_height);
  auto offset = [](int size, int crop) {
    return crop > size ? -((crop - size) / 2) : detail::round_half_even_div2(size - crop);
  };
  return {offset(width, crop_width), offset(height, crop_height), crop_width, crop_height};
}

// torchvision's Resize(shorter, interpolation=BICUBIC) on a PIL image.
inline Image resize_shorter_side(const Image& img, int shorter) {
  const ImageSize s = resized_shorter_side(img.width, img.height, shorter);
  return resize_bicubic(img, s.width, s.height);
}

// torchvision's CenterCrop((crop_height, crop_width)); pixels outside the image are 0 (alpha too).
inline Image center_crop(const Image& img, int crop_width, int crop_height) {
  check_image(img, "center crop");
  const PixelBox box = center_crop_box(img.width, img.height, crop_width, crop_height);
  Image out;
  out.width = crop_width;
  out.height = crop_height;
  out.rgb.assign(out.pixel_count() * 3, 0);
  if (img.has_alpha()) out.alpha.assign(out.pixel_count(), 0);
  for (int y = 0; y < crop_height; ++y) {
    const int sy = box.top + y;
    if (sy < 0 || sy >= img.height) continue;
    for (int x = 0; x < crop_width; ++x) {
      const int sx = box.left + x;
      if (sx < 0 || sx >= img.width) continue;
      const std::size_t s = static_cast<std::size_t>(sy) * static_cast<std::size_t>(img.width) + static_cast<std::size_t>(sx);
      const std::size_t d = static_cast<std::size_t>(y) * static_cast<std::size_t>(crop_width) + static_cast<std::size_t>(x);
      for (std::size_t c = 0; c < 3; ++c) out.rgb[d * 3 + c] = img.rgb[s * 3 + c];
      if (img.has_alpha()) out.alpha[d] = img.alpha[s];
    }
  }
  return out;
}

inline Image center_crop(const Image& img, int size) { return center_crop(img, size, size); }

// Throws, naming `where` and the value, unless mean and std describe pixel values in [0, 1]: every
// mean finite and in [0, 1], every std finite and in [0.001, 1]. (A NaN mean turns one colour
// channel into NaN, a zero std into infinity; a std below 0.001 scales one grey step of 1/255 to
// more than 4 and is no normalization anyone trained with.) The weight file's loader, embed's
// preprocessing and the detector's all check through here, so all refuse the same values.
inline void check_normalization(const std::array<float, 3>& mean, const std::array<float, 3>& stdev, std::string_view where,
                                std::string_view mean_name = "image mean", std::string_view std_name = "image std") {
  static constexpr char kChannel[3] = {'R', 'G', 'B'};
  for (std::size_t c = 0; c < 3; ++c) {
    require(std::isfinite(mean[c]) && mean[c] >= 0.0f && mean[c] <= 1.0f, where, ": ", mean_name, " of channel ", kChannel[c], " is ",
            mean[c], "; it must be a finite value in [0, 1] (pixel values are scaled to [0, 1] before normalizing)");
    require(std::isfinite(stdev[c]) && stdev[c] >= 0.001f && stdev[c] <= 1.0f, where, ": ", std_name, " of channel ", kChannel[c], " is ",
            stdev[c], "; it must be a finite value in [0.001, 1]");
  }
}

// ToTensor + Normalize: writes 3 x height x width floats, channel planes in R, G, B order. Written
// as torchvision computes it, (v / 255 - mean) / std in fp32, so the values are bit-identical.
inline void normalize_to_chw(const Image& img, const std::array<float, 3>& mean, const std::array<float, 3>& stdev,
                             float* out) {
  check_image(img, "normalize");
  check_normalization(mean, stdev, "normalize");
  const std::size_t n = img.pixel_count();
  for (std::size_t c = 0; c < 3; ++c) {
    float* plane = out + c * n;
    for (std::size_t i = 0; i < n; ++i) plane[i] = (static_cast<float>(img.rgb[i * 3 + c]) / 255.0f - mean[c]) / stdev[c];
  }
}

// The PixelBox of the resized image (resized_shorter_side) that CLIP's preprocessing keeps; maps
// a patch grid back onto the image.
inline PixelBox clip_crop_box(int width, int height, int resolution) {
  const ImageSize s = resized_shorter_side(width, height, resolution);
  return center_crop_box(s.width, s.height, resolution, resolution);
}

// CLIP's full preprocessing into out[0 .. 3 * n * n), n = p.resolution, laid out [3, n, n]; for
// filling one slot of a batch.
inline void preprocess_clip_into(const Image& img, const ClipPreprocess& p, float* out) {
  check_image(img, "CLIP preprocessing");
  require(p.resolution > 0, "CLIP preprocessing: resolution ", p.resolution, " is not positive");
  check_normalization(p.mean, p.std, "CLIP preprocessing");
  const ImageSize s = resized_shorter_side(img.width, img.height, p.resolution);
  const PixelBox box = center_crop_box(s.width, s.height, p.resolution, p.resolution);
  // After Resize(n) both sides are >= n, so the crop lies inside the resized image and only that
  // window needs resampling.
  const Image cropped = resize_bicubic_window(img, s.width, s.height, box);
  normalize_to_chw(cropped, p.mean, p.std, out);
}

// CLIP's full preprocessing as a [3, n, n] fp32 tensor.
inline FloatTensor preprocess_clip(const Image& img, const ClipPreprocess& p = {}) {
  require(p.resolution > 0, "CLIP preprocessing: resolution ", p.resolution, " is not positive");
  FloatTensor t({3, p.resolution, p.resolution});
  preprocess_clip_into(img, p, t.data());
  return t;
}

}  // namespace focuspatch
