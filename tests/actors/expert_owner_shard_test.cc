// An expert_shard owning experts (actors/expert_shard_owner.cc) on CAF's test coordinator,
// beside a shard holding their replicas: the replica sends each pair's weight gradient to
// the owner, the worker notes each micro-batch's rows, the owner's clipping parts and, after
// Apply, the weights it sends every replica are bit for bit an in-process ExpertOwner's fed
// the same; a corrupt state is refused by index, and what comes out of place is dropped.
#include <gtest/gtest.h>

#include <random>

#include "actors/roles.h"
#include "storage/crc32c.h"
#include "tests/actors/switchboard.h"
#include "tests/train/expert_test_data.h"
#include "train/expert_owner.h"

namespace troupe::actors::testing {
namespace {

using model::ExpertId;
using tests::random_values;
using tests::same_bits;
const std::string owner_address = "n2/expert_shard.0";
const std::string replica_address = "n3/expert_shard.1";
const std::string worker = "n1/worker.0";
const std::string coordinator_address = "n0/coordinator.0";

class ExpertOwnerShard : public ::testing::Test, protected TestBed {
 protected:
  std::string config_text = repo_file("configs/tiny.toml");
  model::JobConfig job = model::config_from_text(config_text, "tiny.toml", {});
  model::ExpertOwner ref{job};                 // the owner in this process
  model::ExpertSlots<float> local{job.model};  // the replica in this process
  std::vector<caf::actor> shards;
  uint64_t request = 0;

  void SetUp() override {
    for (int64_t i = 0; i < 2; ++i) {
      runtime::RoleContext ctx;
      ctx.router = router;
      ctx.node_id = i == 0 ? "n2" : "n3";
      ctx.address = i == 0 ? owner_address : replica_address;
      ctx.index = i;
      ctx.coordinator = coordinator_address;
      ctx.job = {config_text, "tiny.toml", {}, "", ""};
      ctx.epoch = 1;
      shards.push_back(spawn_expert_shard(sys, ctx, false));
    }
    sched.run();
  }
  ~ExpertOwnerShard() override {
    for (const caf::actor& a : shards) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(router, caf::exit_reason::user_shutdown);
    sched.run();
  }

  int64_t C() const { return job.model.d_model; }

  void send(const std::string& from, const std::string& to, uint32_t type,
            const google::protobuf::Message& body, std::vector<runtime::Payload> payloads) {
    ActorMessage m;
    m.from = from, m.to = to, m.type = type;
    m.header = body.SerializeAsString();
    m.epoch = 1;
    m.payloads = std::move(payloads);
    caf::anon_send(to == owner_address ? shards[0] : shards[1], std::move(m));
    sched.run();
  }

  // Experts 0..n-1 of MoE layer 0 to the owner, expert e's replica on slot e of the replica
  // shard: fresh weights, or (state) each expert's state run; `corrupt` flips a byte of one.
  std::vector<std::vector<float>> own(int64_t n, bool fresh, int64_t corrupt = -1) {
    train::ExpertOwn o;
    o.set_version(0), o.set_fresh(fresh);
    std::vector<runtime::Payload> payloads;
    std::vector<std::vector<float>> values;
    for (int64_t e = 0; e < n; ++e) {
      o.add_moe_layers(0), o.add_experts(e);
      train::ExpertReplicas* r = o.add_replicas();
      r->add_shards(replica_address), r->add_slots(e);
      const size_t size = size_t(fresh ? ref.weight_floats() : ref.state_floats());
      std::vector<float> v = random_values(size, 100 + uint64_t(e));
      o.add_crc32c(storage::crc32c(v.data(), v.size() * sizeof(float)));
      if (e == corrupt) v[3] += 1.f;
      values.push_back(v);
      payloads.push_back(owned_payload(std::move(v)));
    }
    send(coordinator_address, owner_address, expert_own_type, o, std::move(payloads));
    return values;
  }

