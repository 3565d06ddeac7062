// The eplb_rebalancer actor (issue 15, item 3): it keeps the last window_steps steps' counts
// and answers an ask with what place_expert_slots computes from them; the placement is valid,
// follows the load, keeps expert groups inside node groups, and a bad ask is an answer with
// an error, never a dead actor.
#include "actors/eplb_rebalancer.h"

#include <gtest/gtest.h>

#include <chrono>

#include "tests/tiny_test_job.h"
#include "train/eplb.h"
#include "train/expert_slots.h"

namespace troupe::actors {
namespace {

using Counts = std::vector<std::vector<int64_t>>;

struct QuietSystem : caf::actor_system_config {
  QuietSystem() {
    set("scheduler.max-threads", 2);
    set("logger.file-verbosity", caf::atom("quiet"));
    set("logger.console-verbosity", caf::atom("quiet"));
  }
};

// Every layer's counts (the dense ones' too, as an Apply has them) with expert 0 `hot` times
// as loaded as the others.
Counts step_counts(const model::ModelConfig& m, int64_t hot) {
  Counts c(size_t(m.n_layers), std::vector<int64_t>(size_t(m.n_routed_experts), 10));
  for (size_t l = size_t(m.first_k_dense); l < c.size(); ++l) c[l][0] = 10 * hot;
  return c;
}

EplbAnswer ask(caf::actor_system& sys, const caf::actor& r, const EplbAsk& a) {
  caf::scoped_actor self{sys};
  EplbAnswer out;
  self->request(r, std::chrono::seconds(30), a)
      .receive([&](const EplbAnswer& x) { out = x; },
               [&](const caf::error& e) { ADD_FAILURE() << sys.render(e); });
  return out;
}

TEST(EplbRebalancer, PlacesTheWindowsLoadsAndKeepsOnlyTheWindow) {
  const model::JobConfig job = tests::tiny_test_job({"model.engram_layers=[]"});
  const model::ModelConfig& m = job.model;
  QuietSystem cfg;
  caf::actor_system sys{cfg};
  const caf::actor r = spawn_eplb_rebalancer(sys, m, 2, true);
  std::vector<Counts> window;
  for (int64_t hot : {1, 1, 8, 12}) {  // the window keeps the last two: the skewed steps
    caf::anon_send(r, eplb_counts_atom::value, EplbCounts{step_counts(m, hot)});
    window.push_back(step_counts(m, hot));
  }
  EplbAsk a;
  a.step = 10, a.epoch = 3, a.shards = 3;
  const EplbAnswer got = ask(sys, r, a);
  ASSERT_EQ(got.error, "");
  const EplbAnswer want = place_expert_slots(m, {window[2], window[3]}, a);
  EXPECT_EQ(got.phy2log, want.phy2log);
  EXPECT_EQ(got.loads, want.loads);
  EXPECT_EQ(got.window_steps, 2);
  EXPECT_EQ(got.step, 10);
  EXPECT_EQ(got.epoch, 3u);
  EXPECT_DOUBLE_EQ(got.loads[0][0], 200.0);  // 80 + 120
  EXPECT_LT(got.after, got.before);          // the hot expert got the redundant slots
  model::EplbPlacement p;
  ASSERT_EQ(model::placement_from_phy2log(got.phy2log, model::moe_layer_count(m), 8, &p), "");
  for (const auto& cnt : p.logcnt) EXPECT_GE(cnt[0], 2);
  caf::anon_send_exit(r, caf::exit_reason::user_shutdown);
}

// What a rebalance moves: the slots the new placement gives another expert than the one in
// use, and their weights (3·moe_inter·d_model floats each). Placing the same loads again
// from the placement they produced moves nothing.
TEST(EplbRebalancer, CountsTheSlotsAndBytesARebalanceMoves) {
  const model::JobConfig job = tests::tiny_test_job({"model.engram_layers=[]"});
  const model::ModelConfig& m = job.model;
  const std::vector<Counts> window = {step_counts(m, 8)};
  EplbAsk a;
  a.shards = 3;
  const EplbAnswer first = place_expert_slots(m, window, a);
  ASSERT_EQ(first.error, "");
  const model::EplbPlacement uniform = model::rebalance_experts(model::shard_problem(m, a.shards));
  int64_t moved = 0, i = 0;
  for (const auto& row : uniform.phy2log)
    for (int64_t v : row) moved += first.phy2log[size_t(i++)] != v;
  EXPECT_GT(moved, 0) << "the hot expert takes the redundant slots";
  EXPECT_EQ(first.moved_slots, moved);
  EXPECT_EQ(first.moved_bytes, moved * 3 * m.moe_inter * m.d_model * 4);
  a.phy2log = first.phy2log;
  const EplbAnswer again = place_expert_slots(m, window, a);
  EXPECT_EQ(again.moved_slots, 0);
  EXPECT_EQ(again.moved_bytes, 0);
}

TEST(EplbRebalancer, NodeGroupsAndBadAsksAreAnswered) {
  const model::JobConfig job = tests::tiny_test_job({"model.engram_layers=[]"});
  const model::ModelConfig& m = job.model;
  const std::vector<Counts> window = {step_counts(m, 6)};
  EplbAsk a;
  a.shards = 4, a.node_groups = 2;
  const EplbAnswer grouped = place_expert_slots(m, window, a);
  ASSERT_EQ(grouped.error, "");
  EXPECT_EQ(grouped.node_groups, 2);
  EXPECT_EQ(grouped.slots, 12);
  a.shards = 3;  // 2 node groups do not divide 3 shards: one group
  EXPECT_EQ(place_expert_slots(m, window, a).node_groups, 1);
  a.phy2log = {1, 2, 3};  // not a placement of the MoE layers
  EXPECT_NE(place_expert_slots(m, window, a).error.find("the expert placement in use is invalid"),
            std::string::npos);
  a.phy2log.clear();
  a.shards = 0;
  EXPECT_NE(place_expert_slots(m, window, a).error.find("placing the expert slots failed"),
            std::string::npos);
  // The actor answers a bad ask with its error and goes on answering.
  QuietSystem cfg;
  caf::actor_system sys{cfg};
  const caf::actor r = spawn_eplb_rebalancer(sys, m, 4, false);
  caf::anon_send(r, eplb_counts_atom::value, EplbCounts{window[0]});
  EXPECT_NE(ask(sys, r, a).error, "");
  a.shards = 3;
  EXPECT_EQ(ask(sys, r, a).error, "");
  caf::anon_send_exit(r, caf::exit_reason::user_shutdown);
}

}  // namespace
}  // namespace troupe::actors
