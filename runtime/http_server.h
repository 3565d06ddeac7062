// A small HTTP/1.1 server (Boost.Beast over Asio) for a process's control endpoint: one
// thread runs its own io_context; every connection is asynchronous, so a slow or silent
// client never blocks another. The bearer token is checked here, before any handler runs:
// a request without `Authorization: Bearer <token>`, or with a wrong one, gets 401 and never
// reaches the handler. Generic: it knows nothing of what it serves.
//
// What a client cannot do: hold more than connections_max connections (past it a new one is
// closed at once), send a header over header_bytes_max or a body over body_limit_bytes (413
// or 431, then closed), take longer than read_timeout_ms to send one request (closed), or
// send malformed HTTP (400, then closed). Each refusal is counted (counters()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/status.h"

namespace troupe::runtime {

// ---- Limits ----
// A request body: control requests are a few bytes of JSON; 64 KiB leaves room for any
// future one and bounds what a client can make us buffer per connection.
inline constexpr size_t http_body_bytes_max = 64 * 1024;
// The request line and headers: 8 KiB, what common servers (nginx, Node) allow by default.
inline constexpr size_t http_header_bytes_max = 8 * 1024;
// One request from its first byte to its last, and the idle wait for the next one on a
// kept-alive connection. A local client sends a request in well under a millisecond; 5 s
// covers a loaded machine and is how long a silent connection holds a slot.
inline constexpr int64_t http_read_timeout_ms = 5000;
// Writing one reply (a /status or /metrics body of a few KiB) to a client that reads slowly.
inline constexpr int64_t http_write_timeout_ms = 5000;
// Connections at once. The operators' clients and a scraper or two use a handful.
inline constexpr size_t http_connections_max = 64;

static_assert(http_connections_max * (http_body_bytes_max + http_header_bytes_max) <=
                  (size_t{8} << 20),
              "a full set of connections buffers at most 8 MiB");

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // the path, without the query: "/status"
  std::string query;   // after '?', without it; "" when none
  std::string body;
};

struct HttpReply {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

// Called on the server's thread, one request at a time: a handler that takes long delays
// every other connection's next reply (not their reading). An exception it throws becomes a
// 500 with the exception's text.
using HttpHandler = std::function<HttpReply(const HttpRequest&)>;

struct HttpServerOptions {
  std::string token;  // the bearer token; never empty (start() refuses an empty one)
  // GET requests to these exact paths need no token (a page that sends the token itself
  // from its script). Default: every request needs the token.
  std::vector<std::string> public_paths;
  // The limits above; tests shorten them to see them act.
  size_t body_limit_bytes = http_body_bytes_max;
  size_t header_limit_bytes = http_header_bytes_max;
  int64_t read_timeout_ms = http_read_timeout_ms;
  int64_t write_timeout_ms = http_write_timeout_ms;
  size_t connections_max = http_connections_max;
};

// What the server refused, by reason, since start. Read from any thread.
struct HttpCounters {
  uint64_t served = 0;            // replies from the handler (any status)
  uint64_t unauthorized = 0;      // 401: no token or a wrong one
  uint64_t malformed = 0;         // 400: not HTTP/1.x the parser accepts
  uint64_t too_large = 0;         // 413/431: body or header over its limit
  uint64_t timed_out = 0;         // closed: a request not read within read_timeout_ms
  uint64_t over_connections = 0;  // closed at accept: connections_max already open
};

class HttpServer {
 public:
  explicit HttpServer(HttpServerOptions options);
  ~HttpServer();  // stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Listens on host (an IPv4 or IPv6 address, e.g. "127.0.0.1") and port (0: a free one,
  // see port()), then serves on a thread of its own until stop(). Errors: invalid_argument
  // for an empty token, a host that is not an IP address or a second start(); io_error when
  // the address cannot be bound (its words: "Address already in use").
  Status start(const std::string& host, uint16_t port, HttpHandler handler);
  // The port listened on; 0 before start().
  uint16_t port() const;
  // Stops accepting, closes every connection and joins the thread. Idempotent. A handler
  // running when stop() is called finishes first. Never from a handler (it would join its
  // own thread: the process aborts saying so).
  void stop();
  HttpCounters counters() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The request path of the server without a socket (tests, tests/fuzz/http_fuzz.cc): `bytes`
// read as one request under options' limits, refused or checked for the token exactly as
// the server does, then given to `handler`. Returns the reply the server would send, or
// nullopt where it would close the connection without one (the bytes end inside a request,
// or hold none). Bytes after the first request are ignored.
std::optional<HttpReply> serve_request_bytes(std::string_view bytes,
                                             const HttpServerOptions& options,
                                             const HttpHandler& handler);

// Whether `authorization` (the header's value) is "Bearer <token>", compared in constant time
// (for a given length) so a wrong token's timing tells nothing about the right one.
bool bearer_token_ok(const std::string& authorization, const std::string& token);

}  // namespace troupe::runtime
