"""Dashboard speed with a big trace file.

Fills a temporary trace file with N spans (default 1,000,000: ~99,000 ten-span traces plus
one trace of 10,000 spans) straight through DuckDB SQL in the ``spans`` schema, then measures

- the trace list (``GET /api/traces``, newest 50) through the HTTP API in process,
- the timeline data of the 10,000-span trace (``GET /api/traces/{id}``),
- the page render of that trace and of the list in headless Chromium (navigation until the
  rows are drawn), against a real uvicorn server on 127.0.0.1.

Usage::

    .venv/bin/python benchmarks/dashboard.py [--spans 1000000] [--runs 30] [--no-browser]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx

from flock.dashboard import create_app
from flock.tracing.store import ROW_GROUP_SIZE, SCHEMA

BIG = 10_000
PER_TRACE = 10


def fill(path: Path, spans: int) -> str:
    """Write ``spans`` rows, in row groups of the trace writer's size; returns the trace id
    of the 10,000-span trace."""
    conn = duckdb.connect()
    try:
        conn.execute(f"ATTACH '{path}' AS traces (ROW_GROUP_SIZE {ROW_GROUP_SIZE})")
        conn.execute("USE traces")
        conn.execute(SCHEMA)
        small = spans - BIG
        conn.execute(
            f"""
            INSERT INTO spans
            WITH s AS (
                SELECT i, i // {PER_TRACE} AS t, i % {PER_TRACE} AS k FROM range({small}) r(i)
                UNION ALL
                SELECT {spans} + i, -1, i FROM range({BIG}) r(i)
            ), timed AS (
                SELECT *, 1700000000000000000
                          + (CASE WHEN t = -1 THEN {small // PER_TRACE} ELSE t END) * 1000000000
                          + k * 1000000 AS start_ns,
                          CASE WHEN k = 0 THEN 60000000 ELSE 200000 + hash(i) % 5000000 END
                              AS dur_ns
                FROM s
            )
            SELECT md5(t::VARCHAR),
                   substr(md5('s' || i::VARCHAR), 1, 16),
                   CASE WHEN k = 0 THEN NULL
                        WHEN t = -1 THEN substr(md5('s' || ({spans} + (k - 1) // 4)::VARCHAR), 1, 16)
                        ELSE substr(md5('s' || (i - k)::VARCHAR), 1, 16) END,
                   CASE WHEN k = 0 THEN (CASE t % 3 WHEN 0 THEN 'pizza_workflow'
                                                    WHEN 1 THEN 'etl_workflow'
                                                    ELSE 'Flock.publish' END)
                        WHEN k % 3 = 1 THEN 'Agent.execute'
                        WHEN k % 3 = 2 THEN 'FunctionEngine.evaluate'
                        ELSE 'Flock.publish' END,
                   'flock', 'execute', 'INTERNAL',
                   start_ns, start_ns + dur_ns, dur_ns / 1e6,
                   CASE WHEN hash(i) % 97 = 0 THEN 'ERROR' ELSE 'UNSET' END, NULL,
                   ('{{"flock":{{"workflow":true,"correlation_id":"' || md5('c' || (t // 2)::VARCHAR)
                    || '","agent":{{"name":"agent_' || (k % 4)::VARCHAR || '"}}}},'
                    || '"workflow":{{"name":"pizza_workflow"}},'
                    || '"input":{{"value":"{{\\"topic\\": \\"spicy pineapple with chili honey\\"}}"}}}}')::JSON,
                   '[]'::JSON, '[]'::JSON, '{{"service.name":"flock"}}'::JSON
            FROM timed ORDER BY i
            """
        )
        conn.execute("CHECKPOINT")
    finally:
        conn.close()
    return str(md5_hex("-1"))


def md5_hex(text: str) -> str:
    import hashlib

    return hashlib.md5(text.encode()).hexdigest()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure_api(db: Path, big: str, runs: int) -> dict[str, Any]:
    app = create_app(db)
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as client:
        cases = {
            "trace list (newest 50)": "/api/traces?limit=50",
            "trace list, errors only": "/api/traces?limit=50&errors=true",
            "trace list, page 100": "/api/traces?limit=50&offset=5000",
            f"timeline of a {BIG:,}-span trace": f"/api/traces/{big}?limit={BIG}",
        }
        for label, url in cases.items():
            r = await client.get(url)  # warm up (first read of the file's blocks)
            assert r.status_code == 200, r.text
            times = []
            for _ in range(runs):
                t0 = time.perf_counter()
                r = await client.get(url)
                times.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200
            out[label] = {
                "p50_ms": statistics.median(times),
                "p95_ms": pct(times, 0.95),
                "bytes": len(r.content),
            }
    return out


def measure_browser(db: Path, big: str, runs: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from flock.dashboard import serve

    ready = threading.Event()
    state: dict[str, Any] = {}

    def main() -> None:
        async def run() -> None:
            state["loop"] = asyncio.get_running_loop()
            state["task"] = asyncio.current_task()

            def started(url: str) -> None:
                state["url"] = url
                ready.set()

            await serve(db, port=0, announce=lambda line: None, started=started)

        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(run())

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    assert ready.wait(30)
    url = state["url"]
    out: dict[str, Any] = {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium")
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            for label, target, selector in (
                ("trace list page", url, "#traces-table tbody tr[data-trace-id]"),
                (f"timeline page, {BIG:,} spans", f"{url}#/trace/{big}", "#waterfall .wf-row"),
            ):
                times = []
                for _ in range(runs):
                    page.goto("about:blank")
                    t0 = time.perf_counter()
                    page.goto(target)
                    page.wait_for_selector(selector)
                    times.append((time.perf_counter() - t0) * 1000)
                out[label] = {"p50_ms": statistics.median(times), "p95_ms": pct(times, 0.95)}
            browser.close()
    finally:
        state["loop"].call_soon_threadsafe(state["task"].cancel)
        thread.join(15)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--browser-runs", type=int, default=7)
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "traces.duckdb"
        t0 = time.perf_counter()
        big = fill(db, args.spans)
        print(
            f"filled {args.spans:,} spans in {time.perf_counter() - t0:.1f} s "
            f"({db.stat().st_size / 1e6:.0f} MB)"
        )
        results = asyncio.run(measure_api(db, big, args.runs))
        if not args.no_browser:
            results.update(measure_browser(db, big, args.browser_runs))
    width = max(map(len, results))
    print(f"{'':{width}}  {'p50':>8}  {'p95':>8}  response")
    for label, r in results.items():
        size = f"{r['bytes'] / 1024:.0f} KiB" if "bytes" in r else ""
        print(f"{label:{width}}  {r['p50_ms']:7.1f}ms  {r['p95_ms']:7.1f}ms  {size}")
    if args.json:
        args.json.write_text(json.dumps({"spans": args.spans, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
