#pragma once
// CLIP's image encoder: patch embedding, class token, position embedding (resized for other input
// resolutions), ln_pre, the transformer, ln_post and the projection into the joint space.
#include <map>
#include <mutex>
#include <span>
#include <vector>

#include "focuspatch/model/position_embedding.hpp"
#include "focuspatch/model/transformer.hpp"

namespace focuspatch {

// What a caller wants back besides the image embeddings.
struct VisionRequest {
  bool patch_tokens = true;           // every token after ln_post and projection, CLS first
  std::vector<int> layers;            // 0-based blocks whose raw output (residual stream) to return
  std::vector<int> projected_layers;  // 0-based blocks whose output to return after ln_post and projection
  // Run CLIP Surgery's value-value path (model/transformer.hpp) through this many last blocks and
  // return its tokens in the joint space; 0 = off, at no cost.
  int value_value_blocks = 0;
};

struct VisionOutput {
  FloatTensor image_embeddings;                 // [B, D]
  FloatTensor patch_tokens;                     // [B, T, D] when requested
  std::map<int, FloatTensor> layer_tokens;      // block index -> [B, T, W]
  std::map<int, FloatTensor> projected_layers;  // block index -> [B, T, D], CLS first
  // [B, T, D] ln_post(x_vv) @ proj when value_value_blocks > 0. Token 0 is the main path's CLS,
  // so it equals patch_tokens' first token: CLIP Surgery and PromptAD put the original CLS there
  // too (the value-value path is for the patches; the image embedding stays CLIP's own).
  FloatTensor value_value_tokens;
};

template <class Backend>
struct VisionWorkspace {
  typename Backend::Buffer patches, patch_embeds, tokens, projected;
  typename Backend::OperandBuffer normed;  // patches, then ln_post's output: inputs of matrix products
  TransformerScratch<Backend> scratch;
  std::size_t rows = 0;
  std::map<int, typename Backend::Weight> resized_positions;  // grid -> position embedding
};

template <class Backend>
class VisionTower {
 public:
  VisionTower(const Backend& be, const WeightFile& f, const ClipConfig& c)
      : config_(c.vision), embed_dim_(c.embed_dim), eps_(c.layer_norm_eps), transformer_(be, f, "v", c.vision) {
    const int w = config_.width, p = config_.patch_size;
    patch_w_ = be.upload_matrix(f.tensor("v.patch_embed.weight", {w, 3, p, p}));
    class_embed_ = be.upload(f.tensor("v.class_embed", {w}));
    const auto& pos_view = f.tensor("v.pos_embed", {config_.tokens(), w});
    pos_embed_host_ = FloatTensor::from_view(pos_view);
    pos_embed_ = be.upload(pos_view);
    ln_pre_ = LayerNormWeights<Backend>::load(be, f, "v.ln_pre", w);
    ln_post_ = LayerNormWeights<Backend>::load(be, f, "v.ln_post", w);
    proj_ = be.upload_matrix(f.tensor("v.proj.weight", {embed_dim_, w}));
  }

  const VisionConfig& config() const { return config_; }

  // images: [batch, 3, size, size] preprocessed pixels in host memory. size defaults to the
  // model's resolution; any multiple of the patch size works (position embedding resized).
  VisionOutput encode(const Backend& be, std::span<const float> images, std::int64_t batch, int size,
                      const VisionRequest& request, VisionWorkspace<Backend>& ws) const {
    const int p = config_.patch_size;
    require(batch > 0, "encode images: empty batch");
    require(size >= p && size % p == 0, "encode images: input size ", size, " is not a positive multiple of the patch size ", p);
    stage(be, images, batch, size, ws);
    return encode_staged(be, batch, size, request, ws);
  }

  // Copies preprocessed pixels into ws.patches (backend memory), which encode_staged reads.
  void stage(const Backend& be, std::span<const float> images, std::int64_t batch, int size, VisionWorkspace<Backend>& ws) const {
    require(static_cast<std::int64_t>(images.size()) == batch * 3 * size * size, "encode images: got ", images.size(),
            " values, expected ", batch, " x 3 x ", size, " x ", size);
    reserve(be, ws, static_cast<std::size_t>(batch * tokens_for(size)), images.size());
    be.write(ws.patches.data(), images.data(), images.size());
  }

