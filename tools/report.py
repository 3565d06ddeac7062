#!/usr/bin/env python3
"""PNG plots of a troupe run directory (`troupe report RUN_DIR` runs this; DESIGN.md §8):

  loss.png        loss (and val_loss where measured) per step, from metrics.jsonl
  throughput.png  tokens/s per step, from metrics.jsonl
  events.png      the event log on the time axis (faults, recoveries, scale, checkpoints),
                  from events.jsonl; a run without one (`troupe train`) gets no timeline

Steps where events.jsonl says a fault or a recovery happened (an event's `step`, else "at
step N" in its text) are marked on the per-step plots. An event's kind is its `kind` field, else `event`; its time
is `t_s` (seconds since launch). Kinds this script does not know are drawn as generic ticks.
A step logged twice (a run resumed from a checkpoint re-runs steps) is drawn as logged last.

  report.py RUN_DIR [--out DIR]     (default DIR: RUN_DIR/report)

Prints the path of each PNG it wrote. Exit status 1, with the file (and line) named, when
metrics.jsonl is missing, empty or not JSON lines; 3 when matplotlib is missing.
"""
import argparse
import json
import os
import re
import sys

# Event kinds by what they mean on the timeline. Today's launch writes the left ones; the
# typed event log may name them differently (the right ones), so both are listed.
CATEGORIES = [
    ("fault", "tab:red", "x",
     {"recover", "lost", "node_lost", "node_down", "fault", "left", "exit", "kill", "chaos",
      "job_failed", "checkpoint_corrupt", "hung", "evicted"}),
    ("recovery", "tab:green", "o", {"recovered", "rollback", "resume", "recovery"}),
    ("scale", "tab:blue", "s",
     {"view", "join", "scale", "scale_up", "scale_down", "drain", "join_refused", "start"}),
    ("checkpoint", "tab:purple", "D", {"checkpoint", "checkpoint_skipped"}),
]
OTHER = ("other", "tab:gray", "|")
MARKED_ON_STEPS = {"fault", "recovery"}


class ReportError(Exception):
    pass


def read_jsonl(path):
    """[(line number, object)] of a JSON-lines file; blank lines are skipped."""
    rows = []
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise ReportError(f"{path}:{n}: not JSON ({e}): {line.strip()[:80]!r}")
                if not isinstance(obj, dict):
                    raise ReportError(f"{path}:{n}: not a JSON object: {line.strip()[:80]!r}")
                rows.append((n, obj))
    except FileNotFoundError:
        raise ReportError(f"{path} not found: is this a troupe run directory?")
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"cannot read {path}: {e}")
    return rows


def number(path, n, obj, key, required):
    v = obj.get(key)
    if v is None and not required:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ReportError(f"{path}:{n}: '{key}' is {'missing' if v is None else repr(v)}, "
                          "want a number")
    return v


def load_metrics(run_dir):
    """{step: metrics line} (the last line of each step), from RUN_DIR/metrics.jsonl."""
    path = os.path.join(run_dir, "metrics.jsonl")
    rows = read_jsonl(path)
    if not rows:
        raise ReportError(f"{path} is empty: the run logged no step yet")
    by_step = {}
    for n, obj in rows:
        step = number(path, n, obj, "step", True)
        by_step[int(step)] = {"loss": number(path, n, obj, "loss", True),
                              "val_loss": number(path, n, obj, "val_loss", False),
                              "tokens_per_s": number(path, n, obj, "tokens_per_s", False)}
    return by_step


def category_of(kind):
    for cat in CATEGORIES:
        if kind in cat[3]:
            return cat
    return OTHER


def duration_s(obj):
    """A recovery's length where the event says it (the typed log's durations in ms)."""
    for key in ("duration_ms", "recovery_ms"):
        v = obj.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0:
            return v / 1000.0
    return None


def event_step(obj, text):
    """The step an event names: its `step` field, else "... at step N" in its text."""
    step = obj.get("step")
    if isinstance(step, int) and not isinstance(step, bool):
        return step
    m = re.search(r"\bat step (\d+)", text)
    return int(m.group(1)) if m else None


def load_events(run_dir):
    """[(t_s, kind, step or None, text, duration_s or None)] from RUN_DIR/events.jsonl; None
    when it is absent."""
    path = os.path.join(run_dir, "events.jsonl")
    if not os.path.exists(path):
        return None
    events = []
    for n, obj in read_jsonl(path):
        t = number(path, n, obj, "t_s", True)
        kind = obj.get("kind", obj.get("event"))
        if not isinstance(kind, str) or not kind:
            raise ReportError(f"{path}:{n}: no 'kind' or 'event' naming the event")
        text = str(obj.get("text", obj.get("reason", "")))
        events.append((float(t), kind, event_step(obj, text), text, duration_s(obj)))
    return events


