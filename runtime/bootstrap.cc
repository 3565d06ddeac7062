// The bootstrap's listener and both sides of the handshake, on one Asio thread. Each
// connection is a Session owned by its pending operations; it ends exactly once (end()),
// closing the socket and counting the outcome.
#include "runtime/bootstrap.h"

#include <fmt/format.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <cerrno>
#include <chrono>
#include <future>
#include <mutex>
#include <thread>

#include "runtime/auth.h"
#include "runtime/control.pb.h"
#include "runtime/log.h"

namespace troupe::runtime {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

// After a failed accept (out of descriptors, mostly) the listener waits this long before it
// accepts again, instead of spinning on the same error.
constexpr int64_t accept_retry_ms = 100;

enum class Outcome : uint8_t {
  admitted,
  refused,
  malformed,
  timed_out,
  closed,
  over_limit,
  count_
};
constexpr size_t outcome_count = size_t(Outcome::count_);

const char* outcome_name(Outcome o) {
  constexpr const char* names[outcome_count] = {"admitted",  "refused", "malformed",
                                                "timed out", "closed",  "over the limit"};
  return names[size_t(o)];
}

// The cause an event names (refusals.h); a refusal may say a finer one (Session::cause).
const char* cause_of(Outcome o) {
  constexpr const char* causes[outcome_count] = {"",          "wrong_secret", "malformed",
                                                 "timed_out", "hung_up",      "over_limit"};
  return causes[size_t(o)];
}

Code code_of(Outcome o) {
  return o == Outcome::timed_out ? Code::timeout : Code::peer_down;
}

// The MAC an acceptor shows over the connector's nonce: another domain than the
// connector's proof, so that one can never be replayed as the other.
std::string acceptor_mac(const std::string& secret, const std::string& nonce,
                         const std::string& node) {
  return join_mac(secret, nonce, "acceptor:" + node);
}

std::string endpoint_text(const tcp::socket& socket) {
  error_code ec;
  const tcp::endpoint e = socket.remote_endpoint(ec);
  if (ec) return "(unknown)";
  return fmt::format("{}:{}", e.address().to_string(), e.port());
}

}  // namespace

struct Session;

struct Bootstrap::Impl {
  Impl(BootstrapConfig c, AdmitFn admit, LostFn lost, RefusedFn refused)
      : config(std::move(c)),
        on_admit(std::move(admit)),
        on_lost(std::move(lost)),
        on_refused(std::move(refused)),
        work(asio::make_work_guard(io)),
        accept_retry(io) {}

  void accept_next();
  void on_accepted(tcp::socket socket);
  void count(Outcome o, const std::string& who, const std::string& why);
  // A connection made to us ended unadmitted: on_refused hears of it, unless we stop.
  void refused(ConnectionRefusal r) {
    if (on_refused && !stopped) on_refused(r);
  }
  Result<uint16_t> do_listen(uint16_t port);
  void do_connect(const std::string& host_port, std::string transport, ConnectDoneFn done);
  std::string node_id() const {
    std::lock_guard<std::mutex> lock(mutex);
    return config.node_id;
  }

  BootstrapConfig config;
  AdmitFn on_admit;
  LostFn on_lost;
  RefusedFn on_refused;
  asio::io_context io;  // first: destroyed after everything that uses it
  asio::executor_work_guard<asio::io_context::executor_type> work;
  std::unique_ptr<tcp::acceptor> acceptor;
  asio::steady_timer accept_retry;
  std::thread thread;
  mutable std::mutex mutex;    // config.node_id, listen_address
  std::string listen_address;  // host:port, told to peers in our Hello
  size_t pending = 0;          // accepted connections in their handshake (io thread)
  std::vector<std::weak_ptr<Session>> sessions;  // io thread: for stop_handshakes
  bool stopped = false;                          // io thread: stop_handshakes ran
  std::array<std::atomic<uint64_t>, outcome_count> counts{};
  std::array<std::chrono::steady_clock::time_point, outcome_count> last_log{};  // io thread
};

// One connection in its handshake, either side.
struct Session : std::enable_shared_from_this<Session> {
  Session(Bootstrap::Impl& i, tcp::socket s) : impl(i), socket(std::move(s)), deadline(i.io) {}

