// troupe-sim: runs simulated schedules (sim_job.h), one per seed, in --jobs processes, and
// reports schedules per hour and every failing seed with the command that replays it.
//   troupe-sim --seeds N [--first-seed S] [--jobs J] [--config FILE]
//   troupe-sim --seed S          one schedule, its plan, outcome and fingerprint
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "chaos/sim/sim_job.h"
#include "runtime/log.h"

namespace {

using troupe::chaos::SimOutcome;
using troupe::chaos::SimPlan;

std::string read_config(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error("troupe-sim: cannot read --config " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string outcome_line(uint64_t seed, const SimPlan& plan, const SimOutcome& o) {
  return fmt::format(
      "{} seed {}: {}; steps {}, recoveries {}, {} messages delivered, {} dropped, "
      "{:.2f} s simulated, fingerprint {:016x}{}",
      o.ok ? "ok  " : "FAIL", seed, plan.describe(), o.steps_done, o.recoveries, o.delivered,
      o.dropped, o.simulated_s, o.fingerprint, o.ok ? "" : "\n     why: " + o.failure);
}

// Seeds first, first+jobs, … of one child; each line to `fd`.
void run_share(uint64_t first, uint64_t count, int jobs, int share, const std::string& config,
               uint64_t reference, int fd) {
  for (uint64_t s = first + uint64_t(share); s < first + count; s += uint64_t(jobs)) {
    const SimPlan plan = troupe::chaos::draw_plan(s);
    const SimOutcome o = troupe::chaos::run_sim(plan, config, reference);
    const std::string line = (o.ok ? "ok " : "FAIL ") + std::to_string(s) + "\n";
    if (!o.ok) fmt::print(stderr, "{}\n", outcome_line(s, plan, o));
    if (::write(fd, line.data(), line.size()) < 0) std::_Exit(2);
  }
}

int run_many(uint64_t first, uint64_t count, int jobs, const std::string& config) {
  const int64_t steps = troupe::chaos::draw_plan(first).steps;
  const uint64_t reference = troupe::chaos::sim_reference_hash(config, steps);
  const auto t0 = std::chrono::steady_clock::now();
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("troupe-sim: pipe failed");
  std::vector<pid_t> kids;
  for (int j = 0; j < jobs; ++j) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(fds[0]);
      run_share(first, count, jobs, j, config, reference, fds[1]);
      std::_Exit(0);
    }
    kids.push_back(pid);
  }
  ::close(fds[1]);
  std::vector<uint64_t> failing;
  std::set<uint64_t> reported;
  uint64_t done = 0;
  FILE* in = ::fdopen(fds[0], "r");
  char buf[128];
  while (std::fgets(buf, sizeof buf, in)) {
    ++done;
    unsigned long long seed = 0;
    if (std::sscanf(buf, "FAIL %llu", &seed) == 1) failing.push_back(seed);
    if (std::sscanf(buf, "%*s %llu", &seed) == 1) reported.insert(seed);
    if (done % 500 == 0) fmt::print("  {} of {} schedules\n", done, count), std::fflush(stdout);
  }
  std::fclose(in);
  for (int j = 0; j < jobs; ++j) {
    int status = 0;
    ::waitpid(kids[size_t(j)], &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) continue;
    // A child runs its seeds in order: it died on the first one it did not report.
    for (uint64_t s = first + uint64_t(j); s < first + count; s += uint64_t(jobs)) {
      if (reported.count(s)) continue;
      fmt::print(
          "  seed {} ended its process ({}): replay with troupe-sim --seed {}, or with the "
          "seeds its process ran before it: troupe-sim --seeds {} --first-seed {} --jobs {}\n",
          s,
          WIFSIGNALED(status) ? fmt::format("signal {}", WTERMSIG(status))
                              : fmt::format("status {}", WEXITSTATUS(status)),
          s, s - first + 1, first, jobs);
      failing.push_back(s);
      break;
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print(
      "troupe-sim: {} schedules (seeds {}…{}) in {:.1f} s on {} processes: {:.0f} "
      "schedules per hour; {} failing\n",
      done, first, first + count - 1, s, jobs, done / s * 3600, failing.size());
  for (uint64_t f : failing)
    fmt::print("  failing seed {}: replay with troupe-sim --seed {}\n", f, f);
  if (done != count)
    fmt::print("troupe-sim: {} schedules did not run: a process ended early (above)\n",
               count - done);
  return failing.empty() && done == count ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"troupe-sim: whole jobs on a simulated fabric and clock, one schedule per seed"};
  uint64_t seeds = 0, first = 1, one = 0;
  int jobs = 2;
  std::string config = std::string(TROUPE_SOURCE_DIR) + "/configs/tiny.toml";
  std::string level = "off";
  app.add_option("--seeds", seeds, "how many schedules (seeds first-seed, first-seed+1, …)");
  app.add_option("--first-seed", first, "the first seed (default 1)");
  app.add_option("--seed", one, "run this one seed and print its plan and outcome");
  app.add_option("--jobs", jobs, "processes (default 2)")->check(CLI::Range(1, 64));
  app.add_option("--config", config, "the job config the micro model is set on (tiny.toml)");
  app.add_option("--log-level", level, "the roles' log (default off)");
  CLI11_PARSE(app, argc, argv);
  const auto lvl = troupe::log::parse_level(level);
  if (!lvl) {
    fmt::print(stderr, "troupe-sim: --log-level {}: not one of trace debug info warn error off\n",
               level);
    return 2;
  }
  troupe::log::init_logging("sim", *lvl);
  try {
    const std::string text = read_config(config);
    if (one != 0) {
      const SimPlan plan = troupe::chaos::draw_plan(one);
      const SimOutcome o =
          troupe::chaos::run_sim(plan, text, troupe::chaos::sim_reference_hash(text, plan.steps));
      fmt::print("{}\n", outcome_line(one, plan, o));
      return o.ok ? 0 : 1;
    }
    if (seeds == 0) {
      fmt::print(stderr, "troupe-sim: say --seeds N (how many schedules) or --seed S (one)\n");
      return 2;
    }
    return run_many(first, seeds, jobs, text);
  } catch (const std::exception& e) {
    fmt::print(stderr, "{}\n", e.what());
    return 1;
  }
}
