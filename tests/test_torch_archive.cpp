#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "focuspatch/core/half.hpp"
#include "focuspatch/io/checkpoint.hpp"
#include "focuspatch/io/json.hpp"
#include "focuspatch/io/torch_archive.hpp"
#include "test_paths.hpp"

using namespace focuspatch;

namespace {
using test::file_bytes;
std::string fixture(const std::string& name) { return test::reader_fixture(name); }

std::vector<float> values(const TensorArchive& a, const std::string& name) {
  const FloatTensor t = a.load_float(name);
  return {t.values().begin(), t.values().end()};
}

bool inside(std::span<const std::byte> part, std::span<const std::byte> whole) {
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

// The torch_state.pt checks, shared by the stored and the DEFLATE-compressed copy.
void check_torch_state(const TensorArchive& a) {
  CHECK(a.format() == "torch.save");
  CHECK(a.names() == std::vector<std::string>{"w_f32", "w_f16", "w_bf16", "w_f64", "ids_i64", "mask_bool", "w_t",
                                              "shared_a", "shared_b", "shared_c", "param", "scalar", "empty"});
  const auto& f32 = a.get("w_f32");
  CHECK(f32.dtype == DType::F32);
  CHECK(f32.shape == Shape{3, 4});
  CHECK(f32.strides == std::vector<std::int64_t>{4, 1});
  CHECK(f32.is_contiguous());
  auto v = values(a, "w_f32");
  for (std::size_t i = 0; i < v.size(); ++i) CHECK(v[i] == 0.5f * static_cast<float>(i));

  CHECK(a.get("w_f16").dtype == DType::F16);
  v = values(a, "w_f16");
  REQUIRE(v.size() == 10);
  for (std::size_t i = 0; i < v.size(); ++i) CHECK(v[i] == 0.25f * static_cast<float>(i) - 1.0f);

  CHECK(a.get("w_bf16").dtype == DType::BF16);
  CHECK(a.get("w_bf16").shape == Shape{2, 3});
  v = values(a, "w_bf16");
  for (std::size_t i = 0; i < v.size(); ++i) CHECK(v[i] == -0.5f * static_cast<float>(i));

  CHECK(a.get("w_f64").dtype == DType::F64);
  v = values(a, "w_f64");
  REQUIRE(v.size() == 5);
  for (std::size_t i = 0; i < v.size(); ++i) CHECK(v[i] == static_cast<float>(i) / 8.0f);

  CHECK(a.get("ids_i64").dtype == DType::I64);
  CHECK_THROWS_WITH_AS(a.load_float("ids_i64"), doctest::Contains("tensor 'ids_i64' has dtype i64, expected a floating-point weight"), Error);
  CHECK(a.load_int64("ids_i64") == std::vector<std::int64_t>{-3, -2, -1, 0, 1, 2, 3});
  CHECK(a.get("mask_bool").dtype == DType::Bool);
  CHECK(a.load_int64("mask_bool") == std::vector<std::int64_t>{1, 0, 1});
  CHECK_THROWS_AS(a.load_int64("w_f32"), Error);

  // A transposed view: shape [3, 2] with strides [1, 3] over the [2, 3] storage (i + 1).
  const auto& t = a.get("w_t");
  CHECK(t.shape == Shape{3, 2});
  CHECK(t.strides == std::vector<std::int64_t>{1, 3});
  CHECK_FALSE(t.is_contiguous());
  CHECK_THROWS_AS(t.contiguous_bytes(), Error);
  CHECK(values(a, "w_t") == std::vector<float>{1, 4, 2, 5, 3, 6});

  // Three views of one storage (2 * i for i < 20).
  const auto& sa = a.get("shared_a");
  const auto& sb = a.get("shared_b");
  const auto& sc = a.get("shared_c");
  CHECK(sa.storage.data() == sb.storage.data());
  CHECK(sa.storage.data() == sc.storage.data());
  CHECK(sa.storage.size() == 80);
  CHECK(sb.offset == 8);
  CHECK(sb.shape == Shape{3, 4});
  CHECK(values(a, "shared_a") == std::vector<float>{0, 2, 4, 6, 8, 10, 12, 14});
  v = values(a, "shared_b");
  for (std::size_t i = 0; i < v.size(); ++i) CHECK(v[i] == 2.0f * static_cast<float>(8 + i));
  CHECK(sc.offset == 1);
  CHECK(sc.strides == std::vector<std::int64_t>{5});
  CHECK(values(a, "shared_c") == std::vector<float>{2, 12, 22, 32});

  CHECK(values(a, "param") == std::vector<float>{0, 3, 6, 9});
  CHECK(a.get("scalar").shape.empty());
  CHECK(values(a, "scalar") == std::vector<float>{3.25f});
  CHECK(a.get("empty").shape == Shape{0, 3});
  CHECK(a.load_float("empty").numel() == 0);
  CHECK(a.find("nope") == nullptr);
  CHECK_THROWS_WITH_AS(a.get("nope"), doctest::Contains("tensor 'nope' is missing"), Error);
  CHECK_THROWS_WITH_AS(a.get("nope"), doctest::Contains(a.path().c_str()), Error);
}

// A string literal with its embedded NUL bytes.
template <std::size_t N>
std::string lit(const char (&s)[N]) {
  return std::string(s, N - 1);
}

// A minimal stored (uncompressed) zip archive, for checkpoints whose pickle a test writes by hand.
std::vector<std::byte> make_zip(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out, central;
  auto u16 = [](std::string& s, std::uint16_t v) { s.append(reinterpret_cast<const char*>(&v), 2); };
  auto u32 = [](std::string& s, std::uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); };
  for (const auto& [name, data] : entries) {
    const auto offset = static_cast<std::uint32_t>(out.size());
    const std::uint32_t crc = crc32(std::as_bytes(std::span(data.data(), data.size())));
    const auto size = static_cast<std::uint32_t>(data.size());
    u32(out, 0x04034b50), u16(out, 20), u16(out, 0), u16(out, 0), u16(out, 0), u16(out, 0);
    u32(out, crc), u32(out, size), u32(out, size), u16(out, static_cast<std::uint16_t>(name.size())), u16(out, 0);
    out += name + data;
    u32(central, 0x02014b50), u16(central, 20), u16(central, 20), u16(central, 0), u16(central, 0), u16(central, 0);
    u16(central, 0), u32(central, crc), u32(central, size), u32(central, size);
    u16(central, static_cast<std::uint16_t>(name.size())), u16(central, 0), u16(central, 0), u16(central, 0), u16(central, 0);
    u32(central, 0), u32(central, offset);
    central += name;
  }
  const auto cd_offset = static_cast<std::uint32_t>(out.size());
  out += central;
  u32(out, 0x06054b50), u16(out, 0), u16(out, 0), u16(out, static_cast<std::uint16_t>(entries.size()));
  u16(out, static_cast<std::uint16_t>(entries.size())), u32(out, static_cast<std::uint32_t>(central.size())), u32(out, cd_offset);
  u16(out, 0);
  std::vector<std::byte> bytes(out.size());
  std::memcpy(bytes.data(), out.data(), out.size());
  return bytes;
}

// Every tensor's values, for comparing a mutated archive with the original.
std::map<std::string, std::vector<double>> snapshot(const TensorArchive& a) {
  std::map<std::string, std::vector<double>> out;
  for (const auto& t : a.tensors()) {
    std::vector<double> v;
    if (t.is_floating()) {
      const FloatTensor f = to_float_tensor(t, a.path());
      for (float x : f.values()) v.push_back(x);
    } else {
      for (auto x : to_int64_values(t, a.path())) v.push_back(static_cast<double>(x));
    }
    out[t.name] = std::move(v);
  }
  return out;
}
}  // namespace

