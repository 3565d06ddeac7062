#include "runtime/log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <atomic>
#include <memory>
#include <mutex>

namespace troupe::log {

namespace {

// Loggers replaced by a later init_logging are kept, never freed: a thread that loaded the
// old pointer may still be writing through it. A process replaces its logger once or twice.
std::mutex loggers_mutex;
std::vector<std::shared_ptr<spdlog::logger>>& loggers() {
  static std::vector<std::shared_ptr<spdlog::logger>> kept;
  return kept;
}
std::atomic<spdlog::logger*> current{nullptr};

// '%' starts a flag in spdlog's patterns: a node id is text.
std::string pattern_for(const std::string& who) {
  std::string escaped;
  for (char c : who) escaped += c == '%' ? std::string("%%") : std::string(1, c);
  return "%Y-%m-%dT%H:%M:%S.%e%z [%l] [" + escaped + "] %v";
}

struct Named {
  std::string_view name;
  Level level;
};
constexpr Named levels[] = {{"trace", Level::trace}, {"debug", Level::debug}, {"info", Level::info},
                            {"warn", Level::warn},   {"error", Level::err},   {"off", Level::off}};

}  // namespace

const std::vector<std::string>& level_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const Named& n : levels) out.emplace_back(n.name);
    return out;
  }();
  return names;
}

std::optional<Level> parse_level(std::string_view name) {
  for (const Named& n : levels)
    if (n.name == name) return n.level;
  return std::nullopt;
}

std::string level_name(Level level) {
  if (level == Level::critical) return "error";
  for (const Named& n : levels)
    if (n.level == level) return std::string(n.name);
  return "info";
}

void init_logging(const std::string& who, Level level, spdlog::sink_ptr sink) {
  auto logger = std::make_shared<spdlog::logger>("troupe", std::move(sink));
  logger->set_pattern(pattern_for(who));
  logger->set_level(level);
  logger->flush_on(Level::warn);
  std::lock_guard<std::mutex> lock(loggers_mutex);
  loggers().push_back(logger);
  current.store(logger.get(), std::memory_order_release);
}

void init_logging(const std::string& who, Level level) {
  init_logging(who, level, std::make_shared<spdlog::sinks::stderr_sink_mt>());
}

void set_log_node(const std::string& id) {
  detail::logger().set_pattern(pattern_for(id));
}

Level level() {
  return detail::logger().level();
}

namespace detail {

spdlog::logger& logger() {
  if (spdlog::logger* l = current.load(std::memory_order_acquire)) return *l;
  static std::once_flag once;
  std::call_once(once, [] {
    if (current.load(std::memory_order_acquire) == nullptr) init_logging("troupe", Level::info);
  });
  return *current.load(std::memory_order_acquire);
}

}  // namespace detail

}  // namespace troupe::log
