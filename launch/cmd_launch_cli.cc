// `troupe launch`'s command line: the options, and which of the two ways it runs.
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <memory>
#include <string>

#include "launch/commands.h"
#include "launch/control.h"
#include "launch/launch_args.h"
#include "runtime/log.h"

namespace troupe::launch {

void add_launch_command(CLI::App& app) {
  auto args = std::make_shared<LaunchArgs>();
  CLI::App* cmd =
      app.add_subcommand("launch", "run a job on N local node processes (data parallel)");
  cmd->add_option("--config", args->config, "job configuration (TOML)")->required();
  cmd->add_option("--nodes", args->nodes, "node processes to start on 127.0.0.1 (default 1)");
  cmd->add_option("--run-dir", args->run_dir, "directory for metrics, events, logs, weights")
      ->required();
  cmd->add_option("--set", args->sets, "override one key: section.key=value (repeatable)");
  cmd->add_option("--steps", args->steps, "number of steps (overrides train.steps)")
      ->check(at_least(1, ""));
  cmd->add_option("--local-nodes", args->local_nodes,
                  "of --nodes, how many to start here (default all; 0: coordinator only, the "
                  "nodes are started elsewhere, e.g. by srun)")
      ->check(at_least(0, "0: the coordinator only"));
  cmd->add_option("--listen-host", args->listen_host,
                  "address the coordinator listens on (default 127.0.0.1)");
  cmd->add_option("--port", args->port, "port the coordinator listens on (default: any free)");
  cmd->add_option("--secret-file", args->secret_file,
                  "the job secret (default RUN_DIR/secret, created on first use)");
  cmd->add_option("--threads-per-node", args->threads_per_node,
                  "compute threads of each node (default: the cores shared among the nodes)")
      ->check(at_least(0, "0: the cores shared among the nodes"));
  cmd->add_flag("--resume", args->resume,
                "continue the run in --run-dir from its newest complete checkpoint, on any "
                "number of nodes (the config must match the run's)");
  cmd->add_option("--min-nodes", args->min_nodes,
                  "a loss that leaves fewer node processes stops the job; scale and drain "
                  "below it are refused (default 1)")
      ->check(at_least(1, ""));
  cmd->add_option("--max-nodes", args->max_nodes,
                  "the most node processes a scale may ask for (default 64)")
      ->check(at_least(1, ""));
  add_control_options(cmd, &args->control);
  add_plan_options(cmd, args.get());
  auto log_level = std::make_shared<std::string>("info");  // the nodes started here get it too
  add_log_level_option(cmd, log_level.get());
  cmd->add_flag("--coordinator-process", args->coordinator_process,
                "(the default) the coordinator runs in a process of its own, restarted from the "
                "journal when it dies (the nodes wait for it and rejoin)");
  cmd->add_flag("--coordinator-in-process{false}", args->coordinator_process,
                "run the coordinator inside this process instead: not restarted when it dies");
  cmd->add_flag("--as-coordinator", args->as_coordinator)->group("");  // launcher.cc's child
  cmd->add_flag("--restart", args->restart)->group("");
  cmd->add_option("--launcher-link", args->launcher_link)->group("");
  cmd->callback([args, log_level] {
    log::init_logging("coordinator", checked_log_level(*log_level));
    args->log_level = *log_level;
    const int code = args->coordinator_process && !args->as_coordinator
                         ? run_coordinator_process(*args)
                         : run_launch(*args);
    if (code != 0) std::exit(code);
  });
}

}  // namespace troupe::launch
