#pragma once
// The entry points the libFuzzer targets drive, one per parser. Each takes arbitrary bytes and may
// throw focuspatch::Error (the library's answer to bad input); anything else it does (another
// exception type, a crash, a leak, undefined behaviour, a hang) is a bug. tests/test_fuzz_regressions.cpp
// feeds the crashing inputs kept under tests/fixtures/fuzz_regressions/ to these same functions.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "focuspatch/anomaly/learned_prompts.hpp"
#include "focuspatch/anomaly/prompt_bank.hpp"
#include "focuspatch/core/error.hpp"
#include "focuspatch/eval/dataset.hpp"
#include "focuspatch/io/checkpoint.hpp"
#include "focuspatch/io/image.hpp"
#include "focuspatch/io/inflate.hpp"
#include "focuspatch/io/json.hpp"
#include "focuspatch/io/preprocess.hpp"
#include "focuspatch/io/safetensors.hpp"
#include "focuspatch/io/torch_archive.hpp"
#include "focuspatch/io/weight_file.hpp"
#include "focuspatch/model/clip_model.hpp"
#include "focuspatch/text/tokenizer.hpp"

#ifndef FOCUSPATCH_SHARED_DIR
#error "FOCUSPATCH_SHARED_DIR must name the shared/ folder holding clip/bpe_simple_vocab_16e6.txt.gz"
#endif

namespace focuspatch::fuzz {

using Bytes = std::span<const std::uint8_t>;

inline std::string_view as_text(Bytes b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }
inline std::vector<std::byte> as_vector(Bytes b) {
  const auto* p = reinterpret_cast<const std::byte*>(b.data());
  return {p, p + b.size()};
}

// Keeps the optimizer from dropping reads whose only purpose is to touch memory.
inline void consume(std::uint64_t v) {
  static volatile std::uint64_t sink;
  sink = sink + v;
}

// A private scratch folder for this process, removed at exit: the file-based readers get their
// input through it.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/focuspatch-fuzz-XXXXXX";
    if (!::mkdtemp(pattern.data())) std::abort();
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
    return std::filesystem::path(pattern);
  }();
  return dir;
}

inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) std::abort();  // the harness itself failed, not the library
}

// ---- .fpw ---------------------------------------------------------------------------------------

