// runtime/http_server.h over real sockets: the token checked before the handler, malformed
// HTTP and oversized requests refused and closed, keep-alive, the connection limit, and a
// silent connection that neither blocks another nor lives past read_timeout_ms.
#include "runtime/http_server.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <atomic>
#include <boost/asio.hpp>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "runtime/http_client.h"

namespace troupe::runtime {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

const std::string token = "0123456789abcdef0123456789abcdef";

// A server whose handler echoes what it got and counts its calls.
class Served {
 public:
  explicit Served(HttpServerOptions options = {}) {
    if (options.token.empty()) options.token = token;
    server_ = std::make_unique<HttpServer>(options);
    const Status s = server_->start("127.0.0.1", 0, [this](const HttpRequest& r) {
      std::lock_guard lock(mu_);
      seen_.push_back(r);
      if (r.target == "/throw") throw std::runtime_error("the handler threw");
      return HttpReply{200, "text/plain", r.method + " " + r.target + " " + r.query + " " + r.body};
    });
    EXPECT_TRUE(s.ok()) << s.to_string();
  }
  HttpServer& server() { return *server_; }
  uint16_t port() const { return server_->port(); }
  size_t calls() {
    std::lock_guard lock(mu_);
    return seen_.size();
  }
  Result<HttpReply> call(const std::string& method, const std::string& target,
                         const std::string& with_token = token, const std::string& body = "") {
    HttpCall c;
    c.method = method;
    c.target = target;
    c.token = with_token;
    c.body = body;
    c.timeout_ms = 5000;
    return http_call({"127.0.0.1", port()}, c);
  }

