// `troupe launch --config job.toml --nodes N --run-dir DIR`: the local supervisor (DESIGN
// §2). It runs the coordinator in this process, starts N `troupe node` processes on
// 127.0.0.1, shows one progress line for the job, writes the run directory, and stops
// everything on Ctrl-C, when a node dies, or when the job ends.
#include <malloc.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include "actors/coordinator.h"
#include "actors/journal_log.h"
#include "actors/roles.h"
#include "chaos/faulty_fabric.h"
#include "config/config_parse.h"
#include "launch/commands.h"
#include "launch/control.h"
#include "launch/job_control.h"
#include "launch/launch_args.h"
#include "launch/launcher_link.h"
#include "launch/node_exit.h"
#include "launch/progress.h"
#include "launch/run_files.h"
#include "launch/supervisor.h"
#include "runtime/auth.h"
#include "runtime/host.h"
#include "storage/checked_file.h"
#include "storage/checkpoint.h"
#include "storage/engram_saves.h"
#include "storage/run_lock.h"
#include "storage/weights_io.h"

namespace troupe::launch {

namespace {

// The weights file of a finished job: worker 0's parameters and Engram tables.
void write_weights(const std::string& path, const model::JobConfig& cfg,
                   const actors::JobResult& r) {
  model::ParamTable table(cfg.model);
  std::unique_ptr<model::InProcessEngramStore<float>> engram;
  if (!cfg.model.engram_layers.empty())
    engram = std::make_unique<model::InProcessEngramStore<float>>(cfg.model, r.engram_tables);
  model::write_safetensors(
      path, model::weights_to_safetensors<float>(table, r.weights.data(), cfg.model, cfg.train.seed,
                                                 engram.get()));
}

// One launched job: its run directory's files, the progress line, the coordinator and the
// local node processes. run() returns the process's exit status.
class LaunchJob {
 public:
  explicit LaunchJob(const LaunchArgs& a)
      : a_(a),
        local_(a.as_coordinator ? 0 : checked_local_nodes(a)),
        sets_(job_sets(a)),
        cfg_(checked_launch(a)),
        step_tokens_(cfg_.train.batch_size * cfg_.model.seq_len),
        scale_at_(parse_scale_at(a)),
        progress_(cfg_.train.steps) {}

  int run() {
    open_run_dir();
    if (write_failed_) throw UsageError("launch: " + write_error_);
    actors::register_roles();
    install_stop_signals();
    if (!a_.as_coordinator)  // else the launcher did, for it and the nodes (launcher.cc)
      spare_oversubscribed_cores(a_, local_);
    host_ = start_host(a_, secret_);
    if (a_.as_coordinator) tell_launcher();
    coordinator_ = actors::spawn_coordinator(*host_, coordinator_options());
    ControlOptions control = a_.control;
    control.keep_token = a_.restart;
    endpoint_.start(a_.run_dir, control, control_, a_.max_nodes);
    print_start();
    start_nodes();
    const actors::JobResult r = supervise();
    endpoint_.stop();
    progress_.finish();
    // The nodes exit on the coordinator's Shutdown; what has not within 2 s (a hung node) is
    // stopped: SIGTERM, then SIGKILL after 1 s.
    supervisor_.wait_all(std::chrono::milliseconds(2000));
    supervisor_.stop_all(std::chrono::milliseconds(1000));
    // The job's nodes are gone: a later --resume starts from a checkpoint, not a rejoin.
    (void)journal_->append({{"kind", "end"}, {"ok", r.ok}, {"step", r.steps_done}});
    if (!r.ok) {
      std::fprintf(stderr, "troupe launch: the job stopped at step %ld: %s\n", long(r.steps_done),
                   r.error.c_str());
      return verdict(r.nothing_rejoined ? nothing_rejoined_exit : 1);
    }
    write_weights(a_.run_dir + "/weights.safetensors", cfg_, r);
    print_summary(r);
    return verdict(0);
  }