namespace detail {
inline std::uint64_t le64(const std::uint8_t* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
}  // namespace detail

// The table after the 56-byte header is CRC-protected, so random mutations would almost never get
// past the checksum; the harness recomputes it (as a crafted file would) so the table parser is
// what gets fuzzed. The file then goes through WeightFile and everything that reads one.
inline void fpw(Bytes input) {
  std::string file(as_text(input));
  if (file.size() >= fpw::kHeaderSize) {
    const std::uint64_t data_offset = detail::le64(input.data() + 32);
    if (data_offset >= fpw::kHeaderSize && data_offset <= file.size()) {
      const std::uint32_t crc = crc32(std::as_bytes(std::span(file.data() + fpw::kHeaderSize, data_offset - fpw::kHeaderSize)));
      std::memcpy(file.data() + 48, &crc, 4);
    }
  }
  const auto path = scratch_dir() / "input.fpw";
  write_file(path, file);

  WeightFile weights(path.string());
  for (const auto& [key, value] : weights.metadata()) {
    consume(value.string_value.size() + value.ints.size() + value.floats.size() + value.strings.size());
    consume(weights.has_meta(key));
  }
  for (const std::string& name : weights.tensor_names()) {
    const TensorView& t = weights.tensor(name);
    const std::size_t n = t.nbytes();
    if (n > 0) {  // first and last byte: both must lie inside the mapping
      const auto* p = static_cast<const unsigned char*>(t.data);
      consume(p[0] + p[n - 1]);
    }
    if (dtype_size(t.dtype) > 0 && (t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16) &&
        t.numel() <= (1 << 16)) {
      std::vector<float> values(static_cast<std::size_t>(t.numel()));
      decode_to_float(t.dtype, t.data, values.size(), values.data());
    }
  }
  for (const std::string& object : stored_prompt_objects(weights)) {
    if (has_keyword_embeddings(weights, object_word_for_category(object)))
      consume(load_keyword_embeddings(weights, object_word_for_category(object)).size());
  }
  if (has_learned_prompts(weights)) consume(load_learned_prompts(weights).states.size());
  if (weights.has_meta("general.architecture")) {
    const ClipConfig config = ClipConfig::load(weights);
    consume(static_cast<std::uint64_t>(config.embed_dim));
    ClipModel<CpuBackend> model(path.string());
    consume(model.has_tokenizer());
  }
  weights.verify_data_checksum();
}

// ---- PyTorch checkpoints ------------------------------------------------------------------------

namespace detail {
// A zip archive of STORED entries with correct CRCs, laid out as torch.save writes one.
inline std::string stored_zip(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out, central;
  auto u16 = [](std::string& s, std::uint16_t v) { s.append(reinterpret_cast<const char*>(&v), 2); };
  auto u32 = [](std::string& s, std::uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); };
  for (const auto& [name, data] : entries) {
    const auto offset = static_cast<std::uint32_t>(out.size());
    const std::uint32_t crc = crc32(std::as_bytes(std::span(data.data(), data.size())));
    const auto size = static_cast<std::uint32_t>(data.size());
    u32(out, zip::kLocalHeaderSig);
    u16(out, 20); u16(out, 0); u16(out, 0); u16(out, 0); u16(out, 0);
    u32(out, crc); u32(out, size); u32(out, size);
    u16(out, static_cast<std::uint16_t>(name.size())); u16(out, 0);
    out += name;
    out += data;
    u32(central, zip::kCentralHeaderSig);
    u16(central, 20); u16(central, 20); u16(central, 0); u16(central, 0); u16(central, 0); u16(central, 0);
    u32(central, crc); u32(central, size); u32(central, size);
    u16(central, static_cast<std::uint16_t>(name.size())); u16(central, 0); u16(central, 0); u16(central, 0); u16(central, 0);
    u32(central, 0); u32(central, offset);
    central += name;
  }
  const auto cd_offset = static_cast<std::uint32_t>(out.size());
  out += central;
  u32(out, zip::kEndSig);
  u16(out, 0); u16(out, 0);
  u16(out, static_cast<std::uint16_t>(entries.size())); u16(out, static_cast<std::uint16_t>(entries.size()));
  u32(out, static_cast<std::uint32_t>(central.size())); u32(out, cd_offset);
  u16(out, 0);
  return out;
}

inline void read_every_tensor(const TensorArchive& archive) {
  for (const StoredTensor& t : archive.tensors()) {
    if (t.is_floating()) consume(static_cast<std::uint64_t>(archive.load_float(t.name).numel()));
    else consume(archive.load_int64(t.name).size());
    if (t.is_contiguous()) consume(t.contiguous_bytes().size());
  }
  for (const auto& [k, v] : archive.metadata()) consume(k.size() + v.size());
}
}  // namespace detail

// A zip file (starting "PK\3\4") is read as a whole checkpoint. Anything else is taken as the
// data.pkl pickle and wrapped in a well-formed archive with 32 storages of 1 KiB, '0'..'31', so
// the pickle machine and the tensor walker get fuzzed past the zip layer's CRC checks. Every tensor
// found is materialized, as the converter and the learned-prompt importer do.
inline void torch(Bytes input) {
  TorchReadOptions options;
  options.include_attributes = true;
  options.verify_crc = true;
  std::vector<std::byte> file;
  if (input.size() >= 4 && std::memcmp(input.data(), "PK\x03\x04", 4) == 0) {
    file = as_vector(input);
  } else {
    std::vector<std::pair<std::string, std::string>> entries = {{"archive/data.pkl", std::string(as_text(input))},
                                                                {"archive/byteorder", "little"}};
    for (int k = 0; k < 32; ++k) {
      std::string storage(1024, '\0');
      for (std::size_t i = 0; i < storage.size(); ++i) storage[i] = static_cast<char>(i * 37 + static_cast<std::size_t>(k));
      entries.emplace_back("archive/data/" + std::to_string(k), std::move(storage));
    }
    const std::string zip = detail::stored_zip(entries);
    const auto* p = reinterpret_cast<const std::byte*>(zip.data());
    file.assign(p, p + zip.size());
  }
  const TensorArchive archive = read_torch_archive(std::move(file), "fuzz.pt", options);
  detail::read_every_tensor(archive);
}

// ---- safetensors --------------------------------------------------------------------------------

inline void safetensors(Bytes input) {
  const TensorArchive archive = read_safetensors(as_vector(input), "fuzz.safetensors");
  detail::read_every_tensor(archive);
}

// ---- tokenizer ----------------------------------------------------------------------------------

inline const ClipTokenizer& openai_tokenizer() {
  static const ClipTokenizer tokenizer =
      ClipTokenizer::from_openai_file(std::string(FOCUSPATCH_SHARED_DIR) + "/clip/bpe_simple_vocab_16e6.txt.gz");
  return tokenizer;
}

