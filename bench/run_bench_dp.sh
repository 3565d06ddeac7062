#!/usr/bin/env bash
# make bench-dp: the cost of the runtime (issue 5). The same tiny job, same threads, run
# in one plain process (`troupe train`) and under the runtime with one node process
# (`troupe launch --nodes 1`: coordinator + node process, CAF actors, the step protocol),
# alternately, BENCH_DP_REPEATS times each. Prints the median per-step tokens/s of each run
# (steps after BENCH_DP_WARMUP, validation excluded) and the ratio runtime / plain, which
# issue 5 wants >= 0.95; plus the 2-node figure, for scale.
#   BENCH_DP_STEPS (60)    steps per run      BENCH_DP_REPEATS (2)   runs of each
#   BENCH_DP_WARMUP (5)    steps skipped      BENCH_THREADS (nproc)  compute threads
set -euo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STEPS=${BENCH_DP_STEPS:-60}
REPEATS=${BENCH_DP_REPEATS:-2}
WARMUP=${BENCH_DP_WARMUP:-5}
THREADS=${BENCH_THREADS:-$(nproc)}
PY=/usr/bin/python3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
common=(--config "$ROOT/configs/tiny.toml" --steps "$STEPS" --set train.eval_every=0)

median_tps() {  # run dir → median tokens/s of the steps after the warm-up
  "$PY" - "$1" "$WARMUP" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
print(f"{statistics.median(r['tokens_per_s'] for r in rows[int(sys.argv[2]):]):.1f}")
PYEOF
}

echo "bench-dp: tiny, $STEPS steps, $THREADS threads, $REPEATS runs each, load $(cut -d' ' -f1 /proc/loadavg)"
plain=() runtime=()
for r in $(seq "$REPEATS"); do
  "$BUILD/troupe" train "${common[@]}" --set "train.threads=$THREADS" --run-dir "$TMP/plain$r" >/dev/null 2>&1
  plain+=("$(median_tps "$TMP/plain$r")")
  "$BUILD/troupe" launch "${common[@]}" --nodes 1 --threads-per-node "$THREADS" --run-dir "$TMP/rt$r" >/dev/null 2>&1
  runtime+=("$(median_tps "$TMP/rt$r")")
  echo "  run $r: plain ${plain[-1]} tok/s   runtime (1 node process) ${runtime[-1]} tok/s"
done
"$BUILD/troupe" launch "${common[@]}" --nodes 2 --run-dir "$TMP/rt2" >/dev/null 2>&1
two=$(median_tps "$TMP/rt2")
"$PY" - "${plain[*]}" "${runtime[*]}" "$two" <<'PYEOF'
import statistics, sys
plain = statistics.median(map(float, sys.argv[1].split()))
rt = statistics.median(map(float, sys.argv[2].split()))
print(f"plain process      {plain:9.1f} tok/s (median of runs)")
print(f"runtime, 1 node    {rt:9.1f} tok/s   ratio {rt / plain:.3f} (issue 5: >= 0.95)")
print(f"runtime, 2 nodes   {float(sys.argv[3]):9.1f} tok/s   ratio {float(sys.argv[3]) / plain:.3f} "
      f"(2 processes sharing the same cores)")
PYEOF
