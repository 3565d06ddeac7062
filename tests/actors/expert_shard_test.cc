// The expert_shard role on CAF's test coordinator (actors/expert_shard.cc): its answers are
// bit for bit what ExpertSlots computes in-process (the bits ExpertShards.* prove equal to
// the in-worker MoE block), a request waits for the weights of its step, a new epoch
// forgets the step in flight and the weights' versions, a validation forward keeps nothing,
// and bad requests are dropped without an answer or a crash.
#include <gtest/gtest.h>

#include <random>

#include "actors/roles.h"
#include "tests/actors/switchboard.h"
#include "tests/train/expert_test_data.h"
#include "train/expert_slots.h"

namespace troupe::actors::testing {
namespace {

using model::ExpertSlots;
const std::string shard_address = "n2/expert_shard.0";
const std::string worker = "n1/worker.0";

using tests::random_values;
using tests::same_bits;

class ExpertShard : public ::testing::Test, protected TestBed {
 protected:
  std::string config_text = repo_file("configs/tiny.toml");
  model::ModelConfig model = model::config_from_text(config_text, "tiny.toml", {}).model;
  ExpertSlots<float> local{model};  // the reference: the same slots in this process
  caf::actor shard;
  uint64_t epoch = 1;
  uint64_t request = 0;

