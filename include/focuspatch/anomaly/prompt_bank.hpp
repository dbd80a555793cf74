#pragma once
// The unified keyword prompt bank: one editable text file (weights/prompts/unified_keywords.txt
// documents the format) of normal states, anomaly keywords and sentence templates that serves
// every category. This header parses it, expands each keyword into its prompt sentences for an
// object word, turns the sentences' text embeddings into one embedding per keyword, and stores
// those embeddings in a .fpw weight file so a deployment can score images without a text tower.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <iterator>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "focuspatch/core/error.hpp"
#include "focuspatch/core/sha256.hpp"
#include "focuspatch/core/tensor.hpp"
#include "focuspatch/io/input_file.hpp"
#include "focuspatch/io/weight_file.hpp"
#include "focuspatch/io/weight_writer.hpp"

namespace focuspatch {

// Background keywords never enter the anomaly score; they only feed an optional patch weight.
enum class KeywordKind : std::int64_t { Normal = 0, Anomaly = 1, Background = 2 };

inline std::string_view keyword_kind_name(KeywordKind kind) {
  switch (kind) {
    case KeywordKind::Normal:
      return "normal";
    case KeywordKind::Anomaly:
      return "anomaly";
    case KeywordKind::Background:
      return "background";
  }
  return "unknown";
}

struct PromptKeyword {
  std::string name;
  KeywordKind kind = KeywordKind::Anomaly;
  std::vector<std::string> phrasings;  // a phrasing holding {object} is a whole noun phrase
  int line = 0;                        // where the bank file defines it, for messages
};

namespace prompt_detail {
inline constexpr std::string_view kState = "{state}";
inline constexpr std::string_view kObject = "{object}";
inline constexpr std::string_view kStateObject = "{state} {object}";

inline std::string trim(std::string_view s) {
  const auto is_space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; };
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return std::string(s);
}

inline std::string lower_ascii(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

inline std::size_t count_of(std::string_view haystack, std::string_view needle) {
  std::size_t n = 0;
  for (auto pos = haystack.find(needle); pos != std::string_view::npos; pos = haystack.find(needle, pos + needle.size())) ++n;
  return n;
}

// Every `{...}` must be one of the placeholders this format knows; a typo such as `{obj}` would
// otherwise reach the text encoder verbatim.
inline std::string unknown_placeholder(std::string_view text, std::span<const std::string_view> allowed) {
  for (std::size_t pos = 0; pos < text.size(); ++pos) {
    if (text[pos] != '{' && text[pos] != '}') continue;
    if (text[pos] == '}') return "}";
    const auto close = text.find('}', pos);
    if (close == std::string_view::npos) return std::string(text.substr(pos));
    const auto token = text.substr(pos, close - pos + 1);
    if (std::find(allowed.begin(), allowed.end(), token) == allowed.end()) return std::string(token);
    pos = close;
  }
  return {};
}

inline std::string replace_once(std::string_view text, std::string_view what, std::string_view with) {
  const auto pos = text.find(what);
  if (pos == std::string_view::npos) return std::string(text);
  std::string out(text.substr(0, pos));
  out += with;
  out += text.substr(pos + what.size());
  return out;
}
}  // namespace prompt_detail

// The object word for a dataset category: "metal_nut" -> "metal nut".
inline std::string object_word_for_category(std::string_view category) {
  std::string word = prompt_detail::trim(category);
  std::replace(word.begin(), word.end(), '_', ' ');
  return word;
}

// The name an object word is stored under in a weight file: "metal nut" -> "metal_nut".
inline std::string prompt_object_key(std::string_view object_word) {
  std::string key = prompt_detail::trim(object_word);
  require(!key.empty(), "prompt bank: the object word is empty");
  for (char& c : key) {
    require(c != '.' && static_cast<unsigned char>(c) >= 0x20, "prompt bank: object word '", object_word,
            "' cannot name weight file entries (no '.' or control characters)");
    if (c == ' ') c = '_';
  }
  return key;
}

struct PromptBank {
  std::string source;          // file name (or label) for messages
  std::string generic_object;  // used when the category is not known
  std::vector<std::string> templates;
  std::vector<PromptKeyword> keywords;  // in file order

