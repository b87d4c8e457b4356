// Text corpus reading, tokenize + split, the shuffled batch sampler and
// evaluation windows.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "data/text_corpus.h"
#include "data/token_dataset.h"
#include "data/tokenizer.h"
#include "data/utf8.h"

using namespace sparta;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& tag) {
    static int counter = 0;
    path = fs::temp_directory_path() / cat("sparta_data_", tag, "_", ::getpid(), "_", counter++);
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

void write_file(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream out(p, std::ios::binary);
  out << text;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::vector<int32_t> iota_tokens(int64_t n) {
  std::vector<int32_t> t(n);
  for (int64_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>(i);
  return t;
}

// Window starts of one batch drawn from an iota stream.
std::vector<int32_t> draw(const BatchSampler& s, int64_t B, DataCursor& c) {
  const int64_t T = s.context();
  std::vector<int32_t> in(B * T), tg(B * T);
  s.next(in.data(), tg.data(), B, c);
  std::vector<int32_t> starts;
  for (int64_t b = 0; b < B; ++b) starts.push_back(in[b * T]);
  return starts;
}

}  // namespace

// --------------------------------------------------------------- corpus

TEST(TextCorpus, FolderSkipsBinaryAndSymlinksInSortedOrder) {
  TempDir dir("corpus");
  const fs::path d = dir.path;
  write_file(d / "b.txt", "second file\n");
  write_file(d / "a.txt", "first file \xC3\xA9\n");
  write_file(d / "sub" / "c.txt", "nested\n");
  write_file(d / "bin.dat", std::string("\x01\x00\x02\x03", 4));
  write_file(d / "latin1.txt", "caf\xE9\n");
  write_file(d / "empty.txt", "");
  fs::create_symlink(d / "a.txt", d / "a.u8");
  fs::create_directory_symlink(d / "sub", d / "linked_sub");

  const TextCorpus c = read_text_corpus(d, "data.train");
  const std::vector<fs::path> files = {d / "a.txt", d / "b.txt", d / "empty.txt", d / "sub" / "c.txt"};
  EXPECT_EQ(c.files, files);
  const std::vector<std::string> docs = {"first file \xC3\xA9\n", "second file\n", "", "nested\n"};
  EXPECT_EQ(c.documents, docs);
  EXPECT_EQ(c.skipped_files, 2);
  const std::vector<fs::path> skipped = {d / "bin.dat", d / "latin1.txt"};
  EXPECT_EQ(c.skipped, skipped);
  // The skipped files are reported: how many and which.
  const std::vector<std::string> notices = {"warning: skipped 2 binary or non-UTF-8 files in '" + d.string() +
                                            "': bin.dat, latin1.txt"};
  EXPECT_EQ(c.notices, notices);
  EXPECT_EQ(c.bytes, 14 + 12 + 0 + 7);
}

TEST(TextCorpus, SingleFileMustBeUtf8Text) {
  TempDir dir("single");
  write_file(dir.path / "ok.txt", "hello\nworld\n");
  const TextCorpus c = read_text_corpus(dir.path / "ok.txt");
  EXPECT_TRUE(c.notices.empty());
  ASSERT_EQ(c.documents.size(), 1u);
  EXPECT_EQ(c.documents[0], "hello\nworld\n");
  EXPECT_EQ(c.bytes, 12);
  EXPECT_EQ(c.skipped_files, 0);

  write_file(dir.path / "bad.txt", "ab\xC3\xA9\xFFz");
  std::string msg = error_of([&] { read_text_corpus(dir.path / "bad.txt"); });
  EXPECT_NE(msg.find("bad.txt"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not valid UTF-8 at byte offset 4"), std::string::npos) << msg;

  write_file(dir.path / "nul.txt", std::string("abc\0def", 7));
  msg = error_of([&] { read_text_corpus(dir.path / "nul.txt"); });
  EXPECT_NE(msg.find("nul.txt"), std::string::npos) << msg;
  EXPECT_NE(msg.find("NUL byte at byte offset 3"), std::string::npos) << msg;

  const fs::path missing = dir.path / "missing.txt";
  EXPECT_EQ(error_of([&] { read_text_corpus(missing); }),
            "[data] data.train '" + missing.string() + "' does not exist");
  // Errors name where the path came from, e.g. eval's --data flag.
  EXPECT_EQ(error_of([&] { read_text_corpus(missing, "--data"); }),
            "[data] --data '" + missing.string() + "' does not exist");
  msg = error_of([&] { read_text_corpus(dir.path / "nul.txt", "--data"); });
  EXPECT_EQ(msg.find("train file"), std::string::npos) << msg;
  EXPECT_EQ(msg.rfind("[data] --data '", 0), 0u) << msg;
}

TEST(TextCorpus, EmptyCorpusIsAnError) {
  TempDir dir("empty");
  const fs::path d = dir.path;
  EXPECT_EQ(error_of([&] { read_text_corpus(d); }), "[data] corpus '" + d.string() + "' is empty");
  write_file(d / "ws.txt", " \n\t\r\n");
  EXPECT_EQ(error_of([&] { read_text_corpus(d / "ws.txt"); }),
            "[data] corpus '" + (d / "ws.txt").string() + "' is empty");
  write_file(d / "bin", std::string("\0\0", 2));
  const std::string msg = error_of([&] { read_text_corpus(d); });
  EXPECT_NE(msg.find("is empty (1 binary or non-UTF-8 file skipped)"), std::string::npos) << msg;
}

TEST(TextCorpus, SkippedFilesNoticeListsAFewAndCountsTheRest) {
  TextCorpus c;
  const fs::path d = "/data";
  EXPECT_EQ(skipped_files_notice(c, d), "");
  for (const char* f : {"a.dat", "b.dat", "sub/c.png", "d.bin"}) c.skipped.push_back(d / f);
  EXPECT_EQ(skipped_files_notice(c, d, 2), "warning: skipped 4 binary or non-UTF-8 files in '/data': a.dat, b.dat and 2 more");
  c.skipped.resize(1);
  EXPECT_EQ(skipped_files_notice(c, d), "warning: skipped 1 binary or non-UTF-8 file in '/data': a.dat");
}

TEST(TextCorpus, FortunesFolderLoads) {
  const fs::path dir = "/usr/share/games/fortunes";
  if (!fs::is_directory(dir)) GTEST_SKIP() << dir << " is not installed";
  const TextCorpus c = read_text_corpus(dir);
  EXPECT_GT(c.skipped_files, 0);  // the .dat index files
  EXPECT_GT(c.bytes, 1'000'000);
  EXPECT_LT(c.bytes, 10'000'000);
  int64_t total = 0;
  for (size_t i = 0; i < c.documents.size(); ++i) {
    EXPECT_FALSE(fs::is_symlink(c.files[i])) << c.files[i];
    EXPECT_EQ(utf8_first_invalid(c.documents[i]), c.documents[i].size());
    total += static_cast<int64_t>(c.documents[i].size());
  }
  EXPECT_EQ(total, c.bytes);
  EXPECT_TRUE(std::is_sorted(c.files.begin(), c.files.end()));
}

// ------------------------------------------------------ tokenize + split

TEST(TokenDataset, EotBetweenDocumentsAndTailIsValidation) {
  TextCorpus c;
  c.documents = {"ab", "", "cd"};
  auto tok = make_byte_tokenizer();
  TokenSplit s = tokenize_and_split(c, *tok, 0.4);
  EXPECT_EQ(s.train, (std::vector<int32_t>{'a', 'b', 256}));
  EXPECT_EQ(s.val, (std::vector<int32_t>{'c', 'd'}));
  s = tokenize_and_split(c, *tok, 0.0);
  EXPECT_EQ(s.train, (std::vector<int32_t>{'a', 'b', 256, 'c', 'd'}));
  EXPECT_TRUE(s.val.empty());
}

TEST(TokenDataset, ParallelEncodingMatchesSequential) {
  TextCorpus c;
  auto tok = make_byte_tokenizer();
  std::vector<int32_t> expected;
  for (int d = 0; d < 50; ++d) {
    c.documents.push_back(cat("document ", d, " ", std::string(d % 7, 'x')));
    if (d) expected.push_back(256);
    const auto ids = tok->encode(c.documents.back());
    expected.insert(expected.end(), ids.begin(), ids.end());
  }
  const TokenSplit s = tokenize_and_split(c, *tok, 0.25);
  const size_t n_val = static_cast<size_t>(std::floor(expected.size() * 0.25));
  EXPECT_EQ(s.val.size(), n_val);
  std::vector<int32_t> joined = s.train;
  joined.insert(joined.end(), s.val.begin(), s.val.end());
  EXPECT_EQ(joined, expected);
}

TEST(TokenDataset, SplitErrors) {
  TextCorpus c;
  c.documents = {"abcdef"};
  auto tok = make_byte_tokenizer();
  EXPECT_NE(error_of([&] { tokenize_and_split(c, *tok, 0.6); }).find("val_fraction 0.6 must be in [0, 0.5]"),
            std::string::npos);
  EXPECT_THROW(tokenize_and_split(c, *tok, -0.1), Error);
  EXPECT_THROW(tokenize_and_split(c, *tok, std::numeric_limits<double>::quiet_NaN()), Error);
  c.documents = {"a"};
  const std::string msg = error_of([&] { tokenize_and_split(c, *tok, 0.0); });
  EXPECT_NE(msg.find("train split keeps 1, fewer than 2"), std::string::npos) << msg;
}

// ----------------------------------------------------------- sampler

TEST(BatchSampler, TooShortStreamIsAnError) {
  const auto t = iota_tokens(100);
  EXPECT_EQ(error_of([&] { BatchSampler(t, 256, 1); }),
            "[data] train split has 100 tokens, fewer than context+1 = 257; use a larger corpus or "
            "smaller context");
  EXPECT_THROW(BatchSampler(t, 0, 1), Error);
  EXPECT_EQ(BatchSampler(t, 99, 1).windows(), 1);
}

TEST(BatchSampler, TargetsAreInputsShiftedByOne) {
  std::vector<int32_t> t(1000);
  for (size_t i = 0; i < t.size(); ++i) t[i] = static_cast<int32_t>((i * 7919) % 1009);
  const int64_t T = 16, B = 5;
  BatchSampler s(t, T, 42);
  EXPECT_EQ(s.windows(), 999 / 16);
  std::vector<int32_t> in(B * T), tg(B * T);
  DataCursor c;
  s.next(in.data(), tg.data(), B, c);
  for (int64_t b = 0; b < B; ++b) {
    // Find the window start from the first input (values are distinct).
    const auto it = std::find(t.begin(), t.end(), in[b * T]);
    const int64_t start = it - t.begin();
    EXPECT_EQ(start % T, 0);
    for (int64_t k = 0; k < T; ++k) {
      EXPECT_EQ(in[b * T + k], t[start + k]);
      EXPECT_EQ(tg[b * T + k], t[start + k + 1]);
    }
  }
  EXPECT_EQ(c.epoch, 0);
  EXPECT_EQ(c.index, B);
}

TEST(BatchSampler, EpochVisitsEveryWindowOnceAndWraps) {
  const auto t = iota_tokens(8 * 37 + 5);  // 37 windows of context 8
  BatchSampler s(t, 8, 9);
  ASSERT_EQ(s.windows(), 37);
  DataCursor c;
  std::multiset<int32_t> seen;
  std::vector<int32_t> order;
  for (int i = 0; i < 12; ++i) {  // 36 windows in batches of 3
    for (int32_t st : draw(s, 3, c)) {
      seen.insert(st);
      order.push_back(st);
    }
  }
  EXPECT_EQ(c.epoch, 0);
  EXPECT_EQ(c.index, 36);
  const auto last = draw(s, 3, c);  // 1 window of epoch 0, then 2 of epoch 1
  seen.insert(last[0]);
  order.push_back(last[0]);
  EXPECT_EQ(c.epoch, 1);
  EXPECT_EQ(c.index, 2);
  ASSERT_EQ(seen.size(), 37u);
  for (int w = 0; w < 37; ++w) EXPECT_EQ(seen.count(w * 8), 1u) << w;
  // The order is the documented epoch permutation, and it is shuffled.
  const auto perm = s.epoch_order(0);
  for (int w = 0; w < 37; ++w) EXPECT_EQ(order[w], perm[w] * 8);
  EXPECT_NE(perm, s.epoch_order(1));
  EXPECT_EQ(last[1], s.epoch_order(1)[0] * 8);
  std::vector<int64_t> identity(37);
  for (int w = 0; w < 37; ++w) identity[w] = w;
  EXPECT_NE(perm, identity);
}

TEST(BatchSampler, DeterministicGivenSeedAndSeedsDiffer) {
  const auto t = iota_tokens(4 * 200 + 1);
  BatchSampler a(t, 4, 123), b(t, 4, 123), c(t, 4, 124);
  DataCursor ca, cb, cc;
  std::vector<int32_t> sa, sb, sc;
  for (int i = 0; i < 30; ++i) {
    auto x = draw(a, 7, ca), y = draw(b, 7, cb), z = draw(c, 7, cc);
    sa.insert(sa.end(), x.begin(), x.end());
    sb.insert(sb.end(), y.begin(), y.end());
    sc.insert(sc.end(), z.begin(), z.end());
  }
  EXPECT_EQ(sa, sb);
  EXPECT_NE(sa, sc);
}

TEST(BatchSampler, CursorResumeReproducesTheStream) {
  const auto t = iota_tokens(16 * 50 + 3);
  const int64_t B = 4, T = 16;
  BatchSampler uninterrupted(t, T, 77);
  DataCursor cu;
  std::vector<std::vector<int32_t>> in_u, tg_u;
  for (int i = 0; i < 30; ++i) {  // crosses two epoch boundaries
    std::vector<int32_t> in(B * T), tg(B * T);
    uninterrupted.next(in.data(), tg.data(), B, cu);
    in_u.push_back(in);
    tg_u.push_back(tg);
  }
  for (int k : {0, 1, 12, 13, 25}) {
    // Take k batches, "checkpoint" the cursor, continue with a new sampler.
    DataCursor c;
    {
      BatchSampler first(t, T, 77);
      std::vector<int32_t> in(B * T), tg(B * T);
      for (int i = 0; i < k; ++i) first.next(in.data(), tg.data(), B, c);
    }
    const DataCursor saved = c;
    BatchSampler resumed(t, T, 77);
    DataCursor r = saved;
    for (int i = k; i < 30; ++i) {
      std::vector<int32_t> in(B * T), tg(B * T);
      resumed.next(in.data(), tg.data(), B, r);
      ASSERT_EQ(in, in_u[i]) << "k=" << k << " i=" << i;
      ASSERT_EQ(tg, tg_u[i]) << "k=" << k << " i=" << i;
    }
    EXPECT_EQ(r.epoch, cu.epoch);
    EXPECT_EQ(r.index, cu.index);
  }
}

TEST(BatchSampler, RejectsBadCursorAndBatch) {
  const auto t = iota_tokens(100);
  BatchSampler s(t, 10, 1);  // 9 windows
  std::vector<int32_t> in(10), tg(10);
  DataCursor bad{0, 9};
  const std::string msg = error_of([&] { s.next(in.data(), tg.data(), 1, bad); });
  EXPECT_NE(msg.find("index 9) is out of range for 9 windows"), std::string::npos) << msg;
  DataCursor neg{-1, 0};
  EXPECT_THROW(s.next(in.data(), tg.data(), 1, neg), Error);
  DataCursor ok;
  EXPECT_THROW(s.next(in.data(), tg.data(), 0, ok), Error);
}

// ------------------------------------------------------- eval windows

TEST(EvalWindows, CoverEveryTokenOnceAsTarget) {
  EXPECT_EQ(eval_windows(0, 4), 0);
  EXPECT_EQ(eval_windows(1, 4), 0);
  EXPECT_EQ(eval_windows(2, 4), 1);
  EXPECT_EQ(eval_windows(9, 4), 2);
  EXPECT_EQ(eval_windows(10, 4), 3);
  for (int64_t n : {2, 3, 5, 9, 10, 17, 64, 65, 100}) {
    for (int64_t T : {1, 3, 4, 8, 64}) {
      const auto t = iota_tokens(n);
      const int64_t W = eval_windows(n, T);
      std::vector<int> hits(n, 0);
      std::vector<int32_t> in(T), tg(T);
      for (int64_t w = 0; w < W; ++w) {
        eval_window(t, T, w, in.data(), tg.data());
        bool padding = false;
        for (int64_t k = 0; k < T; ++k) {
          if (tg[k] == -1) {
            padding = true;
            EXPECT_EQ(in[k], 0);
            continue;
          }
          EXPECT_FALSE(padding) << "real target after padding";
          EXPECT_EQ(tg[k], in[k] + 1);  // iota: target is the next token
          EXPECT_EQ(in[k], w * T + k);
          ++hits[tg[k]];
        }
        EXPECT_NE(tg[0], -1);  // no all-padding windows
      }
      EXPECT_EQ(hits[0], 0);
      for (int64_t i = 1; i < n; ++i) EXPECT_EQ(hits[i], 1) << "n=" << n << " T=" << T << " i=" << i;
    }
  }
  const auto t = iota_tokens(10);
  std::vector<int32_t> in(4), tg(4);
  EXPECT_THROW(eval_window(t, 4, 3, in.data(), tg.data()), Error);
  EXPECT_THROW(eval_window(t, 4, -1, in.data(), tg.data()), Error);
}
