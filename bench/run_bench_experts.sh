#!/usr/bin/env bash
# make bench-experts (issue 15): tokens/s of a job whose routed experts run on expert_shard
# actors (`parallel.experts=shards`) next to the same job computing them in its workers, in
# the same run (bench/run_bench_placement.sh: NODES, STEPS, REPEATS, WARMUP, CONFIG).
set -euo pipefail
exec "$(dirname "$0")/run_bench_placement.sh" "${1:-build}" bench-experts \
  "experts in the workers" "experts on shard actors" "--set parallel.experts=shards" \
  "issue 15 aims for >= 0.8"
