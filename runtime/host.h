// One process's share of the runtime: a CAF actor_system, one UcxFabric listening on the
// node's port, and the router between them (DESIGN §2). The coordinator's process and every
// `troupe node` process each create one Host.
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <memory>
#include <string>

#include "runtime/router.h"
#include "runtime/status.h"
#include "runtime/ucx_fabric.h"

namespace troupe::runtime {

struct HostOptions {
  std::string node_id;  // "" for a node that will be given one at join
  std::string secret;   // the job secret (load_secret)
  std::string listen_host = "127.0.0.1";
  uint16_t port = 0;  // 0: any free port
  // CAF scheduler threads. The model's compute runs on its own threads (detached actors),
  // so one scheduler thread is enough; DESIGN §3: keep CAF + UCX threads within the cores.
  int caf_threads = 1;
  UcxOptions ucx;
};

class Host {
 public:
  // Errors: io_error from the fabric (UCX missing, port taken) naming the cause.
  static Result<std::unique_ptr<Host>> create(HostOptions options);
  ~Host();  // stops the router, then the fabric, then the actor system
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;

  caf::actor_system& actor_system();
  const caf::actor& router() const;
  std::string listen_address() const;  // host:port
  Fabric& fabric();

 private:
  Host() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace troupe::runtime
