#include "runtime/http_server.h"

#include <fmt/format.h>
#include <openssl/crypto.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <thread>

namespace troupe::runtime {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

// After a reply that closes the connection, the client's unread bytes (the rest of a refused
// body) are read and dropped for at most this long before the close: closing a socket with
// unread data sends a reset, and a reset can destroy the reply before the client reads it.
constexpr int64_t close_drain_ms = 500;
constexpr size_t close_drain_bytes_max = http_body_bytes_max;
// A failed accept (out of file descriptors) is retried after this pause, not in a busy loop.
constexpr int64_t accept_retry_ms = 100;
// One kind of refusal logs at most once per this, with the running count.
constexpr int64_t refusal_log_interval_ms = 1000;

enum class Refusal : uint8_t { unauthorized, malformed, too_large, timed_out, over_connections };
constexpr size_t refusal_kinds = 5;
constexpr std::array<const char*, refusal_kinds> refusal_names = {
    "401 no or wrong bearer token", "400 malformed HTTP", "413/431 request over its limit",
    "request not read in time", "over connections_max"};

std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += fmt::format("\\u{:04x}", int(c));
    } else {
      out += c;
    }
  }
  return out + "\"";
}

std::string json_error(const std::string& message) {
  return "{\"error\":" + json_string(message) + "}";
}

constexpr const char* unauthorized_message =
    "missing or wrong bearer token: send `Authorization: Bearer <token>` with the token of the "
    "run directory's control.token";

struct Refused {
  Refusal why;
  http::status status;
  std::string message;
};

// What the server answers to a read that failed with `ec` (not a timeout): a refusal, or
// nothing (a hang-up, a request cut short, a reset) when the connection is just closed.
std::optional<Refused> read_refusal(beast::error_code ec, const HttpServerOptions& o) {
  if (ec == http::error::body_limit || ec == http::error::buffer_overflow)
    return Refused{Refusal::too_large, http::status::payload_too_large,
                   fmt::format("request body over body_limit_bytes {}", o.body_limit_bytes)};
  if (ec == http::error::header_limit)
    return Refused{Refusal::too_large, http::status::request_header_fields_too_large,
                   fmt::format("request header over header_limit_bytes {}", o.header_limit_bytes)};
  if (ec == http::error::end_of_stream || ec == http::error::partial_message) return std::nullopt;
  if (ec.category() == http::make_error_code(http::error::bad_method).category())
    return Refused{Refusal::malformed, http::status::bad_request,
                   "malformed HTTP request: " + ec.message()};
  return std::nullopt;
}

HttpRequest to_request(const http::request<http::string_body>& req) {
  HttpRequest request;
  request.method = std::string(req.method_string());
  const std::string target(req.target());
  const size_t q = target.find('?');
  request.target = target.substr(0, q);
  if (q != std::string::npos) request.query = target.substr(q + 1);
  request.body = req.body();
  return request;
}

// Whether the request may reach the handler: a GET of a public path, or the right token.
bool authorized(const HttpRequest& request, const http::request<http::string_body>& req,
                const HttpServerOptions& o) {
  const bool is_public = request.method == "GET" &&
                         std::find(o.public_paths.begin(), o.public_paths.end(), request.target) !=
                             o.public_paths.end();
  return is_public || bearer_token_ok(std::string(req[http::field::authorization]), o.token);
}

HttpReply call_handler(const HttpHandler& handler, const HttpRequest& request) {
  try {
    return handler(request);
  } catch (const std::exception& e) {
    return {500, "application/json", json_error(std::string("internal error: ") + e.what())};
  }
}

}  // namespace

// What every connection needs; shared by them and the server, so it lives as long as the
// last connection (whose destruction may come after the server's thread is gone).
struct SharedState {
  HttpServerOptions options;
  HttpHandler handler;
  std::atomic<uint64_t> served{0};
  std::array<std::atomic<uint64_t>, refusal_kinds> refused{};
  std::atomic<size_t> open_connections{0};
  std::mutex log_mu;
  std::array<std::chrono::steady_clock::time_point, refusal_kinds> last_log{};

