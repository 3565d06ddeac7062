// The control endpoint (launch/control.h) with a fake target that records its calls: every
// bad body is a 400 naming what was wrong and reaches no target, a request without the token
// changes nothing, the target's refusal passes through, and the files in the run directory
// (control.token 0600, control.json's address) lead a client to it.
#include "launch/control.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>

#include "launch/commands.h"
#include "runtime/http_client.h"

namespace troupe::launch {
namespace {

using nlohmann::json;

class FakeTarget : public ControlTarget {
 public:
  json status() override {
    record("status");
    return {{"step", 7}, {"nodes", 3}};
  }
  std::string metrics_text() override {
    record("metrics");
    return metrics;
  }
  json history() override {
    record("history");
    return {{"steps", {{{"step", 1}, {"loss", 3.5}, {"tokens_per_s", 900.0}, {"t_s", 0.4}}}},
            {"events", {{{"t_s", 0.1}, {"kind", "start"}, {"text", "2 nodes"}}}}};
  }
  ControlReply scale(int64_t nodes) override {
    record("scale " + std::to_string(nodes));
    return {200, "scaling to " + std::to_string(nodes) + " nodes"};
  }
  ControlReply drain(const std::string& node) override {
    record("drain " + node);
    if (node != "n2") return {400, "no node " + node + " in the job (nodes: n1, n2)"};
    return {200, "draining " + node};
  }
  ControlReply pause() override {
    record("pause");
    return {200, "pausing"};
  }
  ControlReply resume() override {
    record("resume");
    return {200, "resuming"};
  }
  ControlReply checkpoint() override {
    record("checkpoint");
    throw std::runtime_error("the disk is on fire");
  }
  std::vector<std::string> calls() {
    std::lock_guard lock(mu_);
    return calls_;
  }
  std::string metrics = "# TYPE up gauge\nup 1\n";

