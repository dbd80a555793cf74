#pragma once
// A CLIP model loaded from a .fpw file: configuration, tokenizer and both towers on one backend.
//
// The loaded model is read-only. Calls that take a Workspace may run from several threads at once,
// each thread with its own Workspace; the overloads without one share an internal workspace and
// must not be called concurrently.
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "focuspatch/backend/cpu.hpp"
#include "focuspatch/core/finite.hpp"
#include "focuspatch/model/text_tower.hpp"
#include "focuspatch/model/vision_tower.hpp"
#include "focuspatch/text/tokenizer.hpp"

namespace focuspatch {

// What loading checks beyond the header, which is always checked.
struct ModelLoadOptions {
  // Recompute the weights' CRC-32 and look for NaN/inf in every tensor: one pass over the file
  // (ViT-B/16 loads in ~0.3 s with it, ~0.2 s of that the checks). Without it a bit flipped on disk,
  // or a NaN the checkpoint already held, comes out as wrong scores instead of an error. Turn off
  // only for a file that was verified once before (focuspatch-convert verifies what it writes).
  bool verify_weights = true;
};

// Texts longer than the text tower's context: Truncate keeps the first tokens and ends them with
// the end token, as clip.tokenize(truncate=True) does; Refuse throws an error that quotes the text.
enum class TextOverflow { Truncate, Refuse };

template <class Backend = CpuBackend>
class ClipModel {
 public:
  struct Workspace {
    VisionWorkspace<Backend> vision;
    TextWorkspace<Backend> text;
  };

  explicit ClipModel(const std::string& path, Backend backend = {}, const ModelLoadOptions& options = {})
      : weights_(open_weights(path, options)), backend_(std::move(backend)), config_(ClipConfig::load(weights_)),
        vision_(backend_, weights_, config_), text_(backend_, weights_, config_) {
    if (weights_.has_meta("tokenizer.vocab")) {
      const auto& vocab = weights_.meta_strings("tokenizer.vocab");
      const auto& merge_lines = weights_.meta_strings("tokenizer.merges");
      std::vector<std::pair<std::string, std::string>> merges;
      merges.reserve(merge_lines.size());
      for (const auto& line : merge_lines) {
        const auto space = line.find(' ');
        require(space != std::string::npos && space > 0 && space + 1 < line.size(), path, ": tokenizer merge '", line,
                "' is not two tokens");
        merges.emplace_back(line.substr(0, space), line.substr(space + 1));
      }
      tokenizer_ = std::make_unique<ClipTokenizer>(ClipTokenizer::from_vocab_and_merges(vocab, std::move(merges)));
      require(static_cast<std::int64_t>(tokenizer_->vocab_size()) == config_.text.vocab_size, path, ": tokenizer has ", tokenizer_->vocab_size(),
              " tokens but the text tower's vocabulary is ", config_.text.vocab_size);
    }
  }

  const ClipConfig& config() const { return config_; }
  const WeightFile& weights() const { return weights_; }
  const Backend& backend() const { return backend_; }
  const VisionTower<Backend>& vision() const { return vision_; }
  const TextTower<Backend>& text() const { return text_; }
  bool has_tokenizer() const { return tokenizer_ != nullptr; }
  const ClipTokenizer& tokenizer() const {
    if (!tokenizer_) fail(weights_.path(), ": holds no tokenizer vocabulary; convert it again with --vocab");
    return *tokenizer_;
  }

