// The exit statuses of a `troupe node` process, where its launcher reads them (troupe launch,
// a site's): header-only, so that launch/'s supervisor needs nothing else of the runtime.
// docs/operations.md lists them.
#pragma once

namespace troupe::runtime {

// 0: the node left on purpose (the job ended, or it was drained); 1: an error of its own
// (it says which); 2: a usage error (bad arguments).
//
// The node was evicted: told, by a Shutdown with an epoch, that the job went on without it
// (declared lost for missed heartbeats: it was hung or stopped, then woke up; or fenced by a
// restarted coordinator). Not 0, so that a launcher replaces it as a node that died
// ([fault_tolerance] replace_lost) rather than taking it for one that left.
inline constexpr int exit_status_evicted = 3;

}  // namespace troupe::runtime
