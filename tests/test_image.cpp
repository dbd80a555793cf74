// Image decoding (stb_image) and CLIP preprocessing against PIL + torchvision references generated
// by tests/reference/gen_image_cases.py, plus hand-computed resampling cases and error handling.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include "focuspatch/io/image.hpp"
#include "focuspatch/io/preprocess.hpp"
#include "focuspatch/io/resample.hpp"
#include "test_paths.hpp"

using namespace focuspatch;
namespace fs = std::filesystem;

namespace {

fs::path images_dir() { return test::fixtures_dir() / "images"; }

std::vector<char> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "missing fixture ", p.string(), " (run tests/reference/gen_image_cases.py)");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<float> read_f32(const fs::path& p) {
  const std::vector<char> b = read_bytes(p);
  std::vector<float> v(b.size() / sizeof(float));
  std::memcpy(v.data(), b.data(), v.size() * sizeof(float));  // fixtures are little-endian, as is the host
  return v;
}

struct Case {
  std::string file;
  int width = 0, height = 0, channels = 0;
  bool has_reference = false;
};

std::vector<Case> read_cases() {
  std::ifstream in(images_dir() / "cases.txt");
  REQUIRE_MESSAGE(in.good(), "missing tests/fixtures/images/cases.txt");
  std::vector<Case> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream ls(line);
    Case c;
    int ref = 0;
    ls >> c.file >> c.width >> c.height >> c.channels >> ref;
    REQUIRE_MESSAGE(!ls.fail(), "bad line in cases.txt: ", line);
    c.has_reference = ref != 0;
    cases.push_back(c);
  }
  REQUIRE(cases.size() >= 10);
  return cases;
}

bool is_jpeg(const std::string& f) { return f.size() > 4 && f.substr(f.size() - 4) == ".jpg"; }

// The image PIL decoded, as stored by the generator (RGB, or RGB + alpha).
Image reference_decode(const Case& c) {
  const std::vector<char> raw = read_bytes(images_dir() / (c.file + ".decoded"));
  const auto n = static_cast<std::size_t>(c.width) * static_cast<std::size_t>(c.height);
  REQUIRE(raw.size() == n * static_cast<std::size_t>(c.channels));
  Image img;
  img.width = c.width;
  img.height = c.height;
  img.rgb.resize(n * 3);
  if (c.channels == 4) img.alpha.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t k = 0; k < 3; ++k)
      img.rgb[i * 3 + k] = static_cast<std::uint8_t>(raw[i * static_cast<std::size_t>(c.channels) + k]);
    if (c.channels == 4) img.alpha[i] = static_cast<std::uint8_t>(raw[i * 4 + 3]);
  }
  return img;
}

// Largest |ours - ref| in [0, 1] pixel units (the normalised difference times std).
double max_pixel_error(const FloatTensor& ours, const std::vector<float>& ref, const ClipPreprocess& p) {
  REQUIRE(static_cast<std::size_t>(ours.numel()) == ref.size());
  const auto plane = ref.size() / 3;
  double worst = 0;
  for (std::size_t i = 0; i < ref.size(); ++i)
    worst = std::max(worst, std::abs(double(ours.data()[i]) - double(ref[i])) * double(p.std[i / plane]));
  return worst;
}

int max_byte_difference(const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b) {
  REQUIRE(a.size() == b.size());
  int worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(int(a[i]) - int(b[i])));
  return worst;
}

Image constant_image(int w, int h, std::uint8_t r, std::uint8_t g, std::uint8_t b) {
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.resize(static_cast<std::size_t>(w * h) * 3);
  for (std::size_t i = 0; i < img.rgb.size(); i += 3) {
    img.rgb[i] = r;
    img.rgb[i + 1] = g;
    img.rgb[i + 2] = b;
  }
  return img;
}

Image grey_row(std::vector<std::uint8_t> values) {
  Image img;
  img.width = static_cast<int>(values.size());
  img.height = 1;
  for (auto v : values) img.rgb.resize(img.rgb.size() + 3, v);
  return img;
}

