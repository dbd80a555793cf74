#pragma once
// A small synthetic anomaly-detection dataset in MVTec AD's exact folder layout, for tests and the
// README demo: the real datasets cannot be downloaded where this project is built and tested.
//
//   ROOT/<category>/train/good/000.png
//   ROOT/<category>/test/good/000.png
//   ROOT/<category>/test/<defect>/000.png
//   ROOT/<category>/ground_truth/<defect>/000_mask.png   8-bit greyscale, 0 or 255, same size
//
// Categories: two textures (weave, grain) and two objects on a plain ground (washer, capsule). Each
// normal image varies a little (position, rotation, phase, brightness, lighting, pixel noise) so that
// matching a test image against a few normal ones is not a byte comparison. Every category gets the
// same four defect types: scratch, hole, stain, missing.
//
// Masks. Each defect is drawn from a coverage field c(x, y) in [0, 1] (anti-aliased geometry,
// multiplied by the object's own coverage so that defects stay on the object). The mask is exactly
// {c >= 0.5}, and the defect is painted on those pixels only: coverage below one half is dropped
// rather than blended. So no pixel outside the mask differs from the same image rendered without
// the defect (render_synthetic_sample returns both), and nearly every pixel inside it does; the
// only exceptions are where the defect's colour happens to round to the clean one. For a missing
// part the coverage is the cut region over every pixel the object covers by at least 1/255.
//
// Determinism. All randomness comes from splitmix64 streams keyed by (seed, category, split, defect,
// index), never from std:: distributions (which differ between standard libraries), so an image does
// not depend on which other images or categories are generated. One build always writes the same
// bytes; a different compiler, libm or CPU flag set (fused multiply-add) may move a few pixels by one
// level, since the rendering itself is floating point.
#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <numbers>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <stb/stb_image_write.h>

#include "focuspatch/core/error.hpp"
#include "focuspatch/io/image.hpp"
#include "focuspatch/io/output_file.hpp"

namespace focuspatch {

inline constexpr int synthetic_min_image_size = 32;  // below this a scratch or a hole is a pixel or two
inline constexpr int synthetic_max_image_size = 4096;
inline constexpr int synthetic_max_count = 999;      // MVTec AD's file names have three digits
inline constexpr int synthetic_generator_version = 1;

struct SyntheticCategoryInfo {
  std::string_view name;
  bool is_object;  // an object on a plain ground, rather than a texture filling the frame
  std::string_view description;
};

inline constexpr std::array<SyntheticCategoryInfo, 4> synthetic_categories{{
    {"weave", false, "texture: woven fabric in two thread colours; phase, tilt, brightness and lighting vary"},
    {"grain", false, "texture: wood grain from smooth noise; the cut of the board, tilt and brightness vary"},
    {"washer", true, "object: keyed metal washer on a dark ground; position, rotation and brightness vary"},
    {"capsule", true, "object: two-colour capsule on a grey ground; position, tilt and brightness vary"},
}};

struct SyntheticDefectInfo {
  std::string_view name;
  std::string_view description;
};

inline constexpr std::array<SyntheticDefectInfo, 4> synthetic_defects{{
    {"scratch", "thin bright or dark curved line"},
    {"hole", "dark disc with a raised rim"},
    {"stain", "soft tinted blotch with a darker edge"},
    {"missing", "part of the object cut away, or a patch of texture gone, showing what lies beneath"},
}};

enum class SyntheticSplit { train, test };

struct SyntheticSample {
  Image image;                     // what the dataset holds
  Image clean;                     // the same image without its defect (equal to image for good samples)
  std::vector<std::uint8_t> mask;  // width * height, 0 or 255; empty for good samples
};

struct SyntheticDatasetOptions {
  int image_size = 256;
  int train_good = 8;       // per category
  int test_good = 4;        // per category
  int test_per_defect = 2;  // per category and defect type
  std::uint64_t seed = 0;
  std::vector<std::string> categories;  // empty: all of synthetic_categories, in that order
};

// What write_synthetic_dataset wrote for one category.
struct SyntheticCategoryCounts {
  std::string category;
  int train_good = 0;
  int test_good = 0;
  std::vector<std::pair<std::string, int>> test_defects;  // defect type, images (each with its mask)
};

inline const SyntheticCategoryInfo& synthetic_category(std::string_view name) {
  for (const auto& c : synthetic_categories)
    if (c.name == name) return c;
  std::string known;
  for (const auto& c : synthetic_categories) known += (known.empty() ? "" : ", ") + std::string(c.name);
  fail("synthetic dataset: unknown category '", name, "' (known: ", known, ")");
}

inline const SyntheticDefectInfo& synthetic_defect(std::string_view name) {
  for (const auto& d : synthetic_defects)
    if (d.name == name) return d;
  std::string known;
  for (const auto& d : synthetic_defects) known += (known.empty() ? "" : ", ") + std::string(d.name);
  fail("synthetic dataset: unknown defect type '", name, "' (known: good, ", known, ")");
}

namespace synthetic_detail {

inline constexpr float pi = std::numbers::pi_v<float>;

inline std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

inline std::uint64_t combine(std::uint64_t a, std::uint64_t b) {
  return mix64(a ^ (mix64(b) + 0x9e3779b97f4a7c15ULL + (a << 6) + (a >> 2)));
}

// Names rather than table positions key the streams, so reordering the tables keeps every image.
inline std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const char ch : s) h = (h ^ static_cast<unsigned char>(ch)) * 0x100000001b3ULL;
  return h;
}

