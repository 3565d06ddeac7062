// What one checkpoint of tiny costs in CPU, phase by phase (issue 12, make bench-checkpoint):
// the process's CPU time (CLOCK_PROCESS_CPUTIME_ID: the trainer's threads are idle between
// steps, so it is the phase's and the helper threads it starts), which another process's
// load moves far less than wall time, of each piece of work a checkpoint does, next to the
// CPU of the 10 training steps it belongs to. On a box whose every core trains, the stall
// tends to the extra CPU over the block's CPU. Also what the alternatives cost: the SST the
// RocksDB store wrote, plain buffered writes, O_DIRECT.
//
//   bench_checkpoint_phases CONFIG DIR   DIR: a directory on the disk (created, removed after)
// BENCH_PHASES_REPEATS (7): repeats of each phase; medians are printed.
#include <fcntl.h>
#include <rocksdb/sst_file_writer.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "bench/bench_timing.h"
#include "config/config_parse.h"
#include "storage/checkpoint.h"
#include "storage/crc32c.h"
#include "storage/shard_store.h"
#include "train/trainer.h"

namespace {

using namespace troupe;

int64_t env_int(const char* name, int64_t dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoll(v) : dflt;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

double process_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// The calling thread's system CPU seconds and minor page faults so far.
std::pair<double, long> thread_sys() {
  rusage ru{};
  getrusage(RUSAGE_THREAD, &ru);
  return {double(ru.ru_stime.tv_sec) + 1e-6 * double(ru.ru_stime.tv_usec), ru.ru_minflt};
}

double g_sys_ms = 0, g_faults = 0;  // of the last cpu_ms: medians of system CPU and faults

// Median thread CPU ms of fn over `repeats` calls (one untimed first).
double cpu_ms(int64_t repeats, const std::function<void()>& fn) {
  fn();
  std::vector<double> t, sys, faults;
  for (int64_t i = 0; i < repeats; ++i) {
    const auto s0 = thread_sys();
    // The process's CPU: helper threads a phase starts count (the trainer's are idle).
    const double t0 = process_seconds();
    fn();
    t.push_back(1e3 * (process_seconds() - t0));
    const auto s1 = thread_sys();
    sys.push_back(1e3 * (s1.first - s0.first));
    faults.push_back(double(s1.second - s0.second));
  }
  g_sys_ms = median(sys), g_faults = median(faults);
  return median(t);
}

size_t total_bytes(const std::vector<model::StateTensor>& snap) {
  size_t n = 0;
  for (const auto& t : snap) n += t.data.size() * sizeof(float);
  return n;
}

// Writes every tensor of snap to one file with write(), then fdatasync. False on a failure.
bool plain_write(const std::string& path, const std::vector<model::StateTensor>& snap) {
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  bool ok = true;
  for (const auto& t : snap) {
    const char* p = reinterpret_cast<const char*>(t.data.data());
    size_t left = t.data.size() * sizeof(float);
    while (ok && left > 0) {
      const ssize_t w = ::write(fd, p, left);
      ok = w > 0;
      if (ok) p += w, left -= size_t(w);
    }
  }
  if (ok) ok = ::fdatasync(fd) == 0;
  ::close(fd);
  return ok;
}

// buf (aligned, `bytes` a multiple of 4 KiB) with O_DIRECT, then fdatasync.
bool direct_write(const std::string& path, const char* buf, size_t bytes) {
  const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC | O_DIRECT, 0644);
  if (fd < 0) return false;
  bool ok = true;
  size_t at = 0;
  while (ok && at < bytes) {
    const ssize_t w = ::pwrite(fd, buf + at, std::min<size_t>(bytes - at, 8 << 20), off_t(at));
    ok = w > 0;
    if (ok) at += size_t(w);
  }
  if (ok) ok = ::fdatasync(fd) == 0;
  ::close(fd);
  return ok;
}

// One SST file of every shard (SstFileWriter Put, Finish: synced), as the RocksDB store before
// the shard file wrote it before ingesting it into a fresh database.
bool sst_write(const std::string& path, const std::vector<model::StateTensor>& snap) {
  rocksdb::Options o;
  o.compression = rocksdb::kNoCompression;
  rocksdb::SstFileWriter sst(rocksdb::EnvOptions(), o);
  if (!sst.Open(path).ok()) return false;
  std::vector<size_t> order(snap.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return snap[a].name < snap[b].name; });
  std::string value;
  for (size_t i : order) {
    value.assign(reinterpret_cast<const char*>(snap[i].data.data()), snap[i].data.size() * 4);
    if (!sst.Put(snap[i].name, value).ok()) return false;
  }
  return sst.Finish().ok();
}

