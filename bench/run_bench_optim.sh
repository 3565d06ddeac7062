#!/usr/bin/env bash
# make bench-optim: tiny trained with AdamW and with Muon (SPEC §5) for the same steps, seed
# and data, one after the other in this run. Prints both loss curves side by side, the loss
# after the same number of steps, the wall time per step of each and their ratio, and the
# first step at which Muon reaches AdamW's final loss (the Moonlight claim: in fewer steps).
#   BENCH_OPTIM_STEPS (600)       steps of each run
#   BENCH_OPTIM_EVAL_EVERY (50)   steps between validations
#   BENCH_OPTIM_MUON_LR ("")      also run Muon at this lr (the default-lr run is kept)
#   BENCH_THREADS (nproc)         compute threads of each run
set -euo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STEPS=${BENCH_OPTIM_STEPS:-600}
EVAL_EVERY=${BENCH_OPTIM_EVAL_EVERY:-50}
MUON_LR=${BENCH_OPTIM_MUON_LR:-}
THREADS=${BENCH_THREADS:-$(nproc)}
PY=/usr/bin/python3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

runs="adamw muon"
[ -n "$MUON_LR" ] && runs="$runs muon_lr"
for run in $runs; do
  opt=${run%_lr}
  extra=()
  lr_note=""
  if [ "$run" = muon_lr ]; then
    extra=(--set "train.lr=$MUON_LR")
    lr_note=" at lr $MUON_LR"
  fi
  echo "== tiny, $opt$lr_note: $STEPS steps, $THREADS threads =="
  start=$(date +%s.%N)
  "$BUILD/troupe" train --config "$ROOT/configs/tiny.toml" --run-dir "$TMP/$run" \
      --steps "$STEPS" --set "optimizer.name=$opt" --set "train.eval_every=$EVAL_EVERY" \
      --set "train.threads=$THREADS" "${extra[@]}" > "$TMP/$run.log" 2>&1
  end=$(date +%s.%N)
  $PY -c "print(f'wall {$end - $start:.1f} s')" | tee "$TMP/$run.wall"
done

$PY - "$TMP" "$STEPS" "$MUON_LR" "$EVAL_EVERY" <<'EOF'
import json, re, statistics, sys
tmp, steps, muon_lr, eval_every = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
SMOOTH = 20  # train CE is noisy batch to batch: compare trailing means over 20 steps
runs = ["adamw", "muon"] + (["muon_lr"] if muon_lr else [])
label = {"adamw": "adamw", "muon": "muon", "muon_lr": f"muon@{muon_lr}"}
rows = {r: [json.loads(l) for l in open(f"{tmp}/{r}/metrics.jsonl")] for r in runs}
smooth = {r: [statistics.fmean(x["ce"] for x in v[max(0, i + 1 - SMOOTH):i + 1])
              for i in range(len(v))] for r, v in rows.items()}
val = {r: {x["step"] + 1: x["val_loss"] for x in v if "val_loss" in x} for r, v in rows.items()}
# Seconds per step: the median over steps after 2 warm-up steps (validation excluded),
# from tokens_per_s and the run's "steps of B×T tokens" banner.
def tokens_per_step(r):
    m = re.search(r"steps of (\d+)×(\d+) tokens", open(f"{tmp}/{r}.log").read())
    return int(m.group(1)) * int(m.group(2))
sec = {r: statistics.median(tokens_per_step(r) / x["tokens_per_s"] for x in v[2:])
       for r, v in rows.items()}
wall = {r: open(f"{tmp}/{r}.wall").read().split()[1] for r in runs}

print(f"\n== loss curves (train CE: mean of the last {SMOOTH} steps; val CE at each eval) ==")
print("  step " + "".join(f"  {label[r] + ' train':>16} {label[r] + ' val':>14}" for r in runs))
for s in sorted(set(range(50, steps + 1, 50)) | set(val["adamw"]) | {steps}):
    cells = []
    for r in runs:
        t = f"{smooth[r][s - 1]:.4f}" if s <= len(smooth[r]) else "-"
        cells.append(f"  {t:>16} {val[r][s]:>14.4f}" if s in val[r] else f"  {t:>16} {'':>14}")
    print(f"{s:6d}" + "".join(cells))

print(f"\n== after {steps} steps ==")
for r in runs:
    print(f"{label[r]:>12}: train CE {smooth[r][-1]:.4f} (last {SMOOTH})   val CE "
          f"{val[r][steps]:.4f}   {sec[r]:.3f} s/step (median)   wall {wall[r]} s")
for r in runs[1:]:
    print(f"{label[r]:>12} / adamw: time per step {sec[r] / sec['adamw']:.2f}x   val CE "
          f"{val[r][steps] - val['adamw'][steps]:+.4f} nats/byte")

print(f"\n== first step at which Muon reaches AdamW's step-{steps} loss ==")
for r in runs[1:]:
    target = smooth["adamw"][-1]
    hit = next((i + 1 for i, v in enumerate(smooth[r]) if v <= target), None)
    msg = f"step {hit} ({steps / hit:.2f}x fewer steps)" if hit else "not reached"
    print(f"{label[r]:>12}: smoothed train CE <= {target:.4f}: {msg}")
    target = val["adamw"][steps]
    hit = next((s for s in sorted(val[r]) if val[r][s] <= target), None)
    msg = f"step {hit} ({steps / hit:.2f}x fewer steps)" if hit else "not reached"
    print(f"{label[r]:>12}: val CE <= {target:.4f}: {msg} (evals every {eval_every} steps)")
EOF
