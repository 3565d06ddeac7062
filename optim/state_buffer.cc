#include "optim/state_buffer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

namespace troupe::model {

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::runtime_error("memory.offload_optimizer: " + what + ": " + std::strerror(errno) +
                           " (set TMPDIR to a directory on a disk with room, or "
                           "memory.offload_optimizer = false)");
}

// A file of `bytes` zero bytes in $TMPDIR, already unlinked.
int offload_file(int64_t bytes, std::string* dir_out) {
  const char* env = std::getenv("TMPDIR");
  const std::string dir = env && *env ? env : "/var/tmp";
  *dir_out = dir;
  std::string name = dir + "/troupe-optimizer-XXXXXX";
  const int fd = mkstemp(name.data());
  if (fd < 0) fail("cannot create a file in " + dir);
  unlink(name.c_str());
  if (ftruncate(fd, off_t(bytes)) != 0) {
    close(fd);
    fail("cannot size " + std::to_string(bytes) + " bytes in " + dir);
  }
  return fd;
}

}  // namespace

StateBuffer::StateBuffer(int64_t n, bool offload) : n_(n) {
  if (n <= 0) return;
  const size_t bytes = size_t(n) * sizeof(float);
  if (!offload) {
    data_ = new float[size_t(n)]();
    return;
  }
  std::string dir;
  fd_ = offload_file(int64_t(bytes), &dir);
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (p == MAP_FAILED) {
    close(fd_);
    fd_ = -1;
    fail("cannot map " + std::to_string(bytes) + " bytes of a file in " + dir);
  }
  data_ = static_cast<float*>(p);
}

StateBuffer::StateBuffer(const StateBuffer& o) : StateBuffer(o.n_, o.offloaded()) {
  if (n_ > 0) std::copy(o.data_, o.data_ + n_, data_);
  release(0, n_);
  o.release(0, o.n_);
}

StateBuffer& StateBuffer::operator=(const StateBuffer& o) {
  if (this != &o) {
    StateBuffer copy(o);
    swap(copy);
  }
  return *this;
}

StateBuffer::~StateBuffer() {
  if (!data_) return;
  if (fd_ < 0) {
    delete[] data_;
    return;
  }
  munmap(data_, size_t(n_) * sizeof(float));
  close(fd_);
}

void StateBuffer::release(int64_t at, int64_t n) const {
  if (fd_ < 0 || n <= 0) return;
  // Whole pages only, inward: a page shared with a neighbour's floats stays (a later
  // release of the neighbour, or of the whole buffer, takes it).
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(data_ + at) + page - 1) / page * page;
  const uintptr_t hi = reinterpret_cast<uintptr_t>(data_ + at + n) / page * page;
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

void StateBuffer::fetch(int64_t at, int64_t n) const {
#ifndef MADV_POPULATE_WRITE
  constexpr int MADV_POPULATE_WRITE = 23;  // Linux 5.14; older kernels refuse it: faults then
#endif
  if (fd_ < 0 || n <= 0) return;
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t lo = reinterpret_cast<uintptr_t>(data_ + at) / page * page;
  const uintptr_t hi = reinterpret_cast<uintptr_t>(data_ + at + n);
  madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_POPULATE_WRITE);
}

void StateBuffer::swap(StateBuffer& o) noexcept {
  std::swap(data_, o.data_);
  std::swap(n_, o.n_);
  std::swap(fd_, o.fd_);
}

}  // namespace troupe::model
