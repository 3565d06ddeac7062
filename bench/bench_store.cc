// The checkpoint store's write bandwidth next to the disk's own (issue 12, make
// bench-checkpoint): storage::write_shards of a synthetic checkpoint (~BENCH_STORE_MIB MiB in
// shards of the tiny model's tensor sizes, cycled), and a plain sequential write() +
// fdatasync of the same bytes into the same directory (what `dd conv=fdatasync` measures),
// alternately, BENCH_STORE_REPEATS times each; medians and their ratio (issue 12: >= 0.5).
//
//   bench_store DIR      DIR: a directory on the disk to measure (created, emptied after)
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "bench/bench_timing.h"
#include "model/config.h"
#include "model/engram.h"
#include "model/params.h"
#include "storage/shard_store.h"

namespace {

using Clock = std::chrono::steady_clock;

int64_t env_int(const char* name, int64_t dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoll(v) : dflt;
}

// The tiny model's tensor sizes (floats), Engram tables included.
std::vector<int64_t> tiny_tensor_floats() {
  const troupe::model::ModelConfig cfg;  // the defaults are tiny (configs/tiny.toml)
  std::vector<int64_t> sizes;
  const troupe::model::ParamTable table(cfg);
  for (const auto& p : table.all()) sizes.push_back(p.numel);
  for (const auto& t : troupe::model::engram_tables(cfg)) sizes.push_back(t.rows * t.dim);
  return sizes;
}

// Shards of the tiny sizes, cycled until `floats` in all, viewing slices of `pool` (random
// floats: nothing for a compressor to find).
std::vector<troupe::storage::ShardData> synthetic_shards(const std::vector<float>& pool,
                                                         int64_t floats) {
  const std::vector<int64_t> sizes = tiny_tensor_floats();
  std::vector<troupe::storage::ShardData> shards;
  int64_t at = 0;
  for (size_t i = 0; at < floats; ++i) {
    const int64_t n = std::min({sizes[i % sizes.size()], floats - at, int64_t(pool.size() / 2)});
    const size_t offset = size_t(at) % (pool.size() - size_t(n));
    shards.push_back({"param/t" + std::to_string(i), {n}, pool.data() + offset, size_t(n)});
    at += n;
  }
  return shards;
}

double store_seconds(const std::string& dir, const std::vector<troupe::storage::ShardData>& s) {
  std::filesystem::remove_all(dir);
  const auto t0 = Clock::now();
  auto r = troupe::storage::write_shards(dir, "bench", 1, s);
  const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!r.ok()) {
    std::fprintf(stderr, "bench_store: write_shards failed: %s\n", r.status().message().c_str());
    std::exit(1);
  }
  std::filesystem::remove_all(dir);
  return sec;
}

// write() in chunks of the shards' sizes, then fdatasync: the same bytes, one file.
double plain_seconds(const std::string& path, const std::vector<troupe::storage::ShardData>& s) {
  const auto t0 = Clock::now();
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
  bool ok = fd >= 0;
  for (size_t i = 0; ok && i < s.size(); ++i) {
    const char* p = reinterpret_cast<const char*>(s[i].data);
    size_t left = s[i].floats * sizeof(float);
    while (ok && left > 0) {
      const ssize_t w = ::write(fd, p, left);
      ok = w > 0;
      p += ok ? w : 0;
      left -= ok ? size_t(w) : 0;
    }
  }
  ok = ok && ::fdatasync(fd) == 0;
  const double sec = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!ok) {
    std::fprintf(stderr, "bench_store: writing %s: %s\n", path.c_str(), std::strerror(errno));
    std::exit(1);
  }
  ::close(fd);
  std::filesystem::remove(path);
  return sec;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: bench_store DIR (a directory on the disk to measure)\n");
    return 2;
  }
  const std::string dir = argv[1];
  std::filesystem::create_directories(dir);
  const int64_t mib = env_int("BENCH_STORE_MIB", 256), repeats = env_int("BENCH_STORE_REPEATS", 3);
  const int64_t floats = mib * (1 << 20) / int64_t(sizeof(float));
  const std::vector<float> pool = troupe::bench::normal(int64_t(1) << 22, 12);  // 16 MiB
  const auto shards = synthetic_shards(pool, floats);
  std::vector<double> store, plain;
  for (int64_t r = 0; r < repeats; ++r) {  // alternately: the disk's mood hits both alike
    store.push_back(store_seconds(dir + "/store", shards));
    plain.push_back(plain_seconds(dir + "/plain.bin", shards));
  }
  const double bytes_mib = double(floats) * sizeof(float) / double(1 << 20);
  const double s = bytes_mib / median(store), p = bytes_mib / median(plain);
  std::printf("store write: %.0f MiB in %zu shards of the tiny model's tensor sizes, in %s\n",
              bytes_mib, shards.size(), dir.c_str());
  std::printf("  write_shards (shard file, synced)  %8.1f MiB/s (median of %ld)\n", s,
              long(repeats));
  std::printf("  write() + fdatasync, one file      %8.1f MiB/s (median of %ld): the disk\n", p,
              long(repeats));
  std::printf("  ratio store / disk                 %8.3f (issue 12: >= 0.50)\n", s / p);
  std::filesystem::remove_all(dir);
  return 0;
}
