// focuspatch-serve's parts that need no model: the batching queue (batch limits, the wait for
// company, overload, deadlines, isolation of a request that breaks a pass, draining on close) and
// the REST codec (binary-data extension round trip, raw BYTES framing, JSON bounds).
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "serve/batch_queue.hpp"
#include "serve/rest_codec.hpp"

using namespace focuspatch;
using namespace focuspatch::serve;
using namespace std::chrono_literals;

namespace {

// Doubles each item; records the size of every pass; throws on a negative item.
struct Doubler {
  std::vector<std::size_t>* passes;
  std::vector<int> operator()(std::vector<int>& items) const {
    passes->push_back(items.size());
    std::vector<int> out;
    for (int i : items) {
      if (i < 0) throw Error("negative item");
      out.push_back(2 * i);
    }
    return out;
  }
};

Failure failure_of(std::future<std::vector<int>>& f) {
  try {
    f.get();
  } catch (const ProtocolError& e) {
    return e.failure();
  }
  FAIL("expected a ProtocolError");
  return Failure::Internal;
}

}  // namespace

TEST_CASE("batch queue: concurrent requests share a pass up to max_batch, each gets its own results in order") {
  std::vector<std::size_t> passes;
  BatchOptions o;
  o.max_batch = 5;
  o.max_delay = 300ms;  // long: the requests below all arrive within it
  o.max_queue = 100;
  BatchQueue<int, int> q(o, Doubler{&passes});
  auto a = q.submit({1, 2});
  auto b = q.submit({3});
  auto c = q.submit({4, 5});  // 2 + 1 + 2 = 5: full, the pass starts without waiting out the delay
  auto d = q.submit({6, 7, 8});  // would exceed 5: next pass
  CHECK(a.get() == std::vector<int>{2, 4});
  CHECK(b.get() == std::vector<int>{6});
  CHECK(c.get() == std::vector<int>{8, 10});
  CHECK(d.get() == std::vector<int>{12, 14, 16});
  q.close();
  CHECK(passes == std::vector<std::size_t>{5, 3});
}

TEST_CASE("batch queue: a request larger than max_batch runs alone; with no delay a lone request does not wait") {
  std::vector<std::size_t> passes;
  BatchOptions o;
  o.max_batch = 2;
  o.max_delay = 0us;
  BatchQueue<int, int> q(o, Doubler{&passes});
  const auto t0 = Clock::now();
  CHECK(q.submit({1}).get() == std::vector<int>{2});
  CHECK(Clock::now() - t0 < 200ms);
  CHECK(q.submit({1, 2, 3}).get() == std::vector<int>{2, 4, 6});
  q.close();
  CHECK(passes == std::vector<std::size_t>{1, 3});
}

TEST_CASE("batch queue: a full queue refuses as overloaded, an oversized request as bad, a closed one as unavailable") {
  std::vector<std::size_t> passes;
  BatchOptions o;
  o.max_batch = 64;
  o.max_delay = 400ms;  // the first requests sit in the queue meanwhile
  o.max_queue = 3;
  BatchQueue<int, int> q(o, Doubler{&passes});
  auto a = q.submit({1, 2});
  auto b = q.submit({3});
  CHECK(q.queued_items() == 3);
  CHECK(q.queued_requests() == 2);
  try {
    q.submit({4});
    FAIL("a full queue took a request");
  } catch (const ProtocolError& e) {
    CHECK(e.failure() == Failure::Overloaded);
  }
  try {
    q.submit({1, 2, 3, 4});
    FAIL("a request larger than the queue was taken");
  } catch (const ProtocolError& e) {
    CHECK(e.failure() == Failure::BadRequest);
  }
  q.close();  // drains: the queued requests are still answered
  CHECK(a.get() == std::vector<int>{2, 4});
  CHECK(b.get() == std::vector<int>{6});
  try {
    q.submit({1});
    FAIL("a closed queue took a request");
  } catch (const ProtocolError& e) {
    CHECK(e.failure() == Failure::Unavailable);
  }
}

TEST_CASE("batch queue: a request past its deadline is answered Timeout and never runs") {
  std::vector<std::size_t> passes;
  BatchOptions o;
  o.max_batch = 8;
  o.max_delay = 200ms;
  BatchQueue<int, int> q(o, Doubler{&passes});
  auto late = q.submit({1}, Clock::now() + 20ms);
  auto fine = q.submit({2, 3});
  CHECK(failure_of(late) == Failure::Timeout);
  CHECK(fine.get() == std::vector<int>{4, 6});
  q.close();
  CHECK(passes == std::vector<std::size_t>{2});  // the late item was not in the pass
}

TEST_CASE("batch queue: a request that breaks the pass fails alone; the others sharing it are answered") {
  std::vector<std::size_t> passes;
  BatchOptions o;
  o.max_batch = 8;
  o.max_delay = 200ms;
  BatchQueue<int, int> q(o, Doubler{&passes});
  auto a = q.submit({1});
  auto bad = q.submit({-1, 5});
  auto c = q.submit({7});
  CHECK(a.get() == std::vector<int>{2});
  CHECK(failure_of(bad) == Failure::Internal);
  CHECK(c.get() == std::vector<int>{14});
  q.close();
  CHECK(passes == std::vector<std::size_t>{4, 1, 2, 1});  // the shared pass, then each alone
}

