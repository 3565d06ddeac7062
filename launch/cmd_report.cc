// `troupe report RUN_DIR [--out DIR]`: PNG plots of a run (loss, throughput, the event
// timeline; DESIGN §8). The plotting is tools/report.py (matplotlib): this command finds
// it, runs it with python3 and passes its exit status through. The python3 is the one CMake
// found (/usr/bin/python3, where Debian's python3-matplotlib is; a pyenv python3 first on
// PATH usually lacks it), or TROUPE_PYTHON.
#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "launch/commands.h"

extern char** environ;

namespace troupe::launch {

namespace {

struct ReportArgs {
  std::string run_dir, out;
};

// TROUPE_TOOLS_DIR, else the tools/ folder of the source tree this binary was built from.
std::string report_script() {
  const char* env = std::getenv("TROUPE_TOOLS_DIR");
  const std::string dir = env && *env ? env : TROUPE_SOURCE_TOOLS_DIR;
  const std::string script = dir + "/report.py";
  if (!std::filesystem::is_regular_file(script))
    throw UsageError("report: " + script +
                     " not found; set TROUPE_TOOLS_DIR to the tools/ folder of troupe's source");
  return script;
}

std::string report_python() {
  const char* env = std::getenv("TROUPE_PYTHON");
  return env && *env ? env : TROUPE_REPORT_PYTHON;
}

// Runs argv (argv[0] looked up on PATH unless a path) with this process's stdio; its exit
// status.
int run_child(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int err = ::posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ);
  if (err == ENOENT)
    throw UsageError("report: " + argv[0] +
                     " not found: install python3-matplotlib (./setup.sh), which brings it");
  if (err != 0) throw RunFailed("report: cannot start " + argv[0] + ": " + std::strerror(err));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) throw RunFailed("report: waitpid: " + std::string(std::strerror(errno)));
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  throw RunFailed("report: " + argv[1] + " was killed by signal " +
                  std::to_string(WTERMSIG(status)));
}

int run_report(const ReportArgs& a) {
  std::vector<std::string> argv = {report_python(), report_script(), a.run_dir};
  if (!a.out.empty()) argv.insert(argv.end(), {"--out", a.out});
  return run_child(argv);
}

}  // namespace

void add_report_command(CLI::App& app) {
  auto args = std::make_shared<ReportArgs>();
  CLI::App* cmd = app.add_subcommand(
      "report", "PNG plots of a run: loss, tokens/s, faults and recoveries over time");
  cmd->add_option("RUN_DIR", args->run_dir, "the run directory (metrics.jsonl, events.jsonl)")
      ->required();
  cmd->add_option("--out", args->out, "where the PNGs go (default RUN_DIR/report)");
  cmd->callback([args] {
    const int code = run_report(*args);
    if (code != 0) std::exit(code);
  });
}

}  // namespace troupe::launch