std::vector<int> red_channel(const Image& img) {
  std::vector<int> r;
  for (std::size_t i = 0; i < img.pixel_count(); ++i) r.push_back(img.rgb[i * 3]);
  return r;
}

std::string error_of(auto&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// 1/255 in [0, 1] units plus fp32 slack for the normalisation arithmetic.
constexpr double kOneLevel = 1.0 / 255.0 + 1e-6;

}  // namespace

TEST_CASE("lossless files decode to exactly the pixels PIL decodes") {
  for (const Case& c : read_cases()) {
    if (is_jpeg(c.file)) continue;
    CAPTURE(c.file);
    const Image img = load_image((images_dir() / c.file).string());
    CHECK(img.width == c.width);
    CHECK(img.height == c.height);
    CHECK(img.has_alpha() == (c.channels == 4));
    const Image ref = reference_decode(c);
    CHECK(max_byte_difference(img.rgb, ref.rgb) == 0);
    if (img.has_alpha() && ref.has_alpha()) CHECK(max_byte_difference(img.alpha, ref.alpha) == 0);
  }
}

TEST_CASE("JPEG decodes close to libjpeg (PIL)") {
  // stb_image and libjpeg are both valid JPEG decoders but not bit-identical: stb uses its own
  // integer IDCT and its own rounding in the YCbCr->RGB conversion and in the (fancy) chroma
  // upsampling of 4:2:0 data. Differences of a few levels per pixel, mostly near sharp chroma
  // edges, are expected; a wrong decode (channel order, orientation, upsampling bug) gives tens
  // or hundreds of levels. Bounds: max 6 levels, mean 1 level (measured: max 2, mean 0.08).
  for (const Case& c : read_cases()) {
    if (!is_jpeg(c.file)) continue;
    CAPTURE(c.file);
    const Image img = load_image((images_dir() / c.file).string());
    const Image ref = reference_decode(c);
    REQUIRE(img.rgb.size() == ref.rgb.size());
    double sum = 0;
    for (std::size_t i = 0; i < img.rgb.size(); ++i) sum += std::abs(int(img.rgb[i]) - int(ref.rgb[i]));
    const int worst = max_byte_difference(img.rgb, ref.rgb);
    const double mean = sum / double(img.rgb.size());
    MESSAGE(c.file, ": stb vs libjpeg decode, max ", worst, " levels, mean ", mean, " levels");
    CHECK(worst <= 6);
    CHECK(mean <= 1.0);
  }
}

TEST_CASE("CLIP preprocessing matches torchvision + PIL within one level") {
  for (const Case& c : read_cases()) {
    if (!c.has_reference) continue;
    const Image img = load_image((images_dir() / c.file).string());
    for (int n : {32, 24}) {
      CAPTURE(c.file);
      CAPTURE(n);
      ClipPreprocess p;
      p.resolution = n;
      const std::vector<float> ref = read_f32(images_dir() / (c.file + ".clip" + std::to_string(n) + ".f32"));
      REQUIRE(ref.size() == static_cast<std::size_t>(3 * n * n));
      if (!is_jpeg(c.file)) {
        const double err = max_pixel_error(preprocess_clip(img, p), ref, p);
        MESSAGE(c.file, " at ", n, ": max error ", err * 255.0, " levels");
        CHECK(err <= kOneLevel);
      } else {
        // From stb's decode the JPEG decoder difference carries through (bounded as above); from
        // the pixels libjpeg decoded, the preprocessing itself must match like any other image.
        const double via_stb = max_pixel_error(preprocess_clip(img, p), ref, p);
        const double via_pil = max_pixel_error(preprocess_clip(reference_decode(c), p), ref, p);
        MESSAGE(c.file, " at ", n, ": max error ", via_stb * 255.0, " levels from stb's decode, ", via_pil * 255.0,
                " from PIL's");
        CHECK(via_stb <= 6 * kOneLevel);
        CHECK(via_pil <= kOneLevel);
      }
    }
  }
}