class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    state_ += 0x9e3779b97f4a7c15ULL;
    return mix64(state_);
  }
  float unit() { return static_cast<float>(next() >> 40) * 0x1.0p-24f; }  // [0, 1), exact in float
  float uniform(float lo, float hi) { return lo + (hi - lo) * unit(); }
  bool coin() { return (next() >> 63) != 0; }
  std::size_t below(std::size_t n) { return static_cast<std::size_t>(next() % n); }  // n is tiny: bias is nil

 private:
  std::uint64_t state_;
};

// [0, 1) for an integer lattice point: the same on every platform.
inline float lattice(std::uint64_t key, std::int64_t ix, std::int64_t iy) {
  const std::uint64_t h = combine(combine(key, static_cast<std::uint64_t>(ix)), static_cast<std::uint64_t>(iy));
  return static_cast<float>(h >> 40) * 0x1.0p-24f;
}

inline float smooth01(float t) { return t * t * (3.0f - 2.0f * t); }

inline float value_noise(std::uint64_t key, float x, float y) {
  const float fx = std::floor(x), fy = std::floor(y);
  const auto ix = static_cast<std::int64_t>(fx), iy = static_cast<std::int64_t>(fy);
  const float sx = smooth01(x - fx), sy = smooth01(y - fy);
  const float a = lattice(key, ix, iy), b = lattice(key, ix + 1, iy);
  const float c = lattice(key, ix, iy + 1), d = lattice(key, ix + 1, iy + 1);
  const float top = a + (b - a) * sx, bottom = c + (d - c) * sx;
  return top + (bottom - top) * sy;
}

// Fractal sum of value noise, in [0, 1].
inline float fbm(std::uint64_t key, float x, float y, int octaves) {
  float sum = 0.0f, norm = 0.0f, amplitude = 0.5f;
  for (int o = 0; o < octaves; ++o) {
    sum += amplitude * value_noise(combine(key, static_cast<std::uint64_t>(o)), x, y);
    norm += amplitude;
    x *= 2.03f;  // not exactly 2, so octaves' lattices do not line up
    y *= 2.03f;
    amplitude *= 0.5f;
  }
  return sum / norm;
}

// Per-pixel sensor noise, triangular in [-1, 1].
inline float pixel_noise(std::uint64_t key, int x, int y) {
  return lattice(key, x, y) + lattice(~key, x, y) - 1.0f;
}

struct Rgb {
  float r = 0, g = 0, b = 0;
};
inline Rgb operator*(Rgb c, float k) { return {c.r * k, c.g * k, c.b * k}; }
inline Rgb operator*(Rgb c, Rgb k) { return {c.r * k.r, c.g * k.g, c.b * k.b}; }
inline Rgb operator+(Rgb c, Rgb d) { return {c.r + d.r, c.g + d.g, c.b + d.b}; }
inline Rgb operator+(Rgb c, float k) { return {c.r + k, c.g + k, c.b + k}; }
inline Rgb mix(Rgb a, Rgb b, float t) { return {a.r + (b.r - a.r) * t, a.g + (b.g - a.g) * t, a.b + (b.b - a.b) * t}; }
inline float luminance(Rgb c) { return 0.299f * c.r + 0.587f * c.g + 0.114f * c.b; }

inline std::uint8_t to_byte(float v) { return static_cast<std::uint8_t>(std::clamp(v, 0.0f, 1.0f) * 255.0f + 0.5f); }

inline float clamp01(float v) { return std::clamp(v, 0.0f, 1.0f); }
inline float square(float v) { return v * v; }

struct Point {
  float x = 0, y = 0;
};
inline Point rotate(Point p, float angle) {
  const float c = std::cos(angle), s = std::sin(angle);
  return {c * p.x - s * p.y, s * p.x + c * p.y};
}
inline float distance(Point a, Point b) { return std::hypot(a.x - b.x, a.y - b.y); }

enum class Shape { texture, washer, capsule };

// Where the material is, so that defects can be placed on it.
struct Geometry {
  Shape shape = Shape::texture;
  Point centre;
  float angle = 0;                     // object rotation (radians)
  float outer = 0, inner = 0;          // washer radii
  float half_length = 0, radius = 0;   // capsule: half the axis between the caps' centres, and the caps' radius
};

struct Scene {
  int size = 0;
  std::vector<Rgb> colour;      // the normal image
  std::vector<Rgb> backdrop;    // what shows where material goes missing: the ground, or what lies under a texture
  std::vector<float> material;  // how much of each pixel the object covers (1 everywhere for textures)
  Geometry geometry;
};

struct Pixel {
  int x = 0, y = 0;      // column and row, for per-pixel noise
  float cx = 0, cy = 0;  // its centre, for geometry
  std::size_t i = 0;     // its index in row-major order
};

template <class F>
void for_each_pixel(int size, F&& f) {
  for (int y = 0; y < size; ++y)
    for (int x = 0; x < size; ++x)
      f(Pixel{x, y, static_cast<float>(x) + 0.5f, static_cast<float>(y) + 0.5f,
              static_cast<std::size_t>(y) * static_cast<std::size_t>(size) + static_cast<std::size_t>(x)});
}