 private:
  using clock = std::chrono::steady_clock;
  // How often the coordinator's process hands free heap pages back to the system
  // (malloc_trim). In a soak with a fault every 30 s, 70 min in, its heap held 2.8 MB in use
  // but 5.9 MB from the system over 10 glibc arenas (one held 1.7 MB for 0.6 MB in use), and
  // its RSS swung by ~0.5 MiB with them: more than the soak's 1% growth bound.
  static constexpr int64_t heap_trim_interval_ms = 30000;

  // The run directory is this job's for its life (flock); a directory holding a run is
  // refused unless --resume, which continues from its newest checkpoint that verifies.
  void open_run_dir() {
    // The launcher holds the lock and checked the directory for its coordinator process.
    if (!a_.as_coordinator) lock_ = claim_run_dir(a_);
    secret_file_ = job_secret_file(a_);
    secret_ = job_secret(secret_file_, a_.secret_file.empty());
    open_journal();
    const storage::StorageFaults faults = storage::StorageFaults::from_env();
    check_write(metrics_.open(a_.run_dir + "/metrics.jsonl", a_.resume || a_.restart, faults));
    check_write(events_.open(a_.run_dir + "/events.jsonl", a_.resume || a_.restart, faults));
    storage::CheckedFile config;
    check_write(config.open(a_.run_dir + "/config.json", false, faults));
    check_write(
        config.write(model::model_config_to_json(cfg_.model, cfg_.train.seed).dump(2) + "\n"));
    if (a_.restart) {
      restart_ = actors::restart_state(*journal_);
      if (!restart_)
        throw UsageError("launch: the journal in " + a_.run_dir +
                         " holds no placed view: nothing for a coordinator to restart into");
    } else if (a_.resume) {
      choose_checkpoint();
    }
  }

  // Tells the launcher the job's exit status before the teardown (launcher_link.h: a crash
  // there is not restarted into a job that ended), with the summary flushed first.
  int verdict(int code) {
    std::fflush(stdout), std::fflush(stderr);
    if (!a_.as_coordinator) return code;
    (void)link_.send("ended " + std::to_string(code));
    // Chaos for tests: TROUPE_COORDINATOR_FAULT=kill@end kills the first coordinator process
    // (SIGKILL) right after its verdict, as a crash in its teardown would.
    const char* spec = std::getenv("TROUPE_COORDINATOR_FAULT");
    if (spec != nullptr && std::string(spec) == "kill@end" && !a_.restart) {
      log::warn("TROUPE_COORDINATOR_FAULT={}: the coordinator kills itself", spec);
      ::raise(SIGKILL);
    }
    return code;
  }

  // The coordinator process tells its launcher where it listens (coordinator.json: a
  // restarted one listens there again) and keeps a line to it (launcher_link.h).
  void tell_launcher() {
    const std::string tmp = a_.run_dir + "/coordinator.json.tmp";
    std::ofstream(tmp)
        << nlohmann::json{{"address", host_->listen_address()}, {"pid", ::getpid()}}.dump() << "\n";
    std::filesystem::rename(tmp, a_.run_dir + "/coordinator.json");
    link_.connect(a_.launcher_link);
  }

  // A line from the launcher: a node process ended ("exit PID CODE SIGNAL LOG TEXT").
  void on_launcher_line(const std::string& line, bool* stopping) {
    std::istringstream in(line);
    std::string word, log;
    ChildExit e;
    if (!(in >> word >> e.pid >> e.exit_code >> e.signal >> log) || word != "exit") return;
    e.name = node_process_name(log);
    on_child_exit(e, stopping);
  }

  static void check_write(const runtime::Status& st) {
    if (!st.ok()) throw UsageError("launch: " + st.message());
  }

