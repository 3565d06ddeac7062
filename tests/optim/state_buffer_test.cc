// StateBuffer (optim/state_buffer.h): offloaded optimizer state keeps its values through
// releases and copies, leaves the resident memory when released, and gives every update the
// bits of the in-memory state.
#include "optim/state_buffer.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

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

TEST(StateBuffer, OffloadedValuesSurviveReleaseAndCopy) {
  StateBuffer b(1 << 20, true);
  ASSERT_TRUE(b.offloaded());
  for (size_t i = 0; i < b.size(); ++i) EXPECT_EQ(b.data()[i], 0.0f) << i;
  for (size_t i = 0; i < b.size(); ++i) b.data()[i] = float(i) * 0.5f;
  b.release(0, int64_t(b.size()));
  b.release(3, 5);  // inside one page: nothing
  StateBuffer c(b);
  ASSERT_TRUE(c.offloaded());
  for (size_t i = 0; i < b.size(); i += 997) {
    EXPECT_EQ(b.data()[i], float(i) * 0.5f) << i;
    EXPECT_EQ(c.data()[i], float(i) * 0.5f) << i;
  }
  c.data()[7] = -1.0f;
  EXPECT_EQ(b.data()[7], 3.5f);  // a copy is a copy
  StateBuffer m(std::move(c));
  EXPECT_EQ(m.data()[7], -1.0f);
  EXPECT_FALSE(StateBuffer(4, false).offloaded());
}

TEST(StateBuffer, ReleasedPagesLeaveTheResidentMemory) {
  const int64_t n = 64 << 20 >> 2;  // 64 MiB of floats
  StateBuffer b(n, true);
  const int64_t before = rss_kib();
  for (int64_t i = 0; i < n; ++i) b.data()[i] = 1.0f;
  const int64_t touched = rss_kib();
  b.release(0, n);
  const int64_t released = rss_kib();
  EXPECT_GT(touched - before, 60 << 10) << "touching 64 MiB raised the RSS by less";
  EXPECT_LT(released - before, 4 << 10) << "released pages stayed resident";
  EXPECT_EQ(b.data()[n - 1], 1.0f);
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
