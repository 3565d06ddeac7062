// Conversations with the roles on CAF's deterministic test coordinator (virtual clock, one
// thread, no sleeps). A switchboard actor stands in for the router: it records every
// ActorMessage the actors send, stamps the coordinator's epoch on what the coordinator
// sends (as the real router does), and delivers to the actors registered with it — as many
// copies as the test's `copies` rule says (0: lost, 2: duplicated), and to nobody on a node
// the test declared dead. Tests read `sent` to check who said what to whom.
#pragma once

#include <gtest/gtest.h>

#include <caf/all.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "actors/coordinator.h"
#include "actors/protocol.h"
#include "actors/roles.h"
#include "config/config_parse.h"
#include "runtime/control.pb.h"
#include "runtime/router.h"

namespace troupe::actors::testing {

using runtime::ActorMessage;

struct Net {
  std::vector<ActorMessage> sent;            // every message handed to the router, in order
  std::map<std::string, caf::actor> actors;  // by local name: "coordinator.0", "worker.1"
  uint64_t epoch = 0;                        // the coordinator's, stamped on what it sends
  std::set<std::string> dead;                // nodes whose messages go nowhere
  std::vector<std::pair<std::string, uint64_t>> evicted;  // (node, epoch) the router was told
  std::function<int(const ActorMessage&)> copies = [](const ActorMessage&) { return 1; };
  // Called for each delivered message after it went out (replays, kills at a given point).
  std::function<void(const ActorMessage&)> after;

  std::vector<ActorMessage> of_type(uint32_t type) const {
    std::vector<ActorMessage> out;
    for (const auto& m : sent)
      if (m.type == type) out.push_back(m);
    return out;
  }
};

// Asks a switchboard whether an actor registered under a name (true/false).
using known_atom = caf::atom_constant<caf::atom("known")>;

inline caf::behavior switchboard(caf::event_based_actor* self, std::shared_ptr<Net> net) {
  return {
      [=](ActorMessage& m) {
        if (m.epoch == 0) m.epoch = net->epoch;
        net->sent.push_back(m);
        if (net->dead.count(std::string(runtime::node_of(m.from))) ||
            net->dead.count(std::string(runtime::node_of(m.to))))
          return;
        const auto it = net->actors.find(m.to.substr(m.to.find('/') + 1));
        if (it == net->actors.end()) return;
        for (int i = net->copies(m); i > 0; --i) self->send(it->second, m);
        if (net->after) net->after(m);
      },
      [=](runtime::register_atom, const std::string& name, const caf::actor& a) {
        net->actors[name] = a;
      },
      [=](runtime::epoch_atom, uint64_t e) { net->epoch = e; },
      [=](runtime::watch_atom, const caf::actor&) {},
      [=](runtime::bind_atom, const std::string&, runtime::PeerId) {},
      [=](runtime::address_atom, const std::string&, const std::string&) {},
      [=](runtime::forget_atom, const std::string&) {},
      [=](runtime::evict_atom, const std::string& node, uint64_t epoch) {
        net->evicted.push_back({node, epoch});
      },
      [=](runtime::refusals_atom, const caf::actor&) {},
      [=](known_atom, const std::string& name) { return net->actors.count(name) > 0; },
  };
}

// On a threaded scheduler: waits until every name is registered with the switchboard
// (roles register as they start, and what is routed to a name before that is lost); false
// after `timeout`.
inline bool wait_registered(caf::actor_system& sys, const caf::actor& switchboard,
                            const std::vector<std::string>& names,
                            std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
  caf::scoped_actor self{sys};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (const std::string& name : names) {
    for (bool known = false; !known;) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      self->request(switchboard, caf::infinite, known_atom::value, name)
          .receive([&](bool k) { known = k; }, [&](caf::error&) {});
      if (!known) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  return true;
}

// A payload's floats (a failed expectation when it is not whole floats).
inline std::vector<float> floats_of(const runtime::Payload& p) {
  std::vector<float> v;
  EXPECT_TRUE(read_payload(p, &v));
  return v;
}

inline std::string repo_file(const std::string& rel) {
  namespace fs = std::filesystem;
  fs::path root = fs::current_path();
  if (const char* dir = std::getenv("TROUPE_SOURCE_DIR")) root = dir;
  for (fs::path p = root; !p.empty(); p = p.parent_path()) {
    if (fs::exists(p / rel)) {
      std::ifstream f(p / rel);
      std::stringstream ss;
      ss << f.rdbuf();
      return ss.str();
    }
    if (p == p.parent_path()) break;
  }
  return "";
}

struct TestSystemConfig : caf::actor_system_config {
  TestSystemConfig() {
    set("scheduler.policy", caf::atom("testing"));
    set("logger.file-verbosity", caf::atom("quiet"));
    set("logger.console-verbosity", caf::atom("quiet"));
  }
};

// The actor system on CAF's test coordinator, and the switchboard as its router.
struct TestBed {
  TestSystemConfig cfg;
  caf::actor_system sys{cfg};
  caf::scheduler::test_coordinator& sched =
      dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());
  std::shared_ptr<Net> net = std::make_shared<Net>();
  caf::actor router = sys.spawn(switchboard, net);
};

// One job: a coordinator, the switchboard, and (for whole-job tests) real workers.
class Conversation : public ::testing::Test, protected TestBed {
 protected:
  caf::actor coordinator;
  std::vector<caf::actor> workers;
  std::string config_text = repo_file("configs/tiny.toml");
  std::vector<std::string> sets;
  model::JobConfig config;
  std::vector<std::pair<std::string, std::string>> events;
  std::vector<nlohmann::json> event_fields;  // events[i]'s typed fields
  std::vector<StepReport> reports;
  std::optional<JobResult> result;
  std::function<void(const StepReport&)> on_step;         // the test's own, after recording
  std::shared_ptr<CommitLog> commit_log;                  // null: the coordinator's own
  std::string run_dir;                                    // the job's (checkpoints); "": none
  std::function<void(const std::string&)> on_event_hook;  // the test's own, by event kind

