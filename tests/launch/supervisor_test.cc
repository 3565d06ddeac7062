// The supervisor of `troupe launch`: exit codes and signals reported, stop within the grace
// period, output in the log, clear errors, children that never outlive the supervisor.
// Nothing here sleeps to wait: exits are awaited with wait_all/waitpid/poll and a deadline.
#include "launch/supervisor.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace troupe::launch {
namespace {

using std::chrono::milliseconds;
using clock_type = std::chrono::steady_clock;

// Bound on how long any child of these tests may take to start and end: generous, because
// the box is shared; a passing test never waits for it.
constexpr milliseconds child_wait_ms{10000};

class SupervisorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::temp_directory_path() /
           ("troupe_supervisor_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // The first line a child writes into the FIFO at `path`, awaited up to child_wait_ms.
  static std::string read_fifo_line(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK);
    std::string line;
    const auto deadline = clock_type::now() + child_wait_ms;
    while (fd >= 0 && line.find('\n') == std::string::npos && clock_type::now() < deadline) {
      pollfd p{fd, POLLIN, 0};
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - clock_type::now());
      if (::poll(&p, 1, int(left.count()) + 1) <= 0) break;
      char buf[64];
      const ssize_t n = ::read(fd, buf, sizeof buf);
      if (n > 0) line.append(buf, size_t(n));
      if (n == 0) break;  // the writer closed it
    }
    if (fd >= 0) ::close(fd);
    return line.substr(0, line.find('\n'));
  }

  static std::string read(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

  std::filesystem::path dir_;
};

TEST_F(SupervisorTest, ReportsExitCode) {
  Supervisor sup;
  EXPECT_EQ(sup.start({"/bin/sh", "-c", "exit 3"}, "", "three"), 0);
  EXPECT_EQ(sup.start({"/bin/sh", "-c", "exit 0"}, "", "zero"), 1);
  EXPECT_EQ(sup.live(), 2u);
  std::vector<ChildExit> exits = sup.wait_all(child_wait_ms);
  ASSERT_EQ(exits.size(), 2u);
  EXPECT_EQ(sup.live(), 0u);
  std::sort(exits.begin(), exits.end(), [](auto& a, auto& b) { return a.index < b.index; });
  EXPECT_EQ(exits[0].name, "three");
  EXPECT_EQ(exits[0].exit_code, 3);
  EXPECT_EQ(exits[0].signal, 0);
  EXPECT_GT(exits[0].pid, 0);
  EXPECT_EQ(exits[0].describe(), "exit status 3");
  EXPECT_EQ(exits[0].exited(),
            "three (pid " + std::to_string(exits[0].pid) + ") exited (exit status 3)");
  EXPECT_EQ(exits[1].name, "zero");
  EXPECT_EQ(exits[1].exit_code, 0);
  EXPECT_TRUE(sup.reap().empty());  // reported once
}

TEST_F(SupervisorTest, ReapDoesNotBlock) {
  Supervisor sup;
  sup.start({"/bin/sleep", "30"}, "", "sleeper");
  const auto t0 = clock_type::now();
  EXPECT_TRUE(sup.reap().empty());
  EXPECT_LT(clock_type::now() - t0, milliseconds(1000));
  EXPECT_EQ(sup.live(), 1u);
}

// launch waits for a (restarted) coordinator process to say where it listens; when that
// process ends instead, the wait must see it at once, and reap() must still say how it ended.
TEST_F(SupervisorTest, EndedSeesAnExitWithoutReapingIt) {
  Supervisor sup;
  const int runs = sup.start({"/bin/sleep", "30"}, "", "sleeper");
  const int quits = sup.start({"/bin/sh", "-c", "exit 2"}, "", "quits");
  const auto deadline = clock_type::now() + child_wait_ms;
  while (!sup.ended(quits) && clock_type::now() < deadline) sup.wait_any(deadline);
  EXPECT_TRUE(sup.ended(quits));
  EXPECT_FALSE(sup.ended(runs));
  EXPECT_NE(sup.pid_of(quits), 0);  // not reaped
  const std::vector<ChildExit> exits = sup.reap();
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].index, quits);
  EXPECT_EQ(exits[0].exit_code, 2);
  EXPECT_TRUE(sup.ended(quits));  // reported: still ended
  EXPECT_FALSE(sup.ended(runs));
}

