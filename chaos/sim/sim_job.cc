#include "chaos/sim/sim_job.h"

#include <fmt/format.h>

#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <map>
#include <memory>
#include <optional>
#include <random>

#include "actors/coordinator.h"
#include "actors/roles.h"
#include "chaos/sim/sim_network.h"
#include "config/config_parse.h"
#include "runtime/exit_status.h"
#include "runtime/host.h"
#include "runtime/node_agent.h"
#include "train/trainer.h"

namespace troupe::chaos {

namespace {

constexpr int64_t sim_events_max = 2'000'000;  // a schedule that runs longer has stalled
constexpr auto sim_time_max = std::chrono::seconds(600);

struct SimSystemConfig : caf::actor_system_config {
  SimSystemConfig() {
    set("scheduler.policy", caf::atom("testing"));
    set("logger.file-verbosity", caf::atom("quiet"));
    set("logger.console-verbosity", caf::atom("quiet"));
  }
};

// The workers the node agents spawn, kept so that the schedule can end them (roles run on
// the test scheduler, not detached: their compute is instantaneous in simulated time).
thread_local std::vector<caf::actor>* spawned_roles = nullptr;

void register_sim_roles() {
  static bool done = false;
  if (std::exchange(done, true)) return;
  runtime::register_role("worker", [](caf::actor_system& sys, const runtime::RoleContext& ctx) {
    caf::actor a = actors::spawn_worker(sys, ctx, false);
    if (spawned_roles) spawned_roles->push_back(a);
    return a;
  });
}

uint16_t port_of(const std::string& host_port) {
  return uint16_t(std::stoi(host_port.substr(host_port.rfind(':') + 1)));
}

struct Node {
  std::unique_ptr<runtime::Host> host;
  caf::actor agent;
  std::optional<int> exit_code;
  std::string exit_why;
};

class Schedule {
 public:
  Schedule(const SimPlan& plan, const std::string& config_text)
      : plan_(plan), sets_(sim_job_sets(plan.steps)), config_text_(config_text) {
    sets_.insert(sets_.end(), plan.extra_sets.begin(), plan.extra_sets.end());
    clock().current_time += std::chrono::hours(1);  // a time that is not zero
    start_ = clock().current_time;
    SimNetworkOptions o;
    o.seed = plan.seed;
    o.duplicate_probability = plan.duplicate_probability;
    o.reorder_probability = plan.reorder_probability;
    o.spike_probability = plan.spike_probability;
    net_ = std::make_unique<SimNetwork>(o, [this] { return clock().current_time; });
  }
  ~Schedule() { teardown(); }

  SimOutcome run(uint64_t reference_hash);

 private:
  caf::scheduler::test_coordinator& sched() {
    return dynamic_cast<caf::scheduler::test_coordinator&>(sys_.scheduler());
  }
  caf::detail::test_actor_clock& clock() { return sched().clock(); }
  std::unique_ptr<runtime::Host> host(const std::string& node_id, uint32_t pid);
  void start();
  void start_node(int64_t k);
  bool step_once(std::string* failure);
  void inject();
  void teardown();

