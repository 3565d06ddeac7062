#include "runtime/buffer_pool.h"

#include <sys/mman.h>
#include <time.h>

#include <bit>
#include <cstdlib>
#include <mutex>
#include <new>
#include <stdexcept>
#include <utility>

namespace troupe::runtime {

struct ByteBuffer::State {
  struct Cached {
    std::byte* data;
    BufferPool::Clock::time_point released;
  };
  ~State();  // frees the cached buffers
  // Under the mutex: frees what idled past idle_max when a sweep is due.
  void sweep_if_due(BufferPool::Clock::time_point now);
  size_t release_idle(BufferPool::Clock::time_point now);
  std::mutex mutex;
  size_t cached_bytes = 0;
  size_t cached_bytes_max = 0;
  BufferPool::Clock::duration idle_max{};
  BufferPool::Clock::time_point next_sweep{};
  // Index: log2(capacity). Oldest first: released at the back, reused from the back.
  std::vector<std::vector<Cached>> free_by_class;
};

namespace {

size_t capacity_for(size_t bytes) {
  return std::bit_ceil(bytes < buffer_bytes_min ? buffer_bytes_min : bytes);
}

size_t class_of(size_t capacity) {
  return static_cast<size_t>(std::countr_zero(capacity));
}

// steady_clock's clock (CLOCK_MONOTONIC on Linux) as the kernel last ticked it, read from
// the vDSO page without asking the clocksource: a few ns, a few ms coarse, which is plenty
// for idle limits of seconds. steady_clock::now() costs ~40 ns on these VMs, and the pool
// read it twice per message: ~19% of the receiver's CPU at 1 KiB (perf, stop 51).
BufferPool::Clock::time_point coarse_now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return BufferPool::Clock::time_point(std::chrono::duration_cast<BufferPool::Clock::duration>(
      std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec)));
}

}  // namespace

ByteBuffer::State::~State() {
  for (auto& list : free_by_class) {
    for (const Cached& c : list) std::free(c.data);
  }
}

size_t ByteBuffer::State::release_idle(BufferPool::Clock::time_point now) {
  size_t freed = 0;
  for (size_t k = 0; k < free_by_class.size(); ++k) {
    auto& list = free_by_class[k];
    size_t idle = 0;  // the oldest are first
    while (idle < list.size() && now - list[idle].released > idle_max) ++idle;
    for (size_t i = 0; i < idle; ++i) std::free(list[i].data);
    list.erase(list.begin(), list.begin() + std::ptrdiff_t(idle));
    freed += idle * (size_t{1} << k);
  }
  cached_bytes -= freed;
  return freed;
}

void ByteBuffer::State::sweep_if_due(BufferPool::Clock::time_point now) {
  if (now < next_sweep) return;
  next_sweep = now + idle_max / 4;
  (void)release_idle(now);
}

ByteBuffer::~ByteBuffer() {
  if (data_ == nullptr) return;
  if (pool_) {
    const auto now = coarse_now();
    std::lock_guard<std::mutex> lock(pool_->mutex);
    pool_->sweep_if_due(now);
    if (pool_->cached_bytes + capacity_ <= pool_->cached_bytes_max) {
      pool_->free_by_class[class_of(capacity_)].push_back({data_, now});
      pool_->cached_bytes += capacity_;
      return;
    }
  }
  std::free(data_);
}

void ByteBuffer::swap(ByteBuffer& other) noexcept {
  std::swap(data_, other.data_);
  std::swap(size_, other.size_);
  std::swap(capacity_, other.capacity_);
  std::swap(pool_, other.pool_);
}

BufferPool::BufferPool(size_t cached_bytes_max, std::chrono::milliseconds idle_max)
    : state_(std::make_shared<ByteBuffer::State>()) {
  if (idle_max.count() <= 0) throw std::invalid_argument("BufferPool: idle_max must be > 0");
  state_->cached_bytes_max = cached_bytes_max;
  state_->idle_max = idle_max;
  state_->free_by_class.resize(64);
}

size_t BufferPool::release_idle(Clock::time_point now) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->release_idle(now);
}

size_t BufferPool::release_all() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  for (auto& list : state_->free_by_class) {
    for (const auto& c : list) std::free(c.data);
    list.clear();
  }
  return std::exchange(state_->cached_bytes, 0);
}

size_t BufferPool::cached_bytes() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->cached_bytes;
}

ByteBuffer BufferPool::get(size_t bytes) {
  ByteBuffer b;
  b.capacity_ = capacity_for(bytes);
  b.size_ = bytes;
  b.pool_ = state_;
  {
    const auto now = coarse_now();
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->sweep_if_due(now);
    auto& list = state_->free_by_class[class_of(b.capacity_)];
    if (!list.empty()) {
      b.data_ = list.back().data;
      list.pop_back();
      state_->cached_bytes -= b.capacity_;
      return b;
    }
  }
  const bool huge = b.capacity_ >= huge_page_bytes;
  b.data_ = static_cast<std::byte*>(
      std::aligned_alloc(huge ? huge_page_bytes : buffer_alignment_bytes, b.capacity_));
  if (b.data_ == nullptr) throw std::bad_alloc();
  // Best effort (the kernel may have THP off): fewer page faults and TLB misses, and cma's
  // copy into it pins 512x fewer pages.
  if (huge) (void)madvise(b.data_, b.capacity_, MADV_HUGEPAGE);
  return b;
}

}  // namespace troupe::runtime
