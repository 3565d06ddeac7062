// A scenario run: reference, launch with faults, invariants (runner.h).
#include "chaos/runner.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <xxhash.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "chaos/fabric_plan.h"
#include "chaos/inject.h"
#include "chaos/process.h"
#include "storage/journal.h"

namespace troupe::chaos {

namespace fs = std::filesystem;

namespace {

// How long the reference `troupe train` and `troupe ledger --check` may take.
constexpr int64_t reference_timeout_s = 1800;
constexpr int64_t ledger_timeout_s = 120;

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The reference's cache key: the config's bytes, the overrides, the steps, and the troupe
// binary (size and mtime: a rebuild may change the numbers).
std::string reference_key(const Scenario& s, const std::string& troupe) {
  std::string text = file_bytes(s.config) + "\n--steps " + std::to_string(s.steps);
  for (const std::string& set : s.sets) text += "\n--set " + set;
  struct stat st {};
  if (::stat(troupe.c_str(), &st) == 0)
    text += fmt::format("\n{} {} {}", troupe, st.st_size, st.st_mtim.tv_sec);
  return fmt::format("{:016x}", XXH64(text.data(), text.size(), 0));
}

std::vector<std::string> job_args(const Scenario& s) {
  std::vector<std::string> a = {"--config", s.config, "--steps", std::to_string(s.steps)};
  for (const std::string& set : s.sets) a.insert(a.end(), {"--set", set});
  return a;
}

// The undisturbed run's weights file, trained once per key.
std::string reference_weights(const Scenario& s, const RunOptions& o) {
  const std::string dir = o.cache_dir + "/" + reference_key(s, o.troupe);
  const std::string weights = dir + "/weights.safetensors";
  if (fs::exists(weights)) return weights;
  const std::string partial = dir + ".partial";
  fs::remove_all(partial);
  fs::create_directories(o.cache_dir);
  std::vector<std::string> argv = {o.troupe, "train"};
  for (const std::string& a : job_args(s)) argv.push_back(a);
  // Where the tables and experts live changes no bit (issues 15, 16), and one process holds
  // them all: the reference trains them in place.
  argv.insert(argv.end(), {"--set", "engram.placement=replicated", "--set",
                           "engram.host_cache_bytes=0", "--set", "parallel.experts=worker", "--set",
                           "eplb.rebalance_every_steps=0", "--run-dir", partial});
  std::printf("chaos: %s: training the undisturbed reference into %s\n", s.name.c_str(),
              dir.c_str());
  std::fflush(stdout);
  const int rc = run_child(argv, partial + ".out", partial + ".err",
                           std::chrono::seconds(reference_timeout_s));
  if (rc != 0 || !fs::exists(partial + "/weights.safetensors"))
    throw std::runtime_error(
        fmt::format("the reference `troupe train` of {} failed (status {}); "
                    "see {}.err",
                    s.name, rc, partial));
  fs::rename(partial, dir);
  return weights;
}

std::string joined_specs(const Scenario& s, FaultKind kind) {
  std::string out;
  for (const Fault& f : s.faults)
    if (f.kind == kind) out += fmt::format("{}{}", out.empty() ? "" : ",", f.spec);
  return out;
}

LaunchPlan launch_plan(const Scenario& s, const RunOptions& o, const std::string& run_dir,
                       uint64_t seed) {
  LaunchPlan p;
  p.troupe = o.troupe;
  p.run_dir = run_dir;
  p.argv = {o.troupe, "launch", "--nodes", std::to_string(s.nodes), "--run-dir", run_dir};
  for (const std::string& a : job_args(s)) p.argv.push_back(a);
  for (const std::string& a : s.launch_args) p.argv.push_back(a);
  if (const std::string v = joined_specs(s, FaultKind::storage); !v.empty())
    p.env["TROUPE_STORAGE_FAULT"] = v;
  if (const std::string v = joined_specs(s, FaultKind::transfer); !v.empty())
    p.env["TROUPE_TRANSFER_FAULT"] = v;
  if (const std::string plan = fabric_plan_text(s, seed, run_dir); !plan.empty()) {
    const std::string path = fs::absolute(run_dir + "/chaos-fabric-faults.toml").string();
    std::ofstream(path) << plan;
    p.env[fabric_faults_env] = path;
  }
  return p;
}

Verdict check_ledger(const RunOptions& o, const std::string& run_dir) {
  const std::string out = run_dir + "/chaos-ledger.out";
  const int rc = run_child({o.troupe, "ledger", run_dir, "--check"}, out,
                           run_dir + "/chaos-ledger.err", std::chrono::seconds(ledger_timeout_s));
  std::istringstream lines(file_bytes(out) + file_bytes(run_dir + "/chaos-ledger.err"));
  std::string line, last;
  while (std::getline(lines, line))
    if (!line.empty()) last = line;
  return {"ledger: every micro-batch exactly once", rc == 0,
          fmt::format("troupe ledger --check: status {}: {}", rc, last)};
}

// The text of every log of the run: the nodes' (node-K.log, the processes' stderr) and the
// launch's stderr, where the coordinator process's goes.
std::string run_logs(const std::string& run_dir) {
  std::string text = file_bytes(run_dir + "/chaos-launch.err");
  for (const auto& e : fs::directory_iterator(run_dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("node-", 0) == 0 && e.path().extension() == ".log")
      text += file_bytes(e.path().string());
  }
  return text;
}

std::vector<nlohmann::json> journal_records(const std::string& run_dir) {
  auto j = storage::Journal::open(run_dir, /*read_only=*/true);
  if (!j.ok()) return {};
  return j.value()->records();
}

}  // namespace

Report run_scenario(const Scenario& s, const RunOptions& o) {
  const uint64_t seed = o.seed.value_or(s.seed);
  const std::string ref = reference_weights(s, o);
  const std::string run_dir =
      fs::absolute(fmt::format("{}/{}-s{}-{}", o.work_dir, s.name, seed, unix_ms_now())).string();
  fs::create_directories(run_dir);
  fs::copy_file(s.path, run_dir + "/chaos-scenario.toml", fs::copy_options::overwrite_existing);
  const LaunchPlan plan = launch_plan(s, o, run_dir, seed);
  std::printf("chaos: %s (seed %llu): %s\n", s.name.c_str(), (unsigned long long)seed,
              s.description.c_str());
  std::fflush(stdout);
  const LiveRun live = run_live(s, plan);
  Report r;
  r.scenario = s.name, r.run_dir = run_dir, r.seed = seed, r.replay = o.replay;
  r.wall_ms = live.wall_ms;
  r.faults = fault_outcomes(s, live);
  r.checks.push_back({"the job ends", live.exit_status == 0,
                      live.timed_out
                          ? fmt::format("still running after {} s", s.timeout_s)
                          : fmt::format("troupe launch exited {} (see {}/chaos-launch.err)",
                                        live.exit_status, run_dir)});
  r.checks.push_back(same_bytes("weights bitwise identical to the undisturbed run",
                                run_dir + "/weights.safetensors", ref));
  r.checks.push_back(check_ledger(o, run_dir));
  const std::vector<nlohmann::json> journal = journal_records(run_dir);
  r.checks.push_back(journal.empty() ? Verdict{"no old epoch applied", false, "no journal"}
                                     : check_epochs(journal));
  for (Verdict& v : check_faults(s, r.faults)) r.checks.push_back(std::move(v));
  for (Verdict& v : check_configured(s, live.events)) r.checks.push_back(std::move(v));
  if (const auto it = plan.env.find(fabric_faults_env); it != plan.env.end())
    for (Verdict& v : check_fabric_rules_acted(s, it->second, run_logs(run_dir)))
      r.checks.push_back(std::move(v));
  r.drops = job_drops(live.events);
  r.steps_redone = steps_redone(journal);
  std::ofstream(run_dir + "/chaos-report.json") << report_json(r).dump(2) << "\n";
  return r;
}

namespace {

uint64_t splitmix(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

std::string drawn_scenario_text(uint64_t seed, int64_t job, const std::string& config) {
  uint64_t x = seed * 1000003ULL + uint64_t(job);
  const int64_t nodes = 3 + int64_t(splitmix(x) % 2), steps = 16;
  std::string t = fmt::format(
      "description = \"soak seed {} job {}\"\nconfig = \"{}\"\nset = [\"train.eval_every=0\", "
      "\"fault_tolerance.replace_lost=true\"]\nsteps = {}\nnodes = {}\ntimeout_s = 300\n"
      "seed = {}\nlaunch_args = [\"--max-nodes\", \"6\"]\n",
      seed, job, fs::absolute(config).string(), steps, nodes, seed);
  const char* kinds[] = {"kill",  "hang",  "slow",      "kill_coordinator",
                         "scale", "drain", "partition", "messages"};
  const std::string kind = kinds[splitmix(x) % 8];
  const std::string node = fmt::format("n{}", 1 + splitmix(x) % uint64_t(nodes));
  const uint64_t step = 2 + splitmix(x) % 8, delay_ms = splitmix(x) % 150;
  if (kind == "partition") {  // one node cut off from the coordinator and the rest for 3 s
    std::string rest = "\"coordinator\"";
    for (int64_t k = 1; k <= nodes; ++k)
      if (fmt::format("n{}", k) != node) rest += fmt::format(", \"n{}\"", k);
    return t + fmt::format(
                   "\n[[fault]]\nkind = \"fabric\"\naction = \"partition\"\n"
                   "groups = [[{}], [\"{}\"]]\nat_step = {}\nfor_ms = 3000\n",
                   rest, node, step);
  }
  if (kind == "messages")  // the whole job: step messages sent twice or overtaken
    return t + fmt::format(
                   "\n[[fault]]\nkind = \"fabric\"\naction = \"duplicate\"\n"
                   "types = [\"StepBegin\", \"GradSlices\", \"Apply\", \"Weights\"]\n"
                   "probability = 0.3\n"
                   "\n[[fault]]\nkind = \"fabric\"\naction = \"reorder\"\n"
                   "types = [\"GradSlices\", \"Stats\", \"StepDone\"]\ndelay_ms = {}\n",
                   10 + delay_ms % 40);
  t += fmt::format("\n[[fault]]\nkind = \"{}\"\nat_step = {}\ndelay_ms = {}\n", kind, step,
                   delay_ms);
  if (kind != "kill_coordinator" && kind != "scale") t += fmt::format("node = \"{}\"\n", node);
  if (kind == "hang") t += "for_ms = 4000\n";
  if (kind == "slow") t += "for_ms = 3000\n";
  if (kind == "scale") t += fmt::format("nodes = {}\n", nodes + 1);
  // Half the kills and scales also lose the transfers of the recovery or reshape they
  // start (for 300 ms from its event): they are asked for again. Drawn last, so the draws
  // above are those of the seeds printed before it.
  if ((kind == "kill" || kind == "scale") && splitmix(x) % 2 == 0)
    t += fmt::format(
        "\n[[fault]]\nkind = \"fabric\"\naction = \"drop\"\n"
        "types = [\"StateTransfer\", \"Replica\"]\nafter_event = \"{}\"\nfor_ms = 300\n",
        kind == "kill" ? "recover" : "reshape");
  return t;
}

}  // namespace troupe::chaos
