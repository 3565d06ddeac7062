// The fabric fault plan file (chaos/fault_plan.h): every key of the format read, and every
// bad plan refused naming the file, the line, the key and what is accepted.
#include "chaos/fault_plan.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "actors/protocol.h"

namespace troupe::chaos {
namespace {

TEST(FaultPlan, ReadsEveryKey) {
  const std::string text = R"(# a comment
seed = 42
[[rule]]
action = "drop"
from = ["n1"]
to = ["n2", "coordinator"]
types = ["Recover", "Heartbeat"]
steps = [10, 20]
after_ms = 5
for_ms = 5000
lasts_ms = 700
probability = 0.25

[[rule]]
action = "partition"
groups = [["n1"], ["n2", "n3", "n0"]]
switch_file = "/run/chaos-fabric-switch-2"

[[rule]]
action = "slow"
delay_ms = 50

[[rule]]
action = "corrupt"
target = "payload"
types = ["StateTransfer", "Replica"]
)";
  auto parsed = parse_fault_plan(text, "plan.toml");
  ASSERT_TRUE(parsed.ok()) << parsed.status().to_string();
  const FaultPlan& p = parsed.value();
  EXPECT_EQ(p.seed, 42u);
  ASSERT_EQ(p.rules.size(), 4u);
  const FaultRule& r = p.rules[0];
  EXPECT_EQ(r.action, Action::drop);
  EXPECT_EQ(r.line, 3);
  EXPECT_EQ(r.from, std::vector<std::string>{"n1"});
  EXPECT_EQ(r.to, (std::vector<std::string>{"n2", "n0"}));  // "coordinator" is n0
  EXPECT_EQ(r.types, (std::vector<uint32_t>{actors::recover_type, runtime::heartbeat_type}));
  EXPECT_EQ(*r.step_lo, 10);
  EXPECT_EQ(*r.step_hi, 20);
  EXPECT_EQ(r.after_ms, 5);
  EXPECT_EQ(*r.for_ms, 5000);
  EXPECT_EQ(*r.lasts_ms, 700);
  EXPECT_DOUBLE_EQ(r.probability, 0.25);
  EXPECT_EQ(p.rules[1].action, Action::partition);
  EXPECT_EQ(p.rules[1].groups.size(), 2u);
  EXPECT_FALSE(p.rules[1].for_ms);  // forever, while its switch file exists
  EXPECT_EQ(p.rules[1].switch_file, "/run/chaos-fabric-switch-2");
  EXPECT_TRUE(p.rules[0].switch_file.empty());
  EXPECT_EQ(p.rules[2].delay_ms, 50);
  EXPECT_EQ(p.rules[3].target, CorruptTarget::payload);
  EXPECT_NE(describe(p).find("partition [n1] | [n2,n3,n0] while /run/chaos-fabric-switch-2 exists"),
            std::string::npos)
      << describe(p);
  EXPECT_FALSE(
      parse_fault_plan("[[rule]]\naction = \"drop\"\nswitch_file = \"\"\n", "p.toml").ok());
}

TEST(FaultPlan, DefaultsAndAnEmptyPlan) {
  auto p = parse_fault_plan("", "empty.toml");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p.value().seed, 1u);
  EXPECT_TRUE(p.value().rules.empty());
  auto q = parse_fault_plan("[[rule]]\naction = \"duplicate\"\n", "d.toml");
  ASSERT_TRUE(q.ok());
  EXPECT_DOUBLE_EQ(q.value().rules[0].probability, 1.0);
  EXPECT_TRUE(q.value().rules[0].from.empty());
}

// The error for `text`: it must be refused, and its message must hold every piece of `want`.
void expect_refused(const std::string& text, const std::vector<std::string>& want) {
  auto p = parse_fault_plan(text, "bad.toml");
  ASSERT_FALSE(p.ok()) << text;
  EXPECT_EQ(p.status().code(), runtime::Code::invalid_argument);
  for (const std::string& w : want)
    EXPECT_NE(p.status().message().find(w), std::string::npos)
        << "'" << w << "' not in: " << p.status().message();
}

