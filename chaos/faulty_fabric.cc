#include "chaos/faulty_fabric.h"

#include <fmt/format.h>
#include <google/protobuf/unknown_field_set.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>

#include "actors/protocol.h"
#include "runtime/log.h"
#include "runtime/step_hook.h"

namespace troupe::chaos {

using runtime::Code;
using runtime::Envelope;
using runtime::PeerId;
using runtime::SendDoneFn;
using runtime::Status;
using Payloads = std::span<const std::span<const std::byte>>;
using time_point = std::chrono::steady_clock::time_point;

namespace {

// splitmix64's finalizer: a counter-based generator, one draw per key.
uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t hash_text(std::string_view s) {  // FNV-1a: the same in every process and build
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : s) h = (h ^ uint8_t(c)) * 0x100000001b3ull;
  return h;
}

double unit(uint64_t draw) {  // [0, 1)
  return double(draw >> 11) * 0x1.0p-53;
}

bool listed(const std::vector<std::string>& nodes, const std::string& node) {
  return nodes.empty() || std::find(nodes.begin(), nodes.end(), node) != nodes.end();
}

int group_of(const FaultRule& r, const std::string& node) {
  for (size_t g = 0; g < r.groups.size(); ++g)
    if (std::find(r.groups[g].begin(), r.groups[g].end(), node) != r.groups[g].end()) return int(g);
  return -1;
}

// Whether the rule selects a message on the link from → to (its window and selectors; the
// probability is drawn by the caller).
bool selects(const FaultRule& r, const std::string& from, const std::string& to, uint32_t type,
             int64_t step, int64_t since_ms) {
  if (!r.types.empty() && std::find(r.types.begin(), r.types.end(), type) == r.types.end())
    return false;
  if (r.step_lo && (step < *r.step_lo || step > *r.step_hi)) return false;
  if (since_ms < r.after_ms || (r.for_ms && since_ms >= r.after_ms + *r.for_ms)) return false;
  if (r.action != Action::partition) return listed(r.from, from) && listed(r.to, to);
  const int a = group_of(r, from), b = group_of(r, to);
  return a >= 0 && b >= 0 && a != b;  // a node in no group is not partitioned
}

uint64_t payload_bytes(Payloads payloads) {
  uint64_t n = 0;
  for (const auto& p : payloads) n += p.size();
  return n;
}

// The typed header made undecodable. A flipped byte can leave a valid encoding (then the
// receiver would decode other values, which no check catches): so a flip is kept only when
// protobuf's wire format rejects it (checked as an UnknownFieldSet: any wire-valid bytes decode
// into any message type), trying a few flips; else the original loses its last byte, which
// no decoder accepts (a valid encoding ends inside a field: cut, that field runs past the end).
// An empty header becomes one varint byte with its continuation bit set, equally refused.
std::string corrupt_header(const std::string& header, uint64_t draw) {
  constexpr int flips_tried_max = 8;
  if (header.empty()) return std::string(1, '\x80');
  for (int i = 0; i < flips_tried_max; ++i, draw = mix(draw)) {
    std::string flipped = header;
    const size_t at = size_t(draw % flipped.size());
    flipped[at] = char(uint8_t(flipped[at]) ^ uint8_t(1 + (draw >> 32) % 255));
    google::protobuf::UnknownFieldSet fields;
    if (!fields.ParseFromString(flipped)) return flipped;
  }
  return header.substr(0, header.size() - 1);
}

}  // namespace

struct FaultyFabric::Held {
  PeerId peer;
  Envelope envelope;
  std::vector<std::span<const std::byte>> payloads;  // the caller's memory, alive until done
  SendDoneFn done;
};

// The rule that acts on a message (nullptr: none) and the draw for its parameters.
struct FaultyFabric::Match {
  const FaultRule* rule = nullptr;
  size_t index = 0;
  uint64_t draw = 0;
  std::string to;  // the receiving node
  time_point due;  // delay, reorder, slow: when it goes out
};

std::string format_counts(const FaultCounters& c) {
  return fmt::format(
      "passed={} dropped={} partitioned={} delayed={} reordered={} slowed={} duplicated={} "
      "corrupted={} held_overflow={} closed_while_held={} held_send_failed={}",
      c.passed, c.dropped, c.partitioned, c.delayed, c.reordered, c.slowed, c.duplicated,
      c.corrupted, c.held_overflow, c.closed_while_held, c.held_send_failed);
}

