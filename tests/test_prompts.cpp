#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "focuspatch/anomaly/prompt_bank.hpp"
#include "focuspatch/io/weight_file.hpp"
#include "focuspatch/io/weight_writer.hpp"
#include "test_paths.hpp"

using namespace focuspatch;
namespace fs = std::filesystem;

namespace {

fs::path default_bank_path() { return test::fixtures_dir() / ".." / ".." / "weights" / "prompts" / "unified_keywords.txt"; }

// Two templates, one normal and one anomaly keyword; the anomaly keyword has one phrasing placed
// before the object and one written around it.
constexpr const char* kSmallBank = R"(# a small bank
[object]
thing
[templates]
a {state} {object}
the {state} {object}.   # trailing comment
[normal]
good
[anomaly]
scratch: scratched | {object} with a scratch
)";

// A text encoder that knows a fixed set of sentences and their (raw, unnormalized) embeddings,
// so an expansion bug shows up as an unknown sentence instead of a silently different average.
struct FakeEncoder {
  std::map<std::string, std::vector<float>> table;
  int calls = 0;
  std::size_t largest_batch = 0;

  FloatTensor operator()(std::span<const std::string> texts) {
    ++calls;
    largest_batch = std::max(largest_batch, texts.size());
    const auto dim = static_cast<std::int64_t>(table.begin()->second.size());
    FloatTensor out({static_cast<std::int64_t>(texts.size()), dim});
    for (std::size_t i = 0; i < texts.size(); ++i) {
      const auto it = table.find(texts[i]);
      if (it == table.end()) fail("fake encoder: unexpected sentence '", texts[i], "'");
      std::copy(it->second.begin(), it->second.end(), out.data() + i * static_cast<std::size_t>(dim));
    }
    return out;
  }
};

FakeEncoder small_bank_encoder() {
  FakeEncoder e;
  e.table = {
      {"a good metal nut", {0, 0, 5}},          {"the good metal nut.", {0, 3, 4}},
      {"a scratched metal nut", {3, 4, 0}},     {"a metal nut with a scratch", {0, 2, 0}},
      {"the scratched metal nut.", {0, 0, -7}}, {"the metal nut with a scratch.", {10, 0, 0}},
  };
  return e;
}