  std::size_t count(KeywordKind kind) const {
    return static_cast<std::size_t>(
        std::count_if(keywords.begin(), keywords.end(), [kind](const auto& k) { return k.kind == kind; }));
  }
  const PromptKeyword* find(std::string_view name) const {
    const auto wanted = prompt_detail::lower_ascii(name);
    for (const auto& k : keywords)
      if (prompt_detail::lower_ascii(k.name) == wanted) return &k;
    return nullptr;
  }

  // Every sentence of one keyword for an object word, template-major: for each template, each
  // phrasing. The object word is inserted as given (see object_word_for_category).
  std::vector<std::string> prompts_for(const PromptKeyword& keyword, std::string_view object_word) const {
    const std::string object = prompt_detail::trim(object_word);
    require(!object.empty(), source, ": the object word for keyword '", keyword.name, "' is empty");
    require(object.find_first_of("{}") == std::string::npos, source, ": object word '", object, "' must not contain braces");
    std::vector<std::string> prompts;
    prompts.reserve(templates.size() * keyword.phrasings.size());
    for (const auto& tmpl : templates) {
      for (const auto& phrasing : keyword.phrasings) {
        if (phrasing.find(prompt_detail::kObject) != std::string::npos) {
          const auto subject = prompt_detail::replace_once(phrasing, prompt_detail::kObject, object);
          prompts.push_back(prompt_detail::replace_once(tmpl, prompt_detail::kStateObject, subject));
        } else {
          prompts.push_back(prompt_detail::replace_once(prompt_detail::replace_once(tmpl, prompt_detail::kState, phrasing),
                                                        prompt_detail::kObject, object));
        }
      }
    }
    return prompts;
  }

  // Identifies the bank's content (not its comments or layout), so stored embeddings can be
  // matched against the bank a user is running with.
  std::string fingerprint() const {
    std::string canonical = "focuspatch-prompt-bank-1\n" + generic_object + "\n";
    for (const auto& t : templates) canonical += "T " + t + "\n";
    for (const auto& k : keywords) {
      canonical += std::string(keyword_kind_name(k.kind)) + " " + k.name;
      for (const auto& p : k.phrasings) canonical += " | " + p;
      canonical += "\n";
    }
    return Sha256::of(std::as_bytes(std::span(canonical.data(), canonical.size())));
  }
};

// Parses bank text; `source` names it in messages ("unified_keywords.txt:12: ...").
inline PromptBank parse_prompt_bank(std::string_view text, std::string source) {
  using namespace prompt_detail;
  PromptBank bank;
  bank.source = std::move(source);
  const std::string& src = bank.source;
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);

  enum class Section { None, Object, Templates, Normal, Anomaly, Background };
  constexpr std::string_view kNames[] = {"", "object", "templates", "normal", "anomaly", "background"};
  int header_line[6] = {0, 0, 0, 0, 0, 0};  // first header line of each section, 0 = absent
  int entries[6] = {0, 0, 0, 0, 0, 0};
  Section section = Section::None;
  std::vector<int> template_lines;
  std::vector<int> object_lines;

