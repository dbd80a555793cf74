#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>

#include "focuspatch/io/json.hpp"

using namespace focuspatch;

namespace {
json::Value parse(std::string_view text) { return json::parse(text, "test.json"); }
}  // namespace

TEST_CASE("a Hugging Face style config parses with types, order and lookups") {
  const auto v = parse(R"({
    "architectures": ["CLIPModel"],
    "projection_dim": 512,
    "logit_scale_init_value": 2.6592,
    "text_config": {"hidden_size": 512, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05, "bos_token_id": 0},
    "vision_config": {"image_size": 224, "patch_size": 32, "dropout": 0.0, "torch_dtype": null, "use_bfloat16": false},
    "initializer_factor": 1.0
  })");
  REQUIRE(v.is_object());
  CHECK(v.size() == 6);
  CHECK(v.as_object()[0].first == "architectures");
  CHECK(v.as_object()[5].first == "initializer_factor");
  CHECK(v.at("architectures")[0].as_string() == "CLIPModel");
  CHECK(v.at("projection_dim").as_int64() == 512);
  CHECK(v.at("logit_scale_init_value").as_double() == 2.6592);
  CHECK_FALSE(v.at("logit_scale_init_value").is_integer());
  const auto& text = v.at("text_config");
  CHECK(text.at("hidden_act").as_string() == "quick_gelu");
  CHECK(text.at("layer_norm_eps").as_double() == 1e-05);
  CHECK(text.at("bos_token_id").as_int64() == 0);
  const auto& vision = v.at("vision_config");
  CHECK(vision.at("torch_dtype").is_null());
  CHECK(vision.at("use_bfloat16").as_bool() == false);
  CHECK(vision.at("dropout").as_double() == 0.0);
  // 1.0 is integral: usable where an integer is expected.
  CHECK(v.at("initializer_factor").is_integer());
  CHECK(v.at("initializer_factor").as_int64() == 1);
  CHECK(v.find("absent") == nullptr);
  CHECK_THROWS_WITH_AS(v.at("absent"), doctest::Contains("no key 'absent'"), Error);
  CHECK_THROWS_WITH_AS(v.at("projection_dim").as_string(), doctest::Contains("is a number, expected a string"), Error);
  CHECK_THROWS_WITH_AS(v.at("logit_scale_init_value").as_int64(), doctest::Contains("not an integer"), Error);
  CHECK_THROWS_AS(v.at("architectures")[1], Error);
}