  // The journal, and the job identity it holds: a resume under another config is refused.
  // The run directory's lock is ours: a journal still locked is held by the coordinator of a
  // job just killed (a `--resume` right after kill -9), about to die with its launch.
  void open_journal() {
    auto j = storage::Journal::open_waiting(a_.run_dir, std::chrono::milliseconds(10000));
    if (!j.ok()) throw UsageError("launch: " + j.status().message());
    journal_ = std::shared_ptr<storage::Journal>(std::move(j).value());
    const nlohmann::json identity = storage::job_identity(cfg_);
    if (const auto stored = journal_->meta("job")) {
      const std::string why = storage::identity_mismatch(nlohmann::json::parse(*stored), identity);
      if (!why.empty())
        throw UsageError("launch: cannot resume the run in " + a_.run_dir + ": " + why);
      return;
    }
    check_write(journal_->put_meta("job", identity.dump()));
  }

  void choose_checkpoint() {
    auto m = storage::newest_good_checkpoint(
        a_.run_dir, *journal_, [this](const std::string& w) { on_event("checkpoint_corrupt", w); });
    if (m.ok()) resume_ = std::move(m).value();
    const int64_t step = resume_ ? resume_->step : 0;
    on_event("resume", resume_ ? "from the checkpoint of step " + std::to_string(step)
                               : "no usable checkpoint (" + m.status().message() +
                                     "): the job starts from step 0");
    check_write(journal_->append({{"kind", "resume"}, {"step", step}}));
    try {  // table sets the lost job saved from `step` on belong to a future that is gone
      storage::drop_engram_saves_from(a_.run_dir, step);
    } catch (const std::exception& e) {
      throw UsageError("launch: cannot resume the run in " + a_.run_dir + ": " + e.what());
    }
  }

  static int64_t unix_ms_now() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  double elapsed_s() const { return std::chrono::duration<double>(clock::now() - t0_).count(); }

  // Chaos: the last node (or rollout node) process started here is killed from the
  // coordinator's callback before the next step; alive until then, its pid is not reused.
  void chaos_kill(const std::string& when, std::atomic<pid_t>* victim = nullptr) {
    const pid_t pid = (victim ? *victim : victim_).exchange(0);
    if (pid <= 0) return;
    progress_.note(
        chaos_kill_text(node_of_pid(pid), node_process_name(std::to_string(local_)), pid, when));
    ::kill(pid, SIGKILL);
  }

  std::string node_of_pid(pid_t pid) {  // the node id its join gave it; "" before
    std::lock_guard lock(events_mu_);
    const auto it = node_of_pid_.find(int64_t(pid));
    return it == node_of_pid_.end() ? "" : it->second;
  }

  void on_step(const actors::StepReport& r) {
    // GRPO: the completion tokens the step trained on (the groups'), else the batch's.
    const int64_t tokens = r.stats.reward >= 0 ? r.stats.tokens : step_tokens_;
    tokens_done_ += tokens;
    const double tps = double(tokens) / std::max(r.seconds, 1e-9);
    control_.on_step(r.stats.step, r.stats.loss, tps, elapsed_s(),
                     r.has_val ? &r.val_loss : nullptr);
    control_.metrics().on_expert_load(r.expert_counts);
    const auto& t = r.engram_tier;
    control_.metrics().on_engram_tier(t.hits, t.misses, t.bytes_read, t.bytes_written,
                                      t.miss_ms / 1000);
    last_loss_ = r.stats.loss;
    if (r.has_val) last_val_ = r.val_loss;
    write_or_stop(metrics_, metrics_line(r.stats, tps, r.val_loss, r.has_val, unix_ms_now()));
    progress_.step(r.stats.step, r.stats.loss, r.stats.lr, tps, elapsed_s(), r.stats.reward);
    if (r.has_val) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "step %ld  val_loss %.4f nats/byte", long(r.stats.step + 1),
                    r.val_loss);
      progress_.note(buf);
    }
    if (r.stats.step + 1 == a_.kill_node_at)
      chaos_kill("after step " + std::to_string(a_.kill_node_at));
    if (r.stats.step + 1 == a_.kill_rollout_at) chaos_kill("after a step", &rollout_victim_);
    replace_due_ += replace_wanted_.exchange(0);
    if (auto it = scale_at_.find(r.stats.step + 1); it != scale_at_.end())
      scale_wanted_ = it->second;  // asked from the supervising thread: this is the coordinator's
  }