  // A forward and a backward of micro-batch mb through the replica, each listed (slot, rows)
  // owned by the owner; the same pairs computed in `local`, their gradients fed to `ref`.
  void compute(int64_t mb, int64_t micro_batches, std::vector<std::pair<int64_t, int64_t>> rows) {
    train::ExpertForward f;
    train::ExpertBackward b;
    f.set_step(0), f.set_mb(mb), f.set_request(++request);
    b.set_step(0), b.set_mb(mb), b.set_request(++request), b.set_micro_batches(micro_batches);
    int64_t total = 0;
    for (auto [slot, n] : rows) {
      train::ExpertRows* e = f.add_slots();
      e->set_slot(slot), e->set_rows(n);
      train::ExpertRows* g = b.add_slots();
      g->set_slot(slot), g->set_rows(n), g->set_expert(slot), g->set_owner(owner_address);
      total += n;
    }
    const auto x = random_values(size_t(total * C()), 7 + uint64_t(mb));
    const auto dy = random_values(x.size(), 17 + uint64_t(mb));
    send(worker, replica_address, expert_forward_type, f, {owned_payload(x)});
    send(worker, replica_address, expert_backward_type, b, {owned_payload(dy)});
    std::vector<float> y(x.size()), dx(x.size());
    int64_t at = 0;
    for (auto [slot, n] : rows) {
      local.forward(mb, 0, slot, x.data() + at * C(), n, y.data() + at * C());
      local.backward(mb, 0, slot, dy.data() + at * C(), dx.data() + at * C());
      EXPECT_EQ(ref.add_grad(mb, {0, slot}, *local.grad(mb, 0, slot)), "");
      at += n;
    }
  }

  void note(int64_t mb, int64_t micro_batches, const std::vector<int64_t>& experts) {
    train::ExpertRowsNote n;
    n.set_step(0), n.set_mb(mb), n.set_micro_batches(micro_batches);
    std::vector<ExpertId> ids;
    for (int64_t e : experts) n.add_moe_layers(0), n.add_experts(e), ids.push_back({0, e});
    send(worker, owner_address, expert_rows_note_type, n, {});
    EXPECT_EQ(ref.note_rows(mb, ids), "");
  }

