#include "storage/checked_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace troupe::storage {

using runtime::Code;
using runtime::Status;

namespace {

Status os_error(const std::string& verb, const std::string& path, int err) {
  return Status(Code::io_error, "cannot " + verb + " " + path + ": " + std::strerror(err));
}

}  // namespace

CheckedFile::~CheckedFile() {
  close();
}

Status CheckedFile::open(const std::string& path, bool append, const StorageFaults& faults) {
  close();
  path_ = path;
  failed_ = Status();
  written_bytes_ = 0;
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC);
  int fd;
  do {
    fd = ::open(path.c_str(), flags, 0644);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return os_error("open", path, errno);
  if (append) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      Status s = os_error("stat", path, errno);
      ::close(fd);
      return s;
    }
    written_bytes_ = st.st_size;
  }
  fd_ = fd;
  std::optional<int64_t> limit =
      faults.file_limit_bytes(std::filesystem::path(path).filename().string());
  limit_bytes_ = limit.value_or(-1);
  return Status();
}

Status CheckedFile::write(std::string_view bytes) {
  if (!failed_.ok()) return failed_;
  if (fd_ < 0) return Status(Code::io_error, "cannot write " + path_ + ": the file is not open");
  if (limit_bytes_ >= 0 && written_bytes_ + static_cast<int64_t>(bytes.size()) > limit_bytes_) {
    // Refused whole, as a full disk refuses the write that does not fit: no cut line.
    std::string name = std::filesystem::path(path_).filename().string();
    failed_ = Status(Code::io_error, "cannot write " + path_ + ": " + std::strerror(ENOSPC) +
                                         " (injected by TROUPE_STORAGE_FAULT file-full:" + name +
                                         "@" + std::to_string(limit_bytes_) + ")");
    return failed_;
  }
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(fd_, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      failed_ = os_error("write", path_, errno);
      return failed_;
    }
    p += n;
    left -= static_cast<size_t>(n);
    written_bytes_ += n;
  }
  return Status();
}

Status CheckedFile::sync() {
  if (!failed_.ok()) return failed_;
  if (fd_ < 0) return Status(Code::io_error, "cannot sync " + path_ + ": the file is not open");
  if (::fdatasync(fd_) != 0) failed_ = os_error("sync", path_, errno);
  return failed_;
}

void CheckedFile::close() {
  if (fd_ < 0) return;
  ::close(fd_);  // the data was written and, where it matters, synced: nothing to report
  fd_ = -1;
}

}  // namespace troupe::storage