  // The first failed write stops the job at once, keeping what is committed (checkpoints,
  // journal): --resume continues once the cause (a full disk) is gone.
  void write_or_stop(storage::CheckedFile& f, const std::string& line) {
    const runtime::Status st = f.write(line);
    if (st.ok() || write_failed_.exchange(true)) return;
    write_error_ = st.message();
    progress_.note("[error] " + write_error_ + "; stopping the job (checkpoints and journal kept)");
    if (coordinator_) actors::request_stop(coordinator_, write_error_);
  }

  // One line of events.jsonl: its kind (also as "event", the name earlier runs used), the
  // text, and the typed fields (node, pid, step, epoch, reason, *_ms durations).
  void on_event(const std::string& kind, const std::string& text,
                const nlohmann::json& fields = nlohmann::json::object()) {
    nlohmann::json line = {{"t_s", elapsed_s()},
                           {"unix_ms", unix_ms_now()},
                           {"kind", kind},
                           {"event", kind},
                           {"text", text}};
    line.update(fields);
    {
      std::lock_guard lock(events_mu_);  // the coordinator's thread and the supervising one
      if (line.contains("node") && line.contains("pid") && (kind == "join")) {
        node_of_pid_[line["pid"].get<int64_t>()] = line["node"].get<std::string>();
        if (line.value("memory", false)) memory_nodes_.insert(line["node"].get<std::string>());
        if (line.value("rollout", false)) rollout_victim_ = pid_t(line["pid"].get<int64_t>());
        // --kill-node-at with the nodes started by the launcher: the last of the first worker
        // nodes (memory and rollout nodes join among them).
        const bool worker = !line.value("memory", false) && !line.value("rollout", false);
        if (a_.as_coordinator && a_.kill_node_at >= 0 && worker && ++worker_joins_ == a_.nodes)
          victim_ = pid_t(line["pid"].get<int64_t>());
      }
      write_or_stop(events_, line.dump() + "\n");
      control_.on_event(line);
      // A hung node declared lost: under replace_lost its process, if started here, is
      // ended (supervise) so that it is replaced; it would otherwise hold its place for good.
      if (kind == "recover" && line.value("hung", false) && cfg_.fault_tolerance.replace_lost)
        hung_pids_.push_back(pid_t(line.value("pid", int64_t(0))));
    }
    if (kind != "view") progress_.note("[" + kind + "] " + text);
    if (kind == "view" || kind == "coordinator_restarted") joined_ = true;
    if (kind == "view" && a_.kill_node_at == 0) chaos_kill("as the workers start");
  }

  actors::CoordinatorOptions coordinator_options() {
    actors::CoordinatorOptions co;
    co.nodes = a_.nodes;
    co.job = {read_file(a_.config), a_.config, sets_,
              std::filesystem::absolute(a_.run_dir).string(),
              resume_ ? resume_->to_json().dump() : std::string()};
    co.config = cfg_;
    co.commit_log = std::make_shared<actors::JournalCommitLog>(co.job.run_dir, journal_);
    co.resume_step = resume_ ? resume_->step : 0;
    if (restart_) co.restart = restart_, co.resume_step = restart_->committed;
    co.min_nodes = a_.min_nodes;
    co.engram_nodes = a_.engram_nodes;
    co.rollout_nodes = a_.rollout_nodes;
    co.engram_at = parse_engram_at(a_.engram_at, "launch");
    co.engram_stack = actors::engram_stack_at(*journal_, co.resume_step, bool(restart_));
    co.own_thread = host_->fabric_thread_lent();  // its fsyncs must not stall the fabric
    co.on_step = [this](const actors::StepReport& r) { on_step(r); };
    co.on_event = [this](const std::string& kind, const std::string& text,
                         const nlohmann::json& fields) { on_event(kind, text, fields); };
    auto done = done_;
    co.on_done = [done](const actors::JobResult& r) { done->set_value(r); };
    return co;
  }

