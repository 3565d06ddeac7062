#include "runtime/refusals.h"

#include <fmt/format.h>

namespace troupe::runtime {

namespace {

// Refusals of a message from an admitted peer (the router's); the others are connections.
bool is_message_cause(const std::string& cause) {
  return cause == "unbound" || cause == "spoofed" || cause == "evicted";
}

std::string window_text(int64_t window_ms) {
  return window_ms == 1000 ? "second" : fmt::format("{} ms", window_ms);
}

}  // namespace

std::string refusal_source(const ConnectionRefusal& r) {
  if (!r.node.empty()) return r.node;
  const std::string& a = r.peer_address;
  if (a.empty()) return "an unknown peer";
  const size_t colon = a.rfind(':');
  std::string host = colon == std::string::npos ? a : a.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  return host.empty() ? a : host;
}

std::string refusal_text(const ConnectionRefusal& r) {
  if (r.more > 0)
    return fmt::format("{} more refused from {} in the last {} ({}: {})", r.more, refusal_source(r),
                       window_text(r.window_ms), r.cause, r.reason);
  std::string who = r.node.empty() ? r.peer_address : r.node;
  if (who.empty()) who = "an unknown peer";
  if (!r.node.empty() && !r.peer_address.empty()) who += " at " + r.peer_address;
  if (r.pid != 0) who += fmt::format(" (pid {})", r.pid);
  return fmt::format("refused {} from {}: {}",
                     is_message_cause(r.cause) ? "a message" : "a connection", who, r.reason);
}

std::vector<ConnectionRefusal> RefusalThrottle::note(const ConnectionRefusal& r,
                                                     clock::time_point now) {
  std::erase_if(slots_, [&](const auto& kv) {
    return kv.second.held == 0 && now - kv.second.opened >= window_;
  });
  std::pair<std::string, std::string> key{refusal_source(r), r.cause};
  if (!slots_.count(key) && slots_.size() >= refusal_sources_max) key.first = "other sources";
  std::vector<ConnectionRefusal> out;
  auto it = slots_.find(key);
  if (it != slots_.end() && now - it->second.opened < window_) {
    ++it->second.held;
    it->second.last = r;
    return out;
  }
  if (it != slots_.end() && it->second.held > 0) out.push_back(summary(it->second));
  slots_[key] = Slot{now, 0, r, key.first};
  out.push_back(r);
  return out;
}

std::vector<ConnectionRefusal> RefusalThrottle::flush(clock::time_point now) {
  std::vector<ConnectionRefusal> out;
  for (auto it = slots_.begin(); it != slots_.end();) {
    if (now - it->second.opened < window_) {
      ++it;
      continue;
    }
    if (it->second.held > 0) out.push_back(summary(it->second));
    it = slots_.erase(it);
  }
  return out;
}

std::optional<RefusalThrottle::clock::time_point> RefusalThrottle::next_flush() const {
  std::optional<clock::time_point> next;
  for (const auto& [key, slot] : slots_)
    if (slot.held > 0 && (!next || slot.opened + window_ < *next)) next = slot.opened + window_;
  return next;
}

ConnectionRefusal RefusalThrottle::summary(const Slot& s) const {
  ConnectionRefusal r = s.last;
  if (s.source != refusal_source(r)) r.node.clear(), r.peer_address = s.source;  // lumped
  r.more = s.held;
  r.window_ms = window_.count();
  return r;
}

}  // namespace troupe::runtime
