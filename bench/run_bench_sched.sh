#!/usr/bin/env bash
# make bench-sched (issue 17): the planner's padding waste (bench_sched SCHED_STEPS), then
# tokens/s of `parallel.schedule = "pull"` next to the static split with one worker computing
# SLOW_FACTOR (2) times slower (TROUPE_SLOW_COMPUTE=worker.1:F, actors/compute_faults.h), in
# the same run (bench/run_bench_placement.sh: NODES (3), STEPS (20), REPEATS (2), WARMUP,
# CONFIG), on BATCH (32: 16 micro-batches) rows a step, with each arm's median idle fraction
# (the workers' share of the step not computing). docs/schedule.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-build}
"$BUILD/bench/bench_sched" "${SCHED_STEPS:-200}"
FACTOR=${SLOW_FACTOR:-2}
RUNS=$(mktemp -d)
trap 'rm -rf "$RUNS"' EXIT
echo "bench-sched: worker 1 of ${NODES:-3} computes ${FACTOR}x slower (TROUPE_SLOW_COMPUTE)"
# The arms' --set flags: the batch goes on both (A has only the common flags and this file's).
env TROUPE_SLOW_COMPUTE="worker.1:$FACTOR" STEPS="${STEPS:-20}" KEEP_RUNS="$RUNS" \
  EXTRA_SETS="--set train.batch_size=${BATCH:-32}" \
  "$ROOT/bench/run_bench_placement.sh" "$BUILD" bench-sched "static split" "pull" \
  "--set parallel.schedule=pull" "issue 17: >= 1.3x"
for arm in a b; do
  /usr/bin/python3 - "$RUNS" "$arm" "${WARMUP:-5}" <<'PYEOF'
import glob, json, statistics, sys
runs, arm, warm = sys.argv[1], sys.argv[2], int(sys.argv[3])
idle = [j["idle_fraction"] for d in sorted(glob.glob(f"{runs}/{arm}[0-9]*/"))
        for j in map(json.loads, open(d + "metrics.jsonl")) if j["step"] >= warm]
name = {"a": "static split", "b": "pull"}[arm]
print(f"{name:<28}idle fraction {statistics.median(idle):.3f} (median over the runs' steps)")
PYEOF
done