 private:
  std::unique_ptr<HttpServer> server_;
  std::mutex mu_;
  std::vector<HttpRequest> seen_;
};

// A plain TCP connection, for bytes no HTTP client would send.
class Raw {
 public:
  explicit Raw(uint16_t port) : socket_(ioc_) {
    socket_.connect({asio::ip::make_address("127.0.0.1"), port});
    timeval tv{5, 0};  // a read that hangs fails the test instead of the suite
    setsockopt(socket_.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  void send(const std::string& bytes) { asio::write(socket_, asio::buffer(bytes)); }
  // Everything until the server closes (or 5 s pass: then "TIMEOUT" is appended).
  std::string read_to_close() {
    std::string out;
    char buf[4096];
    for (;;) {
      const ssize_t n = ::recv(socket_.native_handle(), buf, sizeof buf, 0);
      if (n > 0) out.append(buf, size_t(n));
      if (n == 0 || (n < 0 && errno == ECONNRESET)) return out;
      if (n < 0) return out + "TIMEOUT";
    }
  }
  // Reads until `count` replies' status lines and bodies ending in `end` have arrived.
  std::string read_until(const std::string& end, int count) {
    std::string out;
    char buf[4096];
    while (true) {
      size_t found = 0;
      for (size_t at = out.find(end); at != std::string::npos; at = out.find(end, at + 1)) ++found;
      if (int(found) >= count) return out;
      const ssize_t n = ::recv(socket_.native_handle(), buf, sizeof buf, 0);
      if (n <= 0) return out + (n == 0 ? "CLOSED" : "TIMEOUT");
      out.append(buf, size_t(n));
    }
  }

 private:
  asio::io_context ioc_;
  tcp::socket socket_;
};

std::string request(const std::string& method, const std::string& target,
                    const std::string& extra_headers = "", const std::string& body = "") {
  return method + " " + target + " HTTP/1.1\r\nHost: x\r\n" + extra_headers +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

TEST(HttpServer, TokenLetsARequestThroughToTheHandler) {
  Served s;
  auto r = s.call("GET", "/hello?x=1");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r.value().status, 200);
  EXPECT_EQ(r.value().body, "GET /hello x=1 ");
  r = s.call("POST", "/scale", token, "{\"nodes\":3}");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value().body, "POST /scale  {\"nodes\":3}");
  EXPECT_EQ(s.calls(), 2u);
  EXPECT_EQ(s.server().counters().served, 2u);
}

TEST(HttpServer, MissingOrWrongTokenIs401AndNeverReachesTheHandler) {
  Served s;
  const std::string same_length_wrong = std::string(token.size() - 1, '0') + "x";
  for (const std::string& t : {std::string(), same_length_wrong, token + "0", token.substr(1)}) {
    auto r = s.call("POST", "/scale", t, "{\"nodes\":3}");
    ASSERT_TRUE(r.ok()) << r.status().to_string();
    EXPECT_EQ(r.value().status, 401) << "token '" << t << "'";
    EXPECT_NE(r.value().body.find("bearer token"), std::string::npos) << r.value().body;
  }
  Raw raw(s.port());
  raw.send(request("GET", "/status", "Authorization: Basic " + token + "\r\n"));
  const std::string reply = raw.read_to_close();
  EXPECT_EQ(reply.rfind("HTTP/1.1 401", 0), 0u) << reply;
  EXPECT_NE(reply.find("WWW-Authenticate: Bearer"), std::string::npos) << reply;
  EXPECT_EQ(s.calls(), 0u);
  EXPECT_EQ(s.server().counters().unauthorized, 5u);
}

TEST(HttpServer, BearerTokenCheck) {
  EXPECT_TRUE(bearer_token_ok("Bearer abc", "abc"));
  EXPECT_TRUE(bearer_token_ok("bearer abc", "abc"));  // the scheme is case-insensitive
  EXPECT_FALSE(bearer_token_ok("Bearer abd", "abc"));
  EXPECT_FALSE(bearer_token_ok("Bearer abc ", "abc"));
  EXPECT_FALSE(bearer_token_ok("Bearerxabc", "abc"));
  EXPECT_FALSE(bearer_token_ok("abc", "abc"));
  EXPECT_FALSE(bearer_token_ok("Bearer ", ""));  // an empty token lets no one in
}

TEST(HttpServer, PublicPathsAreOpenToGetOnly) {
  HttpServerOptions o;
  o.public_paths = {"/"};
  Served s(o);
  auto r = s.call("GET", "/", "");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value().status, 200);
  EXPECT_EQ(s.call("POST", "/", "").value().status, 401);
  EXPECT_EQ(s.call("GET", "/status", "").value().status, 401);
  EXPECT_EQ(s.calls(), 1u);
}

TEST(HttpServer, MalformedHttpIs400AndClosed) {
  Served s;
  for (const std::string& garbage :
       {std::string("GARBAGE\r\n\r\n"), std::string("GET / HTTP/1.1\r\nHost x\r\n\r\n"),
        request("POST", "/x", "Content-Length: nine\r\n")}) {
    Raw raw(s.port());
    raw.send(garbage);
    const std::string reply = raw.read_to_close();
    EXPECT_EQ(reply.rfind("HTTP/1.1 400", 0), 0u) << reply;
    EXPECT_NE(reply.find("malformed HTTP request"), std::string::npos) << reply;
    EXPECT_EQ(reply.find("TIMEOUT"), std::string::npos) << "the connection stayed open";
  }
  EXPECT_EQ(s.calls(), 0u);
  EXPECT_EQ(s.server().counters().malformed, 3u);
}

TEST(HttpServer, BodyAndHeaderOverTheirLimitsAreRefused) {
  HttpServerOptions o;
  o.body_limit_bytes = 1024;
  o.header_limit_bytes = 1024;
  Served s(o);
  auto r = s.call("POST", "/x", token, std::string(1024, 'a'));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value().status, 200);
  r = s.call("POST", "/x", token, std::string(1025, 'a'));
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r.value().status, 413);
  EXPECT_NE(r.value().body.find("body_limit_bytes 1024"), std::string::npos) << r.value().body;
  Raw raw(s.port());
  raw.send(request("GET", "/x", "X-Big: " + std::string(2000, 'b') + "\r\n"));
  const std::string reply = raw.read_to_close();
  EXPECT_EQ(reply.rfind("HTTP/1.1 431", 0), 0u) << reply.substr(0, 200);
  EXPECT_EQ(s.calls(), 1u);
  EXPECT_EQ(s.server().counters().too_large, 2u);
}

TEST(HttpServer, KeepAliveServesRequestsOnOneConnection) {
  Served s;
  Raw raw(s.port());
  const std::string auth = "Authorization: Bearer " + token + "\r\n";
  raw.send(request("GET", "/one", auth));
  EXPECT_NE(raw.read_until("GET /one", 1).find("HTTP/1.1 200"), std::string::npos);
  raw.send(request("GET", "/two", auth) + request("GET", "/three", auth));  // pipelined
  const std::string both = raw.read_until("GET /", 2);
  EXPECT_NE(both.find("GET /two"), std::string::npos) << both;
  EXPECT_NE(both.find("GET /three"), std::string::npos) << both;
  EXPECT_EQ(s.calls(), 3u);
}

