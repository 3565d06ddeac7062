// launch/node_heap.h: what a node adds to GLIBC_TUNABLES, and when it leaves it alone.
#include "launch/node_heap.h"

#include <gtest/gtest.h>

#include <string>

namespace troupe::launch {
namespace {

const std::string kAdded = node_heap_tunables;

TEST(NodeHeap, UnsetGetsHugePagesOneArenaAndAFixedMmapThreshold) {
  EXPECT_EQ(kAdded,
            "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=1048576");
  EXPECT_EQ(node_heap_environment(nullptr).value(), kAdded);
  EXPECT_EQ(node_heap_environment("").value(), kAdded);
}

TEST(NodeHeap, OtherTunablesAreKept) {
  EXPECT_EQ(node_heap_environment("glibc.malloc.tcache_count=0").value(),
            "glibc.malloc.tcache_count=0:" + kAdded);
}

TEST(NodeHeap, AnOperatorsChoiceWinsAndTheExecHappensOnce) {
  EXPECT_FALSE(node_heap_environment("glibc.malloc.hugetlb=0"));  // the way to turn it off
  EXPECT_FALSE(node_heap_environment("glibc.malloc.arena_max=4"));
  EXPECT_FALSE(node_heap_environment("glibc.malloc.mmap_threshold=131072"));
  EXPECT_FALSE(node_heap_environment(kAdded.c_str()));
  // what the first exec set: the second process does not exec again
  EXPECT_FALSE(node_heap_environment(node_heap_environment("x.y=1")->c_str()));
}

}  // namespace
}  // namespace troupe::launch