inline Scene empty_scene(int size, Shape shape) {
  Scene s;
  s.size = size;
  const auto n = static_cast<std::size_t>(size) * static_cast<std::size_t>(size);
  s.colour.resize(n);
  s.backdrop.resize(n);
  s.material.assign(n, shape == Shape::texture ? 1.0f : 0.0f);
  s.geometry.shape = shape;
  s.geometry.centre = {static_cast<float>(size) * 0.5f, static_cast<float>(size) * 0.5f};
  return s;
}

// Plain weave: warp and weft threads alternate over and under in a checkerboard.
inline Scene render_weave(int size, SplitMix64& rng, std::uint64_t key) {
  Scene s = empty_scene(size, Shape::texture);
  const float sz = static_cast<float>(size);
  const float period = sz / 14.0f;
  const float phase_x = rng.uniform(0, period), phase_y = rng.uniform(0, period);
  const float tilt = rng.uniform(-0.035f, 0.035f);
  const float gain = rng.uniform(0.94f, 1.06f);
  const float light_angle = rng.uniform(0, 2 * pi), light_strength = rng.uniform(0.0f, 0.08f);
  const Rgb warp{0.28f, 0.38f, 0.62f}, weft{0.80f, 0.77f, 0.70f};
  const Rgb underlay{0.62f, 0.14f, 0.12f};  // a red backing cloth: no thread colour comes near it
  const std::uint64_t fibre_key = combine(key, 1), noise_key = combine(key, 2);
  const float ct = std::cos(tilt), st = std::sin(tilt), cl = std::cos(light_angle), sl = std::sin(light_angle);
  for_each_pixel(size, [&](const Pixel& pixel) {
    const int x = pixel.x, y = pixel.y;
    const std::size_t i = pixel.i;
    const float px = pixel.cx - sz * 0.5f, py = pixel.cy - sz * 0.5f;
    const float u = (ct * px - st * py + phase_x) / period, v = (st * px + ct * py + phase_y) / period;
    const float fu = u - std::floor(u), fv = v - std::floor(v);
    const auto cell = static_cast<std::int64_t>(std::floor(u)) + static_cast<std::int64_t>(std::floor(v));
    const bool warp_on_top = (cell & 1) == 0;
    const float across = warp_on_top ? fu : fv, along = warp_on_top ? fv : fu;
    const float body = 0.30f + 0.70f * std::sqrt(std::sin(pi * across));
    const float dip = 0.78f + 0.22f * std::sin(pi * along);  // darker where the thread dives under
    const float fibre = 0.92f + 0.16f * fbm(fibre_key, pixel.cx / (sz / 64.0f), pixel.cy / (sz / 64.0f), 2);
    const float light = 1.0f + light_strength * (px * cl + py * sl) / (sz * 0.5f);
    const float noise = 0.012f * pixel_noise(noise_key, x, y);
    s.colour[i] = (warp_on_top ? warp : weft) * (body * dip * fibre * light * gain) + noise;
    s.backdrop[i] = underlay * (light * gain) + noise;
  });
  return s;
}

// Wood: growth rings bent by smooth noise, with fine fibres along the board.
inline Scene render_grain(int size, SplitMix64& rng, std::uint64_t key) {
  Scene s = empty_scene(size, Shape::texture);
  const float sz = static_cast<float>(size);
  const float offset_x = rng.uniform(0, 4096), offset_y = rng.uniform(0, 4096);  // where the board is cut
  const float ring_phase = rng.uniform(0, 1);
  const float tilt = rng.uniform(-0.05f, 0.05f);
  const float gain = rng.uniform(0.94f, 1.06f);
  const Rgb early{0.80f, 0.60f, 0.40f}, late{0.50f, 0.31f, 0.17f};
  const Rgb cavity{0.16f, 0.19f, 0.17f};
  const std::uint64_t warp_key = combine(key, 1), fibre_key = combine(key, 2), noise_key = combine(key, 3);
  const float ct = std::cos(tilt), st = std::sin(tilt);
  for_each_pixel(size, [&](const Pixel& pixel) {
    const int x = pixel.x, y = pixel.y;
    const std::size_t i = pixel.i;
    const float px = pixel.cx - sz * 0.5f, py = pixel.cy - sz * 0.5f;
    const float bx = (ct * px - st * py) / sz, by = (st * px + ct * py) / sz;
    const float bend = fbm(warp_key, bx * 1.5f + offset_x, by * 4.0f + offset_y, 4);
    const float t = by * 9.0f + 3.0f * bend + ring_phase;
    const float ring = std::pow(0.5f + 0.5f * std::sin(2 * pi * t), 3.0f);
    const float fibre = fbm(fibre_key, bx * 3.0f + offset_x, by * 90.0f + offset_y, 3);
    const float noise = 0.012f * pixel_noise(noise_key, x, y);
    s.colour[i] = mix(early, late, 0.75f * ring + 0.25f * fibre) * gain + noise;
    s.backdrop[i] = cavity * gain + noise;
  });
  return s;
}

// Signed distance to an axis-aligned box of half sizes (hx, hy) centred at the origin.
inline float box_distance(Point p, float hx, float hy) {
  const float qx = std::abs(p.x) - hx, qy = std::abs(p.y) - hy;
  return std::hypot(std::max(qx, 0.0f), std::max(qy, 0.0f)) + std::min(std::max(qx, qy), 0.0f);
}

