#include "storage/shard_file.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <future>
#include <mutex>
#include <nlohmann/json.hpp>
#include <vector>

#include "storage/crc32c.h"
#include "storage/json_number.h"

namespace troupe::storage::shard_file {

using runtime::Code;
using runtime::Status;

namespace {

// Staging buffers outlive their file: a fresh 4 MiB buffer per checkpoint costs 1024 page
// faults, measured at ~6 ms of the writer's CPU on this VM, three times the O_DIRECT write
// itself. A process has one checkpoint writer at a time (per worker), rarely more.
constexpr size_t kStagesKeptMax = 2 * kStages;

// The free buffers (kStageBytes each), freed at exit: the leak checker sees them go.
struct StageCache {
  std::mutex mutex;
  std::vector<char*> free;
  ~StageCache() {
    for (char* b : free) std::free(b);
  }
};
StageCache g_stages;

char* take_stage() {
  {
    const std::lock_guard<std::mutex> lock(g_stages.mutex);
    if (!g_stages.free.empty()) {
      char* b = g_stages.free.back();
      g_stages.free.pop_back();
      return b;
    }
  }
  return static_cast<char*>(std::aligned_alloc(kDirectAlignBytes, kStageBytes));
}

void give_back_stage(char* b) {
  if (b == nullptr) return;
  const std::lock_guard<std::mutex> lock(g_stages.mutex);
  if (g_stages.free.size() < kStagesKeptMax)
    g_stages.free.push_back(b);
  else
    std::free(b);
}

}  // namespace

StagedFile::~StagedFile() {
  for (std::future<int>& f : pending_) f.wait();  // before their buffers and descriptor go
  if (fd_ >= 0) ::close(fd_);
  for (char* b : stage_) give_back_stage(b);
}

Status StagedFile::fail(const std::string& what, int err) {
  return Status(Code::io_error, fmt::format("cannot {} {}: {}", what, path_, std::strerror(err)));
}

Status StagedFile::open(const std::string& path) {
  path_ = path;
  constexpr int kFlags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC;
  fd_ = ::open(path.c_str(), kFlags | O_DIRECT, 0644);
  direct_ = fd_ >= 0;
  if (fd_ < 0 && errno == EINVAL) fd_ = ::open(path.c_str(), kFlags, 0644);  // e.g. tmpfs
  if (fd_ < 0) return fail("create", errno);
  for (char*& b : stage_)
    if ((b = take_stage()) == nullptr) return fail("allocate a write buffer for", ENOMEM);
  return Status();
}

namespace {

// pwrite of [buf, buf + bytes) at `at`, whole: 0 or the errno.
int write_all(int fd, const char* buf, size_t bytes, uint64_t at) {
  size_t done = 0;
  while (done < bytes) {
    const ssize_t w = ::pwrite(fd, buf + done, bytes - done, off_t(at + done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return w < 0 ? errno : ENOSPC;
    done += size_t(w);
  }
  return 0;
}

}  // namespace

// Waits for the oldest write in flight (all of them with `all`): the first error.
Status StagedFile::wait_pending(bool all) {
  int err = 0;
  while (!pending_.empty() && (all || pending_.size() + 1 >= kStages)) {
    const int e = pending_.front().get();
    pending_.pop_front();
    if (err == 0) err = e;
  }
  return err == 0 ? Status() : fail("write", err);
}

// The full stage goes to the disk on a thread of its own (it inherits this one's priority)
// while the next fills: the device has writes queued, and the copy and CRC of the next
// stage overlap them.
Status StagedFile::hand_off() {
  pending_.push_back(
      std::async(std::launch::async, write_all, fd_, stage_[cur_], kStageBytes, flushed_));
  flushed_ += kStageBytes;
  cur_ = (cur_ + 1) % kStages;
  used_ = 0;
  return wait_pending(/*all=*/false);  // the stage to fill next is free
}

Status StagedFile::append(const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    // A full stage is handed off only when more comes (staged_byte sees the last bytes).
    if (used_ == kStageBytes)
      if (Status s = hand_off(); !s.ok()) return s;
    const size_t take = std::min(n, kStageBytes - used_);
    std::memcpy(stage_[cur_] + used_, p, take);
    used_ += take, p += take, n -= take;
  }
  return Status();
}

char* StagedFile::staged_byte(uint64_t at) {
  return at >= flushed_ && at < flushed_ + used_ ? stage_[cur_] + (at - flushed_) : nullptr;
}

Status StagedFile::finish() {
  if (Status s = wait_pending(/*all=*/true); !s.ok()) return s;
  const uint64_t total = size();
  size_t out = used_;
  if (direct_) {  // whole blocks; the padding is cut off again below
    out = (used_ + kDirectAlignBytes - 1) / kDirectAlignBytes * kDirectAlignBytes;
    std::memset(stage_[cur_] + used_, 0, out - used_);
  }
  if (int err = write_all(fd_, stage_[cur_], out, flushed_); err != 0) return fail("write", err);
  flushed_ += used_;
  used_ = 0;
  if (direct_ && out != 0 && ::ftruncate(fd_, off_t(total)) != 0) return fail("truncate", errno);
  if (::fdatasync(fd_) != 0) return fail("sync", errno);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) return fail("close", errno);
  return Status();
}

namespace {

uint64_t le(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t(p[i]) << (8 * i);
  return v;
}

Status bad(const std::string& path, const std::string& what) {
  return Status(Code::io_error, fmt::format("{}: not a readable shard file: {}", path, what));
}

bool read_at(int fd, void* out, size_t n, uint64_t at) {
  char* p = static_cast<char*>(out);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, off_t(at));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r, n -= size_t(r), at += uint64_t(r);
  }
  return true;
}

}  // namespace

