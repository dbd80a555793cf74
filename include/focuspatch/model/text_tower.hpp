#pragma once
// CLIP's text encoder: token + position embeddings, a causal transformer, ln_final at the pooled
// token, and the projection into the joint space.
//
// Pooling follows OpenAI: the embedding is read at the end-of-text token, found as the position of
// the largest id (EOT has the highest id in CLIP's vocabulary). Because the mask is causal, nothing
// after that token can change the result, so each batch runs only as long as its longest sequence
// instead of the full context.
#include <algorithm>
#include <span>
#include <vector>

#include "focuspatch/model/transformer.hpp"

namespace focuspatch {

template <class Backend>
struct TextWorkspace {
  typename Backend::Buffer tokens, pooled, projected;
  typename Backend::OperandBuffer normed;
  TransformerScratch<Backend> scratch;
  std::size_t rows = 0, pooled_rows = 0;
};

template <class Backend>
class TextTower {
 public:
  TextTower(const Backend& be, const WeightFile& f, const ClipConfig& c)
      : config_(c.text), embed_dim_(c.embed_dim), eps_(c.layer_norm_eps), transformer_(be, f, "t", c.text) {
    const int w = config_.width;
    token_embed_ = be.upload(f.tensor("t.token_embed", {config_.vocab_size, w}));
    pos_embed_ = be.upload(f.tensor("t.pos_embed", {config_.context_length, w}));
    ln_final_ = LayerNormWeights<Backend>::load(be, f, "t.ln_final", w);
    proj_ = be.upload_matrix(f.tensor("t.proj.weight", {embed_dim_, w}));
  }

  const TextConfig& config() const { return config_; }

  // Token id sequences (each with its start and end tokens, unpadded) -> [N, D].
  FloatTensor encode_ids(const Backend& be, std::span<const std::vector<std::int32_t>> sequences, TextWorkspace<Backend>& ws) const {
    require(!sequences.empty(), "encode text: no sequences given");
    std::int64_t seq = 0;
    for (const auto& s : sequences) {
      require(!s.empty(), "encode text: empty token sequence");
      require(static_cast<std::int64_t>(s.size()) <= config_.context_length, "encode text: ", s.size(),
              " tokens exceed the model's context of ", config_.context_length);
      for (auto id : s)
        require(id >= 0 && id < config_.vocab_size, "encode text: token id ", id, " is outside the vocabulary of ", config_.vocab_size);
      seq = std::max<std::int64_t>(seq, static_cast<std::int64_t>(s.size()));
    }
    const auto n = static_cast<std::int64_t>(sequences.size());
    std::vector<std::int32_t> padded(static_cast<std::size_t>(n * seq), 0);
    std::vector<std::int64_t> pool_rows;
    for (std::int64_t i = 0; i < n; ++i) {
      const auto& s = sequences[static_cast<std::size_t>(i)];
      std::copy(s.begin(), s.end(), padded.begin() + i * seq);
      const auto eot = std::max_element(s.begin(), s.end()) - s.begin();
      pool_rows.push_back(i * seq + eot);
    }
    reserve(be, ws, n, seq);
    be.embed_tokens(padded, seq, token_embed_, pos_embed_, ws.tokens.data());
    return finish(be, ws, n, seq, pool_rows);
  }

  // Caller-supplied token embeddings [N, L, W] (learned prompt vectors in place of some words;
  // positions are added here) with the end-of-text position of each row -> [N, D].
  FloatTensor encode_embeddings(const Backend& be, const FloatTensor& embeddings, std::span<const std::int64_t> eot_positions,
                                TextWorkspace<Backend>& ws) const {
    require(embeddings.shape().size() == 3 && embeddings.dim(2) == config_.width, "encode text: token embeddings must be [N, L, ",
            config_.width, "], got ", shape_string(embeddings.shape()));
    const std::int64_t n = embeddings.dim(0), seq = embeddings.dim(1);
    require(n > 0 && seq > 0 && seq <= config_.context_length, "encode text: ", seq, " positions exceed the context of ",
            config_.context_length);
    require(static_cast<std::int64_t>(eot_positions.size()) == n, "encode text: ", eot_positions.size(), " end positions for ", n,
            " sequences");
    std::vector<std::int64_t> pool_rows;
    for (std::int64_t i = 0; i < n; ++i) {
      const auto eot = eot_positions[static_cast<std::size_t>(i)];
      require(eot >= 0 && eot < seq, "encode text: end position ", eot, " outside the sequence of ", seq);
      pool_rows.push_back(i * seq + eot);
    }
    reserve(be, ws, n, seq);
    be.write(ws.tokens.data(), embeddings.data(), static_cast<std::size_t>(embeddings.numel()));
    be.add_positions(ws.tokens.data(), n * seq, seq, pos_embed_);
    return finish(be, ws, n, seq, pool_rows);
  }

  // The token embedding table, for callers that build prompt embeddings around learned vectors.
  const typename Backend::Weight& token_embedding() const { return token_embed_; }

 private:
  FloatTensor finish(const Backend& be, TextWorkspace<Backend>& ws, std::int64_t n, std::int64_t seq,
                     const std::vector<std::int64_t>& pool_rows) const {
    transformer_.forward(be, ws.tokens.data(), n, seq, /*causal=*/true, eps_, ws.scratch);
    be.gather_rows(ws.tokens.data(), config_.width, pool_rows, ws.pooled.data());
    be.layer_norm(ws.pooled.data(), n, ln_final_.gamma, ln_final_.beta, eps_, ws.normed.data());
    be.linear(ws.normed.data(), n, proj_, nullptr, ws.projected.data());
    FloatTensor out({n, embed_dim_});
    be.read(ws.projected.data(), out.data(), static_cast<std::size_t>(out.numel()));
    return out;
  }

  void reserve(const Backend& be, TextWorkspace<Backend>& ws, std::int64_t n, std::int64_t seq) const {
    const auto rows = static_cast<std::size_t>(n * seq);
    const auto w = static_cast<std::size_t>(config_.width);
    if (rows > ws.rows) {
      ws.tokens = be.allocate(rows * w);
      ws.rows = rows;
    }
    if (static_cast<std::size_t>(n) > ws.pooled_rows) {
      ws.pooled = be.allocate(static_cast<std::size_t>(n) * w);
      ws.normed = be.allocate_operands(static_cast<std::size_t>(n) * w);
      ws.projected = be.allocate(static_cast<std::size_t>(n) * static_cast<std::size_t>(embed_dim_));
      ws.pooled_rows = static_cast<std::size_t>(n);
    }
  }

  TextConfig config_;
  int embed_dim_;
  float eps_;
  Transformer<Backend> transformer_;
  typename Backend::Weight token_embed_, pos_embed_, proj_;
  LayerNormWeights<Backend> ln_final_;
};

}  // namespace focuspatch
