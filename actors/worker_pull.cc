// The worker's half of parallel.schedule = "pull" (docs/schedule.md; the coordinator's is
// coordinator_pull.cc): a train step's pieces arrive one at a time, the first with the
// StepBegin and each next one in a Take answering this worker's Stats of the last. Each is
// computed after the ones before (Trainer::compute_range with append, so their gradient
// buffers stay valid while the owners read them) and sent as soon as it is done.
#include <fmt/format.h>

#include <algorithm>

#include "actors/worker.h"

namespace troupe::actors::worker_impl {

namespace {

// A piece handed to this worker: one of the step's, not computed here yet.
Verdict check_pulled(const WorkerState& s, TreeNode node) {
  if (std::find(s.step_pieces.begin(), s.step_pieces.end(), node) == s.step_pieces.end())
    return drop(Drop::malformed,
                fmt::format("[{}, {}) is not one of the step's pieces", node.lo, node.hi));
  const auto& mine = s.trainer->computed_pieces();
  for (size_t k = 0; k < s.pulled && k < mine.size(); ++k)
    if (mine[k].node == node) return drop(Drop::duplicate, "a piece computed here already");
  return {};
}

}  // namespace

Verdict begin_pulled(Self* self, const train::StepBegin& b) {
  auto& s = self->state;
  if (b.pull_first_size() != s.workers)
    return drop(Drop::malformed, "a pulled step without a first piece for every worker");
  const train::Node& n = b.pull_first(int(s.me));
  const TreeNode first{n.lo(), n.hi()};
  // lo = hi: more workers than pieces; compute_and_send then only lets an owner reduce.
  if (first.lo < first.hi)
    if (Verdict v = check_pulled(s, first)) return v;
  compute_and_send(self, b.step(), first);
  return {};
}

Verdict on_take(Self* self, const train::Take& t, const ActorMessage&) {
  auto& s = self->state;
  if (!s.pull) return drop(Drop::malformed, "a Take while the schedule is static");
  if (t.none()) return {};  // often after this owner reduced the step: nothing to do
  if (t.step() != s.begun || t.step() != s.step || s.reduced)
    return drop(Drop::wrong_step, fmt::format("a Take of step {} at step {}", t.step(), s.step));
  const TreeNode node{t.node().lo(), t.node().hi()};
  if (Verdict v = check_pulled(s, node)) return v;
  compute_and_send(self, t.step(), node);
  return {};
}

}  // namespace troupe::actors::worker_impl
