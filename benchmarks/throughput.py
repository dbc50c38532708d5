"""Untraced throughput of flock vs the baseline flock-core 0.5.7, and `import flock` time.

    .venv/bin/python benchmarks/throughput.py                 # ~2 minutes
    .venv/bin/python benchmarks/throughput.py --n 100000 --peer-n 5000 --repeat 3
    .venv/bin/python benchmarks/throughput.py --peer-python /path/to/peer-venv/bin/python

N input artifacts are published one by one (``await flock.publish(x)``), then
``run_until_idle()``; the figure is N / (time from the first publish until idle), for
(a) one agent, (b) a chain of three agents, (c) a fan-out to five agents, all with
plain-Python engines and tracing off (FLOCK_AUTO_TRACE=false in both frameworks). Each run is
a fresh process in its own temporary directory (peak RSS is that process's ru_maxrss), after
a small untimed warm-up. The baseline is slow, so it runs a smaller N (--peer-n).

Targets (from the issue): ours ≥ 20,000 input artifacts/s for one agent at N=10,000;
``import flock`` < 0.3 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from _harness import (
    OURS_CHILD,
    PEER_CHILD,
    add_common_args,
    best_of,
    child_env,
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

TOPOLOGIES = (
    ("one", "(a) one agent"),
    ("chain", "(b) chain of 3 agents"),
    ("fanout", "(c) fan-out to 5 agents"),
)
UNTRACED = {"FLOCK_AUTO_TRACE": "false", "FLOCK_OUTPUT": "off"}
TARGET_ONE_AGENT = 20_000
TARGET_IMPORT_S = 0.3

IMPORT_SNIPPET = (
    "import time; t = time.perf_counter(); import flock; print(time.perf_counter() - t)"
)


def import_time(python: str, repeat: int) -> dict[str, Any]:
    """Best-of-`repeat` time of `import flock` (in-process) and of `python -c 'import flock'`."""
    inner, outer, bare = [], [], []
    with tempfile.TemporaryDirectory(prefix="flock-bench-import-") as tmp:
        env = child_env()
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run([python, "-c", "pass"], cwd=tmp, env=env, check=True)
            bare.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            out = subprocess.run(
                [python, "-c", IMPORT_SNIPPET],
                cwd=tmp,
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            outer.append(time.perf_counter() - t0)
            inner.append(float(out.stdout.strip().splitlines()[-1]))
    return {
        "import_s": min(inner),
        "process_s": min(outer),
        "bare_interpreter_s": min(bare),
        "import_median_s": statistics.median(inner),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10_000, help="input artifacts for ours (10,000)")
    parser.add_argument(
        "--peer-n", type=int, default=1_000, help="input artifacts for the peer (1,000)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per workload; best is shown")
    parser.add_argument("--import-repeat", type=int, default=5, help="best of this many (5)")
    parser.add_argument(
        "--publish-many", action="store_true", help="also time ours with publish_many"
    )
    add_common_args(parser)
    args = parser.parse_args()

    ours = ours_python()
    peer = peer_python(args)
    warm = lambda n: min(100, max(1, n // 50))  # noqa: E731
    results: dict[str, Any] = {}

    def ours_run(topology: str, engine: str, **extra: Any) -> dict[str, Any]:
        params = {
            "topology": topology,
            "engine": engine,
            "n": args.n,
            "warmup": warm(args.n),
            **extra,
        }
        runs = [
            run_child(ours, OURS_CHILD, "throughput", params, env=UNTRACED)
            for _ in range(args.repeat)
        ]
        return best_of(runs, "per_s")

    def peer_run(topology: str) -> dict[str, Any] | None:
        if peer is None:
            return None
        params = {"topology": topology, "n": args.peer_n, "warmup": warm(args.peer_n)}
        runs = [
            run_child(peer, PEER_CHILD, "throughput", params, env=UNTRACED, timeout=1800)
            for _ in range(args.repeat)
        ]
        return best_of(runs, "per_s")

    for topology, _label in TOPOLOGIES:
        print(f"running {topology} ...", file=sys.stderr)
        results[f"ours_{topology}_async"] = ours_run(topology, "async")
        results[f"ours_{topology}_sync"] = ours_run(topology, "sync")
        if args.publish_many:
            results[f"ours_{topology}_async_publish_many"] = ours_run(
                topology, "async", publish_many=True
            )
        results[f"peer_{topology}"] = peer_run(topology)
    print("timing imports ...", file=sys.stderr)
    results["ours_import"] = import_time(ours, args.import_repeat)
    results["peer_import"] = import_time(peer, args.import_repeat) if peer else None
    report_errors(results)

    def g(key: str, field: str) -> Any:
        r = results.get(key)
        if not r or "error" in r:
            return None
        return r.get(field)

    def done(key: str) -> str:
        r = results.get(key)
        if not r:
            return "-"
        if "error" in r:
            return "ERROR"
        return "" if r.get("complete") else " (INCOMPLETE)"

    peer_note = f"peer N={args.peer_n:,}" if peer else "peer skipped"
    print(f"\nflock throughput, tracing off · ours N={args.n:,}, {peer_note} · {machine_note()}")
    rows = []
    for topology, label in TOPOLOGIES:
        a, s, p = f"ours_{topology}_async", f"ours_{topology}_sync", f"peer_{topology}"
        rows.append(
            [
                label,
                fmt(g(a, "per_s")) + done(a),
                fmt(g(s, "per_s")) + done(s),
                fmt(g(p, "per_s")) + done(p),
                ratio(g(a, "per_s"), g(p, "per_s")),
                fmt(g(a, "peak_rss_mb"), 1),
                fmt(g(p, "peak_rss_mb"), 1),
                ratio(g(a, "peak_rss_mb"), g(p, "peak_rss_mb")),
            ]
        )
        if args.publish_many:
            k = f"ours_{topology}_async_publish_many"
            rows.append(
                [
                    "    ours with publish_many",
                    fmt(g(k, "per_s")) + done(k),
                    "",
                    "",
                    "",
                    fmt(g(k, "peak_rss_mb"), 1),
                    "",
                    "",
                ]
            )
    print_table(
        "Input artifacts/s (higher is better) and peak RSS MB (lower is better)",
        [
            "workload",
            "ours async fn /s",
            "ours sync fn /s",
            "peer /s",
            "ours/peer",
            "ours RSS MB",
            "peer RSS MB",
            "RSS ours/peer",
        ],
        rows,
    )
    oi, pi = results["ours_import"], results["peer_import"]
    print_table(
        f"`import flock` (best of {args.import_repeat}; lower is better)",
        ["measure", "ours s", "peer s", "ours/peer"],
        [
            [
                "in-process import time",
                fmt(oi["import_s"], 3),
                fmt(pi and pi["import_s"], 3),
                ratio(oi["import_s"], pi and pi["import_s"]),
            ],
            [
                "`python -c 'import flock'` wall",
                fmt(oi["process_s"], 3),
                fmt(pi and pi["process_s"], 3),
                ratio(oi["process_s"], pi and pi["process_s"]),
            ],
            [
                "`python -c pass` wall (reference)",
                fmt(oi["bare_interpreter_s"], 3),
                fmt(pi and pi["bare_interpreter_s"], 3),
                "",
            ],
        ],
    )
    one = g("ours_one_async", "per_s")
    print("\nTargets:")
    print(
        f"  one agent ≥ {TARGET_ONE_AGENT:,} input artifacts/s at N={args.n:,}: "
        f"{fmt(one)} → {'MET' if one and one >= TARGET_ONE_AGENT else 'MISSED'}"
        + ("" if args.n == 10_000 else " (target is stated for N=10,000)")
    )
    print(
        f"  import flock < {TARGET_IMPORT_S} s: {oi['import_s']:.3f} s in-process, "
        f"{oi['process_s']:.3f} s whole process → "
        f"{'MET' if oi['import_s'] < TARGET_IMPORT_S else 'MISSED'}"
    )
    if peer:
        print(
            f"  (the peer runs N={args.peer_n:,} because it is slow; its figures are per-artifact rates)"
        )
    dump_json(args.json, {"args": vars(args), "machine": machine_note(), "results": results})


if __name__ == "__main__":
    main()
