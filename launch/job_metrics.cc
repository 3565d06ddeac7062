#include "launch/job_metrics.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <algorithm>

namespace troupe::launch {

namespace {

prometheus::Counter& counter(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r).Add({});
}
prometheus::Gauge& gauge(prometheus::Registry& r, const char* name, const char* help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(r).Add({});
}

}  // namespace

JobMetrics::JobMetrics() : registry_(std::make_shared<prometheus::Registry>()) {
  prometheus::Registry& r = *registry_;
  steps_ = &counter(r, "troupe_steps_total", "Training steps committed by this job");
  tokens_per_s_ = &gauge(r, "troupe_tokens_per_second", "Throughput of the last step");
  loss_ = &gauge(r, "troupe_loss", "Training loss of the last committed step");
  epoch_ = &gauge(r, "troupe_epoch", "Epoch of the current membership view");
  nodes_ = &gauge(r, "troupe_nodes", "Nodes in the current membership view");
  committed_step_ = &gauge(r, "troupe_committed_step", "The last committed step");
  faults_ = &prometheus::BuildCounter()
                 .Name("troupe_faults_total")
                 .Help("Faults seen by the coordinator, by kind")
                 .Register(r);
  recoveries_ = &counter(r, "troupe_recoveries_total", "Recoveries completed after a fault");
  const std::vector<double> buckets(std::begin(recovery_seconds_buckets),
                                    std::end(recovery_seconds_buckets));
  recovery_seconds_ = &prometheus::BuildHistogram()
                           .Name("troupe_recovery_seconds")
                           .Help("Time from a fault to training again, in seconds")
                           .Register(r)
                           .Add({}, buckets);
  dropped_ = &prometheus::BuildCounter()
                  .Name("troupe_messages_dropped_total")
                  .Help("Messages dropped by the runtime, by reason")
                  .Register(r);
  checkpoints_ = &counter(r, "troupe_checkpoints_total", "Checkpoints written");
  checkpoint_stall_s_ = &counter(r, "troupe_checkpoint_stall_seconds_total",
                                 "Training time lost waiting for checkpoints, in seconds");
  checkpoint_last_stall_s_ = &gauge(r, "troupe_checkpoint_last_stall_seconds",
                                    "Training time the last checkpoint cost, in seconds");
  expert_tokens_ = &prometheus::BuildCounter()
                        .Name("troupe_expert_tokens_total")
                        .Help("Tokens routed to each expert of each MoE layer")
                        .Register(r);
  expert_imbalance_ = &prometheus::BuildGauge()
                           .Name("troupe_expert_imbalance")
                           .Help(
                               "Max over mean of the tokens per expert of a MoE layer, "
                               "last committed step (1: balanced)")
                           .Register(r);
  rebalances_ = &counter(r, "troupe_expert_rebalances_total", "Re-placements of the expert slots");
  rebalance_pause_ = &counter(r, "troupe_expert_rebalance_pause_seconds_total",
                              "Time steps waited for the eplb_rebalancer's placement");
  migration_bytes_ = &counter(r, "troupe_expert_migration_bytes_total",
                              "Weights of the expert slots that rebalances gave another expert");
  slot_imbalance_ = &prometheus::BuildGauge()
                         .Name("troupe_expert_slot_imbalance")
                         .Help(
                             "Max over mean of the load per expert shard, mean over MoE layers, "
                             "of the last rebalance's window under the placement before and after")
                         .Register(r);
  register_engram(r);
}

JobMetrics::~JobMetrics() = default;

void JobMetrics::register_engram(prometheus::Registry& r) {
  engram_hits_ = &counter(r, "troupe_engram_cache_hits_total",
                          "Engram rows the shards' host caches held when asked");
  engram_misses_ = &counter(r, "troupe_engram_cache_misses_total",
                            "Engram rows the shards loaded into their host caches");
  engram_cold_bytes_ = &prometheus::BuildCounter()
                            .Name("troupe_engram_cold_bytes_total")
                            .Help("Bytes of Engram rows read from and written to the cold tier")
                            .Register(r);
  engram_miss_s_ = &counter(r, "troupe_engram_miss_seconds_total",
                            "Time the Engram shards spent loading missed rows");
  engram_hit_ratio_ = &prometheus::BuildGauge()
                           .Name("troupe_engram_cache_hit_ratio")
                           .Help("Hits over hits and misses of the last committed step")
                           .Register(r)
                           .Add({});
}

