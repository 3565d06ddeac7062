#pragma once
// Each subcommand registers itself on the CLI11 app; main() dispatches and turns
// exceptions into one-line errors with exit status 2.
#include <CLI/CLI.hpp>
#include <stdexcept>
#include <string>

#include "runtime/log.h"

namespace troupe::launch {

// A user error (bad argument, file, config): printed as one line, exit status 2.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A job or check that ran and failed (a write that failed mid-run, a ledger that does not
// check): printed as one line, exit status 1. What was committed before it is kept.
struct RunFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A CLI11 check for an integer option: "must be an integer of at least MIN (HINT), got X".
inline CLI::Validator at_least(long min, const std::string& hint) {
  return CLI::Validator(
      [min, hint](std::string& v) -> std::string {
        try {
          size_t end = 0;
          if (std::stol(v, &end) >= min && end == v.size()) return {};
        } catch (const std::exception&) {
        }
        return "must be an integer of at least " + std::to_string(min) +
               (hint.empty() ? "" : " (" + hint + ")") + ", got " + v;
      },
      "INT>=" + std::to_string(min));
}

// --log-level (trace, debug, info, warn, error, off; default info) into *level: which log
// lines this process writes (runtime/log.h). Any other value is a CLI error that lists these.
inline void add_log_level_option(CLI::App* cmd, std::string* level) {
  cmd->add_option("--log-level", *level,
                  "log lines to write: trace, debug, info (default), warn, error or off")
      ->check(CLI::IsMember(log::level_names()));
}
// The level of a --log-level value that add_log_level_option checked.
inline log::Level checked_log_level(const std::string& name) {
  const std::optional<log::Level> level = log::parse_level(name);
  if (!level)
    throw UsageError("--log-level " + name + " is none of trace, debug, info, warn, error, off");
  return *level;
}

void add_train_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_eval_command(CLI::App& app);
// generate: a prompt's completion with the KV-cache decoder (model/generate.h).
void add_generate_command(CLI::App& app);
void add_dev_command(CLI::App& app);
void add_node_command(CLI::App& app);
void add_launch_command(CLI::App& app);
void add_ledger_command(CLI::App& app);
// eplb: expert placement from loads, offline (train/eplb.h).
void add_eplb_command(CLI::App& app);
// status, scale, drain, pause, resume, checkpoint: clients of a job's control endpoint.
void add_control_commands(CLI::App& app);
void add_report_command(CLI::App& app);
// engram export, engram import: Engram table sets (storage/engram_set.h).
void add_engram_command(CLI::App& app);
// engram attach, engram detach: clients of a running job's control endpoint (cmd_control.cc).
void add_engram_control_commands(CLI::App& engram);
// chaos run, chaos soak: the chaos suite (chaos/runner.h).
void add_chaos_command(CLI::App& app);

}  // namespace troupe::launch