// A flat ring with a key tab on its inner edge; the tab makes its rotation visible.
inline Scene render_washer(int size, SplitMix64& rng, std::uint64_t key) {
  Scene s = empty_scene(size, Shape::washer);
  const float sz = static_cast<float>(size);
  Geometry& g = s.geometry;
  g.centre = {sz * 0.5f + rng.uniform(-sz / 64, sz / 64), sz * 0.5f + rng.uniform(-sz / 64, sz / 64)};
  g.angle = rng.uniform(0, 2 * pi);
  g.outer = sz * 0.34f * rng.uniform(0.99f, 1.01f);
  g.inner = sz * 0.15f;
  const float gain = rng.uniform(0.93f, 1.07f);
  const float light_angle = pi / 4 + rng.uniform(-0.15f, 0.15f);
  const float tab_length = sz * 0.05f, tab_half_width = sz * 0.025f;
  const Rgb ground{0.16f, 0.17f, 0.19f}, steel{0.70f, 0.71f, 0.74f};
  const std::uint64_t brush_key = combine(key, 1), ground_key = combine(key, 2), noise_key = combine(key, 3);
  for_each_pixel(size, [&](const Pixel& pixel) {
    const int x = pixel.x, y = pixel.y;
    const std::size_t i = pixel.i;
    const Point p{pixel.cx - g.centre.x, pixel.cy - g.centre.y};
    const float d = std::hypot(p.x, p.y);
    const Point local = rotate(p, -g.angle);
    const float ring = std::max(d - g.outer, g.inner - d);
    // The tab reaches one pixel into the ring so that no seam shows where they meet.
    const float tab = box_distance({local.x - (g.inner - tab_length * 0.5f + 0.5f), local.y}, tab_length * 0.5f + 0.5f,
                                   tab_half_width);
    const float coverage = clamp01(0.5f - std::min(ring, tab));
    const float radial = clamp01((d - g.inner) / (g.outer - g.inner));
    const float bevel = 1.0f - 0.25f * std::pow(std::abs(2 * radial - 1), 4.0f);
    const float phi = std::atan2(p.y, p.x);
    const float sheen = 1.0f + 0.12f * std::cos(2 * (phi - light_angle));
    const float brushed = 0.94f + 0.12f * value_noise(brush_key, d / (sz / 180.0f), 0.5f);  // concentric turning marks
    const float noise = 0.010f * pixel_noise(noise_key, x, y);
    const float mottle = fbm(ground_key, pixel.cx / (sz / 4), pixel.cy / (sz / 4), 2);
    const Rgb floor_colour = ground * ((0.9f + 0.2f * mottle) * gain) + noise;
    s.backdrop[i] = floor_colour;
    s.material[i] = coverage;
    s.colour[i] = mix(floor_colour, steel * (bevel * sheen * brushed * gain) + noise, coverage);
  });
  return s;
}

// A capsule: two half shells of different colours, shaded as a cylinder with a highlight.
inline Scene render_capsule(int size, SplitMix64& rng, std::uint64_t key) {
  Scene s = empty_scene(size, Shape::capsule);
  const float sz = static_cast<float>(size);
  Geometry& g = s.geometry;
  g.centre = {sz * 0.5f + rng.uniform(-sz / 64, sz / 64), sz * 0.5f + rng.uniform(-sz / 64, sz / 64)};
  g.angle = rng.uniform(-0.12f, 0.12f);
  g.half_length = sz * 0.26f;
  g.radius = sz * 0.115f;
  const float gain = rng.uniform(0.93f, 1.07f);
  const float seam = -sz * 0.06f;
  const Rgb ground{0.42f, 0.45f, 0.50f}, cap{0.85f, 0.35f, 0.12f}, body{0.95f, 0.92f, 0.84f};
  const std::uint64_t ground_key = combine(key, 1), noise_key = combine(key, 2);
  for_each_pixel(size, [&](const Pixel& pixel) {
    const int x = pixel.x, y = pixel.y;
    const std::size_t i = pixel.i;
    const Point p = rotate({pixel.cx - g.centre.x, pixel.cy - g.centre.y}, -g.angle);
    const float on_axis = std::clamp(p.x, -g.half_length, g.half_length);
    const float coverage = clamp01(0.5f - (std::hypot(p.x - on_axis, p.y) - g.radius));
    const float n = std::clamp(p.y / g.radius, -1.0f, 1.0f);
    const float shade = 0.62f + 0.38f * std::sqrt(1 - n * n);
    const float highlight = 0.30f * std::exp(-square((n + 0.45f) / 0.13f));
    const float seam_line = 1.0f - 0.30f * std::exp(-square((p.x - seam) / (sz * 0.004f + 0.5f)));
    const float noise = 0.010f * pixel_noise(noise_key, x, y);
    const Rgb shell = (p.x < seam ? cap : body) * (shade * seam_line * gain) + (highlight + noise);
    const float mottle = fbm(ground_key, pixel.cx / (sz / 4), pixel.cy / (sz / 4), 2);
    const Rgb floor_colour = ground * ((0.92f + 0.16f * mottle) * gain) + noise;
    s.backdrop[i] = floor_colour;
    s.material[i] = coverage;
    s.colour[i] = mix(floor_colour, shell, coverage);
  });
  return s;
}

