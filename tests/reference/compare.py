#!/usr/bin/python3
"""Compare two safetensors files tensor by tensor (ours against the reference).

  compare.py --ours A.safetensors --ref B.safetensors [--rtol 1e-4] [--atol-floor 1e-6]
             [--prefix grad.] [--metric elementwise|norm] [--rel-floor 0] [--show 15]

For every tensor of B whose name starts with --prefix (default "": all of them):
  elementwise = max_i |a_i − b_i| / max(|b_i|, atol_floor, rel_floor·max_j |b_j|)
  norm        = ‖a − b‖₂ / max(‖b‖₂, atol_floor)
Both are reported; --metric picks the one held against --rtol. Prints the worst tensors
and a summary. Exit status 1 if any tensor exceeds rtol on the chosen metric, is missing
from A, has a different shape, or holds a NaN/Inf (in either file); 0 otherwise.
Tensors of A that B does not have are listed but do not fail the comparison.
"""
import argparse
import os
import sys

import numpy as np

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours", required=True)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--atol-floor", type=float, default=1e-6)
    ap.add_argument("--prefix", default="")
    ap.add_argument("--metric", choices=("elementwise", "norm"), default="elementwise")
    ap.add_argument("--rel-floor", type=float, default=0.0,
                    help="elementwise floor relative to the tensor's max |ref| (0 = off)")
    ap.add_argument("--show", type=int, default=15, help="rows of the worst-tensor table")
    a = ap.parse_args(argv)

    A, _ = safetensors_io.read(a.ours)
    B, _ = safetensors_io.read(a.ref)
    names = [n for n in B if n.startswith(a.prefix)]
    if not names:
        print(f"compare: no tensor in {a.ref} starts with {a.prefix!r}")
        return 1
    rows, problems = [], []
    for n in names:
        b = B[n].astype(np.float64)
        if n not in A:
            problems.append(f"missing in ours: {n}")
            continue
        x = A[n].astype(np.float64)
        if x.shape != b.shape:
            problems.append(f"shape mismatch: {n}: ours {list(x.shape)} ref {list(b.shape)}")
            continue
        if not np.all(np.isfinite(x)) or not np.all(np.isfinite(b)):
            problems.append(f"non-finite values: {n} (ours {int(np.sum(~np.isfinite(x)))}, "
                            f"ref {int(np.sum(~np.isfinite(b)))})")
            continue
        d = np.abs(x - b)
        if d.size:
            floor = max(a.atol_floor, a.rel_floor * float(np.max(np.abs(b))))
            rel = d / np.maximum(np.abs(b), floor)
            i = int(np.argmax(rel))
            ew, at = float(rel.flat[i]), np.unravel_index(i, b.shape)
            nm = float(np.linalg.norm(d.ravel()) / max(float(np.linalg.norm(b.ravel())), a.atol_floor))
            bmax = float(np.max(np.abs(b)))
            ours_at, ref_at = float(x.flat[i]), float(b.flat[i])
        else:
            ew, nm, at, bmax, ours_at, ref_at = 0.0, 0.0, (), 0.0, 0.0, 0.0
        rows.append((n, ew, nm, bmax, tuple(int(k) for k in at), ours_at, ref_at))

    key = 1 if a.metric == "elementwise" else 2
    rows.sort(key=lambda r: -r[key])
    bad = [r for r in rows if r[key] > a.rtol]
    extra = [n for n in A if n.startswith(a.prefix) and n not in B]

    w = max([len(r[0]) for r in rows[:a.show]] + [6])
    print(f"compare: {a.ours} vs {a.ref}: {len(rows)} tensors, metric {a.metric}, rtol {a.rtol:g}, "
          f"floor {a.atol_floor:g}" + (f", rel-floor {a.rel_floor:g}" if a.rel_floor else ""))
    print(f"{'tensor':<{w}}  {'elementwise':>11}  {'norm':>9}  {'max|ref|':>9}  worst at: ours / ref")
    for n, ew, nm, bmax, at, oa, ra in rows[:a.show]:
        flag = "  FAIL" if (ew, nm)[key - 1] > a.rtol else ""
        print(f"{n:<{w}}  {ew:11.3e}  {nm:9.2e}  {bmax:9.2e}  {list(at)}: {oa:+.9e} / {ra:+.9e}{flag}")
    if len(rows) > a.show:
        print(f"... {len(rows) - a.show} more tensors, all within {rows[a.show][key]:.3e}")
    for p in problems:
        print("FAIL  " + p)
    if extra:
        print(f"note: {len(extra)} tensors in ours are not in ref (ignored): " + ", ".join(extra[:8])
              + (" ..." if len(extra) > 8 else ""))
    ok = not bad and not problems
    print(f"compare: {'OK' if ok else 'FAIL'}: {len(bad)} over rtol, {len(problems)} missing/shape/non-finite")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
