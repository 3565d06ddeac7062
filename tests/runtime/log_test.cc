// The log line format (runtime/log.h): ISO-8601 timestamp with milliseconds and offset, the
// level, who logs, the text; the level filter; the node id set after the handshake; and the
// real stderr path that a supervised node's RUN_DIR/node-K.log receives.
#include "runtime/log.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace troupe::log {
namespace {

const char* const timestamp = R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}[+-]\d{2}:\d{2})";

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// Matches "TIMESTAMP [LEVEL] [WHO] TEXT" exactly.
::testing::AssertionResult is_line(const std::string& line, const std::string& level,
                                   const std::string& who, const std::string& text) {
  const std::regex want(std::string("^") + timestamp + " \\[" + level + "\\] \\[" + who + "\\] " +
                        text + "$");
  if (std::regex_match(line, want)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "line '" << line << "' is not '<timestamp> [" << level
                                       << "] [" << who << "] " << text << "'";
}

class LogLines : public ::testing::Test {
 protected:
  void start(const std::string& who, Level level) {
    init_logging(who, level, std::make_shared<spdlog::sinks::ostream_sink_mt>(out_, true));
  }
  std::vector<std::string> lines() const { return lines_of(out_.str()); }
  void TearDown() override { init_logging("troupe", Level::info); }  // back to stderr

  std::ostringstream out_;
};

TEST_F(LogLines, CarryTimestampLevelWhoAndText) {
  start("node pid 1234", Level::info);
  info("joined as node {} (epoch {})", "n2", 3);
  warn("router: no route to {}", "n3/worker.1");
  error("error: {}", "lost the coordinator");
  const auto got = lines();
  ASSERT_EQ(got.size(), 3u) << out_.str();
  EXPECT_TRUE(is_line(got[0], "info", "node pid 1234", R"(joined as node n2 \(epoch 3\))"));
  EXPECT_TRUE(is_line(got[1], "warning", "node pid 1234", "router: no route to n3/worker.1"));
  EXPECT_TRUE(is_line(got[2], "error", "node pid 1234", "error: lost the coordinator"));
}

TEST_F(LogLines, NodeIdSetAfterTheHandshakeNamesLaterLines) {
  start("node pid 99", Level::info);
  info("before");
  set_log_node("n2");
  info("after");
  set_log_node("n%v 50%");  // an id is text, never a pattern flag
  info("odd");
  const auto got = lines();
  ASSERT_EQ(got.size(), 3u) << out_.str();
  EXPECT_TRUE(is_line(got[0], "info", "node pid 99", "before"));
  EXPECT_TRUE(is_line(got[1], "info", "n2", "after"));
  EXPECT_TRUE(is_line(got[2], "info", "n%v 50%", "odd"));
}

TEST_F(LogLines, LevelFiltersLowerLines) {
  start("n1", Level::warn);
  trace("t");
  debug("d");
  info("i");
  warn("w");
  error("e");
  const auto got = lines();
  ASSERT_EQ(got.size(), 2u) << out_.str();
  EXPECT_TRUE(is_line(got[0], "warning", "n1", "w"));
  EXPECT_TRUE(is_line(got[1], "error", "n1", "e"));
  EXPECT_EQ(level(), Level::warn);
}

TEST_F(LogLines, DebugShowsDetailAndOffShowsNothing) {
  start("n1", Level::debug);
  trace("t");
  debug("d {}", 1);
  ASSERT_EQ(lines().size(), 1u) << out_.str();
  EXPECT_TRUE(is_line(lines()[0], "debug", "n1", "d 1"));
  out_.str("");
  start("n1", Level::off);
  error("e");
  critical("c");
  EXPECT_EQ(out_.str(), "");
}

// Lines from many threads, while the node id changes, stay whole: one line per call.
TEST_F(LogLines, ThreadsWriteWholeLines) {
  start("node pid 5", Level::info);
  constexpr int threads = 4, per_thread = 200;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([t] {
      for (int i = 0; i < per_thread; ++i) info("thread {} line {} of some length", t, i);
    });
  set_log_node("n7");
  for (std::thread& th : pool) th.join();
  const auto got = lines();
  ASSERT_EQ(got.size(), size_t(threads * per_thread));
  const std::regex whole(std::string("^") + timestamp +
                         R"( \[info\] \[(node pid 5|n7)\] thread \d line \d+ of some length$)");
  for (const std::string& line : got) ASSERT_TRUE(std::regex_match(line, whole)) << line;
}

TEST(LogLevels, NamesParseAndPrintBack) {
  EXPECT_EQ(level_names(),
            (std::vector<std::string>{"trace", "debug", "info", "warn", "error", "off"}));
  for (const std::string& name : level_names()) {
    const std::optional<Level> l = parse_level(name);
    ASSERT_TRUE(l.has_value()) << name;
    EXPECT_EQ(level_name(*l), name);
  }
  EXPECT_EQ(parse_level("warn"), Level::warn);
  EXPECT_EQ(parse_level("error"), Level::err);
  for (const char* bad : {"", "INFO", "warning", "verbose", "critical", "info "})
    EXPECT_FALSE(parse_level(bad).has_value()) << bad;
}

// The default sink is this process's stderr (fd 2), as a supervisor redirects it to a file.
TEST(LogStderr, LinesGoToFileDescriptorTwo) {
  char path[] = "/tmp/troupe-log-test-XXXXXX";
  const int file = ::mkstemp(path);
  ASSERT_GE(file, 0);
  std::fflush(stderr);
  const int saved = ::dup(2);
  ASSERT_GE(saved, 0);
  ASSERT_EQ(::dup2(file, 2), 2);
  init_logging("coordinator", Level::info);
  info("shown {}", "here");
  debug("below the level");
  set_log_node("n0");
  warn("dropping {} from {}", "StepBegin", "n3/worker.0");
  std::fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  ::close(file);
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  ::unlink(path);
  init_logging("troupe", Level::info);
  const auto got = lines_of(text);
  ASSERT_EQ(got.size(), 2u) << text;
  EXPECT_TRUE(is_line(got[0], "info", "coordinator", "shown here"));
  EXPECT_TRUE(is_line(got[1], "warning", "n0", "dropping StepBegin from n3/worker.0"));
}

}  // namespace
}  // namespace troupe::log
