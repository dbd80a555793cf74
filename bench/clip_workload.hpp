#pragma once
// What the CLIP benchmarks of every backend share: the FLOP count of a forward and deterministic
// input pixels.
//
// FLOP count (2 per multiply-add; bias, activations, softmax and layer norms not counted), for
// T = grid^2 + 1 tokens per image, width W, MLP width M, patch P, embedding D, L layers:
//   patch embedding   2 * (T - 1) * 3P^2 * W
//   per layer         2 * T * W * (3W + W + 2M)      qkv, out, fc, proj
//                     + 4 * T^2 * W                  Q K^T and P V over all heads
//   projection        2 * T * W * D                  every token (VisionRequest's patch_tokens)
// times the batch. ViT-B/16 at 224: 35.3 GFLOP per image. The text tower is the same transformer
// over n sequences padded to the longest (seq rows each), causal (the masked half is still
// computed, so counted), plus 2 * n * W * D for the projection of the end-of-text tokens.
#include <cstdint>
#include <vector>

#include "focuspatch/model/config.hpp"

namespace focuspatch::bench {

inline double vision_flops(const ClipConfig& c, std::int64_t batch) {
  const auto& v = c.vision;
  const double t = v.tokens(), w = v.width, m = v.mlp_width, p = v.patch_size, d = c.embed_dim;
  const double patch_embed = 2.0 * (t - 1) * 3.0 * p * p * w;
  const double layer = 2.0 * t * w * (3.0 * w + w + 2.0 * m) + 4.0 * t * t * w;
  const double projection = 2.0 * t * w * d;
  return static_cast<double>(batch) * (patch_embed + v.layers * layer + projection);
}

inline double text_flops(const ClipConfig& c, std::int64_t sequences, std::int64_t seq) {
  const auto& t = c.text;
  const double n = static_cast<double>(sequences), s = static_cast<double>(seq), w = t.width, m = t.mlp_width;
  const double layer = 2.0 * n * s * w * (3.0 * w + w + 2.0 * m) + n * 4.0 * s * s * w;
  return t.layers * layer + 2.0 * n * w * c.embed_dim;
}

// Preprocessed-looking pixels (roughly unit variance around zero), deterministic.
inline std::vector<float> random_images(std::int64_t batch, int size) {
  std::vector<float> pixels(static_cast<std::size_t>(batch * 3 * size * size));
  std::uint32_t state = 12345u;
  for (float& p : pixels) {
    state = state * 1664525u + 1013904223u;
    p = static_cast<float>(state >> 8) * (4.0f / 16777216.0f) - 2.0f;
  }
  return pixels;
}

}  // namespace focuspatch::bench