  // The forward from pixels already staged in ws.patches: for callers that fill backend memory
  // themselves, and for benchmarks that time the forward apart from the host-to-device copy.
  VisionOutput encode_staged(const Backend& be, std::int64_t batch, int size, const VisionRequest& request,
                             VisionWorkspace<Backend>& ws) const {
    const int p = config_.patch_size, w = config_.width;
    require(batch > 0 && size >= p && size % p == 0, "encode images: batch ", batch, " of size ", size, " (patch ", p, ")");
    require(ws.patches.size() >= static_cast<std::size_t>(batch * 3 * size * size), "encode images: no pixels staged for a batch of ",
            batch, " at ", size, " px; call stage() first");
    for (int layer : request.layers)
      require(layer >= 0 && layer < config_.layers, "encode images: layer ", layer, " requested but the model has ",
              config_.layers, " blocks (0-based)");
    for (int layer : request.projected_layers)
      require(layer >= 0 && layer < config_.layers, "encode images: projected layer ", layer, " requested but the model has ",
              config_.layers, " blocks (0-based)");
    require(request.value_value_blocks >= 0 && request.value_value_blocks <= config_.layers,
            "encode images: value-value path through ", request.value_value_blocks, " blocks requested but the model has ",
            config_.layers);
    const int grid = size / p;
    const std::int64_t seq = tokens_for(size);
    const std::int64_t rows = batch * seq;
    reserve(be, ws, static_cast<std::size_t>(rows), static_cast<std::size_t>(batch * 3 * size * size));

    be.patchify(ws.patches.data(), batch, size, p, ws.normed.data());
    be.linear(ws.normed.data(), batch * (seq - 1), patch_w_, nullptr, ws.patch_embeds.data());
    be.assemble_vision_tokens(ws.patch_embeds.data(), class_embed_, positions_for(be, ws, grid), batch, seq, ws.tokens.data());
    be.layer_norm(ws.tokens.data(), rows, ln_pre_.gamma, ln_pre_.beta, eps_, ws.tokens.data());

    VisionOutput out;
    // ws.normed and ws.projected are free while the transformer runs (it has its own scratch).
    auto observe = [&](int index, const float* residual) {
      for (int layer : request.layers) {
        if (layer != index) continue;
        FloatTensor t({batch, seq, w});
        be.read(residual, t.data(), static_cast<std::size_t>(t.numel()));
        out.layer_tokens[layer] = std::move(t);
      }
      for (int layer : request.projected_layers)
        if (layer == index) out.projected_layers[layer] = project_every_token(be, residual, batch, seq, ws);
    };
    using Observer = typename Transformer<Backend>::LayerObserver;
    const bool observed = !request.layers.empty() || !request.projected_layers.empty();
    transformer_.forward(be, ws.tokens.data(), batch, seq, /*causal=*/false, eps_, ws.scratch,
                         observed ? Observer{observe} : Observer{}, request.value_value_blocks);

    // The image embedding is the projected CLS token; with patch tokens wanted, every token is
    // normalized and projected in the same GEMM.
    const std::int64_t project_rows = request.patch_tokens ? rows : batch;
    const float* source = ws.tokens.data();
    if (!request.patch_tokens) {
      std::vector<std::int64_t> cls_rows(static_cast<std::size_t>(batch));
      for (std::int64_t b = 0; b < batch; ++b) cls_rows[static_cast<std::size_t>(b)] = b * seq;
      be.gather_rows(ws.tokens.data(), w, cls_rows, ws.patch_embeds.data());
      source = ws.patch_embeds.data();
    }
    be.layer_norm(source, project_rows, ln_post_.gamma, ln_post_.beta, eps_, ws.normed.data());
    be.linear(ws.normed.data(), project_rows, proj_, nullptr, ws.projected.data());

    out.image_embeddings = FloatTensor({batch, embed_dim_});
    if (request.patch_tokens) {
      out.patch_tokens = FloatTensor({batch, seq, embed_dim_});
      be.read(ws.projected.data(), out.patch_tokens.data(), static_cast<std::size_t>(out.patch_tokens.numel()));
      for (std::int64_t b = 0; b < batch; ++b)
        std::copy_n(out.patch_tokens.data() + b * seq * embed_dim_, embed_dim_, out.image_embeddings.data() + b * embed_dim_);
    } else {
      be.read(ws.projected.data(), out.image_embeddings.data(), static_cast<std::size_t>(out.image_embeddings.numel()));
    }

    if (request.value_value_blocks > 0) {
      float* value_value = ws.scratch.value_value.data();
      for (std::int64_t b = 0; b < batch; ++b)  // the main path's CLS, as CLIP Surgery's `x[0] = x_ori[0]`
        be.copy(ws.tokens.data() + b * seq * w, value_value + b * seq * w, static_cast<std::size_t>(w));
      out.value_value_tokens = project_every_token(be, value_value, batch, seq, ws);
    }
    return out;
  }

 private:
  // ln_post and the projection of every token of a residual stream, through ws.normed/ws.projected.
  FloatTensor project_every_token(const Backend& be, const float* stream, std::int64_t batch, std::int64_t seq,
                                  VisionWorkspace<Backend>& ws) const {
    const std::int64_t rows = batch * seq;
    be.layer_norm(stream, rows, ln_post_.gamma, ln_post_.beta, eps_, ws.normed.data());
    be.linear(ws.normed.data(), rows, proj_, nullptr, ws.projected.data());
    FloatTensor t({batch, seq, embed_dim_});
    be.read(ws.projected.data(), t.data(), static_cast<std::size_t>(t.numel()));
    return t;
  }

  std::int64_t tokens_for(int size) const {
    const std::int64_t grid = size / config_.patch_size;
    return grid * grid + 1;
  }

  void reserve(const Backend& be, VisionWorkspace<Backend>& ws, std::size_t rows, std::size_t pixels) const {
    const auto w = static_cast<std::size_t>(config_.width);
    const std::size_t patch_len = 3 * static_cast<std::size_t>(config_.patch_size) * static_cast<std::size_t>(config_.patch_size);
    if (ws.patches.size() < pixels) ws.patches = be.allocate(pixels);
    if (rows > ws.rows) {
      ws.patch_embeds = be.allocate(rows * w);
      ws.tokens = be.allocate(rows * w);
      ws.normed = be.allocate_operands(rows * std::max(w, patch_len));
      ws.projected = be.allocate(rows * static_cast<std::size_t>(embed_dim_));
      ws.rows = rows;
    }
  }

  const typename Backend::Weight& positions_for(const Backend& be, VisionWorkspace<Backend>& ws, int grid) const {
    if (grid == config_.grid()) return pos_embed_;
    auto it = ws.resized_positions.find(grid);
    if (it == ws.resized_positions.end())
      it = ws.resized_positions.emplace(grid, be.upload(interpolate_position_embedding(pos_embed_host_, grid))).first;
    return it->second;
  }

  VisionConfig config_;
  int embed_dim_;
  float eps_;
  Transformer<Backend> transformer_;
  typename Backend::Weight patch_w_, class_embed_, pos_embed_, proj_;
  FloatTensor pos_embed_host_;
  LayerNormWeights<Backend> ln_pre_, ln_post_;
};

}  // namespace focuspatch
