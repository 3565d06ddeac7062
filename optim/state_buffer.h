#pragma once
// The floats of an optimizer's state (AdamW's moments, Muon's momentum): in this process's
// memory, or offloaded (memory.offload_optimizer) to a file, read into a caller's window
// for each use and written back after it, so that only the tensor being updated is
// resident: the rest sits in the page cache (written back to the disk, and evicted, as the
// kernel needs), outside this process's memory. The values, and so every update's bits, are
// the same either way. Reading with pread into a reused window costs about a quarter of
// mapping the pages in and out of the file (MADV_POPULATE_WRITE / MADV_DONTNEED: page-table
// work per 4 KiB), measured on 100 MB.
//
// The file is created in $TMPDIR (default /var/tmp, on disk on Debian; /tmp may be a tmpfs,
// which would keep the pages in memory) and unlinked at once: nothing is left behind by a
// crash. (storage/ would be the natural home, but it sits above train/ and optim/: the file
// is a detail of this class, not a store.)
#include <cstddef>
#include <cstdint>
#include <vector>

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

  size_t size() const { return size_t(n_); }
  bool offloaded() const { return fd_ >= 0; }
  // Floats [at, at + n) to read or change: in memory, where they are; offloaded, read from
  // the file into `window` (grown to n floats). Concurrent fetches need their own windows.
  float* fetch(int64_t at, int64_t n, std::vector<float>& window) const;
  // After fetch(at, n, ...) changed them: offloaded, writes p[0, n) back to the file; in
  // memory nothing (p is where they live). Throws std::runtime_error naming the file error.
  void store(int64_t at, int64_t n, const float* p) const;
  // Copies of floats [at, at + n) out of and into the buffer.
  void read(int64_t at, int64_t n, float* out) const;
  void write(int64_t at, int64_t n, const float* in);

 private:
  float* data_ = nullptr;  // in memory only
  int64_t n_ = 0;
  int fd_ = -1;  // the offload file, or -1
  void swap(StateBuffer& o) noexcept;
};

}  // namespace troupe::model