inline Scene render_scene(std::string_view category, int size, SplitMix64& rng, std::uint64_t key) {
  if (category == "weave") return render_weave(size, rng, key);
  if (category == "grain") return render_grain(size, rng, key);
  if (category == "washer") return render_washer(size, rng, key);
  if (category == "capsule") return render_capsule(size, rng, key);
  fail("synthetic dataset: no renderer for category '", category, "'");
}

// A random point on the material, at least `margin` pixels inside it where the shape allows.
inline Point material_point(const Scene& s, float margin, SplitMix64& rng) {
  const Geometry& g = s.geometry;
  const float sz = static_cast<float>(s.size);
  switch (g.shape) {
    case Shape::texture: {
      const float m = std::max(margin, sz * 0.12f);
      return {rng.uniform(m, sz - m), rng.uniform(m, sz - m)};
    }
    case Shape::washer: {
      float lo = g.inner + margin, hi = g.outer - margin;
      if (lo > hi) lo = hi = (g.inner + g.outer) * 0.5f;
      const float r = rng.uniform(lo, hi), phi = rng.uniform(0, 2 * pi);
      return {g.centre.x + r * std::cos(phi), g.centre.y + r * std::sin(phi)};
    }
    case Shape::capsule: {
      const float across = std::max(g.radius - margin, 0.0f);
      const Point local{rng.uniform(-g.half_length, g.half_length), rng.uniform(-across, across)};
      const Point p = rotate(local, g.angle);
      return {g.centre.x + p.x, g.centre.y + p.y};
    }
  }
  return g.centre;
}

// A blob's radius at angle phi: a circle wobbled by three harmonics.
struct Blob {
  Point centre;
  float radius = 0;
  std::array<float, 3> phase{};
  float radius_at(float phi) const {
    return radius * (1.0f + 0.18f * std::sin(3 * phi + phase[0]) + 0.12f * std::sin(5 * phi + phase[1]) +
                     0.07f * std::sin(7 * phi + phase[2]));
  }
  // Distance from p to the centre relative to the blob's radius in p's direction (1 on the outline).
  float relative_distance(Point p) const {
    const float dx = p.x - centre.x, dy = p.y - centre.y;
    return std::hypot(dx, dy) / radius_at(std::atan2(dy, dx));
  }
};

inline Blob random_blob(const Scene& s, float radius, SplitMix64& rng) {
  Blob b;
  b.radius = radius;
  for (float& ph : b.phase) ph = rng.uniform(0, 2 * pi);
  b.centre = material_point(s, radius * 0.6f, rng);
  return b;
}

// How a defect changes one pixel: where coverage >= 0.5 the pixel becomes mix(clean, colour, alpha)
// and joins the mask; elsewhere it is left alone.
struct Stroke {
  float coverage = 0;
  Rgb colour;
  float alpha = 1;
};

template <class F>
std::size_t paint(const Scene& s, SyntheticSample& out, F&& stroke_at) {
  std::size_t painted = 0;
  for_each_pixel(s.size, [&](const Pixel& px) {
    const std::size_t i = px.i;
    const Stroke st = stroke_at(Point{px.cx, px.cy}, i);
    if (!(st.coverage >= 0.5f)) return;
    const Rgb c = mix(s.colour[i], st.colour, clamp01(st.alpha));
    out.image.rgb[i * 3 + 0] = to_byte(c.r);
    out.image.rgb[i * 3 + 1] = to_byte(c.g);
    out.image.rgb[i * 3 + 2] = to_byte(c.b);
    out.mask[i] = 255;
    ++painted;
  });
  return painted;
}

inline std::size_t draw_scratch(const Scene& s, SyntheticSample& out, SplitMix64& rng) {
  const float sz = static_cast<float>(s.size);
  const Point a = material_point(s, 0, rng);
  Point b;
  if (s.geometry.shape == Shape::texture) {  // a texture has room for a long stroke in any direction
    const float heading = rng.uniform(0, 2 * pi), length = sz * rng.uniform(0.25f, 0.45f);
    b = {std::clamp(a.x + length * std::cos(heading), 0.0f, sz), std::clamp(a.y + length * std::sin(heading), 0.0f, sz)};
  } else {  // on an object both ends lie on it, far enough apart to read as a scratch
    b = material_point(s, 0, rng);
    for (int tries = 0; tries < 16 && distance(a, b) < sz * 0.15f; ++tries) b = material_point(s, 0, rng);
  }
  const float bow = distance(a, b) * rng.uniform(-0.25f, 0.25f);
  const Point mid{(a.x + b.x) * 0.5f, (a.y + b.y) * 0.5f};
  const float len = std::max(distance(a, b), 1.0f);
  const Point control{mid.x - (b.y - a.y) / len * bow, mid.y + (b.x - a.x) / len * bow};
  constexpr int segments = 48;
  std::array<Point, segments + 1> curve;
  for (int k = 0; k <= segments; ++k) {
    const float t = static_cast<float>(k) / segments, u = 1 - t;
    curve[k] = {u * u * a.x + 2 * u * t * control.x + t * t * b.x, u * u * a.y + 2 * u * t * control.y + t * t * b.y};
  }
  const float width = std::max(1.0f, sz / 150.0f) * rng.uniform(1.0f, 1.6f);
  const bool bright = rng.coin();
  float min_x = sz, min_y = sz, max_x = 0, max_y = 0;
  for (const Point& p : curve) {
    min_x = std::min(min_x, p.x), max_x = std::max(max_x, p.x);
    min_y = std::min(min_y, p.y), max_y = std::max(max_y, p.y);
  }
  const float reach = width * 0.5f + 1.0f;
  return paint(s, out, [&](Point p, std::size_t i) -> Stroke {
    if (p.x < min_x - reach || p.x > max_x + reach || p.y < min_y - reach || p.y > max_y + reach) return {};
    float d = sz;
    for (int k = 0; k < segments; ++k) {
      const Point q = curve[k], r = curve[k + 1];
      const float ex = r.x - q.x, ey = r.y - q.y;
      const float t = std::clamp(((p.x - q.x) * ex + (p.y - q.y) * ey) / std::max(ex * ex + ey * ey, 1e-12f), 0.0f, 1.0f);
      d = std::min(d, std::hypot(p.x - q.x - t * ex, p.y - q.y - t * ey));
    }
    const float coverage = clamp01(width * 0.5f + 0.5f - d) * s.material[i];
    // A bright scratch cannot show on white, nor a dark one on black: there it takes the other tone.
    const Rgb c = s.colour[i];
    const float lum = luminance(c);
    const bool lighten = bright ? lum < 0.88f : lum < 0.15f;
    const Rgb colour = lighten ? c + (Rgb{1, 1, 1} + c * -1.0f) * 0.8f : c * 0.3f;
    return {coverage, colour, coverage};
  });
}

