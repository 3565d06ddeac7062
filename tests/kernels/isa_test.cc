// The instruction-set check that `troupe` runs before anything else, and parallel_for.
#include "kernels/cpu/isa.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "kernels/cpu/parallel_for.h"

namespace troupe::kernels {
namespace {

TEST(Isa, ThisCpuHasWhatTheTestsWereBuiltFor) {
  // The tests are built with -march=native on this machine and run on it.
  const uint32_t compiled = isa_compiled_here(), cpu = isa_of_this_cpu();
  EXPECT_NE(compiled, 0u) << "-march=native enables at least SSE4.2 on any machine we run on";
  char missing[256];
  EXPECT_EQ(isa_missing(compiled, cpu, missing, sizeof missing), 0) << missing;
  EXPECT_EQ(std::string(missing), "");
}

TEST(Isa, NamesWhatTheCpuLacks) {
  char out[256];
  EXPECT_EQ(isa_missing(isa_avx2 | isa_fma | isa_avx512f | isa_avx512bw, isa_avx2 | isa_fma, out,
                        sizeof out),
            2);
  EXPECT_EQ(std::string(out), "avx512f avx512bw");
  EXPECT_EQ(isa_missing(isa_avx512vpopcntdq, 0, out, sizeof out), 1);
  EXPECT_EQ(std::string(out), "avx512vpopcntdq");
  // A short buffer: still counted, still terminated.
  char small[6];
  EXPECT_EQ(isa_missing(isa_avx | isa_avx2 | isa_fma, 0, small, sizeof small), 3);
  EXPECT_EQ(std::string(small), "avx a");
}

}  // namespace
}  // namespace troupe::kernels

namespace troupe::kernels {
namespace {

// A throwing item (an expert shard's answer cut short by a view change) reaches the caller
// as its exception: never std::terminate from a pool thread, and no item starts after it.
TEST(ParallelFor, AnItemThatThrowsEndsTheLoopOnTheCallingThread) {
  std::atomic<int64_t> ran{0};
  EXPECT_THROW(parallel_for(1000, 4,
                            [&](int64_t i, int) {
                              ++ran;
                              if (i == 3) throw std::runtime_error("item 3");
                              std::this_thread::sleep_for(std::chrono::milliseconds(1));
                            }),
               std::runtime_error);
  EXPECT_LT(ran.load(), 1000);
  int64_t sum = 0;  // and the loop is usable again
  std::mutex mu;
  parallel_for(100, 4, [&](int64_t i, int) {
    std::lock_guard<std::mutex> lock(mu);
    sum += i;
  });
  EXPECT_EQ(sum, 4950);
}

}  // namespace
}  // namespace troupe::kernels