TEST_CASE("numbers keep exact 64-bit integers and parse doubles to the nearest value") {
  CHECK(parse("9223372036854775807").as_int64() == std::numeric_limits<std::int64_t>::max());
  CHECK(parse("-9223372036854775808").as_int64() == std::numeric_limits<std::int64_t>::min());
  CHECK(parse("123456789012345678").as_int64() == 123456789012345678);  // not representable as a double
  const auto big = parse("9223372036854775808");                          // one past int64: a double
  CHECK_FALSE(big.is_integer());
  CHECK(big.as_double() == 9223372036854775808.0);
  CHECK(parse("-0").as_double() == 0.0);
  CHECK(std::signbit(parse("-0.0").as_double()));
  CHECK(parse("0.1").as_double() == 0.1);
  CHECK(parse("2.5E+3").as_int64() == 2500);
  CHECK(parse("1.7976931348623157e308").as_double() == std::numeric_limits<double>::max());
  CHECK(parse("4.9406564584124654e-324").as_double() == std::numeric_limits<double>::denorm_min());
  CHECK(parse("1e-400").as_double() == 0.0);  // underflow rounds to zero
  CHECK_THROWS_WITH_AS(parse("1e400"), doctest::Contains("out of range"), Error);
  for (const char* bad : {"01", "+1", "1.", ".5", "1e", "1e+", "-", "--1", "0x10", "1.5.2", "NaN", "Infinity", "-Infinity"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(parse(bad), Error);
  }
}

TEST_CASE("strings decode every escape, including surrogate pairs, to UTF-8") {
  CHECK(parse(R"("a\"b\\c\/d\b\f\n\r\t")").as_string() == "a\"b\\c/d\b\f\n\r\t");
  CHECK(parse(R"("\u00e9\u4e2d")").as_string() == "\xC3\xA9\xE4\xB8\xAD");
  CHECK(parse(R"("\uD83D\uDE00")").as_string() == "\xF0\x9F\x98\x80");  // U+1F600
  CHECK(parse(R"("\uDBFF\uDFFF")").as_string() == "\xF4\x8F\xBF\xBF");  // U+10FFFF
  CHECK(parse(R"("\u0000x")").as_string() == std::string("\0x", 2));
  CHECK(parse("\"caf\xC3\xA9 \xF0\x9F\x98\x80\"").as_string() == "caf\xC3\xA9 \xF0\x9F\x98\x80");  // raw UTF-8 kept

  CHECK_THROWS_WITH_AS(parse(R"("\uD83D")"), doctest::Contains("high surrogate not followed by a low surrogate"), Error);
  CHECK_THROWS_WITH_AS(parse(R"("\uD83Dx")"), doctest::Contains("high surrogate"), Error);
  CHECK_THROWS_WITH_AS(parse(R"("\uD83D\u0041")"), doctest::Contains("high surrogate"), Error);
  CHECK_THROWS_WITH_AS(parse(R"("\uDE00")"), doctest::Contains("lone low surrogate"), Error);
  CHECK_THROWS_WITH_AS(parse(R"("\u12G4")"), doctest::Contains("invalid hex digit"), Error);
  CHECK_THROWS_WITH_AS(parse(R"("\x41")"), doctest::Contains("invalid escape"), Error);
  CHECK_THROWS_WITH_AS(parse("\"tab\there\""), doctest::Contains("control character"), Error);
  CHECK_THROWS_WITH_AS(parse("\"unterminated"), doctest::Contains("unterminated string"), Error);
  // Invalid UTF-8: stray continuation, overlong '/', encoded surrogate, beyond U+10FFFF, truncated.
  for (const char* bad : {"\"\x80\"", "\"\xC0\xAF\"", "\"\xED\xA0\x80\"", "\"\xF4\x90\x80\x80\"", "\"\xE4\xB8\""}) {
    CAPTURE(bad);
    CHECK_THROWS_WITH_AS(parse(bad), doctest::Contains("invalid UTF-8"), Error);
  }
}

TEST_CASE("errors name the input and the byte offset") {
  CHECK_THROWS_WITH_AS(json::parse("{\"a\": 1,\n \"b\" 2}", "config.json"),
                       "config.json: invalid JSON at byte 14 (line 2, column 6): expected ':' after an object key", Error);
  CHECK_THROWS_WITH_AS(parse("[1, 2"), doctest::Contains("at byte 5"), Error);
  CHECK_THROWS_WITH_AS(parse("[1, 2,]"), doctest::Contains("expected a value"), Error);
  CHECK_THROWS_WITH_AS(parse("{\"a\": 1,}"), doctest::Contains("expected a string key"), Error);
  CHECK_THROWS_WITH_AS(parse("{\"a\": 1} x"), doctest::Contains("unexpected data after the JSON value"), Error);
  CHECK_THROWS_WITH_AS(parse("{\"k\": 1, \"k\": 2}"), doctest::Contains("has the key 'k' twice"), Error);
  CHECK_THROWS_WITH_AS(parse("tru"), doctest::Contains("invalid literal"), Error);
  CHECK_THROWS_WITH_AS(parse(""), doctest::Contains("unexpected end of input"), Error);
  CHECK_THROWS_WITH_AS(parse("  "), doctest::Contains("unexpected end of input"), Error);
  CHECK_THROWS_WITH_AS(parse("{'a': 1}"), doctest::Contains("expected a string key"), Error);
}

TEST_CASE("whitespace, a byte order mark and empty containers are accepted") {
  CHECK(parse(" \t\r\n{ } \n").size() == 0);
  CHECK(parse("\xEF\xBB\xBF[]").is_array());
  CHECK(parse("[[], {}, [[]]]").size() == 3);
  CHECK(parse("\"\"").as_string().empty());
  CHECK(parse("true").as_bool());
}

TEST_CASE("nesting depth is bounded") {
  const std::string ok = std::string(256, '[') + std::string(256, ']');
  CHECK_NOTHROW(parse(ok));
  const std::string deep = std::string(257, '[') + std::string(257, ']');
  CHECK_THROWS_WITH_AS(parse(deep), doctest::Contains("deeper than 256"), Error);
  // A hostile depth far beyond the limit fails cleanly instead of exhausting the stack.
  const std::string hostile = std::string(1'000'000, '[');
  CHECK_THROWS_WITH_AS(parse(hostile), doctest::Contains("deeper than"), Error);
  json::ParseOptions strict;
  strict.max_depth = 2;
  CHECK_THROWS_AS(json::parse("[[[1]]]", "x", strict), Error);
  CHECK_NOTHROW(json::parse("[[1]]", "x", strict));
}

TEST_CASE("large objects are searchable by key") {
  std::string text = "{";
  for (int i = 0; i < 2000; ++i) {
    if (i) text += ',';
    text.append("\"k").append(std::to_string(i)).append("\":").append(std::to_string(i));
  }
  text += "}";
  const auto v = parse(text);
  CHECK(v.size() == 2000);
  CHECK(v.at("k1234").as_int64() == 1234);
  CHECK(v.as_object()[1999].first == "k1999");
}

TEST_CASE("truncations and byte flips of a document never crash") {
  const std::string doc =
      R"({"a": [1, -2.5e3, true, false, null, "x\u00e9\ud83d\ude00"], "b": {"c": {"d": []}}, "e": "\\\"\n"})";
  CHECK_NOTHROW(parse(doc));
  for (std::size_t cut = 0; cut < doc.size(); ++cut) {
    CAPTURE(cut);
    CHECK_THROWS_AS(parse(doc.substr(0, cut)), Error);
  }
  for (std::size_t i = 0; i < doc.size(); ++i) {
    for (unsigned x : {0x01u, 0x20u, 0x80u, 0xffu}) {
      std::string m = doc;
      m[i] = static_cast<char>(static_cast<unsigned char>(m[i]) ^ x);
      try {
        (void)parse(m);
      } catch (const Error&) {
      }
    }
  }
}