  std::vector<std::string_view> lines;
  for (std::size_t start = 0; start <= text.size();) {
    const auto end = std::min(text.find('\n', start), text.size());
    lines.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  for (std::size_t index = 0; index < lines.size(); ++index) {
    const int line_no = static_cast<int>(index) + 1;
    std::string_view raw = lines[index];
    if (const auto hash = raw.find('#'); hash != std::string_view::npos) raw = raw.substr(0, hash);
    const std::string line = trim(raw);
    if (line.empty()) continue;
    const auto where = [&] { return detail::concat(src, ":", line_no, ": "); };

    if (line.front() == '[') {
      require(line.back() == ']', where(), "section header '", line, "' is missing its closing ']'");
      const std::string name = lower_ascii(trim(std::string_view(line).substr(1, line.size() - 2)));
      const auto it = std::find(std::begin(kNames) + 1, std::end(kNames), name);
      require(it != std::end(kNames), where(), "unknown section [", name,
              "]; the sections are [object], [templates], [normal], [anomaly] and [background]");
      section = static_cast<Section>(it - std::begin(kNames));
      auto& first = header_line[static_cast<int>(section)];
      if (first == 0) first = line_no;
      continue;
    }
    require(section != Section::None, where(), "'", line, "' comes before any [section] header");
    for (char c : line) require(static_cast<unsigned char>(c) >= 0x20 || c == '\t', where(), "contains a control character");
    ++entries[static_cast<int>(section)];

    if (section == Section::Object) {
      object_lines.push_back(line_no);
      require(object_lines.size() == 1, where(), "[object] holds one generic object word, but line ", object_lines.front(),
              " already gave '", bank.generic_object, "'");
      require(line.find_first_of("{}|:") == std::string::npos, where(), "the generic object word '", line,
              "' must be plain words (no braces, '|' or ':')");
      bank.generic_object = line;
    } else if (section == Section::Templates) {
      const std::string_view allowed[] = {kState, kObject};
      const auto bad = unknown_placeholder(line, allowed);
      require(bad.empty(), where(), "template has unknown placeholder '", bad, "'; only {state} and {object} are replaced");
      require(count_of(line, kState) == 1, where(), "template '", line, "' must contain {state} exactly once");
      require(count_of(line, kObject) == 1, where(), "template '", line, "' must contain {object} exactly once");
      for (std::size_t i = 0; i < bank.templates.size(); ++i)
        require(bank.templates[i] != line, where(), "template repeats line ", template_lines[i]);
      bank.templates.push_back(line);
      template_lines.push_back(line_no);
    } else {
      PromptKeyword keyword;
      keyword.kind = section == Section::Normal    ? KeywordKind::Normal
                     : section == Section::Anomaly ? KeywordKind::Anomaly
                                                   : KeywordKind::Background;
      keyword.line = line_no;
      std::string_view body = line;
      std::string explicit_name;
      if (const auto colon = body.find(':'); colon != std::string_view::npos) {
        explicit_name = trim(body.substr(0, colon));
        require(!explicit_name.empty(), where(), "keyword name before ':' is empty");
        require(explicit_name.find_first_of("{}|") == std::string::npos, where(), "keyword name '", explicit_name,
                "' must not contain braces or '|'");
        body = body.substr(colon + 1);
        require(body.find(':') == std::string_view::npos, where(), "more than one ':' (write name: phrasing | phrasing)");
      }
      std::size_t from = 0;
      while (true) {
        const auto bar = body.find('|', from);
        const std::string phrasing = trim(body.substr(from, bar == std::string_view::npos ? std::string_view::npos : bar - from));
        require(!phrasing.empty(), where(), "empty phrasing (two '|' in a row, or one at an end)");
        const std::string_view allowed[] = {kObject};
        const auto bad = unknown_placeholder(phrasing, allowed);
        require(bad.empty(), where(), "phrasing '", phrasing, "' has placeholder '", bad,
                "'; a phrasing may only contain {object}");
        require(count_of(phrasing, kObject) <= 1, where(), "phrasing '", phrasing, "' contains {object} more than once");
        require(std::find(keyword.phrasings.begin(), keyword.phrasings.end(), phrasing) == keyword.phrasings.end(), where(),
                "phrasing '", phrasing, "' is listed twice");
        keyword.phrasings.push_back(phrasing);
        if (bar == std::string_view::npos) break;
        from = bar + 1;
      }
      if (!explicit_name.empty()) {
        keyword.name = explicit_name;
      } else {
        // "{object} with a hole" names itself "with a hole".
        keyword.name = trim(replace_once(keyword.phrasings.front(), kObject, ""));
        require(!keyword.name.empty(), where(), "a phrasing of only {object} needs an explicit name (name: phrasing)");
      }
      if (const PromptKeyword* other = bank.find(keyword.name))
        fail(where(), "keyword '", keyword.name, "' is already defined on line ", other->line,
             " (names are compared ignoring case)");
      bank.keywords.push_back(std::move(keyword));
    }
  }

  for (Section s : {Section::Object, Section::Templates, Section::Normal, Section::Anomaly, Section::Background}) {
    const int i = static_cast<int>(s);
    if (header_line[i] == 0) {
      require(s == Section::Background, src, ": section [", kNames[i], "] is missing");
      continue;
    }
    require(entries[i] > 0, src, ":", header_line[i], ": section [", kNames[i], "] has no entries",
            s == Section::Background ? " (remove the header to have no background keywords)" : "");
  }
  // A phrasing written around {object} replaces "{state} {object}", so every template needs that pair.
  for (const auto& keyword : bank.keywords) {
    for (const auto& phrasing : keyword.phrasings) {
      if (phrasing.find(kObject) == std::string::npos) continue;
      for (std::size_t t = 0; t < bank.templates.size(); ++t)
        require(bank.templates[t].find(kStateObject) != std::string::npos, src, ":", template_lines[t], ": template '",
                bank.templates[t], "' separates {state} and {object}, but phrasing '", phrasing, "' (line ", keyword.line,
                ") is written around {object} and needs them side by side as '{state} {object}'");
    }
  }
  return bank;
}

inline PromptBank load_prompt_bank(const std::filesystem::path& path) {
  // A prompt bank is a few kilobytes of text; 16 MiB is far beyond any real one, and refuses
  // /dev/zero-like inputs before they exhaust memory.
  const std::string text = read_file_bounded(path.string(), std::uint64_t{16} << 20, "prompt bank");
  return parse_prompt_bank(text, path.string());
}

// ---- keyword embeddings ----------------------------------------------------------------------

// One unit-length embedding per keyword, rows in bank order.
struct KeywordEmbeddings {
  std::string object;            // the object word the prompts were built with
  std::string bank_fingerprint;  // PromptBank::fingerprint() of the bank they came from
  std::vector<std::string> names;
  std::vector<KeywordKind> kinds;
  FloatTensor matrix;  // [K, D]