void PeerNames::set(PeerId peer, const std::string& node) {
  std::lock_guard lock(mutex_);
  names_[peer] = node;
}

std::string PeerNames::get(PeerId peer) const {
  std::lock_guard lock(mutex_);
  auto it = names_.find(peer);
  return it == names_.end() ? std::string() : it->second;
}

runtime::FabricHandlers PeerNames::learning(runtime::FabricHandlers handlers,
                                            const std::shared_ptr<PeerNames>& names) {
  handlers.on_peer_up = [names, up = std::move(handlers.on_peer_up)](
                            PeerId peer, const runtime::PeerInfo& info) {
    if (!info.node.empty()) names->set(peer, info.node);
    if (up) up(peer, info);
  };
  return handlers;
}

FaultyFabric::FaultyFabric(std::unique_ptr<runtime::Fabric> inner, FaultPlan plan,
                           std::shared_ptr<PeerNames> names, FaultyFabricOptions options)
    : inner_(std::move(inner)),
      plan_(std::move(plan)),
      names_(names ? std::move(names) : std::make_shared<PeerNames>()),
      options_(std::move(options)) {
  if (!options_.now) options_.now = [] { return std::chrono::steady_clock::now(); };
  if (!options_.step) options_.step = [] { return runtime::current_step(); };
  started_ = options_.now();
  node_key_ = hash_text("");
  noted_.assign(plan_.rules.size(), false);
  first_acted_.assign(plan_.rules.size(), time_point{});
  switch_seen_.assign(plan_.rules.size(), {time_point{}, false});
  if (!plan_.rules.empty()) timer_ = std::thread([this] { timer_loop(); });
}

FaultyFabric::~FaultyFabric() {
  decltype(held_) left;
  {
    std::unique_lock lock(mutex_);
    stop_ = true;
    changed_.notify_all();
    changed_.wait(lock, [&] { return sending_held_ == 0; });
    left.swap(held_);
    counts_.closed_while_held += left.size();
  }
  if (timer_.joinable()) timer_.join();
  for (auto& [key, h] : left)
    if (h.done)
      h.done(Status(Code::closed, "the fabric closed while a fault plan held this message"));
  if (!plan_.rules.empty())
    log::info("fabric faults injected ({}): {}", plan_.source, format_counts(counts_));
  inner_.reset();
}

void FaultyFabric::set_node_id(const std::string& node_id) {
  {
    std::lock_guard lock(mutex_);
    node_id_ = node_id;
    node_key_ = hash_text(node_id);
  }
  inner_->set_node_id(node_id);
}

FaultCounters FaultyFabric::fault_counters() const {
  std::lock_guard lock(mutex_);
  return counts_;
}

// Under mutex_. The first rule (in file order) that selects the message and wins its draw.
FaultyFabric::Match FaultyFabric::decide(PeerId peer, const Envelope& e, uint64_t bytes) {
  Match m;
  m.to = std::string(runtime::node_of(e.to));
  if (m.to.empty() || e.to.find('/') == std::string::npos) m.to = names_->get(peer);
  const time_point window_now = options_.now();
  const int64_t since_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(window_now - started_).count();
  const int64_t step = options_.step();
  const uint64_t n = sent_[{m.to, e.type}]++;
  for (size_t i = 0; i < plan_.rules.size(); ++i) {
    const FaultRule& r = plan_.rules[i];
    if (!selects(r, node_id_, m.to, e.type, step, since_ms)) continue;
    if (!r.switch_file.empty() && !switched_on(i, window_now)) continue;
    // No payload byte to flip: not this rule's message (flipping its header instead would
    // lose it, a fault the rule did not ask for).
    if (r.action == Action::corrupt && r.target == CorruptTarget::payload && bytes == 0) continue;
    if (r.lasts_ms && first_acted_[i] != time_point{} &&
        window_now - first_acted_[i] >= std::chrono::milliseconds(*r.lasts_ms))
      continue;  // healed
    const uint64_t key = mix(mix(mix(mix(plan_.seed ^ node_key_) ^ i) ^ hash_text(m.to)) ^
                             (uint64_t(e.type) << 40 ^ n));
    if (unit(key) >= r.probability) continue;
    m.rule = &r, m.index = i, m.draw = mix(key);
    if (first_acted_[i] == time_point{}) first_acted_[i] = window_now;
    // Held messages are due on the timer thread's clock, whatever clock the windows use.
    const time_point now = std::chrono::steady_clock::now();
    const auto delay = std::chrono::milliseconds(r.delay_ms);
    if (r.action == Action::delay) m.due = now + delay;
    if (r.action == Action::reorder)
      m.due = now + std::chrono::milliseconds(int64_t(m.draw % uint64_t(r.delay_ms + 1)));
    if (r.action == Action::slow) {  // the link is busy for delay_ms per message and per MiB
      const auto cost = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::duration<double, std::milli>(double(r.delay_ms) *
                                                    (1.0 + double(bytes) / double(1 << 20))));
      time_point& free = link_free_[m.to];
      free = std::max(free, now) + cost;
      m.due = free;
    }
    return m;
  }
  return m;
}