TEST_CASE("the writer escapes strings and writes shortest round-trip numbers") {
  CHECK(json::quote("a\"b\\c\n\x01") == R"("a\"b\\c\n\u0001")");
  CHECK(json::quote("caf\xC3\xA9") == "\"caf\xC3\xA9\"");
  CHECK(json::quote("bad\xFFtail") == "\"bad\xEF\xBF\xBDtail\"");  // invalid UTF-8 -> U+FFFD
  CHECK(json::format_number(0.1) == "0.1");
  CHECK(json::format_number(1.0 / 3.0) == "0.3333333333333333");
  CHECK(json::format_number(1e300) == "1e+300");
  CHECK(json::format_number(-0.0) == "-0");
  CHECK(json::format_number(std::nan("")) == "null");
  CHECK(json::format_number(std::numeric_limits<double>::infinity()) == "null");
  for (double d : {0.1, 1.0 / 3.0, 6.02214076e23, 5e-324, -123.456, 2.6592, 0.48145466}) {
    CAPTURE(d);
    CHECK(parse(json::format_number(d)).as_double() == d);
  }
  CHECK(json::format_number(static_cast<double>(0.48145466f)) == "0.48145467042922974");

  json::Writer w;
  w.begin_object();
  w.member("name", "ViT-B/32").member("width", 768).member("scale", 0.5).member("ok", true);
  w.key("scores").begin_array().value(1.5).value(std::int64_t{-2}).null().end_array();
  w.key("empty").begin_object().end_object();
  w.end_object();
  CHECK(w.complete());
  CHECK(w.str() == R"({"name":"ViT-B/32","width":768,"scale":0.5,"ok":true,"scores":[1.5,-2,null],"empty":{}})");

  json::Writer pretty(2);
  pretty.begin_object().member("a", 1).key("b").begin_array().value("x").end_array().end_object();
  CHECK(pretty.str() == "{\n  \"a\": 1,\n  \"b\": [\n    \"x\"\n  ]\n}");

  json::Writer misuse;
  misuse.begin_object();
  CHECK_THROWS_AS(misuse.value(1), Error);  // a value without a key
  CHECK_THROWS_AS(misuse.end_array(), Error);
}

TEST_CASE("dump and parse round-trip") {
  const std::string text = R"({"a":[1,2.5,"\u00e9\n",null,true,{"b":[]}],"c":-7,"d":1e-07})";
  const auto v = parse(text);
  const std::string out = json::dump(v);
  CHECK(out == "{\"a\":[1,2.5,\"\xC3\xA9\\n\",null,true,{\"b\":[]}],\"c\":-7,\"d\":1e-07}");
  CHECK(json::dump(parse(out)) == out);
  CHECK_THROWS_WITH_AS(json::Value::object({{"x", json::Value()}, {"x", json::Value()}}), doctest::Contains("twice"), Error);
}
