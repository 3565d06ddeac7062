// parallel.schedule = "pull" (docs/schedule.md): the coordinator hands a train step's pieces
// (plan_pull_pieces, aligned canonical-tree nodes) to the workers one at a time, the most
// micro-batches first: each worker's first piece rides on the StepBegin, and each Stats of a
// piece is answered with the worker's next one (Take). A fast worker so computes more
// pieces than a slow one and no worker waits for an equal share of a slow one. Which worker
// computed a piece changes no bit: the owners reduce the pieces in the canonical tree.
//
// A view change aborts the step (its pieces, handed out or not, are forgotten with it) and
// the step begins again in the new view with pieces planned for it.
#include <fmt/format.h>

#include "actors/coordinator_state.h"
#include "train/dp_plan.h"

namespace troupe::actors::coordinator_impl {

bool pulling(Self* self) {
  return self->state.opt.config.parallel.schedule == model::Schedule::pull;
}

void begin_pull(Self* self, train::StepBegin* b) {
  auto& d = self->state.drv;
  const auto W = int64_t(self->state.core.workers.size());
  const std::vector<model::TreeNode> order = model::pull_order(
      model::plan_pull_pieces(d.n_mb, W, self->state.opt.config.parallel.pull_pieces_per_worker));
  d.pull.queue.assign(order.begin(), order.end());
  d.pull.out.assign(size_t(W), std::nullopt);
  d.pull.total = int64_t(order.size());
  d.pull.reported = 0;
  for (int64_t w = 0; w < W; ++w) {
    train::Node* n = b->add_pull_first();
    if (d.pull.queue.empty()) continue;  // lo = hi = 0: none for this worker
    d.pull.out[size_t(w)] = d.pull.queue.front();
    n->set_lo(d.pull.queue.front().lo), n->set_hi(d.pull.queue.front().hi);
    d.pull.queue.pop_front();
  }
}

Verdict take_pulled_stats(Self* self, const train::Stats& st,
                          const std::vector<model::Piece<float>>& got) {
  auto& s = self->state;
  auto& d = s.drv;
  if (st.step() != d.step || !d.in_flight || d.apply_sent)
    return drop(Drop::wrong_step, fmt::format("Stats of step {} at step {}", st.step(), d.step));
  std::optional<model::TreeNode>& out = d.pull.out.at(size_t(st.worker()));
  if (got.size() != 1 || !out || got[0].node != *out)
    return drop(got.size() == 1 && !out ? Drop::duplicate : Drop::malformed,
                "Stats of a piece other than the one handed to the worker");
  out.reset();
  ++d.pull.reported;
  ++d.pull.by_worker[s.core.workers[size_t(st.worker())]];
  train::Take t;
  t.set_step(d.step);
  if (d.pull.queue.empty()) {
    t.set_none(true);
  } else {
    out = d.pull.queue.front();
    d.pull.queue.pop_front();
    t.mutable_node()->set_lo(out->lo), t.mutable_node()->set_hi(out->hi);
  }
  send_to(self, s.core.workers[size_t(st.worker())], take_type, t);
  return {};
}

bool pull_complete(Self* self) {
  const PullRound& p = self->state.drv.pull;
  return p.total > 0 && p.reported == p.total;
}

std::string pull_waiting(Self* self) {
  const auto& s = self->state;
  std::string out;
  for (size_t w = 0; w < s.drv.pull.out.size() && w < s.core.workers.size(); ++w)
    if (const auto& n = s.drv.pull.out[w])
      out += (out.empty() ? "pieces from " : ", ") +
             fmt::format("{} ([{}, {}))", s.core.workers[w], n->lo, n->hi);
  return out;
}

void report_pulls(Self* self) {
  const auto& by = self->state.drv.pull.by_worker;
  std::string text;
  nlohmann::json pieces = nlohmann::json::object();
  for (const auto& [worker, n] : by) {
    text += fmt::format("{}{} {}", text.empty() ? "" : ", ", worker, n);
    pieces[worker] = n;
  }
  event(self, "pulled", "pieces computed, by worker (aborted steps' too): " + text,
        {{"pieces", pieces}});
}

}  // namespace troupe::actors::coordinator_impl