bool FaultyFabric::switched_on(size_t i, time_point now) {
  auto& [seen_at, on] = switch_seen_[i];
  if (seen_at == time_point{} || now - seen_at >= std::chrono::milliseconds(switch_poll_ms)) {
    struct stat st {};
    on = ::stat(plan_.rules[i].switch_file.c_str(), &st) == 0;
    seen_at = now;
  }
  return on;
}

void FaultyFabric::note_first(size_t rule, const Envelope& e, const std::string& to) {
  if (noted_[rule]) return;
  noted_[rule] = true;
  const FaultRule& r = plan_.rules[rule];
  log::info("fabric faults: rule at {}:{} ({}) first acts on a {} from {} to {}", plan_.source,
            r.line, action_names[size_t(r.action)], actors::type_name(e.type),
            node_id_.empty() ? "(no id yet)" : node_id_, to.empty() ? "(unknown node)" : to);
}

Status FaultyFabric::send(PeerId peer, const Envelope& envelope, Payloads payloads,
                          SendDoneFn done) {
  if (plan_.rules.empty()) return inner_->send(peer, envelope, payloads, std::move(done));
  std::unique_lock lock(mutex_);
  const Match m = decide(peer, envelope, payload_bytes(payloads));
  if (!m.rule) {
    ++counts_.passed;
    lock.unlock();
    return inner_->send(peer, envelope, payloads, std::move(done));
  }
  note_first(m.index, envelope, m.to);
  switch (m.rule->action) {
    case Action::drop:
    case Action::partition:
      ++(m.rule->action == Action::drop ? counts_.dropped : counts_.partitioned);
      lock.unlock();
      if (done) done(Status());  // lost on the wire: the sender cannot tell
      return Status();
    case Action::delay:
    case Action::reorder:
    case Action::slow:
      if (held_.size() >= held_messages_max) {
        ++counts_.held_overflow;
        lock.unlock();
        return inner_->send(peer, envelope, payloads, std::move(done));
      }
      ++(m.rule->action == Action::delay     ? counts_.delayed
         : m.rule->action == Action::reorder ? counts_.reordered
                                             : counts_.slowed);
      lock.unlock();
      return hold(peer, envelope, payloads, std::move(done), m.due);
    case Action::duplicate:
      ++counts_.duplicated;
      lock.unlock();
      return duplicate(peer, envelope, payloads, std::move(done));
    case Action::corrupt:
      ++counts_.corrupted;
      lock.unlock();
      return corrupt(peer, envelope, payloads, std::move(done), *m.rule, m.draw);
  }
  return Status(Code::invalid_argument, "unknown fault action");  // unreachable: enum checked
}

Status FaultyFabric::hold(PeerId peer, const Envelope& envelope, Payloads payloads, SendDoneFn done,
                          time_point due) {
  Held h{peer, envelope, {payloads.begin(), payloads.end()}, std::move(done)};
  std::lock_guard lock(mutex_);
  if (stop_) return Status(Code::closed, "send: fabric is shutting down");
  // Ordered by when it is due, then by when it was held: equal delays keep their order.
  held_.emplace(std::make_pair(due, held_seq_++), std::move(h));
  changed_.notify_all();
  return Status();
}

// The timer thread: hands each held message to the wrapped fabric when it is due.
void FaultyFabric::timer_loop() {
  std::unique_lock lock(mutex_);
  while (!stop_) {
    if (held_.empty()) {
      changed_.wait(lock);
      continue;
    }
    const time_point due = held_.begin()->first.first;
    if (std::chrono::steady_clock::now() < due) {
      changed_.wait_until(lock, due);
      continue;
    }
    Held h = std::move(held_.begin()->second);
    held_.erase(held_.begin());
    ++sending_held_;
    lock.unlock();
    SendDoneFn done = h.done;
    const Status st = inner_->send(h.peer, h.envelope, h.payloads, std::move(h.done));
    if (!st.ok() && done) done(st);  // refused: the wrapped fabric did not take `done`
    lock.lock();
    if (!st.ok()) ++counts_.held_send_failed;
    --sending_held_;
    changed_.notify_all();
  }
}