  // Closes the connection and counts `o`, once. A connector's failure goes to `done`; an
  // acceptor's admitted peer whose verdict was lost goes to on_lost.
  void end(Outcome o, const std::string& why) {
    if (ended) return;
    ended = true;
    error_code ignored;
    deadline.cancel();
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
    impl.count(o, who, why);
    if (accepted) {
      --impl.pending;
      if (our_address.empty())
        impl.refused({who, claimed, hello.pid(), cause.empty() ? cause_of(o) : cause, why});
      else
        impl.on_lost(our_address, why);
      return;
    }
    if (done) done(Status(code_of(o), fmt::format("{}: {}", who, why)));
  }

  // The handshake passed: counted, and the connection stays open as the peer's lifeline.
  void admitted(std::string ours) {
    ended = true;
    deadline.cancel();
    impl.count(Outcome::admitted, who, "");
    if (accepted) --impl.pending;
    watch(std::move(ours));
  }

  // Waits for the connection to close: the peer's process is gone (or it broke protocol).
  void watch(std::string ours) {
    socket.async_read_some(asio::buffer(prefix), [self = shared_from_this(),
                                                  ours = std::move(ours)](error_code ec, size_t) {
      if (ec == asio::error::operation_aborted) return;
      error_code ignored;
      self->socket.close(ignored);
      self->impl.on_lost(ours, ec ? "its connection closed: " + ec.message()
                                  : "it sent bytes after the handshake");
    });
  }

  Bootstrap::Impl& impl;
  tcp::socket socket;
  asio::steady_timer deadline;
  bool accepted = false;  // we are the acceptor
  bool ended = false;
  std::string who;  // the peer's host:port, for messages
  std::array<unsigned char, handshake_prefix_bytes> prefix{};
  std::string in, out;
  std::string nonce;                     // ours: the other side must MAC it
  std::string claimed;                   // the name the connector claims (either side)
  std::string cause;                     // acceptor: a finer cause than the outcome's
  control::Hello hello;                  // acceptor: the connector's
  std::string our_address;               // acceptor: what on_admit gave the peer
  std::string acceptor_node, transport;  // connector: who answered, our address
  ConnectDoneFn done;                    // connector
};

