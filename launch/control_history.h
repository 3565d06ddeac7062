// GET /history's store (launch/control.h): the last steps and events of a job in memory
// taken once, when the job starts. A long job's coordinator must not grow while it runs
// (the soak holds its RSS to +1% over hours): a history kept as JSON trees grew by about
// 1 MiB until it was full, 30–60 minutes into a job with a fault every 30 s. Here the steps
// are fixed-size records in a ring and the events their JSON lines in a byte ring, both
// allocated and written (so resident) up front. Not thread-safe: JobControl locks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

namespace troupe::launch {

struct StepPoint {
  int64_t step = 0;
  double loss = 0, tokens_per_s = 0, t_s = 0;
  double val_loss = 0;
  bool has_val_loss = false;
};

class ControlHistory {
 public:
  // At most steps_max steps and events_max events, whose JSON lines take at most
  // event_bytes_max bytes together; the oldest go first.
  ControlHistory(size_t steps_max, size_t events_max, size_t event_bytes_max);

  void add_step(const StepPoint& p);
  // An event longer than a tenth of the byte ring is kept as its kind, time and a text
  // saying how long it was (the events.jsonl file keeps it whole).
  void add_event(const nlohmann::json& e);

  // {"steps": [...], "events": [...]}, oldest first (control.h, ControlTarget::history).
  nlohmann::json to_json() const;
  size_t steps() const { return steps_n_; }
  size_t events() const { return spans_n_; }

 private:
  struct Span {
    size_t offset = 0, bytes = 0;
  };
  void drop_oldest_event();
  const Span& span(size_t i) const { return spans_[(spans_head_ + i) % spans_.size()]; }

  std::vector<StepPoint> steps_;
  size_t steps_head_ = 0, steps_n_ = 0;  // the oldest, and how many
  std::vector<char> bytes_;              // the events' JSON lines, back to back, wrapping
  std::vector<Span> spans_;              // their places in bytes_, a ring like steps_
  size_t spans_head_ = 0, spans_n_ = 0;
};

}  // namespace troupe::launch
