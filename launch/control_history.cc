#include "launch/control_history.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace troupe::launch {

ControlHistory::ControlHistory(size_t steps_max, size_t events_max, size_t event_bytes_max)
    : steps_(std::max<size_t>(steps_max, 1)),
      bytes_(std::max<size_t>(event_bytes_max, 1)),
      spans_(std::max<size_t>(events_max, 1)) {}

void ControlHistory::add_step(const StepPoint& p) {
  if (steps_n_ == steps_.size()) steps_head_ = (steps_head_ + 1) % steps_.size(), --steps_n_;
  steps_[(steps_head_ + steps_n_) % steps_.size()] = p;
  ++steps_n_;
}

void ControlHistory::drop_oldest_event() {
  spans_head_ = (spans_head_ + 1) % spans_.size();
  --spans_n_;
}

void ControlHistory::add_event(const nlohmann::json& e) {
  std::string line = e.dump();
  if (line.size() > bytes_.size() / 10) {
    nlohmann::json stub = {{"t_s", e.value("t_s", 0.0)},
                           {"kind", e.value("kind", "")},
                           {"text", fmt::format("(an event of {} bytes, too long for the history; "
                                                "events.jsonl has it whole)",
                                                line.size())}};
    line = stub.dump();
    if (line.size() > bytes_.size()) return;
  }
  const size_t n = line.size();
  if (spans_n_ == spans_.size()) drop_oldest_event();
  size_t start = 0;
  if (spans_n_ > 0) {
    const Span& newest = span(spans_n_ - 1);
    start = newest.offset + newest.bytes;
  }
  if (start + n > bytes_.size()) {
    // The tail from `start` is skipped: the events still there are the oldest of all.
    while (spans_n_ > 0 && span(0).offset >= start) drop_oldest_event();
    start = 0;
  }
  while (spans_n_ > 0 && span(0).offset < start + n && span(0).offset + span(0).bytes > start)
    drop_oldest_event();
  std::memcpy(bytes_.data() + start, line.data(), n);
  spans_[(spans_head_ + spans_n_) % spans_.size()] = {start, n};
  ++spans_n_;
}

nlohmann::json ControlHistory::to_json() const {
  nlohmann::json steps = nlohmann::json::array(), events = nlohmann::json::array();
  for (size_t i = 0; i < steps_n_; ++i) {
    const StepPoint& p = steps_[(steps_head_ + i) % steps_.size()];
    nlohmann::json s = {
        {"step", p.step}, {"loss", p.loss}, {"tokens_per_s", p.tokens_per_s}, {"t_s", p.t_s}};
    if (p.has_val_loss) s["val_loss"] = p.val_loss;
    steps.push_back(std::move(s));
  }
  for (size_t i = 0; i < spans_n_; ++i) {
    const Span& s = span(i);
    events.push_back(
        nlohmann::json::parse(bytes_.data() + s.offset, bytes_.data() + s.offset + s.bytes));
  }
  return {{"steps", std::move(steps)}, {"events", std::move(events)}};
}

}  // namespace troupe::launch
