#!/usr/bin/env bash
# make bench-engram (issue 16): tokens/s of a job whose Engram tables live on engram_shard
# actors (`engram.placement=shards`, ENGRAM_SHARDS (2) shards, each held twice) with each
# holder's host cache bounded to ENGRAM_CACHE_PERCENT (10) % of its tables (the rest in the
# RocksDB cold tier; 0: no bound, all in memory), next to the same job with the tables
# replicated in every worker, in the same run (bench/run_bench_placement.sh: NODES, STEPS,
# REPEATS, WARMUP, CONFIG), with how long the forwards waited for the prefetched rows and
# the cold tier's hits and misses (the node logs' lines); and next to the same shards with
# every row in memory (no cold tier), which parts the cost of the tier from that of the
# shards.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-build}
SHARDS=${ENGRAM_SHARDS:-2}
PERCENT=${ENGRAM_CACHE_PERCENT:-10}
CONFIG=${CONFIG:-$ROOT/configs/tiny.toml}
# The table parameters (troupe's own count, from the config) → bytes per holder, × PERCENT.
PARAMS=$("$BUILD/troupe" train --config "$CONFIG" --print-params 2>/dev/null |
  awk '$3 == "engram-adam" { n += $4 } END { print n + 0 }')
[ "$PARAMS" -gt 0 ] || { echo "bench-engram: cannot read the Engram table count" >&2; exit 1; }
CACHE=$((PARAMS * 12 / SHARDS * PERCENT / 100))
echo "bench-engram: $PARAMS table parameters, $SHARDS shards, host cache $CACHE bytes per holder" \
  "($PERCENT% of its tables with their moments)"
RUNS=$(mktemp -d)
trap 'rm -rf "$RUNS"' EXIT
env LOG_GREP="Engram rows waited\|host cache" CONFIG="$CONFIG" KEEP_RUNS="$RUNS" \
  "$ROOT/bench/run_bench_placement.sh" "$BUILD" bench-engram \
  "tables in every worker" "shards, cache $PERCENT%" \
  "--set engram.placement=shards --set engram.shards=$SHARDS --set engram.host_cache_bytes=$CACHE" \
  "issue 16: within 3%" \
  "shards, all in memory" "--set engram.placement=shards --set engram.shards=$SHARDS"
# The tier's cost on the critical path, from the same runs: how much longer the forwards
# waited for their rows per step with the cache than with every row in memory, as a share of
# the cached runs' median step time (steps after WARMUP) — a figure the box's load moves far
# less than tokens/s.
/usr/bin/python3 - "$RUNS" "${WARMUP:-5}" <<'PYEOF'
import glob, json, re, statistics, sys
runs, warmup = sys.argv[1], int(sys.argv[2])
def waits(arm):  # mean over workers of ms waited per prefetch, per run
    out = []
    for d in sorted(glob.glob(f"{runs}/{arm}[0-9]*/")):
        ms = [float(m.group(1)) for f in glob.glob(d + "node-*.log") for l in open(f)
              if (m := re.search(r"Engram rows waited .* \(([0-9.]+) ms each\)", l))]
        if ms:
            out.append(sum(ms) / len(ms))
    return out
def step_ms(arm):
    out = []
    for d in sorted(glob.glob(f"{runs}/{arm}[0-9]*/")):
        t = [json.loads(l)["unix_ms"] for l in open(d + "metrics.jsonl")][warmup:]
        out.append(statistics.median(b - a for a, b in zip(t, t[1:])))
    return out
b, c, step = waits("b"), waits("c"), step_ms("b")
if b and c and step:
    extra = statistics.median(b) - statistics.median(c)
    print(f"forwards' wait per step: {statistics.median(b):.1f} ms with the cache, "
          f"{statistics.median(c):.1f} ms all in memory (medians of runs): the tier adds "
          f"{extra:.1f} ms = {100 * extra / statistics.median(step):.1f}% of a "
          f"{statistics.median(step):.0f} ms step (issue 16: within 3%)")
PYEOF
