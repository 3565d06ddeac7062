#include "runtime/dispatch.h"

#include <fmt/format.h>

#include "runtime/actor_message.h"
#include "runtime/log.h"

namespace troupe::runtime {

std::string_view control_type_name(uint32_t type) {
  static constexpr std::string_view names[] = {"?",        "Hello",   "Challenge", "Proof",
                                               "Verdict",  "Welcome", "View",      "Heartbeat",
                                               "Shutdown", "Join",    "NodeError", "Rejoin"};
  if (type >= hello_type && type <= rejoin_type) return names[type];
  return "unknown";
}

std::string_view drop_name(Drop reason) {
  static constexpr std::string_view names[] = {"undecodable",    "unknown_type", "stale_epoch",
                                               "unknown_sender", "wrong_phase",  "wrong_step",
                                               "duplicate",      "malformed",    "backlog_full"};
  static_assert(std::size(names) == drop_reasons);
  return names[size_t(reason)];
}

Verdict drop_receipt(Receipts::Add refused, std::string_view what) {
  const std::string detail = fmt::format("{}: {}", what, add_name(refused));
  switch (refused) {
    case Receipts::Add::fresh:
      return {};
    case Receipts::Add::duplicate:
      return drop(Drop::duplicate, detail);
    case Receipts::Add::unknown_sender:
      return drop(Drop::unknown_sender, detail);
    case Receipts::Add::other_round:
      return drop(Drop::wrong_step, detail);
  }
  return {};
}

std::string DropLog::record(const Rejected& why, const ActorMessage& m) {
  if (n_[size_t(why.reason)]++ != 0) return "";
  std::string line = fmt::format(
      "dropping {} from {} (epoch {}): {}{}{}; further drops for this reason are "
      "counted, not logged",
      names_(m.type), m.from.empty() ? "?" : m.from, m.epoch, drop_name(why.reason),
      why.detail.empty() ? "" : ": ", why.detail);
  log::warn("{}: {}", who_, line);
  return line;
}

uint64_t DropLog::total() const {
  uint64_t t = 0;
  for (uint64_t n : n_) t += n;
  for (const auto& [reason, n] : reported_) t += n;
  return t;
}

void DropLog::add(std::string_view reason, uint64_t count) {
  if (count == 0) return;
  auto it = reported_.find(reason);
  if (it == reported_.end()) it = reported_.emplace(std::string(reason), 0).first;
  it->second += count;
}

std::map<std::string, uint64_t> DropLog::counts() const {
  std::map<std::string, uint64_t> out(reported_.begin(), reported_.end());
  for (size_t r = 0; r < drop_reasons; ++r)
    if (n_[r] != 0) out[std::string(drop_name(Drop(r)))] += n_[r];
  return out;
}

std::string DropLog::summary() const {
  std::string out;
  for (const auto& [reason, n] : counts())
    out += fmt::format("{}{} {}", out.empty() ? "" : ", ", reason, n);
  return out;
}

Verdict Dispatcher::dispatch(ActorMessage& m) const {
  const auto it = table_.find(m.type);
  if (it != table_.end()) return it->second(m);
  if (names_(m.type) != "unknown") return drop(Drop::wrong_phase, "not taken now");
  return drop(Drop::unknown_type, fmt::format("type {}", m.type));
}

}  // namespace troupe::runtime
