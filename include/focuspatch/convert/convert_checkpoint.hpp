#pragma once
// From a path a user has (an OpenAI/open_clip checkpoint file, or a Hugging Face model folder) to
// a verified .fpw file. This is focuspatch-convert without its command line, so programs and tests
// can convert the same way the tool does.
//
// Prompt data can travel in the same file: keyword embeddings of a prompt bank for a list of
// categories (so a deployment needs no text tower), and learned context vectors from a prompt
// learning checkpoint. The embeddings need the converted text tower, so the model is written
// first, loaded, and the file is then written once more with the prompt tensors added: the price
// is a second pass over the output (reading and re-encoding every tensor; a few seconds for
// ViT-B, tens for ViT-L), plus the text tower on every bank sentence for every category.
#include <array>
#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "focuspatch/anomaly/learned_prompts.hpp"
#include "focuspatch/anomaly/prompt_bank.hpp"
#include "focuspatch/convert/clip_converter.hpp"
#include "focuspatch/convert/source_tensors.hpp"
#include "focuspatch/core/sha256.hpp"
#include "focuspatch/io/checkpoint.hpp"
#include "focuspatch/io/json.hpp"
#include "focuspatch/io/mapped_file.hpp"
#include "focuspatch/io/weight_file.hpp"
#include "focuspatch/io/weight_writer.hpp"
#include "focuspatch/model/clip_model.hpp"
#include "focuspatch/text/tokenizer.hpp"

namespace focuspatch {

// What to store beside the model; empty = nothing.
struct PromptDataRequest {
  std::string bank;                     // keyword bank file (weights/prompts/unified_keywords.txt is the default bank)
  std::vector<std::string> categories;  // category names or object words; the bank's generic word is always added
  std::string learned_checkpoint;       // PyTorch or safetensors file holding learned context vectors
  LearnedPromptImport learned;          // which tensors (expected_width is filled in from the model)