// Both copies go out now; the caller's `done` runs once, after both completed (the first
// one's status: the second is the fault's, not the caller's).
Status FaultyFabric::duplicate(PeerId peer, const Envelope& envelope, Payloads payloads,
                               SendDoneFn done) {
  struct Pair {
    std::atomic<int> left{2};
    SendDoneFn done;
    Status first;
  };
  auto pair = std::make_shared<Pair>();
  pair->done = std::move(done);
  const auto finish = [pair](const Status& st, bool first) {
    if (first) pair->first = st;
    if (pair->left.fetch_sub(1) == 1 && pair->done) pair->done(pair->first);
  };
  Status st =
      inner_->send(peer, envelope, payloads, [finish](const Status& s) { finish(s, true); });
  if (!st.ok()) return st;  // nothing went out; `done` is not called, as for any refused send
  const Status again =
      inner_->send(peer, envelope, payloads, [finish](const Status& s) { finish(s, false); });
  if (!again.ok()) finish(again, false);
  return Status();
}

// The header made undecodable, or one payload byte flipped in a copy (fault_plan.h says
// which types may have their payloads corrupted: those whose receivers check a CRC32C).
Status FaultyFabric::corrupt(PeerId peer, const Envelope& envelope, Payloads payloads,
                             SendDoneFn done, const FaultRule& rule, uint64_t draw) {
  Envelope e = envelope;
  std::vector<std::span<const std::byte>> spans(payloads.begin(), payloads.end());
  std::shared_ptr<std::vector<std::byte>> copy;
  std::vector<size_t> filled;
  for (size_t i = 0; i < spans.size(); ++i)
    if (!spans[i].empty()) filled.push_back(i);
  if (rule.target == CorruptTarget::header) {
    e.header = corrupt_header(e.header, draw);
  } else if (!filled.empty()) {  // decide() left messages without payload bytes alone
    const size_t which = filled[draw % filled.size()];
    copy = std::make_shared<std::vector<std::byte>>(spans[which].begin(), spans[which].end());
    const size_t at = size_t((draw >> 16) % copy->size());
    (*copy)[at] ^= std::byte(uint8_t(1 + (draw >> 48) % 255));
    spans[which] = std::span<const std::byte>(copy->data(), copy->size());
  }
  return inner_->send(peer, e, spans, [copy, done = std::move(done)](const Status& st) {
    if (done) done(st);
  });
}

Status FaultyFabric::flush(std::chrono::milliseconds timeout) {
  const time_point deadline = std::chrono::steady_clock::now() + timeout;
  {
    std::unique_lock lock(mutex_);
    if (!changed_.wait_until(lock, deadline, [&] { return held_.empty() && sending_held_ == 0; }))
      return Status(Code::timeout,
                    fmt::format("flush: {} messages still held by the fault plan", held_.size()));
  }
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return inner_->flush(std::max(left, std::chrono::milliseconds(0)));
}

runtime::FabricFactory faulty_fabric_factory(const runtime::HostOptions& options, FaultPlan plan) {
  return [options, plan = std::move(plan)](const runtime::FabricHandlers& handlers)
             -> runtime::Result<std::unique_ptr<runtime::Fabric>> {
    auto names = std::make_shared<PeerNames>();
    auto inner = runtime::make_ucx_fabric(options, PeerNames::learning(handlers, names));
    if (!inner.ok()) return inner.status();
    log::warn("fabric faults: injecting the plan {}", describe(plan));
    return std::unique_ptr<runtime::Fabric>(
        std::make_unique<FaultyFabric>(std::move(inner).value(), plan, names));
  };
}

runtime::Result<bool> install_fabric_faults(runtime::HostOptions* options) {
  runtime::Result<std::optional<FaultPlan>> plan = fault_plan_from_env();
  if (!plan.ok()) return plan.status();
  if (!plan.value()) return false;
  options->fabric_factory = faulty_fabric_factory(*options, std::move(*plan.value()));
  return true;
}

}  // namespace troupe::chaos
