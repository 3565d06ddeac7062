// A node process's heap in 2 MiB pages. A node killed with SIGKILL is torn down by the kernel
// (its memory first) before its sockets close or its launcher can see it, and that is the
// floor of every kill's detection: freeing ~200 MiB of 4 KiB pages took 10–45 ms on a loaded
// 2-core box, 2 MiB pages 1–10 ms. glibc's malloc puts its heap in transparent huge pages
// only when told at exec time (GLIBC_TUNABLES, read before main), and only for its main
// arena, so `troupe node` executes itself again once, same pid and arguments, with
// glibc.malloc.hugetlb=1 (madvise its memory for THP), glibc.malloc.arena_max=1 (one
// arena: the main one) and glibc.malloc.mmap_threshold=1048576: a block of 1 MiB or more is
// a mapping of its own, given back whole when freed. Left to itself, glibc raises that
// threshold to the size of each mapped block freed (up to 32 MiB), so the tensors of a
// later view come from the heap instead; its top, pinned by whatever lives above them,
// then only grows, and khugepaged refills the trimmed holes below it in 2 MiB pages: a
// node's RSS crept up with every change of view. docs/operations.md, "A node's heap".
#pragma once

#include <optional>
#include <string>

namespace troupe::launch {

// What a node adds to GLIBC_TUNABLES.
inline constexpr const char* node_heap_tunables =
    "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1:glibc.malloc.mmap_threshold=1048576";

// The GLIBC_TUNABLES a node should run with, given the current value (nullptr: unset); none
// when the current value already sets one of these tunables (the operator chose: hugetlb=0 turns
// this off) or already holds node_heap_tunables.
std::optional<std::string> node_heap_environment(const char* current);

// Executes /proc/self/exe with argv again under node_heap_environment(getenv(...)) when that
// asks for a change; returns (leaving the environment as it was) when it does not, or when
// the exec fails (with a warning on stderr naming why: the node runs on, with 4 KiB pages).
// Call it before any thread starts.
void exec_with_node_heap(char** argv);

}  // namespace troupe::launch