TEST_F(SupervisorTest, StopAllTerminatesWithinGrace) {
  Supervisor sup;
  sup.start({"/bin/sleep", "30"}, "", "sleeper");
  const auto t0 = clock_type::now();
  std::vector<ChildExit> exits = sup.stop_all(child_wait_ms);
  EXPECT_LT(clock_type::now() - t0, child_wait_ms);  // SIGTERM sufficed: no SIGKILL wait
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].name, "sleeper");
  EXPECT_EQ(exits[0].signal, SIGTERM);
  EXPECT_EQ(exits[0].exit_code, -1);
  EXPECT_EQ(exits[0].describe(), "killed by SIGTERM");
  EXPECT_EQ(sup.live(), 0u);
  EXPECT_TRUE(sup.stop_all(child_wait_ms).empty());  // idempotent
  EXPECT_TRUE(sup.reap().empty());
}

TEST_F(SupervisorTest, StopAllKillsWhatIgnoresSigterm) {
  Supervisor sup;
  // The shell ignores SIGTERM, says so through a FIFO, and becomes a sleep that inherits it.
  const std::string fifo = path("ready");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  sup.start({"/bin/sh", "-c", "trap '' TERM; echo ready > " + fifo + "; exec sleep 30"}, "",
            "stubborn");
  ASSERT_EQ(read_fifo_line(fifo), "ready");
  const milliseconds grace(200);
  const auto t0 = clock_type::now();
  std::vector<ChildExit> exits = sup.stop_all(grace);
  EXPECT_GE(clock_type::now() - t0, grace);
  ASSERT_EQ(exits.size(), 1u);
  EXPECT_EQ(exits[0].signal, SIGKILL);
  EXPECT_EQ(exits[0].describe(), "killed by SIGKILL");
}

TEST_F(SupervisorTest, ChildOutputGoesToItsLog) {
  Supervisor sup;
  const std::string log = path("node-1.log");
  sup.start({"/bin/sh", "-c", "echo out; echo err >&2"}, log, "first");
  ASSERT_EQ(sup.wait_all(child_wait_ms).size(), 1u);
  sup.start({"/bin/sh", "-c", "echo again"}, log, "second");  // appends
  ASSERT_EQ(sup.wait_all(child_wait_ms).size(), 1u);
  EXPECT_EQ(read(log), "out\nerr\nagain\n");
  struct stat st {};
  ASSERT_EQ(::stat(log.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0022, 0u);  // never writable by others
}

TEST_F(SupervisorTest, ChildStdinIsEmpty) {
  Supervisor sup;
  const std::string log = path("stdin.log");
  sup.start({"/bin/sh", "-c", "cat; echo end"}, log, "reader");  // would hang on a terminal
  ASSERT_EQ(sup.wait_all(child_wait_ms).size(), 1u);
  EXPECT_EQ(read(log), "end\n");
}

TEST_F(SupervisorTest, BadProgramIsAClearError) {
  Supervisor sup;
  try {
    sup.start({"/no/such/program", "--flag"}, "", "ghost");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("/no/such/program"), std::string::npos) << what;
    EXPECT_NE(what.find("No such file or directory"), std::string::npos) << what;
  }
  const std::string not_executable = path("plain.txt");
  std::ofstream(not_executable) << "text\n";
  try {
    sup.start({not_executable}, "", "plain");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("Permission denied"), std::string::npos) << e.what();
  }
  EXPECT_THROW(sup.start({}, "", "empty"), std::runtime_error);
  EXPECT_EQ(sup.live(), 0u);
}

