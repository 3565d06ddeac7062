// The worker's side of GRPO (issue 17, grpo.enabled). A train step's StepBegin carries the
// step's rollout groups (actors/coordinator_rollout.cc): every worker unpacks all of them into
// the same micro-batches (train/grpo_step.h grpo_step_of) and computes its share with the
// GRPO head loss, so the reduction and the update are the supervised step's. After an owner
// applies a step it streams its updated range to every rollout actor too, as it does to the
// other workers: the rollout actors sample the next steps on it (actors/rollout.cc).
#include <fmt/format.h>

#include "actors/grpo_weights.h"
#include "actors/rollout_wire.h"
#include "actors/worker.h"
#include "config/config_parse.h"

namespace troupe::actors::worker_impl {

void start_grpo(WorkerState& s, const model::JobConfig& cfg) {
  s.grpo = cfg.grpo.enabled;
  if (!s.grpo) return;
  s.grpo_loss = model::grpo_runner_config(cfg).loss;
  s.grpo_group_size = cfg.grpo.group_size;
  if (s.ctx.job.resume_manifest.empty())
    s.trainer->params = grpo_start_weights(cfg, s.trainer->table);
}

Verdict take_rollouts(WorkerState& s, const train::StepBegin& b, const ActorMessage& m) {
  if (!s.grpo) {
    if (b.rollout_groups() > 0) return drop(Drop::malformed, "rollouts in a job without GRPO");
    return {};
  }
  train::RolloutGroups all;
  if (m.payloads.size() != 1 ||
      !all.ParseFromArray(m.payloads[0].bytes.data(), int(m.payloads[0].bytes.size())) ||
      all.groups_size() != b.rollout_groups())
    return drop(Drop::malformed, "a GRPO step without its rollouts as payload 0");
  std::vector<model::Rollout> rollouts;
  for (int p = 0; p < all.groups_size(); ++p) {
    const train::RolloutGroup& g = all.groups(p);
    if (g.step() != b.step() || g.prompt() != p)
      return drop(Drop::malformed, fmt::format("group {} of step {} as group {} of step {}",
                                               g.prompt(), g.step(), p, b.step()));
    const std::string bad =
        group_from_proto(g, s.grpo_group_size, s.trainer->cfg.model.vocab_size, &rollouts);
    if (!bad.empty()) return drop(Drop::malformed, "a rollout group: " + bad);
  }
  if (rollouts.empty()) return drop(Drop::malformed, "a GRPO step without its rollouts");
  s.trainer->set_grpo_step(std::make_shared<model::GrpoStep>(model::grpo_step_of(
      b.step(), rollouts, s.trainer->micro_batches(), s.trainer->cfg.model.seq_len, s.grpo_loss)));
  s.rollout_actors.assign(b.rollout_actors().begin(), b.rollout_actors().end());
  return {};
}

void stream_to_rollouts(Self* self, const train::Weights& w) {
  auto& s = self->state;
  for (const std::string& to : s.rollout_actors) {
    ActorMessage m = make_message(s.ctx.address, to, weights_type, w);
    m.epoch = unfenced_epoch;  // a later view change must not drop it: it is not sent again
    m.payloads = {
        view_payload(s.trainer, s.trainer->params.data() + w.lo(), size_t(w.hi() - w.lo()))};
    self->send(s.ctx.router, std::move(m));
  }
}

}  // namespace troupe::actors::worker_impl
