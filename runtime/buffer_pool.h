// Received payloads land in pooled, 64-byte-aligned buffers. Reusing buffers matters for
// bandwidth: a fresh 64 MiB allocation page-faults 16 K pages on first touch, which costs
// more than the transfer itself over shared memory. A buffer left in the pool unused for
// longer than its idle limit is freed: a stream of messages reuses its buffers within
// milliseconds, while a burst (a recovery's state transfer) must not keep its memory for the
// rest of a job. Without the limit a node's resident memory followed the largest burst seen
// so far and kept growing over a soak with a fault every 30 s.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace troupe::runtime {

// Buffers are handed out in power-of-two capacities from buffer_bytes_min up.
inline constexpr size_t buffer_bytes_min = 4096;      // one page: smaller gains nothing
inline constexpr size_t buffer_alignment_bytes = 64;  // a cache line; also fine for AVX-512
// Buffers of at least this capacity are aligned to it and asked to use transparent huge
// pages: x86-64's 2 MiB page.
inline constexpr size_t huge_page_bytes = size_t{2} << 20;
// A pooled buffer unused this long is freed (at the pool's next use).
inline constexpr std::chrono::milliseconds buffer_idle_ms_default{10000};

class BufferPool;

// An owning byte buffer; returns itself to its pool when destroyed. Move-only.
class ByteBuffer {
 public:
  ByteBuffer() = default;
  ByteBuffer(ByteBuffer&& other) noexcept { swap(other); }
  ByteBuffer& operator=(ByteBuffer&& other) noexcept {
    ByteBuffer(std::move(other)).swap(*this);
    return *this;
  }
  ByteBuffer(const ByteBuffer&) = delete;
  ByteBuffer& operator=(const ByteBuffer&) = delete;
  ~ByteBuffer();

  std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }

 private:
  friend class BufferPool;
  struct State;
  void swap(ByteBuffer& other) noexcept;

  std::byte* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_ = 0;
  std::shared_ptr<State> pool_;
};

// Thread-safe: get() on the fabric's thread, buffers released on any thread.
class BufferPool {
 public:
  using Clock = std::chrono::steady_clock;
  // cached_bytes_max: free buffers kept for reuse; beyond it, released buffers are freed.
  // idle_max: a cached buffer unused this long is freed when the pool is next used (a get
  // or a release, checked at most every idle_max / 4).
  explicit BufferPool(size_t cached_bytes_max,
                      std::chrono::milliseconds idle_max = buffer_idle_ms_default);
  // A buffer of exactly `bytes` size (capacity rounded up). Never fails short of
  // std::bad_alloc, which the caller's limit checks make unreachable in practice.
  ByteBuffer get(size_t bytes);
  // Frees the cached buffers released before `now - idle_max`; returns their bytes. Releases
  // are stamped with a coarse clock: up to a kernel tick (≤ 10 ms) earlier than they happened.
  size_t release_idle(Clock::time_point now);
  // Frees every cached buffer, however recently released; returns their bytes. Buffers in
  // use are not touched: they come back to the pool when released.
  size_t release_all();
  size_t cached_bytes() const;

 private:
  std::shared_ptr<ByteBuffer::State> state_;
};

}  // namespace troupe::runtime