std::string parse_error(const std::string& text) {
  try {
    parse_prompt_bank(text, "bank.txt");
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

constexpr const char* kHead = "[object]\nthing\n[templates]\na {state} {object}\n";  // lines 1-4

}  // namespace

TEST_CASE("the default unified keyword bank parses and covers the defect vocabulary") {
  const PromptBank bank = load_prompt_bank(default_bank_path());
  CHECK(bank.generic_object == "object");
  CHECK(bank.count(KeywordKind::Normal) >= 8);
  CHECK(bank.count(KeywordKind::Anomaly) >= 20);
  CHECK(bank.templates.size() >= 6);
  CHECK(bank.templates.size() <= 10);
  for (const auto& t : bank.templates) {
    CHECK(t.find("{state}") != std::string::npos);
    CHECK(t.find("{object}") != std::string::npos);
  }
  for (const char* name : {"scratch", "crack", "hole", "dent", "stain", "contamination", "broken", "missing", "bent", "cut",
                           "color defect", "fold", "misplaced"}) {
    const PromptKeyword* k = bank.find(name);
    REQUIRE_MESSAGE(k != nullptr, name);
    CHECK(k->kind == KeywordKind::Anomaly);
  }
  for (const char* name : {"flawless", "perfect", "unblemished", "without defect"}) {
    const PromptKeyword* k = bank.find(name);
    REQUIRE_MESSAGE(k != nullptr, name);
    CHECK(k->kind == KeywordKind::Normal);
  }
  // Every sentence of every keyword names the category and has no placeholder left.
  for (const auto& k : bank.keywords) {
    const auto prompts = bank.prompts_for(k, object_word_for_category("metal_nut"));
    CHECK(prompts.size() == bank.templates.size() * k.phrasings.size());
    for (const auto& p : prompts) {
      CHECK(p.find("metal nut") != std::string::npos);
      CHECK(p.find_first_of("{}") == std::string::npos);
    }
  }
}

TEST_CASE("a keyword expands template-major into sentences for a category") {
  const PromptBank bank = parse_prompt_bank(kSmallBank, "small.txt");
  REQUIRE(bank.keywords.size() == 2);
  CHECK(bank.templates == std::vector<std::string>{"a {state} {object}", "the {state} {object}."});
  CHECK(object_word_for_category("metal_nut") == "metal nut");
  CHECK(object_word_for_category(" pipe_fryum ") == "pipe fryum");
  const PromptKeyword& scratch = bank.keywords[1];
  CHECK(scratch.name == "scratch");
  CHECK(scratch.line == 10);
  CHECK(scratch.phrasings == std::vector<std::string>{"scratched", "{object} with a scratch"});
  CHECK(bank.prompts_for(scratch, object_word_for_category("metal_nut")) ==
        std::vector<std::string>{"a scratched metal nut", "a metal nut with a scratch", "the scratched metal nut.",
                                 "the metal nut with a scratch."});
  CHECK(bank.prompts_for(bank.keywords[0], bank.generic_object) == std::vector<std::string>{"a good thing", "the good thing."});
  CHECK(prompt_object_key("metal nut") == "metal_nut");
  CHECK_THROWS_WITH_AS(prompt_object_key("v1.2"), doctest::Contains("cannot name weight file entries"), Error);

  SUBCASE("a keyword without an explicit name is named by its first phrasing, less {object}") {
    const auto b =
        parse_prompt_bank(std::string(kHead) + "[normal]\nflawless | perfect\n[anomaly]\n{object} with a hole | holed\n", "x");
    CHECK(b.keywords[0].name == "flawless");
    CHECK(b.keywords[1].name == "with a hole");
    CHECK(b.keywords[1].kind == KeywordKind::Anomaly);
  }
}

TEST_CASE("malformed banks are rejected with file:line messages") {
  const std::string head = kHead;
  const std::string tail = "[normal]\ngood\n[anomaly]\ncrack\n";
  CHECK(parse_error(head + tail) == "(no error)");
  CHECK(parse_error("good\n" + head + tail).find("bank.txt:1: 'good' comes before any [section] header") != std::string::npos);
  CHECK(parse_error(head + "[normals]\n" + tail).find("bank.txt:5: unknown section [normals]") != std::string::npos);
  CHECK(parse_error(head + "[normal\n" + tail).find("bank.txt:5: section header '[normal' is missing its closing ']'") !=
        std::string::npos);
  CHECK(parse_error("[object]\nthing\n[templates]\na photo of a {object}\n" + tail)
            .find("bank.txt:4: template 'a photo of a {object}' must contain {state} exactly once") != std::string::npos);
  CHECK(parse_error("[object]\nthing\n[templates]\na {state} photo\n" + tail)
            .find("bank.txt:4: template 'a {state} photo' must contain {object} exactly once") != std::string::npos);
  CHECK(parse_error("[object]\nthing\n[templates]\na {state} {obj}\n" + tail)
            .find("bank.txt:4: template has unknown placeholder '{obj}'") != std::string::npos);
  CHECK(parse_error(head + "a {state} {object}\n" + tail).find("bank.txt:5: template repeats line 4") != std::string::npos);
  CHECK(parse_error(head + tail + "Crack: cracked\n").find("bank.txt:9: keyword 'Crack' is already defined on line 8") !=
        std::string::npos);
  CHECK(parse_error(head + "[normal]\ncrack\n[anomaly]\ncrack\n")
            .find("bank.txt:8: keyword 'crack' is already defined on line 6") != std::string::npos);
  CHECK(parse_error(head + "[normal]\n[anomaly]\ncrack\n").find("bank.txt:5: section [normal] has no entries") !=
        std::string::npos);
  CHECK(parse_error(head + tail + "[background]\n# nothing\n").find("bank.txt:9: section [background] has no entries") !=
        std::string::npos);
  CHECK(parse_error(head + "[normal]\ngood\n").find("bank.txt: section [anomaly] is missing") != std::string::npos);
  CHECK(parse_error(head + tail + "hole: a || b\n").find("bank.txt:9: empty phrasing") != std::string::npos);
  CHECK(parse_error(head + tail + ": holed\n").find("bank.txt:9: keyword name before ':' is empty") != std::string::npos);
  CHECK(parse_error(head + tail + "hole: holed | holed\n").find("bank.txt:9: phrasing 'holed' is listed twice") !=
        std::string::npos);
  CHECK(parse_error(head + tail + "hole: {state} hole\n").find("bank.txt:9: phrasing '{state} hole' has placeholder '{state}'") !=
        std::string::npos);
  CHECK(parse_error("[object]\nthing\nwidget\n[templates]\na {state} {object}\n" + tail)
            .find("bank.txt:3: [object] holds one generic object word, but line 2 already gave 'thing'") != std::string::npos);
  // A phrasing written around {object} needs "{state} {object}" side by side in every template.
  CHECK(parse_error("[object]\nthing\n[templates]\n{object}, {state}\n[normal]\ngood\n[anomaly]\n{object} with a hole\n")
            .find("bank.txt:4: template '{object}, {state}' separates {state} and {object}, but phrasing '{object} with a hole' "
                  "(line 8)") != std::string::npos);
  CHECK_THROWS_WITH_AS(load_prompt_bank("/nonexistent/bank.txt"), doctest::Contains("/nonexistent/bank.txt: cannot open"), Error);
}

TEST_CASE("comments, blank lines, CRLF and a BOM do not change the bank or its fingerprint") {
  const PromptBank a = parse_prompt_bank(kSmallBank, "a");
  std::string crlf = "\xEF\xBB\xBF\r\n# extra comment\r\n";
  for (char c : std::string(kSmallBank)) crlf += c == '\n' ? std::string("\r\n") : std::string(1, c);
  const PromptBank b = parse_prompt_bank(crlf, "b");
  CHECK(b.templates == a.templates);
  CHECK(b.keywords[1].phrasings == a.keywords[1].phrasings);
  CHECK(a.fingerprint() == b.fingerprint());
  CHECK(a.fingerprint().size() == 64);
  std::string edited = kSmallBank;
  edited.replace(edited.find("scratched"), 9, "scraped");
  CHECK(parse_prompt_bank(edited, "c").fingerprint() != a.fingerprint());
}

TEST_CASE("keyword embeddings: normalize each prompt, average, normalize again") {
  const PromptBank bank = parse_prompt_bank(kSmallBank, "small.txt");
  FakeEncoder encoder = small_bank_encoder();
  const KeywordEmbeddings e = compute_keyword_embeddings(bank, "metal nut", std::ref(encoder));
  CHECK(encoder.calls == 1);
  REQUIRE(e.matrix.shape() == Shape{2, 3});
  CHECK(e.names == std::vector<std::string>{"good", "scratch"});
  CHECK(e.kinds == std::vector<KeywordKind>{KeywordKind::Normal, KeywordKind::Anomaly});
  CHECK(e.object == "metal nut");
  CHECK(e.bank_fingerprint == bank.fingerprint());

  // good: (0,0,5) -> (0,0,1); (0,3,4) -> (0,.6,.8); mean (0,.3,.9), norm sqrt(.9) = .9486833
  //   -> (0, .3162278, .9486833).
  CHECK(e.matrix.data()[0] == doctest::Approx(0.0));
  CHECK(e.matrix.data()[1] == doctest::Approx(0.3162278));
  CHECK(e.matrix.data()[2] == doctest::Approx(0.9486833));
  // scratch: (3,4,0) -> (.6,.8,0); (0,2,0) -> (0,1,0); (0,0,-7) -> (0,0,-1); (10,0,0) -> (1,0,0).
  //   mean (1.6, 1.8, -1)/4 = (.4, .45, -.25); norm^2 = .16 + .2025 + .0625 = .425, norm = .6519202
  //   -> (.6135720, .6902685, -.3834825). (Averaging raw vectors would give (.5738, .5738, -.5841).)
  CHECK(e.matrix.data()[3] == doctest::Approx(0.6135720));
  CHECK(e.matrix.data()[4] == doctest::Approx(0.6902685));
  CHECK(e.matrix.data()[5] == doctest::Approx(-0.3834825));

  SUBCASE("batching does not change the result") {
    FakeEncoder batched = small_bank_encoder();
    const KeywordEmbeddings b = compute_keyword_embeddings(bank, "metal nut", std::ref(batched), 4);
    CHECK(batched.calls == 2);  // 6 sentences, 4 at a time
    CHECK(batched.largest_batch == 4);
    for (int i = 0; i < 6; ++i) CHECK(b.matrix.data()[i] == doctest::Approx(e.matrix.data()[i]).epsilon(1e-6));
  }
  SUBCASE("encoder faults are reported") {
    FakeEncoder zero = small_bank_encoder();
    zero.table["the good metal nut."] = {0, 0, 0};
    CHECK_THROWS_WITH_AS(
        compute_keyword_embeddings(bank, "metal nut", std::ref(zero)),
        doctest::Contains("small.txt: the text encoder returned a zero embedding for prompt 'the good metal nut.'"), Error);
    const TextEncoder short_batch = [](std::span<const std::string> texts) {
      return FloatTensor({static_cast<std::int64_t>(texts.size()) - 1, 3});
    };
    CHECK_THROWS_WITH_AS(compute_keyword_embeddings(bank, "metal nut", short_batch),
                         doctest::Contains("returned shape [5, 3] for 6 prompts; expected [6, D]"), Error);
    FakeEncoder cancel = small_bank_encoder();
    cancel.table["the good metal nut."] = {0, 0, -1};
    CHECK_THROWS_WITH_AS(compute_keyword_embeddings(bank, "metal nut", std::ref(cancel)),
                         doctest::Contains("small.txt:8: the prompts of keyword 'good' average to a zero vector"), Error);
  }
}

TEST_CASE("keyword embeddings round-trip through a .fpw weight file") {
  const PromptBank bank = parse_prompt_bank(kSmallBank, "small.txt");
  FakeEncoder encoder = small_bank_encoder();
  for (const auto& [k, v] : std::map<std::string, std::vector<float>>(encoder.table)) {
    auto generic = k;
    generic.replace(generic.find("metal nut"), 9, "thing");
    encoder.table[generic] = {v[1], v[0], v[2]};  // a different but known embedding for the generic word
  }
  const KeywordEmbeddings nut = compute_keyword_embeddings(bank, object_word_for_category("metal_nut"), std::ref(encoder));
  const KeywordEmbeddings thing = compute_keyword_embeddings(bank, bank.generic_object, std::ref(encoder));

  const fs::path path = fs::temp_directory_path() / "focuspatch_test_prompts.fpw";
  {
    WeightWriter w;
    w.set_meta("general.architecture", "clip");
    w.add_tensor("some.weight", DType::F32, FloatTensor({2}, {1.0f, 2.0f}));
    add_keyword_embeddings(w, nut);
    add_keyword_embeddings(w, thing, DType::F16);
    CHECK_THROWS_WITH_AS(add_keyword_embeddings(w, nut), doctest::Contains("'prompts.metal_nut.embeddings' added twice"), Error);
    w.write(path);
  }
  WeightFile f(path.string());
  CHECK(stored_prompt_objects(f) == std::vector<std::string>{"metal_nut", "thing"});
  CHECK(has_keyword_embeddings(f, "metal nut"));
  CHECK(!has_keyword_embeddings(f, "screw"));
  CHECK(f.meta_strings("prompts.metal_nut.keywords") == std::vector<std::string>{"good", "scratch"});

  const KeywordEmbeddings back = load_keyword_embeddings(f, "metal nut");
  CHECK(back.object == "metal nut");
  CHECK(back.names == nut.names);
  CHECK(back.kinds == nut.kinds);
  CHECK(back.bank_fingerprint == bank.fingerprint());
  REQUIRE(back.matrix.shape() == nut.matrix.shape());
  for (int i = 0; i < 6; ++i) CHECK(back.matrix.data()[i] == doctest::Approx(nut.matrix.data()[i]).epsilon(1e-6));

  const KeywordEmbeddings back16 = load_keyword_embeddings(f, "thing");
  CHECK(back16.object == "thing");
  // thing/scratch: the metal-nut vectors with x and y swapped, so the embedding is (.6902685, .6135720, -.3834825).
  CHECK(back16.matrix.data()[3] == doctest::Approx(0.6902685).epsilon(2e-3));
  CHECK(back16.matrix.data()[4] == doctest::Approx(0.6135720).epsilon(2e-3));
  CHECK(back16.matrix.data()[5] == doctest::Approx(-0.3834825).epsilon(2e-3));
  CHECK_NOTHROW(back16.validate("renormalized"));

  CHECK_THROWS_WITH_AS(load_keyword_embeddings(f, "screw"),
                       doctest::Contains("holds no keyword embeddings for object 'screw' (stored: metal_nut, thing)"), Error);
  fs::remove(path);
}

TEST_CASE("stored keyword embeddings that disagree with their metadata are rejected") {
  const fs::path path = fs::temp_directory_path() / "focuspatch_test_prompts_bad.fpw";
  auto write = [&](std::vector<std::string> names, std::vector<std::int64_t> kinds, FloatTensor m) {
    WeightWriter w;
    w.set_meta("prompts.x.keywords", fpw::MetaValue::of(std::move(names)));
    w.set_meta("prompts.x.kinds", fpw::MetaValue::of(std::move(kinds)));
    w.set_meta("prompts.x.object", "x");
    w.set_meta("prompts.x.bank", "0");
    w.add_tensor("prompts.x.embeddings", DType::F32, std::move(m));
    w.write(path);
  };
  write({"good", "crack", "hole"}, {0, 1, 1}, FloatTensor({2, 2}, {1, 0, 0, 1}));
  CHECK_THROWS_WITH_AS(load_keyword_embeddings(WeightFile(path.string()), "x"),
                       doctest::Contains("has 2 rows but the metadata lists 3 keywords and 3 kinds"), Error);
  write({"good", "crack"}, {0, 7}, FloatTensor({2, 2}, {1, 0, 0, 1}));
  CHECK_THROWS_WITH_AS(load_keyword_embeddings(WeightFile(path.string()), "x"), doctest::Contains("holds 7, not a keyword kind"),
                       Error);
  write({"good", "crack"}, {0, 1}, FloatTensor({2, 2}, {1, 0, 0, 3}));
  CHECK_THROWS_WITH_AS(load_keyword_embeddings(WeightFile(path.string()), "x"),
                       doctest::Contains("row 1 (keyword 'crack') is not a unit vector (norm 3)"), Error);
  fs::remove(path);
}
