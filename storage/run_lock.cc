#include "storage/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>

namespace troupe::storage {

using runtime::Code;
using runtime::Result;
using runtime::Status;

namespace {

constexpr size_t kHolderBytesMax = 4096;  // "<pid> <what>\n": a command line, not a file

Status os_error(const std::string& verb, const std::string& path, int err) {
  return Status(Code::io_error, "cannot " + verb + " " + path + ": " + std::strerror(err));
}

// What the holder wrote: "<pid> <what>" without the newline ("" if unreadable: the holder
// may be between its truncate and its write).
std::string read_holder(int fd) {
  char buf[kHolderBytesMax];
  ssize_t n = ::pread(fd, buf, sizeof buf, 0);
  if (n <= 0) return "";
  std::string s(buf, static_cast<size_t>(n));
  if (size_t nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
  return s;
}

Status busy(const std::string& dir, const std::string& holder) {
  std::string pid = holder.substr(0, holder.find(' '));
  std::string what = holder.find(' ') == std::string::npos ? "" : holder.substr(pid.size() + 1);
  if (pid.empty()) pid = "unknown";
  if (what.empty()) what = "unknown command";
  return Status(Code::busy, "run directory " + dir + " is in use by pid " + pid + " (" + what +
                                "); wait for it to end or choose another --run-dir");
}

Status write_holder(int fd, const std::string& path, const std::string& what) {
  std::string line = std::to_string(::getpid()) + " " + what + "\n";
  if (::ftruncate(fd, 0) != 0) return os_error("truncate", path, errno);
  ssize_t n = ::pwrite(fd, line.data(), line.size(), 0);
  if (n < 0) return os_error("write", path, errno);
  if (static_cast<size_t>(n) != line.size())
    return Status(Code::io_error, "cannot write " + path + ": short write");
  return Status();
}

}  // namespace

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the flock
}

RunLock::RunLock(RunLock&& o) noexcept : fd_(o.fd_) {
  o.fd_ = -1;
}

RunLock& RunLock::operator=(RunLock&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

Result<RunLock> RunLock::acquire(const std::string& dir, const std::string& what) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Status(Code::io_error, "cannot create run directory " + dir + ": " + ec.message());
  std::string path = dir + "/troupe.lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return os_error("open", path, errno);
  int rc;
  do {
    rc = ::flock(fd, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    int err = errno;
    Status s = err == EWOULDBLOCK ? busy(dir, read_holder(fd)) : os_error("lock", path, err);
    ::close(fd);
    return s;
  }
  if (Status s = write_holder(fd, path, what); !s.ok()) {
    ::close(fd);
    return s;
  }
  RunLock lock;
  lock.fd_ = fd;
  return lock;
}

}  // namespace troupe::storage