  // images: [batch, 3, size, size] preprocessed (see io/preprocess.hpp); size defaults to the
  // model's resolution.
  VisionOutput encode_images(std::span<const float> images, std::int64_t batch, const VisionRequest& request, Workspace& ws,
                             int size = 0) const {
    if (const auto bad = find_non_finite(images))
      fail("encode_images: input pixel ", bad->index, " of ", images.size(), " is ", bad->what,
           "; preprocessed images must be finite");
    VisionOutput out = vision_.encode(backend_, images, batch, size > 0 ? size : config_.vision.image_size, request, ws.vision);
    require_finite("encode_images", "image embeddings", out.image_embeddings);
    require_finite("encode_images", "patch tokens", out.patch_tokens);
    require_finite("encode_images", "value-value tokens", out.value_value_tokens);
    for (const auto& [layer, t] : out.layer_tokens) require_finite("encode_images", "tokens of a requested block", t);
    for (const auto& [layer, t] : out.projected_layers) require_finite("encode_images", "projected tokens of a requested block", t);
    return out;
  }
  VisionOutput encode_images(std::span<const float> images, std::int64_t batch, const VisionRequest& request = {}, int size = 0) {
    return encode_images(images, batch, request, own_, size);
  }

  // Tokenizes with the file's vocabulary (start/end tokens; see TextOverflow for long texts) and encodes.
  FloatTensor encode_texts(std::span<const std::string> texts, Workspace& ws, TextOverflow overflow = TextOverflow::Truncate) const {
    return require_finite("encode_texts", "text embeddings", text_.encode_ids(backend_, tokenize(texts, overflow), ws.text));
  }
  FloatTensor encode_texts(std::span<const std::string> texts, TextOverflow overflow = TextOverflow::Truncate) {
    return encode_texts(texts, own_, overflow);
  }

  std::vector<std::vector<std::int32_t>> tokenize(std::span<const std::string> texts,
                                                  TextOverflow overflow = TextOverflow::Truncate) const {
    std::vector<std::vector<std::int32_t>> ids;
    ids.reserve(texts.size());
    for (const auto& t : texts)
      ids.push_back(tokenizer().tokenize(t, config_.text.context_length, /*truncate=*/overflow == TextOverflow::Truncate));
    return ids;
  }

  FloatTensor encode_token_ids(std::span<const std::vector<std::int32_t>> ids, Workspace& ws) const {
    return require_finite("encode_token_ids", "text embeddings", text_.encode_ids(backend_, ids, ws.text));
  }
  FloatTensor encode_token_ids(std::span<const std::vector<std::int32_t>> ids) { return encode_token_ids(ids, own_); }

  FloatTensor encode_token_embeddings(const FloatTensor& embeddings, std::span<const std::int64_t> eot, Workspace& ws) const {
    if (const auto bad = find_non_finite(embeddings.values()))
      fail("encode_token_embeddings: value ", bad->index, " of ", embeddings.numel(), " is ", bad->what,
           "; token embeddings must be finite");
    return require_finite("encode_token_embeddings", "text embeddings", text_.encode_embeddings(backend_, embeddings, eot, ws.text));
  }
  FloatTensor encode_token_embeddings(const FloatTensor& embeddings, std::span<const std::int64_t> eot) {
    return encode_token_embeddings(embeddings, eot, own_);
  }

 private:
  // Finite weights and inputs can still overflow inside the model: an fp16 activation above 65504 on
  // a GPU, or weights scaled far beyond any trained model's. A NaN or infinity handed back would
  // pass unnoticed into every score computed from it.
  template <class Tensor>
  static Tensor require_finite(const char* call, const char* what, Tensor&& t) {
    if (const auto bad = find_non_finite(t.values()))
      fail(call, ": the model's ", what, " hold ", bad->what, " at element ", bad->index, " of ", t.numel(), "; something overflowed ",
           "inside the model (on a GPU in fp16, activations above 65504 do: use bf16 precision) or a weight is not finite (a load ",
           "with verify_weights finds those)");
    return std::forward<Tensor>(t);
  }

  static WeightFile open_weights(const std::string& path, const ModelLoadOptions& options) {
    WeightFile file(path);
    if (options.verify_weights) {
      file.verify_data_checksum();
      file.verify_finite();
    }
    return file;
  }

  WeightFile weights_;  // first: every weight below points into its mapping
  Backend backend_;
  ClipConfig config_;
  VisionTower<Backend> vision_;
  TextTower<Backend> text_;
  std::unique_ptr<ClipTokenizer> tokenizer_;
  Workspace own_;
};

}  // namespace focuspatch
