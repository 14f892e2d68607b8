#!/usr/bin/env python3
"""Medians of several `kinde-meter bench --json` reports, as a Markdown table.

    python3 bench/median.py run1.json run2.json run3.json

Runs are matched by connection count, mode and load (closed loop, or the open
loop's asked rate); each column is the median of that row's runs (peak RSS: the
largest), and "stored = acknowledged" is "yes" only when every run's was. The
ratios are medians of each run's own same-invocation ratio, never a ratio of
medians. BENCHMARKS.md quotes this script's output.
"""

import json
import statistics
import sys


def load_kind(run):
    rate = run.get("rate")
    if not rate:
        return "closed"
    return f"open {rate['asked_per_second']:.0f}/s"


def med(values, digits):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{statistics.median(values):.{digits}f}"


def main(paths):
    reports = [json.load(open(p)) for p in paths]
    rows = {}
    order = []
    for report in reports:
        for run in report["runs"]:
            key = (run["connections"], run["mode"], run.get("rate") is not None)
            if key not in rows:
                rows[key] = []
                order.append(key)
            rows[key].append(run)
    print(f"Medians of {len(reports)} runs: " + ", ".join(paths))
    print()
    print("| connections | mode | load | req/s | records/s | p50 ms | p90 ms | p99 ms | p99.9 ms "
          "| × healthz req/s | × axum req/s | server CPU µs/req | peak RSS MiB | stored = acknowledged |")
    print("|" + "---|" * 14)
    for key in order:
        runs = rows[key]
        connections, mode, open_loop = key

        def column(get, digits):
            return med([get(r) for r in runs], digits)

        def ratio(name):
            return column(lambda r: r[name]["requests_per_second"] if r.get(name) else None, 2)

        load = "closed"
        if open_loop:
            load = "open " + column(lambda r: r["rate"]["achieved_per_second"], 0) + "/s"
        rss = [r["peak_rss_kib"] for r in runs if r.get("peak_rss_kib")]
        stored = [r.get("stored") for r in runs]
        if all(s is None for s in stored):
            exact = "–"
        else:
            exact = "yes" if all(s and s["exact"] for s in stored) else "NO"
        cells = [
            str(connections), mode, load,
            column(lambda r: r["requests_per_second"], 0),
            column(lambda r: r.get("records_per_second"), 0),
            *(column(lambda r, q=q: r["latency_ms"][q], 3) for q in ("p50", "p90", "p99", "p99.9")),
            ratio("vs_healthz"), ratio("vs_axum"),
            column(lambda r: (r.get("cpu_us_per_request") or {}).get("server"), 1),
            f"{max(rss) / 1024:.1f}" if rss else "–",
            exact,
        ]
        print("| " + " | ".join(cells) + " |")

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