TEST_CASE("preprocess_clip_into fills one batch slot and nothing else") {
  const Image img = load_image((images_dir() / "rgba_45x38.png").string());
  ClipPreprocess p;
  p.resolution = 24;
  const FloatTensor single = preprocess_clip(img, p);
  const std::size_t slot = 3 * 24 * 24;
  std::vector<float> batch(3 * slot, -777.0f);
  preprocess_clip_into(img, p, batch.data() + slot);
  CHECK(std::all_of(batch.begin(), batch.begin() + static_cast<std::ptrdiff_t>(slot), [](float v) { return v == -777.0f; }));
  CHECK(std::all_of(batch.begin() + static_cast<std::ptrdiff_t>(2 * slot), batch.end(), [](float v) { return v == -777.0f; }));
  CHECK(std::equal(single.values().begin(), single.values().end(), batch.begin() + static_cast<std::ptrdiff_t>(slot)));
  CHECK(single.shape() == Shape{3, 24, 24});
}

TEST_CASE("the steps compose to the whole: resize, center crop, normalise") {
  const Image img = load_image((images_dir() / "rgb_50x41.png").string());
  ClipPreprocess p;
  p.resolution = 32;
  const Image resized = resize_shorter_side(img, 32);
  CHECK(resized.width == 39);  // int(32 * 50 / 41) = int(39.02)
  CHECK(resized.height == 32);
  const Image cropped = center_crop(resized, 32);
  std::vector<float> steps(3 * 32 * 32);
  normalize_to_chw(cropped, p.mean, p.std, steps.data());
  const FloatTensor whole = preprocess_clip(img, p);
  CHECK(std::equal(steps.begin(), steps.end(), whole.values().begin()));

  SUBCASE("a window of the resize equals the same region of the full resize, alpha included") {
    const Image rgba = load_image((images_dir() / "rgba_45x38.png").string());
    const Image full = resize_bicubic(rgba, 30, 41);
    const Image part = resize_bicubic_window(rgba, 30, 41, {7, 5, 13, 20});
    REQUIRE(part.width == 13);
    REQUIRE(part.height == 20);
    REQUIRE(part.has_alpha());
    bool same = true;
    for (int y = 0; y < 20; ++y)
      for (int x = 0; x < 13; ++x) {
        const std::size_t a = static_cast<std::size_t>(y * 13 + x), b = static_cast<std::size_t>((y + 5) * 30 + x + 7);
        for (std::size_t k = 0; k < 3; ++k) same = same && part.rgb[a * 3 + k] == full.rgb[b * 3 + k];
        same = same && part.alpha[a] == full.alpha[b];
      }
    CHECK(same);
  }
}

TEST_CASE("resize geometry follows torchvision") {
  // Shorter side to n, longer int(n * long / short): truncation, not rounding.
  CHECK(resized_shorter_side(37, 53, 32).width == 32);
  CHECK(resized_shorter_side(37, 53, 32).height == 45);  // 45.84 -> 45
  CHECK(resized_shorter_side(640, 480, 224).width == 298);  // 298.67 -> 298
  CHECK(resized_shorter_side(480, 480, 224).height == 224);
  CHECK(resized_shorter_side(1, 1000, 224).height == 224000);
  // Crop offsets: round((size - n) / 2) with Python's ties-to-even.
  CHECK(center_crop_box(32, 45, 32, 32).top == 6);   // round(6.5) = 6
  CHECK(center_crop_box(32, 47, 32, 32).top == 8);   // round(7.5) = 8
  CHECK(center_crop_box(32, 46, 32, 32).top == 7);
  CHECK(center_crop_box(298, 224, 224, 224).left == 37);
  // A crop larger than the image pads: torchvision pads left/top by (crop - size) // 2.
  const PixelBox pad = center_crop_box(3, 3, 6, 4);
  CHECK(pad.left == -1);
  CHECK(pad.top == 0);
  const Image small = constant_image(3, 3, 9, 9, 9);
  const Image padded = center_crop(small, 6, 4);
  // torchvision pads 1 left, 2 right, 0 top, 1 bottom (checked against CenterCrop((4, 6))).
  CHECK(red_channel(padded) == std::vector<int>{0, 9, 9, 9, 0, 0,  //
                                                0, 9, 9, 9, 0, 0,  //
                                                0, 9, 9, 9, 0, 0,  //
                                                0, 0, 0, 0, 0, 0});
  CHECK(clip_crop_box(640, 480, 224).left == 37);
}

