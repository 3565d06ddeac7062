#pragma once
// Writing one writer's part of a checkpoint (docs/storage.md), shared by the two kinds of
// writer: a worker (its share of the weights and optimizer state) and an engram_shard's
// lookup holder (its tables and their moments). The caller copies its state out on its own
// thread, then runs this on a thread of its own while training goes on.
#include <caf/all.hpp>
#include <string>
#include <vector>

#include "actors/train.pb.h"
#include "runtime/actor_message.h"
#include "storage/faults.h"
#include "train/trainer.h"

namespace troupe::actors {

// Writes `snap` as writer `writer`'s shards of the checkpoint of `version` under `dir` (at
// a low thread priority), then sends the coordinator `m` (made by the caller: from, to,
// epoch) with `w` (step, worker, engram and snapshot_ms set by the caller) completed with
// the outcome, and the shard list as its payload when the write succeeded.
void write_and_report(const std::vector<model::StateTensor>& snap, const std::string& dir,
                      const std::string& writer, train::CheckpointWritten w,
                      runtime::ActorMessage m, caf::actor router,
                      const storage::StorageFaults& faults);

}  // namespace troupe::actors
