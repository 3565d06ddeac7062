// UcxFabric's peers: the bootstrap's handshake (bootstrap.h) admits them, then each side
// makes its endpoint from the other's UCX worker address. No UCX listener exists. Peers
// fail (UCX endpoint errors, handshakes that did not pass) and are fenced (disconnect);
// their endpoints are closed outside UCX callbacks. Everything here except the public
// calls and the bootstrap's callbacks runs on the progress thread.
#include <fmt/format.h>

#include <cstring>

#include "runtime/auth.h"
#include "runtime/log.h"
#include "runtime/ucx_fabric_impl.h"

namespace troupe::runtime {

namespace {

void set_peer_error_handling(ucp_ep_params_t* p, PeerState* peer) {
  p->field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
  p->err_mode = UCP_ERR_HANDLING_MODE_PEER;
  p->err_handler.cb = [](void* arg, ucp_ep_h, ucs_status_t status) {
    const auto* h = static_cast<const PeerHandle*>(arg);
    h->impl->on_peer_error(h->id, status);
  };
  p->err_handler.arg = const_cast<PeerHandle*>(peer->handle);
}

uint64_t read_token(const std::string& bytes) {
  if (bytes.size() >= am_token_bytes) return get_token(bytes.data());
  std::string padded = bytes;  // a short one reads as its bytes, zero-filled
  padded.resize(am_token_bytes, '\0');
  return get_token(padded.data());
}

}  // namespace

// A peer with no endpoint yet, and a fresh token that names it in its messages to us.
PeerState* UcxFabric::Impl::new_peer(const PeerInfo& info) {
  auto state = std::make_unique<PeerState>();
  state->id = next_peer++;
  handles.push_back({this, state->id});
  state->handle = &handles.back();
  state->info = info;
  do {
    state->recv_token = read_token(make_nonce());
  } while (state->recv_token == 0 || peer_by_token.count(state->recv_token) > 0);
  peer_by_token[state->recv_token] = state->id;
  {
    std::lock_guard<std::mutex> lock(peer_mutex);
    peer_up[state->id] = true;
  }
  PeerState* raw = state.get();
  peers[raw->id] = std::move(state);
  counters.peers_held.store(peers.size());
  return raw;
}

// What this fabric tells `peer` in the handshake: its token, then our worker address.
std::string UcxFabric::Impl::transport_address(const PeerState& peer) const {
  std::string out(am_token_bytes, '\0');
  put_token(out.data(), peer.recv_token);
  return out + worker_address;
}

// Makes the endpoint to the worker address the peer gave after it proved the secret.
Status UcxFabric::Impl::open_endpoint(PeerState* peer, const std::string& their_address) {
  if (their_address.size() <= am_token_bytes)
    return {Code::invalid_argument, "the peer's transport address is too short"};
  peer->send_token = read_token(their_address);
  ucp_ep_params_t p{};
  p.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
  p.address = reinterpret_cast<const ucp_address_t*>(their_address.data() + am_token_bytes);
  set_peer_error_handling(&p, peer);
  ucp_ep_h ep = nullptr;
  const ucs_status_t s = ucp_ep_create(worker, &p, &ep);
  if (s != UCS_OK) return {Code::io_error, fmt::format("ucp_ep_create: {}", ucs_status_string(s))};
  peer->ep = ep;
  flush_new_endpoint(peer);
  return {};
}

// The end of our connect(): the endpoint, or the peer is down with the handshake's reason.
void UcxFabric::Impl::on_connected(PeerId id, Result<Admitted> result) {
  auto it = peers.find(id);
  if (it == peers.end() || !it->second->up) return;  // disconnected meanwhile
  PeerState* peer = it->second.get();
  if (!result.ok()) return fail_peer(peer, result.status());
  peer->info = result.value().info;
  const Status st = open_endpoint(peer, result.value().transport_address);
  if (!st.ok()) return fail_peer(peer, st);
  announce(peer);
}

// Tells the layer above of the peer, then hands it what the peer sent before (in order).
void UcxFabric::Impl::announce(PeerState* peer) {
  if (handlers.on_peer_up) handlers.on_peer_up(peer->id, peer->info);
  peer->announced = true;
  std::deque<Message> early = std::move(peer->early);
  peer->early.clear();
  for (Message& m : early) {
    uint64_t bytes = 0;
    for (const auto& p : m.payloads) bytes += p.size();
    deliver(std::move(m), bytes);
  }
}

// A connector proved the secret: its endpoint, and our address for it (bootstrap thread).
Result<std::string> UcxFabric::Impl::admit(const Admitted& admitted) {
  return call_on_progress<Result<std::string>>(*this, [&]() -> Result<std::string> {
    if (stop.load()) return Status(Code::closed, "the fabric is shutting down");
    PeerInfo info = admitted.info;
    info.accepted = true;
    PeerState* peer = new_peer(info);
    const Status st = open_endpoint(peer, admitted.transport_address);
    if (!st.ok()) {
      forget_peer(peer);
      return st;
    }
    announce(peer);
    return transport_address(*peer);
  });
}

// An admitted peer's bootstrap connection closed (bootstrap thread): it is gone.
void UcxFabric::Impl::lost(const std::string& our_address, const std::string& why) {
  const uint64_t token = read_token(our_address);
  post([this, token, why] { lost_peers.emplace_back(token, why); });
}

// How many progress calls may drain what lost peers sent before they went (each call
// takes a batch of the shared-memory FIFO): enough for a full window of small messages.
constexpr int lost_drain_progress_max = 256;

void UcxFabric::Impl::fail_lost_peers() {
  for (int i = 0; i < lost_drain_progress_max && ucp_worker_progress(worker) != 0; ++i) {
  }
  std::vector<std::pair<uint64_t, std::string>> batch;
  batch.swap(lost_peers);
  for (const auto& [token, why] : batch) {
    auto it = peer_by_token.find(token);
    if (it == peer_by_token.end()) continue;
    fail_peer(peers.at(it->second).get(), Status(Code::peer_down, why));
  }
}

// Removes a peer that was never announced (its endpoint could not be made).
void UcxFabric::Impl::forget_peer(PeerState* peer) {
  peer_by_token.erase(peer->recv_token);
  {
    std::lock_guard<std::mutex> lock(peer_mutex);
    peer_up.erase(peer->id);
  }
  peers.erase(peer->id);
  counters.peers_held.store(peers.size());
}

// The peer is down: later sends fail, its endpoint closes after this progress round, and
// the layer above hears why (unless the fabric is stopping).
void UcxFabric::Impl::fail_peer(PeerState* peer, const Status& why) {
  if (!peer->up) return;
  peer->up = false;
  to_close.push_back(peer);
  counters.peers_down.fetch_add(1);
  arm_fifo_sweep();
  {
    std::lock_guard<std::mutex> lock(peer_mutex);
    peer_up[peer->id] = false;
  }
  if (stop.load()) return;  // shutting down: peers are being closed on purpose
  // With a handler, the layer above decides what a lost peer means (a node leaving at the
  // end of a job is no news) and reports it; without one, say it here.
  if (handlers.on_peer_down) {
    handlers.on_peer_down(peer->id, why);
  } else {
    log::warn("fabric: peer {} down: {}", peer->id, why.to_string());
  }
}

void UcxFabric::Impl::on_peer_error(PeerId id, ucs_status_t status) {
  auto it = peers.find(id);
  if (it == peers.end()) return;  // freed: closed and gone already
  fail_peer(it->second.get(), Status(Code::peer_down, ucs_status_string(status)));
}

// Failed endpoints are force-closed outside UCX callbacks, after ucp_worker_progress
// returns (UCX: a failed endpoint cannot be flushed; close it with FORCE). The close
// request is kept until it completes, so that the worker is never destroyed under it.
void UcxFabric::Impl::close_failed_endpoints() {
  std::vector<PeerState*> batch;
  batch.swap(to_close);
  for (PeerState* peer : batch) {
    peer_by_token.erase(peer->recv_token);
    flush_batch(*peer);  // down: fails what it holds
    if (peer->ep != nullptr) {
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      p.flags = UCP_EP_CLOSE_FLAG_FORCE;
      void* r = ucp_ep_close_nbx(peer->ep, &p);
      if (r != nullptr && !UCS_PTR_IS_ERR(r)) closing.push_back(r);
      peer->ep = nullptr;
    }
    on_endpoint_ready(peer, UCS_ERR_CONNECTION_RESET);  // fails the sends still waiting
    retired.push_back(peer->id);
  }
}

void UcxFabric::Impl::free_retired_peers() {
  if (!closing.empty() || !ready_peers.empty()) return;  // let those settle first
  for (PeerId id : retired) peers.erase(id);
  retired.clear();
  counters.peers_held.store(peers.size());
}

// ---- UcxFabric: the calls about peers ----

Result<uint16_t> UcxFabric::listen(uint16_t port) {
  return impl_->bootstrap->listen(port);
}

Result<PeerId> UcxFabric::connect(const std::string& host_port) {
  std::string host;
  uint16_t port = 0;
  if (!split_host_port(host_port, &host, &port)) {
    return Result<PeerId>(Code::invalid_argument,
                          fmt::format("connect: '{}' is not host:port", host_port));
  }
  Impl* im = impl_.get();
  if (im->stop.load()) return Result<PeerId>(Code::closed, "connect: the fabric is shutting down");
  auto [id, ours] = call_on_progress<std::pair<PeerId, std::string>>(*im, [im] {
    PeerState* peer = im->new_peer({});
    return std::make_pair(peer->id, im->transport_address(*peer));
  });
  im->bootstrap->connect(host_port, std::move(ours), [im, id = id](Result<Admitted> r) {
    im->post([im, id, r = std::move(r)]() mutable { im->on_connected(id, std::move(r)); });
  });
  return id;
}

void UcxFabric::set_node_id(const std::string& node_id) {
  impl_->bootstrap->set_node_id(node_id);
}

void UcxFabric::disconnect(PeerId id) {
  impl_->post([im = impl_.get(), id] {
    auto it = im->peers.find(id);
    if (it == im->peers.end() || !it->second->up) return;
    PeerState* peer = it->second.get();
    peer->up = false;
    ++im->fenced_peers;
    im->to_close.push_back(peer);
    im->arm_fifo_sweep();
    im->counters.peers_down.fetch_add(1);
    {
      std::lock_guard<std::mutex> lock(im->peer_mutex);
      im->peer_up[id] = false;
    }
    if (auto q = im->rndv_waiting.find(id); q != im->rndv_waiting.end()) {
      for (auto& op : q->second) ucp_am_data_release(im->worker, op->data_desc);  // declines it
      im->rndv_waiting.erase(q);
    }
  });
}

}  // namespace troupe::runtime
