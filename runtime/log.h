// The log lines of a troupe process (nodes, the coordinator under `troupe launch`, `troupe
// train`), through spdlog's default logger. Each line is
//
//   2025-01-31T14:02:07.123+01:00 [warning] [n2] router: no route to n3/worker.1 (...)
//
// an ISO-8601 timestamp with milliseconds and the UTC offset, the level, who logs (a node id,
// or a role before it has one: "node pid 1234", "coordinator", "train"), then the text; to
// stderr, one flushed write per line (a supervised node's stderr is RUN_DIR/node-K.log).
// Thread-safe: any thread may log at any time, and set_log_node may run while others log.
//
// Call sites write `log::info("joined (epoch {})", epoch)`; the format string is checked at
// compile time. Levels: trace and debug for detail, info for what an operator wants to see
// (joined, recovered), warn for a fault or a dropped message the job survives, error for
// one it does not, critical for a broken invariant just before the process aborts.
#pragma once

#include <spdlog/spdlog.h>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace troupe::log {

using Level = spdlog::level::level_enum;

// The names --log-level takes, most detail first: trace debug info warn error off.
const std::vector<std::string>& level_names();
// A name of level_names() → its level; nullopt for anything else.
std::optional<Level> parse_level(std::string_view name);
// The level → its name in level_names() (critical, not settable, reads "error").
std::string level_name(Level level);

// Sets up this process's log: `who` (a node id or a role) on every line, lines below
// `level` dropped, to stderr or, for tests, to `sink`. Call it from main's thread before
// other threads log (it replaces the logger they would use); a process that never calls it
// logs at info to stderr as "troupe".
void init_logging(const std::string& who, Level level);
void init_logging(const std::string& who, Level level, spdlog::sink_ptr sink);
// Names this process in the lines from now on: a node learns its id in the handshake.
void set_log_node(const std::string& id);
// The level lines are filtered at (what `troupe launch` passes on to its nodes).
Level level();

namespace detail {
spdlog::logger& logger();  // the process's logger, set up on first use if need be
}  // namespace detail

template <class... Args>
void trace(spdlog::format_string_t<Args...> text, Args&&... args) {
  detail::logger().trace(text, std::forward<Args>(args)...);
}
template <class... Args>
void debug(spdlog::format_string_t<Args...> text, Args&&... args) {
  detail::logger().debug(text, std::forward<Args>(args)...);
}
template <class... Args>
void info(spdlog::format_string_t<Args...> text, Args&&... args) {
  detail::logger().info(text, std::forward<Args>(args)...);
}
template <class... Args>
void warn(spdlog::format_string_t<Args...> text, Args&&... args) {
  detail::logger().warn(text, std::forward<Args>(args)...);
}
template <class... Args>
void error(spdlog::format_string_t<Args...> text, Args&&... args) {
  detail::logger().error(text, std::forward<Args>(args)...);
}
// For a broken invariant, just before an abort: the line is flushed.
template <class... Args>
void critical(spdlog::format_string_t<Args...> text, Args&&... args) {
  detail::logger().critical(text, std::forward<Args>(args)...);
  detail::logger().flush();
}

}  // namespace troupe::log
