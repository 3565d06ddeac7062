// JobMetrics (launch/job_metrics.h) as a scraper sees it: GET /metrics of a control endpoint,
// parsed by python3-prometheus-client's text parser (tests/launch/parse_metrics.py), with
// the values its update methods put there.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "launch/control.h"
#include "launch/job_metrics.h"
#include "runtime/http_client.h"

namespace troupe::launch {
namespace {

// The samples of a Prometheus text, one "TYPE name{labels} value" line each, as the Python
// client's parser reads them; fails the test when it does not parse.
std::set<std::string> parsed_samples(const std::string& text) {
  const char* source = std::getenv("TROUPE_SOURCE_DIR");
  if (!source) {
    ADD_FAILURE() << "TROUPE_SOURCE_DIR is not set: run through ctest";
    return {};
  }
  const std::string file = (std::filesystem::temp_directory_path() /
                            ("troupe_metrics_" + std::to_string(::getpid()) + ".txt"))
                               .string();
  std::ofstream(file) << text;
  const std::string cmd = std::string(TROUPE_PYTHON) + " " + source +
                          "/tests/launch/parse_metrics.py " + file + " 2>&1";
  FILE* pipe = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  for (size_t n; pipe && (n = std::fread(buf, 1, sizeof buf, pipe)) > 0;) out.append(buf, n);
  const int rc = pipe ? ::pclose(pipe) : -1;
  std::filesystem::remove(file);
  EXPECT_EQ(rc, 0) << cmd << "\n" << out << "\nthe text was:\n" << text;
  std::set<std::string> lines;
  for (size_t at = 0, nl; (nl = out.find('\n', at)) != std::string::npos; at = nl + 1)
    lines.insert(out.substr(at, nl - at));
  return lines;
}

void expect_samples(const std::set<std::string>& have, const std::vector<std::string>& want) {
  for (const std::string& w : want) EXPECT_TRUE(have.count(w)) << "missing sample: " << w;
}

TEST(JobMetrics, EveryMetricParsesWithItsValue) {
  JobMetrics m;
  m.on_step(41, 2.5, 1000);
  m.on_step(42, 2.25, 1500);
  m.set_epoch(3);
  m.set_nodes(4);
  m.on_fault("node_lost");
  m.on_fault("node_lost");
  m.on_fault("");
  m.on_recovery(0.2);
  m.on_recovery(12);
  m.set_dropped("stale_epoch", 5);
  m.on_checkpoint(0.5);
  m.on_checkpoint(0.25);
  expect_samples(
      parsed_samples(m.text()),
      {"counter troupe_steps_total{} 2.0", "gauge troupe_committed_step{} 42.0",
       "gauge troupe_loss{} 2.25", "gauge troupe_tokens_per_second{} 1500.0",
       "gauge troupe_epoch{} 3.0", "gauge troupe_nodes{} 4.0",
       "counter troupe_faults_total{kind=\"node_lost\"} 2.0",
       "counter troupe_faults_total{kind=\"unknown\"} 1.0", "counter troupe_recoveries_total{} 2.0",
       "histogram troupe_recovery_seconds_bucket{le=\"0.01\"} 0.0",
       "histogram troupe_recovery_seconds_bucket{le=\"0.25\"} 1.0",
       "histogram troupe_recovery_seconds_bucket{le=\"30\"} 2.0",
       "histogram troupe_recovery_seconds_bucket{le=\"+Inf\"} 2.0",
       "histogram troupe_recovery_seconds_count{} 2.0",
       "histogram troupe_recovery_seconds_sum{} 12.2",
       "counter troupe_messages_dropped_total{reason=\"stale_epoch\"} 5.0",
       "counter troupe_checkpoints_total{} 2.0",
       "counter troupe_checkpoint_stall_seconds_total{} 0.75",
       "gauge troupe_checkpoint_last_stall_seconds{} 0.25"});
}

TEST(JobMetrics, ExpertLoadPerLayer) {
  JobMetrics m;
  m.on_expert_load({{}, {3, 1, 0, 4}, {0, 0, 0, 0}});  // a dense layer, then two MoE layers
  m.on_expert_load({{}, {1, 1, 1, 1}, {0, 0, 0, 0}});
  const std::set<std::string> have = parsed_samples(m.text());
  expect_samples(have, {"counter troupe_expert_tokens_total{expert=\"0\",layer=\"1\"} 4.0",
                        "counter troupe_expert_tokens_total{expert=\"3\",layer=\"1\"} 5.0",
                        "counter troupe_expert_tokens_total{expert=\"2\",layer=\"2\"} 0.0",
                        "gauge troupe_expert_imbalance{layer=\"1\"} 1.0",
                        "gauge troupe_expert_imbalance{layer=\"2\"} 1.0"});
  m.on_expert_load({{}, {3, 1, 0, 4}, {0, 0, 0, 0}});
  expect_samples(parsed_samples(m.text()), {"gauge troupe_expert_imbalance{layer=\"1\"} 2.0"});
  for (const std::string& line : have) EXPECT_EQ(line.find("layer=\"0\""), std::string::npos);
  // Past expert_series_max series, only the imbalance is kept.
  JobMetrics big;
  big.on_expert_load({std::vector<int64_t>(expert_series_max + 1, 2)});
  const std::string text = big.text();
  EXPECT_EQ(text.find("troupe_expert_tokens_total{"), std::string::npos);
  EXPECT_NE(text.find("troupe_expert_imbalance{layer=\"0\"} 1"), std::string::npos);
}

TEST(JobMetrics, RebalancesAndTheSlotImbalanceBeforeAndAfter) {
  JobMetrics m;
  expect_samples(parsed_samples(m.text()), {"counter troupe_expert_rebalances_total{} 0.0"});
  m.on_rebalance(1.5, 1.25, 0.25, 4096);
  m.on_rebalance(1.75, 1.0, 0.5, 0);
  expect_samples(parsed_samples(m.text()),
                 {"counter troupe_expert_rebalances_total{} 2.0",
                  "counter troupe_expert_rebalance_pause_seconds_total{} 0.75",
                  "counter troupe_expert_migration_bytes_total{} 4096.0",
                  "gauge troupe_expert_slot_imbalance{placement=\"before\"} 1.75",
                  "gauge troupe_expert_slot_imbalance{placement=\"after\"} 1.0"});
}

TEST(JobMetrics, EngramColdTierCountsAndTheLastStepsHitRatio) {
  JobMetrics m;
  m.on_engram_tier(0, 0, 0, 0, 0);  // no tier: nothing counted
  expect_samples(parsed_samples(m.text()), {"counter troupe_engram_cache_hits_total{} 0.0",
                                            "gauge troupe_engram_cache_hit_ratio{} 0.0"});
  m.on_engram_tier(30, 10, 640, 320, 0.5);
  m.on_engram_tier(9, 1, 64, 0, 0.25);
  expect_samples(parsed_samples(m.text()),
                 {"counter troupe_engram_cache_hits_total{} 39.0",
                  "counter troupe_engram_cache_misses_total{} 11.0",
                  "counter troupe_engram_cold_bytes_total{direction=\"read\"} 704.0",
                  "counter troupe_engram_cold_bytes_total{direction=\"written\"} 320.0",
                  "counter troupe_engram_miss_seconds_total{} 0.75",
                  "gauge troupe_engram_cache_hit_ratio{} 0.9"});
}

TEST(JobMetrics, DroppedCountsAreRunningTotalsThatNeverGoBack) {
  JobMetrics m;
  m.set_dropped("full_queue", 5);
  m.set_dropped("full_queue", 8);  // 3 more
  m.set_dropped("full_queue", 3);  // the source restarted: 3 more
  m.set_dropped("full_queue", 3);  // nothing new
  expect_samples(parsed_samples(m.text()),
                 {"counter troupe_messages_dropped_total{reason=\"full_queue\"} 11.0"});
}

TEST(JobMetrics, LabelValuesPastTheCapCountAsOther) {
  JobMetrics m;
  for (size_t i = 0; i < metric_label_values_max + 8; ++i) m.on_fault("kind" + std::to_string(i));
  const std::set<std::string> have = parsed_samples(m.text());
  size_t kinds = 0;
  for (const std::string& line : have) kinds += line.rfind("counter troupe_faults_total{", 0) == 0;
  EXPECT_EQ(kinds, metric_label_values_max + 1);
  expect_samples(have, {"counter troupe_faults_total{kind=\"kind0\"} 1.0",
                        "counter troupe_faults_total{kind=\"other\"} 8.0"});
}

TEST(JobMetrics, OddLabelValuesAreEscaped) {
  JobMetrics m;
  m.on_fault("quote\" backslash\\ newline\n");
  const std::set<std::string> have = parsed_samples(m.text());
  // parse_metrics.py prints the value the parser read back as a JSON string.
  expect_samples(have,
                 {R"(counter troupe_faults_total{kind="quote\" backslash\\ newline\n"} 1.0)"});
}

TEST(JobMetrics, UpdatesFromManyThreadsAllCount) {
  JobMetrics m;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&m, t] {
      for (int i = 0; i < 1000; ++i) {
        m.on_fault(t % 2 ? "a" : "b");
        m.on_step(i, 1.0, 1.0);
        if (i % 100 == 0) (void)m.text();
      }
    });
  for (auto& th : threads) th.join();
  expect_samples(parsed_samples(m.text()), {"counter troupe_steps_total{} 4000.0",
                                            "counter troupe_faults_total{kind=\"a\"} 2000.0",
                                            "counter troupe_faults_total{kind=\"b\"} 2000.0"});
}