  void count_refusal(Refusal why) {
    const size_t k = size_t(why);
    const uint64_t n = ++refused[k];
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(log_mu);
    if (n > 1 && now - last_log[k] < std::chrono::milliseconds(refusal_log_interval_ms)) return;
    last_log[k] = now;
    std::fprintf(stderr, "troupe: http: refused a request: %s (%llu so far)\n", refusal_names[k],
                 static_cast<unsigned long long>(n));
  }
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, std::shared_ptr<SharedState> shared)
      : stream_(std::move(socket)), shared_(std::move(shared)) {}
  ~Session() { --shared_->open_connections; }

  void read_next() {
    const HttpServerOptions& o = shared_->options;
    parser_.emplace();
    parser_->body_limit(o.body_limit_bytes);
    parser_->header_limit(uint32_t(o.header_limit_bytes));
    stream_.expires_after(std::chrono::milliseconds(o.read_timeout_ms));
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&Session::on_read, shared_from_this()));
  }

 private:
  void on_read(beast::error_code ec, size_t) {
    if (ec == http::error::end_of_stream || ec == http::error::partial_message) return;
    if (ec == beast::error::timeout) {
      if (parser_->got_some() || requests_ == 0) shared_->count_refusal(Refusal::timed_out);
      return;
    }
    if (std::optional<Refused> r = read_refusal(ec, shared_->options)) {
      shared_->count_refusal(r->why);
      return refuse(r->status, r->message);
    }
    if (ec) return;  // reset, aborted by stop(): nothing to answer
    ++requests_;
    serve(parser_->release());
  }

  void serve(const http::request<http::string_body>& req) {
    const HttpRequest request = to_request(req);
    if (!authorized(request, req, shared_->options)) {
      shared_->count_refusal(Refusal::unauthorized);
      return refuse(http::status::unauthorized, unauthorized_message);
    }
    HttpReply reply = call_handler(shared_->handler, request);
    ++shared_->served;
    auto res = make_response(reply.status, reply.content_type, std::move(reply.body));
    res.keep_alive(req.keep_alive());
    write(std::move(res));
  }

  static http::response<http::string_body> make_response(int status, const std::string& type,
                                                         std::string body) {
    http::response<http::string_body> res{static_cast<http::status>(status), 11};
    res.set(http::field::content_type, type);
    res.set(http::field::cache_control, "no-store");
    res.body() = std::move(body);
    res.prepare_payload();
    return res;
  }

  // An error reply, then the connection is closed.
  void refuse(http::status status, const std::string& message) {
    auto res = make_response(int(status), "application/json", json_error(message));
    if (status == http::status::unauthorized) res.set(http::field::www_authenticate, "Bearer");
    res.keep_alive(false);
    write(std::move(res));
  }

  void write(http::response<http::string_body> res) {
    res_ = std::move(res);
    stream_.expires_after(std::chrono::milliseconds(shared_->options.write_timeout_ms));
    http::async_write(stream_, res_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return;
      if (self->res_.keep_alive()) return self->read_next();
      beast::error_code ignored;
      self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      self->drained_ = 0;
      self->stream_.expires_after(std::chrono::milliseconds(close_drain_ms));
      self->drain();
    });
  }

  // Reads and drops what the client still sends, until it closes, close_drain_ms pass or
  // close_drain_bytes_max arrived; the socket closes when the last handler lets go.
  void drain() {
    stream_.async_read_some(asio::buffer(scratch_),
                            [self = shared_from_this()](beast::error_code ec, size_t n) {
                              self->drained_ += n;
                              if (!ec && self->drained_ < close_drain_bytes_max) self->drain();
                            });
  }

  beast::tcp_stream stream_;
  std::shared_ptr<SharedState> shared_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::response<http::string_body> res_;
  uint64_t requests_ = 0;
  size_t drained_ = 0;
  std::array<char, 4096> scratch_{};
};

}  // namespace

struct HttpServer::Impl {
  std::shared_ptr<SharedState> shared = std::make_shared<SharedState>();
  std::unique_ptr<asio::io_context> ioc;
  std::optional<tcp::acceptor> acceptor;
  std::optional<asio::steady_timer> retry_timer;
  std::thread thread;
  std::atomic<uint16_t> port{0};
  bool started = false;

  void accept_next() {
    acceptor->async_accept([this](beast::error_code ec, tcp::socket socket) {
      if (ec == asio::error::operation_aborted) return;
      if (ec) {  // out of descriptors, most likely: try again shortly
        retry_timer->expires_after(std::chrono::milliseconds(accept_retry_ms));
        retry_timer->async_wait([this](beast::error_code e) {
          if (!e) accept_next();
        });
        return;
      }
      if (shared->open_connections.load() >= shared->options.connections_max) {
        shared->count_refusal(Refusal::over_connections);
        beast::error_code ignored;
        socket.close(ignored);
      } else {
        ++shared->open_connections;
        std::make_shared<Session>(std::move(socket), shared)->read_next();
      }
      accept_next();
    });
  }

