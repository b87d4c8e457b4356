// JSON from files a user hands us (safetensors headers, tokenizer.json):
// deep nesting, huge values and many keys give clear, short errors in
// linear time, never a crash (stack overflow) or a quadratic parse.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "core/error.h"
#include "data/tokenizer.h"
#include "io/json_input.h"
#include "io/safetensors.h"
#include "scratch_test.h"

using namespace sparta;
using sparta::test_util::error_of;
namespace fs = std::filesystem;

namespace {

std::string nested_array(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

class JsonInputFiles : public test_util::ScratchTest {
 protected:
  void write(const fs::path& p, const std::string& bytes) {
    std::ofstream(p, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  // A safetensors file: 8-byte little-endian header length, header, data.
  fs::path safetensors(const std::string& header, const std::string& data = "") {
    std::string len(8, '\0');
    for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
    write(dir_ / "t.safetensors", len + header + data);
    return dir_ / "t.safetensors";
  }
};

}  // namespace

TEST(JsonInput, AcceptsNestingUpToTheLimitAndRejectsDeeper) {
  EXPECT_EQ(parse_json_input(nested_array(kMaxJsonDepth), "x").dump(), nested_array(kMaxJsonDepth));
  std::string msg = error_of([] { parse_json_input(nested_array(kMaxJsonDepth + 1), "[t] 'f'"); });
  EXPECT_EQ(msg, cat("[t] 'f' nests arrays/objects deeper than ", kMaxJsonDepth, " levels"));
  // 100,000 levels: nlohmann's dump() of such a value overflows the stack.
  msg = error_of([] { parse_json_input(cat("{\"a\":", nested_array(100000), "}"), "[t] 'f'"); });
  EXPECT_NE(msg.find("deeper than"), std::string::npos) << msg;
  std::string objects;
  for (int i = 0; i < 100000; ++i) objects += "{\"a\":";
  msg = error_of([&] { parse_json_input(objects, "[t] 'f'"); });
  EXPECT_NE(msg.find("deeper than"), std::string::npos) << msg;
}

TEST(JsonInput, RejectsDuplicateKeysAtAnyLevelAndBadJson) {
  EXPECT_EQ(error_of([] { parse_json_input(R"({"a": 1, "b": {"c": 1, "c": 2}})", "[t]"); }),
            "[t] has duplicate key 'c'");
  EXPECT_EQ(error_of([] { parse_json_input(R"({"a": 1, "a": 1})", "[t]"); }), "[t] has duplicate key 'a'");
  // The same key in sibling objects is fine.
  EXPECT_EQ(parse_json_input(R"([{"a": 1}, {"a": 2}])", "[t]").size(), 2u);
  const std::string msg = error_of([] { parse_json_input("{\"a\": ", "[t]"); });
  EXPECT_EQ(msg.rfind("[t] is not valid JSON: ", 0), 0u) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
}

TEST(JsonInput, ManyKeysParseInLinearTime) {
  // nlohmann's callback parser rescans the parent object at each end_object:
  // 200k small objects took minutes that way; linear parsing takes a fraction
  // of a second (the bound leaves room for a loaded machine or a sanitizer build).
  std::string text = "{";
  for (int i = 0; i < 200000; ++i) text += cat(i ? "," : "", "\"k", i, "\":{\"v\":[", i, "]}");
  text += "}";
  const auto t0 = std::chrono::steady_clock::now();
  const nlohmann::json j = parse_json_input(text, "[t]");
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(j.size(), 200000u);
  EXPECT_LT(s, 20.0);
}

TEST(JsonInput, DescriptionsAreShortWhateverTheValue) {
  EXPECT_EQ(describe_json(nlohmann::json(12)), "12");
  EXPECT_EQ(describe_json(nlohmann::json("yes")), "\"yes\"");
  EXPECT_EQ(describe_json(nlohmann::json::parse("[1, [2], 3]")), "[1,[2],3]");
  EXPECT_EQ(describe_json(nlohmann::json::parse(R"({"a": 1})")), R"({"a":1})");
  EXPECT_EQ(describe_json(nlohmann::json(std::string(1000000, 'x'))),
            cat("\"", std::string(59, 'x'), "... (1000002 bytes of JSON)"));
  // Cut before a UTF-8 character that would straddle the prefix ("é" is 2 bytes).
  EXPECT_EQ(describe_json(nlohmann::json(std::string(58, 'x') + "\xc3\xa9" + std::string(100, 'y'))),
            cat("\"", std::string(58, 'x'), "... (162 bytes of JSON)"));
  EXPECT_EQ(describe_json(parse_json_input(nested_array(kMaxJsonDepth), "x")),
            cat(std::string(60, '['), "... (128 bytes of JSON)"));
}

TEST_F(JsonInputFiles, SafetensorsHeaderNestedOrHugeGivesAShortError) {
  for (const char* field : {"shape", "data_offsets"}) {
    std::string entry = R"({"dtype": "F32", "shape": [0], "data_offsets": [0, 0]})";
    const std::string plain = cat("\"", field, "\": ", std::string(field) == "shape" ? "[0]" : "[0, 0]");
    entry.replace(entry.find(plain), plain.size(), cat("\"", field, "\": ", nested_array(100000)));
    const std::string msg = error_of([&] { SafetensorsFile::read(safetensors(cat("{\"a\": ", entry, "}"))); });
    EXPECT_NE(msg.find("header nests arrays/objects deeper than"), std::string::npos) << field << ": " << msg;
  }
  // Shallow but large values are described, not printed.
  std::string shape = "[[";
  for (int i = 0; i < 100000; ++i) shape += "1,";
  shape += "1]]";
  std::string msg = error_of([&] {
    SafetensorsFile::read(safetensors(cat(R"({"a": {"dtype": "F32", "shape": )", shape, R"(, "data_offsets": [0, 0]}})")));
  });
  EXPECT_NE(msg.find("shape [[1,1,1,"), std::string::npos) << msg;
  EXPECT_NE(msg.find("... (200005 bytes of JSON) holds a array, expected integers"), std::string::npos) << msg;
  EXPECT_LT(msg.size(), 300u);
  msg = error_of([&] {
    SafetensorsFile::read(safetensors(cat(R"({")", std::string(1000000, 'n'), R"(": {"dtype": "F32", "shape": [1], "data_offsets": [0, 0]}})")));
  });
  EXPECT_NE(msg.find("(1000000 bytes)"), std::string::npos) << msg.substr(0, 300);
  EXPECT_LT(msg.size(), 400u);
  std::string ones = "1";
  for (int i = 1; i < 36; ++i) ones += ",1";
  msg = error_of([&] {
    SafetensorsFile::read(
        safetensors(cat(R"({"a": {"dtype": "F32", "shape": [)", ones, R"(], "data_offsets": [0, 4]}})"), "abcd"));
  });
  EXPECT_NE(msg.find("shape has 36 dimensions, more than the 32 supported"), std::string::npos) << msg;
}

TEST_F(JsonInputFiles, SafetensorsWithManyTensorsReadsInLinearTime) {
  // 100k empty tensors (a 5 MB header): over two minutes when the duplicate-key
  // check made parsing quadratic, about a second now.
  std::string header = "{";
  for (int i = 0; i < 100000; ++i)
    header += cat(i ? "," : "", "\"t", i, R"(":{"dtype":"F32","shape":[0],"data_offsets":[0,0]})");
  header += "}";
  const fs::path p = safetensors(header);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(SafetensorsFile::read_header(p).size(), 100000u);
  EXPECT_EQ(SafetensorsFile::read(p).size(), 100000u);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(s, 20.0);
}

TEST_F(JsonInputFiles, TokenizerJsonNestedOrHugeGivesAShortError) {
  for (const char* field : {"lowercase", "vocab_file"}) {
    write(dir_ / "tokenizer.json", cat(R"({"kind": "wordpiece", ")", field, "\": ", nested_array(100000), "}"));
    const std::string msg = error_of([&] { load_tokenizer(dir_); });
    EXPECT_NE(msg.find("tokenizer.json' nests arrays/objects deeper than"), std::string::npos) << field << ": " << msg;
  }
  write(dir_ / "tokenizer.json", cat(R"({"kind": "wordpiece", "lowercase": )", nested_array(kMaxJsonDepth - 1), "}"));
  std::string msg = error_of([&] { load_tokenizer(dir_); });
  EXPECT_NE(msg.find("\"lowercase\" must be true or false, got [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[... (126 bytes of JSON)"), std::string::npos) << msg;
  write(dir_ / "tokenizer.json", cat(R"({"kind": "wordpiece", "vocab_file": {"a": )", nested_array(10), "}}"));
  msg = error_of([&] { load_tokenizer(dir_); });
  EXPECT_NE(msg.find(cat("\"vocab_file\" must be a non-empty string, got {\"a\":", nested_array(10), "}")), std::string::npos) << msg;
  write(dir_ / "tokenizer.json", cat(R"({"kind": "wordpiece", "vocab_file": ")", std::string(1000000, 'v'), "\"}"));
  msg = error_of([&] { load_tokenizer(dir_); });
  EXPECT_NE(msg.find("\"vocab_file\" is 1000000 bytes long, not a file name"), std::string::npos) << msg.substr(0, 300);
  write(dir_ / "tokenizer.json", cat(R"({"kind": ")", std::string(1000000, 'k'), "\"}"));
  msg = error_of([&] { load_tokenizer(dir_); });
  EXPECT_NE(msg.find("unknown kind 'kkkk"), std::string::npos) << msg.substr(0, 300);
  EXPECT_LT(msg.size(), 400u);
}
