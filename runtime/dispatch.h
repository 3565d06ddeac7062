// One dispatcher per actor over a table of message types, and one rule for bad input
// (DESIGN §3, STYLE.md): a message that does not decode, or that is out of place for the
// actor's state (an older epoch, another step, a phase that does not take it, a sender
// outside the view, a second copy), is dropped, counted by reason, and logged once per
// reason with its sender. A role never dies of a peer's message. The counts travel to the
// coordinator and end up in events.jsonl and the job's summary. It lives in runtime/ so that
// the node agent keeps the same rule; a protocol names its types through a TypeNameFn.
//
// A handler takes the decoded message and the ActorMessage (payloads, sender) and returns
// a Verdict: accepted (`{}`), or the reason it was dropped. Nothing else counts or logs.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "runtime/actor_message.h"
#include "runtime/receipts.h"

namespace troupe::runtime {

// The name of a message type ("StepBegin"), or "unknown" when no protocol of this actor has
// it. control_type_name knows the runtime's own (control.proto).
using TypeNameFn = std::string_view (*)(uint32_t type);
std::string_view control_type_name(uint32_t type);

enum class Drop : uint8_t {
  undecodable,     // the header does not parse as the type's message
  unknown_type,    // no message of this actor's protocol has that type
  stale_epoch,     // sent before the last view change: its step was aborted
  unknown_sender,  // a sender outside the view, or a worker index that is not its own
  wrong_phase,     // a message this actor does not take in its present phase
  wrong_step,      // of another step (an old one, or one not begun)
  duplicate,       // already received from this sender: a duplicate or a replay
  malformed,       // decodes, but its fields or payloads do not fit (sizes, ranges, pieces)
  backlog_full,    // held messages past their limit (early_messages_max)
};
inline constexpr size_t drop_reasons = 9;
std::string_view drop_name(Drop reason);

struct Rejected {
  Drop reason;
  std::string detail;
};
// What a handler says about a message: accepted (no value) or why it was dropped.
using Verdict = std::optional<Rejected>;
inline Verdict drop(Drop reason, std::string detail) {
  return Rejected{reason, std::move(detail)};
}
// A receipt refused (receipts.h) as a drop: a duplicate, an outsider, another round.
Verdict drop_receipt(Receipts::Add refused, std::string_view what);

// Per-reason drop counters of one actor.
class DropLog {
 public:
  explicit DropLog(std::string who = "", TypeNameFn names = control_type_name)
      : who_(std::move(who)), names_(names) {}
  void set_owner(std::string who) { who_ = std::move(who); }
  // Counts the drop. The first drop of each reason is logged to stderr with the type, the
  // sender and the detail, and returned (for an event); later ones return "".
  std::string record(const Rejected& why, const ActorMessage& m);
  uint64_t count(Drop reason) const { return n_[size_t(reason)]; }
  uint64_t total() const;
  void add(std::string_view reason, uint64_t count);  // counts reported by another actor
  // Nonzero counts by reason name ("duplicate" → 3), and as one line ("duplicate 3, …").
  std::map<std::string, uint64_t> counts() const;
  std::string summary() const;

 private:
  std::string who_;
  TypeNameFn names_;
  std::array<uint64_t, drop_reasons> n_{};
  std::map<std::string, uint64_t, std::less<>> reported_;  // from other actors
};

// Message type → decode into its protobuf type → handler. An actor builds one per
// lifecycle phase (the types it takes then); a type that is not in the table is dropped as
// wrong_phase when it is one of the protocol's (protocol.h type_name), unknown_type else.
class Dispatcher {
 public:
  explicit Dispatcher(TypeNameFn names = control_type_name) : names_(names) {}
  using Entry = std::function<Verdict(ActorMessage&)>;

  // F: Verdict(const Proto&, ActorMessage&).
  template <class Proto, class F>
  Dispatcher& on(uint32_t type, F handler) {
    table_[type] = [h = std::move(handler)](ActorMessage& m) -> Verdict {
      Proto body;
      if (!body.ParseFromString(m.header)) return drop(Drop::undecodable, "");
      return h(body, m);
    };
    return *this;
  }
  bool takes(uint32_t type) const { return table_.count(type) != 0; }
  // Runs m's handler; the verdict says whether it was taken.
  Verdict dispatch(ActorMessage& m) const;

 private:
  TypeNameFn names_;
  std::map<uint32_t, Entry> table_;
};

}  // namespace troupe::runtime
