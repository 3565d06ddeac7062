// A workaround for UCX 1.13's shared-memory transport, which keeps a dead peer's receive FIFO
// and buffers mapped in every survivor for the survivor's whole life when the peer died
// with its FIFO full (it had stopped reading: hung, SIGSTOPped, or killed while behind).
//
// Why: a survivor's failed endpoint is discarded with a cancelling flush, and the mm
// transport's flush (uct_mm_ep_flush) answers "no resource" while the remote FIFO has no
// room, ignoring the cancel. The dead reader never makes room, so the discard never ends,
// the endpoint is never destroyed, and its attachments (the peer's 12 KiB FIFO and 4 MiB of
// receive buffers, ~0.6 MiB of it resident) stay. Measured in a 2-hour soak (2026-12-06):
// the anchor node held 9 such pairs after 70 minutes, every one of a process that had
// exited, every FIFO at head - tail = 64 (full), and the sweep below releases them.
// Upstream: openucx/ucx#11682 makes the flush look at local state only (open, 2026).
//
// The sweep: a FIFO segment mapped here whose creating process has exited, whose control
// block names that process (pid at its offset in uct_mm_fifo_ctl_t) and which holds unread
// elements is marked read (tail = head). Nobody reads it any more; the survivor's pending
// flush then finds room, and UCX destroys the endpoint and detaches both segments itself.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace troupe::runtime {

// The layout of UCX 1.13's uct_mm_fifo_ctl_t (src/uct/sm/mm/base/mm_iface.h): head in the
// first cache line, tail and the owner's pid at the start of the second.
inline constexpr size_t mm_fifo_head_offset = 0;
inline constexpr size_t mm_fifo_tail_offset = 128;
inline constexpr size_t mm_fifo_pid_offset = 136;
inline constexpr uint64_t mm_fifo_head_armed_bit = uint64_t{1} << 63;  // the reader armed events
// FIFO segments are small (64 elements of 128 B by default); receive-buffer segments are
// 4 MiB and never touched.
inline constexpr uint64_t mm_fifo_segment_bytes_max = uint64_t{1} << 20;
// More unread elements than this is not a FIFO of any config we run: left alone.
inline constexpr uint64_t mm_fifo_unread_max = uint64_t{1} << 16;

struct FifoSweep {
  int64_t released = 0;  // FIFOs marked read
  std::string detail;    // "pid 123 (shmid 456)" of each, for the log
};

// Sweeps this process's SysV mappings (/proc/self/maps, /proc/sysvipc/shm) as described
// above. Only for UCX 1.13, whose layout this is (ucx_layout_known); never throws.
FifoSweep release_dead_peer_fifos();

// A SysV mapping of this process (/proc/self/maps): its address range and segment id.
struct SysvMapping {
  uintptr_t start = 0, end = 0;
  int64_t shmid = -1;
  bool writable = false;
};
// Another process's with `maps` = "/proc/PID/maps".
std::vector<SysvMapping> sysv_mappings(const std::string& maps = "/proc/self/maps");
// shmid → the pid that created the segment (/proc/sysvipc/shm).
std::map<int64_t, pid_t> sysv_creators();

// Whether the linked UCX is 1.13.x (the layout above was read from it).
bool ucx_layout_known();

}  // namespace troupe::runtime