  void print_start() const {
    std::fprintf(stderr,
                 "troupe launch: %s, %ld node processes, %ld steps of %ld×%ld tokens, %ld "
                 "micro-batches; coordinator at %s\n",
                 a_.config.c_str(), long(a_.nodes), long(cfg_.train.steps),
                 long(cfg_.train.batch_size), long(cfg_.model.seq_len),
                 long(cfg_.train.batch_size / cfg_.train.micro_batch_rows),
                 host_->listen_address().c_str());
    // The nodes started elsewhere (the launcher passes its --local-nodes on).
    const int64_t here = a_.as_coordinator && a_.local_nodes >= 0 ? a_.local_nodes : local_;
    if (here < a_.nodes && (!a_.as_coordinator || a_.local_nodes >= 0) && !a_.restart)
      std::fprintf(stderr,
                   "troupe launch: waiting for %ld more node(s): troupe node --join %s "
                   "--secret-file %s\n",
                   long(a_.nodes - here), host_->listen_address().c_str(), secret_file_.c_str());
  }

  void start_nodes() {
    threads_ = a_.threads_per_node;
    if (threads_ <= 0 && cfg_.train.threads <= 0)  // share the cores among the nodes
      threads_ = std::max<int>(
          1, int(std::thread::hardware_concurrency()) / int(std::max<int64_t>(local_, 1)));
    for (int64_t i = 0; i < local_; ++i) start_node_process();
    if (a_.kill_node_at >= 0) victim_ = supervisor_.pid_of(int(local_ - 1));
  }

  // One more local node process (node-K.log, K counting every process started here).
  void start_node_process() {
    if (a_.as_coordinator) {  // the launcher starts it: it outlives this process
      link_.send("start 1");
      return;
    }
    std::vector<std::string> argv = {self_exe_path(),         "node",          "--join",
                                     host_->listen_address(), "--secret-file", secret_file_,
                                     "--supervised"};
    if (threads_ > 0) argv.insert(argv.end(), {"--threads", std::to_string(threads_)});
    argv.insert(argv.end(), {"--log-level", log::level_name(log::level())});  // launch's own
    const std::string k = std::to_string(++started_);
    supervisor_.start(argv, a_.run_dir + "/node-" + k + ".log", node_process_name(k));
  }

  // An operator's request to the coordinator; the node processes a scale up or a replacement
  // needs are started here. Returns the refusal ("" when accepted). Not on the coordinator's
  // thread (it waits for the coordinator's answer).
  std::string ask(const std::string& kind, int64_t nodes = 0, const std::string& node = "") {
    const actors::ControlAnswer a =
        actors::ask_coordinator(host_->actor_system(), coordinator_, kind, nodes, node);
    if (a.error.empty()) pending_starts_ += a.start_nodes;  // started by the supervising thread
    return a.error;
  }

  // A node process that exited after every node joined: a drained node (exit 0) left; a
  // lost one (it died, or was evicted: node_exit.h) is the coordinator's to recover from, and
  // with replace_lost a fresh one joins.
  void on_node_exit(const ChildExit& e, bool* stopping) {
    const std::string id = node_of_pid(e.pid);
    // The parent sees a local node process die first: the coordinator hears it now (before
    // the event is written) rather than from the fabric or the missed heartbeats (a node it
    // lost already is old news).
    if (!id.empty() && node_end(e) != NodeEnd::left)
      actors::tell_node_lost(coordinator_, id,
                             "its process ended (" + e.describe() + ", seen by troupe launch)");
    on_event("node_exit", node_exit_text(e, id), node_exit_fields(e, id));
    if (node_end(e) == NodeEnd::left) return;
    if (!cfg_.fault_tolerance.recover) {
      if (!*stopping)
        actors::request_stop(coordinator_, node_exit_text(e, id) + "; see " + a_.run_dir);
      *stopping = true;
      return;
    }
    // Asked once the survivors committed a step (on_step): a newcomer's start on this host
    // would take the cores their redone step needs. A memory node is not replaced (yet).
    std::lock_guard lock(events_mu_);
    if (cfg_.fault_tolerance.replace_lost && !*stopping && !memory_nodes_.count(id))
      ++replace_wanted_;
  }

