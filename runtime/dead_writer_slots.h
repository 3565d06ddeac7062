// A workaround for UCX 1.13's shared-memory transport, whose receive FIFO stops for good
// when a writer dies in the middle of a write.
//
// Why: a writer claims the next slot of the reader's FIFO (compare-and-swap on its head),
// fills it (the message, or for a larger one the reader's receive buffer that the slot
// names), and only then flips the slot's owner bit to mark it ready (uct_mm_ep_am_common_send).
// The reader takes slots in order and waits at the first one not marked ready. A writer
// killed between the two (SIGKILL of a node that was sending, likely on a loaded machine
// where a thread can be preempted there) leaves a claimed slot that never becomes ready, and
// from then on nothing that any peer sends over shared memory is read: seen once as a
// coordinator that heard no node after a node was killed 17 ms into a job (launch.faults,
// --kill-node-at 0; UcxFabricPeerDown.APeerKilledMidWriteDoesNotStopOurReceives).
//
// The repair: a slot of this process's own receive FIFO that has been the first unready
// one for stuck_ms_min, while no process that maps the FIFO (every possible writer) is
// stopped, has a dead writer (a live one finishes a slot in microseconds once it runs; see
// dead_writer_stuck_ms_min for the risk of a writer starved longer). It is marked
// ready as an empty message for an active-message id no handler takes (UCX drops it, with a
// warning of its own), and the reader goes on. A stopped process may be the writer and
// would finish the slot when continued: while one maps the FIFO, nothing is touched.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace troupe::runtime {

// UCX 1.13's FIFO geometry at its defaults (src/uct/sm/mm/base/mm_iface.h): the control
// block takes 192 bytes (three 64-byte lines), then UCX_MM_FIFO_SIZE elements of
// UCX_MM_FIFO_ELEM_SIZE bytes; an element starts with flags (bit 0 owner, bit 1 inline),
// the active-message id and the length. An operator who sets either size turns this off.
inline constexpr size_t mm_fifo_ctl_bytes = 192;
inline constexpr uint64_t mm_fifo_elements = 64;
inline constexpr size_t mm_fifo_element_bytes = 128;
inline constexpr uint8_t mm_element_owner_bit = 1, mm_element_inline_bit = 2;
// UCT takes ids below 32 (UCT_AM_ID_BITS 5) and UCP registers 0-26 (ucp_types.h): the
// rest answer with UCT's stub handler, which drops the message and warns.
inline constexpr uint8_t mm_unhandled_am_id = 31;

// The first unready slot of one of our FIFOs, and since when it was seen so.
struct UnreadySlot {
  uint64_t index = 0;
  std::chrono::steady_clock::time_point since{};
};

struct SlotRepair {
  int64_t repaired = 0;  // slots marked ready
  std::string detail;    // what was repaired, or why a stuck slot was left, for the log
};

// The SysV segments this process created and maps writable (no byte of them is read). A
// fabric takes them before and after it makes its UCX worker: the new ones hold its receive
// FIFO. Only those are looked at: another fabric of the same process (tests) unmaps its own
// when it closes, and reading them then faulted (CI, 2026-12-06).
std::set<int64_t> own_sysv_segments();

// Looks at the receive FIFOs among `fifos` (shmids) as described above. `seen` carries the
// unready slots between calls (keyed by segment id). Only for UCX 1.13 with its default FIFO
// geometry; never throws.
SlotRepair repair_dead_writer_slots(const std::set<int64_t>& fifos,
                                    std::map<int64_t, UnreadySlot>* seen,
                                    std::chrono::milliseconds stuck_ms_min,
                                    std::chrono::steady_clock::time_point now);

// The processes other than this one that map SysV segment `shmid` (/proc/*/maps).
std::vector<pid_t> processes_mapping(int64_t shmid);

}  // namespace troupe::runtime