// Median CPU ms of 10 training steps (every thread), after `*step`.
double block_cpu_ms(model::Trainer* trainer, int64_t* step) {
  std::vector<double> cpu;
  for (int64_t r = 0; r < 3; ++r) {
    const double c0 = process_seconds();
    for (int i = 0; i < 10; ++i, ++*step) trainer->train_step(*step);
    cpu.push_back(1e3 * (process_seconds() - c0));
  }
  return median(cpu);
}

// Each phase's CPU ms, and the alternatives to its write, on `snap` (a snapshot of the state).
void measure_writes(const std::string& dir, const std::vector<model::StateTensor>& snap,
                    int64_t repeats) {
  const auto must = [](bool ok) {
    if (!ok) std::exit(1);
  };
  uint32_t sink = 0;
  const double crc = cpu_ms(repeats, [&] {
    for (const auto& t : snap) sink ^= storage::crc32c(t.data.data(), t.data.size() * 4);
  });
  const std::vector<storage::ShardData> views = storage::shard_views(snap);
  const double store = cpu_ms(repeats, [&] {
    std::filesystem::remove_all(dir + "/w");
    must(storage::write_shards(dir + "/w", "bench", 1, views).ok());
  });
  const double sys = g_sys_ms, faults = g_faults;
  const double sst = cpu_ms(repeats, [&] { must(sst_write(dir + "/a.sst", snap)); });
  const double plain = cpu_ms(repeats, [&] { must(plain_write(dir + "/plain", snap)); });
  const size_t aligned = (total_bytes(snap) + 4095) / 4096 * 4096;
  char* buf = static_cast<char*>(std::aligned_alloc(4096, aligned));
  std::memset(buf, 1, aligned);
  const double direct = cpu_ms(repeats, [&] { must(direct_write(dir + "/d", buf, aligned)); });
  std::free(buf);
  std::printf("  crc32c of every shard                    %7.2f\n", crc);
  std::printf(
      "  write_shards, all of it, synced          %7.2f   (the writer thread: system "
      "%.2f, %.0f page faults)\n",
      store, sys, faults);
  std::printf(
      "  for comparison: one SST file (SstFileWriter Put, Finish: synced), without the "
      "database  %.2f\n",
      sst);
  std::printf("  for comparison: the bytes by write() + fdatasync   %7.2f\n", plain);
  std::printf("  for comparison: the bytes by O_DIRECT + fdatasync  %7.2f   (sink %x)\n", direct,
              sink);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: bench_checkpoint_phases CONFIG DIR\n");
    return 2;
  }
  const int64_t repeats = env_int("BENCH_PHASES_REPEATS", 7);
  const std::string dir = argv[2];
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  model::JobConfig cfg = model::load_config(
      argv[1], {"train.steps=100000", "train.eval_every=0", "data.val_rows_max=4",
                "train.threads=" + std::to_string(env_int("BENCH_CKPT_THREADS", 0))});
  model::Trainer trainer(cfg);
  int64_t step = 0;
  for (; step < 3; ++step) trainer.train_step(step);
  const double block = block_cpu_ms(&trainer, &step);
  std::vector<model::StateTensor> snap;
  const model::FlatRange all{0, trainer.table.total()};
  const double snapshot = cpu_ms(repeats, [&] { trainer.snapshot_state_into(all, true, &snap); });
  std::printf("bench-checkpoint (phases): tiny, %d training thread(s), %zu shards, %.1f MB\n",
              trainer.threads(), snap.size(), double(total_bytes(snap)) / 1e6);
  std::printf("  10 training steps (the block a checkpoint every 10 belongs to)  %.0f\n", block);
  std::printf("CPU ms per checkpoint (the process's, median of %ld):\n", long(repeats));
  std::printf("  snapshot_state_into (training thread)    %7.2f\n", snapshot);
  measure_writes(dir, snap, repeats);
  std::filesystem::remove_all(dir);
  return 0;
}
