// Requests from a worker's compute threads to shard actors (expert_shard, engram_shard) and
// their answers by request id: the transport under ExpertClient and EngramClient.
//
// The answers go to an actor of its own, registered with the router under the part of
// `address` after the '/': the worker's mailbox is not read while the worker computes. A
// wait ends with every answer, with StepAborted when this node's agent hears of a newer
// epoch than the requests' (runtime::node_epoch: the step is moot, and a lost shard would
// never answer), or with std::runtime_error naming the shards that did not answer in time.
// Answers nobody waits for (of a request that timed out, or a duplicate) are dropped.
#pragma once

#include <caf/all.hpp>
#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/actor_message.h"

namespace troupe::actors {

// The step's compute was cut short by a view change (the worker drops the step and takes
// the Recover or Reshape that follows).
struct StepAborted : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class ShardRpc {
 public:
  // Whether m is an answer this client takes, and its request id.
  using RequestOf = bool (*)(const runtime::ActorMessage& m, uint64_t* request);

  // address: this client's (e.g. "n1/expert_client.0").
  ShardRpc(caf::actor_system& system, caf::actor router, std::string address, RequestOf request_of);
  ~ShardRpc();
  ShardRpc(const ShardRpc&) = delete;
  ShardRpc& operator=(const ShardRpc&) = delete;

  const std::string& address() const { return address_; }
  // A fresh request id, awaited from now on.
  uint64_t expect();
  // Sends m (from this client) stamped with `epoch`.
  void send(runtime::ActorMessage m, uint64_t epoch);
  // The answers to requests[i] (sent to shards[i]), in that order. `what` names the
  // requests in the errors ("ExpertForward of micro-batch 3").
  std::vector<runtime::ActorMessage> await(const std::vector<uint64_t>& requests,
                                           const std::vector<std::string>& shards, uint64_t epoch,
                                           std::chrono::milliseconds timeout,
                                           const std::string& what);

  struct Inbox;  // answers by request id (shard_rpc.cc)

 private:
  caf::actor router_;
  std::string address_;
  std::shared_ptr<Inbox> inbox_;
  caf::actor inbox_actor_;
};

}  // namespace troupe::actors
