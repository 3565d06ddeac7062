// A worker's Engram tables on engram_shard actors (`[engram] placement = "shards"`, issue
// 16): an EngramStore (model/engram.h) whose rows live on the shards. Before a range of
// micro-batches computes, prefetch() computes every row id they will read from their tokens
// alone (Engram's addresses are known before the forward pass) and sends each shard one
// EngramLookup with the ids of its tables; the forward's lookup() waits only for the shard
// of the table it reads, so the layers before the first Engram layer overlap the fetch. The
// rows are the shards' tables after the requested number of train steps, so the forward
// reads exactly what in-process tables would give.
//
// lookup() is called by the grad engine's threads at once; apply() throws: the shards
// update their tables themselves. Transport and errors as ShardRpc (actors/shard_rpc.h).
#pragma once

#include <caf/all.hpp>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "actors/shard_rpc.h"
#include "model/batch.h"
#include "model/engram.h"

namespace troupe::actors {

class EngramClient final : public model::EngramStore<float> {
 public:
  // seed: the job seed (it keys the hashing); shards: the engram.shards of the config.
  EngramClient(caf::actor_system& system, caf::actor router, std::string address,
               const model::ModelConfig& cfg, uint64_t seed, int64_t shards,
               std::chrono::milliseconds answer_timeout_ms);

  // The shards' addresses by shard index (StepBegin.engram_shards): where the lookups go.
  // Not while computing.
  void set_shards(std::vector<std::string> addresses);
  const std::vector<std::string>& shards() const { return shards_; }
  // Every holder of shard k's tables (its lookup address first, then its copies): where the
  // gradients go. From StepBegin.engram_copies.
  void set_copies(const std::vector<std::pair<int64_t, std::string>>& copies);
  const std::vector<std::string>& holders(int64_t k) const { return holders_.at(size_t(k)); }
  int64_t shard_count() const { return shard_count_; }
  // Sends the lookups for the rows `rows` read, to be answered with the tables after
  // `version` train steps, stamped with `epoch`. Not while computing.
  void prefetch(const model::Batch& rows, int64_t version, uint64_t epoch);
  // What the forward passes waited for the prefetched rows, in all, and how many prefetches.
  double waited_ms() const { return double(waited_us_) / 1000; }
  int64_t prefetches() const { return prefetches_; }
  // Every table after `version` train steps, in table order (the job's final tables); with
  // moments, each table's values, m and v (entry 3t + part).
  std::vector<std::vector<float>> fetch_tables(int64_t version, uint64_t epoch,
                                               bool moments = false);

  const std::vector<model::EngramTableInfo>& tables() const override { return info_; }
  // Rows of the last prefetch; an id it did not fetch throws std::out_of_range.
  void lookup(int64_t table, const int64_t* ids, int64_t n, float* out) const override;
  void apply(const model::EngramGrad<float>&, const model::EngramAdamStep&) override;

 private:
  // Waits for shard k's answer to the last prefetch and files its rows (under mu_).
  void receive(int64_t shard) const;

  mutable ShardRpc rpc_;
  model::ModelConfig cfg_;
  uint64_t seed_;
  int64_t shard_count_;
  std::chrono::milliseconds timeout_;
  std::vector<model::EngramTableInfo> info_;
  std::vector<std::string> shards_;
  std::vector<std::vector<std::string>> holders_;  // by shard
  uint64_t epoch_ = 0;
  int64_t version_ = 0;
  // The last prefetch: by table, the ids asked (ascending) and, once arrived, their rows.
  std::vector<std::vector<int64_t>> ids_;
  mutable std::vector<std::vector<float>> rows_;
  std::vector<uint64_t> request_;      // by shard; 0: nothing asked
  mutable std::vector<char> arrived_;  // by shard
  mutable std::mutex mu_;
  mutable int64_t waited_us_ = 0;  // under mu_
  int64_t prefetches_ = 0;
};

}  // namespace troupe::actors
