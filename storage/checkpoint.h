#pragma once
// Checkpoints of a training job (docs/storage.md): what a checkpoint of version S holds,
// named as shards, and the checks a resume makes. The store is shard_store.h, the
// manifests live in the journal (journal.h).
//
// Shard names: param/<tensor>   the tensor's weights (its owner writes it)
//              optim/<tensor>   its optimizer state run (Optimizer::read_state), if any
//              engram/<table>/values|m|v   an Engram table and its sparse-Adam moments
// The data position, the RNG keys and the schedule step are functions of S and the config
// (data.h: the batch of step s is rows [s·B, s·B+B) of the stream; every key derives from
// the job seed), so S and the config are what a checkpoint records of them.
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "config/job_config.h"
#include "runtime/status.h"
#include "storage/journal.h"
#include "storage/shard_store.h"
#include "train/trainer.h"

namespace troupe::storage {

// The config keys that decide a job's bits (model, data, train but steps, eval_every and
// threads, optimizer, fp8): a checkpoint resumes only under the same identity.
nlohmann::json job_identity(const model::TrainJobConfig& cfg);
std::string identity_hash(const nlohmann::json& identity);  // xxh64 of the dump, hex
// "" when equal; else the first differing key, e.g. "model.d_model: the run directory's
// checkpoints were written with 64, this config has 96".
std::string identity_mismatch(const nlohmann::json& stored, const nlohmann::json& now);

// The shards of `snap` as views for write_shards.
std::vector<ShardData> shard_views(const std::vector<model::StateTensor>& snap);

// Loads checkpoint `m` into `trainer`: every weight, the optimizer state of the tensors in
// `owned`, the Engram tables and moments. Errors name the shard (a CRC mismatch included).
runtime::Status load_checkpoint(const std::string& run_dir, const Manifest& m,
                                model::FlatRange owned, model::Trainer* trainer);

// Removes the directories under run_dir/checkpoints of checkpoints older than the newest
// complete one (`complete`: ascending) that never completed (skipped, abandoned, cut by a
// kill): files no manifest names. Best effort: what cannot be removed stays.
void remove_incomplete_checkpoints(const std::string& run_dir,
                                   const std::vector<int64_t>& complete);

// The newest complete checkpoint of the journal whose every shard verifies, going back one
// at a time past bad ones (each reported through `warn`, e.g. to events.jsonl). Errors:
// none complete, or none verifies (naming the last error).
runtime::Result<Manifest> newest_good_checkpoint(
    const std::string& run_dir, const Journal& j,
    const std::function<void(const std::string&)>& warn);
// The same over any list of complete checkpoints (ascending) and a way to read each one's
// manifest: the coordinator's CommitLog, when it rolls back.
runtime::Result<Manifest> newest_good_checkpoint(
    const std::string& run_dir, const std::vector<int64_t>& steps,
    const std::function<runtime::Result<Manifest>(int64_t)>& manifest,
    const std::function<void(const std::string&)>& warn);

}  // namespace troupe::storage