TEST(HttpServer, SilentConnectionBlocksNoOneAndIsClosedAfterTheReadTimeout) {
  HttpServerOptions o;
  o.read_timeout_ms = 300;
  Served s(o);
  Raw silent(s.port());
  silent.send("GET /slow HTTP/1.1\r\nHost: x\r\n");  // half a request, then nothing
  const auto t0 = std::chrono::steady_clock::now();
  auto r = s.call("GET", "/fast");
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r.value().status, 200);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(250));
  const std::string rest = silent.read_to_close();
  EXPECT_EQ(rest, "") << "closed without a reply";
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(250));
  // The socket closes before the server's handler counts the timeout: give it a moment.
  for (int i = 0; i < 100 && s.server().counters().timed_out == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(s.server().counters().timed_out, 1u);
  EXPECT_EQ(s.calls(), 1u);
}

TEST(HttpServer, ConnectionsPastTheLimitAreClosedAtOnce) {
  HttpServerOptions o;
  o.connections_max = 2;
  Served s(o);
  {
    Raw a(s.port()), b(s.port());
    a.send("G");  // make sure both are accepted before the third
    b.send("G");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    Raw c(s.port());
    EXPECT_EQ(c.read_to_close(), "");
    EXPECT_EQ(s.server().counters().over_connections, 1u);
  }
  // a and b closed: their slots come back as soon as the server sees them go.
  Result<HttpReply> r = Status(Code::io_error, "not tried");
  for (int i = 0; i < 50 && !(r.ok() && r.value().status == 200); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    r = s.call("GET", "/again");
  }
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r.value().status, 200);
}

TEST(HttpServer, HandlerExceptionIs500WithItsText) {
  Served s;
  auto r = s.call("GET", "/throw");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.value().status, 500);
  EXPECT_NE(r.value().body.find("the handler threw"), std::string::npos) << r.value().body;
  EXPECT_EQ(s.call("GET", "/after").value().status, 200);  // and the server lives on
}

TEST(HttpServer, StartErrorsNameTheProblem) {
  const HttpHandler h = [](const HttpRequest&) { return HttpReply{}; };
  HttpServer no_token(HttpServerOptions{});
  Status st = no_token.start("127.0.0.1", 0, h);
  EXPECT_EQ(st.code(), Code::invalid_argument);
  EXPECT_NE(st.message().find("empty bearer token"), std::string::npos) << st.message();
  HttpServerOptions o;
  o.token = token;
  HttpServer by_name(o);
  st = by_name.start("localhost", 0, h);
  EXPECT_EQ(st.code(), Code::invalid_argument);
  EXPECT_NE(st.message().find("'localhost' is not an IP address"), std::string::npos);
  HttpServer first(o), second(o);
  ASSERT_TRUE(first.start("127.0.0.1", 0, h).ok());
  st = second.start("127.0.0.1", first.port(), h);
  EXPECT_EQ(st.code(), Code::io_error);
  EXPECT_NE(st.message().find("in use"), std::string::npos) << st.message();
  EXPECT_EQ(first.start("127.0.0.1", 0, h).code(), Code::invalid_argument);  // twice
}

TEST(HttpServer, StopClosesTheDoor) {
  Served s;
  const uint16_t port = s.port();
  ASSERT_EQ(s.call("GET", "/").value().status, 200);
  s.server().stop();
  s.server().stop();  // idempotent
  HttpCall c;
  c.token = token;
  c.timeout_ms = 2000;
  auto r = http_call({"127.0.0.1", port}, c);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::io_error) << r.status().to_string();
}

TEST(HttpClient, ParsesAddresses) {
  auto a = parse_http_address("http://127.0.0.1:8080/");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a.value().host, "127.0.0.1");
  EXPECT_EQ(a.value().port, 8080);
  a = parse_http_address("http://[::1]:9");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a.value().host, "::1");
  for (const char* bad : {"127.0.0.1:80", "http://127.0.0.1", "http://:80", "http://h:0",
                          "http://h:65536", "http://h:8x", "http://[::1:80"}) {
    const auto r = parse_http_address(bad);
    EXPECT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find(bad), std::string::npos) << r.status().message();
  }
}

}  // namespace
}  // namespace troupe::runtime
