"""Scale-out on PostgreSQL: throughput with 1, 2 and 4 worker processes, and the store's
own overhead per artifact.

    .venv/bin/python benchmarks/workers.py            # ~1 minute; PostgreSQL on 127.0.0.1
    .venv/bin/python benchmarks/workers.py --n 800 --dsn postgresql://postgres@127.0.0.1/test

(1) Scaling: k ``flock worker`` processes (k = 1, 2, 4) run the two-agent chain of
``_workers_program.py`` (each engine call sleeps 50 ms, an LLM stand-in; 4 runs per agent at
once per worker); this process publishes N jobs (``work=False``) and waits until the store is
idle across all workers. Throughput = N / (first publish → idle); the ratio is against 1
worker. Workers are started and listening before the clock starts.

(2) Store overhead: the same chain in one process with engines that return at once, tracing
off: the wall time per artifact on PostgresStore minus that on MemoryStore (what the store
adds to a run), and the time spent inside store calls (publish, claim, complete) per artifact.
Target: < 2 ms per artifact.

Each run uses its own PostgreSQL schema, dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from flock.orchestrator import Flock  # noqa: E402
from flock.store.memory import MemoryStore  # noqa: E402
from flock.store.postgres import PostgresStore  # noqa: E402

PROGRAM = HERE / "_workers_program.py"
TARGET_OVERHEAD_MS = 2.0


def drop_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def listeners(dsn: str, schema: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE %s",
            [f'LISTEN "flock_{schema}"%'],
        ).fetchone()
        return int(row[0]) if row else 0


async def scaling_run(dsn: str, workers: int, n: int, sleep: float) -> dict[str, float]:
    """Throughput of ``workers`` worker processes on ``n`` jobs."""
    import _workers_program as program

    schema = f"flock_bench_{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "FLOCK_STORE_URL": dsn,
        "FLOCK_STORE_SCHEMA": schema,
        "FLOCK_AUTO_TRACE": "false",
        "FLOCK_OUTPUT": "off",
        "BENCH_SLEEP": str(sleep),
    }
    store = PostgresStore(dsn, schema=schema)
    await store.is_idle()  # create the schema before the workers start
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "flock.cli",
            "worker",
            f"{PROGRAM}:flock",
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    try:
        deadline = time.monotonic() + 60
        while await asyncio.to_thread(listeners, dsn, schema) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start listening within 60 s")
            await asyncio.sleep(0.05)
        publisher = program.build(Flock(store=store))
        started = time.perf_counter()
        await publisher.publish([program.Job(n=i) for i in range(n)])
        await publisher.run_until_idle(work=False)
        elapsed = time.perf_counter() - started
        states = await store.run_states()
        assert states == {"done": 2 * n}, states
        return {"workers": workers, "seconds": elapsed, "throughput": n / elapsed}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            await asyncio.wait_for(p.wait(), 30)
        await store.close()
        drop_schema(dsn, schema)


def timed(store: PostgresStore, totals: dict[str, float]) -> None:
    """Wrap the store's queue calls to add their wall time to ``totals``."""
    for name in ("publish", "claim", "complete", "is_idle"):
        original: Callable[..., Awaitable[Any]] = getattr(store, name)

        async def wrapper(*args: Any, _f: Any = original, _n: str = name, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await _f(*args, **kw)
            finally:
                totals[_n] += time.perf_counter() - t0

        setattr(store, name, wrapper)


async def overhead_run(dsn: str, n: int) -> dict[str, float]:
    """Per-artifact wall time on MemoryStore and PostgresStore, one process, no sleeps."""
    os.environ["BENCH_SLEEP"] = "0"
    import importlib

    import _workers_program as program

    program = importlib.reload(program)
    results: dict[str, float] = {}
    mem = program.build(Flock(store=MemoryStore()))
    jobs = [program.Job(n=i) for i in range(n)]
    t0 = time.perf_counter()
    await mem.publish(jobs)
    await mem.run_until_idle()
    results["memory_ms"] = (time.perf_counter() - t0) / n * 1000

    schema = f"flock_bench_{uuid.uuid4().hex[:10]}"
    store = PostgresStore(dsn, schema=schema)
    totals: dict[str, float] = defaultdict(float)
    try:
        await store.is_idle()
        timed(store, totals)
        pg = program.build(Flock(store=store))
        t0 = time.perf_counter()
        await pg.publish(jobs)
        await pg.run_until_idle()
        results["postgres_ms"] = (time.perf_counter() - t0) / n * 1000
        assert await store.run_states() == {"done": 2 * n}
    finally:
        await store.close()
        drop_schema(dsn, schema)
    results["added_ms"] = results["postgres_ms"] - results["memory_ms"]
    results["in_store_ms"] = sum(totals.values()) / n * 1000
    for name, seconds in totals.items():
        results[f"{name}_ms"] = seconds / n * 1000
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--n", type=int, default=400, help="jobs per scaling run (400)")
    parser.add_argument("--overhead-n", type=int, default=2000, help="jobs, overhead run")
    parser.add_argument("--sleep", type=float, default=0.05, help="engine sleep, s (0.05)")
    args = parser.parse_args()
    os.environ["FLOCK_AUTO_TRACE"] = "false"
    os.environ["FLOCK_OUTPUT"] = "off"

    rows = [await scaling_run(args.dsn, k, args.n, args.sleep) for k in (1, 2, 4)]
    base = rows[0]["throughput"]
    print(f"\n(1) {args.n} jobs through 2 agents, engines sleep {args.sleep * 1000:.0f} ms")
    print("| workers | time | throughput (jobs/s) | vs 1 worker |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['workers']:.0f} | {r['seconds']:.2f} s | {r['throughput']:.1f} "
            f"| {r['throughput'] / base:.2f}x |"
        )

    o = await overhead_run(args.dsn, args.overhead_n)
    verdict = "met" if o["added_ms"] < TARGET_OVERHEAD_MS else "MISSED"
    print(f"\n(2) store overhead, {args.overhead_n} jobs, one process, no sleeps, untraced")
    print("| per job (2 agent runs) | ms |")
    print("|---|---|")
    print(f"| MemoryStore, wall | {o['memory_ms']:.3f} |")
    print(f"| PostgresStore, wall | {o['postgres_ms']:.3f} |")
    print(
        f"| **added by the store** | **{o['added_ms']:.3f}** "
        f"(target < {TARGET_OVERHEAD_MS} ms: {verdict}) |"
    )
    print(
        f"| inside store calls | {o['in_store_ms']:.3f} (publish {o.get('publish_ms', 0):.3f},"
        f" claim {o.get('claim_ms', 0):.3f}, complete {o.get('complete_ms', 0):.3f},"
        f" idle checks {o.get('is_idle_ms', 0):.3f}) |"
    )


if __name__ == "__main__":
    asyncio.run(main())
