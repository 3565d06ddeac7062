// Scenario files refused before anything starts (file, line, what), the fabric-fault plan
// text, and the pure invariant checks over journal records and events.
#include "chaos/scenario.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "chaos/check.h"
#include "chaos/fabric_plan.h"
#include "chaos/fault_plan.h"
#include "chaos/runner.h"

namespace troupe::chaos {
namespace {

std::string source_dir() {
  const char* d = std::getenv("TROUPE_SOURCE_DIR");
  return d ? d : ".";
}

// A scenario file in the scenarios folder (its config path resolves like theirs).
std::string path() {
  return source_dir() + "/chaos/scenarios/test.toml";
}

const std::string head =
    "description = \"t\"\nconfig = \"../../configs/tiny.toml\"\nsteps = 10\nnodes = 4\n";

std::string error_of(const std::string& text) {
  try {
    parse_scenario_text(text, path());
  } catch (const ScenarioError& e) {
    return e.what();
  }
  return "accepted";
}

TEST(Scenario, ParsesAKillWithItsTriggerAndBounds) {
  const Scenario s = parse_scenario_text(
      head +
          "[bounds]\ndetection_ms_max = 2000\n[[fault]]\nkind = \"kill\"\nnode = \"n2\"\n"
          "at_step = 3\ndelay_ms = 50\n",
      path());
  ASSERT_EQ(s.faults.size(), 1u);
  EXPECT_EQ(s.faults[0].kind, FaultKind::kill);
  EXPECT_EQ(s.faults[0].when.at_step, 3);
  EXPECT_TRUE(s.faults[0].recovers);
  EXPECT_EQ(*s.bounds.detection_ms_max, 2000);
  EXPECT_EQ(s.faults[0].describe(), "kill n2 at step 3 +50 ms");
}

TEST(Scenario, TimeBoundsScaleAndStepsRedoneStay) {
  const Scenario s = with_scaled_time_bounds(
      parse_scenario_text(head + "[bounds]\ndetection_ms_max = 2000\nrecovery_ms_max = 5000\n"
                                 "steps_redone_max = 3\n[[fault]]\nkind = \"kill\"\nnode = \"n2\"\n"
                                 "at_step = 3\n",
                          path()),
      8);
  EXPECT_EQ(*s.bounds.detection_ms_max, 16000);
  EXPECT_EQ(*s.bounds.recovery_ms_max, 40000);
  EXPECT_EQ(*s.bounds.steps_redone_max, 3);
  const Scenario unbounded = parse_scenario_text(
      head + "[[fault]]\nkind = \"kill\"\nnode = \"n2\"\nat_step = 3\n", path());
  EXPECT_FALSE(with_scaled_time_bounds(unbounded, 8).bounds.recovery_ms_max)
      << "an absent bound stays absent";
}

TEST(Scenario, RefusesAnUnknownFaultKindNamingFileAndLine) {
  const std::string e = error_of(head + "\n[[fault]]\nkind = \"explode\"\nat_step = 1\n");
  EXPECT_NE(e.find("test.toml:7:"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown fault kind 'explode'"), std::string::npos) << e;
}

TEST(Scenario, RefusesANodeThatCannotExist) {
  const std::string e = error_of(head + "[[fault]]\nkind = \"kill\"\nnode = \"n7\"\nat_step = 1\n");
  EXPECT_NE(e.find("test.toml:5:"), std::string::npos) << e;
  EXPECT_NE(e.find("node n7 cannot exist"), std::string::npos) << e;
  // After a scale-up to 7 it can.
  EXPECT_EQ(error_of(head + "[[fault]]\nkind = \"scale\"\nnodes = 7\nat_step = 1\n"
                            "[[fault]]\nkind = \"kill\"\nnode = \"n7\"\nat_step = 2\n"),
            "accepted");
}

TEST(Scenario, RefusesANodeAlreadyKilled) {
  const std::string e = error_of(head +
                                 "[[fault]]\nkind = \"kill\"\nnode = \"n2\"\nat_step = 1\n"
                                 "[[fault]]\nkind = \"hang\"\nnode = \"n2\"\nat_step = 2\n"
                                 "for_ms = 10\n");
  EXPECT_NE(e.find("already gone"), std::string::npos) << e;
}

TEST(Scenario, RefusesBadFields) {
  EXPECT_NE(error_of(head + "colour = 3\n").find("test.toml:5: unknown key 'colour'"),
            std::string::npos);
  EXPECT_NE(error_of(head + "[[fault]]\nkind = \"kill\"\nnode = \"n1\"\nat_step = 11\n")
                .find("at_step in the [[fault]] of line 5: must be in [0, 10]"),
            std::string::npos);
  EXPECT_NE(error_of(head + "[[fault]]\nkind = \"kill\"\nnode = \"n1\"\n").find("exactly one"),
            std::string::npos);
  EXPECT_NE(error_of(head + "[[fault]]\nkind = \"hang\"\nnode = \"n1\"\nat_step = 1\n")
                .find("needs for_ms"),
            std::string::npos);
  EXPECT_NE(error_of("steps = 1\n").find("description"), std::string::npos);
  EXPECT_NE(error_of(head + "steps = [").find("TOML syntax error"), std::string::npos);
}

TEST(FabricPlan, WritesEachRuleInTheDecoratorsFormat) {
  const Scenario s = parse_scenario_text(
      head +
          "[[fault]]\nkind = \"fabric\"\naction = \"partition\"\n"
          "groups = [[\"n1\"], [\"n2\", \"n3\"]]\nsteps = [4, 6]\nfor_ms = 3000\n"
          "[[fault]]\nkind = \"fabric\"\naction = \"delay\"\nfrom = [\"n1\"]\n"
          "types = [\"Recover\"]\ndelay_ms = 50\nprobability = 0.5\n",
      path());
  EXPECT_EQ(fabric_plan_text(s, 42),
            "# t (chaos scenario test)\nseed = 42\n"
            "\n[[rule]]\naction = \"partition\"\nsteps = [4, 6]\nfor_ms = 3000\n"
            "groups = [[\"n1\"], [\"n2\", \"n3\"]]\n"
            "\n[[rule]]\naction = \"delay\"\nfrom = [\"n1\"]\ntypes = [\"Recover\"]\n"
            "probability = 0.5\ndelay_ms = 50\n");
  // The decorator reads what the runner writes.
  const auto plan = parse_fault_plan(fabric_plan_text(s, 42), "t.toml");
  EXPECT_TRUE(plan.ok()) << plan.status().to_string();
  EXPECT_EQ(fabric_plan_text(parse_scenario_text(head, path()), 1), "");
}

// What the decorator would refuse at the job's start is refused with the scenario: the file,
// the line of the key and what is wrong. A corruption's target goes into the plan.
TEST(Scenario, RefusesAFabricRuleTheDecoratorWouldRefuse) {
  const std::string fabric = head + "[[fault]]\nkind = \"fabric\"\n";
  std::string e = error_of(fabric + "action = \"drop\"\ntypes = [\"Recoverr\"]\n");
  EXPECT_NE(e.find("test.toml:8: types in the [[fault]] of line 5:"), std::string::npos) << e;
  EXPECT_NE(e.find("Recoverr"), std::string::npos) << e;
  e = error_of(fabric + "action = \"corrupt\"\ntarget = \"payload\"\ntypes = [\"GradSlices\"]\n");
  EXPECT_NE(e.find("test.toml:9: types in"), std::string::npos) << e;
  EXPECT_NE(e.find("CRC32C"), std::string::npos) << e;
  e = error_of(fabric + "action = \"drop\"\ntarget = \"header\"\n");
  EXPECT_NE(e.find("test.toml:8: target in"), std::string::npos) << e;
  e = error_of(fabric + "action = \"corrupt\"\ntarget = \"trailer\"\n");
  EXPECT_NE(e.find("unknown target 'trailer'"), std::string::npos) << e;
  const Scenario s = parse_scenario_text(
      fabric + "action = \"corrupt\"\ntarget = \"payload\"\ntypes = [\"StateTransfer\"]\n", path());
  EXPECT_NE(fabric_plan_text(s, 1).find("target = \"payload\"\n"), std::string::npos)
      << fabric_plan_text(s, 1);
}

// A fabric fault with a trigger acts from it for for_ms in every process at once: its rule
// acts while the runner's switch file exists, and its own time window stays open.
TEST(Scenario, AFabricFaultAtAnEventIsSwitchedOnForItsTime) {
  const std::string fabric = head +
                             "[[fault]]\nkind = \"fabric\"\naction = \"partition\"\n"
                             "groups = [[\"coordinator\", \"n1\"], [\"n2\"]]\n";
  const Scenario s =
      parse_scenario_text(fabric + "after_event = \"reshape\"\nfor_ms = 3000\n", path());
  const Fault& f = s.faults[0];
  EXPECT_TRUE(f.triggered);
  EXPECT_TRUE(f.live());
  EXPECT_EQ(f.when.after_event, "reshape");
  EXPECT_EQ(f.for_ms, 3000);
  EXPECT_FALSE(f.rule.for_ms);
  EXPECT_TRUE(f.recovers) << "a minority cut off for 3 s is evicted";
  EXPECT_EQ(f.describe(), "fabric partition 3000 ms after reshape #1");
  const std::string plan = fabric_plan_text(s, 1, "/run");
  EXPECT_NE(plan.find("switch_file = \"/run/chaos-fabric-switch-1\"\n"), std::string::npos) << plan;
  EXPECT_EQ(plan.find("for_ms"), std::string::npos) << plan;
  EXPECT_TRUE(parse_fault_plan(plan, "plan.toml").ok());
  const Scenario untriggered = parse_scenario_text(fabric + "after_ms = 10\nfor_ms = 30\n", path());
  EXPECT_FALSE(untriggered.faults[0].triggered);
  EXPECT_FALSE(untriggered.faults[0].live());
  EXPECT_EQ(*untriggered.faults[0].rule.for_ms, 30);
  std::string e = error_of(fabric + "at_step = 2\n");
  EXPECT_NE(e.find("needs for_ms"), std::string::npos) << e;
  e = error_of(fabric + "at_step = 2\nfor_ms = 30\nafter_ms = 5\n");
  EXPECT_NE(e.find("test.toml:11: after_ms in"), std::string::npos) << e;
  e = error_of(fabric + "at_step = 2\nat_ms = 5\nfor_ms = 30\n");
  EXPECT_NE(e.find("exactly one"), std::string::npos) << e;
}

// A fabric fault must have acted in some process (its rule's "first acts" line, in any log
// of the run), else it tested nothing.
TEST(Check, EachFabricRuleMustHaveActed) {
  const Scenario s = parse_scenario_text(
      head +
          "[[fault]]\nkind = \"fabric\"\naction = \"duplicate\"\ntypes = [\"Weights\"]\n"
          "[[fault]]\nkind = \"fabric\"\naction = \"delay\"\ntypes = [\"Stats\"]\n"
          "delay_ms = 5\n",
      path());
  // The plan as the runner writes it: a comment, the seed, then each rule after a blank line
  // (lines 4 and 8).
  const std::string plan = ::testing::TempDir() + "/chaos-fabric-faults.toml";
  std::ofstream(plan) << fabric_plan_text(s, 1);
  const std::string logs = "2026-12-07 [info] [n2] fabric faults: rule at " + plan +
                           ":4 (duplicate) first acts on a Weights from n2 to n1\n";
  std::vector<Verdict> v = check_fabric_rules_acted(s, plan, logs);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_TRUE(v[0].ok) << v[0].detail;
  EXPECT_FALSE(v[1].ok) << "the delay never acted";
  EXPECT_NE(v[1].detail.find("chaos-fabric-faults.toml:8 ("), std::string::npos) << v[1].detail;
  const std::string other = ::testing::TempDir() + "/other-plan.toml";
  std::ofstream(other) << fabric_plan_text(s, 1);
  v = check_fabric_rules_acted(s, other, logs);
  EXPECT_FALSE(v[0].ok) << "another plan's line is not this one's";
  EXPECT_TRUE(check_fabric_rules_acted(parse_scenario_text(head, path()), plan, logs).empty());
}

nlohmann::json view(int e) {
  return {{"kind", "view"}, {"epoch", e}};
}
nlohmann::json commit(int step, int e) {
  return {{"kind", "commit"}, {"step", step}, {"epoch", e}};
}

TEST(Check, EpochsOfCommitsFollowTheJournaledView) {
  EXPECT_TRUE(check_epochs({view(4), commit(0, 4), commit(1, 4), view(5), commit(2, 5)}).ok);
  // A commit of the aborted epoch after the view changed: a stale step applied.
  const Verdict stale = check_epochs({view(4), commit(0, 4), view(5), commit(1, 4)});
  EXPECT_FALSE(stale.ok);
  EXPECT_NE(stale.detail.find("step 1 committed under epoch 4"), std::string::npos);
  EXPECT_EQ(steps_redone({commit(0, 4), commit(1, 4), commit(1, 5), commit(2, 5)}), 1);
}

TEST(Check, FaultRowsComeFromTheEvents) {
  Scenario s = parse_scenario_text(
      head +
          "[bounds]\ndetection_ms_max = 100\n[[fault]]\nkind = \"kill\"\nnode = \"n2\"\n"
          "at_step = 3\n",
      path());
  LiveRun run;
  run.faults = {{true, 1000, 42, ""}};
  run.events = {
      {{"kind", "recover"}, {"node", "n1"}, {"unix_ms", 900}},
      {{"kind", "recover"}, {"node", "n2"}, {"unix_ms", 1300}, {"detected_unix_ms", 1250}},
      {{"kind", "dropped"}, {"unix_ms", 1400}, {"text", "x"}},
      {{"kind", "recovered"}, {"unix_ms", 2000}},
      {{"kind", "dropped"},
       {"unix_ms", 3000},
       {"text",
        "messages dropped over the job (coordinator and workers): stale_epoch 3, "
        "wrong_phase 1"}}};
  const std::vector<FaultOutcome> rows = fault_outcomes(s, run);
  EXPECT_EQ(*rows[0].detected_ms, 250);
  EXPECT_EQ(*rows[0].recovered_ms, 1000);
  EXPECT_EQ(rows[0].drops_seen, 1);
  const std::vector<Verdict> v = check_faults(s, rows);
  ASSERT_EQ(v.size(), 2u);
  EXPECT_TRUE(v[0].ok);   // recovered
  EXPECT_FALSE(v[1].ok);  // 250 ms > the 100 ms bound
  EXPECT_EQ(job_drops(run.events),
            (std::map<std::string, int64_t>{{"stale_epoch", 3}, {"wrong_phase", 1}}));
}

TEST(Check, ConfiguredFaultsMustShowInTheEvents) {
  const Scenario s =
      parse_scenario_text(head +
                              "[[fault]]\nkind = \"storage\"\nspec = \"full@4,corrupt@6\"\n"
                              "[[fault]]\nkind = \"transfer\"\nspec = \"corrupt@1\"\n",
                          path());
  const std::vector<nlohmann::json> skipped = {
      {{"kind", "checkpoint_skipped"}, {"step", 4}, {"unix_ms", 1}}};
  std::vector<Verdict> v = check_configured(s, skipped);
  ASSERT_EQ(v.size(), 2u);  // corrupt@6 was never read (no rollback): not checked
  EXPECT_TRUE(v[0].ok);
  EXPECT_FALSE(v[1].ok);  // no malformed drop: the corrupted transfer was not caught
  v = check_configured(s, {{{"kind", "checkpoint_skipped"}, {"step", 8}, {"unix_ms", 1}}});
  EXPECT_FALSE(v[0].ok);  // the skip of step 8 is not the one of step 4
}

// A partition must evict a node of its smallest group, and each drop of step messages must
// stall a step that the coordinator redoes (else the fault never acted: a vacuous pass).
TEST(Check, PartitionsAndDroppedStepMessagesMustShowInTheEvents) {
  const Scenario s = parse_scenario_text(
      head +
          "[[fault]]\nkind = \"fabric\"\naction = \"partition\"\n"
          "groups = [[\"coordinator\", \"n1\", \"n2\"], [\"n3\"]]\nafter_ms = 4000\n"
          "for_ms = 3000\n"
          "[[fault]]\nkind = \"fabric\"\naction = \"drop\"\nfrom = [\"n1\"]\n"
          "types = [\"GradSlices\"]\nsteps = [3, 3]\nlasts_ms = 400\n",
      path());
  EXPECT_NE(fabric_plan_text(s, 1).find("steps = [3, 3]\nlasts_ms = 400\n"), std::string::npos)
      << fabric_plan_text(s, 1);
  std::vector<Verdict> v = check_configured(s, {{{"kind", "recover"}, {"node", "n2"}}});
  ASSERT_EQ(v.size(), 2u);
  EXPECT_FALSE(v[0].ok) << "n2 is not of the minority";
  EXPECT_FALSE(v[1].ok) << "no step was redone";
  v = check_configured(
      s, {{{"kind", "recover"}, {"node", "n3"}},
          {{"kind", "recover"}, {"text", "step 3 did not finish within step_timeout_ms = 8000"}}});
  EXPECT_TRUE(v[0].ok) << v[0].detail;
  EXPECT_TRUE(v[1].ok) << v[1].detail;
}

// A scenario names the events its point rests on (a reshape aborted: a recover with no node
// lost); the job ending well without them is not a pass.
TEST(Check, ExpectedEventsMustAppear) {
  const Scenario s =
      parse_scenario_text(head + "expect_events = [\"recover\", \"scaled\"]\n", path());
  std::vector<Verdict> v = check_configured(s, {{{"kind", "recover"}}, {{"kind", "reshape"}}});
  ASSERT_EQ(v.size(), 2u);
  EXPECT_TRUE(v[0].ok) << v[0].detail;
  EXPECT_FALSE(v[1].ok) << "no scaled event";
  EXPECT_NE(error_of(head + "expect_events = [\"Recover now\"]\n").find("not an event kind"),
            std::string::npos);
}

TEST(Check, EveryScenarioFileParses) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(source_dir() + "/chaos/scenarios")) {
    if (e.path().extension() != ".toml") continue;
    EXPECT_NO_THROW(parse_scenario(e.path().string())) << e.path();
    ++n;
  }
  EXPECT_GE(n, 12);
}

TEST(Soak, TheSameSeedDrawsTheSameScenario) {
  EXPECT_EQ(drawn_scenario_text(7, 3, "configs/tiny.toml"),
            drawn_scenario_text(7, 3, "configs/tiny.toml"));
  EXPECT_NE(drawn_scenario_text(7, 3, "configs/tiny.toml"),
            drawn_scenario_text(8, 3, "configs/tiny.toml"));
  // Every drawn scenario is a valid one (its targets exist: the checks of any file apply).
  const std::string tiny = source_dir() + "/configs/tiny.toml";
  int partitions = 0, message_faults = 0, transfers_lost = 0;
  for (int64_t job = 1; job <= 200; ++job) {
    const std::string text = drawn_scenario_text(11, job, tiny);
    EXPECT_NO_THROW(parse_scenario_text(text, "drawn.toml")) << job;
    partitions += text.find("action = \"partition\"") != std::string::npos;
    message_faults += text.find("action = \"duplicate\"") != std::string::npos;
    transfers_lost += text.find("action = \"drop\"") != std::string::npos;
  }
  EXPECT_GT(transfers_lost, 5) << "a kill's or a scale's transfers lost at its event";
  EXPECT_GT(partitions, 5) << "a node partitioned at a step is one of the drawn faults";
  EXPECT_GT(message_faults, 5) << "so are duplicated and overtaken step messages";
  const Scenario cut = [&] {
    for (int64_t job = 1;; ++job)
      if (const std::string text = drawn_scenario_text(11, job, tiny);
          text.find("partition") != std::string::npos)
        return parse_scenario_text(text, "drawn.toml");
  }();
  EXPECT_TRUE(cut.faults.at(0).triggered);
  EXPECT_TRUE(cut.faults.at(0).recovers) << "the cut-off node is evicted and replaced";
}

}  // namespace
}  // namespace troupe::chaos
