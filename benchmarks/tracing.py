"""Tracing costs of flock vs the baseline flock-core 0.5.7.

    .venv/bin/python benchmarks/tracing.py                    # ~2-3 minutes
    .venv/bin/python benchmarks/tracing.py --only span,writer # a subset
    .venv/bin/python benchmarks/tracing.py --n 20000 --pizza-runs 2000 --peer-n 50
    .venv/bin/python benchmarks/tracing.py --only dspy --dspy-n 100 --peer-dspy-n 20

Sections (each workload is a fresh process in its own temporary directory):

  span    (i)   cost of one span: flock's ``Instrument.span`` on a provider set up by
                ``flock.tracing.configure(provider, trace_file=True, ...)`` (workflow processor
                + DuckDB writer), vs a bare OpenTelemetry SDK span (no processor; one no-op
                processor). Also with the writer held off during the loop, and the peer's
                ``@traced_and_logged`` path. Target: ours ≤ 1.5x bare.
  writer  (ii)  DuckDBSpanProcessor: push M finished spans (default 200,000) through ``on_end``
                and time until ``force_flush`` returns. Target ≥ 200,000 spans/s. Then each
                stage alone on the same spans (encoding; appending Arrow to DuckDB). The peer's
                DuckDBSpanExporter is timed one span per export (as its SimpleSpanProcessor
                calls it) and in one batch.
  size    (iii) trace file bytes per 1,000 spans of the pizza workflow (traced_run + publish
                + run_until_idle, one agent, plain-Python engine) repeated R times.
                Target ≤ 1 MB per 1,000 spans.
  lag     (iv)  event-loop lag: a coroutine sleeping 1 ms in a loop records how late it wakes
                while ~100,000 spans, queued beforehand, are encoded and written. Target max
                < 5 ms. Also with the spans ending on the loop in bursts of 2,000 while the
                writer works (that lag includes the loop's own on_end work), and the lag
                during a traced agent run, ours and the peer's.
  traced  (v)   one agent, plain-Python engine, full tracing into DuckDB: input artifacts/s.
                Target ≥ 5,000/s. The peer runs a tiny N with a timeout.
  dspy    (vi)  the seed's workflow (PizzaIdea → pizza_master → Pizza) with each framework's
                default DSPy engine (no with_engines) against a stand-in OpenAI server
                (``python -m flock.fake_llm``, started here in its own process; answers after
                --dspy-delay seconds, streams SSE when asked, as the peer's engine does). The
                seed's shape: one traced_run per input (publish + run_until_idle inside);
                --dspy-shape batch puts all N in one traced_run; --dspy-shape clients runs
                the seed's shape from --dspy-clients callers at once. Inputs/s untraced
                (FLOCK_AUTO_TRACE=false) vs traced into DuckDB (FLOCK_AUTO_TRACE=true,
                FLOCK_TRACE_FILE=true), each a fresh process after untimed warm-up runs.
                Target: tracing costs < 10 % of the untraced throughput.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from _harness import (
    OURS_CHILD,
    PEER_CHILD,
    REPO,
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

SECTIONS = ("span", "writer", "size", "lag", "traced", "dspy")
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


@contextmanager
def fake_llm_server(python: str, delay: float) -> Iterator[str]:
    """``python -m flock.fake_llm`` in its own process (no GIL shared with the measured one);
    yields its base URL and terminates it afterwards."""
    proc = subprocess.Popen(
        [python, "-m", "flock.fake_llm", "--port", "0", "--delay", str(delay)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"flock.fake_llm did not start (exit code {proc.poll()})")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def lag_row(label: str, result: Any, key: str) -> list[str]:
    """A row of the lag table from the lag statistics under ``result[key]``."""
    return [
        label,
        fmt(get(result, key, "ticks")),
        *(fmt(get(result, key, stat), 3) for stat in ("median_ms", "p99_ms", "max_ms")),
    ]


def overhead_pct(untraced: Any, traced: Any) -> float | None:
    """How much throughput tracing costs, in % of the untraced throughput."""
    if not isinstance(untraced, int | float) or not isinstance(traced, int | float):
        return None
    return (1 - traced / untraced) * 100 if untraced else None


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
    parser.add_argument("--dspy-n", type=int, default=500, help="DSPy workflow inputs, ours")
    parser.add_argument(
        "--peer-dspy-n", type=int, default=60, help="DSPy workflow inputs, peer untraced"
    )
    parser.add_argument(
        "--peer-dspy-traced-n", type=int, default=8, help="DSPy workflow inputs, peer traced"
    )
    parser.add_argument(
        "--dspy-warmup", type=int, default=2, help="untimed DSPy workflow runs per process"
    )
    parser.add_argument(
        "--dspy-delay", type=float, default=0.0, help="seconds the stand-in LLM waits per answer"
    )
    parser.add_argument(
        "--dspy-shape",
        choices=("run", "batch", "clients"),
        default="run",
        help="run: one traced_run per input (the seed's); batch: one around all N; clients: "
        "run, from --dspy-clients callers at once",
    )
    parser.add_argument(
        "--dspy-clients", type=int, default=8, help="concurrent callers of --dspy-shape clients"
    )
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
        enc, app = get(w, "encode_us_per_span"), get(w, "append_us_per_span")
        if enc and app:
            print(
                f"  ours, each stage alone on the same spans: encoding {enc:.2f} µs/span "
                f"(Python, {1e6 / enc:,.0f} spans/s); DuckDB appending pre-encoded Arrow "
                f"in batches of {get(w, 'append_batch'):,} {app:.2f} µs/span "
                f"({1e6 / app:,.0f} spans/s)"
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
        R["lag_ours_bursts"] = ours_run(
            "lag", {"m": args.lag_m, "burst": 2_000}, "written", UNTRACED
        )
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
        w, b = R["lag_ours_writer"], R["lag_ours_bursts"]
        rows = [
            lag_row("ours, writer starting (loads pyarrow, once per process)", w, "startup"),
            lag_row("ours, idle loop (reference)", w, "idle"),
            lag_row(
                f"ours, writing {get(w, 'm') or args.lag_m:,} spans queued beforehand "
                f"({fmt(get(w, 'write_s'), 2)} s)",
                w,
                "during",
            ),
            lag_row(
                f"ours, {get(b, 'm') or args.lag_m:,} spans ending in bursts of 2,000 on the "
                f"loop ({fmt(get(b, 'write_s'), 2)} s)",
                b,
                "during",
            ),
            lag_row(f"ours, traced one-agent run, N={lag_n:,}", R["lag_ours_traced"], "lag"),
            lag_row(f"peer, traced one-agent run, N={args.peer_n:,}", R["lag_peer_traced"], "lag"),
        ]
        print_table(
            "(iv) event-loop lag: overshoot of a 1 ms sleep, ms (lower is better)",
            ["while", "ticks", "median", "p99", "max"],
            rows,
        )
        longest = get(b, "longest_burst_ms")
        if longest is not None:
            print(
                f"  the bursts row includes the loop's own work: ending 2,000 spans took up to "
                f"{longest:.2f} ms of loop time per burst"
            )
        mx = get(w, "during", "max_ms")
        p99 = get(w, "during", "p99_ms")
        targets.append(
            (
                "(iv) loop lag < 5 ms while ~100k queued spans are written",
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

    # (vi) the seed's DSPy workflow, traced vs untraced -------------------------------------
    if "dspy" in only:
        print("running (vi) DSPy workflow against the stand-in server ...", file=sys.stderr)
        with fake_llm_server(ours, args.dspy_delay) as url:
            llm = {
                "OPENAI_BASE_URL": url,
                "OPENAI_API_KEY": "local-key",
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no price-list download offline
            }
            base = {
                "warmup": args.dspy_warmup,
                "shape": args.dspy_shape,
                "clients": args.dspy_clients,
            }
            for tracing, env in (("untraced", UNTRACED), ("traced", TRACED)):
                R[f"dspy_ours_{tracing}"] = ours_run(
                    "dspy_pizza", {**base, "n": args.dspy_n}, "per_s", {**env, **llm}
                )
            for tracing, env, n in (
                ("untraced", UNTRACED, args.peer_dspy_n),
                ("traced", TRACED, args.peer_dspy_traced_n),
            ):
                R[f"dspy_peer_{tracing}"] = peer_run(
                    "dspy_pizza", {**base, "n": n}, "per_s", {**env, **llm}
                )

        def cell(r: Any, digits: int) -> str:
            if r is None:
                return "-"
            if not ok(r):
                return "ERROR" if "timed out" not in r.get("error", "") else "timeout"
            text = f"{fmt(get(r, 'per_s'), digits)} (N={get(r, 'n')})"
            if not get(r, "complete"):
                text += f" INCOMPLETE: {get(r, 'pizzas')} pizzas"
            return text

        def spans_per_input(r: Any) -> str:
            spans = get(r, "spans_written") or get(r, "spans_in_file")
            n = get(r, "n")
            if not spans or not n:
                return "-"
            extra = args.dspy_warmup if get(r, "spans_in_file") is not None else 0
            return fmt(spans / (n + extra), 1)

        rows = []
        figures: dict[str, tuple[Any, Any, float | None]] = {}
        for who, label in (("ours", "ours (flock)"), ("peer", "peer (flock-core 0.5.7)")):
            u, t = R[f"dspy_{who}_untraced"], R[f"dspy_{who}_traced"]
            untraced, traced = get(u, "per_s"), get(t, "per_s")
            if not (get(u, "complete") and get(t, "complete")):
                untraced = traced = None  # an incomplete run's rate means nothing
            pct = overhead_pct(untraced, traced)
            figures[who] = (untraced, traced, pct)
            rows.append(
                [
                    label,
                    cell(u, 2),
                    cell(t, 2),
                    f"{pct:.1f} %" if pct is not None else "-",
                    spans_per_input(t),
                    fmt(get(t, "peak_rss_mb"), 1),
                ]
            )
        shape = {
            "run": "one traced_run per input",
            "batch": "one traced_run",
            "clients": f"one traced_run per input, {args.dspy_clients} callers at once",
        }[args.dspy_shape]
        print_table(
            "(vi) the seed's workflow, default DSPy engine, stand-in OpenAI server in its own "
            f"process (delay {args.dspy_delay:g} s, {shape}): inputs/s (higher is better)",
            [
                "framework",
                "untraced /s",
                "traced into DuckDB /s",
                "tracing overhead",
                "spans/input",
                "peak RSS MB (traced)",
            ],
            rows,
        )
        (ou, ot, opct), (pu, pt, ppct) = figures["ours"], figures["peer"]
        print(f"  ours/peer: untraced {ratio(ou, pu)}, traced {ratio(ot, pt)}")
        flushed = get(R["dspy_ours_traced"], "per_s_flushed")
        if flushed:
            print(f"  ours traced, until every span is on disk: {fmt(flushed, 2)} /s")
        warm = get(R["dspy_ours_untraced"], "warmup_s")
        if warm is not None:
            print(
                f"  (warm-up excluded: {args.dspy_warmup} run(s), {warm:.1f} s in ours "
                "untraced — DSPy/litellm import and LM creation)"
            )
        for who in ("peer",):
            for tracing in ("untraced", "traced"):
                r = R[f"dspy_{who}_{tracing}"]
                if isinstance(r, dict) and "error" in r:
                    tail = (r.get("stderr_tail") or "").strip().splitlines()[-3:]
                    print(f"  {who} {tracing}: {r['error']}: " + " | ".join(tail))
                elif ok(r) and not get(r, "complete"):
                    print(
                        f"  {who} {tracing}: made {get(r, 'pizzas')} of {get(r, 'n')} "
                        "pizzas (no throughput reported)"
                    )
        figure = (
            f"ours {opct:.1f} % ({fmt(ou, 2)} → {fmt(ot, 2)} /s)" if opct is not None else "ours -"
        )
        if ppct is not None:
            figure += f"; peer {ppct:.1f} % ({fmt(pu, 2)} → {fmt(pt, 2)} /s)"
        targets.append(
            (
                "(vi) seed's DSPy workflow: tracing costs < 10 % of untraced inputs/s",
                figure,
                verdict(opct < 10 if opct is not None else None),
            )
        )

    report_errors(R)
    if targets:
        print_table("Targets", ["target", "measured", "verdict"], [list(t) for t in targets])
    dump_json(args.json, {"args": vars(args), "machine": machine_note(), "results": R})


if __name__ == "__main__":
    main()