  bool empty() const { return bank.empty() && learned_checkpoint.empty(); }
};

struct PromptDataReport {
  std::vector<std::string> objects;  // object words with stored keyword embeddings, generic word last
  std::size_t keywords = 0;          // per object
  std::string bank_fingerprint;
  std::optional<ImportedLearnedPrompts> learned;
};

struct ConvertRequest {
  std::string input;   // checkpoint file, or a Hugging Face folder (config.json + weights)
  std::string output;  // .fpw path
  std::optional<DType> dtype;
  std::optional<int> vision_heads, text_heads;
  std::optional<Activation> activation;
  std::string vocab;   // bpe_simple_vocab_16e6.txt[.gz], or a folder/vocab.json with merges.txt beside it
  bool no_tokenizer = false;
  PromptDataRequest prompts;
};

struct ConvertReport {
  ClipConfig config;
  CheckpointNaming naming = CheckpointNaming::OpenAI;
  std::string source_format;   // torch.save, torchscript, safetensors (+ "hf folder")
  std::string source_sha256;   // of the weights file (every shard, in order, for sharded folders)
  std::string official_model;  // OpenAI release recognised by its digest, or empty
  std::string prefix;          // stripped from the tensor names, e.g. "state_dict.module."
  std::vector<std::string> notes, ignored;
  DType storage = DType::F32;
  std::size_t tensors = 0, output_bytes = 0;  // tensors: the model's, without prompt data
  bool tokenizer = false;
  PromptDataReport prompts;
};

// The SHA-256 digests in the download URLs of OpenAI's clip/clip.py.
inline std::string official_openai_model(const std::string& sha256) {
  static constexpr std::array<std::array<const char*, 2>, 4> known = {{
      {"40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", "OpenAI ViT-B/32"},
      {"5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", "OpenAI ViT-B/16"},
      {"b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", "OpenAI ViT-L/14"},
      {"3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02", "OpenAI ViT-L/14@336px"},
  }};
  for (const auto& [digest, name] : known)
    if (sha256 == digest) return name;
  return {};
}

namespace detail {

inline std::string read_text_file(const std::filesystem::path& path) {
  MappedFile f(path.string());
  return std::string(reinterpret_cast<const char*>(f.bytes().data()), f.size());
}

// Every tensor of one or more archives (shards), loaded lazily as fp32.
inline SourceTensors source_tensors_of(const std::vector<std::shared_ptr<TensorArchive>>& archives, const std::string& origin) {
  SourceTensors src(origin);
  for (const auto& archive : archives) {
    for (const auto& stored : archive->tensors()) {
      require(!src.contains(stored.name), origin, ": tensor '", stored.name, "' appears in more than one shard");
      const std::string name = stored.name;
      src.add(name, {stored.dtype, stored.shape, [archive, name] { return archive->load_float(name); }});
    }
  }
  return src;
}

// Hugging Face's transformers fills keys a config.json leaves out from CLIPVisionConfig and
// CLIPTextConfig defaults; these are those defaults.
inline HfClipSettings read_hf_config(const std::filesystem::path& path, int vision_width, int text_width, std::vector<std::string>& notes) {
  const std::string text = read_text_file(path);
  const json::Value root = json::parse(text, path.string());
  require(root.is_object(), path.string(), ": expected a JSON object");
  HfClipSettings s;
  auto section = [&](const char* key) -> const json::Value* {
    const json::Value* v = root.find(key);
    require(v && v->is_object(), path.string(), ": no '", key, "' object; is this a CLIPModel config?");
    return v;
  };
  const json::Value* vision = section("vision_config");
  const json::Value* textc = section("text_config");
  auto int_or = [&](const json::Value* obj, const char* key, int fallback) {
    const json::Value* v = obj->find(key);
    if (!v || v->is_null()) return fallback;
    require(v->is_number(), path.string(), ": '", key, "' is not a number");
    const double d = v->as_double();
    require(d >= 1 && d < 1e6 && d == static_cast<int>(d), path.string(), ": '", key, "' = ", d, " is not a positive integer");
    return static_cast<int>(d);
  };
  auto heads_of = [&](const json::Value* obj, const char* tower, int width, int hf_default_width, int hf_default_heads) {
    if (obj->find("num_attention_heads")) return int_or(obj, "num_attention_heads", 0);
    // Absent: transformers' default applies only to the default width; otherwise CLIP's width / 64.
    const int heads = width == hf_default_width ? hf_default_heads : width / 64;
    notes.push_back(std::string(tower) + " heads: config.json does not say; using " + std::to_string(heads));
    return heads;
  };
  auto act_of = [&](const json::Value* obj) {
    const json::Value* v = obj->find("hidden_act");
    require(!v || v->is_string(), path.string(), ": 'hidden_act' is not a string");
    const std::string act = v ? v->as_string() : "quick_gelu";
    if (act == "quick_gelu") return Activation::QuickGelu;
    if (act == "gelu") return Activation::Gelu;
    fail(path.string(), ": hidden_act '", act, "' is not supported (quick_gelu or gelu)");
  };
  s.vision_heads = heads_of(vision, "vision", vision_width, 768, 12);
  s.text_heads = heads_of(textc, "text", text_width, 512, 8);
  s.vision_activation = act_of(vision);
  s.text_activation = act_of(textc);
  // Sizes the tensors also tell: read when stated, and cross-checked against the tensors by
  // plan_hf_clip, so a config.json that contradicts its weights is refused, not ignored.
  auto size_of = [&](const json::Value* obj, const char* section_name, const char* key) -> std::int64_t {
    const json::Value* v = obj->find(key);
    if (!v || v->is_null()) return 0;
    require(v->is_number(), path.string(), ": '", section_name, key, "' is not a number");
    const double d = v->as_double();
    require(d >= 1 && d <= 9.0e15 && d == std::floor(d), path.string(), ": '", section_name, key, "' = ", d,
            " is not a positive integer");
    return static_cast<std::int64_t>(d);
  };
  s.vision_sizes = {size_of(vision, "vision_config.", "hidden_size"), size_of(vision, "vision_config.", "intermediate_size"),
                    size_of(vision, "vision_config.", "num_hidden_layers")};
  s.text_sizes = {size_of(textc, "text_config.", "hidden_size"), size_of(textc, "text_config.", "intermediate_size"),
                  size_of(textc, "text_config.", "num_hidden_layers")};
  s.text_vocab_size = size_of(textc, "text_config.", "vocab_size");
  s.text_context_length = size_of(textc, "text_config.", "max_position_embeddings");
  s.projection_dim = size_of(&root, "", "projection_dim");
  s.image_size = int_or(vision, "image_size", 224);
  s.patch_size = int_or(vision, "patch_size", 32);
  const json::Value* eps = vision->find("layer_norm_eps");
  require(!eps || eps->is_number(), path.string(), ": 'layer_norm_eps' is not a number");
  s.layer_norm_eps = eps ? static_cast<float>(eps->as_double()) : 1e-5f;
  return s;
}

inline std::string sha256_of_files(const std::vector<std::filesystem::path>& files) {
  Sha256 h;
  for (const auto& f : files) {
    MappedFile m(f.string());
    // In chunks, so the pages of a multi-gigabyte file can be dropped as we go.
    const auto bytes = m.bytes();
    for (std::size_t pos = 0; pos < bytes.size(); pos += (1u << 24)) h.update(bytes.subspan(pos, std::min<std::size_t>(1u << 24, bytes.size() - pos)));
  }
  return h.hex_digest();
}

inline std::optional<ClipTokenizer> load_tokenizer(const ConvertRequest& req, const std::filesystem::path& hf_folder) {
  namespace fs = std::filesystem;
  if (req.no_tokenizer) return std::nullopt;
  fs::path vocab = req.vocab.empty() ? fs::path() : fs::path(req.vocab);
  if (vocab.empty() && !hf_folder.empty() && fs::exists(hf_folder / "vocab.json")) vocab = hf_folder;
  if (vocab.empty())
    fail(req.input, ": this checkpoint holds no tokenizer; pass --vocab bpe_simple_vocab_16e6.txt.gz (from OpenAI's CLIP ",
         "repository), a Hugging Face folder with vocab.json and merges.txt, or --no-tokenizer");
  if (fs::is_directory(vocab)) vocab /= "vocab.json";
  require(fs::exists(vocab), vocab.string(), ": no such file");
  if (vocab.filename() == "vocab.json") {
    const fs::path merges = vocab.parent_path() / "merges.txt";
    require(fs::exists(merges), merges.string(), ": missing; a Hugging Face tokenizer needs merges.txt beside vocab.json");
    return ClipTokenizer::from_hf(read_text_file(vocab), read_text_file(merges), vocab.string(), merges.string());
  }
  return ClipTokenizer::from_openai_file(vocab.string());
}

}  // namespace detail

// Prompt inputs read and checked before the model is converted, so a typo in the bank or in a
// tensor name fails at once rather than after a long conversion.
struct PreparedPromptData {
  std::optional<PromptBank> bank;
  std::vector<std::string> objects;  // object words to embed the bank for, the generic word last
  std::optional<ImportedLearnedPrompts> learned;

