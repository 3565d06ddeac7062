#pragma once
// Engram table sets (issue 16, docs/engram.md "Table sets"): every Engram table of a model
// with its sparse-Adam moments, under a name, as one safetensors file —
//   tensors   engram/<table>/values|m|v   F32 (rows, dim), the checkpoint's shard names
//   metadata  troupe_engram_set            the set's name
//             troupe_engram_step           the train steps the tables have seen (text)
//             troupe_engram_config         JSON: the model keys that shape and address them
// A set is attached to a running job between two steps (POST /engram/attach, --engram-at),
// detached (its state kept under <run dir>/engram/sets/<name>.safetensors) and re-attached
// with every bit; `troupe engram export|import` move one between run directories. A set made
// for another model config is refused with an error naming the key that differs.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/config.h"
#include "train/trainer.h"

namespace troupe::storage {

// A set's name: 1 to engram_set_name_bytes_max bytes of [A-Za-z0-9._-], not starting with '.'.
inline constexpr size_t engram_set_name_bytes_max = 64;
// "" when `name` is a valid set name, else why not (for an error message).
std::string engram_set_name_error(const std::string& name);

// The model keys a set must match (the tables' shapes and how tokens address their rows):
// engram_layers, engram_orders, engram_heads, engram_head_dim, engram_table_rows,
// vocab_size, and the seed that keys the n-gram hashes.
nlohmann::json engram_set_identity(const model::ModelConfig& cfg, uint64_t seed);

struct EngramSet {
  std::string name;
  int64_t step = 0;
  // engram/<table>/values, /m, /v for every table of engram_tables(cfg), in that order.
  std::vector<model::StateTensor> tensors;
};

// Writes the set (path.tmp, then a rename: no partial file at path). Throws
// std::runtime_error naming the path; std::invalid_argument for tensors that are not the
// config's tables (names, order or shapes).
void write_engram_set(const std::string& path, const EngramSet& set, const model::ModelConfig& cfg,
                      uint64_t seed);

// Reads a set and checks it against the job's config. Throws std::runtime_error:
// "<path>: <what is wrong>" — not a table set, a key of the config that differs ("made for
// engram_table_rows = 20011, this job has 10007"), a table missing or of the wrong shape.
EngramSet read_engram_set(const std::string& path, const model::ModelConfig& cfg, uint64_t seed);
// The same checks on the file's header alone (its size checked, its data not read): what an
// attach checks while the job runs. The tensors come back without their data.
EngramSet check_engram_set(const std::string& path, const model::ModelConfig& cfg, uint64_t seed);

// xxh64 over every tensor's bytes in order (values, m, v of each table): what the events
// print so that a detach and re-attach can be seen to restore the same bits.
uint64_t engram_set_hash(const std::vector<model::StateTensor>& tensors);

// Where a run directory keeps its table sets: <run_dir>/engram/sets/<name>.safetensors.
std::string engram_set_path(const std::string& run_dir, const std::string& name);

}  // namespace troupe::storage
