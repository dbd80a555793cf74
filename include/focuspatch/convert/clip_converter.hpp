#pragma once
// Maps a foreign CLIP checkpoint onto our tensor names (model/weight_names.hpp), derives the
// architecture from tensor shapes, and writes a .fpw file. All knowledge of foreign layouts lives
// here and in the readers; the runtime knows only our format.
//
// Two namings are understood:
//   OpenAI / open_clip: visual.conv1.weight, visual.transformer.resblocks.N.attn.in_proj_weight, ...
//   Hugging Face CLIPModel: vision_model.embeddings.patch_embedding.weight, ...self_attn.q_proj, ...
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "focuspatch/convert/source_tensors.hpp"
#include "focuspatch/io/weight_writer.hpp"
#include "focuspatch/model/config.hpp"
#include "focuspatch/model/weight_names.hpp"

namespace focuspatch {

enum class CheckpointNaming { OpenAI, HuggingFace };

// What a Hugging Face config.json says that tensor shapes cannot.
struct HfClipSettings {
  int vision_heads = 0, text_heads = 0;
  Activation vision_activation = Activation::QuickGelu, text_activation = Activation::QuickGelu;
  float layer_norm_eps = 1e-5f;
  int image_size = 0, patch_size = 0;  // 0 = not stated; checked against the tensors when stated
  // Sizes config.json states (0 = not stated), each checked against the tensors' shapes.
  struct StackSizes {
    std::int64_t hidden_size = 0, intermediate_size = 0, num_hidden_layers = 0;
  };
  StackSizes vision_sizes, text_sizes;
  std::int64_t text_vocab_size = 0, text_context_length = 0, projection_dim = 0;
};

struct ConvertOptions {
  std::optional<DType> dtype;               // storage; default keeps f16/bf16 sources, else f32
  std::optional<int> vision_heads, text_heads;
  std::optional<Activation> activation;     // OpenAI naming only; default QuickGELU
  std::vector<std::string> vocab;           // tokenizer in id order; empty = none
  std::vector<std::pair<std::string, std::string>> merges;
  std::string source_name, source_sha256, source_format;
};

struct ConversionPlan {
  ClipConfig config;
  CheckpointNaming naming = CheckpointNaming::OpenAI;
  struct Tensor {
    std::string name;
    Shape shape;
    std::function<FloatTensor()> produce;
  };
  std::vector<Tensor> tensors;
  std::vector<std::string> ignored;  // source tensors that are not part of the model
  std::vector<std::string> notes;    // assumptions the user should know about
  DType source_dtype = DType::F32;
};

namespace detail {

inline int count_blocks(const SourceTensors& src, const std::string& prefix, const std::string& leaf) {
  int n = 0;
  while (src.contains(prefix + std::to_string(n) + leaf)) ++n;
  return n;
}

inline int dim_of(const SourceTensors& src, const std::string& name, std::size_t axis, std::size_t rank) {
  const Shape& s = src.shape(name);
  require(s.size() == rank, src.origin(), ": tensor '", name, "' has shape ", shape_string(s), ", expected rank ", rank);
  return static_cast<int>(s[axis]);
}

// OpenAI's build_model uses width // 64 heads. open_clip's largest ViTs use wider heads, which the
// tensors cannot reveal; those widths are listed so they are not silently split wrongly.
inline int default_heads(int width, std::optional<int> given, const std::string& tower, const std::string& origin,
                         std::vector<std::string>& notes) {
  if (given) return *given;
  struct Known {
    int width, heads;
    const char* model;
  };
  static constexpr Known known[] = {{1280, 16, "open_clip ViT-H/14 (head width 80)"},
                                    {1408, 16, "open_clip ViT-g/14 (head width 88)"},
                                    {1664, 16, "open_clip ViT-bigG/14 (head width 104)"}};
  for (const auto& k : known) {
    if (k.width == width && tower == "vision") {
      notes.push_back(tower + " width " + std::to_string(width) + ": assuming " + std::to_string(k.heads) + " heads as in " + k.model +
                      "; pass --vision-heads if this checkpoint differs");
      return k.heads;
    }
  }
  require(width % 64 == 0, origin, ": the ", tower, " width ", width, " is not a multiple of 64, so the number of attention heads ",
          "cannot be inferred; pass --", tower, "-heads N");
  notes.push_back(tower + " heads: " + std::to_string(width / 64) + " (width / 64, OpenAI's rule; override with --" + tower +
                  "-heads)");
  return width / 64;
}

inline FloatTensor transpose2d(const FloatTensor& t) {
  const auto rows = t.dim(0), cols = t.dim(1);
  FloatTensor out({cols, rows});
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) out.data()[c * rows + r] = t.data()[r * cols + c];
  return out;
}

inline FloatTensor concat_rows(const std::vector<FloatTensor>& parts) {
  Shape shape = parts.at(0).shape();
  shape[0] = 0;
  for (const auto& p : parts) shape[0] += p.dim(0);
  FloatTensor out(shape);
  float* dst = out.data();
  for (const auto& p : parts) dst = std::copy(p.values().begin(), p.values().end(), dst);
  return out;
}

inline float scalar_of(const SourceTensors& src, const std::string& name) {
  const FloatTensor t = src.load(name);
  require(t.numel() == 1, src.origin(), ": '", name, "' should be a scalar, has shape ", shape_string(t.shape()));
  return t.data()[0];
}

class PlanBuilder {
 public:
  PlanBuilder(const SourceTensors& src, ConversionPlan& plan) : src_(src), plan_(plan) {}