  void SetUp() override {
    ASSERT_GT(model::moe_layer_count(model), 0) << "tiny must have MoE layers";
    runtime::RoleContext ctx;
    ctx.router = router;
    ctx.node_id = "n2";
    ctx.address = shard_address;
    ctx.coordinator = "n0/coordinator.0";
    ctx.job = {config_text, "tiny.toml", {}, "", ""};
    ctx.epoch = epoch;
    shard = spawn_expert_shard(sys, ctx, false);
    sched.run();
  }
  ~ExpertShard() override {
    caf::anon_send_exit(shard, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(router, caf::exit_reason::user_shutdown);
    sched.run();
  }

  int64_t C() const { return model.d_model; }

  void send(uint32_t type, const google::protobuf::Message& body,
            std::vector<runtime::Payload> payloads, uint64_t at_epoch = 0) {
    ActorMessage m;
    m.from = worker, m.to = shard_address, m.type = type;
    m.header = body.SerializeAsString();
    m.epoch = at_epoch ? at_epoch : epoch;
    m.payloads = std::move(payloads);
    caf::anon_send(shard, std::move(m));
    sched.run();
  }

  // Weights of `slots` of MoE layer `layer` at `version`, set here and on the shard.
  void weights(int64_t layer, std::vector<int64_t> slots, int64_t version, uint64_t seed) {
    train::ExpertWeights w;
    w.set_version(version), w.set_moe_layer(layer);
    std::vector<runtime::Payload> payloads;
    for (int64_t s : slots) {
      w.add_slots(s);
      auto v = random_values(size_t(local.expert_size()), seed + uint64_t(s));
      local.set_weights(layer, s, v);
      payloads.push_back(owned_payload(std::move(v)));
    }
    send(expert_weights_type, w, std::move(payloads));
  }

  template <class Request>
  Request request_of(int64_t step, int64_t mb, int64_t layer,
                     std::vector<std::pair<int64_t, int64_t>> slot_rows) {
    Request r;
    r.set_step(step), r.set_mb(mb), r.set_moe_layer(layer), r.set_request(++request);
    for (auto [slot, rows] : slot_rows) {
      train::ExpertRows* e = r.add_slots();
      e->set_slot(slot), e->set_rows(rows);
    }
    return r;
  }

  std::vector<ActorMessage> answers(uint32_t type) const {
    std::vector<ActorMessage> out;
    for (const ActorMessage& m : net->of_type(type))
      if (m.to == worker) out.push_back(m);
    return out;
  }
};

TEST_F(ExpertShard, AnswersAreTheSlotsOwnBits) {
  weights(0, {0, 1, 2, 3}, 0, 11);
  const std::vector<std::pair<int64_t, int64_t>> rows = {{1, 3}, {3, 0}, {2, 5}};
  const auto x = random_values(size_t(8 * C()), 5);
  send(expert_forward_type, request_of<train::ExpertForward>(0, 2, 0, rows), {owned_payload(x)});
  ASSERT_EQ(answers(expert_outputs_type).size(), 1u);
  const ActorMessage out = answers(expert_outputs_type)[0];
  train::ExpertOutputs o;
  ASSERT_TRUE(o.ParseFromString(out.header));
  EXPECT_EQ(o.request(), request);
  EXPECT_EQ(out.epoch, epoch);
  std::vector<float> y(x.size());
  int64_t at = 0;
  for (auto [slot, n] : rows) {
    local.forward(2, 0, slot, x.data() + at * C(), n, y.data() + at * C());
    at += n;
  }
  EXPECT_TRUE(same_bits(floats_of(out.payloads.at(0)), y));

  const auto dy = random_values(x.size(), 6);
  send(expert_backward_type, request_of<train::ExpertBackward>(0, 2, 0, rows), {owned_payload(dy)});
  ASSERT_EQ(answers(expert_grads_type).size(), 1u);
  const ActorMessage grads = answers(expert_grads_type)[0];
  ASSERT_EQ(grads.payloads.size(), 1 + rows.size());
  std::vector<float> dx(x.size());
  at = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto [slot, n] = rows[i];
    local.backward(2, 0, slot, dy.data() + at * C(), dx.data() + at * C());
    EXPECT_TRUE(same_bits(floats_of(grads.payloads[1 + i]), *local.grad(2, 0, slot))) << slot;
    at += n;
  }
  EXPECT_TRUE(same_bits(floats_of(grads.payloads[0]), dx));
}

TEST_F(ExpertShard, AForwardWaitsForTheWeightsOfItsStep) {
  weights(0, {0, 1}, 4, 21);
  const auto x = random_values(size_t(4 * C()), 7);
  send(expert_forward_type, request_of<train::ExpertForward>(5, 0, 0, {{0, 2}, {1, 2}}),
       {owned_payload(x)});
  EXPECT_TRUE(answers(expert_outputs_type).empty()) << "computed with the weights of step 4";
  weights(0, {0}, 5, 31);
  EXPECT_TRUE(answers(expert_outputs_type).empty()) << "slot 1 is still at step 4";
  weights(0, {1}, 5, 41);
  ASSERT_EQ(answers(expert_outputs_type).size(), 1u);
  std::vector<float> y(x.size());
  local.forward(0, 0, 0, x.data(), 2, y.data());
  local.forward(0, 0, 1, x.data() + 2 * C(), 2, y.data() + 2 * C());
  EXPECT_TRUE(same_bits(floats_of(answers(expert_outputs_type)[0].payloads.at(0)), y));
  // A forward of step 4 is of an aborted step now: the weights moved on.
  send(expert_forward_type, request_of<train::ExpertForward>(4, 1, 0, {{0, 1}}),
       {owned_payload(random_values(size_t(C()), 8))});
  EXPECT_EQ(answers(expert_outputs_type).size(), 1u);
}

TEST_F(ExpertShard, ANewEpochForgetsTheStepInFlight) {
  weights(0, {0}, 0, 51);
  const auto x = random_values(size_t(C()), 9);
  const auto forward = [&](int64_t step, uint64_t at_epoch) {
    send(expert_forward_type, request_of<train::ExpertForward>(step, 0, 0, {{0, 1}}),
         {owned_payload(x)}, at_epoch);
  };
  forward(0, epoch);
  forward(0, epoch);  // the same pair again in the same epoch: a duplicate
  EXPECT_EQ(answers(expert_outputs_type).size(), 1u);
  forward(1, epoch);  // held: no weights of step 1 yet
  ++epoch;
  forward(0, epoch);  // a recovery redoes step 0: held until this epoch's weights come
  EXPECT_EQ(answers(expert_outputs_type).size(), 1u) << "weights of the old epoch were used";
  weights(0, {0}, 0, 51);  // computed again now, the request held in the old epoch dropped
  ASSERT_EQ(answers(expert_outputs_type).size(), 2u);
  EXPECT_EQ(answers(expert_outputs_type)[1].epoch, epoch);
  EXPECT_TRUE(same_bits(floats_of(answers(expert_outputs_type)[1].payloads.at(0)),
                        floats_of(answers(expert_outputs_type)[0].payloads.at(0))));
  forward(0, epoch - 1);   // from the old view: stale
  weights(0, {0}, 1, 52);  // releases nothing: the held request went with its epoch
  EXPECT_EQ(answers(expert_outputs_type).size(), 2u);
}

// Validation forwards keep nothing: the train step's forward of the same pair, with the same
// weights, is computed after them, and both are the in-process bits.
TEST_F(ExpertShard, AValidationForwardKeepsNothing) {
  weights(0, {0}, 2, 71);
  const auto x = random_values(size_t(2 * C()), 10);
  auto eval = request_of<train::ExpertForward>(2, 0, 0, {{0, 2}});
  eval.set_evaluate(true);
  send(expert_forward_type, eval, {owned_payload(x)});
  send(expert_forward_type, eval, {owned_payload(x)});  // again: nothing of it was kept
  send(expert_forward_type, request_of<train::ExpertForward>(2, 0, 0, {{0, 2}}),
       {owned_payload(x)});
  ASSERT_EQ(answers(expert_outputs_type).size(), 3u);
  std::vector<float> y(x.size());
  local.forward(0, 0, 0, x.data(), 2, y.data());
  for (const ActorMessage& a : answers(expert_outputs_type))
    EXPECT_TRUE(same_bits(floats_of(a.payloads.at(0)), y));
  send(expert_backward_type, request_of<train::ExpertBackward>(2, 0, 0, {{0, 2}}),
       {owned_payload(x)});
  EXPECT_EQ(answers(expert_grads_type).size(), 1u) << "the train forward's pair backs";
}

TEST_F(ExpertShard, BadRequestsAreDroppedWithoutAnAnswer) {
  weights(0, {0, 1}, 0, 61);
  const auto row = [&](int64_t n) { return owned_payload(random_values(size_t(n * C()), 3)); };
  using F = train::ExpertForward;
  using B = train::ExpertBackward;
  send(expert_forward_type, request_of<F>(0, 0, 0, {{2, 1}}), {row(1)});   // held: no weights
  send(expert_forward_type, request_of<F>(0, 0, 0, {{-2, 1}}), {row(1)});  // no such slot
  send(expert_backward_type, request_of<B>(0, 0, 0, {{2, 1}}), {row(1)});  // slot not held
  send(expert_forward_type, request_of<F>(0, 0, 7, {{0, 1}}), {row(1)});   // no such layer
  send(expert_forward_type, request_of<F>(0, 0, 0, {{0, 2}}), {row(1)});   // rows ≠ payload
  send(expert_forward_type, request_of<F>(0, 0, 0, {{0, -1}, {1, 2}}), {row(1)});
  send(expert_forward_type, request_of<F>(0, 0, 0, {{0, 1}}), {});  // no payload
  send(expert_forward_type, request_of<F>(0, -1, 0, {{0, 1}}), {row(1)});
  send(expert_backward_type, request_of<B>(0, 0, 0, {{0, 1}}), {row(1)});  // no forward
  ActorMessage garbage;
  garbage.from = worker, garbage.to = shard_address, garbage.type = expert_forward_type;
  garbage.header = "\xff\xff\xff", garbage.epoch = epoch;
  caf::anon_send(shard, garbage);
  sched.run();
  train::ExpertWeights w;  // a payload of the wrong size
  w.set_version(1), w.set_moe_layer(0), w.add_slots(0);
  send(expert_weights_type, w, {row(1)});
  EXPECT_TRUE(answers(expert_outputs_type).empty());
  EXPECT_TRUE(answers(expert_grads_type).empty());

  send(expert_forward_type, request_of<F>(0, 0, 0, {{0, 2}}), {row(2)});  // still serves
  ASSERT_EQ(answers(expert_outputs_type).size(), 1u);
  send(expert_backward_type, request_of<B>(0, 0, 0, {{0, 3}}), {row(3)});  // not its rows
  EXPECT_TRUE(answers(expert_grads_type).empty());
  send(expert_backward_type, request_of<B>(0, 0, 0, {{0, 2}}), {row(2)});
  send(expert_backward_type, request_of<B>(0, 0, 0, {{0, 2}}), {row(2)});  // twice
  EXPECT_EQ(answers(expert_grads_type).size(), 1u);
  weights(0, {0}, 3, 62);
  train::ExpertWeights older;  // within an epoch a slot's version does not go back
  older.set_version(2), older.set_moe_layer(0), older.add_slots(0);
  send(expert_weights_type, older, {owned_payload(random_values(size_t(local.expert_size()), 1))});
  send(expert_forward_type, request_of<F>(3, 0, 0, {{0, 1}}), {row(1)});
  ASSERT_EQ(answers(expert_outputs_type).size(), 2u);
  std::vector<float> y(static_cast<size_t>(C()));
  const auto x = random_values(size_t(C()), 3);
  local.forward(0, 0, 0, x.data(), 1, y.data());  // with the weights of version 3
  EXPECT_TRUE(same_bits(floats_of(answers(expert_outputs_type)[1].payloads.at(0)), y));
}

}  // namespace
}  // namespace troupe::actors::testing
