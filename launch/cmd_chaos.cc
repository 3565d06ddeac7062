// `troupe chaos run FILE... [--seed S]`, `troupe chaos run --all`, `troupe chaos soak
// --minutes M --seed S`: the chaos suite's runner (chaos/runner.h, docs/chaos.md).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>

#include "chaos/process.h"
#include "chaos/runner.h"
#include "launch/commands.h"

namespace troupe::launch {

namespace {

namespace fs = std::filesystem;

struct ChaosArgs {
  std::vector<std::string> files;
  bool all = false, fast = false;
  std::string scenarios_dir = "chaos/scenarios";
  int64_t seed = -1;
  std::string work_dir = "runs/chaos", cache_dir = "runs/chaos-cache";
  double minutes = 10;
  int64_t job = -1;
  std::string config = "configs/tiny.toml";
  // The scenarios' time bounds (detection, recovery) times this: a sanitizer build runs
  // every process 5–20× slower (tests/CMakeLists.txt passes its timeout scale).
  double time_bounds_scale = 1;
};

// What a replay must repeat besides the scenario and the seed.
std::string scale_flag(const ChaosArgs& a) {
  return a.time_bounds_scale == 1 ? ""
                                  : fmt::format(" --time-bounds-scale {}", a.time_bounds_scale);
}

chaos::RunOptions options(const ChaosArgs& a) {
  chaos::RunOptions o;
  o.troupe = chaos::self_exe();
  o.work_dir = a.work_dir, o.cache_dir = a.cache_dir;
  if (a.seed >= 0) o.seed = uint64_t(a.seed);
  return o;
}

std::vector<std::string> scenario_files(const ChaosArgs& a) {
  if (!a.all) return a.files;
  if (!a.files.empty()) throw UsageError("chaos run: give scenario files or --all, not both");
  if (!fs::is_directory(a.scenarios_dir))
    throw UsageError("chaos run --all: no folder " + a.scenarios_dir +
                     " (run from the repository root, or pass --scenarios DIR)");
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(a.scenarios_dir))
    if (e.path().extension() == ".toml") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

// Parses every file first: one bad file stops everything before any job starts.
std::vector<chaos::Scenario> parse_all(const std::vector<std::string>& files) {
  std::vector<chaos::Scenario> out;
  for (const std::string& f : files) {
    try {
      out.push_back(chaos::parse_scenario(f));
    } catch (const chaos::ScenarioError& e) {
      throw UsageError(std::string("chaos: ") + e.what());
    }
  }
  return out;
}

std::string replay_of(const ChaosArgs& a, const chaos::Scenario& s, uint64_t seed) {
  return fmt::format("{} chaos run {} --seed {}{}", chaos::self_exe(), s.path, seed, scale_flag(a));
}

void run_files(const ChaosArgs& a) {
  std::vector<chaos::Scenario> all = parse_all(scenario_files(a));
  if (a.fast) std::erase_if(all, [](const chaos::Scenario& s) { return !s.fast; });
  if (all.empty()) throw UsageError("chaos run: no scenario given (FILE... or --all)");
  if (a.time_bounds_scale != 1)
    std::printf("chaos: time bounds x%g (--time-bounds-scale)\n", a.time_bounds_scale);
  int failed = 0;
  for (const chaos::Scenario& s : all) {
    chaos::RunOptions o = options(a);
    o.replay = replay_of(a, s, o.seed.value_or(s.seed));
    const chaos::Report r =
        chaos::run_scenario(chaos::with_scaled_time_bounds(s, a.time_bounds_scale), o);
    std::printf("%s", chaos::report_text(r).c_str());
    std::fflush(stdout);
    failed += !r.ok();
  }
  std::printf("chaos: %zu scenario(s): %zu passed, %d failed\n", all.size(),
              all.size() - size_t(failed), failed);
  if (failed > 0) throw RunFailed(fmt::format("chaos: {} scenario(s) failed", failed));
}

// One drawn job: its scenario written to the work folder, run, and its replay command.
bool soak_job(const ChaosArgs& a, uint64_t seed, int64_t job) {
  fs::create_directories(a.work_dir);
  const std::string path = fmt::format("{}/soak-{}-{}.toml", a.work_dir, seed, job);
  std::ofstream(path) << chaos::drawn_scenario_text(seed, job, a.config);
  const chaos::Scenario s =
      chaos::with_scaled_time_bounds(parse_all({path}).front(), a.time_bounds_scale);
  chaos::RunOptions o = options(a);
  o.seed = seed;
  o.replay = fmt::format("{} chaos soak --seed {} --job {} --config {}{}", chaos::self_exe(), seed,
                         job, a.config, scale_flag(a));
  std::printf("chaos soak: seed %llu job %ld: %s\n", (unsigned long long)seed, long(job),
              s.faults.front().describe().c_str());
  const chaos::Report r = chaos::run_scenario(s, o);
  std::printf("%s", chaos::report_text(r).c_str());
  std::fflush(stdout);
  return r.ok();
}

void run_soak(const ChaosArgs& a) {
  if (a.seed < 0) throw UsageError("chaos soak: give --seed S (any integer ≥ 0)");
  const uint64_t seed = uint64_t(a.seed);
  if (a.job >= 0) {
    if (!soak_job(a, seed, a.job)) throw RunFailed("chaos soak: the job failed");
    return;
  }
  const auto end =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(int64_t(a.minutes * 60000));
  std::vector<int64_t> failed;
  int64_t job = 0;
  std::printf("chaos soak: seed %llu for %.1f min\n", (unsigned long long)seed, a.minutes);
  while (std::chrono::steady_clock::now() < end)
    if (!soak_job(a, seed, ++job)) failed.push_back(job);
  std::printf("chaos soak: seed %llu: %ld job(s), %zu failed\n", (unsigned long long)seed,
              long(job), failed.size());
  for (int64_t k : failed)
    std::printf("  replay: %s chaos soak --seed %llu --job %ld --config %s\n",
                chaos::self_exe().c_str(), (unsigned long long)seed, long(k), a.config.c_str());
  if (!failed.empty()) throw RunFailed("chaos soak: some jobs failed (replay lines above)");
}

void add_common(CLI::App* cmd, ChaosArgs* a) {
  cmd->add_option("--work", a->work_dir, "folder of the runs (default runs/chaos)");
  cmd->add_option("--cache", a->cache_dir,
                  "folder of the cached undisturbed references (default runs/chaos-cache)");
  cmd->add_option("--time-bounds-scale", a->time_bounds_scale,
                  "multiply the scenarios' detection and recovery bounds (ms) by this, for a "
                  "build that runs slower (sanitizers); default 1")
      ->check(CLI::Range(1.0, 1000.0));
}

}  // namespace

void add_chaos_command(CLI::App& app) {
  auto a = std::make_shared<ChaosArgs>();
  CLI::App* chaos = app.add_subcommand("chaos", "run chaos scenarios and check the invariants");
  chaos->require_subcommand(1);
  CLI::App* run = chaos->add_subcommand("run", "run scenario files (chaos/scenarios/*.toml)");
  run->add_option("files", a->files, "scenario files");
  run->add_flag("--all", a->all, "every scenario in --scenarios (those this build can run)");
  run->add_flag("--fast", a->fast, "only the scenarios marked fast = true (CI)");
  run->add_option("--scenarios", a->scenarios_dir, "the folder --all reads (chaos/scenarios)");
  run->add_option("--seed", a->seed, "seed (overrides the scenario's)")->check(at_least(0, ""));
  add_common(run, a.get());
  run->callback([a] { run_files(*a); });
  CLI::App* soak = chaos->add_subcommand("soak", "random scenarios from a seed, for minutes");
  soak->add_option("--minutes", a->minutes, "how long to draw and run jobs (default 10)")
      ->check(CLI::Range(0.0, 100000.0));
  soak->add_option("--seed", a->seed, "the seed every job is drawn from")
      ->required()
      ->check(at_least(0, ""));
  soak->add_option("--job", a->job, "run only job K of the seed (a replay)")
      ->check(at_least(1, ""));
  soak->add_option("--config", a->config, "the job's config (default configs/tiny.toml)");
  add_common(soak, a.get());
  soak->callback([a] { run_soak(*a); });
}

}  // namespace troupe::launch