  // Copies source tensor `from` to `to`, checking its shape against the derived configuration.
  void copy(const std::string& to, const std::string& from, const Shape& expected) {
    check(from, expected);
    const SourceTensors* s = &src_;
    plan_.tensors.push_back({to, expected, [s, from] { return s->load(from); }});
    used_.insert(from);
  }
  void transposed(const std::string& to, const std::string& from, const Shape& source_shape) {
    check(from, source_shape);
    const SourceTensors* s = &src_;
    plan_.tensors.push_back({to, {source_shape[1], source_shape[0]}, [s, from] { return transpose2d(s->load(from)); }});
    used_.insert(from);
  }
  void stacked(const std::string& to, const std::vector<std::string>& from, const Shape& part_shape) {
    Shape shape = part_shape;
    shape[0] *= static_cast<std::int64_t>(from.size());
    for (const auto& f : from) {
      check(f, part_shape);
      used_.insert(f);
    }
    const SourceTensors* s = &src_;
    plan_.tensors.push_back({to, shape, [s, from] {
                               std::vector<FloatTensor> parts;
                               for (const auto& f : from) parts.push_back(s->load(f));
                               return concat_rows(parts);
                             }});
  }
  void mark_used(const std::string& name) { used_.insert(name); }
  void finish() {
    for (const auto& name : src_.names())
      if (!used_.count(name)) plan_.ignored.push_back(name);
    // The dtype the bulk of the weights was stored in decides the default storage type.
    std::map<DType, std::int64_t> by_dtype;
    for (const auto& name : used_) by_dtype[src_.dtype(name)] += element_count(src_.shape(name));
    std::int64_t best = -1;
    for (const auto& [dtype, count] : by_dtype)
      if (count > best) best = count, plan_.source_dtype = dtype;
  }

 private:
  void check(const std::string& name, const Shape& expected) const {
    const Shape& s = src_.shape(name);
    const DType t = src_.dtype(name);
    require(t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F64, src_.origin(), ": tensor '", name, "' is ",
            dtype_name(t), ", expected floating point weights");
    // Scalars and 1-element vectors are interchangeable across exporters.
    if (element_count(s) == 1 && element_count(expected) == 1) return;
    require(s == expected, src_.origin(), ": tensor '", name, "' has shape ", shape_string(s), " but the architecture derived from ",
            "the other tensors needs ", shape_string(expected));
  }

  const SourceTensors& src_;
  ConversionPlan& plan_;
  std::set<std::string> used_;
};

}  // namespace detail

inline std::optional<CheckpointNaming> detect_naming(const SourceTensors& src) {
  if (src.contains("visual.conv1.weight") && src.contains("token_embedding.weight")) return CheckpointNaming::OpenAI;
  if (src.contains("vision_model.embeddings.patch_embedding.weight") && src.contains("text_model.embeddings.token_embedding.weight"))
    return CheckpointNaming::HuggingFace;
  return std::nullopt;
}

