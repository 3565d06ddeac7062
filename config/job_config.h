#pragma once
// A job's whole configuration: the training sections (train/train_config.h) and the
// runtime's [fault_tolerance] and [parallel], as config/config_parse.h reads them from TOML and
// --set.
#include <array>
#include <map>
#include <string>
#include <string_view>
#include <utility>

#include "runtime/fault_tolerance.h"
#include "train/train_config.h"

namespace troupe::model {

// parallel.experts: where a MoE block's routed experts are computed (docs/eplb.md).
enum class ExpertsAt {
  worker,  // in every worker's own process, on its copy of the weights
  shards,  // on expert_shard actors, one per node, each holding a share of the expert slots
};
inline constexpr std::array<std::pair<ExpertsAt, std::string_view>, 2> kExpertsAtNames = {
    {{ExpertsAt::worker, "worker"}, {ExpertsAt::shards, "shards"}}};

// parallel.schedule: how a train step's micro-batches reach the workers (docs/schedule.md).
enum class Schedule {
  static_split,  // "static": each worker computes an equal contiguous share
  pull,          // "pull": workers pull pieces (aligned tree nodes) from the coordinator
};
inline constexpr std::array<std::pair<Schedule, std::string_view>, 2> kScheduleNames = {
    {{Schedule::static_split, "static"}, {Schedule::pull, "pull"}}};

// [parallel]: how the job spreads its work over the nodes. Never changes what is computed:
// every choice ends with the same bits.
struct ParallelConfig {
  ExpertsAt experts = ExpertsAt::worker;
  Schedule schedule = Schedule::static_split;
  // schedule = "pull": the pieces a step is cut into, per worker of the view (at least; the
  // pieces are aligned canonical-tree nodes of one power-of-two size, so a step has between
  // this many and twice as many per worker, at most one per micro-batch).
  int64_t pull_pieces_per_worker = 4;
  // experts = "shards": the shards form this many node groups (DeepSeek's EPLB "nodes"):
  // shards [k·W/N, (k+1)·W/N) of the view's W are group k. A rebalance keeps an expert
  // group's replicas inside one node group where N divides W and the expert groups; else it
  // places globally. Never changes what is computed.
  int64_t node_groups = 1;
  bool operator==(const ParallelConfig&) const = default;
};

// [eplb]: the placement of the expert slots following the routing load (with
// parallel.experts = "shards"). Never changes what is computed.
struct EplbConfig {
  // Committed steps whose per-expert token counts a rebalance places by.
  int64_t window_steps = 10;
  // A rebalance before every N-th step (0: never; the placement stays the uniform one).
  int64_t rebalance_every_steps = 0;
  bool operator==(const EplbConfig&) const = default;
};

// engram.placement: where the Engram tables and their Adam moments live (docs/engram.md).
enum class EngramAt {
  replicated,  // every worker holds every table and applies the same update
  shards,      // engram_shard actors hold whole tables, engram.shards of them
};
inline constexpr std::array<std::pair<EngramAt, std::string_view>, 2> kEngramAtNames = {
    {{EngramAt::replicated, "replicated"}, {EngramAt::shards, "shards"}}};

// [engram]: where the Engram tables live (the model's engram_* keys are in [model]). Never
// changes what is computed.
struct EngramPlacement {
  EngramAt placement = EngramAt::replicated;
  int64_t shards = 2;  // engram_shard actors with "shards": table t on shard t mod shards
  // With "shards": each holder's rows in host memory at most (with their moments), the rest
  // in a RocksDB cold tier under the run directory; 0: every row in host memory.
  int64_t host_cache_bytes = 0;
  bool operator==(const EngramPlacement&) const = default;
};

// [grpo]: GRPO in one process (`troupe train`; docs/grpo.md, SPEC-model.md §7). A flat copy of
// train/grpo.h's GrpoConfig (grpo_runner_config in config_parse.h makes one) plus what the
// command needs: the key registry sets direct members only.
struct GrpoJobConfig {
  bool enabled = false;          // troupe train runs GRPO steps instead of supervised ones
  int64_t prompts_per_step = 4;  // P: prompts per step, each with its own group
  int64_t group_size = 8;        // G: completions per prompt
  int64_t max_new_tokens = 16;   // tokens a completion has at most
  double temperature = 1.0;      // sampling temperature of the rollouts
  double clip_eps = 0.2;         // ε: ρ is clipped to [1−ε, 1+ε]
  double kl_beta = 0.04;         // β: weight of the k3 KL estimate against π_ref
  // The weights.safetensors the phase starts from (π_ref); "": the config's initialisation.
  std::string init_weights;
  // troupe launch: rollout actors sample step s + 1 while the workers train step s (lag 1);
  // false: only after step s committed (generate, then train). Same bits either way.
  bool overlap = true;
  bool operator==(const GrpoJobConfig&) const = default;
};

struct JobConfig : TrainJobConfig {
  runtime::FaultToleranceConfig fault_tolerance;  // [fault_tolerance]: noticing failures
  ParallelConfig parallel;                        // [parallel]: where the work runs
  EplbConfig eplb;                                // [eplb]: expert slots following the load
  EngramPlacement engram;                         // [engram]: where the Engram tables live
  GrpoJobConfig grpo;                             // [grpo]: GRPO steps in one process
  std::string source;                             // the file it was read from, for messages
  // Where each explicitly set key came from, for messages: "section.key" ->
  // "configs/x.toml:12" or "--set section.key=value". Keys absent here hold defaults.
  std::map<std::string, std::string> origins;

  // The settings alone (not source/origins): what determines the job's result.
  bool same_settings(const JobConfig& o) const {
    return model == o.model && data == o.data && train == o.train && optimizer == o.optimizer &&
           fp8 == o.fp8 && memory == o.memory && fault_tolerance == o.fault_tolerance &&
           grpo == o.grpo;
  }
};

}  // namespace troupe::model
