#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"

using namespace sparta;
namespace fs = std::filesystem;

namespace {

// A fresh folder per test, removed afterwards.
class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / cat("sparta_st_", ::getpid(), "_", info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// A safetensors file assembled by hand: length prefix + header + data.
std::string raw_file(const std::string& header, const std::string& data) {
  return le64(header.size()) + header + data;
}

// Test inputs need no crash safety; skipping fsync keeps the byte-by-byte
// loops fast on a busy disk. (Removing first: ext4 flushes a file that is
// truncated and rewritten when it is closed.)
void write_plain(const fs::path& p, const std::string& bytes) {
  fs::remove(p);
  std::ofstream(p, std::ios::binary | std::ios::trunc)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string error_of(const fs::path& p) {
  try {
    SafetensorsFile::read(p);
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

template <typename T>
std::string bytes_of(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

template <typename T>
std::vector<T> values_of(const Tensor& t) {
  return std::vector<T>(t.data<T>(), t.data<T>() + t.numel());
}

}  // namespace

TEST_F(SafetensorsTest, RoundTripsDtypesShapesAndMetadata) {
  Rng rng(7);
  Tensor f = Tensor::empty({3, 4}, DType::F32);
  for (int64_t i = 0; i < f.numel(); ++i) f.data<float>()[i] = static_cast<float>(rng.normal());
  Tensor i32 = Tensor::empty({5}, DType::I32);
  for (int i = 0; i < 5; ++i) i32.data<int32_t>()[i] = -2 + i * 1000000;
  Tensor i64 = Tensor::empty({2, 2}, DType::I64);
  const int64_t big[4] = {INT64_MIN, -1, 0, INT64_MAX};
  std::memcpy(i64.raw(), big, sizeof big);
  Tensor empty = Tensor::empty({0, 3}, DType::F32);
  std::vector<float> backing = {1.f, 2.f, 3.f, 4.f, 5.f, 6.f};
  Tensor view = Tensor::view(backing.data() + 2, {2, 2}, DType::F32);  // a view into foreign memory

  const fs::path p = dir_ / "rt.safetensors";
  const std::map<std::string, std::string> meta = {
      {"format", "sparta-gpt-v1"}, {"step", "120"}, {"note", "ünïcode \"q\""}};
  write_safetensors(p, {{"zeta", f}, {"alpha", i32}, {"i64", i64}, {"empty", empty}, {"view", view}}, meta);
  EXPECT_FALSE(fs::exists(dir_ / "rt.safetensors.tmp"));

  SafetensorsFile r = SafetensorsFile::read(p);
  EXPECT_EQ(r.names(), (std::vector<std::string>{"zeta", "alpha", "i64", "empty", "view"}));
  EXPECT_EQ(r.metadata(), meta);
  EXPECT_EQ(r.size(), 5u);
  EXPECT_TRUE(r.has("alpha"));
  EXPECT_FALSE(r.has("beta"));

  const Tensor& rf = r.get("zeta", {3, 4});
  EXPECT_EQ(values_of<float>(rf), values_of<float>(f));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(rf.raw()) % 64, 0u);
  EXPECT_EQ(values_of<int32_t>(r.get("alpha", {5}, DType::I32)), values_of<int32_t>(i32));
  EXPECT_EQ(values_of<int64_t>(r.get("i64", {2, 2}, DType::I64)), std::vector<int64_t>(big, big + 4));
  EXPECT_EQ(r.get("empty").shape(), (Shape{0, 3}));
  EXPECT_EQ(r.get("empty").numel(), 0);
  EXPECT_EQ(values_of<float>(r.get("view", {2, 2})), (std::vector<float>{3.f, 4.f, 5.f, 6.f}));
}

TEST_F(SafetensorsTest, WriterEmitsTheDocumentedBytes) {
  std::vector<float> w = {1.0f, -2.0f, 0.5f, 3.0f};
  std::vector<int64_t> s = {42};
  const fs::path p = dir_ / "exact.safetensors";
  write_safetensors(p,
                    {{"w", Tensor::view(w.data(), {2, 2})}, {"s", Tensor::view(s.data(), {1}, DType::I64)}},
                    {{"k", "v"}});
  const std::string bytes = read_file(p);
  const std::string header_json =
      R"({"__metadata__":{"k":"v"},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
      R"("s":{"dtype":"I64","shape":[1],"data_offsets":[16,24]}})";
  const size_t padded = (header_json.size() + 7) / 8 * 8;
  ASSERT_EQ(bytes.size(), 8 + padded + 24);
  EXPECT_EQ(bytes.substr(0, 8), le64(padded));
  EXPECT_EQ(bytes.substr(8, header_json.size()), header_json);
  EXPECT_EQ(bytes.substr(8 + header_json.size(), padded - header_json.size()),
            std::string(padded - header_json.size(), ' '));
  // IEEE-754 little-endian: 1.0f = 00 00 80 3f, -2.0f = 00 00 00 c0.
  EXPECT_EQ(bytes.substr(8 + padded, 8), std::string("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8));
  EXPECT_EQ(bytes.substr(8 + padded + 16), std::string("\x2a\0\0\0\0\0\0\0", 8));
}

TEST_F(SafetensorsTest, ReadsAHandWrittenFile) {
  // Keys in non-offset order, no padding, whitespace inside the JSON: all legal.
  const std::string header = R"({ "b": {"dtype": "I32", "shape": [2], "data_offsets": [8, 16]},)"
                             R"( "a": {"data_offsets": [0, 8], "shape": [1, 2], "dtype": "F32"},)"
                             R"( "e": {"dtype": "U8", "shape": [0], "data_offsets": [16, 16]},)"
                             R"( "__metadata__": {"who": "hand"} })";
  // a = [1.5, -0.25] as F32 LE; b = [7, -1] as I32 LE.
  const std::string data =
      std::string("\x00\x00\xc0\x3f\x00\x00\x80\xbe", 8) + std::string("\x07\0\0\0\xff\xff\xff\xff", 8);
  const fs::path p = dir_ / "hand.safetensors";
  write_plain(p, raw_file(header, data));
  SafetensorsFile r = SafetensorsFile::read(p);
  EXPECT_EQ(r.names(), (std::vector<std::string>{"a", "b", "e"}));
  EXPECT_EQ(values_of<float>(r.get("a", {1, 2})), (std::vector<float>{1.5f, -0.25f}));
  EXPECT_EQ(values_of<int32_t>(r.get("b", {2}, DType::I32)), (std::vector<int32_t>{7, -1}));
  EXPECT_EQ(r.get("e").dtype(), DType::U8);
  EXPECT_EQ(r.metadata().at("who"), "hand");
}

TEST_F(SafetensorsTest, GetChecksNameShapeAndDtype) {
  const fs::path p = dir_ / "model.safetensors";
  write_safetensors(p, {{"h.0.ln1.weight", Tensor::zeros({384})}});
  SafetensorsFile r = SafetensorsFile::read(p);
  auto msg = [&](auto&& fn) {
    try {
      fn();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("<no error>");
  };
  EXPECT_EQ(msg([&] { r.get("h.0.ln1.weight", {512}); }),
            cat("[checkpoint] ", p.string(),
                ": tensor 'h.0.ln1.weight' has shape (384,) F32 but the model expects (512,) F32"));
  EXPECT_EQ(msg([&] { r.get("h.0.ln1.weight", {384}, DType::I32); }),
            cat("[checkpoint] ", p.string(),
                ": tensor 'h.0.ln1.weight' has shape (384,) F32 but the model expects (384,) I32"));
  EXPECT_EQ(msg([&] { r.get("wte"); }),
            cat("[checkpoint] ", p.string(), ": tensor 'wte' is missing (the file has 1 tensors)"));
  EXPECT_NO_THROW(r.get("h.0.ln1.weight", {384}, DType::F32));
}

TEST_F(SafetensorsTest, WriterRejectsBadNamesAndLeavesNoFile) {
  const fs::path p = dir_ / "bad.safetensors";
  Tensor t = Tensor::zeros({2});
  auto msg = [&](const std::vector<SafetensorsEntry>& e) {
    try {
      write_safetensors(p, e);
    } catch (const Error& err) {
      return std::string(err.what());
    }
    return std::string("<no error>");
  };
  EXPECT_NE(msg({{"a", t}, {"a", t}}).find("tensor name 'a' appears twice"), std::string::npos);
  EXPECT_NE(msg({{"", t}}).find("empty name"), std::string::npos);
  EXPECT_NE(msg({{"__metadata__", t}}).find("reserved"), std::string::npos);
  EXPECT_NE(msg({{"u", Tensor()}}).find("tensor 'u' has no data"), std::string::npos);
  EXPECT_FALSE(fs::exists(p));
  EXPECT_FALSE(fs::exists(dir_ / "bad.safetensors.tmp"));
}

TEST_F(SafetensorsTest, RejectsEachKindOfCorruption) {
  const std::string d8(8, '\x01'), d16(16, '\x01'), d12(12, '\x01'), d20(20, '\x01');
  auto entry = [](const std::string& name, const std::string& body) {
    return cat("\"", name, "\":{", body, "}");
  };
  const std::string ok_a = entry("a", R"("dtype":"F32","shape":[2],"data_offsets":[0,8])");
  struct Case {
    std::string what;
    std::string bytes;
    std::string expect;
  };
  std::vector<Case> cases = {
      {"short file", "abc", "file is 3 bytes, too short to hold the 8-byte header length"},
      {"header longer than file", le64(100) + "{}",
       "header length 100 exceeds the 2 bytes after the length field"},
      {"header over 100 MB", le64(200000000) + "{}", "header length 200000000 exceeds the 100 MB limit"},
      {"not JSON", raw_file("{\"a\":", ""), "header is not valid JSON"},
      {"empty header", raw_file("", ""), "header is not valid JSON"},
      {"not an object", raw_file("[1,2]", ""), "header is a JSON array, expected an object"},
      {"trailing garbage after JSON", raw_file("{} x", ""), "header is not valid JSON"},
      {"entry not an object", raw_file(R"({"a":"x"})", ""),
       "tensor 'a' is a JSON string, expected an object"},
      {"missing dtype", raw_file("{" + entry("a", R"("shape":[2],"data_offsets":[0,8])") + "}", d8),
       "tensor 'a' is missing 'dtype'"},
      {"missing shape", raw_file("{" + entry("a", R"("dtype":"F32","data_offsets":[0,8])") + "}", d8),
       "tensor 'a' is missing 'shape'"},
      {"missing offsets", raw_file("{" + entry("a", R"("dtype":"F32","shape":[2])") + "}", d8),
       "tensor 'a' is missing 'data_offsets'"},
      {"unknown field",
       raw_file("{" + entry("a", R"("dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1)") + "}", d8),
       "tensor 'a' has unknown field 'x'"},
      {"dtype not a string",
       raw_file("{" + entry("a", R"("dtype":4,"shape":[2],"data_offsets":[0,8])") + "}", d8),
       "tensor 'a' dtype is a JSON number, expected a string"},
      {"shape not an array",
       raw_file("{" + entry("a", R"("dtype":"F32","shape":"2","data_offsets":[0,8])") + "}", d8),
       "tensor 'a' shape is a JSON string, expected an array of integers"},
      {"fractional dim",
       raw_file("{" + entry("a", R"("dtype":"F32","shape":[2.5],"data_offsets":[0,8])") + "}", d8),
       "tensor 'a' shape [2.5] holds a number, expected integers"},
      {"offsets wrong arity",
       raw_file("{" + entry("a", R"("dtype":"F32","shape":[2],"data_offsets":[0])") + "}", d8),
       "tensor 'a' data_offsets [0] is not an array of two integers"},
      {"offsets not integers",
       raw_file("{" + entry("a", R"("dtype":"F32","shape":[2],"data_offsets":["0",8])") + "}", d8),
       "is not an array of two integers"},
      {"unknown dtype",
       raw_file("{" + entry("a", R"("dtype":"F64","shape":[1],"data_offsets":[0,8])") + "}", d8),
       "tensor 'a' has unknown dtype 'F64' (expected one of F32, BF16, F16, I32, I64, U8, Q4)"},
      {"negative dim",
       raw_file("{" + entry("a", R"("dtype":"F32","shape":[-2],"data_offsets":[0,8])") + "}", d8),
       "tensor 'a' has negative dimension -2 in shape [-2]"},
      {"numel overflow",
       raw_file(
           "{" + entry("a", R"("dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8])") + "}",
           d8),
       "tensor 'a' shape [4294967296,4294967296] has an element count that overflows int64"},
      {"bytes overflow",
       raw_file("{" + entry("a", R"("dtype":"I64","shape":[2305843009213693952],"data_offsets":[0,8])") + "}",
                d8),
       "has an element count that overflows int64"},
      {"dim beyond int64",
       raw_file(
           "{" + entry("a", R"("dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,8])") + "}",
           d8),
       "tensor 'a' has dimension 18446744073709551615 that overflows int64"},
      {"negative offset",
       raw_file("{" + entry("a", R"("dtype":"F32","shape":[2],"data_offsets":[-8,0])") + "}", d8),
       "tensor 'a' has negative data_offsets [-8,0]"},
      {"begin > end",
       raw_file("{" + entry("a", R"("dtype":"F32","shape":[2],"data_offsets":[8,0])") + "}", d8),
       "tensor 'a' data_offsets [8, 0) has begin > end"},
      {"end past data",
       raw_file("{" + entry("a", R"("dtype":"F32","shape":[4],"data_offsets":[0,16])") + "}", d8),
       "tensor 'a' data_offsets [0, 16) end past the data region of 8 bytes"},
      {"size mismatch",
       raw_file("{" + entry("wte", R"("dtype":"F32","shape":[4,8],"data_offsets":[0,96])") + "}",
                std::string(96, '\0')),
       "tensor 'wte' data_offsets [0, 96) but shape (4, 8) F32 needs 128 bytes"},
      {"overlap",
       raw_file("{" + ok_a + "," + entry("b", R"("dtype":"F32","shape":[2],"data_offsets":[4,12])") + "}",
                d12),
       "tensor 'b' data_offsets [4, 12) overlaps tensor 'a' [0, 8)"},
      {"hole",
       raw_file("{" + ok_a + "," + entry("b", R"("dtype":"F32","shape":[2],"data_offsets":[12,20])") + "}",
                d20),
       "bytes [8, 12) of the data region belong to no tensor (hole before 'b')"},
      {"hole at start",
       raw_file("{" + entry("b", R"("dtype":"F32","shape":[2],"data_offsets":[4,12])") + "}", d12),
       "bytes [0, 4) of the data region belong to no tensor"},
      {"trailing bytes", raw_file("{" + ok_a + "}", d12),
       "bytes [8, 12) at the end of the data region belong to no tensor"},
      {"duplicate name", raw_file("{" + ok_a + "," + ok_a + "}", d16), "header has duplicate key 'a'"},
      {"duplicate field",
       raw_file(R"({"a":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})", d8),
       "header has duplicate key 'dtype'"},
      {"empty name", raw_file("{" + entry("", R"("dtype":"F32","shape":[2],"data_offsets":[0,8])") + "}", d8),
       "tensor with an empty name"},
      {"metadata not object", raw_file("{" + ok_a + R"(,"__metadata__":["x"]})", d8),
       "__metadata__ is a JSON array, expected an object of strings"},
      {"metadata value not string", raw_file("{" + ok_a + R"(,"__metadata__":{"step":12}})", d8),
       "__metadata__ key 'step' is a JSON number, expected a string"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const fs::path p = dir_ / cat("case", i, ".safetensors");
    write_plain(p, cases[i].bytes);
    const std::string err = error_of(p);
    const std::string prefix = cat("[safetensors] ", p.string(), ": ");
    EXPECT_EQ(err.rfind(prefix, 0), 0u) << cases[i].what << ": " << err;
    EXPECT_NE(err.find(cases[i].expect), std::string::npos) << cases[i].what << ": got\n  " << err;
    EXPECT_EQ(err.find('\n'), std::string::npos) << cases[i].what << ": message is not one line";
  }
  EXPECT_EQ(error_of(dir_ / "nope.safetensors"),
            cat("[safetensors] ", (dir_ / "nope.safetensors").string(), ": file does not exist"));
  EXPECT_NE(error_of(dir_).find("is a folder"), std::string::npos);
}

namespace {
std::string small_valid_file(const fs::path& p) {
  std::vector<float> a = {1, 2, 3, 4, 5, 6};
  std::vector<int64_t> b = {-7, 8};
  std::vector<int32_t> c = {9};
  write_safetensors(p,
                    {{"a", Tensor::view(a.data(), {2, 3})},
                     {"b", Tensor::view(b.data(), {2}, DType::I64)},
                     {"c", Tensor::view(c.data(), {1}, DType::I32)}},
                    {{"step", "3"}});
  return read_file(p);
}
}  // namespace

TEST_F(SafetensorsTest, RejectsTruncationAtEveryByte) {
  const fs::path good = dir_ / "good.safetensors";
  const std::string bytes = small_valid_file(good);
  ASSERT_NO_THROW(SafetensorsFile::read(good));
  const fs::path p = dir_ / "cut.safetensors";
  for (size_t n = 0; n < bytes.size(); ++n) {
    write_plain(p, bytes.substr(0, n));
    EXPECT_THROW(SafetensorsFile::read(p), Error)
        << "truncated to " << n << " of " << bytes.size() << " bytes";
  }
  write_plain(p, bytes + "x");  // one byte too many is as wrong as one too few
  EXPECT_THROW(SafetensorsFile::read(p), Error);
}

TEST_F(SafetensorsTest, GarbledBytesParseOrThrowButNeverCrash) {
  const fs::path good = dir_ / "good.safetensors";
  const std::string bytes = small_valid_file(good);
  const size_t data_bytes = 6 * 4 + 2 * 8 + 4;
  const fs::path p = dir_ / "garbled.safetensors";
  Rng rng(1234);
  int parsed = 0, rejected = 0;
  for (int variant = 0; variant < 400; ++variant) {
    std::string g = bytes;
    const int flips = 1 + static_cast<int>(rng.below(4));
    for (int k = 0; k < flips; ++k) {
      // A third each: the length prefix + start of the header, anywhere,
      // and the data region (which must still parse).
      size_t pos;
      if (variant % 3 == 0)
        pos = rng.below(8 + 64);
      else if (variant % 3 == 1)
        pos = rng.below(g.size());
      else
        pos = g.size() - 1 - rng.below(data_bytes);
      g[pos] = static_cast<char>(rng.below(256));
    }
    write_plain(p, g);
    try {
      SafetensorsFile r = SafetensorsFile::read(p);
      // Whatever parsed must be self-consistent: tensors tile the data region.
      size_t total = 0;
      for (const auto& n : r.names()) total += r.get(n).nbytes();
      uint64_t header_len = 0;
      for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(g[i]);
      EXPECT_EQ(total, g.size() - 8 - header_len) << "variant " << variant;
      ++parsed;
    } catch (const Error&) {
      ++rejected;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "variant " << variant << " threw a non-sparta exception: " << e.what();
    }
  }
  // Both outcomes occur, so the loop really exercised the reader.
  EXPECT_GT(parsed, 100);
  EXPECT_GT(rejected, 100);
}
