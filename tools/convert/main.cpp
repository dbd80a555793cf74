// focuspatch-convert: CLIP checkpoints (OpenAI, open_clip, Hugging Face) to a .fpw weight file,
// without Python. Also writes randomly initialized weights of the released shapes for demos.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "common/cli_args.hpp"
#include "focuspatch/convert/convert_checkpoint.hpp"
#include "focuspatch/convert/random_clip.hpp"

namespace {

constexpr const char* kUsage = R"(usage:
  focuspatch-convert INPUT -o OUTPUT.fpw [options]
  focuspatch-convert --random PRESET [--seed N] -o OUTPUT.fpw [--vocab FILE | --no-tokenizer]

INPUT is a checkpoint file (OpenAI .pt, TorchScript or state dict; open_clip .pt/.bin, training
checkpoints included; .safetensors) or a Hugging Face CLIP model folder (config.json, weights,
vocab.json, merges.txt). The format is recognised from the bytes, not the file name.

options:
  -o, --output FILE       the .fpw file to write
  --dtype f32|f16|bf16    storage of the weight matrices (default: as the checkpoint stores them)
  --vocab PATH            bpe_simple_vocab_16e6.txt[.gz], or a folder / vocab.json with merges.txt;
                          needed for OpenAI and open_clip files, which carry no tokenizer
  --no-tokenizer          write no tokenizer (token ids must then be given by the caller)
  --vision-heads N        attention heads of the image tower, when not width / 64
  --text-heads N          attention heads of the text tower, when not width / 64
  --activation gelu|quick_gelu
                          MLP activation (OpenAI's models: quick_gelu; open_clip models trained
                          without "-quickgelu": gelu)
  --random PRESET         random weights shaped like ViT-B/32, ViT-B/16, ViT-L/14, ViT-L/14@336px or tiny
  --seed N                seed for --random (default 0)
  -h, --help              this text

prompt data stored in the same file (the model is written, loaded, and written again with it):
  --prompts BANK.txt      keyword prompt bank (the default one is weights/prompts/unified_keywords.txt);
                          its keyword embeddings are computed with the converted text tower for every
                          category and for the bank's generic object word, so a deployment needs no
                          text tower. Needs the tokenizer. Re-run after editing the bank.
  --categories a,b,c      category names (metal_nut) or object words to embed the bank for
  --learned-prompts CKPT  learned context vectors from a prompt-learning checkpoint (.pt or
                          .safetensors). Known names are tried when none are given: PromptAD
                          prompt_learner.normal_ctx/abnormal_ctx, AnomalyCLIP prompt_learner.ctx_pos/
                          ctx_neg, and ctx_normal with ctx_abnormal or ctx_anomaly
  --learned-normal NAME   tensor holding the normal context ([n_ctx, W] or [prompts, n_ctx, W])
  --learned-anomaly NAME  tensor holding the anomaly context (give both names or neither)
  --learned-normal-suffix TEXT, --learned-anomaly-suffix TEXT
                          text after the context, {object} = the object word (default "{object}.";
                          AnomalyCLIP's anomaly default "damaged {object}.")
  --learned-layout separate|promptad
                          promptad: every anomaly prompt starts with a normal context, as PromptAD
                          builds them (default for PromptAD's names); separate: each state alone
)";

std::string mib(std::size_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

void print_config(const focuspatch::ClipConfig& c) {
  using focuspatch::activation_name;
  std::cout << "  image tower: " << c.vision.image_size << " px, patch " << c.vision.patch_size << ", width " << c.vision.width
            << ", " << c.vision.layers << " layers, " << c.vision.heads << " heads, MLP " << c.vision.mlp_width << ", "
            << activation_name(c.vision.activation) << "\n"
            << "  text tower:  context " << c.text.context_length << ", vocabulary " << c.text.vocab_size << ", width " << c.text.width
            << ", " << c.text.layers << " layers, " << c.text.heads << " heads, MLP " << c.text.mlp_width << ", "
            << activation_name(c.text.activation) << "\n"
            << "  joint embedding " << c.embed_dim << ", logit scale " << c.logit_scale << " (x" << std::exp(c.logit_scale) << ")\n";
}

std::vector<std::string> split_list(const std::vector<std::string>& values, const char* option) {
  std::vector<std::string> items;
  for (const auto& value : values) {
    std::size_t start = 0;
    while (true) {
      const auto comma = value.find(',', start);
      std::string item = value.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      item.erase(0, item.find_first_not_of(" \t"));
      item.erase(item.find_last_not_of(" \t") + 1);
      focuspatch::require(!item.empty(), "option --", option, ": empty name in '", value, "'");
      items.push_back(item);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  return items;
}

focuspatch::PromptDataRequest prompt_request(const focuspatch::cli::Args& args) {
  using namespace focuspatch;
  PromptDataRequest req;
  req.bank = args.get_or("prompts", "");
  req.categories = split_list(args.all("categories"), "categories");
  require(req.categories.empty() || !req.bank.empty(), "--categories needs --prompts BANK.txt (the bank to embed them with)");
  req.learned_checkpoint = args.get_or("learned-prompts", "");
  for (const char* option :
       {"learned-normal", "learned-anomaly", "learned-normal-suffix", "learned-anomaly-suffix", "learned-layout"})
    require(!args.has(option) || !req.learned_checkpoint.empty(), "--", option, " needs --learned-prompts CHECKPOINT");
  req.learned.normal_tensor = args.get_or("learned-normal", "");
  req.learned.anomaly_tensor = args.get_or("learned-anomaly", "");
  if (auto s = args.get("learned-normal-suffix")) req.learned.normal_suffix = *s;
  if (auto s = args.get("learned-anomaly-suffix")) req.learned.anomaly_suffix = *s;
  if (auto layout = args.get("learned-layout")) {
    require(*layout == "separate" || *layout == "promptad", "option --learned-layout: '", *layout,
            "' is not separate or promptad");
    req.learned.anomaly_after_normal = *layout == "promptad";
  }
  return req;
}

void print_prompts(const focuspatch::PromptDataReport& r) {
  if (!r.objects.empty()) {
    std::cout << "stored keyword embeddings (" << r.keywords << " keywords, bank " << r.bank_fingerprint.substr(0, 12)
              << ") for:";
    for (const auto& o : r.objects) std::cout << " '" << o << "'";
    std::cout << "\n";
  }
  if (r.learned) {
    std::cout << "stored learned prompts (" << r.learned->convention << "):";
    const char* separator = " ";
    for (const auto& s : r.learned->prompts.states) {
      std::cout << separator << s.name << " " << s.prompts() << " x " << s.tokens() << " from " << s.origin
                << (s.after.empty() ? "" : " after the " + s.after + " context") << ", suffix \"" << s.suffix << "\"";
      separator = "; ";
    }
    std::cout << "\n";
    for (const auto& n : r.learned->notes) std::cout << "note: " << n << "\n";
  }
}

int run(int argc, char** argv) {
  using namespace focuspatch;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "-h" || std::string(argv[i]) == "--help") return std::cout << kUsage, 0;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "-o") argv[i] = const_cast<char*>("--output");
  const cli::Args args(argc, argv,
                       {"output", "dtype", "vocab", "vision-heads", "text-heads", "activation", "random", "seed", "prompts",
                        "categories", "learned-prompts", "learned-normal", "learned-anomaly", "learned-normal-suffix",
                        "learned-anomaly-suffix", "learned-layout"},
                       {"no-tokenizer"});
  ConvertRequest req;
  req.output = args.get_or("output", "");
  require(!req.output.empty(), "no output file: pass -o OUTPUT.fpw (see --help)");
  if (auto d = args.get("dtype")) {
    if (*d == "f32") req.dtype = DType::F32;
    else if (*d == "f16") req.dtype = DType::F16;
    else if (*d == "bf16") req.dtype = DType::BF16;
    else fail("option --dtype: '", *d, "' is not f32, f16 or bf16");
  }
  req.vocab = args.get_or("vocab", "");
  req.no_tokenizer = args.has("no-tokenizer");
  require(!(req.no_tokenizer && !req.vocab.empty()), "--vocab and --no-tokenizer contradict each other");
  if (auto h = args.get_int("vision-heads", 1, 4096)) req.vision_heads = static_cast<int>(*h);
  if (auto h = args.get_int("text-heads", 1, 4096)) req.text_heads = static_cast<int>(*h);
  if (auto a = args.get("activation")) req.activation = parse_activation(*a, "option --activation");
  req.prompts = prompt_request(args);

  if (auto preset = args.get("random")) {
    require(args.positional().empty(), "--random takes no INPUT");
    const auto seed = args.get_int("seed", 0, (1ll << 62)).value_or(0);
    const ClipConfig config = clip_preset(*preset);
    ConversionPlan plan = random_clip_plan(config, static_cast<std::uint64_t>(seed));
    ConvertOptions opt;
    opt.dtype = req.dtype;
    if (!req.no_tokenizer && !req.vocab.empty()) {
      const ClipTokenizer tok = detail::load_tokenizer(req, {}).value();
      opt.vocab = tok.vocab();
      opt.merges = tok.merges();
    }
    opt.source_name = "random " + *preset + " seed " + std::to_string(seed);
    opt.source_format = "random";
    const PreparedPromptData prompts = prepare_prompt_data(req.prompts, config, !opt.vocab.empty());
    const PromptDataReport stored = write_clip_weights_with_prompts(plan, opt, req.output, prompts);
    WeightFile(req.output).verify_data_checksum();
    std::cout << "wrote " << req.output << ": random " << *preset << " weights (seed " << seed << "), "
              << (opt.vocab.empty() ? "no tokenizer" : "with tokenizer") << "\n";
    print_config(config);
    print_prompts(stored);
    std::cout << "note: random weights are for demos and benchmarks; their outputs mean nothing\n";
    return 0;
  }
  require(args.positional().size() == 1, args.positional().empty() ? "no INPUT checkpoint given (see --help)"
                                                                   : "more than one INPUT given; convert one checkpoint at a time");
  require(!args.has("seed"), "--seed only goes with --random");
  req.input = args.positional().front();
  const ConvertReport r = convert_clip_checkpoint(req);
  std::cout << "read " << req.input << " (" << r.source_format << ", "
            << (r.naming == CheckpointNaming::OpenAI ? "OpenAI/open_clip names" : "Hugging Face names")
            << (r.prefix.empty() ? "" : ", prefix '" + r.prefix + "'") << ")\n"
            << "  sha256 " << r.source_sha256 << (r.official_model.empty() ? "" : "  = " + r.official_model + " as released") << "\n";
  print_config(r.config);
  for (const auto& n : r.notes) std::cout << "note: " << n << "\n";
  if (!r.ignored.empty()) {
    std::cout << "ignored " << r.ignored.size() << " tensor(s) that are not part of the CLIP towers:";
    for (std::size_t i = 0; i < r.ignored.size() && i < 8; ++i) std::cout << " " << r.ignored[i];
    std::cout << (r.ignored.size() > 8 ? " ..." : "") << "\n";
  }
  print_prompts(r.prompts);
  std::cout << "wrote " << req.output << ": " << r.tensors << " tensors, matrices " << dtype_name(r.storage) << ", "
            << mib(r.output_bytes) << ", " << (r.tokenizer ? "tokenizer included" : "no tokenizer") << ", checksum verified\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return focuspatch::cli::guarded_main("focuspatch-convert", argc, argv, run); }