TEST_CASE("hand-computed bicubic resampling") {
  SUBCASE("two pixels enlarged to four") {
    // Output 1 sits at 0.75 - 0.5 = 0.25 past pixel 0: weights 0.8671875 and 0.2265625 (Keys
    // kernel, a = -0.5), the tap at -1 falls outside and the rest renormalise: 255 * 0.2265625 /
    // 1.09375 = 52.8 -> 53. Output 0 has a negative weight on 255 and clips to 0.
    CHECK(red_channel(resize_bicubic(grey_row({0, 255}), 4, 1)) == std::vector<int>{0, 53, 202, 255});
  }
  SUBCASE("four pixels shrunk to two: the kernel widens (antialiasing)") {
    // Scale 2 stretches the kernel to 4 pixels each side; output 0 (centre 1.0) weighs pixels
    // 0..3 by bicubic(0.25, 0.25, 0.75, 1.25) = .8671875, .8671875, .2265625, -.0703125, sum
    // 1.890625: 255 * (.2265625 - .0703125) / 1.890625 = 21.07 -> 21. A 4-tap bicubic would give 0.
    CHECK(red_channel(resize_bicubic(grey_row({0, 0, 255, 255}), 2, 1)) == std::vector<int>{21, 234});
  }
  SUBCASE("a linear ramp stays linear away from the edges") {
    // Cubic convolution reproduces linear functions wherever all taps are inside the image:
    // 8 pixels 0, 32, ..., 224 enlarged to 16 put output x at input (x + 0.5) / 2 - 0.5, value
    // 16 x - 8, for x = 3..12.
    std::vector<std::uint8_t> ramp;
    for (int i = 0; i < 8; ++i) ramp.push_back(static_cast<std::uint8_t>(32 * i));
    const std::vector<int> out = red_channel(resize_bicubic(grey_row(ramp), 16, 1));
    for (int x = 3; x <= 12; ++x) CHECK(out[static_cast<std::size_t>(x)] == 16 * x - 8);
  }
  SUBCASE("a constant image stays constant at every scale, and normalises to (v / 255 - mean) / std") {
    const Image img = constant_image(37, 23, 0, 128, 255);
    for (const auto& size : {std::pair{5, 3}, std::pair{80, 61}, std::pair{37, 9}, std::pair{1, 1}}) {
      const int w = size.first, h = size.second;
      const Image r = resize_bicubic(img, w, h);
      bool constant = true;
      for (std::size_t i = 0; i < r.pixel_count(); ++i)
        constant = constant && r.rgb[i * 3] == 0 && r.rgb[i * 3 + 1] == 128 && r.rgb[i * 3 + 2] == 255;
      CHECK_MESSAGE(constant, w, "x", h);
    }
    const ClipPreprocess p;
    const FloatTensor t = preprocess_clip(img, p);
    const std::size_t plane = 224 * 224;
    for (std::size_t c = 0; c < 3; ++c) {
      const float v = c == 0 ? 0.0f : c == 1 ? 128.0f : 255.0f;
      const float expect = (v / 255.0f - p.mean[c]) / p.std[c];
      CHECK(std::all_of(t.data() + c * plane, t.data() + (c + 1) * plane, [&](float x) { return x == expect; }));
    }
    CHECK(t.data()[0] == doctest::Approx(-0.48145466 / 0.26862954).epsilon(1e-6));
  }
  SUBCASE("alpha is resized premultiplied, as Pillow resizes RGBA") {
    // A transparent red pixel beside an opaque blue one: premultiplied, the red carries no
    // weight, so every output pixel with any alpha is pure blue. Resizing the colours as if
    // opaque would mix in red.
    Image img;
    img.width = 2;
    img.height = 1;
    img.rgb = {255, 0, 0, 0, 0, 255};
    img.alpha = {0, 255};
    const Image r = resize_bicubic(img, 4, 1);
    REQUIRE(r.has_alpha());
    CHECK(std::vector<int>(r.alpha.begin(), r.alpha.end()) == std::vector<int>{0, 53, 202, 255});
    for (std::size_t i = 1; i < 4; ++i) {
      CHECK(r.rgb[i * 3 + 0] == 0);
      CHECK(r.rgb[i * 3 + 2] == 255);
    }
  }
}