namespace {

using SessionPtr = std::shared_ptr<Session>;

void arm_deadline(const SessionPtr& s) {
  s->deadline.expires_after(std::chrono::milliseconds(s->impl.config.deadline_ms));
  s->deadline.async_wait([s](error_code ec) {
    if (ec || s->ended) return;
    s->end(Outcome::timed_out, fmt::format("no handshake within handshake_deadline_ms {} "
                                           "(a slow or half-open connection)",
                                           s->impl.config.deadline_ms));
  });
}

// Reads one frame and hands its body to `next`; a short read, a hang-up or an oversized
// length ends the session.
void read_frame(const SessionPtr& s, std::function<void(const std::string&)> next) {
  asio::async_read(s->socket, asio::buffer(s->prefix), [s, next](error_code ec, size_t) {
    if (s->ended) return;
    if (ec) return s->end(Outcome::closed, "hung up in the handshake: " + ec.message());
    const size_t n = size_t(s->prefix[0]) | size_t(s->prefix[1]) << 8 | size_t(s->prefix[2]) << 16 |
                     size_t(s->prefix[3]) << 24;
    if (n > handshake_frame_bytes_max)
      return s->end(Outcome::malformed,
                    fmt::format("a frame of {} bytes, over handshake_frame_bytes_max {}", n,
                                handshake_frame_bytes_max));
    s->in.resize(n);
    asio::async_read(s->socket, asio::buffer(s->in), [s, next](error_code ec2, size_t) {
      if (s->ended) return;
      if (ec2) return s->end(Outcome::closed, "hung up in the handshake: " + ec2.message());
      next(s->in);
    });
  });
}

// Writes one frame; `next(ok)` runs when it is sent or failed (then ended unless next ends).
void write_frame(const SessionPtr& s, const std::string& body, std::function<void(bool)> next) {
  const auto n = uint32_t(body.size());
  s->out.clear();
  for (int i = 0; i < 4; ++i) s->out.push_back(char((n >> (8 * i)) & 0xff));
  s->out += body;
  asio::async_write(s->socket, asio::buffer(s->out), [s, next](error_code ec, size_t) {
    if (s->ended) return;
    next(!ec);
    if (ec) s->end(Outcome::closed, "hung up in the handshake: " + ec.message());
  });
}

// ---- the acceptor's side ----

void refuse(const SessionPtr& s, const std::string& why, const char* cause) {
  s->cause = cause;
  control::Verdict v;
  v.set_admitted(false);
  v.set_reason(why);
  write_frame(s, v.SerializeAsString(), [s, why](bool) { s->end(Outcome::refused, why); });
}

void on_proof(const SessionPtr& s, const std::string& body) {
  control::Proof p;
  if (!p.ParseFromString(body)) return s->end(Outcome::malformed, "not a handshake proof");
  if (p.mac().empty())
    return s->end(Outcome::refused, "wrong job secret (it found our challenge wrong)");
  if (!join_mac_ok(s->impl.config.secret, s->nonce, s->claimed, p.mac()))
    return refuse(s, "wrong job secret", "wrong_secret");
  if (p.transport_address().empty())
    return s->end(Outcome::malformed, "a proof without a transport address");
  const Admitted peer{
      {s->claimed, s->hello.listen_address(), s->hello.pid(), true, s->hello.role()},
      p.transport_address()};
  Result<std::string> ours = s->impl.on_admit(peer);
  if (!ours.ok()) return refuse(s, "cannot admit it: " + ours.status().message(), "not_admitted");
  s->our_address = ours.value();
  control::Verdict v;
  v.set_admitted(true);
  v.set_transport_address(s->our_address);
  write_frame(s, v.SerializeAsString(), [s](bool ok) {
    if (ok) s->admitted(s->our_address);
  });
}

void on_hello(const SessionPtr& s, const std::string& body) {
  if (!s->hello.ParseFromString(body) || s->hello.nonce().size() != nonce_bytes)
    return s->end(Outcome::malformed, "not a handshake hello");
  s->claimed = s->hello.claimed_node();
  s->nonce = make_nonce();
  const std::string me = s->impl.node_id();
  control::Challenge c;
  c.set_node(me);
  c.set_nonce(s->nonce);
  c.set_mac(acceptor_mac(s->impl.config.secret, s->hello.nonce(), me));
  write_frame(s, c.SerializeAsString(), [s](bool ok) {
    if (ok) read_frame(s, [s](const std::string& b) { on_proof(s, b); });
  });
}

// ---- the connector's side ----

void on_verdict(const SessionPtr& s, const std::string& body) {
  control::Verdict v;
  if (!v.ParseFromString(body)) return s->end(Outcome::malformed, "not a handshake verdict");
  if (!v.admitted()) return s->end(Outcome::refused, "refused us: " + v.reason());
  if (v.transport_address().empty())
    return s->end(Outcome::malformed, "a verdict without a transport address");
  ConnectDoneFn done = std::move(s->done);
  s->admitted(s->transport);
  done(Admitted{{s->acceptor_node, s->who, 0, false, ""}, v.transport_address()});
}

void on_challenge(const SessionPtr& s, const std::string& body) {
  control::Challenge c;
  if (!c.ParseFromString(body))
    return s->end(Outcome::malformed, "not a handshake challenge (is it a troupe process?)");
  const std::string& secret = s->impl.config.secret;
  control::Proof p;
  if (!join_mac_ok(secret, s->nonce, "acceptor:" + c.node(), c.mac())) {
    // An empty proof tells the acceptor, which logs it where an operator looks; our MAC
    // never goes to a peer that has not proved the secret.
    return write_frame(s, p.SerializeAsString(), [s](bool) {
      s->end(Outcome::refused,
             "it did not prove the job secret (a wrong job secret, here or there)");
    });
  }
  s->acceptor_node = c.node();
  p.set_mac(join_mac(secret, c.nonce(), s->claimed));
  p.set_transport_address(s->transport);
  write_frame(s, p.SerializeAsString(), [s](bool ok) {
    if (ok) read_frame(s, [s](const std::string& b) { on_verdict(s, b); });
  });
}

void send_hello(const SessionPtr& s) {
  s->nonce = make_nonce();
  s->claimed = s->impl.node_id();
  control::Hello h;
  h.set_claimed_node(s->claimed);
  h.set_nonce(s->nonce);
  {
    std::lock_guard<std::mutex> lock(s->impl.mutex);
    h.set_listen_address(s->impl.listen_address);
  }
  h.set_pid(uint32_t(getpid()));
  h.set_role(s->impl.config.role);  // fixed at create: no lock
  write_frame(s, h.SerializeAsString(), [s](bool ok) {
    if (ok) read_frame(s, [s](const std::string& b) { on_challenge(s, b); });
  });
}

}  // namespace

