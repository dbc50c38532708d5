"""Tracing costs of flock vs the baseline flock-core 0.5.7.

    .venv/bin/python benchmarks/tracing.py                    # ~2-3 minutes
    .venv/bin/python benchmarks/tracing.py --only span,writer # a subset
    .venv/bin/python benchmarks/tracing.py --n 20000 --pizza-runs 2000 --peer-n 50

Sections (each workload is a fresh process in its own temporary directory):

  span    (i)   cost of one span: flock's ``Instrument.span`` on a provider set up by
                ``flock.tracing.configure(provider, trace_file=True, ...)`` (workflow processor
                + DuckDB writer), vs a bare OpenTelemetry SDK span (no processor; one no-op
                processor). Also with the writer held off during the loop, and the peer's
                ``@traced_and_logged`` path. Target: ours ≤ 1.5x bare.
  writer  (ii)  DuckDBSpanProcessor: push M finished spans (default 200,000) through ``on_end``
                and time until ``force_flush`` returns. Target ≥ 200,000 spans/s. The peer's
                DuckDBSpanExporter is timed one span per export (as its SimpleSpanProcessor
                calls it) and in one batch.
  size    (iii) trace file bytes per 1,000 spans of the pizza workflow (traced_run + publish
                + run_until_idle, one agent, plain-Python engine) repeated R times.
                Target ≤ 1 MB per 1,000 spans.
  lag     (iv)  event-loop lag: a coroutine sleeping 1 ms in a loop records how late it wakes
                while ~100,000 spans are encoded and written. Target max < 5 ms. Also the lag
                during a traced agent run, ours and the peer's.
  traced  (v)   one agent, plain-Python engine, full tracing into DuckDB: input artifacts/s.
                Target ≥ 5,000/s. The peer runs a tiny N with a timeout.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from _harness import (
    OURS_CHILD,
    PEER_CHILD,
    add_common_args,
    best_of,
    dump_json,
    fmt,
    machine_note,
    ours_python,
    peer_python,
    print_table,
    ratio,
    report_errors,
    run_child,
)

SECTIONS = ("span", "writer", "size", "lag", "traced")
TRACED = {"FLOCK_AUTO_TRACE": "true", "FLOCK_TRACE_FILE": "true", "FLOCK_OUTPUT": "off"}
UNTRACED = {"FLOCK_AUTO_TRACE": "false", "FLOCK_OUTPUT": "off"}


def ok(r: Any) -> bool:
    return isinstance(r, dict) and "error" not in r


def get(r: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(r, dict) or "error" in r:
            return None
        r = r.get(key)
    return r


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("MET" if met else "MISSED")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma list of sections")
    parser.add_argument("--span-m", type=int, default=200_000, help="spans per timing loop")
    parser.add_argument("--peer-span-m", type=int, default=2_000, help="peer spans per loop")
    parser.add_argument("--writer-m", type=int, default=200_000, help="spans for the writer")
    parser.add_argument("--peer-writer-m", type=int, default=2_000, help="spans for the peer")
    parser.add_argument("--pizza-runs", type=int, default=500, help="workflow runs for ours")
    parser.add_argument("--peer-pizza-runs", type=int, default=10, help="workflow runs, peer")
    parser.add_argument("--lag-m", type=int, default=100_000, help="spans written under lag")
    parser.add_argument("--n", type=int, default=5_000, help="traced inputs for ours")
    parser.add_argument("--peer-n", type=int, default=20, help="traced inputs for the peer")
    parser.add_argument("--peer-timeout", type=float, default=600, help="seconds per peer run")
    parser.add_argument("--repeat", type=int, default=1, help="runs per workload; best shown")
    add_common_args(parser)
    args = parser.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")

    ours = ours_python()
    peer = peer_python(args)
    R: dict[str, Any] = {}
    targets: list[tuple[str, str, str]] = []

    def ours_run(workload: str, params: dict[str, Any], key: str, env: dict[str, str]) -> Any:
        runs = [run_child(ours, OURS_CHILD, workload, params, env=env) for _ in range(args.repeat)]
        return best_of(runs, key, higher=key not in ("ns_per_span",))

    def peer_run(workload: str, params: dict[str, Any], key: str, env: dict[str, str]) -> Any:
        if peer is None:
            return None
        runs = [
            run_child(peer, PEER_CHILD, workload, params, env=env, timeout=args.peer_timeout)
            for _ in range(args.repeat)
        ]
        return best_of(runs, key, higher=key not in ("ns_per_span",))

    print(f"flock tracing benchmarks · {machine_note()}")

    # (i) span cost -------------------------------------------------------------------
    if "span" in only:
        print("running (i) span cost ...", file=sys.stderr)
        for variant in ("bare_no_processor", "bare_noop_processor", "flock", "flock_writer_idle"):
            R[f"span_{variant}"] = ours_run(
                "span_cost", {"variant": variant, "m": args.span_m}, "ns_per_span", UNTRACED
            )
        R["span_peer_no_file"] = peer_run(
            "span_cost",
            {"m": args.peer_span_m * 10},
            "ns_per_span",
            {"FLOCK_AUTO_TRACE": "true", "FLOCK_TRACE_FILE": "false"},
        )
        R["span_peer_file"] = peer_run(
            "span_cost", {"m": args.peer_span_m // 10}, "ns_per_span", TRACED
        )
        bare = get(R["span_bare_no_processor"], "ns_per_span")
        noop = get(R["span_bare_noop_processor"], "ns_per_span")
        rows = []
        for key, label in (
            ("span_bare_no_processor", "bare OTel SDK span, no processor"),
            ("span_bare_noop_processor", "bare OTel SDK span, one no-op processor"),
            ("span_flock", "flock Instrument.span, configure() + DuckDB writer"),
            ("span_flock_writer_idle", "flock processors, writer held off in loop"),
            ("span_peer_no_file", "peer @traced_and_logged call, no trace file"),
            ("span_peer_file", "peer @traced_and_logged call, DuckDB trace file"),
        ):
            ns = get(R[key], "ns_per_span")
            m = get(R[key], "m")
            rows.append([label, fmt(m), fmt(ns), ratio(ns, bare), ratio(ns, noop)])
        print_table(
            "(i) cost of one span, ns (enter+exit, 4 attributes; best of 3 loops; lower is better)",
            ["path", "spans/loop", "ns/span", "x bare (no proc)", "x bare (no-op proc)"],
            rows,
        )
        flock_ns = get(R["span_flock"], "ns_per_span")
        flush = get(R["span_flock"], "flush_after_s")
        if flush is not None:
            print(f"  (flock: draining the queue to DuckDB after the loops took {flush:.2f} s)")
        for label, base in (("no processor", bare), ("no-op processor", noop)):
            met = flock_ns / base <= 1.5 if flock_ns and base else None
            figure = f"{flock_ns / base:.2f}x" if flock_ns and base else "-"
            targets.append((f"(i) span cost ≤ 1.5x bare SDK span ({label})", figure, verdict(met)))
        peer_file = get(R["span_peer_file"], "ns_per_span")
        if flock_ns and peer_file:
            print(f"  ours/peer (with trace file): {ratio(flock_ns, peer_file)}")

    # (ii) writer throughput -----------------------------------------------------------
    if "writer" in only:
        print("running (ii) writer ...", file=sys.stderr)
        R["writer_ours"] = ours_run("writer", {"m": args.writer_m}, "spans_per_s", UNTRACED)
        R["writer_peer_single"] = peer_run(
            "writer", {"m": args.peer_writer_m // 10}, "spans_per_s", UNTRACED
        )
        R["writer_peer_batch"] = peer_run(
            "writer", {"m": args.peer_writer_m, "batch": True}, "spans_per_s", UNTRACED
        )
        w = R["writer_ours"]
        rows = [
            [
                "ours DuckDBSpanProcessor (on_end … force_flush)",
                fmt(get(w, "m")),
                fmt(get(w, "rows")),
                fmt(get(w, "total_s"), 2),
                fmt(get(w, "spans_per_s")),
                fmt(get(w, "peak_rss_mb"), 1),
            ]
        ]
        for key, label in (
            ("writer_peer_single", "peer DuckDBSpanExporter, 1 span/export"),
            ("writer_peer_batch", "peer DuckDBSpanExporter, 1 batch export"),
        ):
            p = R[key]
            rows.append(
                [
                    label,
                    fmt(get(p, "m")),
                    fmt(get(p, "rows")),
                    fmt(get(p, "total_s"), 2),
                    fmt(get(p, "spans_per_s")),
                    fmt(get(p, "peak_rss_mb"), 1),
                ]
            )
        print_table(
            "(ii) DuckDB writer throughput (higher is better)",
            ["writer", "spans", "rows in file", "seconds", "spans/s", "peak RSS MB"],
            rows,
        )
        sps = get(w, "spans_per_s")
        print(
            f"  ours/peer: {ratio(sps, get(R['writer_peer_single'], 'spans_per_s'))} (1 span/export), "
            f"{ratio(sps, get(R['writer_peer_batch'], 'spans_per_s'))} (batch)"
        )
        targets.append(
            (
                f"(ii) writer ≥ 200,000 spans/s ({get(w, 'm') or args.writer_m:,} spans)",
                fmt(sps) + " spans/s",
                verdict(sps >= 200_000 if sps else None),
            )
        )

    # (iii) trace file size -----------------------------------------------------------
    if "size" in only:
        print("running (iii) trace file size ...", file=sys.stderr)
        R["size_ours"] = ours_run("pizza", {"runs": args.pizza_runs}, "spans", TRACED)
        R["size_peer"] = peer_run("pizza", {"runs": args.peer_pizza_runs}, "spans", TRACED)
        rows = []
        for key, label in (("size_ours", "ours"), ("size_peer", "peer")):
            r = R[key]
            spans = get(r, "spans")
            rows.append(
                [
                    label,
                    fmt(get(r, "runs")),
                    fmt(spans),
                    fmt(spans / get(r, "runs"), 1) if spans else "-",
                    fmt((get(r, "file_bytes") or 0) / 1e6, 2) if ok(r) else "-",
                    fmt((get(r, "bytes_per_1000_spans") or 0) / 1e6, 3) if spans else "-",
                    fmt(get(r, "attr_bytes") / spans, 0) if spans else "-",
                    fmt(get(r, "elapsed_s"), 2),
                ]
            )
        print_table(
            "(iii) trace file of the pizza workflow (lower is better)",
            [
                "framework",
                "runs",
                "spans",
                "spans/run",
                "file MB",
                "MB per 1,000 spans",
                "avg attribute bytes/span",
                "run time s",
            ],
            rows,
        )
        ours_mb = get(R["size_ours"], "bytes_per_1000_spans")
        peer_mb = get(R["size_peer"], "bytes_per_1000_spans")
        print(f"  ours/peer per 1,000 spans: {ratio(ours_mb, peer_mb)}")
        for key in ("size_ours", "size_peer"):
            top = get(R[key], "top_spans")
            if top:
                print(f"  {key[5:]} largest spans (name, count, avg attribute chars):")
                for name, count, avg in top[:5]:
                    print(f"      {name:<55} {count:>6} {avg:>12,.0f}")
        note = ""
        if ours_mb and (get(R["size_ours"], "file_bytes") or 0) < 4e6:
            note = " (small file: DuckDB's fixed block overhead dominates; raise --pizza-runs)"
        targets.append(
            (
                "(iii) ≤ 1 MB per 1,000 spans",
                f"{ours_mb / 1e6:.3f} MB" + note if ours_mb else "-",
                verdict(ours_mb <= 1e6 if ours_mb else None),
            )
        )

    # (iv) event-loop lag ------------------------------------------------------------------
    if "lag" in only:
        print("running (iv) event-loop lag ...", file=sys.stderr)
        R["lag_ours_writer"] = ours_run("lag", {"m": args.lag_m}, "written", UNTRACED)
        lag_n = max(1, args.n // 5)
        R["lag_ours_traced"] = ours_run(
            "throughput",
            {"topology": "one", "engine": "async", "n": lag_n, "warmup": 20, "lag": True},
            "per_s",
            TRACED,
        )
        R["lag_peer_traced"] = peer_run(
            "throughput",
            {"topology": "one", "n": args.peer_n, "warmup": 2, "lag": True},
            "per_s",
            TRACED,
        )
        w = R["lag_ours_writer"]
        rows = [
            [
                "ours, idle loop (reference)",
                fmt(get(w, "idle", "ticks")),
                fmt(get(w, "idle", "median_ms"), 3),
                fmt(get(w, "idle", "p99_ms"), 3),
                fmt(get(w, "idle", "max_ms"), 3),
            ],
            [
                f"ours, writing {get(w, 'm') or args.lag_m:,} queued spans "
                f"({fmt(get(w, 'write_s'), 2)} s)",
                fmt(get(w, "during", "ticks")),
                fmt(get(w, "during", "median_ms"), 3),
                fmt(get(w, "during", "p99_ms"), 3),
                fmt(get(w, "during", "max_ms"), 3),
            ],
        ]
        for key, label, n in (
            ("lag_ours_traced", "ours, traced one-agent run", lag_n),
            ("lag_peer_traced", "peer, traced one-agent run", args.peer_n),
        ):
            r = R[key]
            rows.append(
                [
                    f"{label}, N={n:,}",
                    fmt(get(r, "lag", "ticks")),
                    fmt(get(r, "lag", "median_ms"), 3),
                    fmt(get(r, "lag", "p99_ms"), 3),
                    fmt(get(r, "lag", "max_ms"), 3),
                ]
            )
        print_table(
            "(iv) event-loop lag: overshoot of a 1 ms sleep, ms (lower is better)",
            ["while", "ticks", "median", "p99", "max"],
            rows,
        )
        mx = get(w, "during", "max_ms")
        p99 = get(w, "during", "p99_ms")
        targets.append(
            (
                "(iv) loop lag < 5 ms while ~100k spans are written",
                f"max {fmt(mx, 2)} ms, p99 {fmt(p99, 2)} ms",
                verdict(mx < 5 if mx is not None else None),
            )
        )

    # (v) traced throughput ------------------------------------------------------------------
    if "traced" in only:
        print("running (v) traced throughput ...", file=sys.stderr)
        R["traced_ours"] = ours_run(
            "throughput",
            {"topology": "one", "engine": "async", "n": args.n, "warmup": 50},
            "per_s",
            TRACED,
        )
        R["traced_peer"] = peer_run(
            "throughput", {"topology": "one", "n": args.peer_n, "warmup": 2}, "per_s", TRACED
        )
        o, p = R["traced_ours"], R["traced_peer"]
        rows = [
            [
                f"ours, N={args.n:,}",
                fmt(get(o, "per_s")),
                fmt(get(o, "per_s_flushed")),
                fmt(get(o, "spans_written")),
                fmt(get(o, "peak_rss_mb"), 1),
            ],
            [
                f"peer, N={args.peer_n:,}" + ("" if ok(p) or p is None else " (ERROR/timeout)"),
                fmt(get(p, "per_s"), 2),
                "(written synchronously)",
                "-",
                fmt(get(p, "peak_rss_mb"), 1),
            ],
        ]
        print_table(
            "(v) one agent, full tracing into DuckDB: input artifacts/s (higher is better)",
            ["run", "until idle /s", "until spans on disk /s", "spans written", "peak RSS MB"],
            rows,
        )
        print(f"  ours/peer (until idle): {ratio(get(o, 'per_s'), get(p, 'per_s'))}")
        per_s = get(o, "per_s")
        flushed = get(o, "per_s_flushed")
        targets.append(
            (
                "(v) traced one agent ≥ 5,000 input artifacts/s",
                f"{fmt(per_s)} /s until idle, {fmt(flushed)} /s until on disk",
                verdict(per_s >= 5000 if per_s else None),
            )
        )

    report_errors(R)
    if targets:
        print_table("Targets", ["target", "measured", "verdict"], [list(t) for t in targets])
    dump_json(args.json, {"args": vars(args), "machine": machine_note(), "results": R})


if __name__ == "__main__":
    main()
