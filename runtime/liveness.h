#pragma once
// Failure detection by silence, from a checker that may itself have been paused.
#include <chrono>
#include <utility>

namespace troupe::runtime {

using steady = std::chrono::steady_clock;

// A periodic check that came more than half the timeout later than its period after the
// previous one was itself not running (SIGSTOP, Ctrl-Z, a stalled VM, no CPU): it cannot
// tell a silent peer from its own pause, so the silence over that gap must not count.
// Returns that gap, or zero for an ordinary check; `last` becomes `now` either way.
inline steady::duration own_pause(steady::time_point& last, steady::time_point now,
                                  std::chrono::milliseconds period,
                                  std::chrono::milliseconds timeout) {
  const steady::duration gap = now - std::exchange(last, now);
  return gap > period + timeout / 2 ? gap : steady::duration::zero();
}

}  // namespace troupe::runtime