inline std::size_t draw_hole(const Scene& s, SyntheticSample& out, SplitMix64& rng) {
  const float sz = static_cast<float>(s.size);
  const float radius = sz * rng.uniform(0.025f, 0.045f), rim = radius * 0.35f;
  const Point centre = material_point(s, radius + rim + 1.0f, rng);
  const Rgb pit{0.05f, 0.045f, 0.04f};
  return paint(s, out, [&](Point p, std::size_t i) -> Stroke {
    const float d = distance(p, centre);
    const float coverage = clamp01(radius + rim + 0.5f - d) * s.material[i];
    const Rgb c = s.colour[i];
    const Rgb lip = luminance(c) > 0.5f ? c * 0.55f : c * 0.5f + 0.5f;  // contrasts with whatever surrounds it
    const Rgb depth = pit + 0.06f * clamp01(0.5f + (p.x - centre.x) / (2 * radius));  // lit from one side
    return {coverage, mix(depth, lip, clamp01(d - radius + 0.5f)), coverage};
  });
}

inline std::size_t draw_stain(const Scene& s, SyntheticSample& out, SplitMix64& rng) {
  const float sz = static_cast<float>(s.size);
  const float scale = s.geometry.shape == Shape::texture ? 1.0f : 0.7f;
  const Blob blob = random_blob(s, sz * scale * rng.uniform(0.05f, 0.09f), rng);
  // Multiplicative tints with at least one channel well below one, so every colour underneath changes.
  static constexpr std::array<Rgb, 4> tints{{{0.75f, 0.50f, 0.25f}, {0.85f, 0.42f, 0.20f}, {0.40f, 0.42f, 0.36f},
                                            {0.35f, 0.45f, 0.90f}}};
  const Rgb tint = tints[rng.below(tints.size())];
  return paint(s, out, [&](Point p, std::size_t i) -> Stroke {
    const float q = blob.relative_distance(p);
    if (q > 1.3f) return {};
    const float body = clamp01((1.15f - q) / 0.30f);                 // 0.5 exactly on the outline
    const float edge = 0.35f * std::exp(-square((q - 0.93f) / 0.07f));  // dried-in darker rim
    const float coverage = body * s.material[i];
    return {coverage, s.colour[i] * tint, std::min(0.55f * body + edge, 0.95f)};
  });
}

inline std::size_t draw_missing(const Scene& s, SyntheticSample& out, SplitMix64& rng) {
  const Geometry& g = s.geometry;
  const float sz = static_cast<float>(s.size);
  // Coverage of the cut region at p; the object's own coverage only decides which pixels it touches.
  auto cut = [&](auto&& cut_coverage) {
    return paint(s, out, [&](Point p, std::size_t i) -> Stroke {
      const float c = cut_coverage(p);
      const float coverage = s.material[i] >= 1.0f / 255 ? c : 0.0f;
      return {coverage, s.backdrop[i], c};
    });
  };
  switch (g.shape) {
    case Shape::texture: {
      const Blob blob = random_blob(s, sz * rng.uniform(0.06f, 0.10f), rng);
      return cut([&](Point p) {
        const float dx = p.x - blob.centre.x, dy = p.y - blob.centre.y;
        return clamp01(blob.radius_at(std::atan2(dy, dx)) - std::hypot(dx, dy) + 0.5f);
      });
    }
    case Shape::washer: {  // a broken-out sector
      const float heading = rng.uniform(0, 2 * pi), half_angle = rng.uniform(0.2f, 0.38f);
      return cut([&](Point p) {
        const Point local = rotate({p.x - g.centre.x, p.y - g.centre.y}, -heading);
        const float off = std::abs(std::atan2(local.y, local.x)) - half_angle;
        return clamp01(0.5f - off * std::hypot(local.x, local.y));
      });
    }
    case Shape::capsule: {
      if (rng.coin()) {  // a bite out of the side
        const float side = rng.coin() ? 1.0f : -1.0f;
        const Point local{rng.uniform(-0.8f, 0.8f) * g.half_length, side * g.radius};
        const Point r = rotate(local, g.angle);
        const Point centre{g.centre.x + r.x, g.centre.y + r.y};
        const float radius = sz * rng.uniform(0.05f, 0.08f);
        return cut([&](Point p) { return clamp01(radius + 0.5f - distance(p, centre)); });
      }
      // One end broken off along a slanted line.
      const float end = rng.coin() ? 1.0f : -1.0f;
      const float at = g.half_length + g.radius * rng.uniform(-0.9f, 0.3f);
      const float slant = rng.uniform(-0.5f, 0.5f);
      const float nx = std::cos(slant), ny = std::sin(slant);
      return cut([&](Point p) {
        const Point local = rotate({p.x - g.centre.x, p.y - g.centre.y}, -g.angle);
        return clamp01(0.5f + (end * local.x * nx + local.y * ny) - at);
      });
    }
  }
  return 0;
}