TEST_CASE("float planes resize like PIL's mode F") {
  const std::vector<float> plane = read_f32(images_dir() / "plane_7x5.f32");
  REQUIRE(plane.size() == 35);
  for (const auto& size : {std::pair{12, 9}, std::pair{3, 2}}) {
    const int w = size.first, h = size.second;
    CAPTURE(w);
    const std::vector<float> ref =
        read_f32(images_dir() / ("plane_7x5.to" + std::to_string(w) + "x" + std::to_string(h) + ".f32"));
    const std::vector<float> ours = resize_bicubic_plane(plane, 7, 5, w, h);
    REQUIRE(ours.size() == ref.size());
    double worst = 0;
    for (std::size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, double(std::abs(ours[i] - ref[i])));
    MESSAGE("plane 7x5 -> ", w, "x", h, ": max difference ", worst);
    CHECK(worst <= 1e-6);
  }
  // The overshoot around the hot spot is kept (no clipping, unlike 8-bit images).
  const std::vector<float> up = resize_bicubic_plane(plane, 7, 5, 12, 9);
  CHECK(*std::max_element(up.begin(), up.end()) > 4.0f);
}

TEST_CASE("write_png round-trips RGB and RGBA") {
  const fs::path dir = fs::temp_directory_path() / ("focuspatch_test_image_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  for (const char* name : {"rgb_37x53.png", "rgba_45x38.png", "grey16_30x26.png"}) {
    CAPTURE(name);
    const Image img = load_image((images_dir() / name).string());
    const std::string out = (dir / name).string();
    write_png(out, img);
    const Image back = load_image(out);
    CHECK(back.width == img.width);
    CHECK(back.height == img.height);
    CHECK(back.rgb == img.rgb);
    CHECK(back.alpha == img.alpha);
  }
  const std::string bad = (dir / "no_such_dir" / "x.png").string();
  const std::string msg = error_of([&] { write_png(bad, constant_image(2, 2, 1, 2, 3)); });
  CHECK(contains(msg, bad));
  CHECK(contains(msg, "cannot create the file"));
  Image broken = constant_image(2, 2, 1, 2, 3);
  broken.rgb.pop_back();
  CHECK(contains(error_of([&] { write_png((dir / "broken.png").string(), broken); }), "image buffer holds 11 bytes"));
  fs::remove_all(dir);
}

