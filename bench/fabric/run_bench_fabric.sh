#!/usr/bin/env bash
# make bench-fabric: troupe's fabric between two node processes next to ucx_perftest
# (ucp_am_bw / ucp_am_lat with -e, peer error handling) on the same transports, in the
# same run, as ratios. Bandwidth in MiB/s (perftest's MB/s are MiB/s); latency one-way.
# FABRIC_REPEAT=N (default 3) alternates perftest and troupe N times and prints each
# ratio's median and range: on a shared 2-core machine one pass is noise.
# Transports, both sides (checked with ucp_ep_print_info; perftest connects by worker
# address, troupe through a listener): 8 B..8 KiB eager over sysv, larger messages by
# rendezvous over cma (one copy, process_vm_readv); troupe's endpoint also has a tcp/lo
# connection-manager lane that carries no data.
set -euo pipefail
BUILD=${1:-build}
BENCH="$BUILD/runtime/bench_fabric"
ACTORS="$BUILD/runtime/bench_actors"  # the same through routers and CAF (bench/actors)
PY=/usr/bin/python3
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

# The same UCX settings as UcxFabric's defaults, exported so that both sides see them.
export UCX_TLS=${UCX_TLS:-shm,tcp}
export UCX_NET_DEVICES=${UCX_NET_DEVICES:-lo}
export UCX_MM_ERROR_HANDLING=${UCX_MM_ERROR_HANDLING:-y}
# Lets cma carry rendezvous under peer error handling (UcxOptions::cma_memory_invalidate);
# without it troupe moves large messages over tcp/lo and perftest in sysv fragments.
export UCX_CMA_MEMORY_INVALIDATE=${UCX_CMA_MEMORY_INVALIDATE:-y}
[ -n "${FABRIC_RNDV_THRESH:-}" ] && export UCX_RNDV_THRESH=$FABRIC_RNDV_THRESH
LAT_ITERS=${FABRIC_LAT_ITERS:-100000}
SPIN_US=${FABRIC_SPIN_US:-100}  # -1: the progress thread never sleeps (like perftest)
REPEAT=${FABRIC_REPEAT:-3}
SIZES=(1024 65536 1048576 4194304 67108864)
echo "UCX_TLS=$UCX_TLS UCX_NET_DEVICES=$UCX_NET_DEVICES UCX_MM_ERROR_HANDLING=$UCX_MM_ERROR_HANDLING" \
     "UCX_CMA_MEMORY_INVALIDATE=$UCX_CMA_MEMORY_INVALIDATE" \
     "UCX_RNDV_THRESH=${UCX_RNDV_THRESH:-default} progress_spin_us=$SPIN_US repeat=$REPEAT"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# Buffer memory, both sides alike: troupe sends from and receives into pooled buffers on
# transparent huge pages (runtime/buffer_pool.h); perftest's own default (SysV segments,
# 4 KiB pages here) makes cma ~35% slower, so it gets THP too: the stronger anchor.
PERFTEST_ALLOC=${FABRIC_PERFTEST_ALLOC:-thp,heap}
echo "ucx_perftest UCX_ALLOC_PRIO=$PERFTEST_ALLOC"

PORT=$((20000 + RANDOM % 20000))
perftest() {  # perftest TEST SIZE ITERS -> the final numbers line
  PORT=$((PORT + 1))
  UCX_ALLOC_PRIO=$PERFTEST_ALLOC ucx_perftest -p "$PORT" -t "$1" -e >/dev/null 2>&1 &
  local srv=$!
  PIDS+=("$srv")
  local out=""
  for _ in $(seq 50); do
    out=$(UCX_ALLOC_PRIO=$PERFTEST_ALLOC ucx_perftest 127.0.0.1 -p "$PORT" -t "$1" -e -s "$2" \
          -n "$3" -w $(( $3 / 10 + 1 )) -f 2>/dev/null | tail -1) && break
    sleep 0.1
  done
  wait "$srv" 2>/dev/null || true
  echo "$out"
}

troupe() {  # troupe OUT LOG: one client run against a fresh server
  rm -f "$TMP/port"
  "$BENCH" serve --port-file "$TMP/port" --spin-us "$SPIN_US" 2>"$TMP/serve.log" &
  PIDS+=("$!")
  for _ in $(seq 100); do [ -s "$TMP/port" ] && break; sleep 0.1; done
  "$BENCH" client --connect "127.0.0.1:$(cat "$TMP/port")" --spin-us "$SPIN_US" \
      --lat-iters "$LAT_ITERS" --sizes "$(IFS=,; echo "${SIZES[*]}")" >"$1" 2>"$2" ||
      { echo "bench_fabric client failed:"; tail -5 "$2"; tail -5 "$TMP/serve.log"; }
  wait "$!" 2>/dev/null || true
}

actors() {  # actors OUT LOG: actor to actor on two node processes, through both routers
  rm -f "$TMP/aport"
  "$ACTORS" serve --port-file "$TMP/aport" 2>"$TMP/aserve.log" &
  PIDS+=("$!")
  for _ in $(seq 100); do [ -s "$TMP/aport" ] && break; sleep 0.1; done
  "$ACTORS" client --connect "127.0.0.1:$(cat "$TMP/aport")" --lat-iters $(( LAT_ITERS / 5 )) \
      >"$1" 2>"$2" || { echo "bench_actors client failed:"; tail -5 "$2"; }
  wait "$!" 2>/dev/null || true
}

