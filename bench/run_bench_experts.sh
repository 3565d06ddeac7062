#!/usr/bin/env bash
# make bench-experts (issue 15): tokens/s of a job whose routed experts run on expert_shard
# actors (`parallel.experts=shards`) next to the same job computing them in its workers,
# both on BENCH_EXPERTS_NODES (3) node processes of `troupe launch`, alternately,
# BENCH_EXPERTS_REPEATS (2) times each, in the same run. Prints the median per-step
# tokens/s of each (steps after BENCH_EXPERTS_WARMUP, validation off) and the ratio
# shards / worker (issue 15 aims for >= 0.8), and checks both end with the same weights.
#   BENCH_EXPERTS_CONFIG (configs/tiny.toml)   BENCH_EXPERTS_STEPS (40)
set -euo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONFIG=${BENCH_EXPERTS_CONFIG:-$ROOT/configs/tiny.toml}
NODES=${BENCH_EXPERTS_NODES:-3}
STEPS=${BENCH_EXPERTS_STEPS:-40}
REPEATS=${BENCH_EXPERTS_REPEATS:-2}
WARMUP=${BENCH_EXPERTS_WARMUP:-5}
PY=/usr/bin/python3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
common=(--config "$CONFIG" --steps "$STEPS" --nodes "$NODES" --set train.eval_every=0)

median_tps() {  # run dir → median tokens/s of the steps after the warm-up
  "$PY" - "$1" "$WARMUP" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
print(f"{statistics.median(r['tokens_per_s'] for r in rows[int(sys.argv[2]):]):.1f}")
PYEOF
}
weights() { grep -o 'weights [0-9a-f]\{16\}' "$1" | tail -1; }

echo "bench-experts: $(basename "$CONFIG"), $NODES node processes, $STEPS steps, $REPEATS runs each," \
  "load $(cut -d' ' -f1 /proc/loadavg)"
worker=() shards=()
for r in $(seq "$REPEATS"); do
  "$BUILD/troupe" launch "${common[@]}" --run-dir "$TMP/w$r" >"$TMP/w$r.out" 2>&1
  worker+=("$(median_tps "$TMP/w$r")")
  "$BUILD/troupe" launch "${common[@]}" --set parallel.experts=shards --run-dir "$TMP/s$r" \
    >"$TMP/s$r.out" 2>&1
  shards+=("$(median_tps "$TMP/s$r")")
  echo "  run $r: worker ${worker[-1]} tok/s ($(weights "$TMP/w$r.out"))   shards ${shards[-1]} tok/s" \
    "($(weights "$TMP/s$r.out"))"
  if [ "$(weights "$TMP/w$r.out")" != "$(weights "$TMP/s$r.out")" ]; then
    echo "bench-experts: the two runs ended with different weights" >&2
    exit 1
  fi
done
"$PY" - "${worker[*]}" "${shards[*]}" <<'PYEOF'
import statistics, sys
w = statistics.median(map(float, sys.argv[1].split()))
s = statistics.median(map(float, sys.argv[2].split()))
print(f"experts in the workers   {w:9.1f} tok/s (median of runs)")
print(f"experts on shard actors  {s:9.1f} tok/s   ratio {s / w:.3f} (issue 15 aims for >= 0.8)")
PYEOF
