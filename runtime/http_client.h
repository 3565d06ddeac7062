// The client side of http_server.h: one request over one connection (Boost.Beast), bounded
// by a timeout, for the `troupe status/scale/...` commands and the tests.
#pragma once

#include <cstdint>
#include <string>

#include "runtime/http_server.h"
#include "runtime/status.h"

namespace troupe::runtime {

// Connect, send and read the reply, all together. A control request is answered in
// milliseconds; 30 s leaves room for a coordinator that is busy with a step or a checkpoint.
inline constexpr int64_t http_call_timeout_ms = 30000;
// A reply body: /status and /metrics are a few KiB; 4 MiB bounds a wrong server's answer.
inline constexpr size_t http_reply_bytes_max = size_t{4} << 20;

struct HttpCall {
  std::string method = "GET";
  std::string target = "/";  // path and query
  std::string token;         // sent as `Authorization: Bearer <token>` unless empty
  std::string body;          // sent as application/json when not empty
  int64_t timeout_ms = http_call_timeout_ms;
};

// "http://HOST:PORT" (HOST an IPv4 address, a name, or [IPv6]) with an optional trailing "/".
struct HttpAddress {
  std::string host;  // without brackets
  uint16_t port = 0;
};
// Errors (invalid_argument) quote the address and say what is wrong with it.
Result<HttpAddress> parse_http_address(const std::string& address);

// One request. Errors: io_error naming the address when the connection is refused or breaks,
// timeout when no whole reply arrived within call.timeout_ms. Any HTTP status is a reply.
Result<HttpReply> http_call(const HttpAddress& address, const HttpCall& call);

}  // namespace troupe::runtime
