// One process's share of the runtime: a CAF actor_system, one Fabric listening on the
// node's port, and the router between them (DESIGN §2). The coordinator's process and every
// `troupe node` process each create one Host. The fabric is a UcxFabric unless the options
// give a factory for another (a simulated or fault-injecting one).
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <functional>
#include <memory>
#include <string>

#include "runtime/fabric.h"
#include "runtime/router.h"
#include "runtime/status.h"
#include "runtime/ucx_fabric.h"

namespace troupe::runtime {

// Makes the host's fabric with the handlers that hand its events to the router. The fabric
// must run the handshake over the job secret (or stand for one that did: a simulation).
using FabricFactory =
    std::function<Result<std::unique_ptr<Fabric>>(const FabricHandlers& handlers)>;

struct HostOptions {
  std::string node_id;  // "" for a node that will be given one at join
  std::string secret;   // the job secret (load_secret)
  std::string listen_host = "127.0.0.1";
  uint16_t port = 0;  // 0: any free port
  std::string role;   // said in handshakes: "" a worker node, "engram" a memory node
  // CAF scheduler threads. The model's compute runs on its own threads (detached actors),
  // so one scheduler thread is enough; DESIGN §3: keep CAF + UCX threads within the cores.
  int caf_threads = 1;
  UcxOptions ucx;  // the default fabric's; secret, node_id, listen_host come from above
  FabricFactory fabric_factory;  // empty: a UcxFabric
  // Another host's actor system to run on instead of one of its own (caf_threads unused): a
  // simulation puts every process of a job on one deterministic scheduler (chaos/sim_job.h).
  // It must outlive the host.
  caf::actor_system* system = nullptr;
};

// The default fabric of a Host with these options: what a decorating factory wraps
// (chaos/faulty_fabric.h). Errors as UcxFabric::create's.
Result<std::unique_ptr<Fabric>> make_ucx_fabric(const HostOptions& options,
                                                FabricHandlers handlers);

class Host {
 public:
  // Errors: from the fabric (UCX missing, port taken, --listen-host not an address of
  // this machine), naming the cause.
  static Result<std::unique_ptr<Host>> create(HostOptions options);
  ~Host();  // stops the router, then the fabric, then the actor system
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;

  caf::actor_system& actor_system();
  const caf::actor& router() const;
  // The fabric's thread runs this host's actors too (lent, the default policy): an actor that
  // blocks then holds up the transport, so blocking roles should get threads of their own.
  bool fabric_thread_lent() const;
  std::string listen_address() const;  // host:port
  Fabric& fabric();

 private:
  Host() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace troupe::runtime