TEST_CASE("bad files give errors that name the file and the problem") {
  auto path = [](const char* name) { return (images_dir() / name).string(); };

  const std::string missing = path("no_such_image.png");
  std::string msg = error_of([&] { load_image(missing); });
  CHECK(contains(msg, missing));
  CHECK(contains(msg, "No such file"));

  msg = error_of([&] { load_image(path("corrupt.png")); });
  CHECK(contains(msg, path("corrupt.png")));
  CHECK(contains(msg, "corrupt or truncated"));

  msg = error_of([&] { load_image(path("not_an_image.png")); });
  CHECK(contains(msg, path("not_an_image.png")));
  CHECK(contains(msg, "not a supported image"));

  msg = error_of([&] { load_image(path("zero_size.png")); });
  CHECK(contains(msg, path("zero_size.png")));
  MESSAGE("zero-size PNG: ", msg);

  msg = error_of([&] { load_image(images_dir().string()); });
  CHECK(contains(msg, "is a directory"));

  msg = error_of([&] { decode_image({}, "empty.png"); });
  CHECK(contains(msg, "empty.png: file is empty"));

  ImageLoadOptions small;
  small.max_pixels = 1000;  // rgb_37x53.png has 1961 pixels
  msg = error_of([&] { load_image(path("rgb_37x53.png"), small); });
  CHECK(contains(msg, path("rgb_37x53.png")));
  CHECK(contains(msg, "37x53 = 1961 pixels, more than the limit of 1000"));
  CHECK(contains(msg, "max_pixels"));
  small.max_pixels = 1961;
  CHECK(load_image(path("rgb_37x53.png"), small).width == 37);

  // A header claiming a huge image is refused before any allocation, with the default limit: a
  // valid PNG header rewritten to 12000 x 12000 (stb itself would accept that size).
  std::vector<char> bytes = read_bytes(images_dir() / "rgb_37x53.png");
  const unsigned char huge[8] = {0, 0, 0x2e, 0xe0, 0, 0, 0x2e, 0xe0};
  std::memcpy(bytes.data() + 16, huge, 8);
  msg = error_of([&] { decode_image(std::as_bytes(std::span(bytes.data(), bytes.size())), "huge.png"); });
  CHECK(contains(msg, "huge.png: image is 12000x12000 = 144000000 pixels, more than the limit of 100000000"));
  // 100000 x 100000 is past what stb accepts at all; still an Error naming the input.
  const unsigned char huger[8] = {0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0};
  std::memcpy(bytes.data() + 16, huger, 8);
  msg = error_of([&] { decode_image(std::as_bytes(std::span(bytes.data(), bytes.size())), "huger.png"); });
  CHECK(contains(msg, "huger.png: "));

  // Cut short anywhere: always an Error, never a crash or a silently zero-filled image (from
  // memory, stb's BMP, TGA and JPEG readers would pad with zeros and report success).
  for (const char* name : {"rgb_24x31.bmp", "rgb_31x44.tga", "photo_48x40.jpg", "rgb_37x53.png", "grey16_30x26.png",
                           "rgba_45x38.png"}) {
    const std::vector<char> good = read_bytes(images_dir() / name);
    int refused = 0, tried = 0;
    for (std::size_t len = 0; len < good.size(); len += 1 + len / 8, ++tried) {
      try {
        decode_image(std::as_bytes(std::span(good.data(), len)), name);
      } catch (const Error&) {
        ++refused;
      }
    }
    CHECK_MESSAGE(refused == tried, std::string(name), ": ", tried - refused, " truncations decoded without error");
  }
}

TEST_CASE("alpha can be dropped at load time") {
  ImageLoadOptions opaque;
  opaque.keep_alpha = false;
  const Image a = load_image((images_dir() / "rgba_45x38.png").string());
  const Image b = load_image((images_dir() / "rgba_45x38.png").string(), opaque);
  CHECK(!b.has_alpha());
  CHECK(a.rgb == b.rgb);  // the colours are the stored ones either way
  // stb reports 4 channels for a palette PNG with a tRNS chunk and for a GIF, but Pillow opens
  // both as palette images whose transparency convert("RGB") drops: no alpha plane.
  for (const char* name : {"palette_21x25.png", "palette_19x17.gif"}) {
    CAPTURE(std::string(name));
    int w = 0, h = 0, channels = 0;
    REQUIRE(stbi_info((images_dir() / name).string().c_str(), &w, &h, &channels));
    CHECK(channels == 4);
    CHECK(!load_image((images_dir() / name).string()).has_alpha());
  }
}

