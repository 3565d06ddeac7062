// UcxFabric: setup, the progress loop and the calls other threads make.
#include "runtime/ucx_fabric.h"

#include <fmt/format.h>
#include <netdb.h>
#include <poll.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <future>

#include "runtime/dead_peer_fifos.h"
#include "runtime/log.h"
#include "runtime/ucx_fabric_impl.h"

namespace troupe::runtime {

namespace {

Status ucx_error(const char* call, ucs_status_t status) {
  return {Code::io_error, fmt::format("{}: {}", call, ucs_status_string(status))};
}

// Sets UCX option `name` (without the UCX_ prefix) unless the environment already does.
// `env_name` is the variable that overrides it, when it differs from UCX_<name>.
Status set_unless_env(ucp_config_t* config, const char* name, const std::string& value,
                      const char* env_name = nullptr) {
  if (value.empty()) return {};
  const std::string env = env_name != nullptr ? env_name : fmt::format("UCX_{}", name);
  if (std::getenv(env.c_str()) != nullptr) return {};
  ucs_status_t s = ucp_config_modify(config, name, value.c_str());
  if (s != UCS_OK) {
    return {Code::io_error,
            fmt::format("ucp_config_modify({}={}): {}", name, value, ucs_status_string(s))};
  }
  return {};
}

Status read_config(const UcxOptions& o, ucp_config_t** config) {
  ucs_status_t s = ucp_config_read(nullptr, nullptr, config);
  if (s != UCS_OK) return ucx_error("ucp_config_read", s);
  Status st = set_unless_env(*config, "TLS", o.tls);
  if (st.ok()) st = set_unless_env(*config, "NET_DEVICES", o.net_devices);
  if (st.ok()) st = set_unless_env(*config, "MM_ERROR_HANDLING", o.mm_error_handling ? "y" : "n");
  // A transport option goes to ucp_config_modify without its component's prefix (UCX
  // applies it to every transport that has the field: only cma has this one).
  if (st.ok()) {
    st = set_unless_env(*config, "MEMORY_INVALIDATE", o.cma_memory_invalidate ? "y" : "n",
                        "UCX_CMA_MEMORY_INVALIDATE");
  }
  if (st.ok()) st = set_unless_env(*config, "RNDV_THRESH", o.rndv_thresh);
  if (!st.ok()) ucp_config_release(*config);
  return st;
}

}  // namespace

Status UcxFabric::Impl::init() {
  ucp_config_t* config = nullptr;
  Status st = read_config(options, &config);
  if (!st.ok()) return st;
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  ucs_status_t s = ucp_init(&params, config, &context);
  ucp_config_release(config);
  if (s != UCS_OK) return ucx_error("ucp_init", s);

  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SERIALIZED;  // only the progress thread touches it
  const std::set<int64_t> segments_before = own_sysv_segments();
  s = ucp_worker_create(context, &wp, &worker);
  if (s != UCS_OK) return ucx_error("ucp_worker_create", s);
  for (int64_t id : own_sysv_segments())
    if (!segments_before.contains(id)) own_fifo_segments.insert(id);

  ucp_worker_attr_t attr{};
  attr.field_mask = UCP_WORKER_ATTR_FIELD_MAX_AM_HEADER;
  s = ucp_worker_query(worker, &attr);
  if (s != UCS_OK) return ucx_error("ucp_worker_query", s);
  if (attr.max_am_header < am_token_bytes + frame_bytes_max) {
    return {Code::io_error,
            fmt::format("UCX max AM header {} B < {} B (a token and frame_bytes_max)",
                        attr.max_am_header, am_token_bytes + frame_bytes_max)};
  }
  s = ucp_worker_get_efd(worker, &event_fd);
  if (s != UCS_OK) return ucx_error("ucp_worker_get_efd", s);
  ucp_address_t* address = nullptr;
  size_t address_length = 0;
  s = ucp_worker_get_address(worker, &address, &address_length);
  if (s != UCS_OK) return ucx_error("ucp_worker_get_address", s);
  worker_address.assign(reinterpret_cast<const char*>(address), address_length);
  ucp_worker_release_address(worker, address);
  if (am_token_bytes + worker_address.size() > handshake_frame_bytes_max / 2) {
    return {Code::io_error,
            fmt::format("the UCX worker address takes {} B, more than a handshake frame "
                        "(handshake_frame_bytes_max {} B) leaves for it; narrow UCX_TLS",
                        worker_address.size(), handshake_frame_bytes_max)};
  }

  ucp_am_handler_param_t hp{};
  hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                  UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
  hp.id = fabric_am_id;
  hp.flags = UCP_AM_FLAG_WHOLE_MSG;
  hp.cb = [](void* arg, const void* header, size_t header_length, void* data, size_t length,
             const ucp_am_recv_param_t* param) {
    return static_cast<Impl*>(arg)->on_am(header, header_length, data, length, param);
  };
  hp.arg = this;
  s = ucp_worker_set_am_recv_handler(worker, &hp);
  if (s != UCS_OK) return ucx_error("ucp_worker_set_am_recv_handler", s);
  hp.id = fabric_batch_am_id;
  hp.cb = [](void* arg, const void* header, size_t header_length, void* data, size_t length,
             const ucp_am_recv_param_t* param) {
    return static_cast<Impl*>(arg)->on_batch_am(header, header_length, data, length, param);
  };
  s = ucp_worker_set_am_recv_handler(worker, &hp);
  if (s != UCS_OK) return ucx_error("ucp_worker_set_am_recv_handler (batches)", s);
  return {};
}

void UcxFabric::Impl::post(std::function<void()> fn) {
  if (on_progress_thread()) {
    fn();
    return;
  }
  {
    std::lock_guard<std::mutex> lock(command_mutex);
    commands.push_back({nullptr, std::move(fn)});
    commands_pending.store(true);
  }
  if (sleeping.load()) ucp_worker_signal(worker);
}

bool UcxFabric::Impl::run_commands() {
  if (!commands_pending.load(std::memory_order_relaxed)) return false;
  std::vector<Command> batch;
  {
    std::lock_guard<std::mutex> lock(command_mutex);
    batch.swap(commands);
    commands_pending.store(false);
  }
  for (Command& c : batch) {
    if (c.send != nullptr) {
      post_send(std::unique_ptr<SendOp>(c.send));
      continue;
    }
    flush_batches();  // the sends queued before a command go before it (a disconnect)
    c.fn();
  }
  flush_batches();
  return !batch.empty();
}

bool UcxFabric::Impl::start_local_sends() {
  std::vector<std::unique_ptr<SendOp>> batch;
  batch.swap(local_sends);  // a send's completion may queue more
  for (auto& op : batch) post_send(std::move(op));
  flush_batches();
  return true;
}

// Arms the worker and sleeps until a UCX event, a command or progress_sleep_ms_max.
void UcxFabric::Impl::sleep_until_event() {
  sleeping.store(true);
  ucs_status_t s = ucp_worker_arm(worker);
  if (s == UCS_OK && !commands_pending.load() && !stop.load()) {
    pollfd p{event_fd, POLLIN, 0};
    (void)poll(&p, 1, progress_sleep_ms_max);
  }
  sleeping.store(false);
}

namespace {

// The spin after a sleep of `slept`: longer if the sleep was cut short by an event
// (spinning through the gap would have been cheaper than the wake-up), else the base.
std::chrono::microseconds next_spin(const UcxOptions& o, std::chrono::microseconds spin,
                                    std::chrono::steady_clock::duration slept) {
  const std::chrono::microseconds max(std::max(o.progress_spin_us_max, o.progress_spin_us));
  if (slept >= max) return std::chrono::microseconds(o.progress_spin_us);
  return std::min(spin * 2, max);
}

}  // namespace

void UcxFabric::Impl::progress_loop() {
  using clock = std::chrono::steady_clock;
  const bool never_sleep = options.progress_spin_us < 0;
  auto spin = std::chrono::microseconds(std::max<int64_t>(options.progress_spin_us, 0));
  auto last_activity = clock::now();
  uint32_t idle_polls = 0;
  while (!stop.load(std::memory_order_relaxed)) {
    // Lent to the guest while sends have room: a guest's sends here cannot wait for it.
    lend(inflight.load(std::memory_order_relaxed) < inflight_messages_max);
    bool active = run_commands();
    active |= ucp_worker_progress(worker) != 0;
    if (lent) active |= handlers.guest->run();
    if (!ready_peers.empty()) start_ready_peers();
    if (!lost_peers.empty()) fail_lost_peers();
    if (!local_sends.empty()) active |= start_local_sends();
    if (!batched.empty()) flush_batches();
    if (!to_close.empty()) close_failed_endpoints();
    if (!rndv_waiting.empty()) start_waiting_rndv();
    if (!closing.empty()) reap_closed();
    if (!retired.empty()) free_retired_peers();
    if (fifo_sweep_until != clock::time_point{} && ++fifo_sweep_polls % progress_clock_polls == 0)
      sweep_dead_fifos();
    if (never_sleep) continue;
    if (active) {
      last_activity = clock::now();
      idle_polls = 0;
      continue;
    }
    // The clock costs as much as an empty poll: read it every progress_clock_polls polls.
    // At least progress_idle_polls_min polls: a thread preempted past its spin still looks
    // again before it sleeps.
    if (++idle_polls < progress_idle_polls_min || idle_polls % progress_clock_polls != 0 ||
        clock::now() - last_activity < spin) {
      continue;
    }
    // Completions stalled above inflight_wake_messages: a waiting sender has room anyway.
    if (window_waiters.load() > 0) wake_window_waiters();
    lend(false);
    const auto asleep = clock::now();
    sleep_until_event();
    last_activity = clock::now();
    idle_polls = 0;
    spin = next_spin(options, spin, last_activity - asleep);
  }
  lend(false);  // for good: what the guest has left goes to its own threads
  run_commands();
  start_local_sends();
  close_all();
}

void UcxFabric::Impl::lend(bool on) {
  if (!handlers.guest || on == lent) return;
  lent = on;
  if (on) {
    handlers.guest->step_in();
  } else {
    handlers.guest->step_aside();
  }
}

void UcxFabric::Impl::arm_fifo_sweep() {
  if (!options.release_dead_peer_fifos && !options.repair_dead_writer_slots) return;
  const auto now = std::chrono::steady_clock::now();
  fifo_sweep_until = now + fifo_sweep_window;
  if (next_fifo_sweep == std::chrono::steady_clock::time_point{}) next_fifo_sweep = now;
}

void UcxFabric::Impl::check_dead_writer_slots(std::chrono::steady_clock::time_point now) {
  if (!options.repair_dead_writer_slots || now < next_slot_check) return;
  next_slot_check = now + dead_writer_check_interval;
  const SlotRepair r =
      repair_dead_writer_slots(own_fifo_segments, &unready_slots, dead_writer_stuck_ms_min, now);
  if (r.repaired == 0) {
    if (!r.detail.empty()) log::debug("fabric: a stuck receive slot waits: {}", r.detail);
    return;
  }
  counters.dead_writer_slots_repaired.fetch_add(uint64_t(r.repaired));
  log::warn(
      "fabric: a peer died while writing into this process's shared-memory FIFO; marked "
      "its slot done so that receives go on, where UCX 1.13 would wait at it forever ({}). "
      "UCX warns of an active message with no handler: that is the slot",
      r.detail);
}

void UcxFabric::Impl::sweep_dead_fifos() {
  const auto now = std::chrono::steady_clock::now();
  if (now > fifo_sweep_until) {
    fifo_sweep_until = next_fifo_sweep = {};
    unready_slots.clear();
    return;
  }
  check_dead_writer_slots(now);
  if (now < next_fifo_sweep || !options.release_dead_peer_fifos) return;
  next_fifo_sweep = now + fifo_sweep_interval;
  const FifoSweep s = release_dead_peer_fifos();
  if (s.released == 0) return;
  counters.dead_fifos_released.fetch_add(uint64_t(s.released));
  log::info(
      "fabric: marked {} full FIFO(s) of exited peers read ({}), so that UCX 1.13 ends "
      "their endpoints and unmaps them",
      s.released, s.detail);
}

// Frees the close requests that completed (the loop calls it while any are open).
void UcxFabric::Impl::reap_closed() {
  std::erase_if(closing, [](void* r) {
    if (ucp_request_check_status(r) == UCS_INPROGRESS) return false;
    ucp_request_free(r);
    return true;
  });
}

// Progresses the worker until every request in `requests` completed or `deadline`, from
// the loop itself: never from inside a UCX callback.
void UcxFabric::Impl::progress_until(const std::vector<void*>& requests,
                                     std::chrono::steady_clock::time_point deadline) {
  auto open = [&] {
    for (void* r : requests)
      if (ucp_request_check_status(r) == UCS_INPROGRESS) return true;
    return false;
  };
  while (open() && std::chrono::steady_clock::now() < deadline) {
    ucp_worker_progress(worker);
    if (!ready_peers.empty()) start_ready_peers();
  }
}

// At stop, in the order UCX documents: flush what we sent to the peers that answer (a
// Shutdown must arrive), bounded by close_flush_ms_max; then close every endpoint with
// FORCE (peer error handling: UCX's own examples close such endpoints that way; it purges
// the requests still on them, so none is left for ucp_worker_destroy to trip on); then
// progress until each close request completes, bounded by close_force_ms_max.
void UcxFabric::Impl::close_endpoints(std::chrono::steady_clock::time_point flush_deadline) {
  std::vector<void*> flushes;
  for (auto& [id, peer] : peers) {
    if (peer->ep == nullptr || !peer->up || !peer->ready) continue;
    ucp_request_param_t p{};
    void* r = ucp_ep_flush_nbx(peer->ep, &p);
    if (r != nullptr && !UCS_PTR_IS_ERR(r)) flushes.push_back(r);
  }
  progress_until(flushes, flush_deadline);  // a flush still open is purged by the close
  for (auto& [id, peer] : peers) {
    if (peer->ep == nullptr) continue;
    peer_by_token.erase(peer->recv_token);
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_EP_CLOSE_FLAG_FORCE;
    void* r = ucp_ep_close_nbx(peer->ep, &p);
    peer->ep = nullptr;
    peer->up = false;
    on_endpoint_ready(peer.get(), UCS_ERR_CANCELED);  // fails the sends still waiting
    if (r != nullptr && !UCS_PTR_IS_ERR(r)) closing.push_back(r);
  }
  const auto force_deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(close_force_ms_max);
  progress_until(flushes, force_deadline);
  progress_until(closing, force_deadline);
  for (void* r : flushes) {
    if (ucp_request_check_status(r) == UCS_INPROGRESS) ++unclosed_endpoints;
    ucp_request_free(r);
  }
  reap_closed();
  unclosed_endpoints += closing.size();
}

// On the progress thread, at stop.
void UcxFabric::Impl::close_all() {
  for (auto& [peer, waiting] : rndv_waiting)
    for (auto& op : waiting) ucp_am_data_release(worker, op->data_desc);  // declines it
  rndv_waiting.clear();
  close_failed_endpoints();
  close_endpoints(std::chrono::steady_clock::now() + std::chrono::milliseconds(close_flush_ms_max));
  // Completions that the closes caused (failed sends) ran inside progress; none is left
  // queued for a worker that is about to go.
  start_local_sends();
}

// The worker may be destroyed only with nothing of ours still running on it: UCX 1.13
// asserts (ucp_ep_destroy_base: proto_reqs) on an endpoint that still holds a request.
bool UcxFabric::Impl::worker_destroyable() const {
  return unclosed_endpoints == 0 && fenced_peers == 0 && failed_rndv == 0 &&
         rndv_inflight_bytes.empty() && inflight.load() == 0;
}

void UcxFabric::Impl::release_inflight(size_t messages) {
  const size_t before = inflight.fetch_sub(messages);
  const size_t left = before - messages;
  const bool crossed = before > inflight_wake_messages && left <= inflight_wake_messages;
  if ((left == 0 || crossed) && window_waiters.load() > 0) {
    wake_window_waiters();
  }
}

void UcxFabric::Impl::wake_window_waiters() {
  { std::lock_guard<std::mutex> lock(window_mutex); }
  window_cv.notify_all();
}

// ---- UcxFabric ----

UcxFabric::UcxFabric(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<UcxFabric>> UcxFabric::create(const UcxOptions& options,
                                                     FabricHandlers handlers) {
  auto impl = std::make_unique<Impl>(options);
  impl->handlers = std::move(handlers);
  Status st = impl->init();
  if (!st.ok()) {
    if (impl->worker != nullptr) ucp_worker_destroy(impl->worker);
    if (impl->context != nullptr) ucp_cleanup(impl->context);
    return st;
  }
  Impl* raw = impl.get();
  std::promise<void> started;
  auto started_future = started.get_future();
  raw->thread = std::thread([raw, &started] {
    raw->thread_id = std::this_thread::get_id();
    started.set_value();
    raw->progress_loop();
  });
  started_future.wait();
  std::unique_ptr<UcxFabric> fabric(new UcxFabric(std::move(impl)));
  BootstrapConfig bc{options.secret, options.node_id, options.listen_host};
  bc.role = options.role;
  auto bootstrap = Bootstrap::create(
      bc, [raw](const Admitted& peer) { return raw->admit(peer); },
      [raw](const std::string& ours, const std::string& why) { raw->lost(ours, why); },
      raw->handlers.on_refused);
  if (!bootstrap.ok()) return bootstrap.status();  // the destructor stops the thread
  raw->bootstrap = std::move(bootstrap).value();
  return fabric;
}

UcxFabric::~UcxFabric() {
  // No new peer while the endpoints close; the admitted ones keep their bootstrap
  // connection until the endpoints are closed, so that they see us go after what we sent.
  if (impl_->bootstrap) impl_->bootstrap->stop_handshakes();
  impl_->stop.store(true);
  ucp_worker_signal(impl_->worker);
  impl_->thread.join();
  impl_->bootstrap.reset();
  if (!impl_->worker_destroyable()) {
    // A peer that stopped answering (a hung node the job went on without), or a transfer
    // cut short on one side, leaves requests in UCX 1.13 that never complete, and it
    // asserts on them in ucp_worker_destroy. A fabric lives as long as its process: leave
    // the worker to the process's exit.
    if (impl_->unclosed_endpoints > 0) {
      log::warn(
          "fabric: {} endpoint(s) did not close within {} ms (a peer that stopped answering); "
          "the UCX worker is left to process exit",
          impl_->unclosed_endpoints, close_flush_ms_max + close_force_ms_max);
    }
    return;
  }
  ucp_worker_destroy(impl_->worker);  // endpoints, then the worker, then the context
  ucp_cleanup(impl_->context);
}

Status UcxFabric::flush(std::chrono::milliseconds timeout) {
  Impl& im = *impl_;
  if (im.on_progress_thread()) return {Code::invalid_argument, "flush on the fabric thread"};
  std::unique_lock<std::mutex> lock(im.window_mutex);
  im.window_waiters.fetch_add(1);
  const bool drained = im.window_cv.wait_for(lock, timeout, [&] { return im.inflight == 0; });
  im.window_waiters.fetch_sub(1);
  if (drained) return {};
  return {Code::timeout, fmt::format("flush: {} sends still in flight", im.inflight.load())};
}

Result<Message> UcxFabric::receive(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(impl_->queue_mutex);
  if (!impl_->queue_cv.wait_for(lock, timeout, [&] { return !impl_->queue.empty(); })) {
    return Result<Message>(Code::timeout, "receive: no message");
  }
  Message m = std::move(impl_->queue.front());
  impl_->queue.pop_front();
  return m;
}

// A new epoch is a view change: the buffers the old view's traffic left in the pool are
// freed, so that what a node holds after it (the worker trims its heap there and logs what
// is in use: the soak's reading) does not depend on which messages came before. A recovery's
// transfers take fresh buffers; the idle limit would free these 10 s later anyway.
void UcxFabric::set_epoch(uint64_t epoch) {
  const uint64_t old = impl_->epoch.exchange(epoch);
  if (epoch < old) {  // an invariant, not an input error: the epoch never goes back
    log::critical("fabric: epoch went back from {} to {}", old, epoch);
    std::abort();
  }
  if (epoch == old) return;
  const size_t freed = impl_->pool.release_all();
  log::info("fabric: epoch {}: freed {} KiB of cached receive buffers", epoch, freed >> 10);
}

size_t UcxFabric::cached_buffer_bytes() const {
  return impl_->pool.cached_bytes();
}

uint64_t UcxFabric::epoch() const {
  return impl_->epoch.load();
}

FabricCounters UcxFabric::counters() const {
  const AtomicCounters& c = impl_->counters;
  FabricCounters out;
  out.sent_messages = c.sent_messages.load();
  out.sent_bytes = c.sent_bytes.load();
  out.received_messages = c.received_messages.load();
  out.received_bytes = c.received_bytes.load();
  out.rejected_malformed = c.rejected_malformed.load();
  out.rejected_oversized = c.rejected_oversized.load();
  out.dropped_stale_epoch = c.dropped_stale_epoch.load();
  out.dropped_queue_full = c.dropped_queue_full.load();
  out.send_failed = c.send_failed.load();
  out.peers_down = c.peers_down.load();
  out.peers_held = c.peers_held.load();
  out.dead_fifos_released = c.dead_fifos_released.load();
  out.dead_writer_slots_repaired = c.dead_writer_slots_repaired.load();
  if (impl_->bootstrap) impl_->bootstrap->add_counters(&out);
  return out;
}

std::string UcxFabric::describe_peer(PeerId peer) {
  return call_on_progress<std::string>(*impl_, [this, peer]() -> std::string {
    auto it = impl_->peers.find(peer);
    if (it == impl_->peers.end() || it->second->ep == nullptr) return "(no endpoint)";
    char* text = nullptr;
    size_t size = 0;
    FILE* f = open_memstream(&text, &size);
    if (f == nullptr) return "(open_memstream failed)";
    ucp_ep_print_info(it->second->ep, f);
    std::fclose(f);
    std::string out(text, size);
    std::free(text);
    return out;
  });
}

}  // namespace troupe::runtime
