// Learned prompts and prompt data in the converter. The layout SOT, context, suffix tokens, EOT is
// checked against the independent PyTorch reference (tests/fixtures/clip/*/reference.safetensors,
// whose prompt rows are exactly that layout); imported context vectors against the formula that
// tests/reference/gen_learned_prompt_fixture.py wrote them with.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "focuspatch/anomaly/learned_prompts.hpp"
#include "focuspatch/convert/convert_checkpoint.hpp"
#include "focuspatch/io/json.hpp"
#include "focuspatch/model/clip_model.hpp"
#include "test_paths.hpp"

using namespace focuspatch;
namespace fs = std::filesystem;

namespace {

const fs::path kClip = test::fixtures_dir() / "clip";
const fs::path kLearned = test::fixtures_dir() / "learned_prompts";
const fs::path kBank = test::fixtures_dir() / ".." / ".." / "weights" / "prompts" / "unified_keywords.txt";
const std::string kP8 = (kClip / "p8_r32/openai_state_dict.pt").string() + " --vision-heads 4 --text-heads 2 --no-tokenizer";

class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("focuspatch_test_learned_prompts_" + std::to_string(::getpid()))) {
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  fs::path operator/(const std::string& name) const { return path_ / name; }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

struct Run {
  int status;
  std::string output;  // stdout and stderr together
};

Run run_convert(const std::string& arguments, const fs::path& log) {
  const std::string command = (fs::path(FOCUSPATCH_TOOLS_DIR) / "focuspatch-convert").string() + " " + arguments + " > " +
                              log.string() + " 2>&1";
  const int raw = std::system(command.c_str());
  std::ifstream f(log);
  std::stringstream s;
  s << f.rdbuf();
  return {WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, s.str()};
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

json::Value manifest_of(const std::string& name) {
  MappedFile m((kClip / name / "manifest.json").string());
  return json::parse(std::string_view(reinterpret_cast<const char*>(m.bytes().data()), m.size()), m.path());
}

// Converts a fixture case's first checkpoint (no tokenizer unless a vocabulary is given).
void convert_case(const std::string& name, const fs::path& out, const std::string& vocab = {}) {
  const json::Value manifest = manifest_of(name);
  const json::Value& file = manifest.at("files")[0];
  const fs::path path = kClip / name / file.at("path").as_string();
  ConvertRequest req;
  const bool hf = file.at("naming").as_string() == "hf";
  req.input = hf ? path.parent_path().string() : path.string();
  req.output = out.string();
  if (!hf) {
    req.vision_heads = static_cast<int>(manifest.at("vision_heads").as_int64());
    req.text_heads = static_cast<int>(manifest.at("text_heads").as_int64());
    req.activation = parse_activation(manifest.at("activation").as_string(), "manifest");
  }
  req.no_tokenizer = vocab.empty();
  req.vocab = vocab;
  convert_clip_checkpoint(req);
}

// The value gen_learned_prompt_fixture.py gives context element (p, t, d) for a seed.
float formula(int seed, std::int64_t p, std::int64_t t, std::int64_t d) {
  return static_cast<float>(static_cast<double>((13 * seed + 31 * p + 7 * t + 3 * d) % 17 - 8) / 32.0);
}

void check_formula(const FloatTensor& ctx, int seed, const Shape& shape) {
  REQUIRE(shape_string(ctx.shape()) == shape_string(shape));
  std::size_t wrong = 0;
  for (std::int64_t p = 0; p < shape[0]; ++p)
    for (std::int64_t t = 0; t < shape[1]; ++t)
      for (std::int64_t d = 0; d < shape[2]; ++d)
        wrong += ctx.data()[(p * shape[1] + t) * shape[2] + d] != formula(seed, p, t, d);
  CHECK(wrong == 0);
}

FloatTensor formula_tensor(int seed, const Shape& shape) {
  FloatTensor t(shape);
  for (std::int64_t p = 0; p < shape[0]; ++p)
    for (std::int64_t k = 0; k < shape[1]; ++k)
      for (std::int64_t d = 0; d < shape[2]; ++d) t.data()[(p * shape[1] + k) * shape[2] + d] = formula(seed, p, k, d);
  return t;
}

std::vector<double> unit(std::span<const float> v) {
  double n2 = 0;
  for (float x : v) n2 += double(x) * x;
  std::vector<double> out;
  for (float x : v) out.push_back(x / std::sqrt(n2));
  return out;
}

double cosine(std::span<const float> a, const std::vector<double>& b) {
  const auto ua = unit(a);
  double dot = 0, nb = 0;
  for (std::size_t i = 0; i < b.size(); ++i) dot += ua[i] * b[i], nb += b[i] * b[i];
  return dot / std::sqrt(nb);
}

double max_diff(std::span<const float> a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// Rows [first, first + count) of one prompt row of reference.safetensors' prompt_embeddings.
FloatTensor slice_rows(const FloatTensor& prompts, std::int64_t row, std::int64_t first, std::int64_t count) {
  const std::int64_t c = prompts.dim(1), w = prompts.dim(2);
  FloatTensor out({1, count, w});
  std::copy_n(prompts.data() + (row * c + first) * w, count * w, out.data());
  return out;
}

// The vocabulary row equal to a token embedding of the reference prompts (they are copies of
// rows of the model's table); -1 when none is.
std::int32_t token_of(const FloatTensor& table, const float* embedding) {
  const std::int64_t w = table.dim(1);
  for (std::int64_t id = 0; id < table.dim(0); ++id)
    if (std::equal(embedding, embedding + w, table.data() + id * w)) return static_cast<std::int32_t>(id);
  return -1;
}

bool same_model_tensors(const WeightFile& a, const WeightFile& b) {
  std::vector<std::string> names;
  for (const auto& n : a.tensor_names())
    if (!n.starts_with("prompts.")) names.push_back(n);
  if (names.size() != b.tensor_names().size()) return false;
  for (const auto& n : names) {
    const TensorView* tb = b.find(n);
    const TensorView& ta = a.tensor(n);
    if (!tb || ta.dtype != tb->dtype || ta.shape != tb->shape || std::memcmp(ta.data, tb->data, ta.nbytes()) != 0) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("learned context through the text tower reproduces the PyTorch reference prompts") {
  TempDir tmp;
  // gen_clip_fixtures.py: row 0 holds 4 learned vectors at positions 1..4 and its EOT at 9, row 1
  // holds 8 at 1..8 and its EOT at the last position; the positions between are token ids.
  const std::int64_t n_ctx[2] = {4, 8};
  for (const std::string name : {"p8_r32", "p4_r28", "p14_r42_hf", "fullvocab_tiny"}) {
    CAPTURE(name);
    const fs::path out = tmp / (name + ".fpw");
    convert_case(name, out);
    ClipModel<> model(out.string());
    const TensorArchive ref = open_checkpoint((kClip / name / "reference.safetensors").string());
    const FloatTensor prompts = ref.load_float("input.prompt_embeddings");
    const std::vector<std::int64_t> eot = ref.load_int64("input.prompt_eot");
    const FloatTensor expected = ref.load_float("out.prompt_text_embeddings");
    const FloatTensor table = FloatTensor::from_view(model.weights().tensor("t.token_embed"));
    const std::int64_t c = prompts.dim(1), w = prompts.dim(2);
    const auto vocab = static_cast<std::int32_t>(table.dim(0));

    LearnedPrompts learned;
    learned.source = name;
    std::vector<std::vector<std::int32_t>> suffixes;
    for (std::int64_t row = 0; row < 2; ++row) {
      // The reference's start and end tokens are CLIP's (vocabulary size - 2 and - 1), as ours.
      CHECK(token_of(table, prompts.data() + row * c * w) == vocab - 2);
      CHECK(token_of(table, prompts.data() + (row * c + eot[row]) * w) == vocab - 1);
      std::vector<std::int32_t> ids;
      for (std::int64_t pos = 1 + n_ctx[row]; pos < eot[row]; ++pos) {
        ids.push_back(token_of(table, prompts.data() + (row * c + pos) * w));
        REQUIRE(ids.back() >= 0);
      }
      suffixes.push_back(ids);
      LearnedState state;
      state.name = row == 0 ? "normal" : "anomaly";
      state.kind = row == 0 ? KeywordKind::Normal : KeywordKind::Anomaly;
      state.context = slice_rows(prompts, row, 1, n_ctx[row]);
      learned.states.push_back(state);
    }
    const KeywordEmbeddings got = learned_state_embeddings(model, learned, suffixes, "fixture");
    REQUIRE(got.size() == 2);
    CHECK(got.names == std::vector<std::string>{"learned normal", "learned anomaly"});
    CHECK(got.kinds == std::vector<KeywordKind>{KeywordKind::Normal, KeywordKind::Anomaly});
    CHECK(got.bank_fingerprint == learned.fingerprint());
    for (std::int64_t row = 0; row < 2; ++row) {
      CAPTURE(row);
      const auto ref_unit = unit(expected.row(row));
      CHECK(cosine(got.matrix.row(row), ref_unit) >= 0.99999);
      CHECK(max_diff(got.matrix.row(row), ref_unit) <= 1e-4);
    }
  }
}

TEST_CASE("several prompts per state: unit embeddings averaged; PromptAD pairs contexts as its expand/reshape does") {
  TempDir tmp;
  const fs::path out = tmp / "p8.fpw";
  convert_case("p8_r32", out);
  ClipModel<> model(out.string());
  const std::int64_t w = model.config().text.width;
  const FloatTensor table = FloatTensor::from_view(model.weights().tensor("t.token_embed"));
  const std::int32_t sot = 510, eot = 511;  // vocabulary of 512
  const std::vector<std::int32_t> suffix = {17, 230, 9};

  // Encodes one prompt laid out by hand: SOT, the given context blocks, suffix tokens, EOT.
  auto encode_one = [&](const std::vector<const float*>& blocks, const std::vector<std::int64_t>& tokens) {
    std::int64_t length = 2 + static_cast<std::int64_t>(suffix.size());
    for (auto t : tokens) length += t;
    FloatTensor seq({1, length, w});
    float* at = seq.data();
    auto put_id = [&](std::int32_t id) { at = std::copy_n(table.data() + id * w, w, at); };
    put_id(sot);
    for (std::size_t b = 0; b < blocks.size(); ++b) at = std::copy_n(blocks[b], tokens[b] * w, at);
    for (auto id : suffix) put_id(id);
    put_id(eot);
    const std::vector<std::int64_t> eots = {length - 1};
    return unit(model.encode_token_embeddings(seq, eots).row(0));
  };
  auto mean_unit = [](const std::vector<std::vector<double>>& rows) {
    std::vector<double> sum(rows[0].size(), 0.0);
    for (const auto& r : rows)
      for (std::size_t d = 0; d < r.size(); ++d) sum[d] += r[d];
    FloatTensor t({1, static_cast<std::int64_t>(sum.size())});
    for (std::size_t d = 0; d < sum.size(); ++d) t.data()[d] = static_cast<float>(sum[d]);
    return unit(t.row(0));
  };

  LearnedPrompts learned;
  learned.source = "hand-made";
  LearnedState normal, anomaly, other;
  normal.name = "normal";
  normal.context = formula_tensor(1, {2, 3, w});
  anomaly.name = "anomaly";
  anomaly.kind = KeywordKind::Anomaly;
  anomaly.context = formula_tensor(2, {2, 1, w});
  anomaly.after = "normal";
  other.name = "hole";
  other.kind = KeywordKind::Anomaly;
  other.context = formula_tensor(3, {3, 2, w});
  learned.states = {normal, anomaly, other};
  const std::vector<std::vector<std::int32_t>> suffixes(3, suffix);
  const KeywordEmbeddings got = learned_state_embeddings(model, learned, suffixes, "thing", /*batch_size=*/2);
  CHECK(got.names == std::vector<std::string>{"learned normal", "learned anomaly", "learned hole"});

  const float* n = normal.context.data();
  const float* a = anomaly.context.data();
  const float* h = other.context.data();
  const auto normal_expected = mean_unit({encode_one({n}, {3}), encode_one({n + 3 * w}, {3})});
  // Rows r = 0..3 join normal context r mod 2 with anomaly context r mod 2: pairs (0,0) and (1,1)
  // twice each, never (0,1) or (1,0).
  const auto anomaly_expected = mean_unit({encode_one({n, a}, {3, 1}), encode_one({n + 3 * w, a + w}, {3, 1})});
  const auto all_pairs = mean_unit({encode_one({n, a}, {3, 1}), encode_one({n + 3 * w, a + w}, {3, 1}),
                                    encode_one({n, a + w}, {3, 1}), encode_one({n + 3 * w, a}, {3, 1})});
  const auto hole_expected = mean_unit({encode_one({h}, {2}), encode_one({h + 2 * w}, {2}), encode_one({h + 4 * w}, {2})});
  CHECK(max_diff(got.matrix.row(0), normal_expected) <= 1e-5);
  CHECK(max_diff(got.matrix.row(1), anomaly_expected) <= 1e-5);
  CHECK(max_diff(got.matrix.row(1), all_pairs) > 1e-3);  // the pairing is visible
  CHECK(max_diff(got.matrix.row(2), hole_expected) <= 1e-5);

  SUBCASE("bad prompt sets are refused with a reason") {
    LearnedPrompts bad = learned;
    bad.states[1].after = "missing";
    CHECK_THROWS_WITH_AS(learned_state_embeddings(model, bad, suffixes, "thing"), doctest::Contains("follows state 'missing'"),
                         Error);
    bad = learned;
    bad.states.pop_back();
    bad.states.pop_back();
    CHECK_THROWS_WITH_AS(learned_state_embeddings(model, bad, std::vector<std::vector<std::int32_t>>(1, suffix), "thing"),
                         doctest::Contains("at least one normal and one anomaly state"), Error);
    bad = learned;
    bad.states[2].context = formula_tensor(3, {1, 73, w});
    CHECK_THROWS_WITH_AS(learned_state_embeddings(model, bad, suffixes, "thing"),
                         doctest::Contains("a prompt of state 'hole' needs 78 tokens but the text tower's context is 77"), Error);
    bad = learned;
    bad.states[2].context = formula_tensor(3, {1, 2, w + 1});
    CHECK_THROWS_WITH_AS(learned_state_embeddings(model, bad, suffixes, "thing"), doctest::Contains("has width 33"), Error);
    bad = learned;
    bad.states[2].name = "Hole.";
    CHECK_THROWS_WITH_AS(learned_state_embeddings(model, bad, suffixes, "thing"), doctest::Contains("must be lower-case"), Error);
  }
  SUBCASE("prompts of another width are refused for this model") {
    LearnedPrompts wide = learned;
    for (auto& s : wide.states) s.context = formula_tensor(1, {1, 2, 24});
    CHECK_THROWS_WITH_AS(learned_state_embeddings(model, wide, suffixes, "thing"),
                         doctest::Contains("the context vectors have width 24 but the text tower of"), Error);
  }
}

TEST_CASE("suffix text is tokenized as OpenAI's tokenizer does") {
  if (!test::have_shared_vocab()) {
    MESSAGE("skipped: ", test::shared_vocab_path().string(), " is absent");
    return;
  }
  TempDir tmp;
  const fs::path out = tmp / "full.fpw";
  convert_case("fullvocab_tiny", out, test::shared_vocab_path().string());
  ClipModel<> model(out.string());
  LearnedPrompts learned;
  learned.source = "hand-made";
  LearnedState normal, anomaly;
  normal.name = "normal";
  normal.context = formula_tensor(1, {2, 2, 8});
  normal.suffix = "{object}";
  anomaly.name = "anomaly";
  anomaly.kind = KeywordKind::Anomaly;
  anomaly.context = formula_tensor(2, {1, 3, 8});
  anomaly.suffix = "scratched {object}";
  learned.states = {normal, anomaly};
  // Ids from OpenAI's tokenizer on "a photo of a scratched metal nut" (tests/reference/README.md).
  const std::vector<std::vector<std::int32_t>> ids = {{4044, 6491}, {48831, 4044, 6491}};
  const KeywordEmbeddings by_text = learned_state_embeddings(model, learned, "metal nut");
  const KeywordEmbeddings by_ids = learned_state_embeddings(model, learned, ids, "metal nut");
  CHECK(by_text.object == "metal nut");
  CHECK(std::equal(by_text.matrix.values().begin(), by_text.matrix.values().end(), by_ids.matrix.values().begin()));
  // The start and end ids come from the tokenizer here (49406, 49407), the same as the convention.
  const KeywordEmbeddings other_object = learned_state_embeddings(model, learned, "screw");
  CHECK(max_diff(other_object.matrix.row(1), unit(by_ids.matrix.row(1))) > 1e-3);
}

TEST_CASE("focuspatch-convert stores learned context vectors from a PromptAD state dict") {
  TempDir tmp;
  const fs::path out = tmp / "promptad.fpw", plain = tmp / "plain.fpw";
  const Run r =
      run_convert(kP8 + " -o " + out.string() + " --learned-prompts " + (kLearned / "promptad_like.pt").string(), tmp / "log");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(r.output.find("stored learned prompts (PromptAD)") != std::string::npos);
  CHECK(r.output.find("note: PromptAD also averages hand-written anomaly prompts") != std::string::npos);
  REQUIRE(run_convert(kP8 + " -o " + plain.string(), tmp / "log").status == 0);

  ClipModel<> model(out.string());
  REQUIRE(has_learned_prompts(model.weights()));
  CHECK_FALSE(has_learned_prompts(WeightFile(plain.string())));
  CHECK(same_model_tensors(model.weights(), WeightFile(plain.string())));  // the second write kept the weights
  model.weights().verify_data_checksum();
  const LearnedPrompts learned = load_learned_prompts(model.weights());
  CHECK(learned.source == "promptad_like.pt");
  REQUIRE(learned.states.size() == 2);
  const LearnedState& normal = learned.states[0];
  const LearnedState& anomaly = learned.states[1];
  CHECK(normal.name == "normal");
  CHECK(normal.kind == KeywordKind::Normal);
  CHECK(normal.origin == "prompt_learner.normal_ctx");
  CHECK(normal.suffix == "{object}.");
  CHECK(normal.after.empty());
  check_formula(normal.context, 1, {3, 2, 32});
  CHECK(anomaly.name == "anomaly");
  CHECK(anomaly.kind == KeywordKind::Anomaly);
  CHECK(anomaly.origin == "prompt_learner.abnormal_ctx");
  CHECK(anomaly.after == "normal");
  check_formula(anomaly.context, 2, {4, 1, 32});
  const TensorView& stored = model.weights().tensor("prompts.learned.anomaly.ctx");
  CHECK(stored.dtype == DType::F32);
  CHECK(model.weights().meta_strings("prompts.learned.states") == std::vector<std::string>{"normal", "anomaly"});

  // The stored prompts give embeddings without a tokenizer when the suffix ids are supplied.
  const KeywordEmbeddings e = learned_state_embeddings(model, learned, std::vector<std::vector<std::int32_t>>{{5}, {5}}, "x");
  CHECK(e.size() == 2);
}

TEST_CASE("learned prompts: AnomalyCLIP names, float16, nested dicts and named tensors") {
  TempDir tmp;
  {
    LearnedPromptImport request;
    request.expected_width = 32;
    const ImportedLearnedPrompts imported = import_learned_prompts((kLearned / "anomalyclip_like.pt").string(), request);
    CHECK(imported.convention == "AnomalyCLIP");
    REQUIRE(imported.prompts.states.size() == 2);
    check_formula(imported.prompts.states[0].context, 3, {1, 3, 32});  // [1, 1, 3, W] flattened
    check_formula(imported.prompts.states[1].context, 4, {1, 3, 32});
    CHECK(imported.prompts.states[0].suffix == "{object}.");
    CHECK(imported.prompts.states[1].suffix == "damaged {object}.");
    CHECK(imported.prompts.states[1].after.empty());
    REQUIRE(imported.notes.size() == 1);
    CHECK(imported.notes[0].find("prompt_learner.compound_prompts_text.0") != std::string::npos);
  }
  const fs::path out = tmp / "custom.fpw";
  const Run r = run_convert(kP8 + " -o " + out.string() + " --learned-prompts " + (kLearned / "custom_names.pt").string() +
                                " --learned-normal learner.good --learned-anomaly bad --learned-layout promptad" +
                                " --learned-anomaly-suffix " + quoted("broken {object}"),
                            tmp / "log");
  INFO(r.output);
  REQUIRE(r.status == 0);
  const LearnedPrompts learned = load_learned_prompts(WeightFile(out.string()));
  check_formula(learned.states[0].context, 5, {1, 2, 32});
  check_formula(learned.states[1].context, 6, {2, 2, 32});  // bfloat16 in the checkpoint
  CHECK(learned.states[1].origin == "learner.bad");          // found by its last name component
  CHECK(learned.states[1].after == "normal");
  CHECK(learned.states[1].suffix == "broken {object}");
  CHECK(learned.states[0].suffix == "{object}.");
}

TEST_CASE("learned prompt import refuses what it cannot use, naming the candidates") {
  TempDir tmp;
  const std::string out = " -o " + (tmp / "out.fpw").string();
  const std::string custom = " --learned-prompts " + (kLearned / "custom_names.pt").string();
  const std::string promptad = " --learned-prompts " + (kLearned / "promptad_like.pt").string();
  const std::string p4 = (kClip / "p4_r28/openai_jit.pt").string() + " --vision-heads 3 --text-heads 2 --no-tokenizer";
  struct Bad {
    std::string arguments;
    std::vector<std::string> messages;
  };
  const Bad cases[] = {
      {p4 + out + promptad, {"learned context 'prompt_learner.normal_ctx' has width 32 but the text tower's width is 24"}},
      {kP8 + out + custom,
       {"custom_names.pt: none of the known learned-prompt tensor pairs is present", "PromptAD: prompt_learner.normal_ctx",
        "learner.good [2, 32], learner.bad [2, 2, 32]"}},
      {kP8 + out + custom + " --learned-normal nope --learned-anomaly learner.bad",
       {"no tensor 'nope' for the learned normal context", "learner.good [2, 32]"}},
      {kP8 + out + custom + " --learned-normal learner.good", {"name both the normal and the anomaly context tensor"}},
      {kP8 + out + custom + " --learned-normal head.weight --learned-anomaly learner.bad", {"'head.weight' has width 5"}},
      {kP8 + out + " --learned-normal learner.good", {"--learned-normal needs --learned-prompts"}},
      {kP8 + out + promptad + " --learned-layout nested", {"'nested' is not separate or promptad"}},
      {kP8 + out + " --categories metal_nut", {"--categories needs --prompts"}},
      {kP8 + out + " --prompts " + kBank.string(), {"needs the tokenizer"}},
  };
  for (const Bad& bad : cases) {
    CAPTURE(bad.arguments);
    const Run r = run_convert(bad.arguments, tmp / "log");
    INFO(r.output);
    CHECK(r.status == 1);
    CHECK(r.output.find("focuspatch-convert: ") == 0);
    for (const auto& m : bad.messages) CHECK(r.output.find(m) != std::string::npos);
  }
  // Nothing is left behind by a failed conversion.
  for (const auto& entry : fs::directory_iterator(tmp.path())) CHECK(entry.path().filename() == "log");

  const fs::path plain = tmp / "plain.fpw";
  REQUIRE(run_convert(kP8 + " -o " + plain.string(), tmp / "log").status == 0);
  CHECK_THROWS_WITH_AS(load_learned_prompts(WeightFile(plain.string())), doctest::Contains("holds no learned prompts"), Error);
}

TEST_CASE("focuspatch-convert --prompts stores the bank's keyword embeddings for each category") {
  if (!test::have_shared_vocab()) {
    MESSAGE("skipped: ", test::shared_vocab_path().string(), " is absent");
    return;
  }
  TempDir tmp;
  const fs::path out = tmp / "full.fpw", plain = tmp / "plain.fpw";
  const std::string model = (kClip / "fullvocab_tiny/openai_state_dict_f16.pt").string() +
                            " --vision-heads 2 --text-heads 2 --vocab " + test::shared_vocab_path().string();
  const Run r =
      run_convert(model + " -o " + out.string() + " --prompts " + kBank.string() + " --categories metal_nut", tmp / "log");
  INFO(r.output);
  REQUIRE(r.status == 0);
  CHECK(r.output.find("for: 'metal nut' 'object'") != std::string::npos);
  REQUIRE(run_convert(model + " -o " + plain.string(), tmp / "log").status == 0);

  ClipModel<> loaded(out.string());
  CHECK(same_model_tensors(loaded.weights(), WeightFile(plain.string())));
  CHECK(stored_prompt_objects(loaded.weights()) == std::vector<std::string>{"metal_nut", "object"});
  CHECK(has_keyword_embeddings(loaded.weights(), "metal nut"));
  CHECK_FALSE(has_keyword_embeddings(loaded.weights(), "screw"));
  CHECK_FALSE(has_learned_prompts(loaded.weights()));
  const PromptBank bank = load_prompt_bank(kBank);
  const TextEncoder encode = [&loaded](std::span<const std::string> texts) { return loaded.encode_texts(texts); };
  for (const std::string object : {"metal nut", "object"}) {
    CAPTURE(object);
    const KeywordEmbeddings stored = load_keyword_embeddings(loaded.weights(), object);
    const KeywordEmbeddings fresh = compute_keyword_embeddings(bank, object, encode);
    CHECK(stored.object == object);
    CHECK(stored.bank_fingerprint == bank.fingerprint());
    CHECK(stored.names == fresh.names);
    CHECK(stored.kinds == fresh.kinds);
    REQUIRE(stored.matrix.shape() == fresh.matrix.shape());
    double diff = 0;
    for (std::int64_t i = 0; i < fresh.matrix.numel(); ++i)
      diff = std::max(diff, double(std::fabs(stored.matrix.data()[i] - fresh.matrix.data()[i])));
    CHECK(diff <= 1e-6);
  }

  SUBCASE("a broken bank fails before anything is written") {
    std::ofstream(tmp / "bad.txt")
        << "[object]\nthing\n[templates]\na {state} {object}\n[normal]\ngood\n[anomaly]\nbad\n[colours]\nred\n";
    const fs::path failed = tmp / "failed.fpw";
    const Run bad = run_convert(model + " -o " + failed.string() + " --prompts " + (tmp / "bad.txt").string(), tmp / "log");
    INFO(bad.output);
    CHECK(bad.status == 1);
    CHECK(bad.output.find("bad.txt:9: unknown section [colours]") != std::string::npos);
    CHECK_FALSE(fs::exists(failed));
  }
}
