#pragma once
// CLIP's architecture as numbers. The converter derives it from a checkpoint's tensor shapes and
// stores it in the weight file's metadata; the runtime reads it back from there and nowhere else.
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "focuspatch/core/error.hpp"
#include "focuspatch/io/preprocess.hpp"
#include "focuspatch/io/weight_file.hpp"
#include "focuspatch/io/weight_writer.hpp"

namespace focuspatch {

enum class Activation { QuickGelu, Gelu };

inline std::string activation_name(Activation a) { return a == Activation::QuickGelu ? "quick_gelu" : "gelu"; }
inline Activation parse_activation(const std::string& s, const std::string& where) {
  if (s == "quick_gelu") return Activation::QuickGelu;
  if (s == "gelu") return Activation::Gelu;
  fail(where, ": unknown activation '", s, "' (expected quick_gelu or gelu)");
}

// One transformer stack: pre-LayerNorm residual blocks of attention and an MLP.
struct TransformerConfig {
  int width = 0;
  int layers = 0;
  int heads = 0;
  int mlp_width = 0;
  Activation activation = Activation::QuickGelu;
  int head_dim() const { return width / heads; }
};

struct VisionConfig : TransformerConfig {
  int image_size = 0;
  int patch_size = 0;
  int grid() const { return image_size / patch_size; }
  int tokens() const { return grid() * grid() + 1; }
};

struct TextConfig : TransformerConfig {
  int context_length = 0;
  int vocab_size = 0;
};

struct ClipConfig {
  VisionConfig vision;
  TextConfig text;
  int embed_dim = 0;
  float layer_norm_eps = 1e-5f;
  float logit_scale = 0.0f;  // log of the multiplier, as stored by CLIP
  std::array<float, 3> image_mean = {0.48145466f, 0.4578275f, 0.40821073f};
  std::array<float, 3> image_std = {0.26862954f, 0.26130258f, 0.27577711f};

  // Refuses configurations the model code cannot run, naming `where` (a file) in the message.
  void validate(const std::string& where) const {
    auto check_stack = [&](const TransformerConfig& t, const char* tower) {
      require(t.width > 0 && t.layers > 0 && t.heads > 0 && t.mlp_width > 0, where, ": ", tower,
              " tower has a zero or negative size");
      require(t.width % t.heads == 0, where, ": ", tower, " width ", t.width, " is not divisible by its ", t.heads, " heads");
    };
    check_stack(vision, "vision");
    check_stack(text, "text");
    require(vision.patch_size > 0 && vision.image_size >= vision.patch_size && vision.image_size % vision.patch_size == 0, where,
            ": image size ", vision.image_size, " is not a multiple of patch size ", vision.patch_size);
    require(text.context_length > 1 && text.vocab_size > 2, where, ": text context ", text.context_length, " or vocabulary ",
            text.vocab_size, " is too small");
    require(embed_dim > 0, where, ": embedding size must be positive");
    // Comparisons are written so that NaN fails them.
    require(layer_norm_eps > 0.0f && layer_norm_eps < 1.0f, where, ": 'clip.layer_norm_eps' is ", layer_norm_eps,
            "; a LayerNorm epsilon must lie in (0, 1)");
    // CLIP stores the log of its logit multiplier and clamps the multiplier to 100 (log 4.6052)
    // while training; |log| <= 20 admits every trained model and keeps exp() finite and non-zero.
    require(std::isfinite(logit_scale) && std::fabs(logit_scale) <= kMaxAbsLogitScale, where, ": 'clip.logit_scale' is ", logit_scale,
            "; the log of the logit multiplier must be finite and within [-", kMaxAbsLogitScale, ", ", kMaxAbsLogitScale,
            "] (CLIP's is about 4.6)");
    check_normalization(image_mean, image_std, where, "'clip.image_mean'", "'clip.image_std'");
  }
  static constexpr float kMaxAbsLogitScale = 20.0f;

