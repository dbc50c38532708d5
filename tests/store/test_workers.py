"""Several worker processes and a publisher sharing one PostgreSQL blackboard.

Each process writes its spans to its own trace file and the test joins them into one trace —
or, in the OTLP variant, every process exports its spans over OTLP/HTTP to one dashboard
(``flock serve``), whose single trace file holds the whole distributed trace.
``FLOCK_TEST_WORKERS_N`` sets the number of artifacts of the scale test (default 10,000),
``FLOCK_TEST_WORKERS_OTLP_N`` that of the OTLP variant (default 2,000).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import duckdb
import httpx
import psycopg
import pytest
from psycopg import sql

CHAIN = Path(__file__).with_name("chain_app.py")
SCALE_N = int(os.environ.get("FLOCK_TEST_WORKERS_N", "10000"))
OTLP_N = int(os.environ.get("FLOCK_TEST_WORKERS_OTLP_N", "2000"))
ORIGIN = "flock.test.origin"
"""Resource attribute naming the process that made a span (OTLP variant)."""


class Cluster:
    """Worker and publisher processes of chain_app.py on one schema, with their trace files."""

    def __init__(self, dsn: str, schema: str, tmp: Path, **env: str) -> None:
        self.dsn, self.schema, self.tmp = dsn, schema, tmp
        self.env = {
            **os.environ,
            "FLOCK_STORE_URL": dsn,
            "FLOCK_STORE_SCHEMA": schema,
            "FLOCK_AUTO_TRACE": "true",
            "FLOCK_TRACE_FLUSH_INTERVAL": "0.2",
            **env,
        }
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.files: list[IO[str]] = []
        self.otlp_endpoint: str | None = None
        """When set, workers and the publisher export their spans there (no trace file)."""

    def start(self, name: str, args: list[str]) -> subprocess.Popen[str]:
        env = {**self.env, "FLOCK_TRACE_DB": str(self.tmp / f"{name}.duckdb")}
        if self.otlp_endpoint is not None and name != "collector":
            env.update(
                {
                    "OTEL_EXPORTER_OTLP_ENDPOINT": self.otlp_endpoint,
                    "FLOCK_TRACE_FILE": "false",
                    "OTEL_RESOURCE_ATTRIBUTES": f"{ORIGIN}={name}",
                    # Export often, and queue rather than drop while the dashboard writes.
                    "OTEL_BSP_SCHEDULE_DELAY": "200",
                    "OTEL_BSP_MAX_QUEUE_SIZE": "1000000",
                }
            )
        log = (self.tmp / f"{name}.log").open("w")
        self.files.append(log)
        proc = subprocess.Popen(
            [sys.executable, *args],
            env=env,
            cwd=self.tmp,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        self.procs[name] = proc
        return proc

    def worker(self, name: str, *, lease: float = 30.0) -> subprocess.Popen[str]:
        args = ["-m", "flock.cli", "worker", f"{CHAIN}:flock", "--lease", str(lease)]
        return self.start(name, args)

    def publisher(self, n: int) -> subprocess.Popen[str]:
        return self.start("publisher", [str(CHAIN), "publish", str(n)])

    def collector(self) -> str:
        """``flock serve`` of the same program on 127.0.0.1 (a free port), tracing into
        ``collector.duckdb``; workers and the publisher export to its ``/v1/traces`` from
        now on. Returns its URL."""
        args = ["-m", "flock.cli", "serve", f"{CHAIN}:flock", "--no-dashboard"]
        args += ["--port", "0", "--db", str(self.tmp / "collector.duckdb")]
        proc = self.start("collector", args)
        stdout = proc.stdout
        assert stdout is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(30)
        assert lines and lines[0].startswith("flock dashboard: http://127.0.0.1:"), (
            lines,
            self.log("collector"),
        )
        url = lines[0].split()[-1]
        self.otlp_endpoint = url.rstrip("/")
        return url

    def query(self, text: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            return conn.execute(text).fetchall()  # type: ignore[call-overload, no-any-return]

    def wait_publisher(self, timeout: float) -> str:
        proc = self.procs["publisher"]
        out, _ = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, self.log("publisher")
        (line,) = [x for x in out.splitlines() if x.startswith("trace ")]
        return line.split()[1]

    def stop_workers(self) -> None:
        workers = {n: p for n, p in self.procs.items() if n not in ("publisher", "collector")}
        for proc in workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in workers.values():
            proc.wait(timeout=30)

    def stop(self, name: str) -> int:
        proc = self.procs[name]
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=30)

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()[-3000:]

    def spans(self) -> list[dict[str, Any]]:
        """Every span of every trace file, with the process that made it as ``origin`` (the
        ``flock.test.origin`` resource attribute of received spans, else the file's name)."""
        rows: list[dict[str, Any]] = []
        for path in sorted(self.tmp.glob("*.duckdb")):
            with duckdb.connect(str(path), read_only=True) as conn:
                cur = conn.execute(
                    "SELECT trace_id, span_id, parent_id, name, status_code,"
                    " status_description, attributes, resource FROM spans"
                )
                columns = [d[0] for d in cur.description]
                for row in cur.fetchall():
                    span = dict(zip(columns, row, strict=True))
                    span["attributes"] = json.loads(span["attributes"] or "{}")
                    resource = json.loads(span.pop("resource") or "{}")
                    span["origin"] = resource.get(ORIGIN, path.stem)
                    span["file"] = path.stem
                    rows.append(span)
        return rows

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for file in self.files:
            file.close()


@pytest.fixture
def cluster(pg_dsn: str, pg_schema: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(pg_dsn, pg_schema, tmp_path)
    yield c
    c.kill_all()


def flat(attributes: dict[str, Any], dotted: str) -> Any:
    value: Any = attributes
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def check_exactly_once(c: Cluster, n: int) -> None:
    """Every job went through both agents once, and the blackboard holds no duplicates."""
    states = dict(c.query("SELECT state, count(*) FROM runs GROUP BY state"))
    assert states == {"done": 2 * n}
    types = dict(c.query("SELECT type, count(*) FROM artifacts GROUP BY type"))
    assert types == {"chain.Job": n, "chain.Step": n, "chain.Done": n}
    assert c.query(
        "SELECT count(DISTINCT (payload->>'n')::int), min((payload->>'n')::int),"
        " max((payload->>'n')::int) FROM artifacts WHERE type = 'chain.Done'"
    ) == [(n, 0, n - 1)]
    assert c.query(
        "SELECT count(*) FROM (SELECT artifact_id, agent FROM consumptions"
        " GROUP BY artifact_id, agent HAVING count(*) > 1) AS dup"
    ) == [(0,)]
    assert c.query("SELECT count(*) FROM consumptions") == [(2 * n,)]


@pytest.mark.timeout(900)
def test_three_workers_and_a_publisher_share_one_trace(cluster: Cluster) -> None:
    n = SCALE_N
    for i in range(3):
        cluster.worker(f"worker{i}")
    started = time.perf_counter()
    cluster.publisher(n)
    trace_id = cluster.wait_publisher(timeout=800)
    elapsed = time.perf_counter() - started
    cluster.stop_workers()
    print(f"\n{n} artifacts through 2 agents on 3 workers: {elapsed:.1f}s")

    check_exactly_once(cluster, n)
    assert cluster.query("SELECT DISTINCT attempt FROM runs") == [(1,)]
    per_worker = dict(cluster.query("SELECT worker_id, count(*) FROM runs GROUP BY worker_id"))
    assert len(per_worker) == 3, per_worker  # the publisher only waited

    spans = [s for s in cluster.spans() if s["trace_id"] == trace_id]
    check_one_trace(spans, n)


def check_one_trace(spans: list[dict[str, Any]], n: int) -> None:
    """The spans of the chain workflow's trace come from all four processes, correctly
    nested: publishes under the root, each run under the publish (or run) that made its
    input, each engine call under its run in the same process."""
    assert {s["origin"] for s in spans} == {"publisher", "worker0", "worker1", "worker2"}
    by_id = {s["span_id"]: s for s in spans}
    assert len(by_id) == len(spans)  # nothing was written twice
    (root,) = [s for s in spans if s["name"] == "chain_workflow"]
    assert root["parent_id"] is None and root["origin"] == "publisher"
    publishes = {s["span_id"] for s in spans if s["name"] == "Flock.publish"}
    assert len(publishes) == -(-n // 1000)
    assert all(by_id[p]["parent_id"] == root["span_id"] for p in publishes)
    runs = [s for s in spans if s["name"] == "Agent.execute"]
    assert len(runs) == 2 * n
    first = {s["span_id"] for s in runs if flat(s["attributes"], "gen_ai.agent.name") == "first"}
    for span in runs:
        assert span["origin"].startswith("worker")
        assert flat(span["attributes"], "workflow.name") == "chain_workflow"
        assert span["status_code"] != "ERROR"
        agent = flat(span["attributes"], "gen_ai.agent.name")
        assert span["parent_id"] in (publishes if agent == "first" else first), span
    # Each engine call is nested in its run, in the same process.
    evaluates = [s for s in spans if s["name"] == "FunctionEngine.evaluate"]
    assert len(evaluates) == 2 * n
    assert all(by_id[e["parent_id"]]["origin"] == e["origin"] for e in evaluates)


@pytest.mark.timeout(600)
def test_workers_send_their_spans_over_otlp_to_one_dashboard(cluster: Cluster) -> None:
    """Workers and the publisher keep no trace file (``FLOCK_TRACE_FILE=false``) and export
    over OTLP/HTTP to the dashboard of ``flock serve``: its one file holds the whole trace."""
    n = OTLP_N
    url = cluster.collector()
    for i in range(3):
        cluster.worker(f"worker{i}")
    started = time.perf_counter()
    cluster.publisher(n)
    trace_id = cluster.wait_publisher(timeout=500)
    elapsed = time.perf_counter() - started
    cluster.stop_workers()  # each exports its last spans at exit
    print(f"\n{n} artifacts through 2 agents on 3 workers, traced over OTLP: {elapsed:.1f}s")
    for name in ("worker0", "worker1", "worker2"):
        assert cluster.procs[name].returncode == 0, cluster.log(name)

    check_exactly_once(cluster, n)
    assert cluster.query("SELECT DISTINCT attempt FROM runs") == [(1,)]
    per_worker = dict(cluster.query("SELECT worker_id, count(*) FROM runs GROUP BY worker_id"))
    assert len(per_worker) == 3, per_worker

    # Every export was answered once written: the running dashboard shows the whole trace.
    with httpx.Client(base_url=url, timeout=30) as api:
        page = api.get("/api/traces").json()
        assert [(t["trace_id"], t["name"]) for t in page["items"]] == [(trace_id, "chain_workflow")]
        shown = api.get(f"/api/traces/{trace_id}", params={"limit": 1}).json()
    assert cluster.stop("collector") == 0, cluster.log("collector")

    # One trace file: the workers and the publisher wrote none of their own.
    assert sorted(p.name for p in cluster.tmp.glob("*.duckdb")) == ["collector.duckdb"]
    spans = [s for s in cluster.spans() if s["trace_id"] == trace_id]
    assert shown["span_count"] == len(spans)
    check_one_trace(spans, n)
    for name in ("publisher", "worker0", "worker1", "worker2"):
        assert "OTLP export" not in cluster.log(name), cluster.log(name)


@pytest.mark.timeout(300)
def test_a_killed_worker_runs_are_taken_over(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    n = 300
    c = Cluster(pg_dsn, pg_schema, tmp_path, CHAIN_SLEEP="0.1", CHAIN_CONCURRENCY="4")
    try:
        victim = c.worker("victim", lease=1.0)
        for i in range(2):
            c.worker(f"worker{i}", lease=1.0)
        c.publisher(n)
        deadline = time.monotonic() + 120
        held = 0
        while time.monotonic() < deadline:
            try:
                done = c.query("SELECT count(*) FROM runs WHERE state = 'done'")[0][0]
                held = c.query(
                    "SELECT count(*) FROM runs WHERE state = 'leased'"
                    f" AND worker_id LIKE '%:{victim.pid}:%'"
                )[0][0]
            except psycopg.errors.UndefinedTable:  # not created yet
                done = held = 0
            if done > n // 3 and held:
                break
            time.sleep(0.05)
        assert held, "the victim never held a run"
        victim.kill()  # SIGKILL: no cleanup, its leases just stop being renewed
        victim.wait()
        trace_id = c.wait_publisher(timeout=200)
        c.stop_workers()

        check_exactly_once(c, n)
        retried = c.query(
            "SELECT id, attempt, previous_worker, worker_id FROM runs WHERE attempt > 1"
        )
        assert retried, "no run was taken over"
        assert all(
            attempt == 2 and f":{victim.pid}:" in prev and f":{victim.pid}:" not in worker
            for _, attempt, prev, worker in retried
        ), retried

        # The trace shows each abandoned attempt (ERROR) next to its retry, same parent.
        spans = [s for s in c.spans() if s["trace_id"] == trace_id]
        executes = [s for s in spans if s["name"] == "Agent.execute"]
        for run_id, *_ in retried:
            attempts = {
                flat(s["attributes"], "flock.attempt"): s
                for s in executes
                if flat(s["attributes"], "flock.run_id") == str(run_id) and s["origin"] != "victim"
            }
            assert set(attempts) == {1, 2}, run_id
            abandoned, retry = attempts[1], attempts[2]
            assert flat(abandoned["attributes"], "flock.abandoned") is True
            assert abandoned["status_code"] == "ERROR"
            assert "stopped renewing its lease" in abandoned["status_description"]
            assert retry["status_code"] != "ERROR"
            assert abandoned["parent_id"] == retry["parent_id"]
    finally:
        c.kill_all()


def _local_cluster(dsn: str) -> tuple[str, str] | None:
    """(version, name) of the local Debian PostgreSQL cluster serving ``dsn``, if we may
    restart it (root, pg_ctlcluster, a loopback DSN)."""
    if os.environ.get("FLOCK_TEST_PG_RESTART", "1") == "0" or os.geteuid() != 0:
        return None
    if shutil.which("pg_ctlcluster") is None or not re.search(r"@(127\.0\.0\.1|localhost)", dsn):
        return None
    versions = sorted(p.name for p in Path("/etc/postgresql").glob("*") if p.is_dir())
    return (versions[-1], "main") if versions else None


@pytest.mark.timeout(300)
def test_workers_survive_a_postgres_restart(pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    local = _local_cluster(pg_dsn)
    if local is None:
        pytest.skip("needs root and the local Debian PostgreSQL cluster (pg_ctlcluster)")
    n = 600
    c = Cluster(pg_dsn, pg_schema, tmp_path, CHAIN_SLEEP="0.02")
    try:
        for i in range(3):
            c.worker(f"worker{i}", lease=5.0)
        c.publisher(n)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                done = c.query("SELECT count(*) FROM runs WHERE state = 'done'")[0][0]
            except psycopg.errors.UndefinedTable:
                done = 0
            if done > n // 3:
                break
            time.sleep(0.05)
        assert done < 2 * n, "the run finished before the restart"
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", *local, "restart"],
            check=True,
            timeout=60,
        )
        c.wait_publisher(timeout=200)
        c.stop_workers()
        for name in ("worker0", "worker1", "worker2"):
            assert c.procs[name].returncode == 0, c.log(name)
        check_exactly_once(c, n)
        assert "PostgreSQL works again" in c.log("publisher") + "".join(
            c.log(f"worker{i}") for i in range(3)
        )
    finally:
        c.kill_all()


def test_a_worker_stopped_with_sigterm_gives_its_runs_back(
    pg_dsn: str, pg_schema: str, tmp_path: Path
) -> None:
    n = 4
    c = Cluster(pg_dsn, pg_schema, tmp_path, CHAIN_SLEEP="60", CHAIN_CONCURRENCY=str(n))
    try:
        slow = c.worker("slow", lease=120.0)
        c.publisher(n)
        deadline = time.monotonic() + 60
        held = 0
        while time.monotonic() < deadline and held < n:
            try:
                held = c.query(
                    "SELECT count(*) FROM runs WHERE state = 'leased'"
                    f" AND worker_id LIKE '%:{slow.pid}:%'"
                )[0][0]
            except psycopg.errors.UndefinedTable:  # not created yet
                held = 0
            time.sleep(0.05)
        assert held == n, c.log("slow")
        assert c.stop("slow") == 0, c.log("slow")  # SIGTERM: cancels and releases its runs
        assert c.query("SELECT state, attempt, count(*) FROM runs GROUP BY 1, 2") == [
            ("queued", 0, n)
        ]
        c.env["CHAIN_SLEEP"] = "0"
        c.worker("fast", lease=120.0)
        c.wait_publisher(timeout=30)  # long before the slow worker's leases would expire
        c.stop_workers()
        check_exactly_once(c, n)
        assert c.query("SELECT DISTINCT attempt, previous_worker FROM runs") == [(1, None)]
    finally:
        c.kill_all()
