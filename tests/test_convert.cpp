// The converter as users meet it: the focuspatch-convert program on good and bad inputs, and the
// library's planning on checkpoints with a tensor missing, misshapen or of the wrong kind.
#include <doctest/doctest.h>

#include <filesystem>
#include <string>

#include "focuspatch/convert/convert_checkpoint.hpp"
#include "focuspatch/model/clip_model.hpp"
#include "cli_support.hpp"
#include "test_paths.hpp"

using namespace focuspatch;
namespace fs = std::filesystem;

namespace {

const fs::path kClip = test::fixtures_dir() / "clip";

using test::TempDir;
using test::read_all;
using Run = test::ToolRun;

Run run_tool(const std::string& tool, const std::string& arguments, const fs::path& log) { return test::run_tool(tool, arguments, log); }
std::string file_bytes(const fs::path& p) { return read_all(p); }
void write_bytes(const fs::path& p, const std::string& bytes) { test::write_all(p, bytes); }

const std::string p8_heads = " --vision-heads 4 --text-heads 2";

// The p8_r32 state dict as the converter sees it, for editing.
SourceTensors p8_source(const std::shared_ptr<TensorArchive>& archive) {
  return detail::source_tensors_of({archive}, "p8.pt");
}

}  // namespace

TEST_CASE("focuspatch-convert converts a checkpoint and reports what it found") {
  TempDir tmp("test_convert");
  const fs::path out = tmp / "p8.fpw";
  const Run r = run_tool("focuspatch-convert", (kClip / "p8_r32/openai_state_dict.pt").string() + " -o " + out.string() + p8_heads +
                                                   " --no-tokenizer",
                         tmp / "log");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(r.output.find("width 64, 2 layers, 4 heads") != std::string::npos);
  CHECK(r.output.find("checksum verified") != std::string::npos);
  const WeightFile f(out.string());
  CHECK(f.meta_string("general.source") == "openai_state_dict.pt");
  CHECK(f.meta_string("general.source_sha256").size() == 64);
  CHECK(f.meta_int("clip.vision.heads") == 4);
  CHECK_FALSE(f.has_meta("tokenizer.vocab"));
}

TEST_CASE("the same weights in safetensors and pytorch_model.bin convert to the same tensors") {
  TempDir tmp("test_convert");
  for (const char* folder : {"hf", "hf_bin"}) {
    ConvertRequest req;
    req.input = (kClip / "p14_r42_hf" / folder).string();
    req.output = (tmp / (std::string(folder) + ".fpw")).string();
    req.no_tokenizer = true;
    convert_clip_checkpoint(req);
  }
  const WeightFile a((tmp / "hf.fpw").string()), b((tmp / "hf_bin.fpw").string());
  REQUIRE(a.tensor_names() == b.tensor_names());
  for (const auto& name : a.tensor_names()) {
    CAPTURE(name);
    const TensorView &ta = a.tensor(name), &tb = b.tensor(name);
    REQUIRE(ta.shape == tb.shape);
    CHECK(std::memcmp(ta.data, tb.data, ta.nbytes()) == 0);
  }
  CHECK(a.meta_string("clip.vision.activation") == "gelu");
  CHECK(a.meta_int("clip.vision.heads") == 6);
}

TEST_CASE("random weights are reproducible from their seed") {
  TempDir tmp("test_convert");
  auto make = [&](const std::string& name, int seed) {
    const Run r = run_tool("focuspatch-convert", "--random tiny --seed " + std::to_string(seed) + " --no-tokenizer -o " + (tmp / name).string(),
                           tmp / "log");
    INFO(r.output);
    REQUIRE(r.status == 0);
    return file_bytes(tmp / name);
  };
  const std::string a = make("a.fpw", 1), b = make("b.fpw", 1), c = make("c.fpw", 2);
  CHECK(a == b);
  CHECK(a != c);
  ClipModel<> model((tmp / "a.fpw").string());
  CHECK(model.config().vision.width == 64);
}

