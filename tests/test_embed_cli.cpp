// focuspatch-embed end to end: image file and text in, JSON out, checked against torchvision's
// preprocessing (tests/fixtures/images) and the PyTorch reference model (tests/fixtures/clip).
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "focuspatch/convert/convert_checkpoint.hpp"
#include "focuspatch/io/json.hpp"
#include "focuspatch/model/clip_model.hpp"
#include "cli_support.hpp"
#include "test_paths.hpp"

using namespace focuspatch;
namespace fs = std::filesystem;

namespace {

using test::read_all;
using test::TempDir;

int run_embed(const std::string& arguments, const fs::path& log) { return test::run_tool("focuspatch-embed", arguments, log).status; }

std::vector<double> numbers(const json::Value& array) {
  std::vector<double> out;
  for (const auto& v : array.as_array()) out.push_back(v.as_double());
  return out;
}

double cosine(const std::vector<double>& a, const float* b) {
  double dot = 0, na = 0, nb = 0;
  for (std::size_t i = 0; i < a.size(); ++i) dot += a[i] * b[i], na += a[i] * a[i], nb += double(b[i]) * b[i];
  return dot / std::sqrt(na * nb);
}

}  // namespace

TEST_CASE("focuspatch-embed reproduces the reference embeddings of an image file and real prompts") {
  if (!test::have_shared_vocab()) {
    MESSAGE("skipped: ", test::shared_vocab_path().string(), " is absent");
    return;
  }
  TempDir tmp("test_embed_cli");
  const fs::path clip = test::fixtures_dir() / "clip" / "fullvocab_tiny";
  ConvertRequest req;
  req.input = (clip / "openai_state_dict_f16.pt").string();
  req.output = (tmp / "tiny.fpw").string();
  req.vision_heads = req.text_heads = 2;
  req.vocab = test::shared_vocab_path().string();
  convert_clip_checkpoint(req);

  const fs::path image = test::fixtures_dir() / "images" / "rgb_37x53.png";
  const int status = run_embed("--weights " + req.output + " --image " + image.string() +
                                   " --text 'a photo of a scratched metal nut' --text flawless --out " + (tmp / "out.json").string(),
                               tmp / "log");
  INFO(read_all(tmp / "log"));
  REQUIRE(status == 0);
  const json::Value out = json::parse(read_all(tmp / "out.json"), "out.json");

  // Texts: OpenAI's token ids and the PyTorch model's embeddings.
  const TensorArchive ref = open_checkpoint((clip / "reference.safetensors").string());
  const FloatTensor text_ref = ref.load_float("out.real_text_embeddings");
  const auto& texts = out.at("texts");
  REQUIRE(texts.size() == 2);
  CHECK(numbers(texts[1].at("token_ids")) == std::vector<double>{49406, 15531, 49407});
  for (std::size_t i = 0; i < 2; ++i) {
    const auto got = numbers(texts[i].at("embedding"));
    REQUIRE(got.size() == 8);
    CHECK(cosine(got, text_ref.data() + i * 8) > 0.99999);
    for (std::size_t k = 0; k < 8; ++k) CHECK(got[k] == doctest::Approx(text_ref.data()[i * 8 + k]).epsilon(1e-4));
  }

  // Image: the file through torchvision's Resize/CenterCrop/Normalize (stored by
  // gen_image_cases.py) and the model, against what the program computed from the file itself.
  ClipModel<> model(req.output);
  const std::string pixels = read_all(image.string() + ".clip32.f32");
  REQUIRE(pixels.size() == 3 * 32 * 32 * sizeof(float));
  std::vector<float> chw(3 * 32 * 32);
  std::memcpy(chw.data(), pixels.data(), pixels.size());
  const VisionOutput expected = model.encode_images(chw, 1);
  const auto got = numbers(out.at("images")[0].at("embedding"));
  for (std::size_t k = 0; k < 8; ++k) CHECK(got[k] == doctest::Approx(expected.image_embeddings.data()[k]).epsilon(1e-5));

  // Zero-shot probabilities: a softmax over the texts that sums to one.
  const auto p = numbers(out.at("probabilities")[0]);
  CHECK(p[0] + p[1] == doctest::Approx(1.0));

  // The stable --json form: exactly four keys, raw outputs, patch tokens CLS first.
  REQUIRE(test::run_tool("focuspatch-embed", "--weights " + req.output + " --image " + image.string() + " --image " + image.string() +
                                                 " --text 'a photo of a scratched metal nut' --text flawless --json --out " +
                                                 (tmp / "compact.json").string(),
                         tmp / "log")
              .status == 0);
  const json::Value compact = json::parse(read_all(tmp / "compact.json"), "compact.json");
  REQUIRE(compact.size() == 5);
  CHECK(compact.at("device").as_string().rfind("cpu f32 ", 0) == 0);
  CHECK(compact.at("image_embeddings").size() == 2);
  // A batch of two may round differently from a batch of one in the last bits.
  auto close = [](const std::vector<double>& a, const std::vector<double>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t k = 0; k < a.size(); ++k)
      if (std::fabs(a[k] - b[k]) > 1e-5 * (1 + std::fabs(b[k]))) return false;
    return true;
  };
  CHECK(close(numbers(compact.at("image_embeddings")[1]), got));
  REQUIRE(compact.at("patch_tokens").size() == 2);
  CHECK(compact.at("patch_tokens")[0].size() == 5);  // 32 px / patch 16: CLS + 2 x 2
  CHECK(close(numbers(compact.at("patch_tokens")[0][0]), got));
  for (std::size_t i = 0; i < 2; ++i) {
    CHECK(numbers(compact.at("text_embeddings")[i]) == numbers(texts[i].at("embedding")));
    CHECK(numbers(compact.at("token_ids")[i]) == numbers(texts[i].at("token_ids")));
  }
}

TEST_CASE("focuspatch-embed explains what is wrong") {
  TempDir tmp("test_embed_cli");
  const std::string fixture = (test::fixtures_dir() / "clip/p8_r32/openai_state_dict.pt").string();
  struct Bad {
    std::string arguments, message;
  };
  const Bad cases[] = {
      {"--text hi", "no --weights"},
      {"--weights " + fixture + " --text hi", "not a .fpw file; convert it with focuspatch-convert"},
      {"--weights " + (tmp / "none.fpw").string() + " --text hi", "none.fpw: cannot open"},
      {"--weights x.fpw", "nothing to embed"},
      {"--weights x.fpw --text hi stray", "unexpected argument 'stray'"},
  };
  for (const Bad& bad : cases) {
    CAPTURE(bad.arguments);
    CHECK(run_embed(bad.arguments, tmp / "log") == 1);
    const std::string log = read_all(tmp / "log");
    INFO(log);
    CHECK(log.find(bad.message) != std::string::npos);
  }
  // A weight file without a tokenizer cannot take text, and an unreadable image is named.
  ConvertRequest req;
  req.input = fixture;
  req.output = (tmp / "p8.fpw").string();
  req.vision_heads = 4;
  req.text_heads = 2;
  req.no_tokenizer = true;
  convert_clip_checkpoint(req);
  CHECK(run_embed("--weights " + req.output + " --text hi", tmp / "log") == 1);
  CHECK(read_all(tmp / "log").find("holds no tokenizer") != std::string::npos);
  const std::string corrupt = (test::fixtures_dir() / "images" / "corrupt.png").string();
  CHECK(run_embed("--weights " + req.output + " --image " + corrupt, tmp / "log") == 1);
  CHECK(read_all(tmp / "log").find("corrupt.png") != std::string::npos);
}
