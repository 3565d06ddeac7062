// The fortunes corpus, the packed pretraining stream and evaluation rows (SPEC-model.md §1).
#include "data/data.h"

#include <gtest/gtest.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <thread>

namespace troupe::model {
namespace {

namespace fs = std::filesystem;

const char* kFortunesDir = "/usr/share/games/fortunes";

// The corpus, loaded once for all tests (it is ~2.6 MB).
const Corpus& fortunes() {
  static const Corpus corpus = load_fortunes(kFortunesDir, 20);
  return corpus;
}

#define REQUIRE_FORTUNES()             \
  if (!fs::is_directory(kFortunesDir)) \
  GTEST_SKIP() << kFortunesDir         \
               << " missing: "         \
                  "install the 'fortunes' package"

bool operator_eq(const Batch& a, const Batch& b) {
  return a.rows == b.rows && a.seq_len == b.seq_len && a.inputs == b.inputs &&
         a.targets == b.targets;
}

// The stream built the slow, obvious way: epochs of BOS doc EOS in epoch_order.
std::vector<int32_t> naive_stream(const PackedStream& s, const std::vector<std::string>& docs,
                                  int64_t epochs) {
  std::vector<int32_t> out;
  for (int64_t e = 0; e < epochs; ++e)
    for (int64_t k : s.epoch_order(e)) {
      out.push_back(kBos);
      for (char c : docs[k]) out.push_back(static_cast<uint8_t>(c));
      out.push_back(kEos);
    }
  return out;
}

TEST(Fortunes, SplitDocuments) {
  EXPECT_EQ(split_fortunes("a\n%\nb\nc\n%\n"), (std::vector<std::string>{"a\n", "b\nc\n"}));
  EXPECT_EQ(split_fortunes("%\n%\nx\n%"), (std::vector<std::string>{"x\n"}));  // empties skipped
  EXPECT_EQ(split_fortunes("x"), (std::vector<std::string>{"x"}));
  // Only a line holding exactly '%' separates.
  EXPECT_EQ(split_fortunes("a\n%%\n 100%\n% \nb\n"),
            (std::vector<std::string>{"a\n%%\n 100%\n% \nb\n"}));
  EXPECT_TRUE(split_fortunes("").empty());
}

TEST(Fortunes, FileSelection) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("troupe_data_test_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir / "sub");
  std::ofstream(dir / "b") << "two\n%\n";
  std::ofstream(dir / "a") << "one\n%\nthree\n";
  std::ofstream(dir / "a.dat") << "index";
  std::ofstream(dir / ".hidden") << "no";
  fs::create_symlink(dir / "a", dir / "c");
  const auto files = fortune_files(dir.string());
  EXPECT_EQ(files, (std::vector<std::string>{(dir / "a").string(), (dir / "b").string()}));
  Corpus c = load_fortunes(dir.string(), 1000003);
  std::vector<std::string> all = c.train;
  all.insert(all.end(), c.val.begin(), c.val.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, (std::vector<std::string>{"one\n", "three\n", "two\n"}));
  fs::remove_all(dir);
  try {
    fortune_files(dir.string());
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(dir.string()), std::string::npos) << e.what();
  }
}

TEST(Fortunes, CorpusFiguresAndSplit) {
  REQUIRE_FORTUNES();
  EXPECT_EQ(fortune_files(kFortunesDir).size(), 43u);
  const Corpus& c = fortunes();
  int64_t train_bytes = 0, val_bytes = 0;
  for (const auto& d : c.train) train_bytes += static_cast<int64_t>(d.size());
  for (const auto& d : c.val) val_bytes += static_cast<int64_t>(d.size());
  std::printf(
      "fortunes: %zu files, %zu train docs (%lld bytes), %zu val docs (%lld bytes), "
      "%lld bytes in documents\n",
      fortune_files(kFortunesDir).size(), c.train.size(), static_cast<long long>(train_bytes),
      c.val.size(), static_cast<long long>(val_bytes),
      static_cast<long long>(train_bytes + val_bytes));
  RecordProperty("train_docs", static_cast<int>(c.train.size()));
  RecordProperty("val_docs", static_cast<int>(c.val.size()));
  RecordProperty("doc_bytes", static_cast<int>(train_bytes + val_bytes));
  EXPECT_GT(train_bytes + val_bytes, 2'000'000);
  EXPECT_LT(train_bytes + val_bytes, 2'700'000);
  // About 1 in 20 goes to validation, and exactly those whose hash says so.
  const double frac = double(c.val.size()) / double(c.train.size() + c.val.size());
  EXPECT_GT(frac, 0.035);
  EXPECT_LT(frac, 0.065);
  for (const auto& d : c.val) EXPECT_EQ(XXH64(d.data(), d.size(), 0) % 20, 0u);
  for (size_t i = 0; i < c.train.size(); i += 97)
    EXPECT_NE(XXH64(c.train[i].data(), c.train[i].size(), 0) % 20, 0u);
  for (const auto& d : c.train) ASSERT_FALSE(d.empty());
  // Deterministic: a second load gives the same split in the same order.
  const Corpus again = load_fortunes(kFortunesDir, 20);
  EXPECT_EQ(again.train, c.train);
  EXPECT_EQ(again.val, c.val);
}

TEST(PackedStream, RowsArePureAndMatchTheNaiveStream) {
  const std::vector<std::string> docs = {"ab", "", "cdefg", "h", "ijklmnopqrstu", "vw"};
  const int64_t T = 5;
  PackedStream s(&docs, 7, true, T);
  EXPECT_EQ(s.epoch_tokens(), 2 + 2 + 0 + 2 + 5 + 2 + 1 + 2 + 13 + 2 + 2 + 2);
  const std::vector<int32_t> stream = naive_stream(s, docs, 6);
  const int64_t rows = (static_cast<int64_t>(stream.size()) - 1) / T;
  Batch all = s.rows(0, rows);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < T; ++j) {
      ASSERT_EQ(all.inputs[r * T + j], stream[r * T + j]) << r << "," << j;
      const int32_t next = stream[r * T + j + 1];
      ASSERT_EQ(all.targets[r * T + j], next == kBos ? kNoTarget : next);
    }
  // Any window is the same slice, from this object, a copy or a fresh one.
  PackedStream fresh(&docs, 7, true, T);
  PackedStream copy = s;
  for (int64_t first : {int64_t{0}, int64_t{3}, int64_t{5}, int64_t{11}, rows - 4})
    for (int64_t count : {1, 3}) {
      EXPECT_TRUE(operator_eq(s.rows(first, count), all.slice(first, count)));
      EXPECT_TRUE(operator_eq(fresh.rows(first, count), all.slice(first, count)));
      EXPECT_TRUE(operator_eq(copy.rows(first, count), all.slice(first, count)));
    }
  EXPECT_TRUE(operator_eq(train_batch(s, 3, 4), s.rows(12, 4)));
}

