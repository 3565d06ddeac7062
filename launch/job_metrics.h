// The job's Prometheus metrics (GET /metrics of the control endpoint, launch/control.h): a
// prometheus-cpp Registry and its text serializer, with one update method per event the
// coordinator sees. Every method is thread-safe; text() may run while they do.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace prometheus {
class Counter;
class Gauge;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace troupe::launch {

// Distinct values of one label (a fault kind, a drop reason). Each value is a time series
// that a scraper keeps forever; the kinds and reasons the runtime names are about a dozen, so
// 32 leaves room and keeps a bug that makes up names from growing the registry without end.
// Past it, new values are counted under label_value_overflow.
inline constexpr size_t metric_label_values_max = 32;
inline constexpr const char* label_value_overflow = "other";

// troupe_recovery_seconds's buckets: a recovery on one machine takes tens of milliseconds, a
// rollback to a checkpoint on a busy cluster tens of seconds.
inline constexpr double recovery_seconds_buckets[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                      1,    2.5,   5,    10,  30};

// troupe_expert_tokens_total has one series per (MoE layer, expert): DeepSeek-V3's 58 × 256
// are 14,848. Up to this many the series are kept; past it only the per-layer imbalance is
// (a scraper would otherwise keep tens of thousands of series per job).
inline constexpr size_t expert_series_max = 16384;

class JobMetrics {
 public:
  JobMetrics();
  ~JobMetrics();
  JobMetrics(const JobMetrics&) = delete;
  JobMetrics& operator=(const JobMetrics&) = delete;

  // A step committed: troupe_steps_total += 1, troupe_committed_step = step, troupe_loss,
  // troupe_tokens_per_second.
  void on_step(int64_t step, double loss, double tokens_per_s);
  void set_epoch(int64_t epoch);  // troupe_epoch: the membership view's epoch
  void set_nodes(int64_t nodes);  // troupe_nodes: the nodes in the current view
  // troupe_faults_total{kind}: a fault seen ("node_lost", "timeout", ...); "" counts as
  // "unknown".
  void on_fault(const std::string& kind);
  // troupe_recoveries_total += 1 and troupe_recovery_seconds observes seconds (clamped at 0).
  void on_recovery(double seconds);
  // troupe_messages_dropped_total{reason}: `count` is the source's running total. A counter
  // never decreases: a count below the last one means the source started over (a restarted
  // router), and all of `count` is new drops.
  void set_dropped(const std::string& reason, uint64_t count);
  // A checkpoint written: troupe_checkpoints_total += 1, the training stall it caused adds to
  // troupe_checkpoint_stall_seconds_total and sets troupe_checkpoint_last_stall_seconds.
  void on_checkpoint(double stall_s);

  // A committed step's tokens per routed expert, per layer (empty for dense layers):
  // troupe_expert_tokens_total{layer,expert} += count (up to expert_series_max series), and
  // troupe_expert_imbalance{layer} = max/mean of the step's counts over the layer's experts
  // (1 when the layer routed nothing): the routing imbalance that EPLB places against.
  void on_expert_load(const std::vector<std::vector<int64_t>>& counts);
  // The expert slots re-placed ([eplb]): troupe_expert_rebalances_total += 1 and
  // troupe_expert_slot_imbalance{placement="before"|"after"} = max/mean load per shard of
  // the window's loads under the old and the new placement;
  // troupe_expert_rebalance_pause_seconds_total += the time the step waited for it;
  // troupe_expert_migration_bytes_total += the weights of the slots it gave another expert.
  void on_rebalance(double before, double after, double pause_s, int64_t moved_bytes);
  // A committed step's Engram cold tiers (engram.host_cache_bytes), summed over the holders:
  // troupe_engram_cache_hits_total / _misses_total += hits / misses,
  // troupe_engram_cold_bytes_total{direction="read"|"written"} += bytes,
  // troupe_engram_miss_seconds_total += the time spent loading misses, and
  // troupe_engram_cache_hit_ratio = the step's hits / (hits + misses) (0 before any).
  void on_engram_tier(int64_t hits, int64_t misses, int64_t bytes_read, int64_t bytes_written,
                      double miss_s);

  // Every metric in the Prometheus text exposition format (version 0.0.4).
  std::string text() const;
  // The registry, for a caller with metrics of its own to add.
  std::shared_ptr<prometheus::Registry> registry() const { return registry_; }

 private:
  void register_engram(prometheus::Registry& r);
  prometheus::Counter& labelled(prometheus::Family<prometheus::Counter>& family,
                                const std::string& label, const std::string& value);

  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Counter* steps_;
  prometheus::Gauge* tokens_per_s_;
  prometheus::Gauge* loss_;
  prometheus::Gauge* epoch_;
  prometheus::Gauge* nodes_;
  prometheus::Gauge* committed_step_;
  prometheus::Family<prometheus::Counter>* faults_;
  prometheus::Counter* recoveries_;
  prometheus::Histogram* recovery_seconds_;
  prometheus::Family<prometheus::Counter>* dropped_;
  prometheus::Counter* checkpoints_;
  prometheus::Counter* checkpoint_stall_s_;
  prometheus::Gauge* checkpoint_last_stall_s_;
  prometheus::Counter* engram_hits_;
  prometheus::Counter* engram_misses_;
  prometheus::Family<prometheus::Counter>* engram_cold_bytes_;
  prometheus::Counter* engram_miss_s_;
  prometheus::Gauge* engram_hit_ratio_;
  prometheus::Family<prometheus::Counter>* expert_tokens_;
  prometheus::Family<prometheus::Gauge>* expert_imbalance_;
  prometheus::Counter* rebalances_;
  prometheus::Counter* rebalance_pause_;
  prometheus::Counter* migration_bytes_;
  prometheus::Family<prometheus::Gauge>* slot_imbalance_;

  std::mutex mu_;                                              // guards the two maps below
  std::map<std::string, std::set<std::string>> label_values_;  // label -> values seen
  std::map<std::string, uint64_t> dropped_last_;               // reason -> the source's last count
};

}  // namespace troupe::launch
