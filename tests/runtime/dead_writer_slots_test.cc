// The dead-writer slot repair (runtime/dead_writer_slots.h) on a SysV segment this process
// makes and formats as a UCX 1.13 receive FIFO whose next slot was claimed but never marked
// ready: it is marked ready (an empty message for an unhandled id) once it has been stuck
// long enough, and never while a process that maps the FIFO is stopped. (Against real UCX
// endpoints: UcxFabricPeerDown.APeerKilledMidWriteDoesNotStopOurReceives.)
#include "runtime/dead_writer_slots.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "runtime/dead_peer_fifos.h"

namespace troupe::runtime {
namespace {

using clock = std::chrono::steady_clock;

// Our own FIFO: slots [tail, head) claimed; those before `stuck` ready, `stuck` not, those
// after it ready (other writers went on).
class OwnFifo {
 public:
  OwnFifo(uint64_t tail, uint64_t stuck, uint64_t head) : stuck_(stuck) {
    id_ = shmget(IPC_PRIVATE, 12288, IPC_CREAT | 0600);
    base_ = static_cast<unsigned char*>(shmat(id_, nullptr, 0));
    const pid_t me = getpid();
    std::memcpy(base_ + mm_fifo_head_offset, &head, 8);
    std::memcpy(base_ + mm_fifo_tail_offset, &tail, 8);
    std::memcpy(base_ + mm_fifo_pid_offset, &me, sizeof me);
    for (uint64_t i = 0; i < mm_fifo_elements; ++i) *element(i) = mm_element_owner_bit;  // as UCX
    for (uint64_t i = tail; i < head; ++i) {
      const uint8_t ready = uint8_t((i / mm_fifo_elements) & 1);
      element(i)[0] = i == stuck ? uint8_t(ready ^ 1) : ready;
      element(i)[1] = 23;  // a UCP active message, written by its writer
    }
  }
  ~OwnFifo() {
    shmdt(base_);
    shmctl(id_, IPC_RMID, nullptr);
  }
  int id() const { return id_; }
  unsigned char* element(uint64_t i) {
    return base_ + mm_fifo_ctl_bytes + (i % mm_fifo_elements) * mm_fifo_element_bytes;
  }
  bool stuck_ready() {
    return (element(stuck_)[0] & mm_element_owner_bit) == ((stuck_ / mm_fifo_elements) & 1);
  }

 private:
  uint64_t stuck_;
  int id_ = -1;
  unsigned char* base_ = nullptr;
};

TEST(DeadWriterSlots, AStuckSlotIsMarkedReadyOnceItHasWaitedLongEnough) {
  OwnFifo fifo(100, 103, 110);  // round 1: ready slots show owner bit 1
  std::map<int64_t, UnreadySlot> seen;
  const auto t0 = clock::now();
  SlotRepair r = repair_dead_writer_slots({fifo.id()}, &seen, std::chrono::milliseconds(1000), t0);
  EXPECT_EQ(r.repaired, 0);
  EXPECT_FALSE(fifo.stuck_ready());
  ASSERT_EQ(seen.count(fifo.id()), 1u);
  EXPECT_EQ(seen[fifo.id()].index, 103u);
  r = repair_dead_writer_slots({fifo.id()}, &seen, std::chrono::milliseconds(1000),
                               t0 + std::chrono::seconds(2));
  EXPECT_EQ(r.repaired, 1) << r.detail;
  EXPECT_TRUE(fifo.stuck_ready());
  EXPECT_EQ(fifo.element(103)[1], mm_unhandled_am_id);
  EXPECT_NE(fifo.element(103)[0] & mm_element_inline_bit, 0);
  EXPECT_EQ(fifo.element(104)[1], 23) << "a slot after the stuck one was touched";
  EXPECT_NE(r.detail.find("slot 103"), std::string::npos) << r.detail;
}

// Only the FIFOs named are looked at (a fabric's own, found as it made its worker): another
// fabric of the same process may unmap its segments at any time.
TEST(DeadWriterSlots, OnlyTheNamedFifosAreLookedAt) {
  OwnFifo fifo(100, 103, 110);
  EXPECT_TRUE(own_sysv_segments().contains(fifo.id()));
  std::map<int64_t, UnreadySlot> seen;
  const SlotRepair r = repair_dead_writer_slots({fifo.id() + 1000000}, &seen,
                                                std::chrono::milliseconds(0), clock::now());
  EXPECT_EQ(r.repaired, 0) << r.detail;
  EXPECT_FALSE(fifo.stuck_ready());
  EXPECT_TRUE(seen.empty());
}

TEST(DeadWriterSlots, ASlotThatBecomesReadyOrMovesIsNotRepaired) {
  OwnFifo fifo(0, 5, 9);
  std::map<int64_t, UnreadySlot> seen;
  const auto t0 = clock::now();
  repair_dead_writer_slots({fifo.id()}, &seen, std::chrono::milliseconds(1000), t0);
  fifo.element(5)[0] = 0;  // its writer finished it: slot 6 is the one now (a fresh wait)
  fifo.element(6)[0] = 1;
  const SlotRepair r = repair_dead_writer_slots({fifo.id()}, &seen, std::chrono::milliseconds(1000),
                                                t0 + std::chrono::seconds(2));
  EXPECT_EQ(r.repaired, 0) << r.detail;
  EXPECT_EQ(fifo.element(6)[0], 1);
  EXPECT_EQ(seen[fifo.id()].index, 6u);
}

TEST(DeadWriterSlots, NothingIsTouchedWhileAProcessThatMapsTheFifoIsStopped) {
  OwnFifo fifo(0, 2, 4);
  const pid_t child = fork();
  if (child == 0) {
    if (shmat(fifo.id(), nullptr, 0) == reinterpret_cast<void*>(-1)) _exit(1);
    pause();
    _exit(0);
  }
  ASSERT_GT(child, 0);
  const auto deadline = clock::now() + std::chrono::seconds(10);
  while (processes_mapping(fifo.id()).empty() && clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(processes_mapping(fifo.id()), std::vector<pid_t>{child});
  kill(child, SIGSTOP);
  waitpid(child, nullptr, WUNTRACED);
  std::map<int64_t, UnreadySlot> seen;
  SlotRepair r =
      repair_dead_writer_slots({fifo.id()}, &seen, std::chrono::milliseconds(0), clock::now());
  EXPECT_EQ(r.repaired, 0);
  EXPECT_NE(r.detail.find("pid " + std::to_string(child)), std::string::npos) << r.detail;
  EXPECT_FALSE(fifo.stuck_ready());
  kill(child, SIGKILL);  // dead now: it detached, and cannot finish the slot any more
  waitpid(child, nullptr, 0);
  r = repair_dead_writer_slots({fifo.id()}, &seen, std::chrono::milliseconds(0), clock::now());
  EXPECT_EQ(r.repaired, 1) << r.detail;
  EXPECT_TRUE(fifo.stuck_ready());
}

}  // namespace
}  // namespace troupe::runtime