  std::size_t size() const { return names.size(); }
  std::int64_t dim() const { return matrix.shape().size() == 2 ? matrix.dim(1) : 0; }
  bool is_anomaly(std::size_t k) const { return kinds.at(k) == KeywordKind::Anomaly; }
  std::size_t count(KeywordKind kind) const { return static_cast<std::size_t>(std::count(kinds.begin(), kinds.end(), kind)); }

  // Checks the parts agree and every row is a unit vector; `what` names the source in messages.
  void validate(std::string_view what) const {
    require(matrix.shape().size() == 2 && matrix.dim(1) > 0, what, ": keyword embeddings must be a [K, D] matrix, got ",
            shape_string(matrix.shape()));
    require(!names.empty(), what, ": no keywords");
    require(names.size() == kinds.size() && static_cast<std::int64_t>(names.size()) == matrix.dim(0), what, ": ", names.size(),
            " keyword names, ", kinds.size(), " kinds and ", matrix.dim(0), " embedding rows do not match");
    for (std::size_t k = 0; k < names.size(); ++k) {
      double norm2 = 0.0;
      for (float v : matrix.row(static_cast<std::int64_t>(k))) norm2 += double(v) * double(v);
      require(std::isfinite(norm2) && std::abs(std::sqrt(norm2) - 1.0) < 1e-3, what, ": embedding of keyword '", names[k],
              "' is not unit length (norm ", std::sqrt(norm2), ")");
      for (std::size_t j = 0; j < k; ++j)
        require(prompt_detail::lower_ascii(names[j]) != prompt_detail::lower_ascii(names[k]), what, ": keyword '", names[k],
                "' appears twice");
    }
  }
};

// Encodes a batch of sentences to raw (unnormalized) text embeddings [N, D], e.g.
//   [&model](std::span<const std::string> s) { return model.encode_texts(s); }
using TextEncoder = std::function<FloatTensor(std::span<const std::string>)>;

namespace prompt_detail {
// Adds the unit-length version of `row` to `sum`; normalizing first gives every prompt equal say
// regardless of the raw embedding norms the text tower happens to produce.
inline void accumulate_unit(std::span<const float> row, std::vector<double>& sum, std::string_view prompt,
                            std::string_view source) {
  double norm2 = 0.0;
  for (float v : row) norm2 += double(v) * double(v);
  require(std::isfinite(norm2) && norm2 > 0.0, source, ": the text encoder returned a ", norm2 > 0.0 ? "non-finite" : "zero",
          " embedding for prompt '", prompt, "'");
  const double inv = 1.0 / std::sqrt(norm2);
  for (std::size_t d = 0; d < row.size(); ++d) sum[d] += double(row[d]) * inv;
}
}  // namespace prompt_detail

// Per keyword: L2-normalize each prompt embedding, average over the keyword's prompts (all
// templates x phrasings), L2-normalize the mean. Prompts are encoded batch_size at a time.
inline KeywordEmbeddings compute_keyword_embeddings(const PromptBank& bank, std::string_view object_word,
                                                    const TextEncoder& encode, std::size_t batch_size = 64) {
  require(static_cast<bool>(encode), bank.source, ": no text encoder given");
  require(batch_size > 0, bank.source, ": batch size must be positive");
  require(!bank.keywords.empty() && !bank.templates.empty(), bank.source, ": the prompt bank has no keywords or no templates");

  std::vector<std::string> prompts;
  std::vector<std::size_t> owner;  // keyword index of each prompt
  for (std::size_t k = 0; k < bank.keywords.size(); ++k) {
    for (auto& p : bank.prompts_for(bank.keywords[k], object_word)) {
      prompts.push_back(std::move(p));
      owner.push_back(k);
    }
  }

  std::int64_t dim = 0;
  std::vector<std::vector<double>> sums(bank.keywords.size());
  std::vector<std::size_t> counts(bank.keywords.size(), 0);
  for (std::size_t begin = 0; begin < prompts.size(); begin += batch_size) {
    const std::size_t n = std::min(batch_size, prompts.size() - begin);
    FloatTensor out;
    try {
      out = encode(std::span<const std::string>(prompts.data() + begin, n));
    } catch (const Error& e) {  // e.g. a prompt longer than the context: say which bank it came from
      fail(bank.source, ": ", e.what());
    }
    require(out.shape().size() == 2 && out.dim(0) == static_cast<std::int64_t>(n) && out.dim(1) > 0, bank.source,
            ": the text encoder returned shape ", shape_string(out.shape()), " for ", n, " prompts; expected [", n, ", D]");
    if (dim == 0) dim = out.dim(1);
    require(out.dim(1) == dim, bank.source, ": the text encoder returned width ", out.dim(1), " after ", dim);
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t k = owner[begin + i];
      if (sums[k].empty()) sums[k].assign(static_cast<std::size_t>(dim), 0.0);
      prompt_detail::accumulate_unit(out.row(static_cast<std::int64_t>(i)), sums[k], prompts[begin + i], bank.source);
      ++counts[k];
    }
  }