for rep in $(seq "$REPEAT"); do
  : > "$TMP/perftest.$rep"
  for size in "${SIZES[@]}"; do
    iters=$(( (2 << 30) / size )); [ $iters -gt 200000 ] && iters=200000; [ $iters -lt 32 ] && iters=32
    echo "bw $size $(perftest ucp_am_bw "$size" "$iters")" >> "$TMP/perftest.$rep"
  done
  echo "lat 8 $(perftest ucp_am_lat 8 "$LAT_ITERS")" >> "$TMP/perftest.$rep"
  troupe "$TMP/troupe.$rep" "$TMP/client.log"
  actors "$TMP/actors.$rep" "$TMP/actors.log"
  echo "pass $rep/$REPEAT done, load $(cut -d' ' -f1 /proc/loadavg)"
done
grep -E "lane|am_send" "$TMP/client.log" | sed 's/^#/  troupe endpoint:/' || true

$PY - "$TMP" "$REPEAT" "${SIZES[@]}" <<'PYEOF'
import statistics, sys
tmp, repeat, sizes = sys.argv[1], int(sys.argv[2]), [int(s) for s in sys.argv[3:]]
nan = float("nan")

def parse(path, perftest):
    out = {}
    for line in open(path):
        f = line.split()
        # perftest: iterations, lat 50%, lat avg, lat overall, bw avg, bw overall, rates
        if perftest and len(f) >= 10:
            out[(f[0], int(f[1]))] = [float(x) for x in f[2:10]]
        elif not perftest and len(f) >= 3:
            out[(f[0], int(f[1]))] = [float(x) for x in f[2:]]
    return out

runs = [(parse(f"{tmp}/perftest.{r}", True), parse(f"{tmp}/troupe.{r}", False))
        for r in range(1, repeat + 1)]

def summary(values):
    v = [x for x in values if x == x]
    if not v:
        return nan, nan, nan
    return statistics.median(v), min(v), max(v)

def bandwidth_rows(key):  # "bw": sent from the client's main thread; "bwf": its fabric's
    for size in sizes:
        t = [tr.get((key, size), [nan])[0] for _, tr in runs]
        p = [pt.get(("bw", size), [nan] * 8)[5] for pt, _ in runs]
        r = [a / b if b else nan for a, b in zip(t, p)]
        label = f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
        rm, rlo, rhi = summary(r)
        print(f"{label:>10} {summary(t)[0]:13.1f} {summary(p)[0]:15.1f} {rm:6.2f}  {rlo:.2f}-{rhi:.2f}")

print(f"{'bandwidth':>10} {'troupe MiB/s':>13} {'perftest MiB/s':>15} {'ratio':>6}  range")
bandwidth_rows("bw")
print("the same, sent from the fabric's own thread (as an actor that the lent scheduler runs there\n"
      "sends; 2 threads like perftest's, where the rows above add the sending thread):")
bandwidth_rows("bwf")
t = [tr.get(("lat", 8), [nan])[0] for _, tr in runs]
p = [pt.get(("lat", 8), [nan] * 8)[1] for pt, _ in runs]
r = [a / b if b else nan for a, b in zip(t, p)]
rm, rlo, rhi = summary(r)
print(f"latency 8 B one-way (median of each run's median): troupe {summary(t)[0]:.3f} us, "
      f"perftest {summary(p)[0]:.3f} us; ratio {rm:.2f}, range {rlo:.2f}-{rhi:.2f}")
acts = [parse(f"{tmp}/actors.{r}", False) for r in range(1, repeat + 1)]
print("through the actor layer (router + CAF on both sides) vs the fabric alone:")
for size in sizes:
    a = [ac.get(("bw", size), [nan])[0] for ac in acts]
    t = [tr.get(("bw", size), [nan])[0] for _, tr in runs]
    r = [x / y if y else nan for x, y in zip(a, t)]
    label = f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
    rm, rlo, rhi = summary(r)
    print(f"{label:>10} actors {summary(a)[0]:10.1f} MiB/s  ratio to fabric {rm:5.2f}  "
          f"{rlo:.2f}-{rhi:.2f}")
a = [ac.get(("lat", 8), [nan])[0] for ac in acts]
t = [tr.get(("lat", 8), [nan])[0] for _, tr in runs]
r = [x / y if y else nan for x, y in zip(a, t)]
sa = [ac.get(("lat_scoped", 8), [nan])[0] for ac in acts]
print(f"latency 8 B one-way through actors: {summary(a)[0]:.2f} us (range {summary(a)[1]:.2f}-"
      f"{summary(a)[2]:.2f}), {summary(r)[0]:.1f}x the fabric's (event-based actor to actor: "
      f"router -> fabric -> router -> actor, on the fabric's thread where it is lent to CAF)")
print(f"  from a scoped_actor (a thread outside CAF, woken per reply): {summary(sa)[0]:.2f} us "
      f"(range {summary(sa)[1]:.2f}-{summary(sa)[2]:.2f})")
print("per run (troupe/perftest): " + "; ".join(
    f"4 MiB {tr.get(('bw', 4 << 20), [nan])[0] / pt.get(('bw', 4 << 20), [nan] * 8)[5]:.2f}"
    f" lat {tr.get(('lat', 8), [nan])[0] / pt.get(('lat', 8), [nan] * 8)[1]:.2f}"
    for pt, tr in runs))
PYEOF
# The envelope codec alone (runtime/wire.cc) next to libprotobuf on the same message.
"$BUILD/runtime/bench_wire"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
