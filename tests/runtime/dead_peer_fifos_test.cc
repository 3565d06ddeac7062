// The dead-peer FIFO sweep (runtime/dead_peer_fifos.h) on SysV segments made to look like
// UCX 1.13 FIFOs by a child process: it marks read only a FIFO whose creator has exited,
// whose control block names that creator and which holds unread elements, mapped here
// writable and small; everything else it leaves as it is. (The sweep against real UCX
// endpoints: UcxFabricPeerDown.* in peer_down_test.cc.)
#include "runtime/dead_peer_fifos.h"

#include <gtest/gtest.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

namespace troupe::runtime {
namespace {

struct Fake {
  uint64_t head = 100, tail = 36;
  bool names_creator = true;  // the control block's pid is the creator's
  size_t bytes = 12288;
  bool read_only = false;
};

// A segment made by a child process, formatted as `f` says, attached here.
class Segment {
 public:
  explicit Segment(const Fake& f, bool creator_stays = false) {
    int ids[2], go[2];
    if (pipe(ids) != 0 || pipe(go) != 0) return;
    child_ = fork();
    if (child_ == 0) {
      close(ids[0]), close(go[1]);  // else its own copy keeps the pipe from closing
      const int id = shmget(IPC_PRIVATE, f.bytes, IPC_CREAT | 0600);
      auto* base = static_cast<unsigned char*>(id < 0 ? nullptr : shmat(id, nullptr, 0));
      if (base != nullptr && base != reinterpret_cast<unsigned char*>(-1)) {
        const pid_t me = f.names_creator ? getpid() : 1;
        std::memcpy(base + mm_fifo_head_offset, &f.head, 8);
        std::memcpy(base + mm_fifo_tail_offset, &f.tail, 8);
        std::memcpy(base + mm_fifo_pid_offset, &me, sizeof me);
        shmdt(base);
      }
      (void)!write(ids[1], &id, sizeof id);
      char c = 0;
      if (creator_stays) (void)!read(go[0], &c, 1);  // until the test lets it exit
      _exit(0);
    }
    close(ids[1]), close(go[0]);
    go_ = go[1];
    if (read(ids[0], &id_, sizeof id_) != ssize_t(sizeof id_)) id_ = -1;
    close(ids[0]);
    if (!creator_stays) let_creator_exit();
    if (id_ >= 0)
      base_ = static_cast<unsigned char*>(shmat(id_, nullptr, f.read_only ? SHM_RDONLY : 0));
  }
  ~Segment() {
    let_creator_exit();
    if (attached()) shmdt(base_);
    if (id_ >= 0) shmctl(id_, IPC_RMID, nullptr);
  }
  void let_creator_exit() {
    if (go_ >= 0) close(go_), go_ = -1;
    if (child_ > 0) waitpid(child_, nullptr, 0), child_ = -1;
  }
  bool attached() const {
    return base_ != nullptr && base_ != reinterpret_cast<unsigned char*>(-1);
  }
  uint64_t tail() const {
    uint64_t t = 0;
    std::memcpy(&t, base_ + mm_fifo_tail_offset, 8);
    return t;
  }

 private:
  pid_t child_ = -1;
  int go_ = -1, id_ = -1;
  unsigned char* base_ = nullptr;
};

TEST(DeadPeerFifos, AFullFifoOfAnExitedProcessIsMarkedRead) {
  ASSERT_TRUE(ucx_layout_known()) << "the layout was read from UCX 1.13";
  Segment plain(Fake{});
  Segment armed(Fake{.head = mm_fifo_head_armed_bit | 80, .tail = 16});
  ASSERT_TRUE(plain.attached() && armed.attached());
  // Counts are at least: a process that ran other fabric tests may hold dead FIFOs too.
  const FifoSweep s = release_dead_peer_fifos();
  EXPECT_GE(s.released, 2) << s.detail;
  EXPECT_EQ(plain.tail(), 100u);
  EXPECT_EQ(armed.tail(), 80u);  // the reader's armed bit is not a count
  EXPECT_EQ(release_dead_peer_fifos().released, 0) << "marked twice";
}

TEST(DeadPeerFifos, WhatIsNotADeadPeersFullFifoIsLeftAlone) {
  ASSERT_TRUE(ucx_layout_known());
  Segment foreign(Fake{.names_creator = false});  // pid field is not its creator's
  Segment empty(Fake{.head = 50, .tail = 50});    // nothing unread
  Segment large(Fake{.bytes = size_t{2} << 20});  // receive buffers, not a FIFO
  Segment read_only(Fake{.read_only = true});     // UCX maps FIFOs writable
  Segment alive(Fake{}, /*creator_stays=*/true);  // its creator still runs
  ASSERT_TRUE(foreign.attached() && empty.attached() && large.attached() && read_only.attached() &&
              alive.attached());
  (void)release_dead_peer_fifos();
  EXPECT_EQ(foreign.tail(), 36u);
  EXPECT_EQ(empty.tail(), 50u);
  EXPECT_EQ(large.tail(), 36u);
  EXPECT_EQ(read_only.tail(), 36u);
  EXPECT_EQ(alive.tail(), 36u);
  alive.let_creator_exit();  // now it is a dead peer's
  EXPECT_GE(release_dead_peer_fifos().released, 1);
  EXPECT_EQ(alive.tail(), 100u);
}

}  // namespace
}  // namespace troupe::runtime
