// Invariants of our own code that stay checked in release builds (STYLE.md, TigerBeetle):
// TROUPE_ASSERT(cond, "format", args...) prints where it failed, the condition and the
// values that broke it, then aborts the process. For protocol invariants that only a bug
// of ours can break (an epoch going back, a step committed twice, a tensor with two
// owners): a peer's bad message is never a reason to stop, it is dropped (dispatch.h).
// Cheap checks only: it runs on the hot path of every step.
#pragma once

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "runtime/log.h"

namespace troupe::actors {

[[noreturn]] inline void invariant_failed(std::string_view file, int line, std::string_view cond,
                                          const std::string& values) {
  log::critical("invariant failed at {}:{}: {}: {}", file, line, cond, values);
  // A process whose log is off (troupe-sim, tests) still says why it aborts.
  if (log::level() > spdlog::level::critical)
    fmt::print(stderr, "invariant failed at {}:{}: {}: {}\n", file, line, cond, values);
  std::abort();
}

}  // namespace troupe::actors

#define TROUPE_ASSERT(cond, ...)                                                                 \
  do {                                                                                           \
    if (!(cond)) [[unlikely]]                                                                    \
      ::troupe::actors::invariant_failed(__FILE__, __LINE__, #cond, ::fmt::format(__VA_ARGS__)); \
  } while (0)