TEST(FaultPlan, RefusesBadPlansNamingLineKeyAndWhatIsAccepted) {
  const std::string head = "seed = 1\n[[rule]]\n";  // the rule's keys start on line 3
  expect_refused("seed = 1\nsede = 2\n", {"bad.toml:2:", "'sede'", "seed, [[rule]]"});
  expect_refused(head + "action = \"explode\"\n",
                 {"bad.toml:3:", "'action'", "explode", "partition"});
  expect_refused(head + "action = \"drop\"\ncolour = 1\n",
                 {"bad.toml:4:", "'colour'", "probability"});
  expect_refused(head + "action = \"drop\"\ntypes = [\"Recovr\"]\n",
                 {"bad.toml:4:", "'types'", "Recovr", "GradSlices"});
  expect_refused(head + "action = \"drop\"\nprobability = 1.5\n",
                 {":4:", "'probability'", "[0, 1]"});
  expect_refused(head + "action = \"drop\"\nsteps = [5, 2]\n", {":4:", "'steps'"});
  expect_refused(head + "action = \"drop\"\nsteps = [5]\n", {":4:", "inclusive step window"});
  expect_refused(head + "action = \"drop\"\nfrom = [\"node1\"]\n",
                 {":4:", "'from'", "node1", "n0, n1"});
  expect_refused(head + "action = \"drop\"\nfor_ms = 0\n", {":4:", "'for_ms'"});
  expect_refused(head + "action = \"drop\"\nlasts_ms = \"1s\"\n", {":4:", "'lasts_ms'", "integer"});
  expect_refused(head + "action = \"delay\"\n", {"bad.toml:2:", "'delay_ms'", "delay needs"});
  expect_refused(head + "action = \"drop\"\ndelay_ms = 5\n", {":4:", "'delay_ms'", "only delay"});
  expect_refused(head + "action = \"delay\"\ndelay_ms = 999999\n", {":4:", "[1, 60000]"});
  expect_refused(head + "action = \"partition\"\n", {"'groups'", "partition needs"});
  expect_refused(head + "action = \"partition\"\ngroups = [[\"n1\"]]\n", {":4:", "two groups"});
  expect_refused(head + "action = \"partition\"\ngroups = [[\"n1\"], [\"n1\", \"n2\"]]\n",
                 {":4:", "n1 is in two groups"});
  expect_refused(head + "action = \"partition\"\ngroups = [[\"n1\"], [\"n2\"]]\nfrom = [\"n1\"]\n",
                 {":5:", "'from'", "not from/to"});
  expect_refused(head + "action = \"drop\"\ngroups = [[\"n1\"], [\"n2\"]]\n", {"only partition"});
  expect_refused(head + "action = \"drop\"\ntarget = \"header\"\n", {":4:", "only corrupt"});
  expect_refused(head + "action = \"corrupt\"\ntarget = \"payload\"\ntypes = [\"GradSlices\"]\n",
                 {":5:", "CRC32C", "StateTransfer"});
  expect_refused(head + "action = \"corrupt\"\ntarget = \"payload\"\n", {"CRC32C"});
  expect_refused(head + "action = \"corrupt\"\ntarget = \"bits\"\n", {":4:", "header, payload"});
  expect_refused(head + "from = [\"n1\"]\n", {"'action'", "needs one"});
  expect_refused("seed = 1\nrule = 3\n", {":2:", "'rule'"});
  expect_refused("seed = -1\n", {":1:", "'seed'"});
  expect_refused("seed = 1\n[[rule]\naction = \"drop\"\n", {"bad.toml:2:", "TOML syntax error"});
}

TEST(FaultPlan, FromTheEnvironment) {
  ::unsetenv(fabric_faults_env);
  auto none = fault_plan_from_env();
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none.value().has_value());
  const std::string path = ::testing::TempDir() + "/troupe_fault_plan_test.toml";
  { std::ofstream(path) << "seed = 7\n[[rule]]\naction = \"drop\"\ntypes = [\"Bogus\"]\n"; }
  ::setenv(fabric_faults_env, path.c_str(), 1);
  auto bad = fault_plan_from_env();
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(path + ":4:"), std::string::npos) << bad.status().message();
  { std::ofstream(path) << "seed = 7\n"; }
  auto good = fault_plan_from_env();
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(good.value()->seed, 7u);
  ::setenv(fabric_faults_env, (path + ".missing").c_str(), 1);
  auto missing = fault_plan_from_env();
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("is not a file"), std::string::npos);
  ::unsetenv(fabric_faults_env);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace troupe::chaos
