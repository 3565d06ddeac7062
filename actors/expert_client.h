// A worker's routed experts computed by expert_shard actors (issue 15, item 2): a
// RoutedExperts (model/ffn.h) that sends each micro-batch's tokens of a MoE layer to the
// shards holding the replicas replica_of picks (one ExpertForward per shard), waits for the
// answers and puts the outputs in place; in backward it sends the output gradients, puts
// the input gradients in place and adds each expert's weight gradient of the micro-batch
// into the micro-batch's gradient, where the in-worker backward would have put it. So the
// gradients, their tree reduction and everything after are bitwise the in-worker ones.
// With owners (ExpertRoute::owner_of), the weight gradients go from the replicas to the
// experts' owners instead, and the worker tells every owner which of its experts each
// micro-batch routed rows to (ExpertRowsNote) once the micro-batch's last MoE layer is
// backed; the owners reduce them (actors/expert_shard_owner.cc).
//
// The grad engine's threads call it at once (one micro-batch each). Requests and answers
// travel through a ShardRpc (actors/shard_rpc.h): a shard that does not answer within
// answer_timeout_ms is an error naming it (std::runtime_error), as is an answer that does
// not fit its request; a view change while it waits ends the wait with StepAborted.
#pragma once

#include <caf/all.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "actors/shard_rpc.h"
#include "model/ffn.h"
#include "model/params.h"
#include "train/eplb.h"

namespace troupe::actors {

struct ExpertRoute {
  model::EplbPlacement placement = {};          // slots of each MoE layer
  std::vector<std::string> shard_of_slot = {};  // slot s (every layer) → the shard's address
  // With owners (ExpertOwn): the shard owning expert e of MoE layer l, owner_of[l][e]. Then
  // the weight gradients go from the replicas to the owners, and after each micro-batch's
  // backward every owner gets its note of the rows (ExpertRowsNote); the worker's gradient
  // keeps no routed expert's. Empty: the gradients come back to the worker.
  std::vector<std::vector<std::string>> owner_of = {};
};
// The owners of a route's placement: each expert's first replica's shard.
std::vector<std::vector<std::string>> first_replica_owners(const ExpertRoute& route);

class ExpertClient : public model::RoutedExperts<float> {
 public:
  // address: this client's (e.g. "n1/expert_client.0"; the router delivers the answers
  // addressed to it to the inbox actor, which registers under the part after the '/').
  ExpertClient(caf::actor_system& system, caf::actor router, std::string address,
               const model::ModelConfig& cfg, const model::ParamTable& table, ExpertRoute route,
               std::chrono::milliseconds answer_timeout_ms);

  // The weights version the next micro-batches compute with (a train step's number; a
  // validation's is the step after the one it follows), the epoch stamped on the requests,
  // and whether no backward follows (validation). Not while a step computes.
  void set_step(int64_t step, uint64_t epoch, bool evaluate = false);
  // The step's micro-batches (the owners' reduction needs the count; with owners only).
  void set_micro_batches(int64_t n) { micro_batches_ = n; }
  // The placement and the shards, after a view change. Not while a step computes.
  void set_route(ExpertRoute route) { route_ = std::move(route); }
  const ExpertRoute& route() const { return route_; }
  // Each MoE layer's layout in the worker's parameter table.
  const std::vector<model::MoeLayout>& layouts() const { return layouts_; }

  void forward(int64_t layer, int64_t mb, std::span<const int64_t> begin, int64_t C,
               const float* xs, float* ys) override;
  void backward(int64_t layer, int64_t mb, std::span<const int64_t> begin, int64_t C,
                const float* dys, float* dxs, float* grads) override;

  struct Call;  // one request to one shard

 private:
  // Sends one request per shard for block `layer`'s experts and waits for every answer.
  std::vector<Call> exchange(uint32_t type, int64_t layer, int64_t mb,
                             std::span<const int64_t> begin, int64_t C, const float* rows);
  // Micro-batch mb's experts with rows in one MoE layer's backward; after its last layer,
  // each owner's note of them.
  void note_rows(int64_t mb, int64_t moe_layer, std::span<const int64_t> begin);
  ShardRpc rpc_;
  model::ModelConfig cfg_;
  std::vector<model::MoeLayout> layouts_;
  ExpertRoute route_;
  std::chrono::milliseconds timeout_;
  int64_t step_ = 0, micro_batches_ = 0;
  uint64_t epoch_ = 0;
  bool evaluate_ = false;
  std::mutex notes_mu_;  // the grad engine's threads back different micro-batches at once
  std::map<int64_t, std::vector<std::vector<int64_t>>> routed_;  // mb → per MoE layer, or empty
};

}  // namespace troupe::actors