  ~Conversation() override {
    for (const auto& w : workers) caf::anon_send_exit(w, caf::exit_reason::user_shutdown);
    if (coordinator) caf::anon_send_exit(coordinator, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(router, caf::exit_reason::user_shutdown);
    sched.run();
  }

  void run() { sched.run(); }

  void start(int64_t nodes, std::vector<std::string> job_sets) {
    sched.clock().current_time += std::chrono::hours(1);  // a time that is not zero
    sets = std::move(job_sets);
    config = model::config_from_text(config_text, "tiny.toml", sets);
    CoordinatorOptions o;
    o.nodes = nodes;
    o.job = {config_text, "tiny.toml", sets, run_dir, ""};
    o.config = config;
    o.commit_log = commit_log;
    o.on_step = [this](const StepReport& r) {
      reports.push_back(r);
      if (on_step) on_step(r);
    };
    o.on_event = [this](const std::string& k, const std::string& t, const nlohmann::json& f) {
      events.push_back({k, t});
      event_fields.push_back(f);
      if (on_event_hook) on_event_hook(k);
    };
    o.on_done = [this](const JobResult& r) {
      EXPECT_FALSE(result.has_value()) << "on_done twice";
      result = r;
    };
    coordinator = spawn_coordinator(sys, router, o);
    run();
    for (int64_t k = 1; k <= nodes; ++k) {
      control::Join j;
      j.set_address("127.0.0.1:" + std::to_string(10000 + k));
      j.set_pid(uint32_t(100 + k));
      ActorMessage m = make_message("", "coordinator.0", runtime::join_type, j);
      m.peer = runtime::PeerId(k);
      caf::anon_send(coordinator, std::move(m));
      run();
    }
  }

  // Hands m to the coordinator as the router would (epoch stamped if unset).
  void to_coordinator(ActorMessage m) {
    if (m.epoch == 0) m.epoch = net->epoch;
    m.to = "n0/coordinator.0";
    caf::anon_send(coordinator, std::move(m));
    run();
  }

  std::string worker_address(int64_t i) const {
    return "n" + std::to_string(i + 1) + "/worker." + std::to_string(i);
  }

  // Real workers on the test scheduler, placed as the coordinator's first view says.
  void spawn_workers(int64_t n, int threads = 1) {
    std::vector<std::string> peers;
    for (int64_t i = 0; i < n; ++i) peers.push_back(worker_address(i));
    for (int64_t i = 0; i < n; ++i) {
      runtime::RoleContext ctx;
      ctx.router = router;
      ctx.node_id = "n" + std::to_string(i + 1);
      ctx.address = peers[size_t(i)];
      ctx.index = i;
      ctx.peers = peers;
      ctx.coordinator = "n0/coordinator.0";
      ctx.job = {config_text, "tiny.toml", sets, run_dir, ""};
      ctx.epoch = net->epoch;
      ctx.threads = threads;
      workers.push_back(spawn_worker(sys, ctx, false));
      run();
    }
  }

  size_t count_sent(uint32_t type, const std::string& to = "") const {
    size_t n = 0;
    for (const auto& m : net->sent) n += m.type == type && (to.empty() || m.to == to) ? 1 : 0;
    return n;
  }
  size_t count_events(const std::string& kind) const {
    size_t n = 0;
    for (const auto& e : events) n += e.first == kind ? 1 : 0;
    return n;
  }
};

}  // namespace troupe::actors::testing
