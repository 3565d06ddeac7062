#include "runtime/host.h"

#include <fmt/format.h>

#include <caf/all.hpp>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>

#include "runtime/direct_inbound.h"
#include "runtime/lent_scheduler.h"
#include "runtime/log.h"

namespace troupe::runtime {

namespace {
// TROUPE_CAF_POLICY; "lent" when unset or empty.
std::string caf_policy() {
  const char* p = std::getenv("TROUPE_CAF_POLICY");
  return p != nullptr && *p != '\0' ? p : "lent";
}

// TROUPE_PROGRESS_SPIN_US / TROUPE_PROGRESS_SPIN_US_MAX over UcxOptions' progress_spin_us /
// progress_spin_us_max (`troupe launch` sets both where its processes outnumber the cores:
// launch/launch_args.h, spare_oversubscribed_cores). Unset or empty: `*us` stays.
Status spin_from_env(const char* name, int64_t* us) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return {};
  char* end = nullptr;
  errno = 0;
  const long long n = std::strtoll(v, &end, 10);
  if (errno != 0 || *end != '\0' || n < -1 || n > 1000000)
    return Status(
        Code::invalid_argument,
        fmt::format("{}={}: give microseconds, -1 (never sleep) to 1000000, or unset it", name, v));
  *us = n;
  return {};
}
}  // namespace

struct Host::Impl {
  explicit Impl(int threads) : own_system(std::in_place, configure(threads)) {
    caf_system = &*own_system;
  }
  explicit Impl(caf::actor_system* shared) : caf_system(shared) {}
  caf::actor_system_config& configure(int threads) {
    config.set("scheduler.max-threads", threads);
    // Work sharing: idle scheduler threads block on a condition variable and wake when a
    // message arrives. The default work stealing polls with sleeps once idle, which put
    // 100-250 us on every hop of a message that arrives after a quiet spell (bench_actors).
    // The default, lent, lends the fabric's thread to it too (lent_scheduler.h): one-way
    // actor latency 1.2-2.0 us instead of ~21 us (docs/architecture.md, "Threads").
    // TROUPE_CAF_POLICY=sharing is plain work sharing; `stealing`, CAF's default.
    const std::string policy = caf_policy();
    if (policy == "lent") {
      config.set("scheduler.policy", caf::atom("sharing"));
      use_lent_scheduler(config);
    } else {
      config.set("scheduler.policy", caf::atom_from_string(policy));
    }
    config.set("logger.console", caf::atom("none"));
    return config;
  }
  caf::actor_system_config config;  // before system: the system keeps a reference
  std::optional<caf::actor_system> own_system;
  bool fabric_thread_lent = false;
  caf::actor_system* caf_system = nullptr;  // own_system's, or HostOptions::system
  std::unique_ptr<Fabric> fabric;
  caf::actor router;
  std::string address;

  // How long ~Host waits for the router to stop before it closes the fabric: the router's
  // handlers take microseconds, but a loaded box may not run it at once.
  static constexpr std::chrono::milliseconds router_stop_wait_ms{10000};
  // The router calls the fabric (send, connect) from its handlers: it must be gone before the
  // fabric is. An exit only queued did not suffice: a coordinator process SIGSEGVed in
  // Bootstrap::connect on the router's thread while the main thread was already tearing the
  // fabric down (launch.faults' norecover job, 1 run in ~210). On a simulation's system nothing
  // runs unless the simulation drives it, and nothing runs beside this thread: no wait there.
  void stop_router() {
    if (!router) return;  // create() failed before it
    if (!own_system) {
      caf::anon_send_exit(router, caf::exit_reason::user_shutdown);
      return;
    }
    caf::scoped_actor self{*caf_system};
    self->monitor(router);
    self->send_exit(router, caf::exit_reason::user_shutdown);
    bool stopped = false;
    self->receive([&](const caf::down_msg&) { stopped = true; },
                  caf::after(router_stop_wait_ms) >> [] {});
    if (!stopped)
      log::warn("the router did not stop within {} ms; closing the fabric anyway",
                router_stop_wait_ms.count());
  }
};