TEST_CASE("torch.save of an OrderedDict: dtypes, views, shared storages, zero copy") {
  const auto a = read_torch_archive(fixture("torch_state.pt"));
  check_torch_state(a);
  // Stored entries are used in place.
  for (const auto& t : a.tensors())
    if (t.numel() > 0) CHECK(inside(t.storage, a.file_bytes()));
  CHECK(open_checkpoint(fixture("torch_state.pt")).size() == a.size());
}

TEST_CASE("the same archive with DEFLATE-compressed entries reads through owned buffers") {
  const auto a = read_torch_archive(fixture("torch_deflated.pt"));
  check_torch_state(a);
  CHECK_FALSE(inside(a.get("w_f32").storage, a.file_bytes()));
  // A moved archive keeps its buffers: views stay valid.
  TensorArchive moved = std::move(const_cast<TensorArchive&>(a));
  CHECK(values(moved, "shared_c") == std::vector<float>{2, 12, 22, 32});
}

TEST_CASE("a training checkpoint is flattened with dotted names and scalar metadata") {
  const auto a = read_torch_archive(fixture("torch_nested.pt"));
  CHECK(a.names() == std::vector<std::string>{"state_dict.module.enc.weight", "state_dict.module.enc.bias", "optimizer.state.0.exp_avg"});
  CHECK(values(a, "state_dict.module.enc.weight") == std::vector<float>{-2, -1, 0, 1, 2, 3});
  CHECK(values(a, "state_dict.module.enc.bias") == std::vector<float>{0.75f, 0.75f});
  REQUIRE(a.find_metadata("epoch") != nullptr);
  CHECK(*a.find_metadata("epoch") == "7");
  CHECK(*a.find_metadata("lr") == "0.125");
  CHECK(*a.find_metadata("name") == "tiny");
  CHECK(*a.find_metadata("optimizer.param_groups.0.lr") == "0.1");
  CHECK(*a.find_metadata("optimizer.param_groups.0.params.0") == "0");
}

