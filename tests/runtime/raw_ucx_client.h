// A bare UCX client for tests: connects to a fabric's listener and sends arbitrary
// active messages (header and data bytes of our choosing), as a foreign or broken peer
// would. Blocking and single-threaded; it progresses its own worker.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <ucp/api/ucp.h>

#include <chrono>
#include <string>

namespace troupe::runtime {

class RawUcxClient {
 public:
  RawUcxClient(const std::string& host, uint16_t port) {
    ucp_config_t* config = nullptr;
    if (!check(ucp_config_read(nullptr, nullptr, &config), "ucp_config_read")) return;
    // The fabric's settings (runtime/ucx_fabric.h), so the endpoints can meet.
    if (std::getenv("UCX_TLS") == nullptr) ucp_config_modify(config, "TLS", "shm,tcp");
    if (std::getenv("UCX_NET_DEVICES") == nullptr) ucp_config_modify(config, "NET_DEVICES", "lo");
    ucp_config_modify(config, "MM_ERROR_HANDLING", "y");
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_AM;
    const ucs_status_t s = ucp_init(&params, config, &context_);
    ucp_config_release(config);
    if (!check(s, "ucp_init")) return;
    ucp_worker_params_t wp{};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    if (!check(ucp_worker_create(context_, &wp, &worker_), "ucp_worker_create")) return;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                    UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    ep.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
    ep.sockaddr.addr = reinterpret_cast<const sockaddr*>(&addr);
    ep.sockaddr.addrlen = sizeof(addr);
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
    if (worker_ != nullptr) ucp_worker_destroy(worker_);
    if (context_ != nullptr) ucp_cleanup(context_);
  }

  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }

  // Sends one active message with the REPLY flag (as UcxFabric does) and waits for it.
  bool send(unsigned am_id, const std::string& header, const std::string& data) {
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_AM_SEND_FLAG_REPLY;
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
  bool check(ucs_status_t s, const char* what) {
    if (s == UCS_OK) return true;
    error_ = std::string(what) + ": " + ucs_status_string(s);
    return false;
  }

  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_ep_h ep_ = nullptr;
  bool ok_ = false;
  std::string error_;
};

}  // namespace troupe::runtime