 private:
  void record(const std::string& call) {
    std::lock_guard lock(mu_);
    calls_.push_back(call);
  }
  std::mutex mu_;
  std::vector<std::string> calls_;
};

constexpr int64_t max_nodes = 8;

runtime::HttpReply route(FakeTarget& t, const std::string& method, const std::string& path,
                         const std::string& body = "") {
  return route_control({method, path, "", body}, t, max_nodes);
}

// The 400s of /scale and /drain: each names what was wrong and calls nothing.
TEST(Control, BadBodiesAre400NamingTheProblemAndCallNothing) {
  FakeTarget t;
  const std::pair<std::string, std::string> cases[] = {
      {"{\"nodes\": 3", "body is not JSON"},
      {"[3]", "body must be a JSON object like {\"nodes\": N}, got array [3]"},
      {"{\"n\": 3}", "missing field \"nodes\""},
      {"{\"nodes\": \"3\"}", "\"nodes\" must be an integer, got string \"3\""},
      {"{\"nodes\": 2.5}", "\"nodes\" must be an integer, got number 2.5"},
      {"{\"nodes\": true}", "\"nodes\" must be an integer, got boolean true"},
      {"{\"nodes\": 0}", "nodes must be at least 1, got 0"},
      {"{\"nodes\": -4}", "nodes must be at least 1, got -4"},
      {"{\"nodes\": 9}", "nodes must be at most max_nodes 8, got 9"},
      {"{\"nodes\": 18446744073709551615}", "at most max_nodes 8, got 18446744073709551615"},
  };
  for (const auto& [body, want] : cases) {
    const runtime::HttpReply r = route(t, "POST", "/scale", body);
    EXPECT_EQ(r.status, 400) << body;
    EXPECT_EQ(r.content_type, "application/json");
    const json j = json::parse(r.body);
    EXPECT_NE(j["error"].get<std::string>().find(want), std::string::npos)
        << body << " -> " << r.body;
  }
  const std::string long_name = "{\"node\": \"" + std::string(65, 'n') + "\"}";
  for (const std::string& body :
       {std::string(), std::string("{\"node\": 2}"), std::string("{\"node\": \"\"}"), long_name}) {
    const runtime::HttpReply r = route(t, "POST", "/drain", body);
    EXPECT_EQ(r.status, 400) << body;
    const std::string error = json::parse(r.body)["error"].get<std::string>();
    EXPECT_NE(error.find("\"node\""), std::string::npos) << r.body;
  }
  EXPECT_EQ(route(t, "POST", "/pause", "nonsense").status, 400);
  EXPECT_EQ(route(t, "POST", "/resume", "[]").status, 400);
  EXPECT_TRUE(t.calls().empty());
}

TEST(Control, GoodRequestsReachTheTarget) {
  FakeTarget t;
  runtime::HttpReply r = route(t, "POST", "/scale", "{\"nodes\": 8}");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(json::parse(r.body), json({{"ok", true}, {"message", "scaling to 8 nodes"}}));
  r = route(t, "POST", "/drain", "{\"node\": \"n2\"}");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(route(t, "POST", "/pause").status, 200);
  EXPECT_EQ(route(t, "POST", "/resume", " {} ").status, 200);
  r = route(t, "GET", "/status");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(json::parse(r.body)["step"], 7);
  r = route(t, "GET", "/metrics");
  EXPECT_EQ(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(r.body, t.metrics);
  r = route(t, "GET", "/history");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "application/json");
  EXPECT_EQ(json::parse(r.body), t.history());
  EXPECT_EQ(t.calls(), (std::vector<std::string>{"scale 8", "drain n2", "pause", "resume", "status",
                                                 "metrics", "history", "history"}));
}

// GET / is the page as launch/page/index.html holds it now: the build embedded the current file.
TEST(Control, PageIsTheSourceFileAndCallsNothing) {
  FakeTarget t;
  const runtime::HttpReply r = route(t, "GET", "/");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/html; charset=utf-8");
  const char* source_dir = std::getenv("TROUPE_SOURCE_DIR");
  ASSERT_NE(source_dir, nullptr) << "TROUPE_SOURCE_DIR is not set (tests/CMakeLists.txt sets it)";
  std::ifstream in(std::string(source_dir) + "/launch/page/index.html", std::ios::binary);
  ASSERT_TRUE(in) << "cannot open launch/page/index.html under " << source_dir;
  const std::string source((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(r.body, source) << "the embedded page is not launch/page/index.html: rebuild";
  EXPECT_NE(r.body.find("troupe status RUN_DIR --page"), std::string::npos);
  EXPECT_EQ(route(t, "POST", "/").status, 405);
  EXPECT_TRUE(t.calls().empty());
}

TEST(Control, TargetRefusalPassesThroughAndItsExceptionIs500) {
  FakeTarget t;
  runtime::HttpReply r = route(t, "POST", "/drain", "{\"node\": \"n9\"}");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(json::parse(r.body),
            json({{"ok", false}, {"error", "no node n9 in the job (nodes: n1, n2)"}}));
  r = route(t, "POST", "/checkpoint");
  EXPECT_EQ(r.status, 500);
  EXPECT_NE(r.body.find("POST /checkpoint failed: the disk is on fire"), std::string::npos);
}

TEST(Control, UnknownPathIs404AndWrongMethod405) {
  FakeTarget t;
  runtime::HttpReply r = route(t, "GET", "/nodes");
  EXPECT_EQ(r.status, 404);
  EXPECT_NE(r.body.find("no route /nodes; routes: GET /, GET /status, GET /metrics, GET /history, "
                        "POST /scale"),
            std::string::npos)
      << r.body;
  r = route(t, "GET", "/scale");
  EXPECT_EQ(r.status, 405);
  EXPECT_NE(r.body.find("/scale takes POST, not GET"), std::string::npos) << r.body;
  EXPECT_EQ(route(t, "POST", "/status").status, 405);
  EXPECT_EQ(route(t, "DELETE", "/checkpoint").status, 405);
  EXPECT_TRUE(t.calls().empty());
}

TEST(Control, OptionsParse) {
  CLI::App app;
  ControlOptions o;
  add_control_options(&app, &o);
  app.parse("--control-host 0.0.0.0 --control-port 8080", false);
  EXPECT_EQ(o.host, "0.0.0.0");
  EXPECT_EQ(o.port, 8080);
  ControlOptions d;
  EXPECT_EQ(d.host, "127.0.0.1");
  EXPECT_EQ(d.port, 0);
  CLI::App bad;
  add_control_options(&bad, &d);
  EXPECT_THROW(bad.parse("--control-port 70000", false), CLI::ParseError);
}

class ControlEndpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("troupe_control_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  runtime::HttpReply call(const std::string& method, const std::string& target,
                          const std::string& token, const std::string& body = "") {
    const ControlAccess access = read_control_access(dir_);
    runtime::HttpCall c{method, target, token, body, 5000};
    auto r = runtime::http_call(runtime::parse_http_address(access.address).value(), c);
    EXPECT_TRUE(r.ok()) << r.status().to_string();
    return r.ok() ? r.value() : runtime::HttpReply{0, "", ""};
  }

  std::filesystem::path dir_;
};

TEST_F(ControlEndpointTest, FilesLeadToItAndOnlyTheTokenGetsIn) {
  FakeTarget t;
  ControlEndpoint ep;
  ep.start(dir_, "127.0.0.1", 0, t, max_nodes);
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "control.token").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  const ControlAccess access = read_control_access(dir_);
  EXPECT_EQ(access.token, ep.token());
  EXPECT_EQ(access.token.size(), 2 * control_token_random_bytes);
  EXPECT_EQ(access.token.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(access.address, "http://127.0.0.1:" + std::to_string(ep.port()));
  std::ifstream in(dir_ / "control.json");
  EXPECT_EQ(json::parse(in)["pid"], int64_t(::getpid()));
  for (const std::string& bad : {std::string(), std::string(access.token.size(), 'a')}) {
    EXPECT_EQ(call("POST", "/scale", bad, "{\"nodes\": 2}").status, 401);
    EXPECT_EQ(call("POST", "/pause", bad).status, 401);
    EXPECT_EQ(call("GET", "/status", bad).status, 401);
  }
  EXPECT_EQ(call("GET", "/history", "").status, 401);
  EXPECT_EQ(call("POST", "/", "").status, 401) << "only GET / is public";
  EXPECT_TRUE(t.calls().empty()) << "a 401 reached the target";
  EXPECT_EQ(ep.counters().unauthorized, 8u);
  const runtime::HttpReply page = call("GET", "/", "");
  EXPECT_EQ(page.status, 200) << "the page needs no token";
  EXPECT_EQ(page.content_type, "text/html; charset=utf-8");
  EXPECT_EQ(page.body, std::string(control_page_html()));
  EXPECT_EQ(page.body.find(access.token), std::string::npos) << "the page holds the token";
  const runtime::HttpReply r = call("GET", "/status", access.token);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(json::parse(r.body)["nodes"], 3);
  EXPECT_EQ(call("POST", "/scale", access.token, "{\"nodes\": 9}").status, 400);
  EXPECT_EQ(call("POST", "/scale", access.token, "{\"nodes\": 2}").status, 200);
  EXPECT_EQ(t.calls(), (std::vector<std::string>{"status", "scale 2"}));
  ep.stop();
  EXPECT_FALSE(std::filesystem::exists(dir_ / "control.json"));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "control.token"));
  try {
    read_control_access(dir_);
    ADD_FAILURE() << "read_control_access found a stopped endpoint";
  } catch (const UsageError& e) {
    EXPECT_EQ(std::string(e.what()),
              "no control endpoint in " + dir_.string() + ": is the job running?");
  }
}

TEST_F(ControlEndpointTest, StartRefusesBadAddressesAndUnwritableDirectories) {
  FakeTarget t;
  ControlEndpoint first;
  first.start(dir_, "127.0.0.1", 0, t, max_nodes);
  ControlEndpoint second;
  try {
    second.start(dir_, "127.0.0.1", first.port(), t, max_nodes);
    ADD_FAILURE() << "a port in use was taken";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("in use"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--control-port"), std::string::npos) << e.what();
  }
  EXPECT_THROW(ControlEndpoint().start(dir_, "my-laptop", 0, t, max_nodes), UsageError);
  EXPECT_THROW(ControlEndpoint().start(dir_, "127.0.0.1", 0, t, 0), UsageError);
  try {
    ControlEndpoint().start((dir_ / "missing").string(), "127.0.0.1", 0, t, max_nodes);
    ADD_FAILURE() << "wrote into a missing directory";
  } catch (const RunFailed& e) {
    EXPECT_NE(std::string(e.what()).find("control.token"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(t.calls().empty());
}

TEST_F(ControlEndpointTest, WildcardHostIsReachedThroughLoopback) {
  FakeTarget t;
  ControlEndpoint ep;
  ep.start(dir_, "0.0.0.0", 0, t, max_nodes);
  EXPECT_EQ(ep.address(), "http://127.0.0.1:" + std::to_string(ep.port()));
  EXPECT_EQ(call("GET", "/status", ep.token()).status, 200);
}

}  // namespace
}  // namespace troupe::launch
