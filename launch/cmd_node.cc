// `troupe node --join HOST:PORT --secret-file F`: one node process of a job. It joins the
// coordinator (mutual HMAC-SHA256 handshake over the job secret), then runs the roles the
// coordinator places on it until the job ends, the coordinator is lost, or a signal.
// The same command runs under `troupe launch` (127.0.0.1) and under a site launcher
// (Slurm: one `srun` task per node).
#include <unistd.h>

#include <caf/all.hpp>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <future>
#include <string>

#include "actors/roles.h"
#include "chaos/faulty_fabric.h"
#include "config/config_parse.h"
#include "launch/commands.h"
#include "launch/supervisor.h"
#include "runtime/auth.h"
#include "runtime/host.h"
#include "runtime/node_agent.h"

namespace troupe::launch {

namespace {

struct NodeArgs {
  std::string join, secret_file, listen_host = "127.0.0.1";
  int threads = 0;
  // or "engram": a memory node (Engram shards only); "rollout": GRPO sampling only
  std::string role = "worker";
  bool supervised = false;
  std::string log_level = "info";
};

int run_node(const NodeArgs& a) {
  // Until the coordinator names this node in the handshake (node_agent.cc).
  log::init_logging("node pid " + std::to_string(::getpid()), checked_log_level(a.log_level));
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  log::debug("heap: GLIBC_TUNABLES={}", tunables == nullptr ? "(unset)" : tunables);
  if (a.join.find(':') == std::string::npos)
    throw UsageError("node: --join wants HOST:PORT (the coordinator's address), got '" + a.join +
                     "'");
  runtime::Result<std::string> secret = runtime::load_secret(a.secret_file);
  if (!secret.ok()) throw UsageError("node: " + secret.status().message());
  actors::register_roles();
  install_stop_signals();
  // Under `troupe launch`, a terminal's Ctrl-C reaches the whole process group: the
  // launcher alone turns it into an orderly stop (it then shuts this node down).
  if (a.supervised) std::signal(SIGINT, SIG_IGN);
  runtime::HostOptions ho;
  ho.secret = secret.value();
  ho.listen_host = a.listen_host;
  ho.role = a.role == "worker" ? "" : a.role;
  runtime::Result<bool> faults = chaos::install_fabric_faults(&ho);  // TROUPE_FABRIC_FAULTS
  if (!faults.ok()) throw UsageError("node: " + faults.status().message());
  auto host = runtime::Host::create(ho);
  if (!host.ok()) throw UsageError("node: cannot start the runtime: " + host.status().to_string());
  auto done = std::make_shared<std::promise<std::pair<int, std::string>>>();
  std::future<std::pair<int, std::string>> result = done->get_future();
  runtime::NodeAgentOptions opt;
  opt.coordinator_address = a.join;
  opt.role_threads = a.threads;
  opt.listen_address = host.value()->listen_address();
  opt.pid = uint32_t(::getpid());
  opt.read_fault_tolerance =
      [](const runtime::JobSpec& job) -> runtime::Result<runtime::FaultToleranceConfig> {
    try {
      return model::config_from_text(job.config_text, job.config_name, job.config_sets)
          .fault_tolerance;
    } catch (const std::exception& e) {
      return runtime::Status(runtime::Code::invalid_argument, e.what());
    }
  };
  opt.on_exit = [done](int code, const std::string& why) { done->set_value({code, why}); };
  caf::actor agent = runtime::spawn_node_agent(*host.value(), opt);
  while (result.wait_for(std::chrono::milliseconds(100)) != std::future_status::ready) {
    if (stop_requested()) {
      log::warn("stopped by signal");
      caf::anon_send_exit(agent, caf::exit_reason::user_shutdown);
      return 1;
    }
  }
  const auto [code, why] = result.get();
  if (code == 0)
    log::info("done: {}", why);
  else if (code == runtime::exit_status_evicted)
    log::warn("leaving, exit status {}: {}", code, why);  // a lost node: may be replaced
  else
    log::error("error: {}", why);
  return code;
}

}  // namespace

void add_node_command(CLI::App& app) {
  auto args = std::make_shared<NodeArgs>();
  CLI::App* cmd = app.add_subcommand("node", "run one node process of a job");
  cmd->add_option("--join", args->join, "the coordinator's HOST:PORT")->required();
  cmd->add_option("--secret-file", args->secret_file, "the job secret (mode 0600)")->required();
  cmd->add_option("--listen-host", args->listen_host,
                  "address other nodes reach this one at (default 127.0.0.1)");
  cmd->add_option("--threads", args->threads, "compute threads (default: the job's train.threads)")
      ->check(at_least(0, "0: the job's train.threads"));
  cmd->add_option("--role", args->role,
                  "worker: a worker (and the shards placed beside it); engram: a memory node "
                  "that holds Engram shards only (engram.placement = \"shards\"); rollout: a "
                  "node that samples GRPO groups only (grpo.enabled)")
      ->check(CLI::IsMember({"worker", "engram", "rollout"}))
      ->capture_default_str();
  cmd->add_flag("--supervised", args->supervised,
                "started by troupe launch: ignore SIGINT, the launcher stops the job");
  add_log_level_option(cmd, &args->log_level);
  cmd->callback([args] {
    const int code = run_node(*args);
    if (code != 0) std::exit(code);
  });
}

}  // namespace troupe::launch
