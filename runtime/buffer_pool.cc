#include "runtime/buffer_pool.h"

#include <sys/mman.h>

#include <bit>
#include <cstdlib>
#include <new>

namespace troupe::runtime {

namespace {

size_t capacity_for(size_t bytes) {
  return std::bit_ceil(bytes < buffer_bytes_min ? buffer_bytes_min : bytes);
}

size_t class_of(size_t capacity) {
  return static_cast<size_t>(std::countr_zero(capacity));
}

}  // namespace

ByteBuffer::State::~State() {
  for (auto& list : free_by_class) {
    for (std::byte* p : list) std::free(p);
  }
}

ByteBuffer::~ByteBuffer() {
  if (data_ == nullptr) return;
  if (pool_) {
    std::lock_guard<std::mutex> lock(pool_->mutex);
    if (pool_->cached_bytes + capacity_ <= pool_->cached_bytes_max) {
      pool_->free_by_class[class_of(capacity_)].push_back(data_);
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

BufferPool::BufferPool(size_t cached_bytes_max) : state_(std::make_shared<ByteBuffer::State>()) {
  state_->cached_bytes_max = cached_bytes_max;
  state_->free_by_class.resize(64);
}

ByteBuffer BufferPool::get(size_t bytes) {
  ByteBuffer b;
  b.capacity_ = capacity_for(bytes);
  b.size_ = bytes;
  b.pool_ = state_;
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    auto& list = state_->free_by_class[class_of(b.capacity_)];
    if (!list.empty()) {
      b.data_ = list.back();
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