TEST_CASE("a whole pickled nn.Module yields its state_dict names, persistent buffers only") {
  const auto a = read_torch_archive(fixture("torch_module.pt"));
  CHECK(a.names() == std::vector<std::string>{"kept", "0.weight", "0.bias", "1.weight", "1.bias"});
  CHECK(values(a, "0.weight") == std::vector<float>{0, 0.5f, 1, 1.5f, 2, 2.5f});
  CHECK(values(a, "0.bias") == std::vector<float>{1, -1});
  CHECK(values(a, "1.weight") == std::vector<float>{2, 2});
  CHECK(values(a, "kept") == std::vector<float>{4, 5});
}

TEST_CASE("torch 2.x forms: UntypedStorage, _rebuild_tensor_v3, _rebuild_from_type_v2, unaligned entries") {
  const auto a = read_torch_archive(fixture("torch_v3.pt"));
  CHECK(a.names() == std::vector<std::string>{"a", "b", "c"});
  CHECK(a.get("a").dtype == DType::F16);
  CHECK(a.get("a").shape == Shape{2, 3});
  CHECK(values(a, "a") == std::vector<float>{-1, -0.5f, 0, 0.5f, 1, 1.5f});
  CHECK(a.get("b").dtype == DType::F32);
  CHECK(values(a, "b") == std::vector<float>{11, 12, 13, 14});
  // 'c' reads bytes 4..11 of a's storage as bf16: the fp16 bit patterns of 0, 0.5, 1, 1.5.
  CHECK(a.get("c").dtype == DType::BF16);
  CHECK(a.get("c").storage.data() == a.get("a").storage.data());
  const auto c = values(a, "c");
  REQUIRE(c.size() == 4);
  for (std::size_t i = 0; i < 4; ++i) CHECK(c[i] == bf16_to_float(float_to_half(0.5f * static_cast<float>(i))));
}

