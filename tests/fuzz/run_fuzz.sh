#!/usr/bin/env bash
# Runs libFuzzer targets of tests/fuzz one at a time (make fuzz, make fuzz-target).
#   tests/fuzz/run_fuzz.sh BUILD_DIR WORK_DIR seconds|runs N TARGET...
# Each target starts from its seed corpus (tests/fuzz/corpus/NAME, read-only) and a work
# corpus WORK_DIR/corpus/NAME that grows across runs; crashes, leaks and hangs are written to
# WORK_DIR/crashes/NAME-*. Fuzzers run under nice -n 19 (the box is shared). Limits:
# FUZZ_RSS_MB (2048) per process, FUZZ_TIMEOUT_S (60) per input, wall-clock: a starved process under
# nice -n 19 on a loaded box can take seconds for a 10 ms input; leaks are detected.
# Prints one line per target: executions, exec/s (wall), seconds, the CPU seconds it got and
# executions per CPU second (what it would do on a core of its own), corpus size, cov and ft.
# Exits 1 when any target found a crash, a leak or a hang.
set -uo pipefail

if [ $# -lt 5 ] || { [ "$3" != seconds ] && [ "$3" != runs ]; }; then
  echo "usage: $0 BUILD_DIR WORK_DIR seconds|runs N TARGET..." >&2
  exit 2
fi
build=$1 work=$2 mode=$3 amount=$4
shift 4
here=$(cd "$(dirname "$0")" && pwd)
rss_mb=${FUZZ_RSS_MB:-2048}
timeout_s=${FUZZ_TIMEOUT_S:-60}
case $amount in '' | *[!0-9]*)
  echo "$0: N must be a whole number of ${mode}, got '$amount'" >&2
  exit 2 ;;
esac

failed=0
for name in "$@"; do
  bin=$build/tests/fuzz/${name}_fuzz
  seeds=$here/corpus/$name
  if [ ! -x "$bin" ]; then
    echo "$name: no fuzz target $bin (names: $(cd "$here/corpus" && echo *); build: make fuzz-build)" >&2
    exit 2
  fi
  corpus=$work/corpus/$name
  mkdir -p "$corpus" "$work/crashes" "$work/logs"
  limit=(-max_total_time="$amount")
  [ "$mode" = runs ] && limit=(-runs="$amount")
  dict=()
  [ -f "$here/$name.dict" ] && dict=(-dict="$here/$name.dict")
  log=$work/logs/$name.log
  start=$(date +%s)
  times=$work/logs/$name.cpu
  /usr/bin/time -f '%U %S' -o "$times" nice -n 19 "$bin" "${limit[@]}" "${dict[@]}" \
    -rss_limit_mb="$rss_mb" -timeout="$timeout_s" -detect_leaks=1 -print_final_stats=1 \
    -artifact_prefix="$work/crashes/$name-" "$corpus" "$seeds" >"$log" 2>&1
  rc=$?
  cpu=$(awk '{printf "%.1f", $1 + $2}' "$times" 2>/dev/null)
  secs=$(($(date +%s) - start))
  stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  execs=$(stat number_of_executed_units)
  per_cpu=$(awk -v e="${execs:-0}" -v c="${cpu:-0}" 'BEGIN { printf "%d", (c > 0 ? e / c : 0) }')
  printf '%-11s execs %-9s exec/s %-6s seconds %-5s cpu_s %-5s execs/cpu_s %-6s corpus %-5s cov %-5s ft %-6s %s\n' \
    "$name" "$execs" "$(stat average_exec_per_sec)" "$secs" "$cpu" "$per_cpu" \
    "$(find "$corpus" -type f | wc -l)" "$cov" "$ft" \
    "$([ $rc -eq 0 ] && echo ok || echo "FAILED (rc $rc), see $log")"
  if [ $rc -ne 0 ]; then
    failed=1
    grep -E 'ERROR: |SUMMARY: |runtime error|fuzz property broken' "$log" | head -5 >&2
    echo "  the input: $(ls -t "$work/crashes/$name-"* 2>/dev/null | head -1)" >&2
    echo "  fix the decoder, then keep the input: cp it to $seeds/crash-<what>" >&2
  fi
done
exit $failed