  Status listen(const std::string& host, uint16_t want_port) {
    beast::error_code ec;
    const asio::ip::address address = asio::ip::make_address(host, ec);
    if (ec)
      return Status(
          Code::invalid_argument,
          fmt::format("http: host '{}' is not an IP address (e.g. 127.0.0.1 or ::1)", host));
    const tcp::endpoint endpoint(address, want_port);
    acceptor.emplace(*ioc);
    acceptor->open(endpoint.protocol(), ec);
    if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor->bind(endpoint, ec);
    if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (!ec) port = acceptor->local_endpoint(ec).port();
    if (ec)
      return Status(Code::io_error,
                    fmt::format("http: cannot listen on {}:{}: {}", host, want_port, ec.message()));
    return Status();
  }
};

HttpServer::HttpServer(HttpServerOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->shared->options = std::move(options);
}

HttpServer::~HttpServer() {
  stop();
}

Status HttpServer::start(const std::string& host, uint16_t port, HttpHandler handler) {
  if (impl_->started) return Status(Code::invalid_argument, "http: start() called twice");
  if (impl_->shared->options.token.empty())
    return Status(Code::invalid_argument, "http: an empty bearer token would let anyone in");
  if (!handler) return Status(Code::invalid_argument, "http: no handler given");
  impl_->shared->handler = std::move(handler);
  impl_->ioc = std::make_unique<asio::io_context>(1);
  Status listening = impl_->listen(host, port);
  if (!listening.ok()) {
    impl_->acceptor.reset();
    impl_->ioc.reset();
    return listening;
  }
  impl_->started = true;
  impl_->retry_timer.emplace(*impl_->ioc);
  impl_->accept_next();
  impl_->thread = std::thread([ioc = impl_->ioc.get()] { ioc->run(); });
  return Status();
}

uint16_t HttpServer::port() const {
  return impl_->port.load();
}

void HttpServer::stop() {
  if (!impl_->ioc) return;
  if (std::this_thread::get_id() == impl_->thread.get_id()) {  // it would join itself
    std::fprintf(stderr, "troupe: fatal: HttpServer::stop() called from its own handler\n");
    std::abort();
  }
  impl_->ioc->stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  // Destroying the io_context destroys every pending handler, and with them the connections
  // they hold: each socket closes.
  impl_->retry_timer.reset();
  impl_->acceptor.reset();
  impl_->ioc.reset();
}

HttpCounters HttpServer::counters() const {
  const SharedState& s = *impl_->shared;
  HttpCounters c;
  c.served = s.served.load();
  c.unauthorized = s.refused[size_t(Refusal::unauthorized)].load();
  c.malformed = s.refused[size_t(Refusal::malformed)].load();
  c.too_large = s.refused[size_t(Refusal::too_large)].load();
  c.timed_out = s.refused[size_t(Refusal::timed_out)].load();
  c.over_connections = s.refused[size_t(Refusal::over_connections)].load();
  return c;
}

std::optional<HttpReply> serve_request_bytes(std::string_view bytes,
                                             const HttpServerOptions& options,
                                             const HttpHandler& handler) {
  http::request_parser<http::string_body> parser;
  parser.body_limit(options.body_limit_bytes);
  parser.header_limit(uint32_t(options.header_limit_bytes));
  parser.eager(true);
  beast::error_code ec;
  size_t used = 0;
  while (!ec && !parser.is_done() && used < bytes.size())
    used += parser.put(asio::buffer(bytes.data() + used, bytes.size() - used), ec);
  if (ec == http::error::need_more) ec = {};
  if (!ec && !parser.got_some()) return std::nullopt;  // no request at all: a hang-up
  if (!ec && !parser.is_done()) parser.put_eof(ec);    // the client hung up inside one
  if (std::optional<Refused> r = read_refusal(ec, options))
    return HttpReply{int(r->status), "application/json", json_error(r->message)};
  if (ec) return std::nullopt;
  const HttpRequest request = to_request(parser.get());
  if (!authorized(request, parser.get(), options))
    return HttpReply{int(http::status::unauthorized), "application/json",
                     json_error(unauthorized_message)};
  return call_handler(handler, request);
}

bool bearer_token_ok(const std::string& authorization, const std::string& token) {
  static constexpr std::string_view scheme = "bearer ";
  if (token.empty() || authorization.size() != scheme.size() + token.size()) return false;
  bool scheme_ok = true;  // the scheme is case-insensitive (RFC 7235)
  for (size_t i = 0; i < scheme.size(); ++i)
    scheme_ok &= char(std::tolower(static_cast<unsigned char>(authorization[i]))) == scheme[i];
  return scheme_ok &&
         CRYPTO_memcmp(authorization.data() + scheme.size(), token.data(), token.size()) == 0;
}

}  // namespace troupe::runtime