  KeywordEmbeddings result;
  result.object = prompt_detail::trim(object_word);
  result.bank_fingerprint = bank.fingerprint();
  result.matrix = FloatTensor({static_cast<std::int64_t>(bank.keywords.size()), dim});
  for (std::size_t k = 0; k < bank.keywords.size(); ++k) {
    const auto& keyword = bank.keywords[k];
    result.names.push_back(keyword.name);
    result.kinds.push_back(keyword.kind);
    double norm2 = 0.0;
    for (double& v : sums[k]) {
      v /= static_cast<double>(counts[k]);
      norm2 += v * v;
    }
    require(norm2 > 1e-24, bank.source, ":", keyword.line, ": the prompts of keyword '", keyword.name,
            "' average to a zero vector; they cancel out");
    const double inv = 1.0 / std::sqrt(norm2);
    float* row = result.matrix.data() + k * static_cast<std::size_t>(dim);
    for (std::size_t d = 0; d < sums[k].size(); ++d) row[d] = static_cast<float>(sums[k][d] * inv);
  }
  return result;
}

// ---- storage in a .fpw weight file -----------------------------------------------------------
//
// For object key O (prompt_object_key of the object word):
//   tensor   prompts.O.embeddings  [K, D]
//   metadata prompts.O.keywords    string array, K names in row order
//            prompts.O.kinds       int array, K values of KeywordKind (0 normal, 1 anomaly, 2 background)
//            prompts.O.object      string, the object word as used in the prompts
//            prompts.O.bank        string, the bank fingerprint
// The stored objects are found from the tensor names, so several calls for different objects
// need no shared index entry.

namespace prompt_detail {
inline constexpr std::string_view kPrefix = "prompts.";
inline constexpr std::string_view kEmbeddingsSuffix = ".embeddings";
inline std::string entry(std::string_view key, std::string_view field) { return detail::concat(kPrefix, key, ".", field); }
}  // namespace prompt_detail

// Adds one object's keyword embeddings to a weight file being written (the converter calls this
// once per category and once for the generic word). Adding the same object twice is an error.
inline void add_keyword_embeddings(WeightWriter& writer, const KeywordEmbeddings& embeddings, DType dtype = DType::F32) {
  embeddings.validate(detail::concat("keyword embeddings for '", embeddings.object, "'"));
  const std::string key = prompt_object_key(embeddings.object);
  std::vector<std::int64_t> kinds;
  for (KeywordKind k : embeddings.kinds) kinds.push_back(static_cast<std::int64_t>(k));
  writer.set_meta(prompt_detail::entry(key, "keywords"), fpw::MetaValue::of(embeddings.names));
  writer.set_meta(prompt_detail::entry(key, "kinds"), fpw::MetaValue::of(std::move(kinds)));
  writer.set_meta(prompt_detail::entry(key, "object"), embeddings.object);
  writer.set_meta(prompt_detail::entry(key, "bank"), embeddings.bank_fingerprint);
  writer.add_tensor(prompt_detail::entry(key, "embeddings"), dtype, embeddings.matrix);
}

