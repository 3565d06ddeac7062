// A worker's routed experts on expert_shard actors (actors/expert_client.h), on CAF's real
// threaded scheduler: a grad engine whose experts are computed by three shard actors, with
// replicas, gives every bit of every piece's gradient and loss that the in-worker engine
// gives; a shard that never answers is an error naming it, not a hang.
#include "actors/expert_client.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <mutex>

#include "actors/roles.h"
#include "storage/crc32c.h"
#include "tests/actors/switchboard.h"
#include "tests/tiny_test_job.h"
#include "tests/train/expert_test_data.h"
#include "train/expert_slots.h"
#include "train/schedule.h"
#include "train/trainer.h"

namespace troupe::actors::testing {
namespace {

using namespace std::chrono_literals;
const std::vector<std::string> sets = {"model.engram_layers=[]", "model.n_layers=3"};

using tests::random_batch;
using tests::skewed_placement;

struct ThreadedSystem : caf::actor_system_config {
  ThreadedSystem() {
    set("scheduler.max-threads", 2);
    set("logger.file-verbosity", caf::atom("quiet"));
    set("logger.console-verbosity", caf::atom("quiet"));
  }
};

class ExpertClientTest : public ::testing::Test {
 protected:
  model::JobConfig job = tests::tiny_test_job(sets);
  const model::ModelConfig& m = job.model;
  model::ParamTable table{m};
  std::vector<float> params = std::vector<float>(size_t(table.total()));
  ThreadedSystem cfg;
  caf::actor_system sys{cfg};
  std::shared_ptr<Net> net = std::make_shared<Net>();
  caf::actor router = sys.spawn(switchboard, net);
  std::vector<caf::actor> shards;

