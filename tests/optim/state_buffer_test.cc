// StateBuffer (optim/state_buffer.h): offloaded optimizer state keeps its values through
// stores and copies, stays out of the resident memory but for its window, and gives every
// update the bits of the in-memory state.
#include "optim/state_buffer.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <vector>

#include "config/config_parse.h"
#include "model/params.h"
#include "optim/optim.h"

namespace troupe::model {
namespace {

// This process's resident anonymous + file + shmem memory, from /proc/self/status (KiB).
int64_t rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
  return -1;
}

TEST(StateBuffer, OffloadedValuesSurviveStoreAndCopy) {
  const int64_t n = 1 << 20;
  StateBuffer b(n, true);
  ASSERT_TRUE(b.offloaded());
  std::vector<float> window;
  float* p = b.fetch(0, n, window);
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(p[i], 0.0f) << i;
  for (int64_t i = 0; i < n; ++i) p[i] = float(i) * 0.5f;
  b.store(0, n, p);
  std::vector<float> part(5);
  b.read(3, 5, part.data());
  EXPECT_EQ(part[4], 3.5f);
  StateBuffer c(b);
  ASSERT_TRUE(c.offloaded());
  std::vector<float> wb, wc;
  const float* pb = b.fetch(0, n, wb);
  const float* pc = c.fetch(0, n, wc);
  for (int64_t i = 0; i < n; i += 997) {
    EXPECT_EQ(pb[i], float(i) * 0.5f) << i;
    EXPECT_EQ(pc[i], float(i) * 0.5f) << i;
  }
  const float minus_one = -1.0f;
  c.write(7, 1, &minus_one);
  b.read(7, 1, part.data());
  EXPECT_EQ(part[0], 3.5f);  // a copy is a copy
  StateBuffer m(std::move(c));
  m.read(7, 1, part.data());
  EXPECT_EQ(part[0], -1.0f);
  EXPECT_FALSE(StateBuffer(4, false).offloaded());
}

TEST(StateBuffer, OnlyTheWindowIsResident) {
  const int64_t n = 64 << 20 >> 2;  // 64 MiB of floats
  StateBuffer b(n, true);
  const int64_t before = rss_kib();
  std::vector<float> window;
  const int64_t chunk = 1 << 18;  // 1 MiB
  for (int64_t at = 0; at < n; at += chunk) {
    float* p = b.fetch(at, chunk, window);
    for (int64_t i = 0; i < chunk; ++i) p[i] = 1.0f;
    b.store(at, chunk, p);
  }
  const int64_t after = rss_kib();
  // Under TSan every touched byte has 4 of shadow: the 1 MiB window costs ~5 MiB more RSS.
  // Either bound is far below the 64 MiB that resident state would add.
#if defined(__SANITIZE_THREAD__)
  const int64_t window_rss_kib_max = 12 << 10;
#else
  const int64_t window_rss_kib_max = 4 << 10;
#endif
  EXPECT_LT(after - before, window_rss_kib_max) << "offloaded state became resident";
  float last = 0;
  b.read(n - 1, 1, &last);
  EXPECT_EQ(last, 1.0f);
  const int64_t in_memory = rss_kib();
  StateBuffer here(n, false);
  std::vector<float> unused;
  float* p = here.fetch(0, n, unused);
  for (int64_t i = 0; i < n; ++i) p[i] = 1.0f;
  EXPECT_GT(rss_kib() - in_memory, 60 << 10) << "touching 64 MiB raised the RSS by less";
  EXPECT_TRUE(unused.empty());
}

// AdamW and Muon (both groups) over a tiny table, several steps: offloaded state, same bits.
TEST(StateBuffer, OffloadedOptimizerUpdatesGiveTheSameBits) {
  const JobConfig cfg = config_from_sets({"optimizer.name=muon", "model.engram_layers=[]"});
  const ParamTable table(cfg.model);
  std::vector<float> p1(size_t(table.total())), grads(p1.size());
  for (size_t i = 0; i < p1.size(); ++i) {
    p1[i] = float(int64_t(i % 17) - 8) * 0.01f;
    grads[i] = float(int64_t(i % 13) - 6) * 0.003f;
  }
  std::vector<float> p2 = p1;
  Optimizer here(table, cfg.optimizer, 0.1, 2), there(table, cfg.optimizer, 0.1, 2, {}, true);
  for (int64_t s = 0; s < 3; ++s) {
    here.update(p1.data(), grads.data(), 1e-3, 0.9, s);
    there.update(p2.data(), grads.data(), 1e-3, 0.9, s);
  }
  EXPECT_TRUE(p1 == p2);
  for (size_t t = 0; t < table.all().size(); ++t) {
    const int64_t n = here.state_floats_of(t);
    std::vector<float> a(static_cast<size_t>(n), 0.0f), b(a);
    if (n == 0) continue;
    here.read_state(t, a.data());
    there.read_state(t, b.data());
    EXPECT_TRUE(a == b) << table.all()[t].name;
  }
}

}  // namespace
}  // namespace troupe::model
