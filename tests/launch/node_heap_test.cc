// launch/node_heap.h: what a node adds to GLIBC_TUNABLES, and when it leaves it alone.
#include "launch/node_heap.h"

#include <gtest/gtest.h>

namespace troupe::launch {
namespace {

TEST(NodeHeap, UnsetGetsHugePagesAndOneArena) {
  EXPECT_EQ(node_heap_environment(nullptr).value(),
            "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1");
  EXPECT_EQ(node_heap_environment("").value(), "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1");
}

TEST(NodeHeap, OtherTunablesAreKept) {
  EXPECT_EQ(node_heap_environment("glibc.malloc.tcache_count=0").value(),
            "glibc.malloc.tcache_count=0:glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1");
}

TEST(NodeHeap, AnOperatorsChoiceWinsAndTheExecHappensOnce) {
  EXPECT_FALSE(node_heap_environment("glibc.malloc.hugetlb=0"));  // the way to turn it off
  EXPECT_FALSE(node_heap_environment("glibc.malloc.arena_max=4"));
  EXPECT_FALSE(node_heap_environment("glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1"));
  // what the first exec set: the second process does not exec again
  EXPECT_FALSE(node_heap_environment(node_heap_environment("x.y=1")->c_str()));
}

}  // namespace
}  // namespace troupe::launch