// Finds where a CLIP state dict sits inside a checkpoint: "" for a bare state dict, "module." for
// DataParallel, "state_dict.module." for an open_clip training checkpoint, and so on.
inline std::string find_clip_prefix(const SourceTensors& src) {
  for (const std::string marker : {"visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight"}) {
    for (const auto& name : src.names()) {
      if (name.size() >= marker.size() && name.compare(name.size() - marker.size(), marker.size(), marker) == 0) {
        const std::string prefix = name.substr(0, name.size() - marker.size());
        if (prefix.empty() || prefix.back() == '.') return prefix;
      }
    }
  }
  for (const auto& name : src.names()) {
    if (name.find("visual.layer1.") != std::string::npos || name.find("visual.attnpool.") != std::string::npos)
      fail(src.origin(), ": this is a ResNet CLIP (RN50/RN101/...); only Vision Transformer CLIP models are supported");
    if (name.find("visual.trunk.") != std::string::npos)
      fail(src.origin(), ": this open_clip model uses a timm trunk ('visual.trunk.*'); only CLIP's own ViT layout is supported");
  }
  fail(src.origin(), ": no CLIP vision tower found (looked for 'visual.conv1.weight' or ",
       "'vision_model.embeddings.patch_embedding.weight'); is this a CLIP checkpoint?");
}