// ---- Impl ----

void Bootstrap::Impl::count(Outcome o, const std::string& who, const std::string& why) {
  const size_t i = size_t(o);
  const uint64_t n = counts[i].fetch_add(1) + 1;
  if (o == Outcome::admitted) return;
  const auto now = std::chrono::steady_clock::now();
  if (n > 1 && now - last_log[i] < std::chrono::milliseconds(refusal_log_interval_ms)) return;
  last_log[i] = now;
  if (stopped) {  // this process is shutting down: an expected end, not a fault to report
    log::debug("fabric: handshake with {} ended: {}", who, why);
    return;
  }
  log::warn("fabric: handshake with {} failed: {} ({} {} so far)", who, why, n, outcome_name(o));
}

void Bootstrap::Impl::accept_next() {
  acceptor->async_accept([this](error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (ec) {
      log::warn("fabric: accept failed: {}; retrying in {} ms", ec.message(), accept_retry_ms);
      accept_retry.expires_after(std::chrono::milliseconds(accept_retry_ms));
      accept_retry.async_wait([this](error_code e) {
        if (!e) accept_next();
      });
      return;
    }
    on_accepted(std::move(socket));
    accept_next();
  });
}

void Bootstrap::Impl::on_accepted(tcp::socket socket) {
  std::erase_if(sessions, [](const std::weak_ptr<Session>& w) { return w.expired(); });
  const std::string who = endpoint_text(socket);
  if (pending >= config.pending_max) {
    error_code ignored;
    socket.close(ignored);
    const std::string why = fmt::format(
        "handshakes_pending_max {} connections are in their handshake", config.pending_max);
    count(Outcome::over_limit, who, why);
    return refused({who, "", 0, cause_of(Outcome::over_limit), why});
  }
  ++pending;
  auto s = std::make_shared<Session>(*this, std::move(socket));
  sessions.push_back(s);
  s->accepted = true;
  s->who = who;
  arm_deadline(s);
  read_frame(s, [s](const std::string& b) { on_hello(s, b); });
}

Result<uint16_t> Bootstrap::Impl::do_listen(uint16_t port) {
  const std::string& host = config.listen_host;
  if (acceptor) return Result<uint16_t>(Code::invalid_argument, "listen: already listening");
  error_code ec;
  const asio::ip::address address = asio::ip::make_address(host, ec);
  if (ec)
    return Result<uint16_t>(Code::invalid_argument,
                            fmt::format("listen: '{}' is not an IP address (give --listen-host "
                                        "an address of this machine, e.g. 127.0.0.1)",
                                        host));
  const tcp::endpoint endpoint(address, port);
  auto a = std::make_unique<tcp::acceptor>(io);
  if (!a->open(endpoint.protocol(), ec)) a->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) a->bind(endpoint, ec);
  if (ec == asio::error::address_in_use)
    return Result<uint16_t>(Code::io_error,
                            fmt::format("listen: {}:{} is in use: another process listens there "
                                        "(stop it, or choose another port)",
                                        host, port));
  if (ec.value() == EADDRNOTAVAIL)
    return Result<uint16_t>(Code::io_error,
                            fmt::format("listen: cannot bind {}:{}: {} (is --listen-host an "
                                        "address of this machine?)",
                                        host, port, ec.message()));
  if (!ec) a->listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return Result<uint16_t>(Code::io_error,
                            fmt::format("listen: cannot bind {}:{}: {}", host, port, ec.message()));
  const uint16_t bound = a->local_endpoint().port();
  {
    std::lock_guard<std::mutex> lock(mutex);
    listen_address =
        address.is_v6() ? fmt::format("[{}]:{}", host, bound) : fmt::format("{}:{}", host, bound);
  }
  acceptor = std::move(a);
  accept_next();
  return bound;
}

