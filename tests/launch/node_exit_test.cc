// How launch speaks of its node processes (launch/node_exit.h): by the coordinator's node id,
// with the pid and the log; an evicted node (exit_status_evicted) is lost like one that died,
// never taken for one that left (exit 0).
#include "launch/node_exit.h"

#include <gtest/gtest.h>

#include <csignal>

#include "runtime/exit_status.h"

namespace troupe::launch {
namespace {

ChildExit ended(int exit_code, int signal = 0) {
  ChildExit e;
  e.name = node_process_name("3");
  e.pid = 4242;
  e.exit_code = signal != 0 ? -1 : exit_code;
  e.signal = signal;
  return e;
}

TEST(NodeExit, AnEvictedNodeIsLostNotLeft) {
  EXPECT_EQ(node_end(ended(0)), NodeEnd::left);
  EXPECT_EQ(node_end(ended(runtime::exit_status_evicted)), NodeEnd::evicted);
  EXPECT_EQ(node_end(ended(1)), NodeEnd::died);
  EXPECT_EQ(node_end(ended(-1, SIGKILL)), NodeEnd::died);
  EXPECT_EQ(node_end(ended(-1)), NodeEnd::died) << "a status nobody saw is not a clean exit";
}

TEST(NodeExit, TheTextNamesTheNodeIdNotTheProcessCount) {
  EXPECT_EQ(node_exit_text(ended(-1, SIGKILL), "n2"),
            "n2 (pid 4242) exited (killed by SIGKILL; log node-3.log)");
  EXPECT_EQ(node_exit_text(ended(runtime::exit_status_evicted), "n2"),
            "n2 (pid 4242) exited (exit status 3: evicted; log node-3.log)");
  EXPECT_EQ(node_exit_text(ended(1), ""),
            "the node process of node-3.log (pid 4242) exited (exit status 1) before it joined");
  const nlohmann::json f = node_exit_fields(ended(runtime::exit_status_evicted), "n2");
  EXPECT_EQ(f["node"], "n2");
  EXPECT_EQ(f["exit_code"], 3);
  EXPECT_EQ(f["evicted"], true);
  EXPECT_EQ(f["log"], "node-3.log");
  EXPECT_EQ(chaos_kill_text("n3", node_process_name("3"), 4242, "after step 30"),
            "[chaos] kill -9 n3 (pid 4242) after step 30");
  EXPECT_EQ(chaos_kill_text("", node_process_name("3"), 4242, "as the workers start"),
            "[chaos] kill -9 the node process of node-3.log (pid 4242) as the workers start");
}

}  // namespace
}  // namespace troupe::launch
