// The expert slots' placement follows the routing load (issue 15, item 3; [eplb], with
// parallel.experts = "shards"). The coordinator has every committed step's per-expert token
// counts (the Apply's) and forwards them to the eplb_rebalancer actor (eplb_rebalancer.h),
// which keeps the last eplb.window_steps. Before every eplb.rebalance_every_steps-th step the
// coordinator asks it for a placement and holds the StepBegin until the answer: the EPLB
// algorithm (train/eplb.h: expert groups packed onto parallel.node_groups node groups of
// shards, hot experts replicated into the redundant slots, replicas packed onto the shards).
// Every StepBegin carries the placement its step computes with, so the workers agree on it
// through any recovery or coordinator restart; a view of another size starts from the
// uniform placement again, and an answer asked in an older view is dropped and asked again.
// The weights follow by themselves: each worker sends its shard its slots' weights at every
// step. No placement changes a bit of the result (ExpertShards.SameBitsAsInWorkerFor...).
#include <fmt/format.h>

#include "actors/coordinator_state.h"
#include "actors/eplb_rebalancer.h"

namespace troupe::actors::coordinator_impl {

namespace {

constexpr size_t kEventLoadsMax = 4096;  // loads a rebalance event carries (layers × experts)

bool on_shards(Self* self) {
  return self->state.opt.config.parallel.experts == model::ExpertsAt::shards;
}

int64_t view_size(Self* self) {
  return int64_t(self->state.core.workers.size());
}

caf::actor rebalancer(Self* self) {
  auto& b = self->state.balance;
  if (!b.rebalancer) {
    const auto& cfg = self->state.opt.config;
    b.rebalancer = spawn_eplb_rebalancer(self->system(), cfg.model, cfg.eplb.window_steps,
                                         self->state.opt.own_thread);
    self->attach_functor([r = b.rebalancer](const caf::error&) {
      caf::anon_send_exit(r, caf::exit_reason::user_shutdown);
    });
  }
  return b.rebalancer;
}

// A placement is due before this step: a rebalance step not placed yet, with counts to go by.
bool due(Self* self) {
  const auto& s = self->state;
  const int64_t every = s.opt.config.eplb.rebalance_every_steps, step = s.drv.step;
  return on_shards(self) && every > 0 && step > 0 && step % every == 0 &&
         s.balance.placed_at != step && s.balance.counted > 0;
}

// A view of another size than the placement's: uniform until the next rebalance.
void follow_view_size(Self* self) {
  auto& b = self->state.balance;
  if (b.workers == view_size(self)) return;
  b.phy2log.clear();
  b.placed_at = -1;
  b.workers = view_size(self);
}

void take_answer(Self* self, const EplbAnswer& a) {
  auto& s = self->state;
  auto& b = s.balance;
  if (a.epoch != s.core.epoch || a.step != s.drv.step || a.shards != view_size(self) ||
      b.asked_epoch != a.epoch || b.asked_step != a.step) {
    event(self, "rebalance_dropped",
          fmt::format("the placement asked before step {} in epoch {} came after the view "
                      "changed; it is asked again on the new view",
                      a.step, a.epoch),
          {{"step", a.step}, {"asked_epoch", a.epoch}});
    return;
  }
  b.asked_step = -1;
  if (!a.error.empty()) return fail(self, "the eplb_rebalancer: " + a.error);
  b.phy2log = a.phy2log;
  b.placed_at = a.step;
  const double pause_ms = std::chrono::duration<double, std::milli>(now(self) - b.asked_at).count();
  const bool fell_back = s.opt.config.parallel.node_groups != a.node_groups;
  const size_t loads = a.loads.empty() ? 0 : a.loads.size() * a.loads[0].size();
  event(self, "rebalance",
        fmt::format("before step {}: expert slot imbalance {:.3f} -> {:.3f} (max/mean load per "
                    "shard, mean over layers, on {} steps' counts; {} slots on {} shards in {} "
                    "node group(s){}; {} slot(s) given another expert, {:.1f} KiB of weights; "
                    "placed in {:.2f} ms, the step waited {:.2f} ms)",
                    a.step, a.before, a.after, a.window_steps, a.slots, a.shards, a.node_groups,
                    fell_back ? ", as parallel.node_groups does not divide them" : "",
                    a.moved_slots, double(a.moved_bytes) / 1024, a.compute_ms, pause_ms),
        {{"step", a.step},
         {"imbalance_before", a.before},
         {"imbalance_after", a.after},
         {"imbalance_uniform", a.uniform},
         {"window_steps", a.window_steps},
         {"slots", a.slots},
         {"shards", a.shards},
         {"node_groups", a.node_groups},
         {"expert_groups", a.expert_groups},
         {"compute_ms", a.compute_ms},
         {"pause_ms", pause_ms},
         {"moved_slots", a.moved_slots},
         {"moved_bytes", a.moved_bytes},
         // The window's loads, for `make bench-eplb` to place them with eplb.py as well; a
         // big model's would crowd the event ring out.
         {"loads", loads <= kEventLoadsMax ? nlohmann::json(a.loads) : nlohmann::json()}});
  if (s.core.phase == Phase::running && !s.drv.in_flight) start_or_finish(self);
}

}  // namespace

void record_expert_counts(Self* self, const std::vector<std::vector<int64_t>>& counts) {
  if (!on_shards(self) || counts.empty() || self->state.opt.config.eplb.rebalance_every_steps <= 0)
    return;
  ++self->state.balance.counted;
  self->send(rebalancer(self), eplb_counts_atom::value, EplbCounts{counts});
}

bool placement_ready(Self* self) {
  auto& s = self->state;
  auto& b = s.balance;
  follow_view_size(self);
  if (!due(self)) return true;
  if (b.asked_epoch == s.core.epoch && b.asked_step == s.drv.step) return false;  // waiting
  EplbAsk ask;
  ask.step = s.drv.step, ask.epoch = s.core.epoch, ask.shards = view_size(self);
  ask.node_groups = s.opt.config.parallel.node_groups;
  ask.phy2log = b.phy2log;
  b.asked_step = ask.step, b.asked_epoch = ask.epoch, b.asked_at = now(self);
  self->request(rebalancer(self), caf::infinite, std::move(ask))
      .then([self](const EplbAnswer& a) { take_answer(self, a); },
            [self](const caf::error& e) {
              fail(self, "the eplb_rebalancer did not answer: " + self->system().render(e));
            });
  return false;
}

void place_experts(Self* self, train::StepBegin* begin) {
  if (!on_shards(self)) return;
  follow_view_size(self);
  for (int64_t v : self->state.balance.phy2log) begin->add_phy2log(v);
}

}  // namespace troupe::actors::coordinator_impl
