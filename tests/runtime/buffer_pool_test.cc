// The received-payload pool (runtime/buffer_pool.h): reuse, its byte cap, and the idle limit
// that keeps a burst's buffers from staying for the rest of a job.
#include "runtime/buffer_pool.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstring>
#include <thread>

namespace troupe::runtime {
namespace {

using namespace std::chrono_literals;
using Clock = BufferPool::Clock;

TEST(BufferPool, ReusesAReleasedBufferOfTheSameClass) {
  BufferPool pool(size_t{1} << 20);
  std::byte* first = nullptr;
  {
    ByteBuffer b = pool.get(5000);
    EXPECT_EQ(b.size(), 5000u);
    EXPECT_EQ(b.capacity(), 8192u);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % buffer_alignment_bytes, 0u);
    first = b.data();
  }
  EXPECT_EQ(pool.cached_bytes(), 8192u);
  ByteBuffer again = pool.get(6000);
  EXPECT_EQ(again.data(), first);
  EXPECT_EQ(pool.cached_bytes(), 0u);
}

TEST(BufferPool, KeepsNoMoreThanItsCap) {
  BufferPool pool(8192);
  { ByteBuffer a = pool.get(8192), b = pool.get(8192); }
  EXPECT_EQ(pool.cached_bytes(), 8192u);  // the second went back to malloc
}

TEST(BufferPool, FreesOnlyTheBuffersIdleLongerThanItsLimit) {
  const auto idle = 2000ms;  // far above the 100 ms sleep, even on a loaded machine
  BufferPool pool(size_t{1} << 20, idle);
  { ByteBuffer a = pool.get(4096); }  // released first: the older
  std::this_thread::sleep_for(100ms);
  const Clock::time_point before_b = Clock::now();
  // The pool stamps releases with a coarse clock (a kernel tick, ≤ 10 ms, behind): released
  // 50 ms after before_b, `b`'s stamp is after before_b.
  std::this_thread::sleep_for(50ms);
  { ByteBuffer b = pool.get(100000); }  // another class, released after before_b
  EXPECT_EQ(pool.cached_bytes(), 4096u + 131072u);
  EXPECT_EQ(pool.release_idle(before_b), 0u);  // neither idled 2 s by then
  // At before_b + idle: `a` idled at least 2.1 s, `b` at most 2 s.
  EXPECT_EQ(pool.release_idle(before_b + idle), 4096u);
  EXPECT_EQ(pool.cached_bytes(), 131072u);
  EXPECT_EQ(pool.release_idle(Clock::now() + idle + 1ms), 131072u);
  EXPECT_EQ(pool.cached_bytes(), 0u);
}

TEST(BufferPool, ReleaseAllFreesEveryCachedBufferButNoneInUse) {
  BufferPool pool(size_t{64} << 20);  // the default idle limit: nothing idles in this test
  ByteBuffer held = pool.get(8192);
  std::memset(held.data(), 7, held.size());
  { ByteBuffer a = pool.get(4096), b = pool.get(size_t{3} << 20); }  // two classes, cached
  EXPECT_EQ(pool.cached_bytes(), 4096u + (size_t{4} << 20));
  EXPECT_EQ(pool.release_all(), 4096u + (size_t{4} << 20));
  EXPECT_EQ(pool.cached_bytes(), 0u);
  EXPECT_EQ(pool.release_all(), 0u);
  EXPECT_EQ(std::to_integer<int>(held.data()[held.size() - 1]), 7);  // in use: untouched
  held = ByteBuffer();  // released after the sweep: cached again
  EXPECT_EQ(pool.cached_bytes(), 8192u);
}

TEST(BufferPool, UsingThePoolSweepsWhatIdled) {
  BufferPool pool(size_t{64} << 20, 20ms);
  { ByteBuffer a = pool.get(size_t{4} << 20); }  // a burst's buffer
  EXPECT_EQ(pool.cached_bytes(), size_t{4} << 20);
  std::this_thread::sleep_for(50ms);
  ByteBuffer small = pool.get(64);  // the stream goes on with small messages
  EXPECT_EQ(pool.cached_bytes(), 0u);
}

TEST(BufferPool, RefusesANonPositiveIdleLimit) {
  EXPECT_THROW(BufferPool(1024, 0ms), std::invalid_argument);
}

}  // namespace
}  // namespace troupe::runtime