TEST_F(SupervisorTest, UnwritableLogIsAClearError) {
  Supervisor sup;
  const std::string log = path("missing-dir/node.log");
  try {
    sup.start({"/bin/true"}, log, "n");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(log), std::string::npos) << e.what();
  }
  EXPECT_EQ(sup.live(), 0u);
}

// A supervisor that dies without cleaning up (kill -9) still takes its children with it.
TEST_F(SupervisorTest, ChildDiesWithTheSupervisor) {
  const std::string fifo = path("pid");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  const pid_t supervisor = ::fork();
  ASSERT_GE(supervisor, 0);
  if (supervisor == 0) {  // the supervisor process: start a child, wait for the word, vanish
    Supervisor sup;
    try {
      sup.start({"/bin/sh", "-c", "echo $$ > " + fifo + "; exec sleep 30"}, "", "orphan");
    } catch (...) {
      ::_exit(1);
    }
    char byte;
    (void)!::read(go[0], &byte, 1);
    ::_exit(0);  // no destructor: only PR_SET_PDEATHSIG can end the child
  }
  const pid_t child = std::atoi(read_fifo_line(fifo).c_str());  // exec keeps the shell's pid
  ASSERT_GT(child, 0);
  const int pidfd = int(::syscall(SYS_pidfd_open, child, 0));
  ASSERT_GE(pidfd, 0) << "pidfd_open: " << std::strerror(errno);
  pollfd p{pidfd, POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0);  // alive while its supervisor is
  ASSERT_EQ(::write(go[1], "x", 1), 1);
  int status = 0;
  ASSERT_EQ(::waitpid(supervisor, &status, 0), supervisor);
  EXPECT_EQ(::poll(&p, 1, int(child_wait_ms.count())), 1) << "the child outlived its supervisor";
  ::close(pidfd);
  ::close(go[0]);
  ::close(go[1]);
}

TEST(StopSignals, FirstSetsTheFlagSecondActs) {
  const pid_t pid = ::fork();  // in a child: the handlers and the flag are process-wide
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    install_stop_signals();
    if (stop_requested()) ::_exit(10);
    ::raise(SIGINT);
    if (!stop_requested()) ::_exit(11);
    ::raise(SIGTERM);  // the second signal: default action, the process ends by it
    ::_exit(12);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << "exit status " << WEXITSTATUS(status);
  EXPECT_EQ(WTERMSIG(status), SIGTERM);
}

TEST(SelfExePath, IsThisTestBinary) {
  const std::string exe = self_exe_path();
  EXPECT_TRUE(std::filesystem::path(exe).is_absolute()) << exe;
  EXPECT_TRUE(std::filesystem::equivalent(exe, "/proc/self/exe")) << exe;
}

}  // namespace
}  // namespace troupe::launch

namespace troupe::launch {
namespace {

TEST(RestartBudget, GivesUpOnACrashLoopOnly) {
  using namespace std::chrono_literals;
  const RestartBudget::Clock::time_point t0{};
  RestartBudget b(3, 60s);
  // Four deaths, each 5 s after its start: the fourth in a row is refused.
  auto t = t0;
  for (int i = 1; i <= 3; ++i) {
    b.started(t);
    t += 5s;
    EXPECT_TRUE(b.allow(t)) << i;
    EXPECT_EQ(b.in_a_row(), i);
  }
  b.started(t);
  EXPECT_FALSE(b.allow(t + 5s));

  // Killed every 90 s for as long as a soak lasts: always restarted.
  RestartBudget soak(3, 60s);
  t = t0;
  for (int i = 0; i < 100; ++i) {
    soak.started(t);
    t += 90s;
    EXPECT_TRUE(soak.allow(t)) << i;
    EXPECT_EQ(soak.in_a_row(), 0);
  }
  // Quick deaths count again from there: a stable run in between starts the count over.
  for (int i = 0; i < 3; ++i) {
    soak.started(t);
    t += 1s;
    EXPECT_TRUE(soak.allow(t));
  }
  soak.started(t);
  EXPECT_FALSE(soak.allow(t + 1s));
}

}  // namespace
}  // namespace troupe::launch