TEST_CASE("TorchScript archives give model.state_dict() names, order, dtypes and values") {
  for (const char* kind : {"scripted", "traced"}) {
    CAPTURE(kind);
    const std::string path = fixture(std::string("torchscript_") + kind + ".pt");
    const auto expected_bytes = file_bytes(path + ".expected.json");
    const auto expected = json::parse(
        std::string_view(reinterpret_cast<const char*>(expected_bytes.data()), expected_bytes.size()), path + ".expected.json");
    const auto a = read_torch_archive(path);
    CHECK(a.format() == "torchscript");
    std::vector<std::string> names;
    for (const auto& n : expected.at("names").as_array()) names.push_back(n.as_string());
    CHECK(a.names() == names);
    CHECK(a.contains("visual.transformer.resblocks.1.attn.in_proj_weight"));
    for (const auto& name : names) {
      CAPTURE(name);
      const auto& e = expected.at("tensors").at(name);
      const auto& t = a.get(name);
      CHECK(dtype_name(t.dtype) == e.at("dtype").as_string());
      Shape shape;
      for (const auto& d : e.at("shape").as_array()) shape.push_back(d.as_int64());
      CHECK(t.shape == shape);
      const auto& want = e.at("values").as_array();
      std::vector<double> got;
      if (t.is_floating()) {
        const FloatTensor f = a.load_float(name);
        for (float x : f.values()) got.push_back(x);
      } else {
        for (auto x : a.load_int64(name)) got.push_back(static_cast<double>(x));
      }
      REQUIRE(got.size() == want.size());
      for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == want[i].as_double());
    }
    CHECK(a.get("visual.proj").dtype == DType::F16);
  }
}

TEST_CASE("TorchScript plain tensor attributes are left out unless asked for") {
  const std::string path = fixture("torchscript_scripted.pt");
  const auto plain = read_torch_archive(path);
  CHECK_FALSE(plain.contains("visual.transformer.resblocks.0.attn_mask"));
  TorchReadOptions options;
  options.include_attributes = true;
  options.verify_crc = true;
  const auto all = read_torch_archive(path, options);
  CHECK(all.size() == plain.size() + 2);
  const auto mask = all.load_float("visual.transformer.resblocks.1.attn_mask");
  REQUIRE(mask.shape() == Shape{3, 3});
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 3; ++c) {
      const float x = mask.data()[r * 3 + c];
      if (c > r) CHECK((std::isinf(x) && x < 0));
      else CHECK(x == 0.0f);
    }
}

TEST_CASE("foreign, legacy and inconsistent checkpoints are refused with a clear message") {
  CHECK_THROWS_WITH_AS(read_torch_archive(fixture("legacy.pt")), doctest::Contains("legacy PyTorch serialization"), Error);
  CHECK_THROWS_WITH_AS(read_torch_archive(fixture("legacy.pt")), doctest::Contains("re-save it with torch >= 1.6"), Error);
  CHECK_THROWS_WITH_AS(open_checkpoint(fixture("legacy.pt")), doctest::Contains("legacy PyTorch"), Error);
  CHECK_THROWS_WITH_AS(read_torch_archive(fixture("torch_bigendian.pt")), doctest::Contains("'big'-endian"), Error);
  CHECK_THROWS_WITH_AS(read_torch_archive(fixture("plain.zip")), doctest::Contains("not inside a directory"), Error);
  CHECK_THROWS_WITH_AS(read_torch_archive(fixture("zip64.zip")), doctest::Contains("not a PyTorch checkpoint"), Error);
  CHECK_THROWS_WITH_AS(read_torch_archive(fixture("tensors.safetensors")), doctest::Contains("no zip signature"), Error);
  CHECK_THROWS_WITH_AS(read_torch_archive(fixture("torch_bad_extent.pt")),
                       doctest::Contains("tensor 'big' with shape [4, 4] and offset 0 needs 16 f32 elements but its storage holds 5"),
                       Error);
  CHECK_THROWS_WITH_AS(read_torch_archive(fixture("torch_missing_storage.pt")),
                       doctest::Contains("tensor 'lost' refers to storage '7' but the archive has no entry archive/data/7"), Error);
  CHECK_THROWS_WITH_AS(read_torch_archive(fixture("torch_short_storage.pt")),
                       doctest::Contains("tensor 'short' needs 400 bytes of storage '1' but the entry has 20"), Error);
  CHECK_THROWS_WITH_AS(read_torch_archive(fixture("torch_bad_dtype.pt")), doctest::Contains("has dtype torch.complex64"), Error);
  CHECK_THROWS_WITH_AS(read_torch_archive(fixture("absent.pt")), doctest::Contains("absent.pt: cannot open"), Error);
  TorchReadOptions tight;
  tight.max_pickle_bytes = 1000;
  CHECK_THROWS_WITH_AS(read_torch_archive(fixture("torch_state.pt"), tight),
                       doctest::Contains("torch_state/data.pkl is 1126 bytes, more than any real checkpoint's"), Error);
}

