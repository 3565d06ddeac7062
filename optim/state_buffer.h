#pragma once
// The floats of an optimizer's state (AdamW's moments, Muon's momentum): in this process's
// memory, or offloaded (memory.offload_optimizer) to a file mapped into it, whose pages are
// let go after each use so that they leave the process's resident memory for the page cache
// (written back to the disk, and evicted, as the kernel needs). The values, and so every
// update's bits, are the same either way.
//
// The file is created in $TMPDIR (default /var/tmp, on disk on Debian; /tmp may be a tmpfs,
// which would keep the pages in memory) and unlinked at once: nothing is left behind by a
// crash. (storage/ would be the natural home, but it sits above train/ and optim/: the file
// is a detail of this class, not a store.)
#include <cstddef>
#include <cstdint>

namespace troupe::model {

class StateBuffer {
 public:
  StateBuffer() = default;
  // n floats, all 0.
  StateBuffer(int64_t n, bool offload);
  StateBuffer(const StateBuffer& o);  // a copy of the values (offloaded again if o is)
  StateBuffer& operator=(const StateBuffer& o);
  StateBuffer(StateBuffer&& o) noexcept { swap(o); }
  StateBuffer& operator=(StateBuffer&& o) noexcept {
    swap(o);
    return *this;
  }
  ~StateBuffer();

  float* data() { return data_; }
  const float* data() const { return data_; }
  size_t size() const { return size_t(n_); }
  bool offloaded() const { return fd_ >= 0; }
  // Done with floats [at, at + n) for now: offloaded, their whole pages leave the resident
  // memory (the values stay in the file, and the next touch maps them back); else nothing.
  void release(int64_t at, int64_t n) const;
  // About to use floats [at, at + n): offloaded, their pages are mapped in with one call
  // (MADV_POPULATE_WRITE) rather than one fault per page; else nothing.
  void fetch(int64_t at, int64_t n) const;

 private:
  float* data_ = nullptr;
  int64_t n_ = 0;
  int fd_ = -1;  // the offload file, or -1 (data_ then from new[])
  void swap(StateBuffer& o) noexcept;
};

}  // namespace troupe::model