TEST(PackedStream, ShuffleDiffersBySeedAndEpoch) {
  std::vector<std::string> docs;
  for (int i = 0; i < 100; ++i) docs.push_back(std::to_string(i));
  PackedStream a(&docs, 1, true, 16), b(&docs, 2, true, 16), plain(&docs, 1, false, 16);
  std::vector<int64_t> identity(docs.size());
  std::iota(identity.begin(), identity.end(), 0);
  for (const auto& order : {a.epoch_order(0), a.epoch_order(1), b.epoch_order(0)}) {
    std::vector<int64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, identity);  // a permutation
    EXPECT_NE(order, identity);
  }
  EXPECT_NE(a.epoch_order(0), a.epoch_order(1));
  EXPECT_NE(a.epoch_order(0), b.epoch_order(0));
  EXPECT_EQ(a.epoch_order(5), PackedStream(&docs, 1, true, 16).epoch_order(5));
  EXPECT_EQ(plain.epoch_order(0), identity);
  EXPECT_EQ(plain.epoch_order(3), identity);
  EXPECT_FALSE(operator_eq(a.rows(0, 4), b.rows(0, 4)));
}

TEST(PackedStream, FortunesRows) {
  REQUIRE_FORTUNES();
  const Corpus& c = fortunes();
  const int64_t T = 128;
  PackedStream s(&c.train, 1234, true, T);
  const Batch b = s.rows(0, 64);
  EXPECT_EQ(b.inputs[0], kBos);
  int64_t bos_inputs = 0;
  for (int64_t i = 0; i < b.rows * T; ++i) {
    ASSERT_NE(b.targets[i], kBos);  // BOS is never a target
    ASSERT_GE(b.inputs[i], 0);
    ASSERT_LT(b.inputs[i], 258);
    if (b.inputs[i] == kEos) {
      ASSERT_EQ(b.targets[i], kNoTarget);  // next is BOS
    }
    if (i + 1 < b.rows * T && b.targets[i] != kNoTarget) {
      ASSERT_EQ(b.targets[i], b.inputs[i + 1]);
    }
    bos_inputs += b.inputs[i] == kBos;
  }
  EXPECT_GT(bos_inputs, 10);
  EXPECT_TRUE(operator_eq(s.rows(5, 3), s.rows(0, 8).slice(5, 3)));
  // Far rows (thousands of epochs in) are fast and pure; a batch across an epoch boundary too.
  const int64_t far = 1'000'000'000;
  EXPECT_TRUE(operator_eq(s.rows(far + 5, 3), s.rows(far, 8).slice(5, 3)));
  const int64_t boundary = 3 * s.epoch_tokens() / T;  // the row holding the start of epoch 3
  EXPECT_TRUE(operator_eq(s.rows(boundary + 1, 2), s.rows(boundary - 2, 6).slice(3, 2)));
  // Concurrent readers see the same rows.
  std::vector<Batch> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] { got[t] = s.rows(boundary + 1000 * t, 4); });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_TRUE(operator_eq(got[t], s.rows(boundary + 1000 * t, 4)));
}