inline void check_tokenizer_on(const ClipTokenizer& tok, std::string_view text) {
  const std::vector<std::int32_t> ids = tok.encode(text);
  for (std::int32_t id : ids)
    if (id < 0 || static_cast<std::size_t>(id) >= tok.vocab_size()) std::abort();  // an id outside the vocabulary
  const std::vector<std::int32_t> context = tok.tokenize(text);
  if (context.size() > static_cast<std::size_t>(ClipTokenizer::kContextLength) || context.front() != tok.sot_id() ||
      context.back() != tok.eot_id())
    std::abort();
  consume(tok.decode(ids).size());
}

// The input is encoded with OpenAI's vocabulary (arbitrary bytes, valid UTF-8 or not). When it
// holds a NUL byte, the parts before and after the first one are also read as a Hugging Face
// vocab.json and merges.txt, and that tokenizer encodes the merges text. Input starting with the
// gzip magic is also gunzipped (the vocabulary file's own format).
inline void tokenizer(Bytes input) {
  const std::string_view text = as_text(input);
  check_tokenizer_on(openai_tokenizer(), text);
  if (input.size() >= 2 && input[0] == 0x1f && input[1] == 0x8b) {
    const std::string unzipped = gunzip(std::as_bytes(input), "fuzz.gz");
    consume(unzipped.size());
  }
  const std::size_t nul = text.find('\0');
  if (nul == std::string_view::npos) return;
  const std::string_view merges = text.substr(nul + 1);
  const ClipTokenizer hf = ClipTokenizer::from_hf(text.substr(0, nul), merges, "fuzz/vocab.json", "fuzz/merges.txt");
  check_tokenizer_on(hf, merges);
  check_tokenizer_on(hf, "a photo of a damaged bottle, with a scratch");
}

// ---- images -------------------------------------------------------------------------------------

// Decoding (pixel limit low enough to keep a fuzzing process small) and CLIP preprocessing at a
// small resolution; an even-sized input is decoded without its alpha plane.
inline void image(Bytes input) {
  ImageLoadOptions options;
  options.max_pixels = 1 << 22;
  options.keep_alpha = input.size() % 2 == 1;
  const Image img = decode_image(std::as_bytes(input), "fuzz.img", options);
  check_image(img, "fuzz.img");
  // The same bytes as a ground-truth mask (16-bit values kept non-zero, alpha ignored).
  const BinaryMask mask = decode_mask(std::as_bytes(input), "fuzz.img", options);
  if (mask.width != img.width || mask.height != img.height || mask.anomalous.size() != img.pixel_count()) std::abort();
  ClipPreprocess p;
  p.resolution = 16;
  const FloatTensor t = preprocess_clip(img, p);
  for (float v : t.values())
    if (!std::isfinite(v)) std::abort();  // preprocessing an image must give finite values
}

// ---- prompt bank --------------------------------------------------------------------------------

inline void prompt_bank(Bytes input) {
  const PromptBank bank = parse_prompt_bank(as_text(input), "fuzz_prompts.txt");
  const std::string object = bank.generic_object.empty() ? std::string("bottle") : bank.generic_object;
  consume(prompt_object_key(object).size());
  for (const PromptKeyword& k : bank.keywords) {
    for (const std::string& prompt : bank.prompts_for(k, object)) consume(prompt.size());
    if (bank.find(k.name) == nullptr) std::abort();  // every keyword is found by its own name
  }
  consume(bank.fingerprint().size());
}

// ---- JSON ---------------------------------------------------------------------------------------

// Parsing, then writing: what the writer produces must parse back to text that writes identically
// (compact and indented), or the library would silently change documents it rewrites.
inline void json_document(Bytes input) {
  const json::Value v = json::parse(as_text(input), "fuzz.json");
  const std::string compact = json::dump(v);
  const std::string again = json::dump(json::parse(compact, "fuzz.json (rewritten)"));
  if (again != compact) std::abort();
  const std::string indented = json::dump(v, 2);
  if (json::dump(json::parse(indented, "fuzz.json (indented)")) != compact) std::abort();
}

// ---- dataset layouts ----------------------------------------------------------------------------