  // SIGKILL to the hung nodes' processes started here (or by the launcher: it checks that
  // the pid is its child, as signal_child does here); their ends are replaced (on_node_exit).
  void end_hung_nodes() {
    std::vector<pid_t> pids;
    {
      std::lock_guard lock(events_mu_);
      pids.swap(hung_pids_);
    }
    for (const pid_t pid : pids) {
      if (pid <= 0) continue;
      const bool sent = a_.as_coordinator ? link_.send("kill " + std::to_string(pid))
                                          : supervisor_.signal_child(pid, SIGKILL);
      if (sent)
        progress_.note("[replace] the hung node's process (pid " + std::to_string(pid) +
                       ") is ended with SIGKILL, to be replaced");
    }
  }

  // A node process started here (or by the launcher) ended.
  void on_child_exit(const ChildExit& e, bool* stopping) {
    pid_t pid = e.pid;
    victim_.compare_exchange_strong(pid, 0);  // ended by itself: nothing left to kill
    if (joined_) return on_node_exit(e, stopping);
    if (*stopping) return;
    *stopping = true;
    actors::request_stop(coordinator_, e.exited() + "; see " + a_.run_dir + "/node-*.log");
  }

  // Until the coordinator is done: Ctrl-C asks it to stop; a node process that exits is the
  // coordinator's to recover from once every node joined, else it stops the job.
  actors::JobResult supervise() {
    std::future<actors::JobResult> result = done_->get_future();
    bool stopping = false;
    auto next_trim = clock::now() + std::chrono::milliseconds(heap_trim_interval_ms);
    // A local node process's death (its pidfd) or the launcher's line about one wakes this
    // loop at once (on_node_exit): the coordinator hears it before the fabric's endpoint
    // error (3.5-5.5 ms, DESIGN §3) or the missed heartbeats.
    while (result.wait_for(std::chrono::milliseconds(0)) != std::future_status::ready) {
      supervisor_.wait_any(clock::now() + std::chrono::milliseconds(5),
                           a_.as_coordinator ? link_.fds() : std::vector<int>{});
      if (stop_requested() && !stopping) {
        stopping = true;
        actors::request_stop(coordinator_, "interrupted (SIGINT/SIGTERM)");
      }
      if (a_.as_coordinator)
        link_.poll([&](const std::string& line) { on_launcher_line(line, &stopping); });
      for (const ChildExit& e : supervisor_.reap()) on_child_exit(e, &stopping);
      end_hung_nodes();
      for (int64_t k = replace_due_.exchange(0); k > 0 && !stopping; --k) {
        const std::string why = ask("replace");
        progress_.note(why.empty() ? "[replace] a fresh node process joins in its place"
                                   : "[replace] not replaced: " + why);
      }
      if (const int64_t n = scale_wanted_.exchange(0); n > 0 && !stopping) {
        const std::string why = ask("scale", n);
        progress_.note(why.empty() ? "[scale] to " + std::to_string(n) + " nodes"
                                   : "[scale] to " + std::to_string(n) + " refused: " + why);
      }
      // Here, on the thread that started the others: a child's death signal follows the
      // thread that forked it (PR_SET_PDEATHSIG), and this one lives as long as the job.
      for (int64_t k = pending_starts_.exchange(0); k > 0 && !stopping; --k) start_node_process();
      if (clock::now() >= next_trim) {
        ::malloc_trim(0);
        next_trim = clock::now() + std::chrono::milliseconds(heap_trim_interval_ms);
      }
    }
    return result.get();
  }

