#include "launch/launch_args.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>

#include "chaos/fault_plan.h"
#include "chaos/faulty_fabric.h"
#include "config/config_parse.h"
#include "launch/commands.h"
#include "runtime/auth.h"
#include "runtime/host.h"
#include "runtime/log.h"

namespace troupe::launch {

// --scale-at STEP:N, checked.
std::map<int64_t, int64_t> parse_scale_at(const LaunchArgs& a) {
  std::map<int64_t, int64_t> out;
  for (const std::string& item : a.scale_at) {
    const size_t colon = item.find(':');
    long step = -1, n = -1;
    try {
      size_t u1 = 0, u2 = 0;
      step = std::stol(item.substr(0, colon), &u1);
      n = std::stol(item.substr(colon + 1), &u2);
      if (colon == std::string::npos || u1 != colon || colon + 1 + u2 != item.size()) step = -1;
    } catch (const std::exception&) {
      step = -1;
    }
    if (step < 1 || n < 1 || n > a.max_nodes)
      throw UsageError("launch: --scale-at '" + item + "' is not STEP:N (STEP >= 1, 1 <= N <= " +
                       "--max-nodes " + std::to_string(a.max_nodes) + ")");
    out[step] = n;
  }
  return out;
}

std::map<int64_t, std::vector<actors::EngramOp>> parse_engram_at(
    const std::vector<std::string>& items, const std::string& command) {
  std::map<int64_t, std::vector<actors::EngramOp>> out;
  for (const std::string& item : items) {
    const size_t c1 = item.find(':'), c2 = item.find(':', c1 + 1);
    const size_t c3 = c2 == std::string::npos ? c2 : item.find(':', c2 + 1);
    const std::string verb = item.substr(c1 + 1, c2 == std::string::npos ? c2 : c2 - c1 - 1);
    long step = -1;
    try {
      size_t used = 0;
      step = std::stol(item.substr(0, c1), &used);
      if (c1 == std::string::npos || used != c1) step = -1;
    } catch (const std::exception&) {
      step = -1;
    }
    actors::EngramOp op{verb == "attach", "", ""};
    if (op.attach && c2 != std::string::npos) {
      op.name = item.substr(c2 + 1, c3 == std::string::npos ? c3 : c3 - c2 - 1);
      if (c3 != std::string::npos) op.path = item.substr(c3 + 1);
    }
    const bool ok = step >= 0 && ((verb == "detach" && c2 == std::string::npos) ||
                                  (op.attach && !op.name.empty()));
    if (!ok)
      throw UsageError(command + ": --engram-at '" + item +
                       "' is not STEP:attach:NAME[:PATH] or STEP:detach (STEP >= 0)");
    out[step].push_back(op);
  }
  return out;
}

// --local-nodes defaulted and checked against --nodes and --kill-node-at.
int64_t checked_local_nodes(const LaunchArgs& a) {
  if (a.max_nodes < 1 || a.max_nodes > 64)
    throw UsageError("launch: --max-nodes must be in [1, 64], got " + std::to_string(a.max_nodes));
  if (a.nodes < 1 || a.nodes > a.max_nodes)
    throw UsageError("launch: --nodes must be in [1, --max-nodes " + std::to_string(a.max_nodes) +
                     "], got " + std::to_string(a.nodes));
  if (a.min_nodes < 1 || a.min_nodes > a.nodes)
    throw UsageError("launch: --min-nodes must be in [1, --nodes " + std::to_string(a.nodes) +
                     "], got " + std::to_string(a.min_nodes));
  const int64_t local = a.local_nodes < 0 ? a.nodes : a.local_nodes;
  if (local > a.nodes)
    throw UsageError("launch: --local-nodes " + std::to_string(local) + " is more than --nodes " +
                     std::to_string(a.nodes));
  if (a.kill_node_at >= 0 && local < 2)
    throw UsageError(
        "launch: --kill-node-at needs at least 2 node processes started here "
        "(one to kill, one to go on)");
  return local;
}

std::vector<std::string> job_sets(const LaunchArgs& a) {
  std::vector<std::string> sets = a.sets;
  if (a.steps >= 0) sets.push_back("train.steps=" + std::to_string(a.steps));
  return sets;
}

model::JobConfig checked_launch(const LaunchArgs& a) {
  model::JobConfig cfg = model::load_config(a.config, job_sets(a));
  checked_grpo_launch(a, cfg);
  parse_scale_at(a);
  parse_engram_at(a.engram_at, "launch");
  if (!a.as_coordinator) checked_local_nodes(a);
  // The fabric fault plan every process of the job reads: refused here, before any starts.
  if (auto plan = chaos::fault_plan_from_env(); !plan.ok())
    throw UsageError("launch: " + plan.status().message());
  if (a.engram_nodes > 0 && cfg.engram.placement != model::EngramAt::shards)
    throw UsageError("launch: --engram-nodes " + std::to_string(a.engram_nodes) +
                     " starts memory nodes for Engram shards, and this job keeps its tables in "
                     "the workers: add --set engram.placement=shards");
  if (a.engram_nodes > 0 && !a.coordinator_process)
    throw UsageError(
        "launch: --engram-nodes needs the coordinator in a process of its own "
        "(the default), not --coordinator-in-process");
  if (a.kill_node_at > cfg.train.steps)
    throw UsageError("launch: --kill-node-at " + std::to_string(a.kill_node_at) +
                     " is after the last step; give 0 (as the workers start) to " +
                     std::to_string(cfg.train.steps) + " (while the final weights are gathered)");
  return cfg;
}

void spare_oversubscribed_cores(const LaunchArgs& a, int64_t local_nodes) {
  const int64_t processes = local_nodes + a.engram_nodes + a.rollout_nodes + 1;
  const auto cores = int64_t(std::thread::hardware_concurrency());
  if (cores <= 0 || processes <= cores) return;
  if (std::getenv("TROUPE_PROGRESS_SPIN_US") != nullptr ||
      std::getenv("TROUPE_PROGRESS_SPIN_US_MAX") != nullptr)
    return;  // the operator's choice
  const std::string us = std::to_string(oversubscribed_spin_us);
  ::setenv("TROUPE_PROGRESS_SPIN_US", us.c_str(), 1);
  ::setenv("TROUPE_PROGRESS_SPIN_US_MAX", us.c_str(), 1);
  log::info(
      "launch: {} processes on {} cores: the fabrics' progress threads spin {} us at most "
      "before they sleep (TROUPE_PROGRESS_SPIN_US and _MAX set this)",
      processes, cores, us);
}

std::unique_ptr<runtime::Host> start_host(const LaunchArgs& a, const std::string& secret) {
  runtime::HostOptions ho;
  ho.node_id = "n0", ho.secret = secret;
  ho.listen_host = a.listen_host;
  ho.port = a.port;
  runtime::Result<bool> faults = chaos::install_fabric_faults(&ho);  // TROUPE_FABRIC_FAULTS
  if (!faults.ok()) throw UsageError("launch: " + faults.status().message());
  auto host = runtime::Host::create(ho);
  if (!host.ok())
    throw UsageError("launch: cannot start the runtime: " + host.status().to_string());
  return std::move(host).value();
}

void checked_grpo_launch(const LaunchArgs& a, const model::JobConfig& cfg) {
  if (!cfg.grpo.enabled) {
    if (a.rollout_nodes > 0 || a.kill_rollout_at >= 0)
      throw UsageError(
          "launch: --rollout-nodes and --kill-rollout-at are for GRPO jobs; this "
          "one has grpo.enabled = false");
    return;
  }
  if (a.rollout_nodes < 1)
    throw UsageError(
        "launch: grpo.enabled = true: the groups are sampled on rollout nodes; add "
        "--rollout-nodes N (1 or more)");
  if (!a.coordinator_process)
    throw UsageError(
        "launch: --rollout-nodes needs the coordinator in a process of its own "
        "(the default), not --coordinator-in-process");
  if (a.resume || cfg.checkpoint.every_steps > 0)
    throw UsageError(
        "launch: a GRPO job writes no checkpoints yet (π_old and π_ref are not in "
        "them) and cannot be resumed: set checkpoint.every_steps=0 and start anew");
  if (a.kill_rollout_at >= 0 && (a.rollout_nodes < 2 || a.kill_rollout_at >= cfg.train.steps))
    throw UsageError(
        "launch: --kill-rollout-at STEP needs --rollout-nodes 2 or more (one to "
        "kill, one to go on) and a STEP before the last, " +
        std::to_string(cfg.train.steps));
}

storage::RunLock claim_run_dir(const LaunchArgs& a) {
  auto lock = storage::RunLock::acquire(a.run_dir, "troupe launch");
  if (!lock.ok()) throw UsageError("launch: " + lock.status().message());
  const bool has_run = std::filesystem::exists(a.run_dir + "/journal") ||
                       std::filesystem::exists(a.run_dir + "/config.json");
  if (has_run && !a.resume)
    throw UsageError("launch: run directory " + a.run_dir +
                     " already holds a run; pass --resume to continue it from its newest "
                     "checkpoint, or choose another --run-dir");
  return std::move(lock).value();
}

std::string job_secret_file(const LaunchArgs& a) {
  return a.secret_file.empty() ? a.run_dir + "/secret" : a.secret_file;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError("launch: cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The job secret: --secret-file, or DIR/secret, created (0600) on the first launch of
// this run directory.
std::string job_secret(const std::string& path, bool create) {
  if (create && !std::filesystem::exists(path)) {
    runtime::Status st = runtime::write_new_secret(path);
    if (!st.ok()) throw UsageError("launch: " + st.message());
  }
  runtime::Result<std::string> secret = runtime::load_secret(path);
  if (!secret.ok()) throw UsageError("launch: " + secret.status().message());
  return secret.value();
}

void add_plan_options(CLI::App* cmd, LaunchArgs* args) {
  cmd->add_option("--engram-nodes", args->engram_nodes,
                  "memory nodes to start here besides --nodes: node processes holding the "
                  "Engram shards only (troupe node --role engram; engram.placement = shards)")
      ->check(CLI::Range(int64_t(0), engram_nodes_max));
  cmd->add_option("--rollout-nodes", args->rollout_nodes,
                  "GRPO (grpo.enabled): rollout nodes to start here besides --nodes, node "
                  "processes that sample the groups only (troupe node --role rollout)")
      ->check(CLI::Range(int64_t(0), engram_nodes_max));
  cmd->add_option("--kill-rollout-at", args->kill_rollout_at,
                  "chaos: kill -9 the last rollout node after this step (its prompts go to the "
                  "others)")
      ->check(at_least(0, "0: after the first step"));
  cmd->add_option("--scale-at", args->scale_at,
                  "STEP:N: scale to N node processes after STEP, as `troupe scale` would "
                  "(repeatable; for tests and demos)");
  cmd->add_option("--engram-at", args->engram_at,
                  "STEP:attach:NAME[:PATH] or STEP:detach: swap Engram table sets after STEP "
                  "steps, as POST /engram/attach|detach (repeatable)");
  cmd->add_option("--kill-node-at", args->kill_node_at,
                  "chaos: kill -9 one node process after this step, 0: as the workers start "
                  "(the job recovers; see [fault_tolerance] recover)")
      ->check(at_least(0, "0: as the workers start"));
}

}  // namespace troupe::launch