  bool empty() const { return !bank && !learned; }
};

inline PreparedPromptData prepare_prompt_data(const PromptDataRequest& request, const ClipConfig& config, bool has_tokenizer) {
  PreparedPromptData out;
  require(request.categories.empty() || !request.bank.empty(), "categories were given without a prompt bank to embed them with");
  if (!request.bank.empty()) {
    require(has_tokenizer, request.bank, ": embedding a prompt bank needs the tokenizer, but none is being written ",
            "(give the vocabulary instead of leaving it out)");
    out.bank = load_prompt_bank(request.bank);
    std::vector<std::string> keys;
    for (const auto& category : request.categories) {
      const std::string word = object_word_for_category(category);
      require(!word.empty(), "category '", category, "' is empty");
      const std::string key = prompt_object_key(word);
      require(std::find(keys.begin(), keys.end(), key) == keys.end(), "category '", category, "' is given twice");
      if (key == prompt_object_key(out.bank->generic_object)) continue;  // added below anyway
      keys.push_back(key);
      out.objects.push_back(word);
    }
    out.objects.push_back(out.bank->generic_object);
  }
  if (!request.learned_checkpoint.empty()) {
    LearnedPromptImport import = request.learned;
    import.expected_width = config.text.width;
    out.learned = import_learned_prompts(request.learned_checkpoint, import);
  }
  return out;
}

namespace detail {
// Writes every metadata entry and tensor of `source` (tensors in their stored dtype, which the
// fp32 round trip keeps bit for bit) and whatever `add` adds to `target`.
inline void rewrite_weights(const WeightFile& source, const std::string& target, const std::function<void(WeightWriter&)>& add) {
  WeightWriter w;
  for (const auto& [key, value] : source.metadata()) w.set_meta(key, value);
  for (const auto& name : source.tensor_names()) {
    const TensorView& view = source.tensor(name);
    w.add_tensor(name, view.dtype, view.shape, [&view] { return FloatTensor::from_view(view); });
  }
  add(w);
  w.write(target);
}

struct RemoveOnExit {
  std::filesystem::path path;
  ~RemoveOnExit() {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
  }
};
}  // namespace detail

// Writes the model as write_clip_weights does, plus the prepared prompt data: keyword embeddings
// of the bank for every object word, computed with the converted text tower, and the learned
// context vectors. Without prompt data this is write_clip_weights.
inline PromptDataReport write_clip_weights_with_prompts(const ConversionPlan& plan, const ConvertOptions& opt,
                                                        const std::string& path, const PreparedPromptData& data) {
  PromptDataReport report;
  if (data.empty()) {
    write_clip_weights(plan, opt, path);
    return report;
  }
  const detail::RemoveOnExit model_only{path + ".model-only"};
  write_clip_weights(plan, opt, model_only.path.string());
  std::vector<KeywordEmbeddings> embeddings;
  if (data.bank) {
    ClipModel<> model(model_only.path.string());
    const TextEncoder encode = [&model](std::span<const std::string> texts) {
      return model.encode_texts(texts, TextOverflow::Refuse);
    };
    for (const auto& object : data.objects) embeddings.push_back(compute_keyword_embeddings(*data.bank, object, encode));
    report.objects = data.objects;
    report.keywords = data.bank->keywords.size();
    report.bank_fingerprint = data.bank->fingerprint();
  }
  report.learned = data.learned;
  const WeightFile model(model_only.path.string());
  detail::rewrite_weights(model, path, [&](WeightWriter& w) {
    for (const auto& e : embeddings) add_keyword_embeddings(w, e);
    if (data.learned) add_learned_prompts(w, data.learned->prompts);
  });
  return report;
}

inline ConvertReport convert_clip_checkpoint(const ConvertRequest& req) {
  namespace fs = std::filesystem;
  require(!req.output.empty(), "convert: no output path given");
  require(fs::exists(req.input), req.input, ": no such file or folder");
  ConvertReport report;
  fs::path hf_folder, hf_config;
  std::vector<fs::path> weight_files;
  if (fs::is_directory(req.input)) {
    hf_folder = req.input;
    hf_config = hf_folder / "config.json";
    require(fs::exists(hf_config), req.input, ": a folder, but without config.json; expected a Hugging Face CLIP model folder");
    if (fs::exists(hf_folder / "model.safetensors")) {
      weight_files.push_back(hf_folder / "model.safetensors");
    } else if (fs::exists(hf_folder / "model.safetensors.index.json") || fs::exists(hf_folder / "pytorch_model.bin.index.json")) {
      const fs::path index = fs::exists(hf_folder / "model.safetensors.index.json") ? hf_folder / "model.safetensors.index.json"
                                                                                     : hf_folder / "pytorch_model.bin.index.json";
      const json::Value root = json::parse(detail::read_text_file(index), index.string());
      const json::Value* map = root.find("weight_map");
      require(map && map->is_object(), index.string(), ": no 'weight_map' object");
      std::set<std::string> shards;
      for (const auto& [name, file] : map->as_object()) {
        require(file.is_string() && file.as_string().find('/') == std::string::npos && file.as_string() != ".." &&
                    !file.as_string().empty(),
                index.string(), ": the shard of '", name, "' is not a file name in this folder");
        shards.insert(file.as_string());
      }
      for (const auto& shard : shards) weight_files.push_back(hf_folder / shard);
    } else if (fs::exists(hf_folder / "pytorch_model.bin")) {
      weight_files.push_back(hf_folder / "pytorch_model.bin");
    } else {
      fail(req.input, ": no model.safetensors or pytorch_model.bin in this folder");
    }
  } else {
    weight_files.push_back(req.input);
  }

  std::vector<std::shared_ptr<TensorArchive>> archives;
  // The converter reads every byte of the weights anyway (for the SHA-256 and the conversion), so
  // checking each storage entry's CRC-32 costs one more cheap pass and catches a damaged download.
  TorchReadOptions torch_options;
  torch_options.verify_crc = true;
  for (const auto& f : weight_files) archives.push_back(std::make_shared<TensorArchive>(open_checkpoint(f.string(), torch_options)));
  report.source_format = archives.front()->format() + (hf_folder.empty() ? "" : " (Hugging Face folder)");
  const SourceTensors all = detail::source_tensors_of(archives, req.input);
  report.prefix = find_clip_prefix(all);
  const SourceTensors src = report.prefix.empty() ? all : all.strip_prefix(report.prefix);
  const auto naming = detect_naming(src);
  require(naming.has_value(), req.input, ": found a vision tower but not both CLIP towers (a text tower is needed too; ",
          "CLIPVisionModel-only checkpoints are not supported)");
  report.naming = *naming;

  ConvertOptions opt;
  opt.dtype = req.dtype;
  opt.vision_heads = req.vision_heads;
  opt.text_heads = req.text_heads;
  opt.activation = req.activation;
  ConversionPlan plan;
  if (report.naming == CheckpointNaming::HuggingFace) {
    std::vector<std::string> notes;
    require(!hf_config.empty(), req.input, ": Hugging Face tensor names, but no config.json; pass the model folder instead of the file");
    HfClipSettings hf = detail::read_hf_config(hf_config, static_cast<int>(src.shape("vision_model.embeddings.patch_embedding.weight")[0]),
                                               static_cast<int>(src.shape("text_model.embeddings.token_embedding.weight")[1]), notes);
    if (req.vision_heads) hf.vision_heads = *req.vision_heads;
    if (req.text_heads) hf.text_heads = *req.text_heads;
    if (req.activation) hf.vision_activation = hf.text_activation = *req.activation;
    plan = plan_hf_clip(src, hf);
    plan.notes.insert(plan.notes.begin(), notes.begin(), notes.end());
  } else {
    plan = plan_openai_clip(src, opt);
  }

  const auto tokenizer = detail::load_tokenizer(req, hf_folder);
  if (tokenizer) {
    require(static_cast<std::int64_t>(tokenizer->vocab_size()) == plan.config.text.vocab_size, req.vocab.empty() ? hf_folder.string() : req.vocab,
            ": the tokenizer has ", tokenizer->vocab_size(), " tokens but the checkpoint's token embedding has ",
            plan.config.text.vocab_size, " rows; wrong vocabulary?");
    opt.vocab = tokenizer->vocab();
    opt.merges = tokenizer->merges();
    report.tokenizer = true;
  }

  const PreparedPromptData prompt_data = prepare_prompt_data(req.prompts, plan.config, tokenizer.has_value());

  report.source_sha256 = detail::sha256_of_files(weight_files);
  report.official_model = official_openai_model(report.source_sha256);
  opt.source_name = fs::path(req.input).filename().string();
  opt.source_sha256 = report.source_sha256;
  opt.source_format = report.source_format;
  report.prompts = write_clip_weights_with_prompts(plan, opt, req.output, prompt_data);

  // Read back what was written, so a bad file is caught here and not on a production line.
  const WeightFile written(req.output);
  written.verify_data_checksum();
  const ClipConfig reread = ClipConfig::load(written);
  const auto model_tensors = std::count_if(written.tensor_names().begin(), written.tensor_names().end(),
                                           [](const std::string& name) { return !name.starts_with("prompts."); });
  require(reread.vision.width == plan.config.vision.width && static_cast<std::size_t>(model_tensors) == plan.tensors.size(),
          req.output, ": the written file does not read back as what was converted");
  report.config = plan.config;
  report.notes = plan.notes;
  report.ignored = plan.ignored;
  report.storage = DType::F32;
  if (written.find("v.patch_embed.weight")) report.storage = written.tensor("v.patch_embed.weight").dtype;
  report.tensors = plan.tensors.size();
  report.output_bytes = written.file_size();
  return report;
}

}  // namespace focuspatch
