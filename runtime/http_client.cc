#include "runtime/http_client.h"

#include <fmt/format.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <optional>

namespace troupe::runtime {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

// One request's conversation, step by step: resolve, connect, write, read. Each step's
// handler starts the next or records the error and where it happened.
class Call {
 public:
  Call(asio::io_context& ioc, const HttpAddress& address, const HttpCall& call)
      : resolver_(ioc), stream_(ioc), address_(address) {
    const http::verb verb = http::string_to_verb(call.method);
    request_.version(11);
    if (verb == http::verb::unknown)
      request_.method_string(call.method);
    else
      request_.method(verb);
    request_.target(call.target);
    const bool v6 = address.host.find(':') != std::string::npos;
    const std::string host = v6 ? "[" + address.host + "]" : address.host;
    request_.set(http::field::host, host + ":" + std::to_string(address.port));
    request_.set(http::field::user_agent, "troupe");
    if (!call.token.empty()) request_.set(http::field::authorization, "Bearer " + call.token);
    if (!call.body.empty()) request_.set(http::field::content_type, "application/json");
    request_.body() = call.body;
    request_.prepare_payload();
    parser_.body_limit(http_reply_bytes_max);
  }

  void start() {
    resolver_.async_resolve(address_.host, std::to_string(address_.port),
                            [this](beast::error_code ec, tcp::resolver::results_type results) {
                              if (failed(ec, "resolve")) return;
                              stream_.async_connect(
                                  results, [this](beast::error_code e, const tcp::endpoint&) {
                                    if (!failed(e, "connect to")) write();
                                  });
                            });
  }

  bool done() const { return done_; }
  const beast::error_code& error() const { return error_; }
  const char* stage() const { return stage_; }
  http::response<http::string_body> response() { return parser_.release(); }

 private:
  void write() {
    http::async_write(stream_, request_, [this](beast::error_code ec, size_t) {
      if (failed(ec, "send a request to")) return;
      http::async_read(stream_, buffer_, parser_, [this](beast::error_code e, size_t) {
        if (failed(e, "read the reply of")) return;
        done_ = true;
        beast::error_code ignored;
        stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
      });
    });
  }

  bool failed(const beast::error_code& ec, const char* stage) {
    if (!ec) return false;
    error_ = ec;
    stage_ = stage;
    done_ = true;
    return true;
  }

  tcp::resolver resolver_;
  beast::tcp_stream stream_;
  HttpAddress address_;
  http::request<http::string_body> request_;
  beast::flat_buffer buffer_;
  http::response_parser<http::string_body> parser_;
  beast::error_code error_;
  const char* stage_ = "";
  bool done_ = false;
};

}  // namespace

Result<HttpAddress> parse_http_address(const std::string& address) {
  const auto bad = [&](const std::string& why) {
    return Status(Code::invalid_argument,
                  fmt::format("address '{}' {}; want http://HOST:PORT", address, why));
  };
  const std::string scheme = "http://";
  if (address.rfind(scheme, 0) != 0) return bad("does not start with http://");
  std::string rest = address.substr(scheme.size());
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  HttpAddress out;
  size_t colon = 0;
  if (!rest.empty() && rest.front() == '[') {
    const size_t close = rest.find(']');
    if (close == std::string::npos) return bad("has a '[' without its ']'");
    out.host = rest.substr(1, close - 1);
    colon = close + 1;
    if (colon >= rest.size() || rest[colon] != ':') return bad("has no :PORT");
  } else {
    colon = rest.rfind(':');
    if (colon == std::string::npos) return bad("has no :PORT");
    out.host = rest.substr(0, colon);
  }
  const std::string port = rest.substr(colon + 1);
  if (out.host.empty()) return bad("has no host");
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != port.npos ||
      std::stoul(port) == 0 || std::stoul(port) > 65535)
    return bad("has no port from 1 to 65535");
  out.port = uint16_t(std::stoul(port));
  return out;
}

Result<HttpReply> http_call(const HttpAddress& address, const HttpCall& call) {
  asio::io_context ioc(1);
  Call conversation(ioc, address, call);
  conversation.start();
  ioc.run_for(std::chrono::milliseconds(call.timeout_ms));
  const std::string where = fmt::format("http://{}:{}{}", address.host, address.port, call.target);
  if (!conversation.done())
    return Status(Code::timeout,
                  fmt::format("{} {}: no reply within {} ms", call.method, where, call.timeout_ms));
  if (conversation.error())
    return Status(Code::io_error, fmt::format("cannot {} {}: {}", conversation.stage(), where,
                                              conversation.error().message()));
  http::response<http::string_body> res = conversation.response();
  HttpReply reply;
  reply.status = int(res.result_int());
  reply.content_type = std::string(res[http::field::content_type]);
  reply.body = std::move(res.body());
  return reply;
}

}  // namespace troupe::runtime