  void SetUp() override { model::init_params(table, 7, params.data()); }
  ~ExpertClientTest() override {
    for (const auto& s : shards) caf::anon_send_exit(s, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(router, caf::exit_reason::user_shutdown);
  }

  std::string shard_address(int64_t i) const {
    return "n" + std::to_string(i + 2) + "/expert_shard." + std::to_string(i);
  }

  // `count` shards, slot s on shard s / (R / count), each given its slots' weights (step 0)
  // ahead of any request (straight to the shard: the router may not know it yet).
  ExpertRoute place(const model::EplbPlacement& placement, int64_t count) {
    ExpertRoute route{placement, {}};
    const int64_t R = int64_t(placement.phy2log.at(0).size()), per = R / count;
    for (int64_t s = 0; s < R; ++s) route.shard_of_slot.push_back(shard_address(s / per));
    const auto layouts = model::moe_layouts(m, table);
    const int64_t part = m.moe_inter * m.d_model;
    for (int64_t i = 0; i < count; ++i) {
      runtime::RoleContext ctx;
      ctx.router = router;
      ctx.address = shard_address(i);
      ctx.index = i;
      ctx.coordinator = "n0/coordinator.0";
      ctx.job = {repo_file("tests/configs/tiny_test.toml"), "tiny_test.toml", sets, "", ""};
      ctx.epoch = 1;
      shards.push_back(spawn_expert_shard(sys, ctx, false));
      for (int64_t l = 0; l < int64_t(layouts.size()); ++l) {
        train::ExpertWeights w;
        w.set_version(0), w.set_moe_layer(l);
        ActorMessage msg;
        for (int64_t s = i * per; s < (i + 1) * per; ++s) {
          w.add_slots(s);
          std::vector<float> v(size_t(3 * part));
          const auto e = size_t(placement.phy2log[size_t(l)][size_t(s)]);
          model::copy_expert_weights(layouts[size_t(l)].experts[e], part, params.data(), v.data());
          msg.payloads.push_back(owned_payload(std::move(v)));
        }
        msg.from = "n0/test.0", msg.to = shard_address(i), msg.type = expert_weights_type;
        msg.header = w.SerializeAsString(), msg.epoch = 1;
        caf::anon_send(shards.back(), std::move(msg));
      }
    }
    std::vector<std::string> names;
    for (int64_t i = 0; i < count; ++i) {  // the part after the '/'
      const std::string a = shard_address(i);
      names.push_back(a.substr(a.find('/') + 1));
    }
    EXPECT_TRUE(wait_registered(sys, router, names)) << "the shards never registered";
    return route;
  }

  // Each shard the experts route.owner_of gives it, fresh, by ExpertOwn.
  void own_experts(const ExpertRoute& route) {
    const auto layouts = model::moe_layouts(m, table);
    const int64_t part = m.moe_inter * m.d_model;
    for (int64_t i = 0; i < int64_t(shards.size()); ++i) {  // each shard its experts, fresh
      train::ExpertOwn o;
      std::vector<runtime::Payload> payloads;
      for (size_t l = 0; l < route.owner_of.size(); ++l)
        for (int64_t e = 0; e < m.n_routed_experts; ++e) {
          if (route.owner_of[l][size_t(e)] != shard_address(i)) continue;
          o.add_moe_layers(int64_t(l)), o.add_experts(e);
          train::ExpertReplicas* r = o.add_replicas();
          for (int64_t slot : route.placement.log2phy[l][size_t(e)])
            if (slot >= 0) r->add_shards(route.shard_of_slot[size_t(slot)]), r->add_slots(slot);
          std::vector<float> w(size_t(3 * part));
          model::copy_expert_weights(layouts[l].experts[size_t(e)], part, params.data(), w.data());
          o.add_crc32c(storage::crc32c(w.data(), w.size() * sizeof(float)));
          payloads.push_back(owned_payload(std::move(w)));
        }
      o.set_fresh(true);
      ActorMessage msg = make_message("n0/coordinator.0", shard_address(i), expert_own_type, o);
      msg.payloads = std::move(payloads), msg.epoch = 1;
      caf::anon_send(shards[size_t(i)], std::move(msg));
    }
  }
};

TEST_F(ExpertClientTest, AGradEngineOnShardActorsHasTheInWorkerBits) {
  const model::Batch batch = random_batch(m, 12, 3);  // 6 micro-batches of 2 rows
  model::GradEngine<float> plain(m, table, 2);
  const std::vector<model::Piece<float>> want =
      plain.run_range(params.data(), batch, 2, 1, 6, true, true);
  std::vector<std::vector<float>> want_grads;
  for (size_t k = 0; k < want.size(); ++k) want_grads.push_back(plain.piece_grad(k));

  ExpertClient client(sys, router, "n1/expert_client.0", m, table,
                      place(skewed_placement(m, 12, 3), 3), 20000ms);
  client.set_step(0, 1);
  model::GradEngine<float> remote(m, table, 2);
  remote.set_routed_experts(&client);
  const std::vector<model::Piece<float>>& got =
      remote.run_range(params.data(), batch, 2, 1, 6, true, true);
  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < got.size(); ++k) {
    EXPECT_EQ(got[k].parts.ce, want[k].parts.ce) << k;
    EXPECT_EQ(got[k].parts.mtp, want[k].parts.mtp) << k;
    EXPECT_EQ(got[k].parts.bal, want[k].parts.bal) << k;
    EXPECT_EQ(got[k].counts, want[k].counts) << k;
    const std::vector<float>& g = remote.piece_grad(k);
    ASSERT_EQ(g.size(), want_grads[k].size());
    EXPECT_TRUE(tests::same_bits(g, want_grads[k]))
        << "piece " << k << ": the gradient differs from the in-worker one";
  }
  size_t forwards = 0;
  for (const ActorMessage& msg : net->sent) forwards += msg.type == expert_forward_type;
  EXPECT_GT(forwards, 0u) << "no request went to a shard";
}

// What a coordinator hears, collected on the actor's thread and read under the lock.
struct Heard {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<ActorMessage> norms, owned;
};

caf::behavior hearer(caf::event_based_actor*, std::shared_ptr<Heard> h) {
  return {[h](ActorMessage& m) {
    const std::lock_guard<std::mutex> lock(h->mu);
    (m.type == expert_norm_type ? h->norms : h->owned).push_back(m);
    h->cv.notify_all();
  }};
}

// With owners (each expert's first replica's shard, given its weights by ExpertOwn), the
// worker's gradient keeps no routed expert's and the owners' clipping runs are those of the
// in-worker gradient's experts, bit for bit; every other bit of the gradient is unchanged.
TEST_F(ExpertClientTest, OwnersOnShardActorsReduceTheInWorkerExpertGradients) {
  const model::Batch batch = random_batch(m, 12, 4);  // 6 micro-batches of 2 rows
  model::GradEngine<float> plain(m, table, 2);
  plain.run_range(params.data(), batch, 2, 0, 6, true, true);  // one piece: the root
  const std::vector<float> want = plain.piece_grad(0);

  ExpertRoute route = place(skewed_placement(m, 12, 3), 3);
  route.owner_of = first_replica_owners(route);
  auto heard = std::make_shared<Heard>();
  caf::anon_send(router, runtime::register_atom::value, std::string("coordinator.0"),
                 sys.spawn(hearer, heard));
  const auto layouts = model::moe_layouts(m, table);
  const int64_t part = m.moe_inter * m.d_model;
  own_experts(route);
  {  // every shard took its experts before the first request
    std::unique_lock<std::mutex> lock(heard->mu);
    ASSERT_TRUE(heard->cv.wait_for(lock, 20s, [&] { return heard->owned.size() == 3; }));
  }
  ExpertClient client(sys, router, "n1/expert_client.0", m, table, route, 20000ms);
  client.set_step(0, 1);
  client.set_micro_batches(6);
  model::GradEngine<float> remote(m, table, 2);
  remote.set_routed_experts(&client);
  remote.run_range(params.data(), batch, 2, 0, 6, true, true);
  std::vector<float> expect = want;  // no routed expert's gradient in the worker's
  for (const model::MoeLayout& layer : layouts)
    for (const model::SwigluLayout& L : layer.experts)
      std::fill(expect.begin() + L.gate, expect.begin() + L.gate + 3 * part, 0.f);
  EXPECT_TRUE(tests::same_bits(remote.piece_grad(0), expect));

  std::unique_lock<std::mutex> lock(heard->mu);
  ASSERT_TRUE(heard->cv.wait_for(lock, 20s, [&] { return heard->norms.size() == 3; }))
      << heard->norms.size() << " of 3 owners sent their clipping runs";
  size_t runs = 0;
  for (const ActorMessage& msg : heard->norms) {
    train::ExpertNorm n;
    ASSERT_TRUE(n.ParseFromString(msg.header));
    std::vector<double> parts;
    ASSERT_TRUE(read_payload(msg.payloads.at(0), &parts));
    size_t at = 0;
    for (int i = 0; i < n.offsets_size(); ++i, ++runs) {
      const int64_t lo = n.offsets(i);
      const std::vector<double> own =
          model::grad_norm_parts(table, want.data() + lo, {lo, lo + 3 * part}, lo);
      ASSERT_EQ(n.counts(i), int64_t(own.size()));
      EXPECT_EQ(std::vector<double>(parts.begin() + int64_t(at),
                                    parts.begin() + int64_t(at) + n.counts(i)),
                own)
          << "the expert at offset " << lo;
      at += size_t(n.counts(i));
    }
  }
  EXPECT_EQ(runs, layouts.size() * size_t(m.n_routed_experts)) << "every expert's run, once";
}

TEST_F(ExpertClientTest, AShardThatNeverAnswersIsAnErrorNamingIt) {
  ExpertRoute route = place(skewed_placement(m, 8, 1), 1);
  for (auto& s : route.shard_of_slot) s = "n9/expert_shard.9";  // nobody there
  ExpertClient client(sys, router, "n1/expert_client.0", m, table, route, 200ms);
  const int64_t C = m.d_model, E = m.n_routed_experts;
  std::vector<int64_t> begin(size_t(E + 1));
  for (int64_t e = 0; e <= E; ++e) begin[size_t(e)] = e;  // one row each
  std::vector<float> xs(size_t(E * C), 0.5f), ys(xs.size());
  try {
    client.forward(m.first_k_dense, 0, begin, C, xs.data(), ys.data());
    FAIL() << "no shard answered, yet forward returned";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("n9/expert_shard.9"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace troupe::actors::testing
