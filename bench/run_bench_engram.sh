#!/usr/bin/env bash
# make bench-engram (issue 16): tokens/s of a job whose Engram tables live on engram_shard
# actors (`engram.placement=shards`, ENGRAM_SHARDS (2) shards, each held twice) next to the
# same job with the tables replicated in every worker, in the same run
# (bench/run_bench_placement.sh: NODES, STEPS, REPEATS, WARMUP, CONFIG), and how long the
# forwards waited for the prefetched rows (each worker's log line).
set -euo pipefail
exec env LOG_GREP="Engram rows waited" "$(dirname "$0")/run_bench_placement.sh" "${1:-build}" \
  bench-engram "tables in every worker" "tables on engram shards" \
  "--set engram.placement=shards --set engram.shards=${ENGRAM_SHARDS:-2}" \
  "issue 16: within 3% with the host cache under 10%; no tiers yet"
