#!/usr/bin/env python3
"""Parses a Prometheus text exposition file with python3-prometheus-client's parser (the one
Prometheus's own tooling agrees with) and prints one line per sample, sorted:

  TYPE name{label="value",...} value

(label values as JSON strings, so a quote or newline in one shows escaped).

Exit 1, with the parser's words, when the text does not parse. Used by
tests/launch/control_test.cc on GET /metrics and JobMetrics::text().

  parse_metrics.py FILE
"""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    text = open(argv[1], encoding="utf-8").read()
    lines = []
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(s.labels.items()))
                lines.append(f"{family.type} {s.name}{{{labels}}} {s.value!r}")
    except Exception as e:  # the parser raises ValueError and friends
        print(f"parse_metrics: {argv[1]} does not parse: {type(e).__name__}: {e}",
              file=sys.stderr)
        return 1
    for line in sorted(lines):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
