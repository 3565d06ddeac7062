#!/usr/bin/env bash
# make chaos-soak: RUNS jobs of tiny on 3 or 4 node processes, each with one node killed
# (-9) or hung (SIGSTOP) at a random step and moment, or killed by launch itself as the
# workers start (`--kill-node-at 0`, one job in eight) or while the final weights are
# gathered (`--kill-node-at STEPS`, one in eight), or with any two of four nodes killed or
# hung together under fault_tolerance.buddy_copies = 2 (one in eight); every job must end
# with the weights hash of an undisturbed `troupe train`. Prints one line per job and the
# tally; exits 1 on any miss. Not in CI (minutes): CI runs tests/launch/fault_test.py.
#   CHAOS_RUNS (12)   jobs      CHAOS_STEPS (20)   steps per job      CHAOS_SEED (random)
#   CHAOS_JOB (all)   run only this job of the seed's schedule (a failed job's replay)
#   CHAOS_DRY_RUN=1   print the schedule of faults and run nothing
# The seed is printed first and again with each failure, as the command that replays it:
# job k's faults (nodes, victim, signal, step, moment inside the step) are drawn from
# RANDOM seeded with SEED and k alone, never inside a $(...) (bash reseeds it there), so
# the same seed gives the same schedule of faults, job by job.
set -uo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUNS=${CHAOS_RUNS:-12}
STEPS=${CHAOS_STEPS:-20}
SEED=${CHAOS_SEED:-$((SRANDOM % 1000000))}
ONLY=${CHAOS_JOB:-}
DRY=${CHAOS_DRY_RUN:-}
[[ $SEED =~ ^[0-9]+$ ]] || { echo "chaos-soak: CHAOS_SEED=$SEED is not a number"; exit 2; }
REPLAY="CHAOS_SEED=$SEED CHAOS_RUNS=$RUNS CHAOS_STEPS=$STEPS $0 $BUILD"
echo "chaos-soak: seed $SEED (replay: $REPLAY)"
TMP=$(mktemp -d)
trap 'pkill -9 -P $$ 2>/dev/null; rm -rf "$TMP"' EXIT
job=(--config "$ROOT/configs/tiny.toml" --steps "$STEPS" --set train.eval_every=5)
want=dry-run
[ -n "$DRY" ] ||
  want=$("$BUILD/troupe" train "${job[@]}" --run-dir "$TMP/plain" | grep -o 'weights [0-9a-f]*')
echo "chaos-soak: $RUNS jobs of $STEPS steps; undisturbed: $want"
bad=0
for k in $(seq 1 "$RUNS"); do
  [ -n "$ONLY" ] && [ "$k" != "$ONLY" ] && continue
  RANDOM=$((SEED * 1000 + k))  # job k's schedule depends on the seed and k alone
  nodes=$((3 + RANDOM % 2)); at=$((RANDOM % (STEPS - 4))); victim=$((1 + RANDOM % nodes))
  sig=KILL; [ $((RANDOM % 2)) -eq 0 ] || sig=STOP
  inside_ms=$((RANDOM % 150))
  rd="$TMP/run$k"
  end=() edge=$((RANDOM % 8))
  if [ $edge -eq 0 ]; then  # launch kills its last node as the workers start
    end=(--kill-node-at 0) sig=KILL victim=last at="0 (as the workers start)"
  elif [ $edge -eq 1 ]; then  # launch kills its last node after the last step
    end=(--kill-node-at "$STEPS") sig=KILL victim=last at=$STEPS
  elif [ $edge -eq 2 ]; then  # two nodes together, by node id (n1..n4)
    first=$((1 + RANDOM % 4))
    nodes=4 victim="n$first,n$((1 + (first + RANDOM % 3) % 4))"
    end=(--set fault_tolerance.buddy_copies=2)
  fi
  if [ -n "$DRY" ]; then
    when="step $at"; [ "${end[0]:-}" = --kill-node-at ] || when="step $at + $inside_ms ms"
    echo "plan job $k: $nodes nodes, SIG$sig node $victim at $when ${end[*]}"
    continue
  fi
  timeout 300 "$BUILD/troupe" launch "${job[@]}" --nodes "$nodes" --run-dir "$rd" "${end[@]}" \
    >"$rd.out" 2>"$rd.err" &
  launch=$!
  # polling another process's progress: there is nothing to await
  until [ "${end[0]:-}" = --kill-node-at ] || [ "$(cat "$rd/metrics.jsonl" 2>/dev/null | wc -l)" -ge "$at" ] &&
        grep -q '"start"' "$rd/events.jsonl" 2>/dev/null; do
    kill -0 $launch 2>/dev/null || break
    sleep 0.02
  done
  pid=
  if [ "${end[0]:-}" != --kill-node-at ]; then
    sleep "$(printf '0.%03d' "$inside_ms")"  # somewhere inside the step (0-150 ms)
    if [ $edge -eq 2 ]; then  # their pids from the join events: "n1 at HOST:PORT, pid P"
      pid=$(for n in ${victim//,/ }; do
              grep -o "\"$n at [^,]*, pid [0-9]*" "$rd/events.jsonl" | grep -o '[0-9]*$'
            done)
    else
      pid=$(pgrep -f 'troupe node ' -P "$(pgrep -P $launch)" 2>/dev/null | sed -n "${victim}p")  # none: launch ended
    fi
    [ -n "$pid" ] && kill -"$sig" $pid
  fi
  wait $launch
  rc=$?
  got=$(grep -o 'weights [0-9a-f]*' "$rd.out")
  ok=$([ $rc -eq 0 ] && [ "$got" = "$want" ] && grep -q "[12] lost, recovered" "$rd.out" &&
       echo ok || echo BAD)
  if [ "$ok" != ok ]; then
    bad=$((bad + 1))
    keep="${CHAOS_KEEP:-runs/chaos-failed}/job$k"
    mkdir -p "$keep" && cp -r "$rd" "$rd.out" "$rd.err" "$keep/" 2>/dev/null
    grep -h -v '^step\|ETA' "$rd.err" | tail -6
    echo "  (kept in $keep; replay: CHAOS_JOB=$k $REPLAY)"
  fi
  echo "$ok job $k: $nodes nodes, SIG$sig node $victim at step $at: status $rc, $got"
  [ -n "$pid" ] && kill -9 $pid 2>/dev/null
done
[ -z "$DRY" ] || { echo "chaos-soak: dry run, nothing ran"; exit 0; }
ran=$RUNS; [ -n "$ONLY" ] && ran=1
echo "chaos-soak: $((ran - bad))/$ran jobs recovered to the undisturbed weights (seed $SEED)"
[ $bad -eq 0 ] || echo "chaos-soak: FAILED; replay: $REPLAY"
[ $bad -eq 0 ]
