#include "runtime/dead_writer_slots.h"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "runtime/dead_peer_fifos.h"

namespace troupe::runtime {

namespace {

// UCX_MM_FIFO_SIZE, UCX_SYSV_FIFO_ELEM_SIZE, ...: a geometry other than the one above.
bool fifo_geometry_overridden() {
  for (const char* name :
       {"UCX_MM_FIFO_SIZE", "UCX_MM_FIFO_ELEM_SIZE", "UCX_SYSV_FIFO_SIZE",
        "UCX_SYSV_FIFO_ELEM_SIZE", "UCX_POSIX_FIFO_SIZE", "UCX_POSIX_FIFO_ELEM_SIZE"})
    if (std::getenv(name) != nullptr) return true;
  return false;
}

// SIGSTOP or a tracer: state T or t in /proc/PID/stat.
bool stopped(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const size_t paren = text.rfind(')');
  return paren != std::string::npos && paren + 2 < text.size() &&
         (text[paren + 2] == 'T' || text[paren + 2] == 't');
}

std::byte* element(std::byte* base, uint64_t index) {
  return base + mm_fifo_ctl_bytes + (index % mm_fifo_elements) * mm_fifo_element_bytes;
}

// The owner bit a slot shows once written in the round of `index` (it flips every round).
uint8_t ready_owner_bit(uint64_t index) {
  return uint8_t((index / mm_fifo_elements) & 1);
}

}  // namespace

std::vector<pid_t> processes_mapping(int64_t shmid) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = pid_t(std::stol(name));
    if (pid == ::getpid()) continue;
    for (const SysvMapping& m : sysv_mappings(entry.path().string() + "/maps")) {
      if (m.shmid != shmid) continue;
      out.push_back(pid);
      break;
    }
  }
  return out;
}

std::set<int64_t> own_sysv_segments() {
  std::set<int64_t> out;
  try {
    const std::map<int64_t, pid_t> creators = sysv_creators();
    for (const SysvMapping& m : sysv_mappings()) {
      const auto c = creators.find(m.shmid);
      if (c != creators.end() && c->second == ::getpid() && m.writable) out.insert(m.shmid);
    }
  } catch (const std::exception&) {
    // /proc unreadable or malformed: none known, so none is ever repaired
  }
  return out;
}

SlotRepair repair_dead_writer_slots(const std::set<int64_t>& fifos,
                                    std::map<int64_t, UnreadySlot>* seen,
                                    std::chrono::milliseconds stuck_ms_min,
                                    std::chrono::steady_clock::time_point now) {
  SlotRepair out;
  try {
    if (!ucx_layout_known() || fifo_geometry_overridden()) return out;
    const size_t fifo_bytes = mm_fifo_ctl_bytes + mm_fifo_elements * mm_fifo_element_bytes;
    std::map<int64_t, UnreadySlot> still;
    const std::vector<SysvMapping> mappings = sysv_mappings();
    std::map<int64_t, int> maps_of;
    for (const SysvMapping& m : mappings) ++maps_of[m.shmid];
    for (const SysvMapping& m : mappings) {
      // own_sysv_segments() chose them: made by this process, mapped writable. One mapped
      // twice here is written by another fabric of this process (tests), which may unmap its
      // mapping while we read through it (CI, 2026-12-06, DepartedPeersLeaveNoStateBehind):
      // left alone.
      if (!fifos.contains(m.shmid) || !m.writable || maps_of[m.shmid] != 1) continue;
      if (m.end - m.start > mm_fifo_segment_bytes_max || m.end - m.start < fifo_bytes) continue;
      auto* base = reinterpret_cast<std::byte*>(m.start);
      pid_t owner = 0;
      std::memcpy(&owner, base + mm_fifo_pid_offset, sizeof owner);
      if (owner != ::getpid()) continue;  // not our receive FIFO's control block
      std::atomic_ref<uint64_t> head_ref(*reinterpret_cast<uint64_t*>(base + mm_fifo_head_offset));
      std::atomic_ref<uint64_t> tail_ref(*reinterpret_cast<uint64_t*>(base + mm_fifo_tail_offset));
      const uint64_t head = head_ref.load() & ~mm_fifo_head_armed_bit, tail = tail_ref.load();
      if (head <= tail || head - tail > mm_fifo_elements) continue;
      uint64_t first = head;
      for (uint64_t i = tail; i < head; ++i) {
        std::atomic_ref<uint8_t> flags(*reinterpret_cast<uint8_t*>(element(base, i)));
        if ((flags.load(std::memory_order_acquire) & mm_element_owner_bit) != ready_owner_bit(i)) {
          first = i;
          break;
        }
      }
      if (first == head) continue;  // every claimed slot is ready: the reader reads them
      const auto was = seen->find(m.shmid);
      UnreadySlot slot =
          was != seen->end() && was->second.index == first ? was->second : UnreadySlot{first, now};
      if (now - slot.since < stuck_ms_min) {
        still[m.shmid] = slot;
        continue;
      }
      std::vector<pid_t> stopped_writers;
      for (pid_t pid : processes_mapping(m.shmid))
        if (stopped(pid)) stopped_writers.push_back(pid);
      if (!stopped_writers.empty()) {
        still[m.shmid] = slot;
        out.detail +=
            fmt::format("{}slot {} of shmid {} left: pid {} maps it and is stopped",
                        out.detail.empty() ? "" : "; ", first, m.shmid, stopped_writers.front());
        continue;
      }
      std::byte* e = element(base, first);
      const uint16_t length = 0;
      e[1] = std::byte{mm_unhandled_am_id};
      std::memcpy(e + 2, &length, sizeof length);
      std::atomic_ref<uint8_t> flags(*reinterpret_cast<uint8_t*>(e));
      flags.store(uint8_t(mm_element_inline_bit | ready_owner_bit(first)),
                  std::memory_order_release);
      ++out.repaired;
      out.detail += fmt::format("{}slot {} of shmid {} ({} claimed after it)",
                                out.detail.empty() ? "" : "; ", first, m.shmid, head - first - 1);
    }
    *seen = std::move(still);
  } catch (const std::exception&) {
    // /proc unreadable or malformed: nothing repaired this time
  }
  return out;
}

}  // namespace troupe::runtime