  void print_summary(const actors::JobResult& r) const {
    const int64_t steps = cfg_.train.steps;
    const double wall = elapsed_s();
    if (resume_ && resume_->step >= steps) {  // resumed from the last step's checkpoint
      std::printf(
          "summary: steps %ld  nodes %ld  resumed at step %ld: no step left to train  "
          "weights %016lx\nrun dir: %s\n",
          long(steps), long(a_.nodes), long(resume_->step), (unsigned long)r.weights_hash,
          a_.run_dir.c_str());
      return;
    }
    std::printf(
        "summary: steps %ld  nodes %ld%s  loss %.4f  val_loss %.4f  wall %s  %.0f tok/s  "
        "weights %016lx\n"
        "run dir: %s (metrics.jsonl, events.jsonl, node-*.log, weights.safetensors, "
        "config.json)\n",
        long(steps), long(a_.nodes),
        r.recoveries > 0 ? (" (" + std::to_string(r.recoveries) + " lost, recovered)").c_str() : "",
        last_loss_, last_val_, format_duration(wall).c_str(), double(tokens_done_) / wall,
        (unsigned long)r.weights_hash, a_.run_dir.c_str());
    // Messages the roles dropped (duplicates, stale epochs, malformed ...), by reason: the
    // job's result does not depend on them, but an operator should see that they happened.
    if (!r.dropped.empty()) {
      std::string line;
      for (const auto& [reason, count] : r.dropped)
        line += (line.empty() ? "" : ", ") + reason + " " + std::to_string(count);
      std::printf("dropped messages: %s (see events.jsonl)\n", line.c_str());
    }
  }

  const LaunchArgs& a_;
  const int64_t local_;
  const std::vector<std::string> sets_;
  const model::JobConfig cfg_;
  const int64_t step_tokens_;
  int64_t tokens_done_ = 0;  // by this process (a resumed job's earlier steps are not here)
  const std::map<int64_t, int64_t> scale_at_;  // step → nodes (--scale-at)
  const clock::time_point t0_ = clock::now();
  Progress progress_;
  std::string secret_file_, secret_;
  storage::RunLock lock_;
  std::shared_ptr<storage::Journal> journal_;
  std::optional<storage::Manifest> resume_;
  storage::CheckedFile metrics_, events_;
  std::atomic<bool> write_failed_ = false;
  std::string write_error_;
  std::unique_ptr<runtime::Host> host_;
  caf::actor coordinator_;
  Supervisor supervisor_;
  double last_val_ = 0, last_loss_ = 0;
  // Every node joined (the first view): from then on a lost node is the coordinator's to
  // recover (or stop for); before, the job waits for it, so launch stops.
  std::atomic<bool> joined_ = false;
  std::atomic<pid_t> victim_ = 0;
  std::atomic<pid_t> rollout_victim_ = 0;  // --kill-rollout-at: the last rollout node to join
  int64_t worker_joins_ = 0;               // under events_mu_
  std::atomic<int64_t> scale_wanted_ = 0;
  std::atomic<int64_t> pending_starts_ = 0;                    // node processes asked for, to start
  std::atomic<int64_t> replace_wanted_ = 0, replace_due_ = 0;  // lost; to ask for (on_step)
  std::optional<actors::RestartState> restart_;  // --restart: the journal's view and step
  LauncherLink link_;                            // --as-coordinator: to the launcher
  std::mutex events_mu_;
  std::map<int64_t, std::string> node_of_pid_;  // from the join events: pid → node id
  std::set<std::string> memory_nodes_;          // from the join events (events_mu_)
  std::vector<pid_t> hung_pids_;                // declared lost while hung (events_mu_)
  JobControl control_{[this](const std::string& kind, int64_t n, const std::string& node) {
                        return ask(kind, n, node);
                      },
                      [this] {
                        return nlohmann::json::parse(
                            actors::coordinator_status(host_->actor_system(), coordinator_));
                      }};
  ControlEndpoint endpoint_;
  int threads_ = 0;  // of each node process started here
  int started_ = 0;  // node processes started here
  std::shared_ptr<std::promise<actors::JobResult>> done_ =
      std::make_shared<std::promise<actors::JobResult>>();
};

}  // namespace

int run_launch(const LaunchArgs& a) {
  LaunchJob job(a);
  return job.run();
}

}  // namespace troupe::launch