TEST_CASE("strided views are checked against their storage") {
  std::vector<float> storage(6);
  for (int i = 0; i < 6; ++i) storage[static_cast<std::size_t>(i)] = static_cast<float>(i);
  StoredTensor t;
  t.name = "v";
  t.storage = std::as_bytes(std::span(storage));
  t.shape = {2, 3};
  t.strides = {3, 1};
  CHECK_NOTHROW(check_tensor_extent(t, "mem"));
  t.offset = 1;
  CHECK_THROWS_WITH_AS(check_tensor_extent(t, "mem"), doctest::Contains("mem: tensor 'v' with shape [2, 3] and offset 1 needs 7"), Error);
  t.offset = 0;
  t.strides = {3, -1};
  CHECK_THROWS_WITH_AS(check_tensor_extent(t, "mem"), doctest::Contains("negative stride"), Error);
  t.strides = {1};
  CHECK_THROWS_WITH_AS(check_tensor_extent(t, "mem"), doctest::Contains("2 dimensions but 1 strides"), Error);
  t.shape = {2, -3};
  t.strides = {3, 1};
  CHECK_THROWS_WITH_AS(check_tensor_extent(t, "mem"), doctest::Contains("negative dimension"), Error);
  t.shape = {std::int64_t{1} << 40, std::int64_t{1} << 40};
  CHECK_THROWS_WITH_AS(check_tensor_extent(t, "mem"), doctest::Contains("element count overflows"), Error);
  t.shape = {2, std::int64_t{1} << 62};
  t.strides = {std::int64_t{1} << 62, 1};
  CHECK_THROWS_AS(check_tensor_extent(t, "mem"), Error);
  // A size-1 dimension's stride is never used, whatever its value (PyTorch leaves odd ones there).
  t.shape = {1, 3};
  t.strides = {std::numeric_limits<std::int64_t>::max(), 2};
  CHECK_NOTHROW(check_tensor_extent(t, "mem"));
  CHECK(to_float_tensor(t, "mem").values()[2] == 4.0f);
  // Broadcast (stride 0) views read the same elements repeatedly.
  t.shape = {2, 3};
  t.strides = {0, 1};
  const auto b = to_float_tensor(t, "mem");
  CHECK(std::vector<float>(b.values().begin(), b.values().end()) == std::vector<float>{0, 1, 2, 0, 1, 2});
  t.offset = 7;
  t.shape = {0};
  t.strides = {1};
  CHECK_THROWS_WITH_AS(check_tensor_extent(t, "mem"), doctest::Contains("beyond its storage"), Error);
}

TEST_CASE("every truncation of a checkpoint throws Error") {
  for (const char* name : {"torch_state.pt", "torch_v3.pt", "torch_deflated.pt"}) {
    const auto original = file_bytes(fixture(name));
    REQUIRE_NOTHROW(read_torch_archive(original, name));
    for (std::size_t cut = 0; cut < original.size(); ++cut) {
      CAPTURE(name);
      CAPTURE(cut);
      CHECK_THROWS_AS(read_torch_archive(std::vector<std::byte>(original.begin(), original.begin() + static_cast<std::ptrdiff_t>(cut)), name), Error);
    }
  }
  // A TorchScript archive, at a spread of cut points.
  const auto ts = file_bytes(fixture("torchscript_traced.pt"));
  for (std::size_t cut = 0; cut < ts.size(); cut += 97) {
    CAPTURE(cut);
    CHECK_THROWS_AS(read_torch_archive(std::vector<std::byte>(ts.begin(), ts.begin() + static_cast<std::ptrdiff_t>(cut)), "ts.pt"), Error);
  }
}