  void store(WeightWriter& w) const {
    auto put_stack = [&](const std::string& prefix, const TransformerConfig& t) {
      w.set_meta(prefix + ".width", t.width);
      w.set_meta(prefix + ".layers", t.layers);
      w.set_meta(prefix + ".heads", t.heads);
      w.set_meta(prefix + ".mlp_width", t.mlp_width);
      w.set_meta(prefix + ".activation", activation_name(t.activation));
    };
    w.set_meta("general.architecture", "clip");
    put_stack("clip.vision", vision);
    w.set_meta("clip.vision.image_size", vision.image_size);
    w.set_meta("clip.vision.patch_size", vision.patch_size);
    put_stack("clip.text", text);
    w.set_meta("clip.text.context_length", text.context_length);
    w.set_meta("clip.text.vocab_size", text.vocab_size);
    w.set_meta("clip.embed_dim", embed_dim);
    w.set_meta("clip.layer_norm_eps", static_cast<double>(layer_norm_eps));
    w.set_meta("clip.logit_scale", static_cast<double>(logit_scale));
    w.set_meta("clip.image_mean", fpw::MetaValue::of(std::vector<double>(image_mean.begin(), image_mean.end())));
    w.set_meta("clip.image_std", fpw::MetaValue::of(std::vector<double>(image_std.begin(), image_std.end())));
  }

  static ClipConfig load(const WeightFile& f) {
    require(f.has_meta("general.architecture"), f.path(), ": no 'general.architecture' metadata; not a focuspatch model file");
    const std::string& arch = f.meta_string("general.architecture");
    require(arch == "clip", f.path(), ": holds a '", arch, "' model, not CLIP");
    auto get_int = [&](const std::string& key) {
      const auto v = f.meta_int(key);
      require(v > 0 && v < (1 << 24), f.path(), ": metadata '", key, "' = ", v, " is out of range");
      return static_cast<int>(v);
    };
    auto get_stack = [&](const std::string& prefix, TransformerConfig& t) {
      t.width = get_int(prefix + ".width");
      t.layers = get_int(prefix + ".layers");
      t.heads = get_int(prefix + ".heads");
      t.mlp_width = get_int(prefix + ".mlp_width");
      t.activation = parse_activation(f.meta_string(prefix + ".activation"), f.path());
    };
    ClipConfig c;
    get_stack("clip.vision", c.vision);
    c.vision.image_size = get_int("clip.vision.image_size");
    c.vision.patch_size = get_int("clip.vision.patch_size");
    get_stack("clip.text", c.text);
    c.text.context_length = get_int("clip.text.context_length");
    c.text.vocab_size = get_int("clip.text.vocab_size");
    c.embed_dim = get_int("clip.embed_dim");
    // Stored as doubles; a finite one outside float's range would not survive the conversion
    // (undefined behaviour), so it is refused here, naming it; NaN and infinity convert exactly
    // and are refused by validate(), with every other value out of its range.
    auto to_float = [&](double v, const std::string& key) {
      require(!std::isfinite(v) || std::fabs(v) <= static_cast<double>(std::numeric_limits<float>::max()), f.path(), ": metadata '",
              key, "' = ", v, " is out of range");
      return static_cast<float>(v);
    };
    c.layer_norm_eps = to_float(f.meta_float("clip.layer_norm_eps"), "clip.layer_norm_eps");
    c.logit_scale = to_float(f.meta_float("clip.logit_scale"), "clip.logit_scale");
    const auto& mean = f.meta_floats("clip.image_mean");
    const auto& stdev = f.meta_floats("clip.image_std");
    require(mean.size() == 3, f.path(), ": metadata 'clip.image_mean' holds ", mean.size(), " values, expected 3 (R, G, B)");
    require(stdev.size() == 3, f.path(), ": metadata 'clip.image_std' holds ", stdev.size(), " values, expected 3 (R, G, B)");
    for (std::size_t i = 0; i < 3; ++i) {
      c.image_mean[i] = to_float(mean[i], "clip.image_mean");
      c.image_std[i] = to_float(stdev[i], "clip.image_std");
    }
    c.validate(f.path());
    return c;
  }
};

}  // namespace focuspatch
