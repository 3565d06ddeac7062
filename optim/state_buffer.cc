#include "optim/state_buffer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

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

// All `bytes` at `offset`, looping over short transfers: written from a const buffer, read
// into a mutable one; fails naming the file error.
template <typename Byte>
void transfer(int fd, Byte* buf, int64_t bytes, int64_t offset) {
  constexpr bool out = std::is_const_v<Byte>;
  while (bytes > 0) {
    ssize_t got;
    if constexpr (out)
      got = pwrite(fd, buf, size_t(bytes), off_t(offset));
    else
      got = pread(fd, buf, size_t(bytes), off_t(offset));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      if (got == 0) errno = EIO;
      fail(std::string(out ? "cannot write " : "cannot read ") + std::to_string(bytes) +
           " bytes of the offload file at byte " + std::to_string(offset));
    }
    buf += got, bytes -= got, offset += got;
  }
}

}  // namespace

StateBuffer::StateBuffer(int64_t n, bool offload) : n_(n) {
  if (n <= 0) return;
  if (!offload) {
    data_ = new float[size_t(n)]();
    return;
  }
  std::string dir;
  fd_ = offload_file(n * int64_t(sizeof(float)), &dir);  // a sparse file reads as zeros
}

StateBuffer::StateBuffer(const StateBuffer& o) : StateBuffer(o.n_, o.offloaded()) {
  std::vector<float> chunk;
  constexpr int64_t kChunkFloats = int64_t(1) << 20;
  for (int64_t at = 0; at < n_; at += kChunkFloats) {
    const int64_t n = std::min(kChunkFloats, n_ - at);
    const float* p = o.fetch(at, n, chunk);
    write(at, n, p);
  }
}

StateBuffer& StateBuffer::operator=(const StateBuffer& o) {
  if (this != &o) {
    StateBuffer copy(o);
    swap(copy);
  }
  return *this;
}

StateBuffer::~StateBuffer() {
  delete[] data_;
  if (fd_ >= 0) close(fd_);
}

float* StateBuffer::fetch(int64_t at, int64_t n, std::vector<float>& window) const {
  if (fd_ < 0) return data_ + at;
  if (window.size() < size_t(n)) window.resize(size_t(n));
  read(at, n, window.data());
  return window.data();
}

void StateBuffer::store(int64_t at, int64_t n, const float* p) const {
  if (fd_ < 0 || n <= 0) return;
  transfer(fd_, reinterpret_cast<const char*>(p), n * int64_t(sizeof(float)),
           at * int64_t(sizeof(float)));
}

void StateBuffer::read(int64_t at, int64_t n, float* out) const {
  if (fd_ < 0) {
    std::copy(data_ + at, data_ + at + n, out);
    return;
  }
  transfer(fd_, reinterpret_cast<char*>(out), n * int64_t(sizeof(float)),
           at * int64_t(sizeof(float)));
}

void StateBuffer::write(int64_t at, int64_t n, const float* in) {
  if (fd_ < 0) {
    std::copy(in, in + n, data_ + at);
    return;
  }
  store(at, n, in);
}

void StateBuffer::swap(StateBuffer& o) noexcept {
  std::swap(data_, o.data_);
  std::swap(n_, o.n_);
  std::swap(fd_, o.fd_);
}

}  // namespace troupe::model
