// A bare UCX client for tests: passes the bootstrap's handshake (bootstrap.h) with the
// secret it is given, makes an endpoint from the worker address it gets back, and sends
// arbitrary active messages (header and data bytes of our choosing), as a broken or
// hostile peer that knows the secret would. Blocking and single-threaded; it progresses
// its own worker.
#pragma once

#include <ucp/api/ucp.h>

#include <chrono>
#include <future>
#include <string>

#include "runtime/bootstrap.h"

namespace troupe::runtime {

class RawUcxClient {
 public:
  RawUcxClient(const std::string& host, uint16_t port, const std::string& secret,
               const std::string& claimed_node = "") {
    if (!init_worker()) return;
    auto bootstrap = Bootstrap::create(
        {secret, claimed_node, "127.0.0.1"}, [](const Admitted&) { return std::string(); },
        [](const std::string&, const std::string&) {});
    if (!bootstrap.ok()) {
      error_ = bootstrap.status().to_string();
      return;
    }
    bootstrap_ = std::move(bootstrap).value();  // its connection is our lifeline: kept open
    std::promise<Result<Admitted>> done;
    bootstrap_->connect(host + ":" + std::to_string(port), std::string(8, '\x01') + address_,
                        [&](Result<Admitted> r) { done.set_value(std::move(r)); });
    Result<Admitted> admitted = done.get_future().get();
    if (!admitted.ok()) {
      error_ = admitted.status().to_string();
      return;
    }
    const std::string& theirs = admitted.value().transport_address;
    token_ = theirs.substr(0, 8);
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    ep.address = reinterpret_cast<const ucp_address_t*>(theirs.data() + 8);
    ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    ok_ = check(ucp_ep_create(worker_, &ep, &ep_), "ucp_ep_create");
  }

  ~RawUcxClient() {
    if (ep_ != nullptr) {
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      p.flags = UCP_EP_CLOSE_FLAG_FORCE;
      void* r = ucp_ep_close_nbx(ep_, &p);
      if (r != nullptr && !UCS_PTR_IS_ERR(r)) {
        while (ucp_request_check_status(r) == UCS_INPROGRESS) ucp_worker_progress(worker_);
        ucp_request_free(r);
      }
    }
    bootstrap_.reset();
    if (worker_ != nullptr) ucp_worker_destroy(worker_);
    if (context_ != nullptr) ucp_cleanup(context_);
  }

  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }

  // Sends one active message whose header is the receiver's token and then `header`.
  bool send(unsigned am_id, const std::string& header, const std::string& data) {
    return send_untokened(am_id, token_ + header, data);
  }

  // Sends one active message with exactly `header` (no token in front) and waits for it.
  bool send_untokened(unsigned am_id, const std::string& header, const std::string& data) {
    ucp_request_param_t p{};
    void* r =
        ucp_am_send_nbx(ep_, am_id, header.data(), header.size(), data.data(), data.size(), &p);
    if (r == nullptr) return true;
    if (UCS_PTR_IS_ERR(r)) return check(UCS_PTR_STATUS(r), "ucp_am_send_nbx");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (ucp_request_check_status(r) == UCS_INPROGRESS &&
           std::chrono::steady_clock::now() < deadline) {
      ucp_worker_progress(worker_);
    }
    const ucs_status_t s = ucp_request_check_status(r);
    ucp_request_free(r);
    return check(s, "ucp_am_send_nbx completion");
  }

 private:
  bool init_worker() {
    ucp_config_t* config = nullptr;
    if (!check(ucp_config_read(nullptr, nullptr, &config), "ucp_config_read")) return false;
    // The fabric's settings (runtime/ucx_fabric.h), so the endpoints can meet.
    if (std::getenv("UCX_TLS") == nullptr) ucp_config_modify(config, "TLS", "shm,tcp");
    if (std::getenv("UCX_NET_DEVICES") == nullptr) ucp_config_modify(config, "NET_DEVICES", "lo");
    ucp_config_modify(config, "MM_ERROR_HANDLING", "y");
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_AM;
    const ucs_status_t s = ucp_init(&params, config, &context_);
    ucp_config_release(config);
    if (!check(s, "ucp_init")) return false;
    ucp_worker_params_t wp{};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    if (!check(ucp_worker_create(context_, &wp, &worker_), "ucp_worker_create")) return false;
    ucp_address_t* address = nullptr;
    size_t length = 0;
    if (!check(ucp_worker_get_address(worker_, &address, &length), "ucp_worker_get_address"))
      return false;
    address_.assign(reinterpret_cast<const char*>(address), length);
    ucp_worker_release_address(worker_, address);
    return true;
  }

  bool check(ucs_status_t s, const char* what) {
    if (s == UCS_OK) return true;
    error_ = std::string(what) + ": " + ucs_status_string(s);
    return false;
  }

  std::unique_ptr<Bootstrap> bootstrap_;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_ep_h ep_ = nullptr;
  std::string address_, token_;
  bool ok_ = false;
  std::string error_;
};

}  // namespace troupe::runtime
