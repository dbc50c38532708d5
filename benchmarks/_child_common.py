"""What both benchmark children share: memory, event-loop lag, trace-file size, and the
command-line entry. Standard library only (plus DuckDB, imported where used), so the peer's
child can import it from its own venv too.

    PYTHON _child_X.py WORKLOAD PARAMS_JSON RESULT_PATH
"""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class LagProbe:
    """Sleeps 1 ms in a loop on the event loop and records how late each wake-up is."""

    def __init__(self, interval: float = 0.001) -> None:
        self.interval = interval
        self.overshoots_ms: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._running = False

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while self._running:
            before = loop.time()
            await asyncio.sleep(self.interval)
            self.overshoots_ms.append((loop.time() - before - self.interval) * 1000)

    def start(self) -> None:
        self._running = True
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> dict[str, Any]:
        self._running = False
        if self._task is not None:
            await self._task
        return lag_stats(self.overshoots_ms)

    @classmethod
    async def over(cls, seconds: float) -> dict[str, Any]:
        """The loop's lag while it does nothing else for ``seconds``."""
        probe = cls()
        probe.start()
        await asyncio.sleep(seconds)
        return await probe.stop()


def lag_stats(samples: list[float]) -> dict[str, Any]:
    if not samples:
        return {"ticks": 0, "max_ms": None, "p99_ms": None, "median_ms": None}
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return {
        "ticks": len(samples),
        "max_ms": ordered[-1],
        "p99_ms": p99,
        "median_ms": statistics.median(ordered),
    }


def file_bytes(path: Path) -> int:
    """The DuckDB file and its write-ahead log."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}.wal")) if p.exists())


def trace_file_stats(path: Path) -> dict[str, Any]:
    import duckdb

    size = file_bytes(path)
    with duckdb.connect(str(path), read_only=True) as conn:
        spans, attr_bytes = conn.execute(
            "SELECT count(*), coalesce(sum(strlen(attributes::VARCHAR)), 0) FROM spans"
        ).fetchone()  # type: ignore[misc]
        by_name = conn.execute(
            "SELECT name, count(*), avg(strlen(attributes::VARCHAR)) FROM spans "
            "GROUP BY name ORDER BY 3 DESC LIMIT 8"
        ).fetchall()
    return {
        "file_bytes": size,
        "spans": int(spans),
        "attr_bytes": int(attr_bytes),
        "bytes_per_1000_spans": size / spans * 1000 if spans else None,
        "top_spans": [[name, int(c), float(a)] for name, c, a in by_name],
    }


async def run_inputs(one: Callable[[str], Any], n: int, clients: int = 1) -> None:
    """Await ``one(topic)`` for ``n`` inputs, by ``clients`` callers at once (as a server's
    concurrent requests; each takes every ``clients``-th input), or one after another."""

    async def client(k: int) -> None:
        for i in range(k, n, clients):
            await one(f"spicy pineapple {i}")

    await asyncio.gather(*(client(k) for k in range(clients)))


def run(workloads: dict[str, Callable[[dict[str, Any]], Any]], **extra: Any) -> None:
    """Run ``argv[1]`` with the JSON params ``argv[2]``; write its result to ``argv[3]``."""
    name, params, out = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
    fn = workloads[name]
    result = asyncio.run(fn(params)) if asyncio.iscoroutinefunction(fn) else fn(params)
    result["peak_rss_mb"] = peak_rss_mb()
    flock = sys.modules.get("flock")
    result["flock_file"] = getattr(flock, "__file__", None)  # which flock ran (FLOCK_BENCH_SRC)
    result.update(extra)
    out.write_text(json.dumps(result, default=str))
