#pragma once
// A run directory belongs to one job: an exclusive flock on DIR/troupe.lock for the job's
// life. The file holds the holder's pid and command, so a second job is refused naming
// it. The lock goes with the process (kill -9 included): no stale lock to clean up.
#include <string>

#include "runtime/status.h"

namespace troupe::storage {

class RunLock {
 public:
  RunLock() = default;
  ~RunLock();  // releases the lock (the file stays)
  RunLock(RunLock&& o) noexcept;
  RunLock& operator=(RunLock&& o) noexcept;
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  // Creates dir if needed and takes the lock without waiting. Errors (Code::busy): "run
  // directory DIR is in use by pid P (WHAT); wait for it to end or choose another
  // --run-dir"; (Code::io_error) naming the file and strerror.
  static runtime::Result<RunLock> acquire(const std::string& dir, const std::string& what);
  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

}  // namespace troupe::storage
