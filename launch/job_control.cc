#include "launch/job_control.h"

#include <unistd.h>

#include <utility>

namespace troupe::launch {

JobControl::JobControl(Ask ask, std::function<nlohmann::json()> status)
    : ask_(std::move(ask)), status_(std::move(status)) {}

void JobControl::on_step(int64_t step, double loss, double tokens_per_s, double t_s,
                         const double* val_loss) {
  metrics_.on_step(step, loss, tokens_per_s);
  const StepPoint p{step, loss, tokens_per_s, t_s, val_loss ? *val_loss : 0, val_loss != nullptr};
  std::lock_guard lock(mu_);
  tokens_per_s_ = tokens_per_s, loss_ = loss;
  history_.add_step(p);
}

void JobControl::on_event(const nlohmann::json& line) {
  const std::string kind = line.value("kind", "");
  if (kind == "view") {
    metrics_.set_epoch(line.value("epoch", int64_t(0)));
    if (line.contains("nodes") && line["nodes"].is_array())
      metrics_.set_nodes(int64_t(line["nodes"].size()));
  } else if (kind == "recover") {
    const bool no_node = line.value("node", "").empty() && line.value("reshape_aborted", false);
    metrics_.on_fault(no_node                     ? "reshape_timeout"
                      : line.value("hung", false) ? "node_hung"
                                                  : "node_lost");
  } else if (kind == "recovered") {
    metrics_.on_recovery(line.value("duration_ms", 0.0) / 1000);
  } else if (kind == "checkpoint" && line.contains("stall_ms")) {
    metrics_.on_checkpoint(line.value("stall_ms", 0.0) / 1000);
  } else if (kind == "rebalance") {
    metrics_.on_rebalance(line.value("imbalance_before", 0.0), line.value("imbalance_after", 0.0),
                          line.value("pause_ms", 0.0) / 1000,
                          line.value("moved_bytes", int64_t(0)));
  } else if (kind == "dropped" && line.contains("reason")) {
    metrics_.on_fault("message_dropped");
  } else if (kind == "node_exit" && line.value("exit_code", -1) != 0) {
    metrics_.on_fault(kind);  // a drained node exits 0: not a fault
  } else if (kind == "checkpoint_corrupt" || kind == "checkpoint_skipped" ||
             kind == "join_refused") {
    metrics_.on_fault(kind);
  }
  std::lock_guard lock(mu_);
  history_.add_event(line);
}

nlohmann::json JobControl::status() {
  nlohmann::json s = status_();
  std::lock_guard lock(mu_);
  s["tokens_per_s"] = tokens_per_s_;
  s["coordinator_pid"] = int64_t(::getpid());
  s["loss"] = loss_;
  return s;
}

nlohmann::json JobControl::history() {
  std::lock_guard lock(mu_);
  return history_.to_json();
}

}  // namespace troupe::launch
