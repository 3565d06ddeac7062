#!/usr/bin/env bash
# make bench-fabric: troupe's fabric between two node processes next to ucx_perftest
# (ucp_am_bw / ucp_am_lat with -e, peer error handling) on the same transports, in the
# same run, as ratios. Bandwidth in MiB/s (perftest's MB/s are MiB/s); latency one-way.
set -euo pipefail
BUILD=${1:-build}
BENCH="$BUILD/runtime/bench_fabric"
PY=/usr/bin/python3
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

# The same UCX settings as UcxFabric's defaults, exported so that both sides see them.
export UCX_TLS=${UCX_TLS:-shm,tcp}
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
export UCX_MM_ERROR_HANDLING=${UCX_MM_ERROR_HANDLING:-y}
[ -n "${FABRIC_RNDV_THRESH:-}" ] && export UCX_RNDV_THRESH=$FABRIC_RNDV_THRESH
LAT_ITERS=${FABRIC_LAT_ITERS:-100000}
SPIN_US=${FABRIC_SPIN_US:-100}
echo "UCX_TLS=$UCX_TLS UCX_NET_DEVICES=$UCX_NET_DEVICES UCX_MM_ERROR_HANDLING=$UCX_MM_ERROR_HANDLING" \
     "UCX_RNDV_THRESH=${UCX_RNDV_THRESH:-default} progress_spin_us=$SPIN_US"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

PORT=$((20000 + RANDOM % 20000))
perftest() {  # perftest TEST SIZE ITERS -> the final numbers line
  PORT=$((PORT + 1))
  ucx_perftest -p "$PORT" -t "$1" -e >/dev/null 2>&1 &
  local srv=$!
  PIDS+=("$srv")
  local out=""
  for _ in $(seq 50); do
    out=$(ucx_perftest 127.0.0.1 -p "$PORT" -t "$1" -e -s "$2" -n "$3" -w $(( $3 / 10 + 1 )) -f \
          2>/dev/null | tail -1) && break
    sleep 0.1
  done
  wait "$srv" 2>/dev/null || true
  echo "$out"
}

: > "$TMP/perftest.txt"
for size in 1024 65536 1048576 4194304 67108864; do
  iters=$(( (2 << 30) / size )); [ $iters -gt 200000 ] && iters=200000; [ $iters -lt 32 ] && iters=32
  echo "bw $size $(perftest ucp_am_bw $size $iters)" >> "$TMP/perftest.txt"
done
echo "lat 8 $(perftest ucp_am_lat 8 $LAT_ITERS)" >> "$TMP/perftest.txt"

"$BENCH" serve --port-file "$TMP/port" --spin-us "$SPIN_US" 2>"$TMP/serve.log" &
PIDS+=("$!")
for _ in $(seq 100); do [ -s "$TMP/port" ] && break; sleep 0.1; done
"$BENCH" client --connect "127.0.0.1:$(cat "$TMP/port")" --spin-us "$SPIN_US" \
    --lat-iters "$LAT_ITERS" >"$TMP/troupe.txt" 2>"$TMP/client.log"
grep -E "lane|am_send" "$TMP/client.log" | sed 's/^#/  troupe endpoint:/' || true

$PY - "$TMP/perftest.txt" "$TMP/troupe.txt" <<'PYEOF'
import sys
pt, tr = {}, {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) >= 10:
        # iterations, lat 50%, lat avg, lat overall, bw avg, bw overall, rate avg, rate overall
        pt[(f[0], int(f[1]))] = [float(x) for x in f[2:10]]
for line in open(sys.argv[2]):
    f = line.split()
    tr[(f[0], int(f[1]))] = [float(x) for x in f[2:]]
print(f"{'bandwidth':>12} {'troupe MiB/s':>14} {'perftest MiB/s':>15} {'ratio':>7}")
for size in [1024, 65536, 1 << 20, 4 << 20, 64 << 20]:
    t = tr.get(("bw", size), [float("nan")])[0]
    p = pt.get(("bw", size), [float("nan")] * 8)[5]
    label = f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
    print(f"{label:>12} {t:14.1f} {p:15.1f} {t / p if p else float('nan'):7.2f}")
t = tr.get(("lat", 8), [float("nan")] * 2)
p = pt.get(("lat", 8), [float("nan")] * 8)
print(f"latency 8 B one-way: troupe median {t[0]:.3f} us, mean {t[1]:.3f} us; "
      f"perftest median {p[1]:.3f} us, mean {p[2]:.3f} us; "
      f"ratio median {t[0] / p[1]:.2f}, mean {t[1] / p[2]:.2f}")
PYEOF
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
