#pragma once
// Learned prompts: context vectors that prompt learning (CoOp, PromptAD, AnomalyCLIP) trains in
// place of word embeddings. Each state ("normal", "anomaly", ...) holds [P, n, W] vectors: P
// prompts of n context tokens in the text tower's width W. A state's prompt is laid out as CoOp
// does it,
//     SOT, ctx_1 .. ctx_n, the token embeddings of a suffix text ("{object}." -> "metal nut."), EOT
// and the text tower runs on those embeddings (it adds the positions). Each prompt's embedding is
// L2-normalized, the state's prompts are averaged and the mean normalized again, exactly as the
// keyword bank averages its sentences, so a state becomes one row of KeywordEmbeddings ("learned
// normal", "learned anomaly") that the keyword focus uses like any keyword.
//
// This header reads the vectors from a PyTorch or safetensors checkpoint, stores them in a .fpw
// file and loads them back. Tensor names of the known trainers (tried when the caller names none;
// a name matches the tensor itself or any tensor ending in "." + name, so "model.", "module." or
// "state_dict." prefixes do not matter):
//   PromptAD (github.com/FuNz-0/PromptAD, PromptAD/model.py, class PromptLearner):
//       prompt_learner.normal_ctx [n_pro, n_ctx, W], prompt_learner.abnormal_ctx [n_pro_ab, n_ctx_ab, W].
//       Its learned abnormal prompt is SOT, a normal context, an abnormal context, class name, ".",
//       EOT: the anomaly state is stored with after = "normal" (see LearnedState::after).
//       PromptAD's own save_check_point() keeps only the final text features, not these vectors:
//       save the model's (or its prompt_learner's) state_dict to import them. PromptAD averages its
//       prompts' raw features and adds hand-written anomaly prompts; here every prompt counts with
//       unit length and only the learned prompts are used, so the states come out close to, not
//       equal to, PromptAD's text features.
//   AnomalyCLIP (AnomalyCLIP_PromptLearner): prompt_learner.ctx_pos / prompt_learner.ctx_neg
//       [1, 1, n_ctx, W]; its prompts read "X.. object." and "X.. damaged object.", so the anomaly
//       suffix defaults to "damaged {object}.". Its deeper-layer prompts (compound_prompts_text)
//       have no equivalent here; the import notes it when they are present.
//   generic: ctx_normal with ctx_abnormal or ctx_anomaly (any prefix, e.g. prompt_learner.ctx_normal).
// CoOp itself learns one context shared by all classes (prompt_learner.ctx, [n_ctx, W]): name that
// tensor for both states and give the states different suffixes ("{object}." and "damaged {object}.").
// Leading dimensions beyond [n_ctx, W] are flattened into prompts ([1, 1, n, W] -> [1, n, W]).
//
// In a .fpw file:
//   metadata prompts.learned.states         string array, state names in order
//            prompts.learned.source         string, where the vectors came from
//            prompts.learned.<state>.kind   int, a KeywordKind (0 normal, 1 anomaly, 2 background)
//            prompts.learned.<state>.suffix string, the text after the context ("{object}" is replaced)
//            prompts.learned.<state>.after  string, the state whose context precedes this one's, or ""
//            prompts.learned.<state>.origin string, the checkpoint tensor the vectors came from
//   tensor   prompts.learned.<state>.ctx    [P, n_ctx, W] f32
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "focuspatch/anomaly/prompt_bank.hpp"
#include "focuspatch/core/error.hpp"
#include "focuspatch/core/sha256.hpp"
#include "focuspatch/core/tensor.hpp"
#include "focuspatch/io/checkpoint.hpp"
#include "focuspatch/io/weight_file.hpp"
#include "focuspatch/io/weight_writer.hpp"
#include "focuspatch/model/clip_model.hpp"

namespace focuspatch {

inline constexpr std::string_view kDefaultLearnedSuffix = "{object}.";

struct LearnedState {
  std::string name;  // "normal", "anomaly", or another lower-case word
  KeywordKind kind = KeywordKind::Normal;
  FloatTensor context;                               // [P, n_ctx, W]
  std::string suffix = std::string(kDefaultLearnedSuffix);  // text after the context; "{object}" is replaced
  // PromptAD: the name of another state whose context vectors precede this state's in every prompt.
  // Prompt r (r < P_after * P) joins that state's context r mod P_after with this state's context
  // r mod P, the pairing PromptAD's expand/reshape produces (every pair when the counts are coprime,
  // as its defaults 3 and 4 are).
  std::string after;
  std::string origin;  // the checkpoint tensor, for reports

