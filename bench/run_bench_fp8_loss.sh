#!/usr/bin/env bash
# make bench-fp8-loss: SPEC §10's FP8 claim ("a run with FP8 stays within 0.5% of the FP32
# loss curve at the same step") next to its anchor, the FP32 run's own noise floor: tiny
# trained in FP32, in FP8, and in FP32 twice more with the learning rate moved by one part
# per million (train.lr × (1 ± 1e-6)), same seed and data. Training is chaotic (MoE routing
# and the balancing rule are discontinuous), so the twins diverge from FP32 as FP8 does;
# the ratio says whether FP8's deviation is larger than that.
# With more than one seed, every seed gets an FP32 run, an FP8 run and an FP32 twin
# (lr × (1 + 1e-6)); the paired differences FP8 − FP32 and twin − FP32 are printed with their
# mean, standard deviation and how many seeds fall outside ±0.5%: FP8's distribution next
# to the one FP32 has against itself.
#   BENCH_FP8_STEPS (600)     steps of each run
#   BENCH_FP8_SEEDS (tiny's)  seeds; the first one also gets the two twins
#   BENCH_THREADS (nproc)     compute threads of each run
set -euo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STEPS=${BENCH_FP8_STEPS:-600}
THREADS=${BENCH_THREADS:-$(nproc)}
PY=/usr/bin/python3
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
LR=$(grep -E '^lr *=' "$ROOT/configs/tiny.toml" | sed -E 's/^lr *= *([^ #]+).*/\1/')
SEED=$(grep -E '^seed *=' "$ROOT/configs/tiny.toml" | sed -E 's/^seed *= *([^ #]+).*/\1/')
read -r -a SEEDS <<< "${BENCH_FP8_SEEDS:-$SEED}"

run() {  # name, extra --set arguments
  local name=$1
  shift
  echo "== tiny, $name: $STEPS steps, $THREADS threads =="
  "$BUILD/troupe" train --config "$ROOT/configs/tiny.toml" --run-dir "$TMP/$name" \
      --steps "$STEPS" --set "train.threads=$THREADS" "$@" 2>&1 | grep -E '^summary' || true
}
LR_UP=$($PY -c "print(repr($LR * (1 + 1e-6)))")
pairs=() twins=()
for seed in "${SEEDS[@]}"; do
  run "fp32_seed$seed" --set "train.seed=$seed"
  run "fp8_seed$seed" --set "train.seed=$seed" --set fp8.enabled=true
  run "fp32_lr_up_seed$seed" --set "train.seed=$seed" --set "train.lr=$LR_UP"
  pairs+=(--pair "$TMP/fp32_seed$seed:$TMP/fp8_seed$seed")
  twins+=(--pair "$TMP/fp32_seed$seed:$TMP/fp32_lr_up_seed$seed")
done
S0=${SEEDS[0]}
run fp32_lr_down --set "train.seed=$S0" --set "train.lr=$($PY -c "print(repr($LR * (1 - 1e-6)))")"
echo "== seed $S0: FP8 and the FP32 twins against FP32 =="
$PY "$ROOT/tools/compare_loss.py" --base "$TMP/fp32_seed$S0" --run "fp8=$TMP/fp8_seed$S0" \
    --anchor "lr×(1+1e-6)=$TMP/fp32_lr_up_seed$S0" --anchor "lr×(1−1e-6)=$TMP/fp32_lr_down" \
    --step "$((STEPS - 1))"
if [ "${#SEEDS[@]}" -gt 1 ]; then
  echo "== FP8 against FP32, seed by seed (${SEEDS[*]}) =="
  $PY "$ROOT/tools/compare_loss.py" "${pairs[@]}" --step "$((STEPS - 1))"
  echo "== the anchor: the FP32 twin (lr × (1 + 1e-6)) against FP32, seed by seed =="
  $PY "$ROOT/tools/compare_loss.py" "${twins[@]}" --step "$((STEPS - 1))"
fi