  SimPlan plan_;
  std::vector<std::string> sets_;
  std::string config_text_;
  SimSystemConfig cfg_;
  caf::actor_system sys_{cfg_};
  std::unique_ptr<SimNetwork> net_;
  SimTime start_;
  std::unique_ptr<runtime::Host> coordinator_host_;
  caf::actor coordinator_;
  std::map<int64_t, Node> nodes_;  // by the order they were started (1…N); ids follow
  std::vector<caf::actor> roles_;
  std::optional<actors::JobResult> result_;
  int64_t committed_ = 0;
  size_t next_fault_ = 0;
  std::optional<uint64_t> fault_armed_at_;  // delivered count when its step was committed
  std::vector<std::string> events_;
  bool started_ = false;  // every node joined and placed (the coordinator's start event)
  // The site's launcher (launcher()): lost nodes to replace once a step after the loss is
  // committed, the node processes the coordinator's answers asked for, a request in flight.
  int64_t replace_wanted_ = 0, replace_after_ = 0, starts_wanted_ = 0, members_ = 0;
  bool asking_ = false;
  void launcher();
  void lost_after_start();
  void ask(const std::string& kind, int64_t nodes, const std::string& node);
  bool operator_fault(const SimFault& f);
};

std::unique_ptr<runtime::Host> Schedule::host(const std::string& node_id, uint32_t pid) {
  runtime::HostOptions ho;
  ho.node_id = node_id;
  ho.system = &sys_;
  ho.fabric_factory = [this, pid](const runtime::FabricHandlers& h)
      -> runtime::Result<std::unique_ptr<runtime::Fabric>> { return net_->make_fabric(h, pid); };
  auto made = runtime::Host::create(ho);
  if (!made.ok()) throw std::runtime_error("sim: a host: " + made.status().to_string());
  return std::move(made).value();
}

void Schedule::start() {
  coordinator_host_ = host("n0", 100);
  actors::CoordinatorOptions co;
  co.nodes = plan_.nodes;
  co.job = {config_text_, "tiny.toml", sets_, "", ""};
  co.config = model::config_from_text(config_text_, "tiny.toml", sets_);
  co.on_step = [this](const actors::StepReport&) { ++committed_; };
  co.on_event = [this](const std::string& kind, const std::string& text, const nlohmann::json&) {
    events_.push_back(kind + ": " + text);
    if (kind == "start") started_ = true;
  };
  co.on_done = [this](const actors::JobResult& r) { result_ = r; };
  coordinator_ = actors::spawn_coordinator(*coordinator_host_, co);
  sched().run();
  for (int64_t k = 1; k <= plan_.nodes; ++k) start_node(k);
  members_ = plan_.nodes;
}

void Schedule::start_node(int64_t k) {
  Node& n = nodes_[k];
  n.host = host("", uint32_t(100 + k));
  runtime::NodeAgentOptions opt;
  opt.coordinator_address = coordinator_host_->listen_address();
  opt.role_threads = 1;
  opt.listen_address = n.host->listen_address();
  opt.pid = uint32_t(100 + k);
  opt.read_fault_tolerance =
      [](const runtime::JobSpec& job) -> runtime::Result<runtime::FaultToleranceConfig> {
    return model::config_from_text(job.config_text, job.config_name, job.config_sets)
        .fault_tolerance;
  };
  Node* np = &n;
  opt.on_exit = [this, np](int code, const std::string& why) {
    np->exit_code = code, np->exit_why = why;
    if (code == runtime::exit_status_evicted && started_) lost_after_start();
    // The process ends: its fabric goes with it (its peers see the endpoint fail).
    net_->kill_at(port_of(np->host->listen_address()), clock().current_time);
  };
  n.agent = runtime::spawn_node_agent(*n.host, opt);
  sched().run();
}

// One event: the earliest of the network's deliveries and the actors' timers, then every
// actor runs until idle. False when the schedule must stop (failure set, or the job ended).
bool Schedule::step_once(std::string* failure) {
  const std::optional<SimTime> msg = net_->next_time();
  const auto& timers = clock().schedule();
  const std::optional<SimTime> timer =
      timers.empty() ? std::nullopt : std::optional<SimTime>(timers.begin()->first);
  if (!msg && !timer) {
    *failure = "the job stalled: no message in flight and no timer set";
    return false;
  }
  if (msg && (!timer || *msg <= *timer)) {
    clock().current_time = std::max(clock().current_time, *msg);
    net_->deliver_next();
  } else {
    clock().trigger_timeout();
  }
  sched().run();
  inject();
  launcher();
  return !result_;
}

// An operator's request to the coordinator, answered on an actor of its own: an accepted one
// has the launcher start the node processes it asks for, a refused one is only noted.
void Schedule::ask(const std::string& kind, int64_t nodes, const std::string& node) {
  asking_ = true;
  actors::ask_coordinator_then(sys_, coordinator_, kind, nodes, node,
                               [this, kind](const actors::ControlAnswer& a) {
                                 asking_ = false;
                                 if (!a.error.empty()) {
                                   events_.push_back(kind + " refused: " + a.error);
                                   if (kind == "replace") replace_after_ = committed_;
                                   return;
                                 }
                                 if (kind == "replace") --replace_wanted_;
                                 if (kind == "drain") --members_;
                                 starts_wanted_ += a.start_nodes;
                               });
  sched().run();
}

// A node lost (killed, or evicted) once the job started: one member fewer, and under
// replace_lost one to replace once a later step is committed.
void Schedule::lost_after_start() {
  --members_;
  if (plan_.replace_lost) ++replace_wanted_, replace_after_ = committed_;
}

// What a site's launcher does: starts the node processes asked for (new ids), and under
// replace_lost asks to replace each node lost after the start once the survivors committed a
// step (troupe launch does the same).
void Schedule::launcher() {
  for (; starts_wanted_ > 0; --starts_wanted_, ++members_) start_node(int64_t(nodes_.size()) + 1);
  if (replace_wanted_ > 0 && !asking_ && committed_ > replace_after_) ask("replace", 0, "");
}

// scale_up and drain: an operator's, on a running job (they wait for the start); false for
// the other kinds.
bool Schedule::operator_fault(const SimFault& f) {
  const bool up = f.kind == SimFault::Kind::scale_up;
  if (!up && f.kind != SimFault::Kind::drain) return false;
  if (!started_ || asking_) {
    --next_fault_;
    return true;
  }
  ask(up ? "scale" : "drain", up ? members_ + 1 : 0, up ? "" : "n" + std::to_string(f.node));
  return true;
}

// The plan's next fault, once its step is committed and its count of messages delivered.
void Schedule::inject() {
  if (next_fault_ >= plan_.faults.size()) return;
  const SimFault& f = plan_.faults[next_fault_];
  if (committed_ < f.after_step) return;
  if (!fault_armed_at_) fault_armed_at_ = net_->counters().delivered;
  if (net_->counters().delivered < *fault_armed_at_ + uint64_t(f.after_messages)) return;
  ++next_fault_, fault_armed_at_.reset();
  if (operator_fault(f)) return;
  if (f.kind == SimFault::Kind::lose) {
    net_->lose({f.types.begin(), f.types.end()}, f.lose_count);
    return;
  }
  // Faults name node ids (n1… in the order the nodes joined), as the coordinator does.
  const std::string node = "n" + std::to_string(f.node);
  const uint16_t port = net_->port_of_node(node);
  // Not joined yet, or a partition that evicts before every node joined: the fault waits for
  // the job's start.
  const bool kill = f.kind == SimFault::Kind::kill;
  if (!started_ && (port == 0 || (!kill && f.loses_the_node()))) {
    --next_fault_;
    return;
  }
  if (port == 0) return;  // already gone
  if (kill) {
    // Its actors go on in this process but nothing reaches them or leaves them: a crashed
    // process, as its peers see it. They are ended with the rest at teardown.
    net_->kill_at(port, clock().current_time);
    if (started_) lost_after_start();
    // Before the start the coordinator only drops a lost node and waits for another to take
    // its place (README, "recovery"): the site's launcher starts one, a new process that
    // joins under a new id. Without it the job ends at the start timeout (seeds 2001500,
    // 2004158 and 2005255 did, when the simulation had no launcher).
    if (!started_) start_node(int64_t(nodes_.size()) + 1);
    return;
  }
  net_->partition({node}, clock().current_time,
                  clock().current_time + std::chrono::milliseconds(f.for_ms));
}

void Schedule::teardown() {
  for (auto& a : roles_) caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
  for (auto& [k, n] : nodes_)
    if (n.agent) caf::anon_send_exit(n.agent, caf::exit_reason::user_shutdown);
  if (coordinator_) caf::anon_send_exit(coordinator_, caf::exit_reason::user_shutdown);
  sched().run();
  nodes_.clear();
  coordinator_host_.reset();
  sched().run();
  while (clock().trigger_timeouts() > 0) sched().run();
}

SimOutcome Schedule::run(uint64_t reference_hash) {
  SimOutcome out;
  spawned_roles = &roles_;
  std::string failure;
  start();
  int64_t events = 0;
  while (failure.empty() && step_once(&failure)) {
    if (++events > sim_events_max)
      failure = fmt::format("the job did not end within {} events", sim_events_max);
    else if (clock().current_time - start_ > sim_time_max)
      failure = fmt::format("the job did not end within {} simulated s", sim_time_max.count());
  }
  spawned_roles = nullptr;
  out.simulated_s = std::chrono::duration<double>(clock().current_time - start_).count();
  const SimCounters& c = net_->counters();
  out.steps_done = committed_;
  out.delivered = c.delivered;
  out.dropped = c.dropped_dead + c.dropped_partition + c.dropped_stale_epoch + c.lost;
  out.lost = c.lost;
  out.held = c.held_partition;
  if (result_) {
    out.recoveries = result_->recoveries;
    out.weights_hash = result_->weights_hash;
    if (failure.empty() && !result_->ok) failure = "the job stopped: " + result_->error;
    if (failure.empty() && result_->weights_hash != reference_hash)
      failure = fmt::format("final weights {:016x}, the undisturbed run's {:016x}",
                            result_->weights_hash, reference_hash);
  }
  for (const auto& [k, n] : nodes_) out.exit_codes.push_back(n.exit_code.value_or(-1));
  out.fingerprint = net_->fingerprint() ^ (out.weights_hash * 0x9e3779b97f4a7c15ull);
  out.ok = failure.empty();
  out.failure = failure;
  return out;
}

}  // namespace

const std::vector<std::string>& sim_job_sets(int64_t steps) {
  static std::map<int64_t, std::vector<std::string>> cache;
  auto& sets = cache[steps];
  if (sets.empty())
    sets = {
        "model.n_layers=2",    "model.d_model=32",         "model.seq_len=16",
        "train.batch_size=4",  "train.micro_batch_rows=2", "train.eval_every=0",
        "train.threads=1",     "model.dense_inter=64",     "model.moe_inter=16",
        "data.val_rows_max=4", "checkpoint.every_steps=0", "train.steps=" + std::to_string(steps)};
  return sets;
}

uint64_t sim_reference_hash(const std::string& config_text, int64_t steps) {
  const model::JobConfig c = model::config_from_text(config_text, "tiny.toml", sim_job_sets(steps));
  model::Trainer t(c);
  for (int64_t s = 0; s < c.train.steps; ++s) t.train_step(s);
  return t.weights_hash();
}

std::string SimPlan::describe() const {
  std::string out =
      fmt::format("{} nodes, {} steps, duplicate {:.2f}, reorder {:.2f}, spikes {:.2f}", nodes,
                  steps, duplicate_probability, reorder_probability, spike_probability);
  if (replace_lost) out += ", replace_lost";
  for (const SimFault& f : faults) {
    const std::string when =
        fmt::format("after step {} + {} messages", f.after_step, f.after_messages);
    switch (f.kind) {
      case SimFault::Kind::kill:
        out += fmt::format("; kill n{} {}", f.node, when);
        break;
      case SimFault::Kind::partition:
        out += fmt::format("; partition n{} for {} ms {}", f.node, f.for_ms, when);
        break;
      case SimFault::Kind::scale_up:
        out += fmt::format("; scale up by one {}", when);
        break;
      case SimFault::Kind::drain:
        out += fmt::format("; drain n{} {}", f.node, when);
        break;
      case SimFault::Kind::lose: {
        std::string types;
        for (uint32_t t : f.types) {
          if (!types.empty()) types += ',';
          types += std::to_string(t);
        }
        out += fmt::format("; lose {} message(s) of types {} {}", f.lose_count, types, when);
        break;
      }
    }
  }
  return out;
}

namespace {

// A third of the seeds: replace_lost, a scale-up or a drain, from draws of their own (the
// draws of draw_plan, and so the other seeds' plans, stay as they were).
void add_membership(SimPlan& p, int64_t kills) {
  std::mt19937_64 rng(p.seed ^ 0x6d656d62657273ull);
  auto pick = [&](int64_t lo, int64_t hi) { return lo + int64_t(rng() % uint64_t(hi - lo + 1)); };
  if (pick(0, 2) != 0) return;
  const int64_t what = pick(0, 2);
  if (what == 0) {
    p.replace_lost = true;
    p.extra_sets.push_back("fault_tolerance.replace_lost=true");
    return;
  }
  SimFault f;
  f.kind = what == 1 ? SimFault::Kind::scale_up : SimFault::Kind::drain;
  f.node = pick(1, p.nodes);
  f.after_step = pick(1, p.steps - 2);
  f.after_messages = pick(0, 60);
  if (f.kind == SimFault::Kind::drain && p.nodes - kills < 2) return;  // one node stays
  p.faults.push_back(f);
}

}  // namespace

SimPlan draw_plan(uint64_t seed) {
  std::mt19937_64 rng(seed ^ 0x5eed5eed5eedull);
  auto pick = [&](int64_t lo, int64_t hi) { return lo + int64_t(rng() % uint64_t(hi - lo + 1)); };
  SimPlan p;
  p.seed = seed;
  p.nodes = pick(2, 4);
  p.steps = 4;
  p.duplicate_probability = pick(0, 1) ? 0.05 : 0.0;
  p.reorder_probability = pick(0, 1) ? 0.1 : 0.0;
  p.spike_probability = pick(0, 1) ? 0.05 : 0.0;
  int64_t kills = 0;
  for (int64_t i = pick(0, 2); i > 0; --i) {
    SimFault f;
    f.kind = pick(0, 2) == 0 ? SimFault::Kind::partition : SimFault::Kind::kill;
    f.node = pick(1, p.nodes);
    f.after_step = pick(0, p.steps - 1);
    f.after_messages = pick(0, 60);
    if (f.kind == SimFault::Kind::partition) f.for_ms = pick(50, 3000);
    const bool loss = f.loses_the_node();
    if (loss && kills + 1 >= p.nodes) continue;  // never every node
    kills += loss ? 1 : 0;
    p.faults.push_back(f);
  }
  // Two losses in one step lose a worker and its buddy: a second copy keeps the state.
  if (kills >= 2) p.extra_sets.push_back("fault_tolerance.buddy_copies=2");
  add_membership(p, kills);
  return p;
}

SimOutcome run_sim(const SimPlan& plan, const std::string& config_text, uint64_t reference_hash) {
  register_sim_roles();
  Schedule s(plan, config_text);
  return s.run(reference_hash);
}

}  // namespace troupe::chaos