def mark_event_steps(ax, events):
    """Vertical lines at the steps of faults and recoveries, one legend entry per kind."""
    seen = set()
    for _, kind, step, _, _ in events or []:
        cat = category_of(kind)
        if step is None or cat[0] not in MARKED_ON_STEPS:
            continue
        label = None if cat[0] in seen else f"{cat[0]} (events.jsonl)"
        seen.add(cat[0])
        ax.axvline(step, color=cat[1], linestyle=":", linewidth=1, label=label)


def plot_loss(plt, metrics, events, path):
    steps = sorted(metrics)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(steps, [metrics[s]["loss"] for s in steps], label="loss", linewidth=1)
    val = [s for s in steps if metrics[s]["val_loss"] is not None]
    if val:
        ax.plot(val, [metrics[s]["val_loss"] for s in val], "o-", label="val_loss", markersize=3)
    mark_event_steps(ax, events)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/byte)")
    ax.set_title("loss per step")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_throughput(plt, metrics, events, path):
    steps = [s for s in sorted(metrics) if metrics[s]["tokens_per_s"] is not None]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(steps, [metrics[s]["tokens_per_s"] for s in steps], label="tokens/s", linewidth=1)
    mark_event_steps(ax, events)
    ax.set_xlabel("step")
    ax.set_ylabel("tokens/s")
    ax.set_title("throughput per step" + ("" if steps else " (no tokens_per_s logged)"))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


RECOVERY_STARTS = {"recover", "lost", "node_lost", "node_down"}


def recovery_spans(events):
    """(start, end) of each recovery: the duration a 'recovered' event gives, else from the
    loss or recovery start before it."""
    spans, start = [], None
    for t, kind, _, _, took in sorted(events, key=lambda e: e[0]):
        if kind in RECOVERY_STARTS and start is None:
            start = t
        elif kind == "recovered":
            if took is not None:
                spans.append((t - took, t))
            elif start is not None:
                spans.append((start, t))
            start = None
    return spans


def plot_events(plt, events, path):
    rows = [c[0] for c in CATEGORIES] + [OTHER[0]]
    fig, ax = plt.subplots(figsize=(10, 3.8))
    for i, (start, end) in enumerate(recovery_spans(events)):
        ax.axvspan(start, end, color="tab:green", alpha=0.15,
                   label="recovering" if i == 0 else None)
    for cat in CATEGORIES + [OTHER]:
        ts = [e[0] for e in events if category_of(e[1]) is cat]
        if ts:
            kinds = sorted({e[1] for e in events if category_of(e[1]) is cat})
            ax.scatter(ts, [rows.index(cat[0])] * len(ts), color=cat[1], marker=cat[2], s=40,
                       label=f"{cat[0]}: {', '.join(kinds)}"[:60])
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    ax.set_xlabel("time since launch (s)")
    ax.set_title("events" if events else "events (events.jsonl is empty)")
    ax.grid(axis="x", alpha=0.3)
    if events:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def import_pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError as e:
        print(f"report: matplotlib is missing ({e}): install python3-matplotlib (./setup.sh)",
              file=sys.stderr)
        sys.exit(3)
    return plt


def main():
    ap = argparse.ArgumentParser(description="PNG plots of a troupe run directory")
    ap.add_argument("run_dir", metavar="RUN_DIR")
    ap.add_argument("--out", metavar="DIR", help="where the PNGs go (default RUN_DIR/report)")
    a = ap.parse_args()
    out = a.out or os.path.join(a.run_dir, "report")
    try:
        metrics = load_metrics(a.run_dir)
        events = load_events(a.run_dir)
    except ReportError as e:
        print(f"report: {e}", file=sys.stderr)
        return 1
    plt = import_pyplot()
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        print(f"report: cannot create {out}: {e}", file=sys.stderr)
        return 1
    written = []
    plots = [("loss.png", lambda p: plot_loss(plt, metrics, events, p)),
             ("throughput.png", lambda p: plot_throughput(plt, metrics, events, p))]
    if events is None:
        print(f"report: no events.jsonl in {a.run_dir} (a `troupe train` run): no event "
              "timeline", file=sys.stderr)
    else:
        plots.append(("events.png", lambda p: plot_events(plt, events, p)))
    for name, draw in plots:
        path = os.path.join(out, name)
        try:
            draw(path)
        except OSError as e:
            print(f"report: cannot write {path}: {e}", file=sys.stderr)
            return 1
        written.append(path)
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
