#!/usr/bin/env bash
# The A/B(/C) run under make bench-experts and make bench-engram: tokens/s of a job with a
# placement setting (B's SETS) next to the same job without it (A), and optionally next to a
# third setting (C: e.g. the same placement with everything in memory), all on NODES (3)
# node processes of `troupe launch`, in turn, REPEATS (2) times each, in the same run.
# Prints the median per-step tokens/s of each (steps after WARMUP, validation off) and the
# ratios B/A (and C/A, B/C), checks every run ends with the same weights, and prints the
# node-log lines matching LOG_GREP (if set) of the last B (and C) run.
#   run_bench_placement.sh BUILD NAME "A label" "B label" "B --set args" "aim text" \
#     ["C label" "C --set args"]
#   env: CONFIG (configs/tiny.toml) STEPS (40) NODES (3) REPEATS (2) WARMUP (5) LOG_GREP
#        EXTRA_SETS ("--set k=v ..." on every arm)
#        KEEP_RUNS (a directory: the runs a1 b1 c1 a2 … are kept there, else removed)
set -euo pipefail
BUILD=$1 NAME=$2 AIM=$6
labels=("$3" "$4") sets=("" "$5") arms=(a b)
if [ $# -ge 8 ]; then labels+=("$7") sets+=("$8") arms+=(c); fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONFIG=${CONFIG:-$ROOT/configs/tiny.toml}
NODES=${NODES:-3}
STEPS=${STEPS:-40}
REPEATS=${REPEATS:-2}
WARMUP=${WARMUP:-5}
PY=/usr/bin/python3
if [ -n "${KEEP_RUNS:-}" ]; then  # the runs' directories stay there for the caller
  TMP=$KEEP_RUNS && mkdir -p "$TMP"
else
  TMP=$(mktemp -d) && trap 'rm -rf "$TMP"' EXIT
fi
read -r -a extra_sets <<<"${EXTRA_SETS:-}"
common=(--config "$CONFIG" --steps "$STEPS" --nodes "$NODES" --set train.eval_every=0
  ${extra_sets[@]+"${extra_sets[@]}"})

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
declare -A tps
for r in $(seq "$REPEATS"); do
  line="  run $r:"
  for i in "${!arms[@]}"; do
    dir=$TMP/${arms[$i]}$r
    read -r -a extra <<<"${sets[$i]}"
    "$BUILD/troupe" launch "${common[@]}" "${extra[@]}" --run-dir "$dir" >"$dir.out" 2>&1
    tps[${arms[$i]}]+="$(median_tps "$dir") "
    line+="  ${labels[$i]} $(median_tps "$dir") tok/s ($(weights "$dir.out"))"
    if [ "$(weights "$dir.out")" != "$(weights "$TMP/a$r.out")" ]; then
      echo "$line" && echo "$NAME: ${labels[$i]} ended with other weights than ${labels[0]}" >&2
      exit 1
    fi
  done
  echo "$line"
done
if [ -n "${LOG_GREP:-}" ]; then
  for i in "${!arms[@]}"; do
    [ "$i" -gt 0 ] || continue
    echo "  ${labels[$i]}, run $REPEATS:"
    grep -h "$LOG_GREP" "$TMP/${arms[$i]}$REPEATS"/node-*.log | sed 's/^[^]]*\] /    /' || true
  done
fi
"$PY" - "$AIM" "${labels[@]}" -- "${tps[a]}" "${tps[b]}" "${tps[c]:-}" <<'PYEOF'
import statistics, sys
aim, rest = sys.argv[1], sys.argv[2:]
cut = rest.index("--")
labels, runs = rest[:cut], rest[cut + 1:]
med = [statistics.median(map(float, r.split())) for r in runs if r.strip()]
print(f"{labels[0]:<28}{med[0]:9.1f} tok/s (median of runs)")
if len(med) == 3:
    print(f"{labels[2]:<28}{med[2]:9.1f} tok/s   ratio {med[2] / med[0]:.3f} to {labels[0]}")
    print(f"{labels[1]:<28}{med[1]:9.1f} tok/s   ratio {med[1] / med[0]:.3f} to {labels[0]},"
          f" {med[1] / med[2]:.3f} to {labels[2]} ({aim})")
else:
    print(f"{labels[1]:<28}{med[1]:9.1f} tok/s   ratio {med[1] / med[0]:.3f} ({aim})")
PYEOF
