#pragma once
// A file every write of which is checked: the run directory's metrics.jsonl and
// events.jsonl. A failed write (full disk, I/O error, or the fault hook's file-full) is an
// error naming the file and the cause, at the write that failed, never a line silently cut.
#include <cstdint>
#include <string>
#include <string_view>

#include "runtime/status.h"
#include "storage/faults.h"

namespace troupe::storage {

class CheckedFile {
 public:
  CheckedFile() = default;
  ~CheckedFile();
  CheckedFile(const CheckedFile&) = delete;
  CheckedFile& operator=(const CheckedFile&) = delete;

  // Opens (creates) `path`; append keeps what is there, else it is truncated. Errors name
  // the path and strerror.
  runtime::Status open(const std::string& path, bool append, const StorageFaults& faults = {});
  // Writes all of `bytes` (retrying short writes) and, with flush, hands them to the kernel
  // (no fsync). The first failure is returned and every later call returns it too:
  // "cannot write <path>: No space left on device".
  runtime::Status write(std::string_view bytes);
  // fdatasync: for files whose loss matters (the last line of an ended job).
  runtime::Status sync();
  void close();
  bool is_open() const { return fd_ >= 0; }
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
  int64_t written_bytes_ = 0;  // since open, plus the size it had when appended to
  int64_t limit_bytes_ = -1;   // the fault hook's file-full limit (-1: none)
  runtime::Status failed_;
};

}  // namespace troupe::storage