  std::vector<ActorMessage> sent(uint32_t type, const std::string& to) const {
    std::vector<ActorMessage> out;
    for (const ActorMessage& m : net->of_type(type))
      if (m.to == to) out.push_back(m);
    return out;
  }
};

TEST_F(ExpertOwnerShard, ItsNormAndUpdateAreTheInProcessOwnersBits) {
  const std::vector<std::vector<float>> w = own(4, true);
  ASSERT_EQ(sent(expert_owned_type, coordinator_address).size(), 1u);
  train::ExpertOwned owned;
  ASSERT_TRUE(owned.ParseFromString(sent(expert_owned_type, coordinator_address)[0].header));
  EXPECT_TRUE(owned.refused().empty()) << owned.why();
  ASSERT_EQ(sent(expert_weights_type, replica_address).size(), 1u);  // every slot at once
  for (int64_t e = 0; e < 4; ++e)
    ref.own({0, e}, w[size_t(e)]), local.set_weights(0, e, w[size_t(e)]);

  ref.begin_step(0, 2);
  compute(0, 2, {{0, 3}, {1, 2}});
  note(1, 2, {2});  // the notes and the leaves in any order
  compute(1, 2, {{2, 4}});
  EXPECT_TRUE(sent(expert_norm_type, coordinator_address).empty()) << "micro-batch 0's note";
  note(0, 2, {0, 1});
  ASSERT_EQ(sent(expert_leaf_type, owner_address).size(), 3u);
  for (const ActorMessage& g : sent(expert_grads_type, worker))
    for (size_t i = 1; i < g.payloads.size(); ++i)
      EXPECT_TRUE(g.payloads[i].bytes.empty()) << "the weight gradient went to the owner";
  ASSERT_TRUE(ref.complete());
  ASSERT_EQ(sent(expert_norm_type, coordinator_address).size(), 1u);
  const ActorMessage norm = sent(expert_norm_type, coordinator_address)[0];
  train::ExpertNorm n;
  ASSERT_TRUE(n.ParseFromString(norm.header));
  std::vector<double> parts, want;
  ASSERT_TRUE(read_payload(norm.payloads.at(0), &parts));
  const std::vector<model::NormRun> runs = ref.norm_runs();
  ASSERT_EQ(n.offsets_size(), int(runs.size()));
  for (size_t i = 0; i < runs.size(); ++i) {
    EXPECT_EQ(n.offsets(int(i)), runs[i].offset);
    want.insert(want.end(), runs[i].parts.begin(), runs[i].parts.end());
  }
  EXPECT_EQ(parts, want);

  train::Apply a;
  a.set_step(0), a.set_clip_scale(0.5);
  send(coordinator_address, owner_address, apply_type, a, {});
  ref.apply(model::lr_at(job.train, 0), 0.5);
  ASSERT_EQ(sent(expert_weights_type, replica_address).size(), 2u);
  const ActorMessage update = sent(expert_weights_type, replica_address)[1];
  train::ExpertWeights ew;
  ASSERT_TRUE(ew.ParseFromString(update.header));
  EXPECT_EQ(ew.version(), 1);
  ASSERT_EQ(ew.slots_size(), 4);
  for (int i = 0; i < 4; ++i) {
    const std::span<const float> r = ref.weights({0, ew.slots(i)});
    EXPECT_TRUE(same_bits(floats_of(update.payloads.at(size_t(i))), {r.begin(), r.end()}));
  }
  send(coordinator_address, owner_address, apply_type, a, {});  // twice: dropped
  EXPECT_EQ(sent(expert_weights_type, replica_address).size(), 2u);
  own(1, true);  // and the shard still serves
  EXPECT_EQ(sent(expert_owned_type, coordinator_address).size(), 2u);
}

TEST_F(ExpertOwnerShard, ACorruptStateIsRefusedByIndexAndTheRestOwned) {
  own(3, false, 1);  // state runs (a migration), expert 1's corrupted on the way
  train::ExpertOwned owned;
  ASSERT_TRUE(owned.ParseFromString(sent(expert_owned_type, coordinator_address).at(0).header));
  ASSERT_EQ(owned.refused_size(), 1);
  EXPECT_EQ(owned.refused(0), 1);
  EXPECT_NE(owned.why().find("CRC32C"), std::string::npos) << owned.why();
  ASSERT_EQ(sent(expert_weights_type, replica_address).size(), 1u);
  train::ExpertWeights ew;
  ASSERT_TRUE(ew.ParseFromString(sent(expert_weights_type, replica_address)[0].header));
  EXPECT_EQ(ew.slots_size(), 2) << "experts 0 and 2 only";

  train::Apply a;  // before any gradient: dropped
  a.set_step(0), a.set_clip_scale(1);
  send(coordinator_address, owner_address, apply_type, a, {});
  train::ExpertLeaf leaf;  // of expert 1, not owned: dropped, no norm ever
  leaf.set_step(0), leaf.set_mb(0), leaf.set_moe_layer(0), leaf.set_expert(1);
  leaf.set_micro_batches(1);
  send(replica_address, owner_address, expert_leaf_type, leaf,
       {owned_payload(std::vector<float>(size_t(ref.weight_floats())))});
  train::ExpertRowsNote bad;  // of a step with no micro-batch
  bad.set_step(0), bad.set_mb(0), bad.set_micro_batches(0);
  send(worker, owner_address, expert_rows_note_type, bad, {});
  EXPECT_TRUE(sent(expert_norm_type, coordinator_address).empty());
  EXPECT_EQ(sent(expert_weights_type, replica_address).size(), 1u);
  // The owner still serves: a note that no expert had a row completes the step.
  train::ExpertRowsNote none;
  none.set_step(0), none.set_mb(0), none.set_micro_batches(1);
  send(worker, owner_address, expert_rows_note_type, none, {});
  EXPECT_EQ(sent(expert_norm_type, coordinator_address).size(), 1u);
}

}  // namespace
}  // namespace troupe::actors::testing