Status read_index(int fd, const std::string& path, uint64_t file_bytes,
                  std::map<std::string, Extent>* index) {
  unsigned char head[kFileHeaderBytes], tail[kTrailerBytes];
  if (file_bytes < kFileHeaderBytes + kTrailerBytes || !read_at(fd, head, sizeof head, 0) ||
      !read_at(fd, tail, sizeof tail, file_bytes - kTrailerBytes))
    return bad(path, fmt::format("{} bytes, too short for a header and trailer", file_bytes));
  if (std::memcmp(head, kFileMagic, 4) != 0 || std::memcmp(tail + 16, kTrailerMagic, 4) != 0)
    return bad(path, "no TRSF magic at its start or TRSE at its end (cut short?)");
  if (le(head + 4, 4) != kVersion) return bad(path, fmt::format("version {}", le(head + 4, 4)));
  const uint64_t at = le(tail, 8), n = le(tail + 8, 4);
  const auto crc = uint32_t(le(tail + 12, 4));
  if (n > kIndexBytesMax || at < kFileHeaderBytes || at + n != file_bytes - kTrailerBytes)
    return bad(path, fmt::format("index of {} bytes at {} in a file of {}", n, at, file_bytes));
  std::string text(n, '\0');
  if (!read_at(fd, text.data(), n, at)) return bad(path, "cannot read its index");
  if (crc32c(text.data(), n) != crc) return bad(path, "its index fails its CRC32C");
  try {
    for (const nlohmann::json& e : nlohmann::json::parse(text)) {
      const auto offset = json_integer<uint64_t>(e.at("offset"));
      const auto size = json_integer<uint64_t>(e.at("size"));
      if (!offset || !size)
        return bad(path,
                   fmt::format("shard {} has no integer offset and size", e.at("name").dump()));
      const Extent x{*offset, *size};
      if (x.offset < kFileHeaderBytes || x.size > at || x.offset > at - x.size)
        return bad(path, fmt::format("shard {} lies outside the values", e.at("name").dump()));
      (*index)[e.at("name").get<std::string>()] = x;
    }
  } catch (const nlohmann::json::exception& e) {
    return bad(path, std::string("its index is malformed: ") + e.what());
  }
  return Status();
}

}  // namespace troupe::storage::shard_file