// The issue's check: what GET /metrics serves parses with the Python client's parser.
class MetricsTarget : public ControlTarget {
 public:
  explicit MetricsTarget(JobMetrics& m) : m_(m) {}
  nlohmann::json status() override { return nlohmann::json::object(); }
  std::string metrics_text() override { return m_.text(); }
  nlohmann::json history() override { return nlohmann::json::object(); }
  ControlReply scale(int64_t) override { return {400, "no"}; }
  ControlReply drain(const std::string&) override { return {400, "no"}; }
  ControlReply pause() override { return {400, "no"}; }
  ControlReply resume() override { return {400, "no"}; }
  ControlReply checkpoint() override { return {400, "no"}; }

 private:
  JobMetrics& m_;
};

TEST(JobMetrics, GetMetricsParsesWithThePrometheusClient) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("troupe_metrics_ep_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  JobMetrics m;
  m.on_step(1, 3.5, 200);
  m.on_fault("node_lost");
  m.on_recovery(0.05);
  MetricsTarget target(m);
  ControlEndpoint ep;
  ep.start(dir.string(), "127.0.0.1", 0, target, 4);
  runtime::HttpCall c;
  c.target = "/metrics";
  c.token = ep.token();
  auto r = runtime::http_call(runtime::parse_http_address(ep.address()).value(), c);
  ep.stop();
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  EXPECT_EQ(r.value().status, 200);
  EXPECT_EQ(r.value().content_type, "text/plain; version=0.0.4; charset=utf-8");
  expect_samples(parsed_samples(r.value().body),
                 {"counter troupe_steps_total{} 1.0", "gauge troupe_loss{} 3.5",
                  "counter troupe_faults_total{kind=\"node_lost\"} 1.0",
                  "histogram troupe_recovery_seconds_bucket{le=\"0.05\"} 1.0"});
}

}  // namespace
}  // namespace troupe::launch