inline ConversionPlan plan_openai_clip(const SourceTensors& src, const ConvertOptions& opt) {
  ConversionPlan plan;
  plan.naming = CheckpointNaming::OpenAI;
  detail::PlanBuilder b(src, plan);
  ClipConfig& c = plan.config;
  auto& v = c.vision;
  auto& t = c.text;
  v.width = detail::dim_of(src, "visual.conv1.weight", 0, 4);
  v.patch_size = detail::dim_of(src, "visual.conv1.weight", 2, 4);
  require(src.shape("visual.conv1.weight")[1] == 3 && src.shape("visual.conv1.weight")[3] == v.patch_size, src.origin(),
          ": visual.conv1.weight ", shape_string(src.shape("visual.conv1.weight")), " is not a square RGB patch embedding");
  const int tokens = detail::dim_of(src, "visual.positional_embedding", 0, 2);
  const int grid = static_cast<int>(std::lround(std::sqrt(tokens - 1)));
  require(grid * grid + 1 == tokens, src.origin(), ": visual.positional_embedding has ", tokens,
          " rows, not a class token plus a square grid");
  v.image_size = grid * v.patch_size;
  v.layers = detail::count_blocks(src, "visual.transformer.resblocks.", ".attn.in_proj_weight");
  require(v.layers > 0, src.origin(), ": no visual.transformer.resblocks.N blocks found");
  v.mlp_width = detail::dim_of(src, "visual.transformer.resblocks.0.mlp.c_fc.weight", 0, 2);
  v.heads = detail::default_heads(v.width, opt.vision_heads, "vision", src.origin(), plan.notes);
  c.embed_dim = detail::dim_of(src, "visual.proj", 1, 2);

  t.vocab_size = detail::dim_of(src, "token_embedding.weight", 0, 2);
  t.width = detail::dim_of(src, "token_embedding.weight", 1, 2);
  t.context_length = detail::dim_of(src, "positional_embedding", 0, 2);
  t.layers = detail::count_blocks(src, "transformer.resblocks.", ".attn.in_proj_weight");
  require(t.layers > 0, src.origin(), ": no transformer.resblocks.N blocks found for the text tower");
  t.mlp_width = detail::dim_of(src, "transformer.resblocks.0.mlp.c_fc.weight", 0, 2);
  t.heads = detail::default_heads(t.width, opt.text_heads, "text", src.origin(), plan.notes);
  v.activation = t.activation = opt.activation.value_or(Activation::QuickGelu);
  if (!opt.activation)
    plan.notes.push_back("activation: QuickGELU (OpenAI's models); open_clip models trained without '-quickgelu' use GELU: pass --activation gelu");
  if (src.contains("logit_scale")) {
    c.logit_scale = detail::scalar_of(src, "logit_scale");
    b.mark_used("logit_scale");
  } else {
    c.logit_scale = std::log(1.0f / 0.07f);
    plan.notes.push_back("no logit_scale tensor: using CLIP's initial value ln(1/0.07)");
  }
  c.validate(src.origin());

  const std::int64_t W = v.width, P = v.patch_size, Wt = t.width, D = c.embed_dim;
  b.copy("v.patch_embed.weight", "visual.conv1.weight", {W, 3, P, P});
  b.copy("v.class_embed", "visual.class_embedding", {W});
  b.copy("v.pos_embed", "visual.positional_embedding", {tokens, W});
  b.copy("v.ln_pre.weight", "visual.ln_pre.weight", {W});
  b.copy("v.ln_pre.bias", "visual.ln_pre.bias", {W});
  b.copy("v.ln_post.weight", "visual.ln_post.weight", {W});
  b.copy("v.ln_post.bias", "visual.ln_post.bias", {W});
  b.transposed("v.proj.weight", "visual.proj", {W, D});
  auto blocks = [&](const std::string& ours, const std::string& theirs, int layers, std::int64_t w, std::int64_t m) {
    for (int i = 0; i < layers; ++i) {
      const std::string src_prefix = theirs + std::to_string(i) + ".";
      auto to = [&](const char* leaf) { return names::block(ours, i, leaf); };
      b.copy(to("ln1.weight"), src_prefix + "ln_1.weight", {w});
      b.copy(to("ln1.bias"), src_prefix + "ln_1.bias", {w});
      b.copy(to("attn.qkv.weight"), src_prefix + "attn.in_proj_weight", {3 * w, w});
      b.copy(to("attn.qkv.bias"), src_prefix + "attn.in_proj_bias", {3 * w});
      b.copy(to("attn.out.weight"), src_prefix + "attn.out_proj.weight", {w, w});
      b.copy(to("attn.out.bias"), src_prefix + "attn.out_proj.bias", {w});
      b.copy(to("ln2.weight"), src_prefix + "ln_2.weight", {w});
      b.copy(to("ln2.bias"), src_prefix + "ln_2.bias", {w});
      b.copy(to("mlp.fc.weight"), src_prefix + "mlp.c_fc.weight", {m, w});
      b.copy(to("mlp.fc.bias"), src_prefix + "mlp.c_fc.bias", {m});
      b.copy(to("mlp.proj.weight"), src_prefix + "mlp.c_proj.weight", {w, m});
      b.copy(to("mlp.proj.bias"), src_prefix + "mlp.c_proj.bias", {w});
    }
  };
  blocks("v", "visual.transformer.resblocks.", v.layers, W, v.mlp_width);
  b.copy("t.token_embed", "token_embedding.weight", {t.vocab_size, Wt});
  b.copy("t.pos_embed", "positional_embedding", {t.context_length, Wt});
  blocks("t", "transformer.resblocks.", t.layers, Wt, t.mlp_width);
  b.copy("t.ln_final.weight", "ln_final.weight", {Wt});
  b.copy("t.ln_final.bias", "ln_final.bias", {Wt});
  b.transposed("t.proj.weight", "text_projection", {Wt, D});
  b.finish();
  return plan;
}

