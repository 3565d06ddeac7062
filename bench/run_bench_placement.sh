#!/usr/bin/env bash
# The A/B run under make bench-experts and make bench-engram: tokens/s of a job with a
# placement setting (SETS) next to the same job without it, both on NODES (3) node processes
# of `troupe launch`, alternately, REPEATS (2) times each, in the same run. Prints the median
# per-step tokens/s of each (steps after WARMUP, validation off) and the ratio, checks both
# end with the same weights, and prints the node-log lines matching LOG_GREP (if set) of the
# last run with the setting.
#   run_bench_placement.sh BUILD NAME "A label" "B label" "B --set args" "aim text"
#   env: CONFIG (configs/tiny.toml) STEPS (40) NODES (3) REPEATS (2) WARMUP (5) LOG_GREP
set -euo pipefail
BUILD=$1 NAME=$2 A_LABEL=$3 B_LABEL=$4 B_SETS=$5 AIM=$6
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONFIG=${CONFIG:-$ROOT/configs/tiny.toml}
NODES=${NODES:-3}
STEPS=${STEPS:-40}
REPEATS=${REPEATS:-2}
WARMUP=${WARMUP:-5}
PY=/usr/bin/python3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
common=(--config "$CONFIG" --steps "$STEPS" --nodes "$NODES" --set train.eval_every=0)
read -r -a b_sets <<<"$B_SETS"

median_tps() {  # run dir → median tokens/s of the steps after the warm-up
  "$PY" - "$1" "$WARMUP" <<'PYEOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
print(f"{statistics.median(r['tokens_per_s'] for r in rows[int(sys.argv[2]):]):.1f}")
PYEOF
}
weights() { grep -o 'weights [0-9a-f]\{16\}' "$1" | tail -1; }

echo "$NAME: $(basename "$CONFIG"), $NODES node processes, $STEPS steps, $REPEATS runs each," \
  "load $(cut -d' ' -f1 /proc/loadavg)"
a=() b=()
for r in $(seq "$REPEATS"); do
  "$BUILD/troupe" launch "${common[@]}" --run-dir "$TMP/a$r" >"$TMP/a$r.out" 2>&1
  a+=("$(median_tps "$TMP/a$r")")
  "$BUILD/troupe" launch "${common[@]}" "${b_sets[@]}" --run-dir "$TMP/b$r" >"$TMP/b$r.out" 2>&1
  b+=("$(median_tps "$TMP/b$r")")
  echo "  run $r: $A_LABEL ${a[-1]} tok/s ($(weights "$TMP/a$r.out"))   $B_LABEL ${b[-1]} tok/s" \
    "($(weights "$TMP/b$r.out"))"
  if [ "$(weights "$TMP/a$r.out")" != "$(weights "$TMP/b$r.out")" ]; then
    echo "$NAME: the two runs ended with different weights" >&2
    exit 1
  fi
done
if [ -n "${LOG_GREP:-}" ]; then
  grep -h "$LOG_GREP" "$TMP/b$REPEATS"/node-*.log | sed 's/^[^]]*\] /  /' || true
fi
"$PY" - "${a[*]}" "${b[*]}" "$A_LABEL" "$B_LABEL" "$AIM" <<'PYEOF'
import statistics, sys
a = statistics.median(map(float, sys.argv[1].split()))
b = statistics.median(map(float, sys.argv[2].split()))
print(f"{sys.argv[3]:<26}{a:9.1f} tok/s (median of runs)")
print(f"{sys.argv[4]:<26}{b:9.1f} tok/s   ratio {b / a:.3f} ({sys.argv[5]})")
PYEOF