TEST_CASE("focuspatch-convert refuses bad input with a message that names the problem") {
  TempDir tmp("test_convert");
  const std::string p8 = (kClip / "p8_r32/openai_state_dict.pt").string();
  const std::string out = " -o " + (tmp / "out.fpw").string();
  struct Bad {
    std::string arguments, message;
  };
  write_bytes(tmp / "notes.txt", "these are not weights\n");
  const std::string whole = file_bytes(p8);
  write_bytes(tmp / "truncated.pt", whole.substr(0, whole.size() / 2));
  write_bytes(tmp / "gguf.bin", std::string("GGUF\x03\0\0\0", 8) + std::string(64, '\0'));
  fs::create_directories(tmp / "no_config");
  fs::copy_file(kClip / "p14_r42_hf/hf/model.safetensors", tmp / "no_config/model.safetensors");
  const Bad cases[] = {
      {p8 + out + " --no-tokenizer", "not a multiple of 64"},
      {p8 + out + p8_heads, "--vocab"},
      {p8 + out + p8_heads + " --no-tokenizer --dtype f8", "'f8' is not f32, f16 or bf16"},
      {p8 + out + p8_heads + " --no-tokenizer --frobnicate", "unknown option '--frobnicate'"},
      {p8 + out + " --vision-heads four --no-tokenizer", "'four' is not an integer"},
      {p8 + out + " --vision-heads 3 --text-heads 2 --no-tokenizer", "not divisible by its 3 heads"},
      {p8 + " --no-tokenizer" + p8_heads, "no output file"},
      {(tmp / "missing.pt").string() + out, "missing.pt: no such file"},
      {(tmp / "notes.txt").string() + out, "notes.txt: not a recognized checkpoint"},
      {(tmp / "truncated.pt").string() + out + p8_heads + " --no-tokenizer", "truncated.pt"},
      {(tmp / "gguf.bin").string() + out, "GGUF"},
      {(tmp / "no_config").string() + out, "without config.json"},
  };
  for (const Bad& bad : cases) {
    CAPTURE(bad.arguments);
    const Run r = run_tool("focuspatch-convert", bad.arguments, tmp / "log");
    INFO(r.output);
    CHECK(r.status == 1);
    CHECK(r.output.find(bad.message) != std::string::npos);
    CHECK(r.output.find("focuspatch-convert: ") == 0);  // one clear line, not a crash
  }
  if (test::have_shared_vocab()) {
    const Run r = run_tool("focuspatch-convert", p8 + out + p8_heads + " --vocab " + test::shared_vocab_path().string(), tmp / "log");
    INFO(r.output);
    CHECK(r.status == 1);
    CHECK(r.output.find("49408 tokens but the checkpoint's token embedding has 512 rows") != std::string::npos);
  }
}

TEST_CASE("planning names the tensor that is missing, misshapen or not a ViT") {
  const auto archive = std::make_shared<TensorArchive>(open_checkpoint((kClip / "p8_r32/openai_state_dict.pt").string()));
  ConvertOptions opt;
  opt.vision_heads = 4;
  opt.text_heads = 2;
  CHECK(plan_openai_clip(p8_source(archive), opt).tensors.size() == 61);

  SUBCASE("missing") {
    SourceTensors src("p8.pt");
    for (const auto& name : p8_source(archive).names())
      if (name != "ln_final.bias") src.add(name, p8_source(archive).entry(name));
    CHECK_THROWS_WITH_AS(plan_openai_clip(src, opt), doctest::Contains("p8.pt: tensor 'ln_final.bias' is missing"), Error);
  }
  SUBCASE("misshapen") {
    SourceTensors src = p8_source(archive);
    auto e = src.entry("visual.transformer.resblocks.1.mlp.c_proj.weight");
    e.shape = {64, 255};
    src.add("visual.transformer.resblocks.1.mlp.c_proj.weight", e);
    CHECK_THROWS_WITH_AS(plan_openai_clip(src, opt),
                         doctest::Contains("'visual.transformer.resblocks.1.mlp.c_proj.weight' has shape [64, 255]"), Error);
  }
  SUBCASE("integer weights") {
    SourceTensors src = p8_source(archive);
    auto e = src.entry("ln_final.weight");
    e.dtype = DType::I64;
    src.add("ln_final.weight", e);
    CHECK_THROWS_WITH_AS(plan_openai_clip(src, opt), doctest::Contains("'ln_final.weight' is i64"), Error);
  }
  SUBCASE("ResNet CLIP") {
    SourceTensors src("rn50.pt");
    src.add("visual.layer1.0.conv1.weight", {DType::F32, {64, 64, 1, 1}, {}});
    src.add("token_embedding.weight", {DType::F32, {49408, 512}, {}});
    CHECK_THROWS_WITH_AS(find_clip_prefix(src), doctest::Contains("ResNet"), Error);
  }
  SUBCASE("not CLIP at all") {
    SourceTensors src("bert.bin");
    src.add("encoder.layer.0.attention.self.query.weight", {DType::F32, {768, 768}, {}});
    CHECK_THROWS_WITH_AS(find_clip_prefix(src), doctest::Contains("is this a CLIP checkpoint?"), Error);
  }
}