void Bootstrap::Impl::do_connect(const std::string& host_port, std::string transport_address,
                                 ConnectDoneFn done) {
  std::string host;
  uint16_t port = 0;
  if (!split_host_port(host_port, &host, &port))
    return done(Status(Code::invalid_argument, fmt::format("'{}' is not host:port", host_port)));
  if (stopped) return;  // shutting down: no callback any more
  std::erase_if(sessions, [](const std::weak_ptr<Session>& w) { return w.expired(); });
  auto s = std::make_shared<Session>(*this, tcp::socket(io));
  sessions.push_back(s);
  s->who = host_port;
  s->transport = std::move(transport_address);
  s->done = std::move(done);
  arm_deadline(s);
  auto resolver = std::make_shared<tcp::resolver>(io);
  resolver->async_resolve(
      host, std::to_string(port), [s, resolver](error_code ec, tcp::resolver::results_type found) {
        if (s->ended) return;
        if (ec) return s->end(Outcome::closed, "cannot resolve it: " + ec.message());
        asio::async_connect(s->socket, found, [s](error_code ec2, const tcp::endpoint&) {
          if (s->ended) return;
          if (ec2) return s->end(Outcome::closed, "cannot connect: " + ec2.message());
          send_hello(s);
        });
      });
}

// ---- Bootstrap ----

Bootstrap::Bootstrap(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<Bootstrap>> Bootstrap::create(BootstrapConfig config, AdmitFn on_admit,
                                                     LostFn on_lost, RefusedFn on_refused) {
  if (config.secret.empty())
    return Status(Code::invalid_argument, "bootstrap: no job secret (load_secret gives one)");
  auto impl = std::make_unique<Impl>(std::move(config), std::move(on_admit), std::move(on_lost),
                                     std::move(on_refused));
  Impl* raw = impl.get();
  raw->thread = std::thread([raw] { raw->io.run(); });
  return std::unique_ptr<Bootstrap>(new Bootstrap(std::move(impl)));
}

Bootstrap::~Bootstrap() {
  impl_->work.reset();
  impl_->io.stop();  // pending handlers are dropped with the io_context, never run
  impl_->thread.join();
}

Result<uint16_t> Bootstrap::listen(uint16_t port) {
  std::packaged_task<Result<uint16_t>()> task([this, port] { return impl_->do_listen(port); });
  auto result = task.get_future();
  asio::post(impl_->io, [&task] { task(); });
  return result.get();
}

void Bootstrap::connect(const std::string& host_port, std::string transport_address,
                        ConnectDoneFn done) {
  asio::post(impl_->io, [im = impl_.get(), host_port, t = std::move(transport_address),
                         d = std::move(done)]() mutable {
    im->do_connect(host_port, std::move(t), std::move(d));
  });
}

void Bootstrap::stop_handshakes() {
  std::packaged_task<void()> task([im = impl_.get()] {
    im->stopped = true;
    error_code ignored;
    if (im->acceptor) im->acceptor->close(ignored);
    im->accept_retry.cancel();
    for (auto& weak : im->sessions) {
      if (auto s = weak.lock()) {
        s->done = nullptr;
        s->end(Outcome::closed, "this process is shutting down");
      }
    }
    im->sessions.clear();
  });
  auto finished = task.get_future();
  asio::post(impl_->io, [&task] { task(); });
  finished.get();
}

void Bootstrap::set_node_id(const std::string& node_id) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->config.node_id = node_id;
}

void Bootstrap::add_counters(FabricCounters* out) const {
  const auto n = [&](Outcome o) { return impl_->counts[size_t(o)].load(); };
  out->handshakes_admitted += n(Outcome::admitted);
  out->handshakes_refused += n(Outcome::refused);
  out->handshakes_malformed += n(Outcome::malformed);
  out->handshakes_timed_out += n(Outcome::timed_out);
  out->handshakes_closed += n(Outcome::closed);
  out->handshakes_over_limit += n(Outcome::over_limit);
}

bool split_host_port(const std::string& host_port, std::string* host, uint16_t* port) {
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == host_port.size()) return false;
  uint32_t p = 0;
  for (char c : host_port.substr(colon + 1)) {
    if (c < '0' || c > '9' || p > 65535) return false;
    p = p * 10 + uint32_t(c - '0');
  }
  if (p == 0 || p > 65535) return false;
  std::string h = host_port.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (h.empty()) return false;
  *host = std::move(h);
  *port = uint16_t(p);
  return true;
}

}  // namespace troupe::runtime