  std::int64_t prompts() const { return context.dim(0); }
  std::int64_t tokens() const { return context.dim(1); }
  std::int64_t width() const { return context.dim(2); }
};

struct LearnedPrompts {
  std::string source;  // the checkpoint (or file) they came from
  std::vector<LearnedState> states;

  const LearnedState* find(std::string_view name) const {
    for (const auto& s : states)
      if (s.name == name) return &s;
    return nullptr;
  }
  std::int64_t width() const { return states.empty() ? 0 : states.front().width(); }

  // Checks shapes, names, kinds and references; `what` names the source in messages.
  void validate(std::string_view what) const {
    require(!states.empty(), what, ": no learned prompt states");
    bool normal = false, anomaly = false;
    for (std::size_t i = 0; i < states.size(); ++i) {
      const LearnedState& s = states[i];
      require(!s.name.empty() && std::all_of(s.name.begin(), s.name.end(),
                                             [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'; }),
              what, ": learned state name '", s.name, "' must be lower-case letters, digits or '_'");
      for (std::size_t j = 0; j < i; ++j) require(states[j].name != s.name, what, ": learned state '", s.name, "' appears twice");
      const auto& shape = s.context.shape();
      require(shape.size() == 3 && shape[0] > 0 && shape[1] > 0 && shape[2] > 0, what, ": the context of learned state '", s.name,
              "' must be [prompts, tokens, width], got ", shape_string(shape));
      require(s.width() == width(), what, ": learned state '", s.name, "' has width ", s.width(), " but '", states.front().name,
              "' has ", width());
      for (float v : s.context.values())
        require(std::isfinite(v), what, ": the context of learned state '", s.name, "' holds a non-finite value");
      const std::string_view allowed[] = {prompt_detail::kObject};
      const auto bad = prompt_detail::unknown_placeholder(s.suffix, allowed);
      require(bad.empty(), what, ": suffix '", s.suffix, "' of learned state '", s.name, "' has placeholder '", bad,
              "'; only {object} is replaced");
      require(prompt_detail::count_of(s.suffix, prompt_detail::kObject) <= 1, what, ": suffix '", s.suffix,
              "' contains {object} more than once");
      if (!s.after.empty()) {
        const LearnedState* before = find(s.after);
        require(before && before != &s, what, ": learned state '", s.name, "' follows state '", s.after,
                "', which is not another state of these prompts");
        require(before->after.empty(), what, ": learned state '", s.name, "' follows '", s.after,
                "', which itself follows another state; only one level is supported");
      }
      normal = normal || s.kind == KeywordKind::Normal;
      anomaly = anomaly || s.kind == KeywordKind::Anomaly;
    }
    require(normal && anomaly, what, ": learned prompts need at least one normal and one anomaly state");
  }

  // Identifies the vectors and their layout, so embeddings computed from them can be matched.
  std::string fingerprint() const {
    Sha256 h;
    auto put = [&h](std::string_view s) { h.update(std::as_bytes(std::span(s.data(), s.size()))); };
    put("focuspatch-learned-prompts-1\n");
    for (const auto& s : states) {
      put(detail::concat(s.name, "\n", static_cast<int>(s.kind), "\n", s.suffix, "\n", s.after, "\n",
                         shape_string(s.context.shape()), "\n"));
      const auto values = s.context.values();
      h.update(std::as_bytes(values));
    }
    return h.hex_digest();
  }
};

// ---- reading from a training checkpoint --------------------------------------------------------

struct LearnedPromptImport {
  // Tensor names of the normal and anomaly context; both empty = try the known conventions.
  std::string normal_tensor, anomaly_tensor;
  // Default: the matched convention's, else "{object}.".
  std::optional<std::string> normal_suffix, anomaly_suffix;
  // Default: the matched convention's (PromptAD: true), else false.
  std::optional<bool> anomaly_after_normal;
  std::int64_t expected_width = 0;  // the text tower's width; 0 = do not check
};

struct ImportedLearnedPrompts {
  LearnedPrompts prompts;
  std::string convention;  // "PromptAD", "AnomalyCLIP", ..., or "tensors as named" when the caller named them
  std::vector<std::string> notes;
};

namespace learned_detail {

struct Convention {
  const char* label;
  const char* normal;
  const char* anomaly;
  bool anomaly_after_normal;
  const char* anomaly_suffix;
};

inline constexpr Convention kConventions[] = {
    {"PromptAD", "prompt_learner.normal_ctx", "prompt_learner.abnormal_ctx", true, "{object}."},
    {"AnomalyCLIP", "prompt_learner.ctx_pos", "prompt_learner.ctx_neg", false, "damaged {object}."},
    {"normal/abnormal context", "ctx_normal", "ctx_abnormal", false, "{object}."},
    {"normal/anomaly context", "ctx_normal", "ctx_anomaly", false, "{object}."},
};

// The tensors called `wanted`: the exact name, else every name ending in "." + wanted.
inline std::vector<std::string> matching(const TensorArchive& archive, std::string_view wanted) {
  if (archive.contains(wanted)) return {std::string(wanted)};
  const std::string dotted = detail::concat(".", wanted);
  std::vector<std::string> found;
  for (const auto& name : archive.names())
    if (name.size() > dotted.size() && std::string_view(name).ends_with(dotted)) found.push_back(name);
  return found;
}

// Tensors that could hold context vectors: floating point, rank 2 to 4, of the expected width.
inline std::string candidates(const TensorArchive& archive, std::int64_t width) {
  std::string list;
  std::size_t count = 0;
  for (const auto& t : archive.tensors()) {
    if (!t.is_floating() || t.shape.size() < 2 || t.shape.size() > 4 || (width > 0 && t.shape.back() != width)) continue;
    if (++count <= 12) list += detail::concat(list.empty() ? "" : ", ", t.name, " ", shape_string(t.shape));
  }
  if (count == 0)
    return detail::concat("the file holds no floating-point tensor of rank 2 to 4",
                          width > 0 ? detail::concat(" whose last dimension is the text width ", width) : std::string());
  if (count > 12) list += detail::concat(" and ", count - 12, " more");
  return detail::concat("tensors that could hold context vectors: ", list);
}

inline std::string resolve(const TensorArchive& archive, std::string_view wanted, std::string_view role, std::int64_t width) {
  const auto found = matching(archive, wanted);
  if (found.empty())
    fail(archive.path(), ": no tensor '", wanted, "' for the learned ", role, " context; ", candidates(archive, width));
  if (found.size() > 1) {
    std::string list;
    for (const auto& f : found) list += (list.empty() ? "" : ", ") + f;
    fail(archive.path(), ": '", wanted, "' matches several tensors (", list, "); name one of them in full");
  }
  return found.front();
}

inline FloatTensor context_tensor(const TensorArchive& archive, const std::string& name, std::int64_t width) {
  const StoredTensor& stored = archive.get(name);
  require(stored.is_floating(), archive.path(), ": tensor '", name, "' is ", dtype_name(stored.dtype),
          ", not floating-point context vectors");
  const auto& shape = stored.shape;
  require(shape.size() >= 2 && shape.size() <= 4, archive.path(), ": tensor '", name, "' has shape ", shape_string(shape),
          "; learned context is [n_ctx, width], [prompts, n_ctx, width] or [a, b, n_ctx, width]");
  require(width <= 0 || shape.back() == width, archive.path(), ": learned context '", name, "' has width ", shape.back(),
          " but the text tower's width is ", width, "; the prompts were trained for a different CLIP model");
  FloatTensor loaded = archive.load_float(name);
  std::int64_t prompts = 1;
  for (std::size_t d = 0; d + 2 < shape.size(); ++d) prompts *= shape[d];
  require(prompts > 0 && shape[shape.size() - 2] > 0 && shape.back() > 0, archive.path(), ": learned context '", name,
          "' is empty (shape ", shape_string(shape), ")");
  std::vector<float> values(loaded.values().begin(), loaded.values().end());
  return FloatTensor({prompts, shape[shape.size() - 2], shape.back()}, std::move(values));
}

}  // namespace learned_detail

// Reads the normal and anomaly context vectors of a training checkpoint.
inline ImportedLearnedPrompts import_learned_prompts(const TensorArchive& archive, const LearnedPromptImport& request) {
  using namespace learned_detail;
  ImportedLearnedPrompts out;
  std::string normal_name, anomaly_name;
  const Convention* convention = nullptr;
  require(request.normal_tensor.empty() == request.anomaly_tensor.empty(), archive.path(),
          ": name both the normal and the anomaly context tensor, or neither to use the known names");
  if (!request.normal_tensor.empty()) {
    normal_name = resolve(archive, request.normal_tensor, "normal", request.expected_width);
    anomaly_name = resolve(archive, request.anomaly_tensor, "anomaly", request.expected_width);
    out.convention = "tensors as named";
  } else {
    std::vector<const Convention*> found;
    for (const auto& c : kConventions)
      if (matching(archive, c.normal).size() == 1 && matching(archive, c.anomaly).size() == 1) found.push_back(&c);
    if (found.empty()) {
      std::string known;
      for (const auto& c : kConventions)
        known += detail::concat(known.empty() ? "" : "; ", c.label, ": ", c.normal, " + ", c.anomaly);
      fail(archive.path(), ": none of the known learned-prompt tensor pairs is present (", known,
           "); name the normal and anomaly context tensors; ", candidates(archive, request.expected_width));
    }
    if (found.size() > 1) {
      std::string labels;
      for (const auto* c : found) labels += detail::concat(labels.empty() ? "" : ", ", c->label);
      fail(archive.path(), ": the tensors of several learned-prompt conventions are present (", labels,
           "); name the ones to use");
    }
    convention = found.front();
    normal_name = matching(archive, convention->normal).front();
    anomaly_name = matching(archive, convention->anomaly).front();
    out.convention = convention->label;
  }

  LearnedState normal, anomaly;
  normal.name = "normal";
  normal.kind = KeywordKind::Normal;
  normal.context = context_tensor(archive, normal_name, request.expected_width);
  normal.suffix = request.normal_suffix.value_or(std::string(kDefaultLearnedSuffix));
  normal.origin = normal_name;
  anomaly.name = "anomaly";
  anomaly.kind = KeywordKind::Anomaly;
  anomaly.context = context_tensor(archive, anomaly_name, request.expected_width);
  anomaly.suffix = request.anomaly_suffix.value_or(convention ? convention->anomaly_suffix : std::string(kDefaultLearnedSuffix));
  anomaly.origin = anomaly_name;
  if (request.anomaly_after_normal.value_or(convention && convention->anomaly_after_normal)) anomaly.after = "normal";
  out.prompts.source = std::filesystem::path(archive.path()).filename().string();
  out.prompts.states.push_back(std::move(normal));
  out.prompts.states.push_back(std::move(anomaly));
  out.prompts.validate(archive.path());

  for (const auto& name : archive.names()) {
    if (name.find("compound_prompts") != std::string::npos) {
      out.notes.push_back(detail::concat("the checkpoint also holds deep prompts ('", name,
                                         "' and the like) that its trainer injects into deeper text layers; focuspatch uses the "
                                         "input context only, so its embeddings differ from the trainer's"));
      break;
    }
  }
  if (convention && std::string_view(convention->label) == "PromptAD")
    out.notes.push_back("PromptAD also averages hand-written anomaly prompts into its anomaly feature; only its learned "
                        "prompts are reproduced here");
  return out;
}

inline ImportedLearnedPrompts import_learned_prompts(const std::string& checkpoint, const LearnedPromptImport& request) {
  const TensorArchive archive = open_checkpoint(checkpoint);
  return import_learned_prompts(archive, request);
}

// ---- storage in a .fpw weight file ------------------------------------------------------------

namespace learned_detail {
inline constexpr std::string_view kPrefix = "prompts.learned.";
inline std::string entry(std::string_view field) { return detail::concat(kPrefix, field); }
inline std::string entry(std::string_view state, std::string_view field) { return detail::concat(kPrefix, state, ".", field); }
}  // namespace learned_detail

// Adds the learned prompts to a weight file being written.
inline void add_learned_prompts(WeightWriter& writer, const LearnedPrompts& prompts) {
  using learned_detail::entry;
  prompts.validate(detail::concat("learned prompts from ", prompts.source));
  std::vector<std::string> names;
  for (const auto& s : prompts.states) names.push_back(s.name);
  writer.set_meta(entry("states"), fpw::MetaValue::of(std::move(names)));
  writer.set_meta(entry("source"), prompts.source);
  for (const auto& s : prompts.states) {
    writer.set_meta(entry(s.name, "kind"), static_cast<std::int64_t>(s.kind));
    writer.set_meta(entry(s.name, "suffix"), s.suffix);
    writer.set_meta(entry(s.name, "after"), s.after);
    writer.set_meta(entry(s.name, "origin"), s.origin);
    writer.add_tensor(entry(s.name, "ctx"), DType::F32, s.context);
  }
}

inline bool has_learned_prompts(const WeightFile& file) { return file.has_meta(learned_detail::entry("states")); }

// Reads the learned prompts back; when the file is a CLIP model, their width must be its text width.
inline LearnedPrompts load_learned_prompts(const WeightFile& file) {
  using learned_detail::entry;
  require(has_learned_prompts(file), file.path(), ": holds no learned prompts (convert with --learned-prompts to add them)");
  LearnedPrompts prompts;
  prompts.source = file.meta_string(entry("source"));
  for (const auto& name : file.meta_strings(entry("states"))) {
    LearnedState s;
    s.name = name;
    const std::int64_t kind = file.meta_int(entry(name, "kind"));
    require(kind >= 0 && kind <= 2, file.path(), ": '", entry(name, "kind"), "' holds ", kind,
            ", not a keyword kind (0 normal, 1 anomaly, 2 background)");
    s.kind = static_cast<KeywordKind>(kind);
    s.suffix = file.meta_string(entry(name, "suffix"));
    s.after = file.meta_string(entry(name, "after"));
    s.origin = file.meta_string(entry(name, "origin"));
    const TensorView& view = file.tensor(entry(name, "ctx"));
    require(view.shape.size() == 3, file.path(), ": '", entry(name, "ctx"), "' has shape ", shape_string(view.shape),
            ", expected [prompts, tokens, width]");
    s.context = FloatTensor::from_view(view);
    prompts.states.push_back(std::move(s));
  }
  prompts.validate(file.path());
  if (file.has_meta("clip.text.width")) {
    const std::int64_t width = file.meta_int("clip.text.width");
    require(prompts.width() == width, file.path(), ": the learned prompts have width ", prompts.width(),
            " but the model's text tower has width ", width);
  }
  return prompts;
}

// ---- text embeddings ---------------------------------------------------------------------------

namespace learned_detail {
inline std::string expand_suffix(std::string_view suffix, std::string_view object_word) {
  const std::string object = prompt_detail::trim(object_word);
  require(!object.empty() || suffix.find(prompt_detail::kObject) == std::string_view::npos,
          "learned prompts: the object word for suffix '", suffix, "' is empty");
  return prompt_detail::replace_once(suffix, prompt_detail::kObject, object);
}
}  // namespace learned_detail

// One unit embedding per state, rows in state order, named "learned <state>". suffix_ids holds,
// per state, the token ids that follow the context (without start and end tokens); `object` is
// recorded as the embeddings' object word. The start and end ids are the tokenizer's, or CLIP's
// convention (vocabulary size - 2 and - 1) for a model stored without one.
template <class Backend>
KeywordEmbeddings learned_state_embeddings(ClipModel<Backend>& model, const LearnedPrompts& prompts,
                                           std::span<const std::vector<std::int32_t>> suffix_ids, std::string_view object,
                                           std::size_t batch_size = 64) {
  const std::string what = detail::concat("learned prompts from ", prompts.source);
  prompts.validate(what);
  require(batch_size > 0, what, ": batch size must be positive");
  require(suffix_ids.size() == prompts.states.size(), what, ": ", suffix_ids.size(), " suffixes for ", prompts.states.size(),
          " states");
  const TextConfig& text = model.config().text;
  const std::int64_t width = text.width;
  require(prompts.width() == width, what, ": the context vectors have width ", prompts.width(), " but the text tower of ",
          model.weights().path(), " has width ", width, "; the prompts were trained for a different CLIP model");
  const std::int32_t sot = model.has_tokenizer() ? model.tokenizer().sot_id() : text.vocab_size - 2;
  const std::int32_t eot = model.has_tokenizer() ? model.tokenizer().eot_id() : text.vocab_size - 1;
  const TensorView& table = model.weights().tensor("t.token_embed", {text.vocab_size, width});
  const auto row_bytes = static_cast<std::size_t>(width) * dtype_size(table.dtype);
  const auto put_token = [&](std::int32_t id, float* out) {
    require(id >= 0 && id < text.vocab_size, what, ": token id ", id, " is outside the vocabulary of ", text.vocab_size);
    decode_to_float(table.dtype, static_cast<const std::byte*>(table.data) + static_cast<std::size_t>(id) * row_bytes,
                    static_cast<std::size_t>(width), out);
  };

  KeywordEmbeddings result;
  result.object = prompt_detail::trim(object);
  result.bank_fingerprint = prompts.fingerprint();
  std::vector<std::vector<double>> sums;
  std::int64_t dim = 0;
  for (std::size_t si = 0; si < prompts.states.size(); ++si) {
    const LearnedState& state = prompts.states[si];
    const LearnedState* before = state.after.empty() ? nullptr : prompts.find(state.after);
    const std::int64_t lead = before ? before->prompts() : 1;
    const std::int64_t count = lead * state.prompts();
    const auto& suffix = suffix_ids[si];
    const std::int64_t length = 2 + (before ? before->tokens() : 0) + state.tokens() + static_cast<std::int64_t>(suffix.size());
    require(length <= text.context_length, what, ": a prompt of state '", state.name, "' needs ", length,
            " tokens but the text tower's context is ", text.context_length);
    const std::string label = detail::concat("learned ", state.name);
    std::vector<double> sum;
    for (std::int64_t begin = 0; begin < count; begin += static_cast<std::int64_t>(batch_size)) {
      const std::int64_t n = std::min<std::int64_t>(static_cast<std::int64_t>(batch_size), count - begin);
      FloatTensor tokens({n, length, width});
      for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t r = begin + i;
        float* at = tokens.data() + i * length * width;
        put_token(sot, at);
        at += width;
        const auto put_context = [&](const LearnedState& s, std::int64_t p) {
          const std::size_t values = static_cast<std::size_t>(s.tokens() * width);
          std::memcpy(at, s.context.data() + static_cast<std::size_t>(p) * values, values * sizeof(float));
          at += values;
        };
        if (before) put_context(*before, r % before->prompts());
        put_context(state, r % state.prompts());
        for (std::int32_t id : suffix) {
          put_token(id, at);
          at += width;
        }
        put_token(eot, at);
      }
      const std::vector<std::int64_t> eot_positions(static_cast<std::size_t>(n), length - 1);
      const FloatTensor encoded = model.encode_token_embeddings(tokens, eot_positions);
      if (dim == 0) dim = encoded.dim(1);
      if (sum.empty()) sum.assign(static_cast<std::size_t>(dim), 0.0);
      for (std::int64_t i = 0; i < n; ++i) prompt_detail::accumulate_unit(encoded.row(i), sum, label, what);
    }
    result.names.push_back(label);
    result.kinds.push_back(state.kind);
    sums.push_back(std::move(sum));
  }
  result.matrix = FloatTensor({static_cast<std::int64_t>(sums.size()), dim});
  for (std::size_t k = 0; k < sums.size(); ++k) {
    double norm2 = 0.0;
    for (double v : sums[k]) norm2 += v * v;
    require(norm2 > 1e-24, what, ": the prompts of state '", prompts.states[k].name, "' average to a zero vector");
    const double inv = 1.0 / std::sqrt(norm2);
    float* row = result.matrix.data() + k * static_cast<std::size_t>(dim);
    for (std::size_t d = 0; d < sums[k].size(); ++d) row[d] = static_cast<float>(sums[k][d] * inv);
  }
  result.validate(what);
  return result;
}

// As above, with each state's suffix text ("{object}." -> "metal nut.") tokenized by the model's
// tokenizer; the object word goes in as given (see object_word_for_category).
template <class Backend>
KeywordEmbeddings learned_state_embeddings(ClipModel<Backend>& model, const LearnedPrompts& prompts,
                                           const std::string& object_word, std::size_t batch_size = 64) {
  std::vector<std::vector<std::int32_t>> suffix_ids;
  for (const auto& s : prompts.states)
    suffix_ids.push_back(model.tokenizer().encode(learned_detail::expand_suffix(s.suffix, object_word)));
  const std::span<const std::vector<std::int32_t>> ids(suffix_ids);
  return learned_state_embeddings(model, prompts, ids, object_word, batch_size);
}

}  // namespace focuspatch
