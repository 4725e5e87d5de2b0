#!/usr/bin/env python3
"""Prints the payguard metric names that Prometheus rules and Grafana dashboards query.

    contrib/metric_names.py contrib/prometheus/alerts.yml contrib/grafana/payguard.json

One name a line, sorted, each once, exactly as written in the queries (counters with `_total`,
histograms as `_bucket`), so that a test can ask a running payguard's /metrics for each. Only
queries count: `expr` of rule files and dashboard targets, and the dashboard's template variable
queries; comments, descriptions and annotations do not. Exits 1 when a file cannot be read or
parsed, or when no name is found at all.
"""

import json
import re
import sys

NAME = re.compile(r"\bpayguard_[a-z0-9_]+")


def rule_exprs(text):
    """The `expr:` values of a Prometheus rule file, inline or as a block scalar (| or >)."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(?:-\s+)?expr:\s*(.*)$", lines[i])
        i += 1
        if not m:
            continue
        value = m.group(2).strip()
        if value and value[0] in "|>":
            indent = len(m.group(1))
            block = []
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i])
                i += 1
            yield "\n".join(block)
        else:
            yield value


def dashboard_queries(node):
    """Every `expr` of a Grafana dashboard (panels, nested rows) and its template queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            elif key == "templating" and isinstance(value, dict):
                for var in value.get("list", []):
                    query = var.get("query")
                    if isinstance(query, dict):
                        query = query.get("query")
                    if var.get("type") == "query" and isinstance(query, str):
                        yield query
            else:
                yield from dashboard_queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_queries(item)


def names_in(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith(".json"):
        queries = list(dashboard_queries(json.loads(text)))
    else:
        queries = list(rule_exprs(text))
    return {name for q in queries for name in NAME.findall(q)}


def main(paths):
    if not paths:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    names = set()
    for path in paths:
        try:
            found = names_in(path)
        except (OSError, ValueError) as e:
            print(f"{path}: {e}", file=sys.stderr)
            return 1
        if not found:
            print(f"{path}: no payguard_ metric in its queries", file=sys.stderr)
            return 1
        names |= found
    for name in sorted(names):
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
