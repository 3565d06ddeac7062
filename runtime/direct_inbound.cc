#include "runtime/direct_inbound.h"

#include <caf/send.hpp>

namespace troupe::runtime {

bool DirectInbound::deliver(ActorMessage& m) {
  if (pending_.load(std::memory_order_acquire) != 0) return false;
  caf::actor to;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto bound = node_of_peer_.find(m.peer);
    if (bound == node_of_peer_.end() || node_of(m.from) != bound->second) return false;
    const size_t slash = m.to.find('/');
    const std::string_view name = slash == std::string::npos
                                      ? std::string_view(m.to)
                                      : std::string_view(m.to).substr(slash + 1);
    auto local = locals_.find(name);
    if (local == locals_.end()) return false;
    to = local->second;
  }
  delivered_.fetch_add(1, std::memory_order_relaxed);
  caf::anon_send(to, std::move(m));
  return true;
}

void DirectInbound::bind(PeerId peer, const std::string& node) {
  std::lock_guard<std::mutex> lock(mutex_);
  node_of_peer_[peer] = node;
}

void DirectInbound::unbind(PeerId peer) {
  std::lock_guard<std::mutex> lock(mutex_);
  node_of_peer_.erase(peer);
}

void DirectInbound::register_name(const std::string& name, const caf::actor& actor) {
  std::lock_guard<std::mutex> lock(mutex_);
  locals_[name] = actor;
}

}  // namespace troupe::runtime