inline std::uint64_t sample_key(std::uint64_t seed, std::string_view category, SyntheticSplit split,
                                std::string_view defect, int index) {
  std::uint64_t k = combine(mix64(seed), fnv1a(category));
  k = combine(k, split == SyntheticSplit::train ? 1 : 2);
  k = combine(k, fnv1a(defect));
  return combine(k, static_cast<std::uint64_t>(index));
}

inline Image to_image(const std::vector<Rgb>& colour, int size) {
  Image img;
  img.width = img.height = size;
  img.rgb.resize(colour.size() * 3);
  for (std::size_t i = 0; i < colour.size(); ++i) {
    img.rgb[i * 3 + 0] = to_byte(colour[i].r);
    img.rgb[i * 3 + 1] = to_byte(colour[i].g);
    img.rgb[i * 3 + 2] = to_byte(colour[i].b);
  }
  return img;
}

// MVTec AD's masks are single-channel PNGs; write_png only writes RGB or RGBA.
inline void make_folder(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  require(!ec, dir.string(), ": cannot create folder (", ec.message(), ")");
}

inline std::string numbered(int index, std::string_view suffix) {
  char name[32];
  std::snprintf(name, sizeof name, "%03d", index);
  return std::string(name) + std::string(suffix);
}

}  // namespace synthetic_detail

inline void check_synthetic_options(const SyntheticDatasetOptions& o) {
  require(o.image_size >= synthetic_min_image_size && o.image_size <= synthetic_max_image_size,
          "synthetic dataset: image size ", o.image_size, " is out of range (", synthetic_min_image_size, " to ",
          synthetic_max_image_size, ")");
  auto check_count = [](int n, int lowest, std::string_view what) {
    require(n >= lowest && n <= synthetic_max_count, "synthetic dataset: ", what, " count ", n,
            " is out of range (", lowest, " to ", synthetic_max_count, ")");
  };
  check_count(o.train_good, 1, "training image");
  check_count(o.test_good, 0, "good test image");
  check_count(o.test_per_defect, 0, "per-defect test image");
  for (std::size_t i = 0; i < o.categories.size(); ++i) {
    synthetic_category(o.categories[i]);
    for (std::size_t j = 0; j < i; ++j)
      require(o.categories[j] != o.categories[i], "synthetic dataset: category '", o.categories[i], "' is listed twice");
  }
}

inline std::vector<std::string> synthetic_selected_categories(const SyntheticDatasetOptions& o) {
  if (!o.categories.empty()) return o.categories;
  std::vector<std::string> all;
  for (const auto& c : synthetic_categories) all.emplace_back(c.name);
  return all;
}

// Renders one image of the dataset. `defect` is "good" or one of synthetic_defects (test split only).
inline SyntheticSample render_synthetic_sample(std::string_view category, SyntheticSplit split, std::string_view defect,
                                               int index, int image_size, std::uint64_t seed) {
  using namespace synthetic_detail;
  const SyntheticCategoryInfo& info = synthetic_category(category);
  const bool good = defect == "good";
  if (!good) synthetic_defect(defect);
  require(good || split == SyntheticSplit::test, "synthetic dataset: training images are all good, not '", defect, "'");
  require(image_size >= synthetic_min_image_size && image_size <= synthetic_max_image_size,
          "synthetic dataset: image size ", image_size, " is out of range (", synthetic_min_image_size, " to ",
          synthetic_max_image_size, ")");
  require(index >= 0, "synthetic dataset: image index ", index, " is negative");

  const std::uint64_t key = sample_key(seed, info.name, split, defect, index);
  SplitMix64 rng(key);
  const Scene scene = render_scene(info.name, image_size, rng, combine(key, 0x5ce2e));
  SyntheticSample out;
  out.clean = to_image(scene.colour, image_size);
  out.image = out.clean;
  if (good) return out;

  // A defect that lands almost entirely off the material (a scratch across a washer's hole) is drawn
  // again from the same stream, so the result stays deterministic.
  const std::size_t least = std::max<std::size_t>(4, static_cast<std::size_t>(image_size) * image_size / 4000);
  SplitMix64 defect_rng(combine(key, 0xdefec7));
  for (int attempt = 0; attempt < 64; ++attempt) {
    out.image = out.clean;
    out.mask.assign(out.clean.pixel_count(), 0);
    std::size_t painted = 0;
    if (defect == "scratch") painted = draw_scratch(scene, out, defect_rng);
    else if (defect == "hole") painted = draw_hole(scene, out, defect_rng);
    else if (defect == "stain") painted = draw_stain(scene, out, defect_rng);
    else if (defect == "missing") painted = draw_missing(scene, out, defect_rng);
    else fail("synthetic dataset: no renderer for defect '", defect, "'");
    if (painted >= least) return out;
  }
  fail("synthetic dataset: could not place a ", defect, " on ", category, " image ", index, " at ", image_size,
       " px (every try covered fewer than ", least, " pixels)");
}

