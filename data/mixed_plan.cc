#include "data/mixed_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <stdexcept>

namespace troupe::model {

int64_t StepPlan::tokens() const {
  int64_t n = 0;
  for (const MicroBatchPlan& m : micro_batches) n += m.tokens;
  return n;
}

double StepPlan::padding_waste() const {
  const double room = double(micro_batches.size()) * double(budget);
  return room > 0 ? 1.0 - double(tokens()) / room : 0.0;
}

namespace {

void require_positive(int64_t v, const char* key) {
  if (v <= 0)
    throw std::invalid_argument(fmt::format("mixed-length planner: {} = {}: must be > 0", key, v));
}

}  // namespace

MixedPlanner::MixedPlanner(const std::vector<std::string>* docs, uint64_t seed, bool shuffle,
                           const MixedPlanConfig& cfg)
    : docs_(docs), orders_(docs, seed, shuffle, 1), cfg_(cfg), states_(1) {
  require_positive(cfg.max_doc_tokens, "max_doc_tokens");
  require_positive(cfg.tokens_per_microbatch, "tokens_per_microbatch");
  require_positive(cfg.micro_batches_per_step, "micro_batches_per_step");
  if (cfg.window_percent < 0)
    throw std::invalid_argument("mixed-length planner: window_percent must be >= 0");
  if (cfg.max_doc_tokens > cfg.tokens_per_microbatch)
    throw std::invalid_argument(fmt::format(
        "mixed-length planner: max_doc_tokens = {} exceeds tokens_per_microbatch = {}: a "
        "document must fit one micro-batch",
        cfg.max_doc_tokens, cfg.tokens_per_microbatch));
}

PlannedDoc MixedPlanner::at(int64_t position) const {
  const auto n = int64_t(docs_->size());
  const int64_t epoch = position / n;
  auto it =
      std::find_if(epochs_.begin(), epochs_.end(), [&](const auto& e) { return e.first == epoch; });
  if (it == epochs_.end()) {
    if (epochs_.size() >= 2) epochs_.erase(epochs_.begin());
    epochs_.emplace_back(epoch, orders_.epoch_order(epoch));
    it = std::prev(epochs_.end());
  }
  const int64_t doc = it->second[size_t(position % n)];
  return {doc, std::min(int64_t((*docs_)[size_t(doc)].size()) + 2, cfg_.max_doc_tokens)};
}

StepPlan MixedPlanner::plan(const State& before, State* after) const {
  const int64_t bins = cfg_.micro_batches_per_step, budget = cfg_.tokens_per_microbatch;
  StepPlan p;
  p.budget = budget;
  p.micro_batches.resize(size_t(bins));
  // Carried documents first, in stream order: empty bins take them (each fits one).
  std::vector<int64_t> fresh;
  int64_t held = 0;
  for (int64_t pos : before.carried) held += at(pos).tokens;
  after->next = before.next;
  const int64_t want = bins * budget * (100 + cfg_.window_percent) / 100;
  while (held < want) {
    fresh.push_back(after->next);
    held += at(after->next++).tokens;
  }
  std::stable_sort(fresh.begin(), fresh.end(),
                   [&](int64_t a, int64_t b) { return at(a).tokens > at(b).tokens; });
  std::vector<int64_t> order = before.carried;
  order.insert(order.end(), fresh.begin(), fresh.end());
  after->carried.clear();
  for (int64_t pos : order) {
    const PlannedDoc d = at(pos);
    MicroBatchPlan* best = nullptr;  // the fullest bin it fits (ties: the first)
    for (MicroBatchPlan& m : p.micro_batches)
      if (m.tokens + d.tokens <= budget && (!best || m.tokens > best->tokens)) best = &m;
    if (!best) {
      after->carried.push_back(pos);
      continue;
    }
    best->docs.push_back(d);
    best->tokens += d.tokens;
  }
  std::sort(after->carried.begin(), after->carried.end());
  return p;
}

StepPlan MixedPlanner::step(int64_t step) const {
  if (step < 0) throw std::invalid_argument("mixed-length planner: a negative step");
  std::lock_guard<std::mutex> lock(mutex_);
  while (int64_t(states_.size()) <= step) {
    State next;
    plan(states_.back(), &next);
    states_.push_back(std::move(next));
  }
  State ignored;
  return plan(states_[size_t(step)], &ignored);
}

double MixedPlanner::fixed_length_waste(int64_t steps) const {
  int64_t tokens = 0, docs = 0;
  for (int64_t s = 0; s < steps; ++s)
    for (const MicroBatchPlan& m : step(s).micro_batches) {
      tokens += m.tokens;
      docs += int64_t(m.docs.size());
    }
  return docs ? 1.0 - double(tokens) / double(docs * cfg_.max_doc_tokens) : 0.0;
}

}  // namespace troupe::model