inline ConversionPlan plan_hf_clip(const SourceTensors& src, const HfClipSettings& hf) {
  ConversionPlan plan;
  plan.naming = CheckpointNaming::HuggingFace;
  detail::PlanBuilder b(src, plan);
  ClipConfig& c = plan.config;
  auto& v = c.vision;
  auto& t = c.text;
  const std::string ve = "vision_model.embeddings.", te = "text_model.embeddings.";
  v.width = detail::dim_of(src, ve + "patch_embedding.weight", 0, 4);
  v.patch_size = detail::dim_of(src, ve + "patch_embedding.weight", 2, 4);
  const int tokens = detail::dim_of(src, ve + "position_embedding.weight", 0, 2);
  const int grid = static_cast<int>(std::lround(std::sqrt(tokens - 1)));
  require(grid * grid + 1 == tokens, src.origin(), ": position embedding has ", tokens, " rows, not a class token plus a square grid");
  v.image_size = grid * v.patch_size;
  require(hf.patch_size == 0 || hf.patch_size == v.patch_size, src.origin(), ": config.json says patch_size ", hf.patch_size,
          " but the weights have ", v.patch_size);
  require(hf.image_size == 0 || hf.image_size == v.image_size, src.origin(), ": config.json says image_size ", hf.image_size,
          " but the position embedding implies ", v.image_size);
  v.layers = detail::count_blocks(src, "vision_model.encoder.layers.", ".self_attn.q_proj.weight");
  require(v.layers > 0, src.origin(), ": no vision_model.encoder.layers.N blocks found");
  v.mlp_width = detail::dim_of(src, "vision_model.encoder.layers.0.mlp.fc1.weight", 0, 2);
  v.heads = hf.vision_heads;
  v.activation = hf.vision_activation;
  c.embed_dim = detail::dim_of(src, "visual_projection.weight", 0, 2);
  t.vocab_size = detail::dim_of(src, te + "token_embedding.weight", 0, 2);
  t.width = detail::dim_of(src, te + "token_embedding.weight", 1, 2);
  t.context_length = detail::dim_of(src, te + "position_embedding.weight", 0, 2);
  t.layers = detail::count_blocks(src, "text_model.encoder.layers.", ".self_attn.q_proj.weight");
  require(t.layers > 0, src.origin(), ": no text_model.encoder.layers.N blocks found");
  t.mlp_width = detail::dim_of(src, "text_model.encoder.layers.0.mlp.fc1.weight", 0, 2);
  t.heads = hf.text_heads;
  t.activation = hf.text_activation;
  c.layer_norm_eps = hf.layer_norm_eps;
  // Every size config.json states must be the one the tensors have: a contradiction means the
  // folder mixes files of two models (or a damaged config), and converting would hide it.
  auto agree = [&](std::int64_t stated, std::int64_t actual, const char* key, const char* source) {
    require(stated == 0 || stated == actual, src.origin(), ": config.json says ", key, " = ", stated, " but ", source, " ", actual,
            "; the config and the weights do not belong together");
  };
  agree(hf.vision_sizes.hidden_size, v.width, "vision_config.hidden_size", "the patch embedding's width is");
  agree(hf.vision_sizes.intermediate_size, v.mlp_width, "vision_config.intermediate_size", "the MLP weights' width is");
  agree(hf.vision_sizes.num_hidden_layers, v.layers, "vision_config.num_hidden_layers", "the weights hold vision blocks:");
  agree(hf.text_sizes.hidden_size, t.width, "text_config.hidden_size", "the token embedding's width is");
  agree(hf.text_sizes.intermediate_size, t.mlp_width, "text_config.intermediate_size", "the MLP weights' width is");
  agree(hf.text_sizes.num_hidden_layers, t.layers, "text_config.num_hidden_layers", "the weights hold text blocks:");
  agree(hf.text_vocab_size, t.vocab_size, "text_config.vocab_size", "the token embedding's rows are");
  agree(hf.text_context_length, t.context_length, "text_config.max_position_embeddings", "the position embedding's rows are");
  agree(hf.projection_dim, c.embed_dim, "projection_dim", "the projection's width is");
  if (src.contains("logit_scale")) {
    c.logit_scale = detail::scalar_of(src, "logit_scale");
    b.mark_used("logit_scale");
  } else {
    c.logit_scale = std::log(1.0f / 0.07f);
    plan.notes.push_back("no logit_scale tensor: using CLIP's initial value ln(1/0.07)");
  }
  c.validate(src.origin());

  const std::int64_t W = v.width, P = v.patch_size, Wt = t.width, D = c.embed_dim;
  b.copy("v.patch_embed.weight", ve + "patch_embedding.weight", {W, 3, P, P});
  b.copy("v.class_embed", ve + "class_embedding", {W});
  b.copy("v.pos_embed", ve + "position_embedding.weight", {tokens, W});
  b.copy("v.ln_pre.weight", "vision_model.pre_layrnorm.weight", {W});
  b.copy("v.ln_pre.bias", "vision_model.pre_layrnorm.bias", {W});
  b.copy("v.ln_post.weight", "vision_model.post_layernorm.weight", {W});
  b.copy("v.ln_post.bias", "vision_model.post_layernorm.bias", {W});
  b.copy("v.proj.weight", "visual_projection.weight", {D, W});
  auto blocks = [&](const std::string& ours, const std::string& theirs, int layers, std::int64_t w, std::int64_t m) {
    for (int i = 0; i < layers; ++i) {
      const std::string p = theirs + std::to_string(i) + ".";
      auto to = [&](const char* leaf) { return names::block(ours, i, leaf); };
      b.copy(to("ln1.weight"), p + "layer_norm1.weight", {w});
      b.copy(to("ln1.bias"), p + "layer_norm1.bias", {w});
      b.stacked(to("attn.qkv.weight"), {p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"},
                {w, w});
      b.stacked(to("attn.qkv.bias"), {p + "self_attn.q_proj.bias", p + "self_attn.k_proj.bias", p + "self_attn.v_proj.bias"}, {w});
      b.copy(to("attn.out.weight"), p + "self_attn.out_proj.weight", {w, w});
      b.copy(to("attn.out.bias"), p + "self_attn.out_proj.bias", {w});
      b.copy(to("ln2.weight"), p + "layer_norm2.weight", {w});
      b.copy(to("ln2.bias"), p + "layer_norm2.bias", {w});
      b.copy(to("mlp.fc.weight"), p + "mlp.fc1.weight", {m, w});
      b.copy(to("mlp.fc.bias"), p + "mlp.fc1.bias", {m});
      b.copy(to("mlp.proj.weight"), p + "mlp.fc2.weight", {w, m});
      b.copy(to("mlp.proj.bias"), p + "mlp.fc2.bias", {w});
    }
  };
  blocks("v", "vision_model.encoder.layers.", v.layers, W, v.mlp_width);
  b.copy("t.token_embed", te + "token_embedding.weight", {t.vocab_size, Wt});
  b.copy("t.pos_embed", te + "position_embedding.weight", {t.context_length, Wt});
  blocks("t", "text_model.encoder.layers.", t.layers, Wt, t.mlp_width);
  b.copy("t.ln_final.weight", "text_model.final_layer_norm.weight", {Wt});
  b.copy("t.ln_final.bias", "text_model.final_layer_norm.bias", {Wt});
  b.copy("t.proj.weight", "text_projection.weight", {D, Wt});
  b.finish();
  return plan;
}

// Writes the plan as a .fpw file. Matrices go in the requested storage type; vectors (LayerNorm
// gains, biases, the class embedding) stay f32, as they are tiny and sensitive to rounding.
inline void write_clip_weights(const ConversionPlan& plan, const ConvertOptions& opt, const std::string& path) {
  DType storage = opt.dtype.value_or(plan.source_dtype == DType::F16 || plan.source_dtype == DType::BF16 ? plan.source_dtype : DType::F32);
  WeightWriter w;
  plan.config.store(w);
  w.set_meta("general.converter", "focuspatch-convert 0.1.0");
  w.set_meta("general.storage_dtype", std::string(dtype_name(storage)));
  if (!opt.source_name.empty()) w.set_meta("general.source", opt.source_name);
  if (!opt.source_sha256.empty()) w.set_meta("general.source_sha256", opt.source_sha256);
  if (!opt.source_format.empty()) w.set_meta("general.source_format", opt.source_format);
  if (!opt.vocab.empty()) {
    require(static_cast<int>(opt.vocab.size()) == plan.config.text.vocab_size, path, ": the tokenizer has ", opt.vocab.size(),
            " tokens but the checkpoint's token embedding has ", plan.config.text.vocab_size, " rows; wrong vocabulary file?");
    w.set_meta("tokenizer.model", "clip-bpe");
    w.set_meta("tokenizer.vocab", fpw::MetaValue::of(opt.vocab));
    std::vector<std::string> merge_lines;
    merge_lines.reserve(opt.merges.size());
    for (const auto& [a, bb] : opt.merges) merge_lines.push_back(a + " " + bb);
    w.set_meta("tokenizer.merges", fpw::MetaValue::of(std::move(merge_lines)));
  }
  for (const auto& t : plan.tensors) w.add_tensor(t.name, t.shape.size() >= 2 ? storage : DType::F32, t.shape, t.produce);
  w.write(path);
}

}  // namespace focuspatch