TEST_CASE("masks: any non-zero value in any channel is anomalous, whatever the dataset's convention") {
  const fs::path dir = fs::temp_directory_path() / ("focuspatch_test_masks_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  // The same 4x3 layout of anomalous pixels in each convention: (1,0), (2,1), (3,2).
  const std::vector<std::uint8_t> expected = {0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1};
  auto grey = [&](std::uint8_t on, std::uint8_t other) {
    std::vector<std::uint8_t> v(12);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = expected[i] ? (i == 11 ? other : on) : 0;
    return v;
  };
  struct Case {
    const char* name;
    std::vector<std::uint8_t> values;
  };
  for (const Case& c : {Case{"mvtec_0_255.png", grey(255, 255)}, Case{"visa_0_1.png", grey(1, 1)},
                        Case{"labels_3_7.png", grey(3, 7)}}) {
    CAPTURE(c.name);
    const std::string path = (dir / c.name).string();
    write_grey_png(path, 4, 3, c.values);
    const BinaryMask m = load_mask(path);
    REQUIRE(m.width == 4);
    REQUIRE(m.height == 3);
    CHECK(m.anomalous == expected);
  }
  // Colour on one channel only (here blue, then green), with the other channels zero.
  Image rgb;
  rgb.width = 4;
  rgb.height = 3;
  rgb.rgb.assign(36, 0);
  rgb.rgb[1 * 3 + 2] = 200;
  rgb.rgb[6 * 3 + 1] = 1;
  rgb.rgb[11 * 3 + 0] = 9;
  write_png((dir / "rgb.png").string(), rgb);
  CHECK(load_mask((dir / "rgb.png").string()).anomalous == expected);
  // Alpha is not a value: an opaque all-normal RGBA mask stays normal, a transparent anomaly counts.
  rgb.alpha.assign(12, 255);
  rgb.alpha[6] = 0;
  write_png((dir / "rgba.png").string(), rgb);
  CHECK(load_mask((dir / "rgba.png").string()).anomalous == expected);
  // 16-bit labels: 1 and 2 out of 65535 round to 0 in 8 bits, and must still be anomalous.
  const BinaryMask m16 = load_mask((images_dir() / "mask16_labels_6x4.png").string());
  REQUIRE(m16.width == 6);
  std::vector<std::uint8_t> want16(24, 0);
  want16[0 * 6 + 1] = want16[2 * 6 + 4] = want16[3 * 6 + 5] = want16[3 * 6 + 0] = 1;
  CHECK(m16.anomalous == want16);
  CHECK(load_image((images_dir() / "mask16_labels_6x4.png").string()).pixel(1, 0)[0] == 0);  // why masks decode apart
  fs::remove_all(dir);
}

TEST_CASE("a PNG header of 0xFFFFFFFF x 0xFFFFFFFF is refused by the pixel limit, without overflow") {
  std::string png;
  {
    std::ifstream in(images_dir() / "rgb_37x53.png", std::ios::binary);
    png.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::memset(png.data() + 16, 0xff, 8);  // IHDR width and height (stb does not check chunk CRCs)
  const std::string msg = error_of([&] { decode_image(std::as_bytes(std::span(png.data(), png.size())), "huge.png"); });
  CHECK(contains(msg, "huge.png: image is 4294967295x4294967295 = 18446744065119617025 pixels, more than the limit"));
  ImageLoadOptions unlimited;
  unlimited.max_pixels = std::numeric_limits<std::int64_t>::max();
  CHECK(contains(error_of([&] { decode_image(std::as_bytes(std::span(png.data(), png.size())), "huge.png", unlimited); }),
                 "more than the limit of 9223372036854775807"));
  std::memcpy(png.data() + 16, "\x00\x01\x00\x00\x00\x01\x00\x00", 8);  // 65536 x 65536: 2^32 pixels
  CHECK(contains(error_of([&] { decode_image(std::as_bytes(std::span(png.data(), png.size())), "big.png", unlimited); }),
                 "larger than stb_image decodes"));
}

TEST_CASE("an image path that is a FIFO, a device or a directory is refused without blocking") {
  const fs::path dir = fs::temp_directory_path() / ("focuspatch_test_special_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path fifo = dir / "pipe.png";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  ::alarm(30);  // a regression would block forever in open(); fail loudly instead
  CHECK(contains(error_of([&] { load_image(fifo.string()); }), fifo.string() + ": is a FIFO (named pipe), expected a regular file"));
  CHECK(contains(error_of([&] { load_mask(fifo.string()); }), "is a FIFO"));
  CHECK(contains(error_of([&] { load_image("/dev/zero"); }), "/dev/zero: is a character device, expected a regular file"));
  CHECK(contains(error_of([&] { load_image(dir.string()); }), dir.string() + ": is a directory"));
  ::alarm(0);
  fs::remove_all(dir);
}
