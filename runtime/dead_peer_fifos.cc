#include "runtime/dead_peer_fifos.h"

#include <fmt/format.h>
#include <signal.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <vector>

namespace troupe::runtime {

namespace {

// Gone for sure: no such process (a reused pid counts as alive, and its FIFO is left).
bool exited(pid_t pid) {
  return pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH;
}

}  // namespace

std::vector<SysvMapping> sysv_mappings(const std::string& path) {
  std::vector<SysvMapping> out;
  std::ifstream maps(path);
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find("/SYSV") == std::string::npos) continue;
    std::istringstream in(line);
    std::string range, perms, offset, dev;
    SysvMapping m;
    if (!(in >> range >> perms >> offset >> dev >> m.shmid)) continue;
    const size_t dash = range.find('-');
    if (dash == std::string::npos) continue;
    m.start = uintptr_t(std::stoull(range.substr(0, dash), nullptr, 16));
    m.end = uintptr_t(std::stoull(range.substr(dash + 1), nullptr, 16));
    m.writable = perms.size() >= 2 && perms[0] == 'r' && perms[1] == 'w';
    out.push_back(m);
  }
  return out;
}

std::map<int64_t, pid_t> sysv_creators() {
  std::map<int64_t, pid_t> out;
  std::ifstream table("/proc/sysvipc/shm");
  std::string line;
  std::getline(table, line);  // the header
  while (std::getline(table, line)) {
    std::istringstream in(line);
    int64_t key = 0, shmid = 0, perms = 0, size = 0, cpid = 0;
    if (in >> key >> shmid >> perms >> size >> cpid) out[shmid] = pid_t(cpid);
  }
  return out;
}

bool ucx_layout_known() {
  unsigned major = 0, minor = 0, release = 0;
  ucp_get_version(&major, &minor, &release);
  return major == 1 && minor == 13;
}

FifoSweep release_dead_peer_fifos() {
  FifoSweep sweep;
  try {
    if (!ucx_layout_known()) return sweep;
    const std::vector<SysvMapping> mappings = sysv_mappings();
    if (mappings.empty()) return sweep;
    const std::map<int64_t, pid_t> creators = sysv_creators();
    for (const SysvMapping& m : mappings) {
      const auto c = creators.find(m.shmid);
      if (c == creators.end() || c->second == ::getpid() || !m.writable) continue;
      if (m.end - m.start > mm_fifo_segment_bytes_max ||
          m.end - m.start < mm_fifo_pid_offset + sizeof(pid_t))
        continue;
      if (!exited(c->second)) continue;
      auto* base = reinterpret_cast<std::byte*>(m.start);
      pid_t owner = 0;
      std::memcpy(&owner, base + mm_fifo_pid_offset, sizeof owner);
      if (owner != c->second) continue;  // not a FIFO control block of that process
      std::atomic_ref<uint64_t> head(*reinterpret_cast<uint64_t*>(base + mm_fifo_head_offset));
      std::atomic_ref<uint64_t> tail(*reinterpret_cast<uint64_t*>(base + mm_fifo_tail_offset));
      const uint64_t written = head.load() & ~mm_fifo_head_armed_bit;
      const uint64_t read = tail.load();
      if (written <= read || written - read > mm_fifo_unread_max) continue;
      tail.store(written);
      ++sweep.released;
      sweep.detail +=
          fmt::format("{}pid {} (shmid {}, {} unread)", sweep.detail.empty() ? "" : ", ", c->second,
                      m.shmid, written - read);
    }
  } catch (const std::exception&) {
    // /proc unreadable or malformed: nothing released this time
  }
  return sweep;
}

}  // namespace troupe::runtime
