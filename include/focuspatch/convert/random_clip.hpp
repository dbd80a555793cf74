#pragma once
// Randomly initialized CLIP weights in the exact shapes of OpenAI's released models, for demos,
// tests and benchmarks where real weights cannot be downloaded. The numbers are deterministic in
// the seed; they mean nothing, but every FLOP and byte of the real model is there.
#include <cmath>
#include <cstdint>
#include <string>

#include "focuspatch/convert/clip_converter.hpp"

namespace focuspatch {

// OpenAI's configurations (clip/model.py build_model on the released state dicts).
inline ClipConfig clip_preset(const std::string& name) {
  auto make = [](int image, int patch, int vw, int vl, int tw, int tl, int embed) {
    ClipConfig c;
    c.vision.image_size = image;
    c.vision.patch_size = patch;
    c.vision.width = vw;
    c.vision.layers = vl;
    c.vision.heads = vw / 64;
    c.vision.mlp_width = 4 * vw;
    c.text.width = tw;
    c.text.layers = tl;
    c.text.heads = tw / 64;
    c.text.mlp_width = 4 * tw;
    c.text.context_length = 77;
    c.text.vocab_size = 49408;
    c.embed_dim = embed;
    c.logit_scale = 4.6052f;
    return c;
  };
  if (name == "ViT-B/32") return make(224, 32, 768, 12, 512, 12, 512);
  if (name == "ViT-B/16") return make(224, 16, 768, 12, 512, 12, 512);
  if (name == "ViT-L/14") return make(224, 14, 1024, 24, 768, 12, 768);
  if (name == "ViT-L/14@336px") return make(336, 14, 1024, 24, 768, 12, 768);
  if (name == "tiny") return make(32, 8, 64, 2, 64, 2, 32);
  fail("unknown model preset '", name, "' (ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px, tiny)");
}

namespace detail {
// Uniform values with standard deviation `stddev`, from a counter-based hash: fast and identical on
// every platform, unlike std::normal_distribution.
inline FloatTensor random_tensor(Shape shape, float stddev, float mean, std::uint64_t seed) {
  FloatTensor t(std::move(shape));
  const float half_range = stddev * 1.7320508f;
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    std::uint64_t z = seed + 0x9e3779b97f4a7c15ull * static_cast<std::uint64_t>(i + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float u = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    t.data()[i] = mean + (2.0f * u - 1.0f) * half_range;
  }
  return t;
}
}  // namespace detail

inline ConversionPlan random_clip_plan(const ClipConfig& config, std::uint64_t seed) {
  config.validate("random weights");
  ConversionPlan plan;
  plan.config = config;
  std::uint64_t counter = seed * 1000003ull;
  auto add = [&](const std::string& name, Shape shape, float stddev, float mean = 0.0f) {
    const std::uint64_t s = ++counter * 0x2545f4914f6cdd1dull;
    plan.tensors.push_back({name, shape, [shape, stddev, mean, s] { return detail::random_tensor(shape, stddev, mean, s); }});
  };
  const auto& v = config.vision;
  const auto& t = config.text;
  auto blocks = [&](const std::string& tower, const TransformerConfig& c) {
    const std::int64_t w = c.width, m = c.mlp_width;
    const float in_w = 1.0f / std::sqrt(static_cast<float>(w)), in_m = 1.0f / std::sqrt(static_cast<float>(m));
    for (int i = 0; i < c.layers; ++i) {
      auto n = [&](const char* leaf) { return names::block(tower, i, leaf); };
      add(n("ln1.weight"), {w}, 0.1f, 1.0f);
      add(n("ln1.bias"), {w}, 0.02f);
      add(n("attn.qkv.weight"), {3 * w, w}, in_w);
      add(n("attn.qkv.bias"), {3 * w}, 0.02f);
      add(n("attn.out.weight"), {w, w}, in_w);
      add(n("attn.out.bias"), {w}, 0.02f);
      add(n("ln2.weight"), {w}, 0.1f, 1.0f);
      add(n("ln2.bias"), {w}, 0.02f);
      add(n("mlp.fc.weight"), {m, w}, in_w);
      add(n("mlp.fc.bias"), {m}, 0.02f);
      add(n("mlp.proj.weight"), {w, m}, in_m);
      add(n("mlp.proj.bias"), {w}, 0.02f);
    }
  };
  const std::int64_t W = v.width, P = v.patch_size, Wt = t.width, D = config.embed_dim;
  add("v.patch_embed.weight", {W, 3, P, P}, 1.0f / std::sqrt(3.0f * static_cast<float>(P * P)));
  add("v.class_embed", {W}, 1.0f / std::sqrt(static_cast<float>(W)));
  add("v.pos_embed", {v.tokens(), W}, 0.1f);
  add("v.ln_pre.weight", {W}, 0.1f, 1.0f);
  add("v.ln_pre.bias", {W}, 0.02f);
  blocks("v", v);
  add("v.ln_post.weight", {W}, 0.1f, 1.0f);
  add("v.ln_post.bias", {W}, 0.02f);
  add("v.proj.weight", {D, W}, 1.0f / std::sqrt(static_cast<float>(W)));
  add("t.token_embed", {t.vocab_size, Wt}, 0.02f);
  add("t.pos_embed", {t.context_length, Wt}, 0.01f);
  blocks("t", t);
  add("t.ln_final.weight", {Wt}, 0.1f, 1.0f);
  add("t.ln_final.bias", {Wt}, 0.02f);
  add("t.proj.weight", {D, Wt}, 1.0f / std::sqrt(static_cast<float>(Wt)));
  plan.notes.push_back("random weights (seed " + std::to_string(seed) + "): for demos and benchmarks only; outputs mean nothing");
  return plan;
}

}  // namespace focuspatch
