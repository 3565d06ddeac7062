// EngramSlices (train.proto): a piece's sparse table gradients survive the trip, and what
// does not fit the tables (row ids, counts, sizes) is refused rather than reduced.
#include "actors/protocol.h"

#include <gtest/gtest.h>

#include "actors/compute_faults.h"
#include "actors/rollout_wire.h"

namespace troupe::actors {
namespace {

std::vector<model::EngramTableInfo> tables() {
  model::EngramTableInfo a, b;
  a.rows = 11, a.dim = 2, b.rows = 13, b.dim = 3;
  return {a, b};
}

model::EngramGrad<float> grad() {
  model::EngramGrad<float> g(2);
  g[0].ids = {1, 4, 10};
  g[0].values = {1, 2, 3, 4, 5, 6};
  g[1].ids = {12};
  g[1].values = {7, 8, 9};
  return g;
}

struct Packed {
  train::EngramSlices msg;
  std::vector<runtime::Payload> payloads;
};

Packed pack(const std::vector<model::EngramGrad<float>>& grads) {
  Packed p;
  p.msg.set_step(3);
  for (size_t i = 0; i < grads.size(); ++i)
    add_engram_piece(grads[i], {int64_t(i), int64_t(i) + 1}, &p.msg, &p.payloads);
  return p;
}

TEST(EngramSlices, PiecesRoundTrip) {
  model::EngramGrad<float> empty(2);
  const Packed p = pack({grad(), empty});
  model::EngramGrad<float> out;
  ASSERT_TRUE(read_engram_piece(p.msg, p.payloads, 0, tables(), &out));
  for (size_t t = 0; t < 2; ++t) {
    EXPECT_EQ(out[t].ids, grad()[t].ids);
    EXPECT_EQ(out[t].values, grad()[t].values);
  }
  ASSERT_TRUE(read_engram_piece(p.msg, p.payloads, 1, tables(), &out));
  EXPECT_TRUE(out[0].ids.empty() && out[1].ids.empty());
  EXPECT_EQ(p.msg.nodes(1).lo(), 1);
  EXPECT_FALSE(read_engram_piece(p.msg, p.payloads, 2, tables(), &out));  // no node 2
}

TEST(EngramSlices, WhatDoesNotFitIsRefused) {
  model::EngramGrad<float> out;
  auto refused = [&](model::EngramGrad<float> g) {
    const Packed p = pack({g});
    return !read_engram_piece(p.msg, p.payloads, 0, tables(), &out);
  };
  model::EngramGrad<float> g = grad();
  g[1].ids = {13};  // outside a 13-row table
  EXPECT_TRUE(refused(g));
  g = grad();
  g[0].ids = {4, 1, 10};  // not ascending
  EXPECT_TRUE(refused(g));
  g = grad();
  g[0].ids = {1, 1, 10};  // twice
  EXPECT_TRUE(refused(g));
  g = grad();
  g[1].values.pop_back();  // a row of the wrong width
  EXPECT_TRUE(refused(g));
  g = grad();
  g.pop_back();  // a table missing
  EXPECT_TRUE(refused(g));

  Packed p = pack({grad()});
  p.msg.set_table_rows(0, 4);  // counts that disagree with the payloads
  EXPECT_FALSE(read_engram_piece(p.msg, p.payloads, 0, tables(), &out));
  p = pack({grad()});
  p.payloads.pop_back();
  EXPECT_FALSE(read_engram_piece(p.msg, p.payloads, 0, tables(), &out));
  p = pack({grad()});
  p.msg.set_table_rows(1, -1);
  EXPECT_FALSE(read_engram_piece(p.msg, p.payloads, 0, tables(), &out));
}

// A step's pieces: each at most once (a second copy is named as one, before anything else
// is counted), inside the batch, no more than the step has.
TEST(StepPieces, DuplicatesAndStrangersAreRefused) {
  const std::vector<model::TreeNode> have = {{0, 4}};
  auto nodes = [](std::vector<model::TreeNode> list) {
    train::GradSlices gs;
    for (const auto& n : list) {
      train::Node* x = gs.add_nodes();
      x->set_lo(n.lo), x->set_hi(n.hi);
    }
    return gs;
  };
  EXPECT_EQ(check_new_pieces(have, nodes({{4, 6}, {6, 8}}).nodes(), 3, 8), "");
  EXPECT_EQ(check_new_pieces(have, nodes({{0, 4}}).nodes(), 3, 8), "a piece received twice");
  EXPECT_EQ(check_new_pieces({}, nodes({{4, 6}, {4, 6}}).nodes(), 3, 8), "a piece received twice");
  EXPECT_EQ(check_new_pieces(have, nodes({{4, 6}, {6, 8}, {7, 8}}).nodes(), 3, 8),
            "more pieces than the step has");
  EXPECT_EQ(check_new_pieces(have, nodes({{6, 9}}).nodes(), 3, 8), "a piece outside the batch");
  EXPECT_EQ(check_new_pieces(have, nodes({{5, 5}}).nodes(), 3, 8), "a piece outside the batch");
  EXPECT_EQ(check_new_pieces(have, nodes({{-1, 2}}).nodes(), 3, 8), "a piece outside the batch");
}

// Fault plans name message types (chaos/fault_plan.h): every name maps back to its type.
// A group travels bit for bit, and a group that does not add up is refused, naming why.
TEST(RolloutGroup, RoundTripsAndRefusesWhatDoesNotFit) {
  std::vector<model::Rollout> group(2);
  for (int i = 0; i < 2; ++i) {
    model::Rollout& r = group[size_t(i)];
    r.prompt = 3, r.sample = i;
    r.context = {256, 49, 43, 50, 61};
    r.completion = i == 0 ? std::vector<int32_t>{51, 257} : std::vector<int32_t>{52, 53, 257};
    r.reward = i == 0 ? 1.0 : 0.0;
    r.advantage = i == 0 ? 0.99995 : -0.99995;
    for (size_t t = 0; t < r.completion.size(); ++t) {
      r.logp_old.push_back(-0.1f * float(t + 1) - 1e-7f);
      r.logp_ref.push_back(-0.3f * float(t + 1));
    }
  }
  train::RolloutGroup g;
  actors::group_to_proto(group, 7, &g);
  EXPECT_EQ(g.step(), 7);
  EXPECT_EQ(g.prompt(), 3);
  std::vector<model::Rollout> back;
  ASSERT_EQ(actors::group_from_proto(g, 2, 258, &back), "");
  ASSERT_EQ(back.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(back[i].context, group[i].context);
    EXPECT_EQ(back[i].completion, group[i].completion);
    EXPECT_EQ(back[i].logp_old, group[i].logp_old);  // bit for bit
    EXPECT_EQ(back[i].logp_ref, group[i].logp_ref);
    EXPECT_EQ(back[i].advantage, group[i].advantage);
    EXPECT_EQ(back[i].sample, int64_t(i));
  }
  const auto refused = [&](train::RolloutGroup bad, int64_t G, const char* why) {
    std::vector<model::Rollout> out;
    const std::string e = actors::group_from_proto(bad, G, 258, &out);
    EXPECT_NE(e.find(why), std::string::npos) << e;
    EXPECT_TRUE(out.empty());
  };
  refused(g, 3, "for a group of 3");
  train::RolloutGroup b = g;
  b.mutable_tokens()->RemoveLast();
  refused(b, 2, "tokens");
  b = g, b.set_tokens(0, 999);
  refused(b, 2, "outside the vocabulary");
  b = g, b.set_completion_len(0, 0);
  refused(b, 2, "a completion of 0 tokens");
  b = g, b.clear_context();
  refused(b, 2, "no context");
}

TEST(TypeNames, EveryNameMapsBackToItsType) {
  int named = 0;
  for (uint32_t t = 1; t < train_types_end; ++t) {
    if (type_name(t) == "unknown") continue;
    EXPECT_EQ(type_of_name(type_name(t)), t) << type_name(t);
    ++named;
  }
  EXPECT_EQ(named, int(runtime::rejoin_type) + int(train_types_end - step_begin_type));
  EXPECT_EQ(type_of_name("Recover"), uint32_t(recover_type));
  EXPECT_EQ(type_of_name("unknown"), 0u);
  EXPECT_EQ(type_of_name("recover"), 0u);  // names are exact
}

TEST(ComputeFaults, OneWorkerSlowedByAFactor) {
  const ComputeFaults f = ComputeFaults::parse("worker.1:2.5");
  EXPECT_EQ(f.worker, 1);
  EXPECT_DOUBLE_EQ(f.extra_ms(1, 100), 150);
  EXPECT_DOUBLE_EQ(f.extra_ms(0, 100), 0);
  EXPECT_EQ(ComputeFaults::parse("").worker, -1);
  for (const char* bad : {"worker.1", "worker.x:2", "worker.1:0.5", "n2:2", "worker.1:2x",
                          "worker.-1:2", "worker.1:nan"})
    EXPECT_THROW(ComputeFaults::parse(bad), std::invalid_argument) << bad;
}

}  // namespace
}  // namespace troupe::actors