inline std::string synthetic_readme(const SyntheticDatasetOptions& o) {
  const std::vector<std::string> cats = synthetic_selected_categories(o);
  std::string list, defects;
  for (const auto& c : cats) list += (list.empty() ? "" : ",") + c;
  for (const auto& d : synthetic_defects) defects += (defects.empty() ? "" : ", ") + std::string(d.name);
  std::string t;
  t += "focuspatch synthetic anomaly-detection dataset\n";
  t += "==============================================\n\n";
  t += "Synthetic images in MVTec AD's folder layout, written by focuspatch-synth (generator version " +
       std::to_string(synthetic_generator_version) + ")\nfor tests and demos. This is not MVTec AD and not real data.\n\n";
  t += "Parameters\n";
  t += "  seed:                     " + std::to_string(o.seed) + "\n";
  t += "  image size:               " + std::to_string(o.image_size) + " x " + std::to_string(o.image_size) + " px, RGB\n";
  t += "  train/good per category:  " + std::to_string(o.train_good) + "\n";
  t += "  test/good per category:   " + std::to_string(o.test_good) + "\n";
  t += "  test images per defect:   " + std::to_string(o.test_per_defect) + "\n";
  t += "  categories:               " + list + "\n";
  t += "  defect types:             " + defects + " (in every category)\n\n";
  t += "Regenerate with\n  focuspatch-synth --out ROOT --size " + std::to_string(o.image_size) + " --train " +
       std::to_string(o.train_good) + " --test-good " + std::to_string(o.test_good) + " --test-defect " +
       std::to_string(o.test_per_defect) + " --seed " + std::to_string(o.seed) + " --categories " + list + "\n\n";
  t += "Layout\n";
  t += "  <category>/train/good/NNN.png               normal images\n";
  t += "  <category>/test/good/NNN.png                normal images\n";
  t += "  <category>/test/<defect>/NNN.png            anomalous images\n";
  t += "  <category>/ground_truth/<defect>/NNN_mask.png\n";
  t += "      8-bit greyscale, 255 on the defect, 0 elsewhere. A pixel is in the mask when the defect's\n";
  t += "      anti-aliased coverage is at least 0.5; the defect is painted on exactly those pixels, so\n";
  t += "      everything outside the mask is as the image would be without the defect.\n\n";
  t += "Categories\n";
  for (const auto& c : cats) t += "  " + c + ": " + std::string(synthetic_category(c).description) + "\n";
  t += "\nDefects\n";
  for (const auto& d : synthetic_defects) t += "  " + std::string(d.name) + ": " + std::string(d.description) + "\n";
  return t;
}

// Writes the dataset under root (creating folders as needed, overwriting files of the same name) and
// returns what it wrote per category. Refusing to write over other data is the caller's business.
inline std::vector<SyntheticCategoryCounts> write_synthetic_dataset(const std::filesystem::path& root,
                                                                    const SyntheticDatasetOptions& options) {
  using namespace synthetic_detail;
  check_synthetic_options(options);
  make_folder(root);
  std::vector<SyntheticCategoryCounts> summary;
  for (const std::string& category : synthetic_selected_categories(options)) {
    SyntheticCategoryCounts counts;
    counts.category = category;
    const std::filesystem::path base = root / category;
    auto write_good = [&](SyntheticSplit split, int n, std::string_view folder) {
      if (n == 0) return;
      const std::filesystem::path dir = base / folder / "good";
      make_folder(dir);
      for (int i = 0; i < n; ++i)
        write_png((dir / numbered(i, ".png")).string(),
                  render_synthetic_sample(category, split, "good", i, options.image_size, options.seed).image);
    };
    write_good(SyntheticSplit::train, options.train_good, "train");
    counts.train_good = options.train_good;
    write_good(SyntheticSplit::test, options.test_good, "test");
    counts.test_good = options.test_good;
    for (const auto& defect : synthetic_defects) {
      if (options.test_per_defect == 0) break;
      const std::filesystem::path images = base / "test" / defect.name, masks = base / "ground_truth" / defect.name;
      make_folder(images);
      make_folder(masks);
      for (int i = 0; i < options.test_per_defect; ++i) {
        const SyntheticSample s =
            render_synthetic_sample(category, SyntheticSplit::test, defect.name, i, options.image_size, options.seed);
        write_png((images / numbered(i, ".png")).string(), s.image);
        write_grey_png((masks / numbered(i, "_mask.png")).string(), options.image_size, options.image_size, s.mask);
      }
      counts.test_defects.emplace_back(std::string(defect.name), options.test_per_defect);
    }
    summary.push_back(std::move(counts));
  }
  const std::filesystem::path readme = root / "README.txt";
  write_file(readme, synthetic_readme(options));
  return summary;
}

}  // namespace focuspatch