TEST_CASE("bit flips either throw Error or, with CRC checks on, give back the original tensors") {
  TorchReadOptions checked;
  checked.verify_crc = true;
  for (const char* name : {"torch_state.pt", "torch_deflated.pt", "torch_v3.pt"}) {
    const auto original = file_bytes(fixture(name));
    const auto expected = snapshot(read_torch_archive(original, name, checked));
    std::size_t ok = 0, bad = 0;
    for (std::size_t i = 0; i < original.size(); ++i) {
      for (int bit = 0; bit < 8; bit += (i % 3 == 0 ? 1 : 3)) {
        auto b = original;
        b[i] ^= std::byte{static_cast<unsigned char>(1u << bit)};
        try {
          const auto got = snapshot(read_torch_archive(std::move(b), name, checked));
          ++ok;
          CAPTURE(name);
          CAPTURE(i);
          CAPTURE(bit);
          CHECK(got == expected);
        } catch (const Error&) {
          ++bad;
        }
      }
    }
    CHECK(ok > 0);
    CHECK(bad > 0);
  }
  // Unchecked reads of a TorchScript archive at sampled positions: never a crash.
  const auto ts = file_bytes(fixture("torchscript_scripted.pt"));
  for (std::size_t i = 0; i < ts.size(); i += 11) {
    auto b = ts;
    b[i] ^= std::byte{static_cast<unsigned char>(1u << (i % 8))};
    try {
      (void)snapshot(read_torch_archive(std::move(b), "ts.pt"));
    } catch (const Error&) {
    }
  }
}

TEST_CASE("hand-written pickles: shared references, cycles and a bare tensor") {
  const std::string tensor = lit("ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0"
                                 "X\x03\x00\x00\x00" "cpuK\x02tQK\x00K\x02\x85K\x01\x85\x89}tR");
  const std::string storage = lit("\x00\x00\x80\x3f\x00\x00\x00\x40");  // 1.0f, 2.0f
  auto archive = [&](const std::string& pickle_body) {
    return make_zip({{"archive/data.pkl", "\x80\x02" + pickle_body + "."}, {"archive/data/0", storage}});
  };

  // The helper itself: a plain dict of one tensor reads back.
  const auto plain = read_torch_archive(archive(lit("}X\x01\x00\x00\x00w") + tensor + "s"), "hand.pt");
  CHECK(plain.names() == std::vector<std::string>{"w"});
  CHECK(values(plain, "w") == std::vector<float>{1, 2});

  // Tied weights: one memoized tensor under two names.
  const auto tied = read_torch_archive(archive(lit("}(X\x01\x00\x00\x00" "a") + tensor + lit("q\x00X\x01\x00\x00\x00" "bh\x00u")), "tied.pt");
  CHECK(tied.names() == std::vector<std::string>{"a", "b"});
  CHECK(tied.get("a").storage.data() == tied.get("b").storage.data());

  // A list containing itself.
  CHECK_THROWS_WITH_AS(read_torch_archive(archive(lit("}X\x01\x00\x00\x00l]q\x00h\x00" "as")), "cycle.pt"),
                       doctest::Contains("cycle.pt: archive/data.pkl: objects nest deeper than"), Error);

  // Sharing at every level: 2^60 paths through 60 tuples.
  std::string dag = lit("]q\x00");
  for (int i = 1; i <= 60; ++i) {
    for (char op : {'0', 'h', static_cast<char>(i - 1), 'h', static_cast<char>(i - 1), '\x86', 'q', static_cast<char>(i)}) dag += op;
  }
  CHECK_THROWS_WITH_AS(read_torch_archive(archive(lit("}X\x01\x00\x00\x00x") + dag + "s"), "dag.pt"),
                       doctest::Contains("shares values so often"), Error);

  CHECK_THROWS_WITH_AS(read_torch_archive(archive(tensor), "bare.pt"), doctest::Contains("a single tensor without a name"), Error);
  CHECK_THROWS_WITH_AS(read_torch_archive(archive("}"), "empty.pt"), doctest::Contains("no tensors found in archive/data.pkl"), Error);
  CHECK_THROWS_WITH_AS(read_torch_archive(make_zip({{"archive/other", "x"}}), "nopkl.pt"), doctest::Contains("archive has no archive/data.pkl"), Error);
  CHECK_THROWS_WITH_AS(read_torch_archive(make_zip({{"archive/data.pkl", "\x80\x02}."}, {"archive/data.pkl", "x"}}), "dup.pt"),
                       doctest::Contains("two entries named 'archive/data.pkl'"), Error);
}