// Object keys with stored keyword embeddings, in the file's tensor order.
inline std::vector<std::string> stored_prompt_objects(const WeightFile& file) {
  std::vector<std::string> keys;
  for (const auto& name : file.tensor_names()) {
    const std::string_view n = name;
    if (n.size() > prompt_detail::kPrefix.size() + prompt_detail::kEmbeddingsSuffix.size() &&
        n.starts_with(prompt_detail::kPrefix) && n.ends_with(prompt_detail::kEmbeddingsSuffix))
      keys.emplace_back(n.substr(prompt_detail::kPrefix.size(),
                                 n.size() - prompt_detail::kPrefix.size() - prompt_detail::kEmbeddingsSuffix.size()));
  }
  return keys;
}

inline bool has_keyword_embeddings(const WeightFile& file, std::string_view object_word) {
  return file.find(prompt_detail::entry(prompt_object_key(object_word), "embeddings")) != nullptr;
}

// Reads one object's keyword embeddings back; rows are renormalized because f16/bf16 storage
// leaves them only nearly unit length.
inline KeywordEmbeddings load_keyword_embeddings(const WeightFile& file, std::string_view object_word) {
  const std::string key = prompt_object_key(object_word);
  const std::string tensor_name = prompt_detail::entry(key, "embeddings");
  if (!file.find(tensor_name)) {
    std::string stored;
    for (const auto& k : stored_prompt_objects(file)) stored += (stored.empty() ? "" : ", ") + k;
    fail(file.path(), ": holds no keyword embeddings for object '", key, "' (stored: ", stored.empty() ? "none" : stored, ")");
  }
  KeywordEmbeddings e;
  e.object = file.meta_string(prompt_detail::entry(key, "object"));
  e.bank_fingerprint = file.meta_string(prompt_detail::entry(key, "bank"));
  e.names = file.meta_strings(prompt_detail::entry(key, "keywords"));
  const auto& kinds = file.meta(prompt_detail::entry(key, "kinds"));
  require(kinds.kind == fpw::MetaKind::IntArray, file.path(), ": metadata '", prompt_detail::entry(key, "kinds"),
          "' is not an int array");
  for (std::int64_t k : kinds.ints) {
    require(k >= 0 && k <= 2, file.path(), ": '", prompt_detail::entry(key, "kinds"), "' holds ", k,
            ", not a keyword kind (0 normal, 1 anomaly, 2 background)");
    e.kinds.push_back(static_cast<KeywordKind>(k));
  }
  e.matrix = FloatTensor::from_view(file.tensor(tensor_name));
  const std::string what = detail::concat(file.path(), ": '", tensor_name, "'");
  require(e.matrix.shape().size() == 2 && e.matrix.dim(1) > 0, what, " has shape ", shape_string(e.matrix.shape()),
          ", expected [K, D]");
  require(static_cast<std::int64_t>(e.names.size()) == e.matrix.dim(0) && e.names.size() == e.kinds.size(), what, " has ",
          e.matrix.dim(0), " rows but the metadata lists ", e.names.size(), " keywords and ", e.kinds.size(), " kinds");
  for (std::int64_t k = 0; k < e.matrix.dim(0); ++k) {
    float* row = e.matrix.data() + k * e.matrix.dim(1);
    double norm2 = 0.0;
    for (std::int64_t d = 0; d < e.matrix.dim(1); ++d) norm2 += double(row[d]) * double(row[d]);
    require(std::isfinite(norm2) && std::abs(std::sqrt(norm2) - 1.0) < 0.02, what, " row ", k, " (keyword '",
            e.names[static_cast<std::size_t>(k)], "') is not a unit vector (norm ", std::sqrt(norm2), "); the file is corrupt");
    const double inv = 1.0 / std::sqrt(norm2);
    for (std::int64_t d = 0; d < e.matrix.dim(1); ++d) row[d] = static_cast<float>(row[d] * inv);
  }
  e.validate(what);
  return e;
}

}  // namespace focuspatch