namespace {

// The fabric's handlers run on its thread and hand events to the router, in order; a
// message the router would only pass on goes straight to its actor (`direct`, when not null;
// direct_inbound.h), and every other event is counted out to the router.
FabricHandlers router_handlers(const std::shared_ptr<caf::actor>& router_slot,
                               const std::shared_ptr<DirectInbound>& direct) {
  auto to_router = [router_slot, direct](auto&&... xs) {
    if (direct) direct->to_router();
    caf::anon_send(*router_slot, std::forward<decltype(xs)>(xs)...);
  };
  FabricHandlers handlers;
  handlers.on_receive = [to_router, direct](Message&& m) {
    ActorMessage am = to_actor_message(std::move(m));
    if (direct && direct->deliver(am)) return;
    to_router(inbound_atom::value, std::move(am));
  };
  handlers.on_peer_down = [to_router](PeerId peer, const Status& why) {
    to_router(peer_down_atom::value, peer, why.to_string());
  };
  handlers.on_peer_up = [to_router](PeerId peer, const PeerInfo& info) {
    to_router(peer_up_atom::value, peer, info);
  };
  handlers.on_refused = [to_router](const ConnectionRefusal& r) {
    to_router(refused_atom::value, r);
  };
  return handlers;
}

}  // namespace

Result<std::unique_ptr<Fabric>> make_ucx_fabric(const HostOptions& o, FabricHandlers handlers) {
  UcxOptions ucx = o.ucx;
  if (Status st = spin_from_env("TROUPE_PROGRESS_SPIN_US", &ucx.progress_spin_us); !st.ok())
    return st;
  if (Status st = spin_from_env("TROUPE_PROGRESS_SPIN_US_MAX", &ucx.progress_spin_us_max); !st.ok())
    return st;
  ucx.listen_host = o.listen_host;
  ucx.secret = o.secret;
  ucx.node_id = o.node_id;
  ucx.role = o.role;
  Result<std::unique_ptr<UcxFabric>> made = UcxFabric::create(ucx, std::move(handlers));
  if (!made.ok()) return made.status();
  return std::unique_ptr<Fabric>(std::move(made).value());
}

Result<std::unique_ptr<Host>> Host::create(HostOptions options) {
  if (const std::string policy = caf_policy();
      policy != "lent" && policy != "sharing" && policy != "stealing")
    return Status(Code::invalid_argument,
                  fmt::format("TROUPE_CAF_POLICY={}: not a scheduler policy; use lent (the "
                              "default), sharing or stealing, or unset it",
                              policy));
  std::unique_ptr<Host> host(new Host);
  host->impl_ = options.system ? std::make_unique<Impl>(options.system)
                               : std::make_unique<Impl>(std::max(1, options.caf_threads));
  Impl& impl = *host->impl_;
  // The router handle is filled in below, before listen(): nothing can arrive earlier.
  auto router_slot = std::make_shared<caf::actor>();
  // Not on a simulation's system: its event trace is the router's (direct_inbound.h).
  auto direct = options.system ? nullptr : std::make_shared<DirectInbound>();
  FabricHandlers handlers = router_handlers(router_slot, direct);
  handlers.guest = make_scheduler_guest(*impl.caf_system);  // null on a simulation's system
  impl.fabric_thread_lent = handlers.guest != nullptr;
  Result<std::unique_ptr<Fabric>> fabric = options.fabric_factory
                                               ? options.fabric_factory(handlers)
                                               : make_ucx_fabric(options, handlers);
  if (!fabric.ok()) return fabric.status();
  impl.fabric = std::move(fabric).value();
  if (!options.node_id.empty()) impl.fabric->set_node_id(options.node_id);
  RouterConfig rc;
  rc.fabric = impl.fabric.get();
  rc.node_id = options.node_id;
  rc.direct = direct;
  impl.router = spawn_router(*impl.caf_system, rc);
  *router_slot = impl.router;
  Result<uint16_t> port = impl.fabric->listen(options.port);
  if (!port.ok()) return port.status();
  impl.address = fmt::format("{}:{}", options.listen_host, port.value());
  return host;
}

Host::~Host() {
  if (!impl_) return;
  impl_->stop_router();
  impl_->fabric.reset();  // closes endpoints; no handler runs after this
  impl_->router = nullptr;
}

caf::actor_system& Host::actor_system() {
  return *impl_->caf_system;
}
const caf::actor& Host::router() const {
  return impl_->router;
}

bool Host::fabric_thread_lent() const {
  return impl_->fabric_thread_lent;
}

std::string Host::listen_address() const {
  return impl_->address;
}
Fabric& Host::fabric() {
  return *impl_->fabric;
}

}  // namespace troupe::runtime
