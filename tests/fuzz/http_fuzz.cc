// The control endpoint's request path without a socket: the HTTP/1.1 parser under the
// server's limits, the bearer-token check, and the control routes' body parsing
// (runtime::serve_request_bytes, then launch::route_control on a stand-in job). A request
// reaches the routes only with the token (or as GET /), and the routes call the job only
// with values they checked (1 <= nodes <= max_nodes, a node name of 1 to 64 bytes).
// Input: [u8 mode][rest]. mode bit 0 clear: rest is the bytes a client sends. Set: the next
// byte picks a POST route and the rest is its body, given to route_control directly (the
// routes' JSON without the HTTP framing around it).
#include <cstdint>
#include <string>
#include <string_view>

#include "launch/control.h"
#include "runtime/http_server.h"
#include "tests/fuzz/fuzz_check.h"

namespace {

constexpr const char* token = "0123456789abcdef0123456789abcdef";
constexpr int64_t max_nodes = 8;

struct StandIn : troupe::launch::ControlTarget {
  int calls = 0;
  nlohmann::json status() override { return ++calls, nlohmann::json{{"step", 3}}; }
  std::string metrics_text() override { return ++calls, "troupe_step 3\n"; }
  nlohmann::json history() override { return ++calls, nlohmann::json::object(); }
  troupe::launch::ControlReply scale(int64_t nodes) override {
    ++calls;
    FUZZ_CHECK(nodes >= 1 && nodes <= max_nodes, "scale gets a checked node count");
    return {nodes == 5 ? 400 : 200, "scaling"};
  }
  troupe::launch::ControlReply drain(const std::string& node) override {
    ++calls;
    FUZZ_CHECK(!node.empty() && node.size() <= troupe::launch::drain_node_name_bytes_max,
               "drain gets a checked node name");
    return {node == "n9" ? 400 : 200, "draining"};
  }
  troupe::launch::ControlReply pause() override { return ++calls, troupe::launch::ControlReply{}; }
  troupe::launch::ControlReply resume() override { return ++calls, troupe::launch::ControlReply{}; }
  troupe::launch::ControlReply checkpoint() override {
    return ++calls, troupe::launch::ControlReply{409, "busy"};
  }
};

void check_reply(const troupe::runtime::HttpReply& r) {
  FUZZ_CHECK(r.status >= 200 && r.status < 600, "a reply has an HTTP status");
  if (r.content_type.starts_with("application/json"))
    FUZZ_CHECK(nlohmann::json::accept(r.body), "a JSON reply is JSON");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace rt = troupe::runtime;
  if (size < 1) return 0;
  StandIn job;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] & 1) {
    static constexpr const char* posts[] = {"/scale", "/drain", "/pause", "/resume", "/checkpoint"};
    if (rest.empty()) return 0;
    rt::HttpRequest req{"POST", posts[uint8_t(rest[0]) % 5], "", std::string(rest.substr(1))};
    check_reply(troupe::launch::route_control(req, job, max_nodes));
    return 0;
  }
  rt::HttpServerOptions options;
  options.token = token;
  options.public_paths.assign(std::begin(troupe::launch::control_public_paths),
                              std::end(troupe::launch::control_public_paths));
  bool reached = false;
  std::string target, method;
  const auto reply = rt::serve_request_bytes(rest, options, [&](const rt::HttpRequest& r) {
    reached = true, target = r.target, method = r.method;
    return troupe::launch::route_control(r, job, max_nodes);
  });
  if (!reply) {
    FUZZ_CHECK(!reached && job.calls == 0, "a request not read reaches nothing");
    return 0;
  }
  check_reply(*reply);
  if (reply->status == 401) FUZZ_CHECK(!reached && job.calls == 0, "a 401 reaches nothing");
  if (reached && !(method == "GET" && target == "/"))
    FUZZ_CHECK(rest.find(token) != std::string_view::npos, "only the token opens the routes");
  return 0;
}
