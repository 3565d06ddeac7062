// Refused connections and messages as events (DESIGN §3 "Bootstrap", issue 13 item 6): the
// causes by name, the text an operator reads, and the throttle that keeps a peer that
// hammers the door from flooding the events. Pure: no actor, no clock of its own.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runtime/fabric.h"

namespace troupe::runtime {

// ConnectionRefusal::cause, for machines. The door's (bootstrap.h), before a peer is
// admitted: a wrong job secret, either side ("wrong_secret"); a peer that proved the secret
// but could not be admitted by the transport ("not_admitted"); bytes that are not a
// handshake ("malformed"); a slow or half-open connection ("timed_out"); a peer that hung up
// in its handshake ("hung_up"); too many handshakes at once ("over_limit"). The router's,
// for a message of an admitted peer: a peer bound to no node ("unbound": not admitted as a
// node yet, or it left the job), one sending in another node's name ("spoofed"), a node the
// view dropped as lost ("evicted", with the epoch: missed heartbeats, or fenced).
inline constexpr std::array<std::string_view, 9> refusal_causes = {
    "wrong_secret", "not_admitted", "malformed", "timed_out", "hung_up",
    "over_limit",   "unbound",      "spoofed",   "evicted"};

// One window of refusal_window_ms per source and cause: the first refusal in it is reported
// at once, the rest as one summary when it closes. A second, as the door's own log lines.
inline constexpr int64_t refusal_window_ms = 1000;
// Sources (a node id, else a host) with an open window at once. A stranger can vary its
// address (IPv6); past this, new sources share one slot per cause, "other sources".
inline constexpr size_t refusal_sources_max = 256;

// Who a refusal is from, for people and for the throttle: the node it claimed or was bound
// to, else the host it came from (without the port: each connection has its own).
std::string refusal_source(const ConnectionRefusal& r);
// "refused a connection from 127.0.0.1:5432: malformed: ...", "refused a message from n2
// (127.0.0.1:40001): evicted at epoch 5 ...", or for a summary "12 more refused from
// 127.0.0.1 in the last second (malformed)".
std::string refusal_text(const ConnectionRefusal& r);

// Per source and cause, the first refusal of each window goes out at once; the others are
// counted, and the window's summary (more = how many, the last of them as the example) goes
// out when it closes: from note() when the next refusal comes after it, else from flush(),
// which the owner calls at next_flush().
class RefusalThrottle {
 public:
  using clock = std::chrono::steady_clock;
  explicit RefusalThrottle(
      std::chrono::milliseconds window = std::chrono::milliseconds(refusal_window_ms))
      : window_(window) {}
  // What to report now for `r`: [r], [the last window's summary, r], or nothing (held).
  std::vector<ConnectionRefusal> note(const ConnectionRefusal& r, clock::time_point now);
  // The summaries of the windows closed by `now` that held refusals back; closed windows
  // are forgotten.
  std::vector<ConnectionRefusal> flush(clock::time_point now);
  // When the earliest window holding refusals closes; nullopt when none holds any.
  std::optional<clock::time_point> next_flush() const;

 private:
  struct Slot {
    clock::time_point opened;
    uint64_t held = 0;
    ConnectionRefusal last;
    std::string source;  // the key's: "other sources" once refusal_sources_max were open
  };
  ConnectionRefusal summary(const Slot& s) const;
  std::chrono::milliseconds window_;
  std::map<std::pair<std::string, std::string>, Slot> slots_;  // (source, cause)
};

}  // namespace troupe::runtime