void JobMetrics::on_engram_tier(int64_t hits, int64_t misses, int64_t bytes_read,
                                int64_t bytes_written, double miss_s) {
  if (hits + misses <= 0) return;
  engram_hits_->Increment(double(hits));
  engram_misses_->Increment(double(misses));
  engram_cold_bytes_->Add({{"direction", "read"}})
      .Increment(double(std::max<int64_t>(0, bytes_read)));
  engram_cold_bytes_->Add({{"direction", "written"}})
      .Increment(double(std::max<int64_t>(0, bytes_written)));
  engram_miss_s_->Increment(std::max(0.0, miss_s));
  engram_hit_ratio_->Set(double(hits) / double(hits + misses));
}

void JobMetrics::on_step(int64_t step, double loss, double tokens_per_s) {
  steps_->Increment();
  committed_step_->Set(double(step));
  loss_->Set(loss);
  tokens_per_s_->Set(tokens_per_s);
}

void JobMetrics::set_epoch(int64_t epoch) {
  epoch_->Set(double(epoch));
}

void JobMetrics::set_nodes(int64_t nodes) {
  nodes_->Set(double(nodes));
}

prometheus::Counter& JobMetrics::labelled(prometheus::Family<prometheus::Counter>& family,
                                          const std::string& label, const std::string& value) {
  // mu_ held by the caller.
  std::set<std::string>& seen = label_values_[label];
  std::string v = value.empty() ? "unknown" : value;
  if (!seen.count(v)) {
    if (seen.size() >= metric_label_values_max) v = label_value_overflow;
    seen.insert(v);
  }
  return family.Add({{label, v}});
}

void JobMetrics::on_fault(const std::string& kind) {
  std::lock_guard lock(mu_);
  labelled(*faults_, "kind", kind).Increment();
}

void JobMetrics::on_recovery(double seconds) {
  recoveries_->Increment();
  recovery_seconds_->Observe(std::max(0.0, seconds));
}

void JobMetrics::set_dropped(const std::string& reason, uint64_t count) {
  std::lock_guard lock(mu_);
  uint64_t& last = dropped_last_[reason];
  const uint64_t added = count >= last ? count - last : count;  // below: the source restarted
  last = count;
  labelled(*dropped_, "reason", reason).Increment(double(added));
}

void JobMetrics::on_checkpoint(double stall_s) {
  const double s = std::max(0.0, stall_s);
  checkpoints_->Increment();
  checkpoint_stall_s_->Increment(s);
  checkpoint_last_stall_s_->Set(s);
}

void JobMetrics::on_expert_load(const std::vector<std::vector<int64_t>>& counts) {
  size_t series = 0;
  for (const auto& layer : counts) series += layer.size();
  for (size_t l = 0; l < counts.size(); ++l) {
    const std::vector<int64_t>& c = counts[l];
    if (c.empty()) continue;
    const std::string layer = std::to_string(l);
    int64_t sum = 0, max = 0;
    for (size_t e = 0; e < c.size(); ++e) {
      sum += c[e], max = std::max(max, c[e]);
      if (series <= expert_series_max)
        expert_tokens_->Add({{"layer", layer}, {"expert", std::to_string(e)}})
            .Increment(double(std::max<int64_t>(0, c[e])));
    }
    const double mean = double(sum) / double(c.size());
    expert_imbalance_->Add({{"layer", layer}}).Set(sum > 0 ? double(max) / mean : 1.0);
  }
}

void JobMetrics::on_rebalance(double before, double after, double pause_s, int64_t moved_bytes) {
  rebalances_->Increment();
  rebalance_pause_->Increment(std::max(0.0, pause_s));
  migration_bytes_->Increment(double(std::max<int64_t>(0, moved_bytes)));
  slot_imbalance_->Add({{"placement", "before"}}).Set(before);
  slot_imbalance_->Add({{"placement", "after"}}).Set(after);
}

std::string JobMetrics::text() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace troupe::launch