TEST(PackedStream, RejectsBadArguments) {
  const std::vector<std::string> none;
  EXPECT_THROW(PackedStream(&none, 1, true, 8), std::invalid_argument);
  const std::vector<std::string> docs = {"a"};
  EXPECT_THROW(PackedStream(&docs, 1, true, 0), std::invalid_argument);
  EXPECT_THROW(PackedStream(&docs, 1, true, 8).rows(-1, 1), std::invalid_argument);
}

TEST(EvalRows, SmallText) {
  const int32_t h = 'h', e = 'e', l = 'l', o = 'o';
  Batch b = eval_rows_from_text("hello", 4);  // stream: BOS h e l l o EOS, 6 targets
  EXPECT_EQ(b.rows, 2);
  EXPECT_EQ(b.seq_len, 4);
  EXPECT_EQ(b.inputs, (std::vector<int32_t>{kBos, h, e, l, l, o, kEos, kEos}));
  EXPECT_EQ(b.targets, (std::vector<int32_t>{h, e, l, l, o, kEos, kNoTarget, kNoTarget}));

  b = eval_rows_from_text("abc", 4);  // exactly one full row of targets
  EXPECT_EQ(b.rows, 1);
  EXPECT_EQ(b.inputs, (std::vector<int32_t>{kBos, 'a', 'b', 'c'}));
  EXPECT_EQ(b.targets, (std::vector<int32_t>{'a', 'b', 'c', kEos}));

  b = eval_rows_from_text("", 3);
  EXPECT_EQ(b.rows, 1);
  EXPECT_EQ(b.inputs, (std::vector<int32_t>{kBos, kEos, kEos}));
  EXPECT_EQ(b.targets, (std::vector<int32_t>{kEos, kNoTarget, kNoTarget}));

  const std::string text(1000, 'x');
  b = eval_rows_from_text(text, 128);
  EXPECT_EQ(std::count_if(b.targets.begin(), b.targets.end(), [](int32_t t) { return t >= 0; }),
            1001);
  EXPECT_EQ(std::count(b.targets.begin(), b.targets.end(), kBos), 0);
  const std::string high = "\xff\x80";
  EXPECT_EQ(eval_rows_from_text(high, 8).inputs[1], 255);  // bytes are unsigned
}

}  // namespace
}  // namespace troupe::model
