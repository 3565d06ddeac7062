#include "data/data.h"

#include <fmt/format.h>
#include <xxhash.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>

#include "data/arithmetic.h"
#include "model/rng.h"

namespace troupe::model {

namespace fs = std::filesystem;

namespace {
// Epoch layouts kept per stream: training touches one or two epochs at a time (a batch may
// straddle an epoch boundary); a few more cover evaluation and tests jumping around.
constexpr size_t kCachedEpochsMax = 4;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(fmt::format("cannot open corpus file '{}'", path.string()));
  std::stringstream s;
  s << in.rdbuf();
  if (in.bad())
    throw std::runtime_error(fmt::format("cannot read corpus file '{}'", path.string()));
  return s.str();
}
}  // namespace

std::vector<std::string> fortune_files(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw std::runtime_error(fmt::format(
        "corpus directory '{}' not found (install the Debian 'fortunes' package, or set "
        "data.corpus_dir)",
        dir));
  std::vector<std::string> files;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.find('.') != std::string::npos) continue;  // *.dat, *.u8, hidden files
    if (!e.is_regular_file(ec) || e.is_symlink(ec)) continue;
    files.push_back(e.path().string());
  }
  if (ec)
    throw std::runtime_error(
        fmt::format("cannot list corpus directory '{}': {}", dir, ec.message()));
  if (files.empty())
    throw std::runtime_error(
        fmt::format("corpus directory '{}' holds no fortune files (names without '.')", dir));
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<std::string> split_fortunes(const std::string& bytes) {
  std::vector<std::string> docs;
  std::string doc;
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t nl = bytes.find('\n', pos);
    const size_t end = nl == std::string::npos ? bytes.size() : nl + 1;  // line incl. '\n'
    const std::string_view line(bytes.data() + pos, end - pos);
    if (line == "%\n" || line == "%") {
      if (!doc.empty()) docs.push_back(std::move(doc));
      doc.clear();
    } else {
      doc.append(line);
    }
    pos = end;
  }
  if (!doc.empty()) docs.push_back(std::move(doc));
  return docs;
}

Corpus load_fortunes(const std::string& dir, int64_t val_modulus) {
  if (val_modulus <= 0)
    throw std::invalid_argument(
        fmt::format("load_fortunes: val_modulus = {}: must be positive", val_modulus));
  Corpus corpus;
  for (const std::string& file : fortune_files(dir)) {
    for (std::string& doc : split_fortunes(read_file(file))) {
      const uint64_t h = XXH64(doc.data(), doc.size(), 0);
      (h % static_cast<uint64_t>(val_modulus) == 0 ? corpus.val : corpus.train)
          .push_back(std::move(doc));
    }
  }
  return corpus;
}

Corpus load_corpus(const DataConfig& d, uint64_t seed) {
  if (d.source == DataSource::arithmetic) return arithmetic_corpus(d, seed);
  return load_fortunes(d.corpus_dir, d.val_modulus);
}

// ---- PackedStream ----------------------------------------------------------------------

struct PackedStream::Layout {
  std::vector<int64_t> order;   // document indices in this epoch's order
  std::vector<int64_t> starts;  // starts[k]: stream offset (in the epoch) of document order[k]
};

struct PackedStream::Cache {
  std::mutex mutex;
  std::vector<std::pair<int64_t, std::shared_ptr<const Layout>>> epochs;  // oldest first
};

PackedStream::PackedStream(const std::vector<std::string>* docs, uint64_t seed, bool shuffle,
                           int64_t seq_len)
    : docs_(docs),
      seed_(seed),
      shuffle_(shuffle),
      seq_len_(seq_len),
      cache_(std::make_shared<Cache>()) {
  if (!docs || docs->empty())
    throw std::invalid_argument("PackedStream: no documents (is the training split empty?)");
  if (seq_len <= 0)
    throw std::invalid_argument(
        fmt::format("PackedStream: seq_len = {}: must be positive", seq_len));
  for (const std::string& d : *docs) epoch_tokens_ += static_cast<int64_t>(d.size()) + 2;
}

std::vector<int64_t> PackedStream::epoch_order(int64_t epoch) const {
  const int64_t n = static_cast<int64_t>(docs_->size());
  std::vector<int64_t> order(n);
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  if (!shuffle_) return order;
  const CounterRng rng(seed_, purpose_of("data.shuffle"), static_cast<uint64_t>(epoch));
  for (int64_t i = n - 1; i >= 1; --i) {
    const uint64_t j = rng.bits(static_cast<uint64_t>(i)) % static_cast<uint64_t>(i + 1);
    std::swap(order[i], order[j]);
  }
  return order;
}

