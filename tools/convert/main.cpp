// focuspatch-convert: CLIP checkpoints (OpenAI, open_clip, Hugging Face) to a .fpw weight file,
// without Python. Also writes randomly initialized weights of the released shapes for demos.
#include <cstdio>
#include <iostream>
#include <string>

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

int run(int argc, char** argv) {
  using namespace focuspatch;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "-h" || std::string(argv[i]) == "--help") return std::cout << kUsage, 0;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "-o") argv[i] = const_cast<char*>("--output");
  const cli::Args args(argc, argv, {"output", "dtype", "vocab", "vision-heads", "text-heads", "activation", "random", "seed"},
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
    write_clip_weights(plan, opt, req.output);
    WeightFile(req.output).verify_data_checksum();
    std::cout << "wrote " << req.output << ": random " << *preset << " weights (seed " << seed << "), "
              << (opt.vocab.empty() ? "no tokenizer" : "with tokenizer") << "\n";
    print_config(config);
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
  std::cout << "wrote " << req.output << ": " << r.tensors << " tensors, matrices " << dtype_name(r.storage) << ", "
            << mib(r.output_bytes) << ", " << (r.tokenizer ? "tokenizer included" : "no tokenizer") << ", checksum verified\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "focuspatch-convert: " << e.what() << "\n";
    return 1;
  }
}