namespace detail {
// A small VisA tree and a small Real-IAD tree whose split files the fuzzer writes; the image files
// only need to exist.
inline const std::filesystem::path& dataset_roots() {
  static const std::filesystem::path root = [] {
    const auto r = scratch_dir() / "datasets";
    for (const char* f : {"visa/candle/Data/Images/Normal/000.JPG", "visa/candle/Data/Images/Normal/001.JPG",
                          "visa/candle/Data/Images/Anomaly/000.JPG", "visa/candle/Data/Masks/Anomaly/000.png",
                          "visa/capsules/Data/Images/Normal/000.JPG", "visa/capsules/Data/Images/Anomaly/000.JPG",
                          "visa/capsules/Data/Masks/Anomaly/000.png", "realiad/realiad_256/audiojack/OK/S0001/a.jpg",
                          "realiad/realiad_256/audiojack/OK/S0002/b.jpg", "realiad/realiad_256/audiojack/NG/HS/S0003/c.jpg",
                          "realiad/realiad_256/audiojack/NG/HS/S0003/c.png"})
      write_file(r / f, "x");
    write_file(r / "visa_anno/split_csv/1cls.csv",
               "object,split,label,image,mask\n"
               "candle,train,normal,candle/Data/Images/Normal/000.JPG,\n"
               "candle,test,normal,candle/Data/Images/Normal/001.JPG,\n"
               "candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png\n");
    for (const char* f : {"candle/Data/Images/Normal/000.JPG", "candle/Data/Images/Normal/001.JPG",
                          "candle/Data/Images/Anomaly/000.JPG", "candle/Data/Masks/Anomaly/000.png"})
      write_file(r / "visa_anno" / f, "x");
    return r;
  }();
  return root;
}

// Creates the relative paths listed one per line (a trailing '/' makes a folder, "name -> target"
// a symbolic link to a relative target, which may dangle or loop), skipping any that could leave
// the folder; at most 64 of them.
inline void make_tree(const std::filesystem::path& root, std::string_view listing) {
  std::size_t made = 0;
  for (std::size_t start = 0; start < listing.size() && made < 64;) {
    std::size_t end = listing.find('\n', start);
    if (end == std::string_view::npos) end = listing.size();
    const std::string_view line = listing.substr(start, end - start);
    start = end + 1;
    if (line.empty() || line.size() > 200 || line.front() == '/' || line.find('\0') != std::string_view::npos) continue;
    const std::size_t arrow = line.find(" -> ");
    const std::filesystem::path rel(line.substr(0, arrow));
    const std::filesystem::path target(arrow == std::string_view::npos ? std::string_view() : line.substr(arrow + 4));
    bool safe = !rel.empty() && !target.is_absolute();
    for (const auto& part : rel) safe = safe && part != ".." && part != ".";
    for (const auto& part : target) safe = safe && part != "..";
    if (!safe) continue;
    std::error_code ec;
    if (arrow != std::string_view::npos) {
      std::filesystem::create_directories((root / rel).parent_path(), ec);
      if (!ec) std::filesystem::create_symlink(target, root / rel, ec);
    } else if (line.back() == '/') std::filesystem::create_directories(root / rel, ec);
    else {
      std::filesystem::create_directories((root / rel).parent_path(), ec);
      if (!ec && !std::filesystem::exists(root / rel, ec)) std::ofstream(root / rel) << 'x';
    }
    ++made;
  }
}
}  // namespace detail

// The first byte picks what the rest is: 0 VisA split_csv/1cls.csv, 1 a Real-IAD category json,
// 2 VisA image_anno.csv beside a valid split, 3 a listing of files from which a folder tree is
// made and read as MVTec, VisA and the folder layout. Paths read from the split files resolve inside the scratch trees.
inline void dataset(Bytes input) {
  if (input.empty()) return;
  const auto& roots = detail::dataset_roots();
  const std::string_view body = as_text(input.subspan(1));
  switch (input[0] % 4) {
    case 0:
      write_file(roots / "visa/split_csv/1cls.csv", body);
      consume(eval::load_dataset(roots / "visa", "visa").categories.size());
      return;
    case 1:
      write_file(roots / "realiad/realiad_jsons/audiojack.json", body);
      consume(eval::load_dataset(roots / "realiad", "realiad").categories.size());
      return;
    case 2:
      write_file(roots / "visa_anno/candle/image_anno.csv", body);
      consume(eval::load_dataset(roots / "visa_anno", "visa").categories.size());
      return;
    default: {
      const auto tree = scratch_dir() / "tree";
      std::error_code ec;
      std::filesystem::remove_all(tree, ec);
      std::filesystem::create_directories(tree);
      detail::make_tree(tree, body);
      struct Cleanup {
        std::filesystem::path p;
        ~Cleanup() {
          std::error_code e;
          std::filesystem::remove_all(p, e);
        }
      } cleanup{tree};
      std::size_t found = 0;
      for (const char* layout : {"mvtec", "visa", "folder"}) {
        try {
          found += eval::load_dataset(tree, layout).categories.size();
        } catch (const Error&) {
        }
      }
      consume(found);
      return;
    }
  }
}

}  // namespace focuspatch::fuzz
