// A whole job in one process on CAF's deterministic test scheduler and a simulated clock:
// the real coordinator, N real node agents with their real workers, and the real routers,
// each simulated process on its own SimFabric (sim_network.h). Only the fabric and the clock
// are simulated. A seed draws the job (node count) and its faults (kills, partitions,
// duplicated and reordered messages, latency spikes) and every latency, so a failing seed
// replays exactly; the delivered messages' fingerprint shows it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace troupe::chaos {

struct SimFault {
  // scale_up: the operator's `troupe scale` to one node more, whose process the launcher
  // starts; drain: `troupe scale`'s drain of `node` (it finishes its step and leaves).
  // lose: the next lose_count messages of one of `types` that any process sends are lost on
  // the way (the decorator's drop: a reliable transport never does it alone). Never drawn
  // by draw_plan: tests name it.
  enum class Kind { kill, partition, scale_up, drain, lose } kind = Kind::kill;
  int64_t node = 1;                  // n1…nN
  int64_t after_step = 1;            // once this many steps are committed…
  int64_t after_messages = 0;        // …and this many more messages were delivered
  int64_t for_ms = 0;                // partition: how long node is cut off from every other process
  int64_t lose_count = 0;            // lose: how many messages
  std::vector<uint32_t> types = {};  // lose: of which types (actors/protocol.h)
  // A kill, or a partition past the heartbeat timeout (it evicts): the node is lost.
  bool loses_the_node() const {
    return kind == Kind::kill || (kind == Kind::partition && for_ms > 900);
  }
};

struct SimPlan {
  uint64_t seed = 1;
  int64_t nodes = 3;
  int64_t steps = 4;
  double duplicate_probability = 0, reorder_probability = 0, spike_probability = 0.02;
  std::vector<SimFault> faults;
  // [fault_tolerance] replace_lost: the launcher replaces a node lost after the start once
  // the survivors committed a step (before the start it always does).
  bool replace_lost = false;
  std::vector<std::string> extra_sets;  // on top of sim_job_sets (e.g. more buddy copies)
  std::string describe() const;         // one line, for a failing seed's report
};

// The plan seed names: 2-4 nodes; up to two faults (never every node killed); for a third
// of the seeds (their own draws, so the others' plans stay as they were) also replace_lost,
// a scale-up or a drain.
SimPlan draw_plan(uint64_t seed);

struct SimOutcome {
  bool ok = false;      // every invariant held
  std::string failure;  // the first that did not
  uint64_t fingerprint = 0;
  int64_t steps_done = 0;  // steps the coordinator committed (also when the job did not end)
  int64_t recoveries = 0;
  uint64_t weights_hash = 0;
  uint64_t delivered = 0, dropped = 0;
  uint64_t held = 0;  // messages a partition held until it healed (or its endpoints broke)
  uint64_t lost = 0;  // messages a lose fault lost (also in dropped)
  double simulated_s = 0;
  // How each node process ended, by the order it was started (1…): its exit status (0: the
  // job ended or it was drained; 3: evicted) or -1 while it ran to the end of the schedule.
  std::vector<int> exit_codes;
};

// The job settings of every simulated schedule (on configs/tiny.toml): a model small
// enough for thousands of schedules an hour.
const std::vector<std::string>& sim_job_sets(int64_t steps);

// Runs one schedule. config_text: configs/tiny.toml's text. reference_hash: the weights hash
// of an undisturbed single-process run of the same job (sim_reference_hash).
SimOutcome run_sim(const SimPlan& plan, const std::string& config_text, uint64_t reference_hash);
uint64_t sim_reference_hash(const std::string& config_text, int64_t steps);

}  // namespace troupe::chaos