TEST_CASE("REST codec: binary-data extension in and out, raw BYTES framing, JSON value bound") {
  const std::vector<std::string> elements = {std::string("\x89PNG\0\x01", 6), "", "abc"};
  const std::string raw = join_raw_bytes(elements);
  CHECK(raw.size() == 4 * 3 + 6 + 0 + 3);
  CHECK(raw.substr(0, 4) == std::string("\x06\0\0\0", 4));
  CHECK(split_raw_bytes(raw, "x") == elements);
  CHECK_THROWS_WITH_AS(split_raw_bytes(raw.substr(0, raw.size() - 1), "x"), doctest::Contains("claims 3 bytes"), ProtocolError);
  CHECK_THROWS_WITH_AS(split_raw_bytes(raw.substr(0, 2), "x"), doctest::Contains("4-byte length"), ProtocolError);

  const std::string header = R"({"id":"r7","inputs":[{"name":"image","datatype":"BYTES","shape":[3],"parameters":{"binary_data_size":)" +
                             std::to_string(raw.size()) + R"(}}],"outputs":[{"name":"score","parameters":{"binary_data":true}},{"name":"category"}]})";
  const InferRequest r = parse_rest_request(header + raw, header.size());
  CHECK(r.id == "r7");
  REQUIRE(r.inputs.size() == 1);
  CHECK(std::get<std::vector<std::string>>(r.inputs[0].data) == elements);
  CHECK(r.outputs.size() == 2);
  CHECK_THROWS_WITH_AS(parse_rest_request(header + raw + "x", header.size()), doctest::Contains("no input claims"), ProtocolError);

  InferResponse response;
  response.id = "r7";
  response.model_name = "focuspatch";
  response.model_version = "1";
  response.outputs.push_back({"score", "FP32", {2}, {}, std::vector<float>{0.5f, -1.25f}});
  response.outputs.push_back({"category", "BYTES", {2}, {}, std::vector<std::string>{"a", "bc"}});
  const RestBody body = write_rest_response(response, r);
  REQUIRE(body.header_length.has_value());
  const json::Value head = json::parse(body.body.substr(0, *body.header_length), "response");
  CHECK(head.at("outputs")[0].at("parameters").at("binary_data_size").as_int64() == 8);  // score: binary, as asked
  CHECK(head.at("outputs")[1].at("data")[1].as_string() == "bc");                        // category: JSON
  const std::string blob = body.body.substr(*body.header_length);
  REQUIRE(blob.size() == 8);
  float scores[2];
  std::memcpy(scores, blob.data(), 8);
  CHECK(scores[0] == 0.5f);
  CHECK(scores[1] == -1.25f);

  std::string many = "[";
  for (int i = 0; i < 70000; ++i) many += "0,";
  many += "0]";
  CHECK_THROWS_WITH_AS(parse_rest_request(many, std::nullopt), doctest::Contains("values"), ProtocolError);
  // An upper bound: 1 + one per '{' ':' ',' ':' '[' ','; the four inside the string do not count.
  CHECK(rest_detail::count_json_values(R"({"a":"[,,,]","b":[1,2]})") == 7);
  // An escaped quote does not end the string: 1 + '[' + ','; ending it there would count 4.
  CHECK(rest_detail::count_json_values(R"(["\",[",1])") == 3);
}

TEST_CASE("REST codec: BOOL is true/false in JSON and one byte each in binary; NaN (uncalibrated) is null in JSON") {
  InferRequest json_request, binary_request;
  binary_request.parameters["binary_data_output"] = true;
  InferResponse response;
  response.outputs.push_back({"anomalous", "BOOL", {3}, {}, std::vector<std::uint8_t>{1, 0, 1}});
  response.outputs.push_back({"normalized_score", "FP32", {2}, {}, std::vector<float>{0.75f, std::numeric_limits<float>::quiet_NaN()}});
  const RestBody text = write_rest_response(response, json_request);
  CHECK_FALSE(text.header_length.has_value());
  const json::Value doc = json::parse(text.body, "response");
  const json::Value& flags = doc.at("outputs")[0].at("data");
  REQUIRE(flags.size() == 3);
  CHECK(flags[0].is_bool());
  CHECK(flags[0].as_bool());
  CHECK_FALSE(flags[1].as_bool());
  CHECK(flags[2].as_bool());
  const json::Value& normalized = doc.at("outputs")[1].at("data");
  CHECK(normalized[0].as_double() == 0.75);
  CHECK(normalized[1].is_null());

  const RestBody binary = write_rest_response(response, binary_request);
  REQUIRE(binary.header_length.has_value());
  const std::string blob = binary.body.substr(*binary.header_length);
  REQUIRE(blob.size() == 3 + 8);
  CHECK(blob.substr(0, 3) == std::string("\x01\x00\x01", 3));
  float v[2];
  std::memcpy(v, blob.data() + 3, 8);
  CHECK(v[0] == 0.75f);
  CHECK(std::isnan(v[1]));
}
