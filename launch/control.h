// The coordinator's control endpoint (issue 13): HTTP routes over runtime/http_server.h that
// read the job's state and ask it to change, and the files in the run directory that tell a
// client where it is and what token to send. It knows nothing of the coordinator: the
// coordinator implements ControlTarget.
//
//   GET  /            200 text/html: the operators' page (launch/page/index.html); no token
//   GET  /status      200 application/json: ControlTarget::status()
//   GET  /metrics     200 text/plain; version=0.0.4: ControlTarget::metrics_text()
//   GET  /history     200 application/json: ControlTarget::history()
//   POST /scale       {"nodes": N}, 1 <= N <= max_nodes
//   POST /drain       {"node": "n2"}
//   POST /pause, /resume, /checkpoint   no body (or a JSON object, ignored)
//
// Every request but GET / needs `Authorization: Bearer <token>` (401 otherwise, and the target
// is not called). The page holds no secret: its script takes the token from the URL's
// fragment (`ADDRESS/#token=HEX`, which never reaches the server) and sends it itself.
// A POST answers 200 {"ok":true,"message":...}; a body that is not what the route wants 400
// {"error":...} naming what was wrong, without calling the target; the target's own refusal
// (ControlReply::status 4xx) {"ok":false,"error":...} with its status. An unknown path is 404, a
// known one with the wrong method 405.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "runtime/http_server.h"

namespace troupe::launch {

// A node name in POST /drain: names are short ("n2"); 64 bytes bounds what reaches the target.
inline constexpr size_t drain_node_name_bytes_max = 64;
// control.token: this many random bytes (OpenSSL RAND_bytes), written as hex.
inline constexpr size_t control_token_random_bytes = 32;
// GET /history: the page polls it every second, so it stays small (~150 KiB at most): 2000
// steps draw a curve as fine as the page is wide, 500 events are more than a screen.
inline constexpr size_t control_history_steps_max = 2000;
inline constexpr size_t control_history_events_max = 500;
// ... and their JSON lines take at most this many bytes (an event's line is ~200-500 bytes).
inline constexpr size_t control_history_event_bytes_max = 160 * 1024;

// The paths served without the token (GET only): the page, which then sends it itself.
inline constexpr const char* control_public_paths[] = {"/"};

// The operators' page, launch/page/index.html as it was at build time.
std::string_view control_page_html();

struct ControlReply {
  int status = 200;  // 200 done or accepted; 400 when the request is impossible (unknown node)
  std::string message;
};

// What the endpoint controls. Called on the endpoint's thread, one request at a time;
// implementations are thread-safe, and return quickly (a long call delays other clients).
class ControlTarget {
 public:
  virtual ~ControlTarget() = default;
  virtual nlohmann::json status() = 0;     // GET /status body
  virtual std::string metrics_text() = 0;  // GET /metrics body (Prometheus text)
  // GET /history body: what the page draws its curves and timeline from, oldest first, at
  // most the last control_history_steps_max steps and control_history_events_max events (the
  // implementation drops older ones):
  //   {"steps":  [{"step": 12, "loss": 3.1, "tokens_per_s": 5400.0, "t_s": 4.2,
  //                "val_loss": 3.3 (only on steps that measured it)}, ...],
  //    "events": [{"t_s": 4.5, "kind": "scale_requested", "text": "scale 2 → 3",
  //                ...any other fields of the event (step, duration_ms, ...)}, ...]}
  // t_s: seconds since the job started, as in metrics.jsonl and events.jsonl.
  virtual nlohmann::json history() = 0;
  virtual ControlReply scale(int64_t nodes) = 0;
  virtual ControlReply drain(const std::string& node) = 0;
  virtual ControlReply pause() = 0;
  virtual ControlReply resume() = 0;
  virtual ControlReply checkpoint() = 0;
  // POST /engram/attach and /engram/detach (docs/engram.md "Table sets"): path "" attaches
  // the set of that name kept in the run directory.
  virtual ControlReply engram_attach(const std::string& name, const std::string& path) {
    (void)name, (void)path;
    return {400, "this endpoint has no Engram table sets"};
  }
  virtual ControlReply engram_detach() { return {400, "this endpoint has no Engram table sets"}; }
};

// One request through the routes above (the token already checked by the server). Pure but
// for the target's calls: tests drive it without a socket.
runtime::HttpReply route_control(const runtime::HttpRequest& request, ControlTarget& target,
                                 int64_t max_nodes);

// --control-host and --control-port, for `troupe launch`.
struct ControlOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: a free port, written to control.json
  // A restarted coordinator: the token in the run directory's control.token stays good.
  bool keep_token = false;
};
void add_control_options(CLI::App* app, ControlOptions* options);

// The files a running endpoint writes into its run directory.
inline constexpr const char* control_json_file = "control.json";    // {"address", "pid"}
inline constexpr const char* control_token_file = "control.token";  // hex token, mode 0600

class ControlEndpoint {
 public:
  ControlEndpoint() = default;
  ~ControlEndpoint();  // stop()
  ControlEndpoint(const ControlEndpoint&) = delete;
  ControlEndpoint& operator=(const ControlEndpoint&) = delete;

  // Makes a new random token, listens on host:port (0: a free port) and serves the routes on
  // a thread of its own, calling `target` (which must outlive stop()); then writes
  // run_dir/control.token (mode 0600 from its creation) and run_dir/control.json, each
  // atomically (a temporary file renamed over it). Throws UsageError when host:port cannot
  // be listened on (not an IP address, in use) or max_nodes < 1, RunFailed when a file cannot
  // be written (the endpoint is stopped again). Call once.
  // token: "" for a fresh random one.
  void start(const std::string& run_dir, const std::string& host, int port, ControlTarget& target,
             int64_t max_nodes, const std::string& token = "");
  void start(const std::string& run_dir, const ControlOptions& options, ControlTarget& target,
             int64_t max_nodes);
  // Stops serving (a request in the target finishes first) and removes the two files.
  // Idempotent. Not from inside a ControlTarget call (the process aborts saying so).
  void stop();

  uint16_t port() const;
  const std::string& address() const { return address_; }  // "http://127.0.0.1:PORT"
  const std::string& token() const { return token_; }
  runtime::HttpCounters counters() const;

 private:
  std::unique_ptr<runtime::HttpServer> server_;
  std::string run_dir_;
  std::string address_;
  std::string token_;
};

// What a client needs to reach a job: control.json's address and control.token's token.
// Throws UsageError "no control endpoint in DIR: is the job running?" when either is missing,
// and one naming the file when it cannot be read or parsed.
struct ControlAccess {
  std::string address;
  std::string token;
};
ControlAccess read_control_access(const std::string& run_dir);

}  // namespace troupe::launch