std::shared_ptr<const PackedStream::Layout> PackedStream::layout(int64_t epoch) const {
  if (!shuffle_) epoch = 0;  // every epoch is the file order
  {
    std::lock_guard<std::mutex> lock(cache_->mutex);
    for (const auto& [e, l] : cache_->epochs)
      if (e == epoch) return l;
  }
  auto l = std::make_shared<Layout>();  // built outside the lock: a pure function of epoch
  l->order = epoch_order(epoch);
  l->starts.resize(l->order.size());
  int64_t offset = 0;
  for (size_t k = 0; k < l->order.size(); ++k) {
    l->starts[k] = offset;
    offset += static_cast<int64_t>((*docs_)[l->order[k]].size()) + 2;
  }
  std::lock_guard<std::mutex> lock(cache_->mutex);
  if (cache_->epochs.size() >= kCachedEpochsMax) cache_->epochs.erase(cache_->epochs.begin());
  cache_->epochs.emplace_back(epoch, l);
  return l;
}

void PackedStream::fill(int64_t position, int64_t count, int32_t* out) const {
  int64_t epoch = position / epoch_tokens_;
  const int64_t offset = position % epoch_tokens_;
  std::shared_ptr<const Layout> l = layout(epoch);
  size_t k = static_cast<size_t>(std::upper_bound(l->starts.begin(), l->starts.end(), offset) -
                                 l->starts.begin() - 1);
  int64_t t = offset - l->starts[k];  // token index inside document k: 0 = BOS
  while (count > 0) {
    const std::string& doc = (*docs_)[l->order[k]];
    const int64_t len = static_cast<int64_t>(doc.size()) + 2;
    for (; t < len && count > 0; ++t, --count) {
      *out++ = t == 0         ? kBos
               : t == len - 1 ? kEos
                              : static_cast<int32_t>(static_cast<uint8_t>(doc[t - 1]));
    }
    if (count == 0) break;
    t = 0;
    if (++k == l->order.size()) l = layout(++epoch), k = 0;
  }
}

Batch PackedStream::rows(int64_t first_row, int64_t count) const {
  if (first_row < 0 || count < 0)
    throw std::invalid_argument(
        fmt::format("PackedStream::rows({}, {}): negative argument", first_row, count));
  const int64_t T = seq_len_;
  Batch b;
  b.rows = count;
  b.seq_len = T;
  b.inputs.resize(static_cast<size_t>(count * T));
  b.targets.resize(static_cast<size_t>(count * T));
  std::vector<int32_t> buf(static_cast<size_t>(T + 1));
  for (int64_t i = 0; i < count; ++i) {
    fill((first_row + i) * T, T + 1, buf.data());
    int32_t* in = b.inputs.data() + i * T;
    int32_t* tg = b.targets.data() + i * T;
    for (int64_t j = 0; j < T; ++j) {
      in[j] = buf[j];
      tg[j] = buf[j + 1] == kBos ? kNoTarget : buf[j + 1];
    }
  }
  return b;
}

Batch train_batch(const PackedStream& stream, int64_t step, int64_t batch_size) {
  return stream.rows(step * batch_size, batch_size);
}

Batch eval_rows_from_text(const std::string& bytes, int64_t seq_len) {
  if (seq_len <= 0)
    throw std::invalid_argument(
        fmt::format("eval_rows_from_text: seq_len = {}: must be positive", seq_len));
  const int64_t T = seq_len;
  const int64_t n = static_cast<int64_t>(bytes.size()) + 2;  // BOS bytes EOS
  auto token = [&](int64_t p) -> int32_t {
    if (p == 0) return kBos;
    if (p == n - 1) return kEos;
    return static_cast<uint8_t>(bytes[p - 1]);
  };
  Batch b;
  b.rows = (n - 1 + T - 1) / T;  // enough rows for the n−1 targets
  b.seq_len = T;
  b.inputs.assign(static_cast<size_t>(b.rows * T), kEos);
  b.targets.assign(static_cast<size_t>(b.rows * T), kNoTarget);
  for (int64_t p = 0; p < n - 1; ++p) {
    b.inputs[p] = token(p);
    b.targets[p] = token(p + 1);
  }
  return b;
}

}  // namespace troupe::model
