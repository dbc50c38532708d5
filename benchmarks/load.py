"""Load: nothing is lost at volume, and memory stays bounded.

    .venv/bin/python benchmarks/load.py                    # both workloads (~2-4 minutes)
    .venv/bin/python benchmarks/load.py --artifacts 10000 --spans 100000   # a quick run

(1) ``--artifacts`` N (default 100,000) input artifacts through a chain of three agents
    (Idea -> Pizza -> Review -> nothing), plain-Python engines, full tracing into
    ``.flock/traces.duckdb`` (the default set-up, FLOCK_AUTO_TRACE=true). Inputs are published
    in chunks of ``--chunk`` with ``publish_many`` and a ``run_until_idle()`` after each chunk.
    Checks: every artifact processed (N reviews on the blackboard) and the span count in the
    file exactly as the code's span structure predicts:

        per agent run: Agent.execute, OutputUtilityComponent.on_initialize,
                       FunctionEngine.evaluate, OutputUtilityComponent.on_post_evaluate  = 4
        per chunk:     Flock.publish, Flock.run_until_idle, Flock.shutdown              = 3
        total = 3 agents x 4 x N + 3 x ceil(N / chunk)

    Reports throughput and the process's peak RSS (target < 500 MB).

(2) ``--spans`` M (default 1,000,000) spans created as fast as one thread can through an
    OpenTelemetry SDK tracer whose only processor is :class:`DuckDBSpanProcessor`, then one
    ``force_flush``. Checks: zero dropped, M rows in the file. Reports spans/s (creation to
    everything on disk), the writer's own rate, and peak RSS.

Each workload runs in a fresh child process in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# Children --------------------------------------------------------------------------------------


def child_chain(n: int, chunk: int) -> dict[str, Any]:
    import asyncio

    from pydantic import BaseModel

    from flock import Flock, flock_type

    @flock_type
    class Idea(BaseModel):
        topic: str

    @flock_type
    class Pizza(BaseModel):
        name: str

    @flock_type
    class Review(BaseModel):
        score: int

    reviewed = 0

    def critic(pizza: Pizza) -> Review:
        return Review(score=len(pizza.name))

    async def sink(review: Review) -> None:
        nonlocal reviewed
        reviewed += 1

    flock = Flock()
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(
        lambda idea: Pizza(name=idea.topic + " pizza")
    )
    flock.agent("critic").consumes(Pizza).publishes(Review).with_engines(critic)
    flock.agent("sink").consumes(Review).with_engines(sink)

    async def main() -> float:
        start = time.perf_counter()
        for offset in range(0, n, chunk):
            await flock.publish_many(
                Idea(topic=f"idea {i}") for i in range(offset, min(n, offset + chunk))
            )
            await flock.run_until_idle()
        return time.perf_counter() - start

    seconds = asyncio.run(main())
    reviews = asyncio.run(flock.store.query(type=flock.get_agent("critic").published_types[0]))
    return {
        "seconds": seconds,
        "reviewed": reviewed,
        "reviews_on_blackboard": len(reviews),
        "rss_mb_before_exit": peak_rss_mb(),
    }


def child_burst(m: int) -> dict[str, Any]:
    from opentelemetry.sdk.trace import TracerProvider

    from flock.tracing.processor import DuckDBSpanProcessor

    processor = DuckDBSpanProcessor(Path(".flock/traces.duckdb"))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("burst")
    start = time.perf_counter()
    for i in range(m):
        with tracer.start_as_current_span("burst.span") as span:
            span.set_attribute("i", i)
            span.set_attribute("flock.agent.name", "burst")
    created = time.perf_counter() - start
    written_while_creating = processor.written
    flushed = processor.force_flush(600_000)
    total = time.perf_counter() - start
    result = {
        "created_seconds": created,
        "total_seconds": total,
        "flushed": flushed,
        "written": processor.written,
        "written_while_creating": written_while_creating,
        "dropped": processor.dropped,
    }
    provider.shutdown()
    result["rss_mb"] = peak_rss_mb()
    return result


# Parent ----------------------------------------------------------------------------------------


def run_child(kind: str, *args: str) -> tuple[dict[str, Any], float, Path]:
    workdir = Path(tempfile.mkdtemp(prefix=f"flock-load-{kind}-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOCK_", "OTEL_"))}
    env.update(FLOCK_AUTO_TRACE="true", FLOCK_OUTPUT="off")
    out = workdir / "result.json"
    proc = subprocess.Popen(
        [sys.executable, str(HERE), "--child", kind, *args, "--out", str(out)],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    # wait4 gives this child's own rusage: its peak RSS including the flush at exit
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed ({proc.returncode}):\n{stderr}")
    if stderr.strip():
        print(f"[{kind} stderr] {stderr.strip()}")
    result = json.loads(out.read_text())
    return result, usage.ru_maxrss / 1024, workdir


def count_spans(db: Path, where: str = "") -> int:
    import duckdb

    conn = duckdb.connect(str(db), read_only=True)
    try:
        return int(conn.execute(f"SELECT count(*) FROM spans {where}").fetchone()[0])  # type: ignore[index]
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1_000)
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--only", choices=("chain", "burst"))
    parser.add_argument("--child", choices=("chain", "burst"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        if args.child == "chain":
            result = child_chain(args.artifacts, args.chunk)
        else:
            result = child_burst(args.spans)
        args.out.write_text(json.dumps(result))
        return

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    ok = True
    if args.only in (None, "chain"):
        n, chunk = args.artifacts, args.chunk
        result, rss, workdir = run_child("chain", "--artifacts", str(n), "--chunk", str(chunk))
        expected = 3 * 4 * n + 3 * math.ceil(n / chunk)
        spans = count_spans(workdir / ".flock" / "traces.duckdb")
        db_mb = (workdir / ".flock" / "traces.duckdb").stat().st_size / 1e6
        good = result["reviewed"] == n and result["reviews_on_blackboard"] == n
        good = good and spans == expected and rss < 500
        ok &= good
        print(
            f"(1) chain of 3 agents, {n:,} artifacts, full tracing into DuckDB:\n"
            f"    processed {result['reviewed']:,}/{n:,}; spans in file {spans:,} "
            f"(expected {expected:,}); {n / result['seconds']:,.0f} input artifacts/s "
            f"({result['seconds']:.1f} s); peak RSS {rss:,.0f} MB (target < 500); "
            f"trace file {db_mb:,.1f} MB -> {'OK' if good else 'FAIL'}"
        )
    if args.only in (None, "burst"):
        m = args.spans
        result, rss, workdir = run_child("burst", "--spans", str(m))
        rows = count_spans(workdir / ".flock" / "traces.duckdb", "WHERE name = 'burst.span'")
        good = result["flushed"] and result["dropped"] == 0 and rows == m
        ok &= good
        print(
            f"(2) burst of {m:,} spans through DuckDBSpanProcessor:\n"
            f"    in file {rows:,}, dropped {result['dropped']}; created in "
            f"{result['created_seconds']:.1f} s ({m / result['created_seconds']:,.0f} spans/s, "
            f"{result['written_while_creating']:,} already written by then); all on disk after "
            f"{result['total_seconds']:.1f} s ({m / result['total_seconds']:,.0f} spans/s "
            f"end to end); peak RSS {rss:,.0f} MB -> {'OK' if good else 'FAIL'}"
        )
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
