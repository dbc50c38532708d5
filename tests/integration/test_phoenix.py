"""OTLP export to a real trace viewer: Arize Phoenix on 127.0.0.1 (``scripts/phoenix.sh``).

Skipped when Phoenix is not running — except on CI (``CI=true``), where ``.ci/run`` starts
it and a missing Phoenix is a failure, so these tests cannot pass silently there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from flock.cli import main
from flock.tracing._attributes import flatten
from tests.tracing.stored import SEED_SPANS, hex_ids, seed_trace, write_spans

pytestmark = pytest.mark.integration

PHOENIX_URL = f"http://127.0.0.1:{os.environ.get('PHOENIX_PORT', '6006')}"
ARRIVAL_TIMEOUT = 60.0
DEMO = "import asyncio; from flock._demo import run_demo; asyncio.run(run_demo())"


def _get(path: str, params: dict[str, Any] | None = None) -> Any:
    query = f"?{urllib.parse.urlencode(params or {}, doseq=True)}" if params else ""
    with urllib.request.urlopen(f"{PHOENIX_URL}{path}{query}", timeout=10) as response:
        return json.load(response)


def _phoenix_running() -> bool:
    try:
        with urllib.request.urlopen(f"{PHOENIX_URL}/healthz", timeout=3):
            return True
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def phoenix() -> str:
    if not _phoenix_running():
        message = f"Phoenix is not running at {PHOENIX_URL}; start it with scripts/phoenix.sh"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (.ci/run should have)")
        pytest.skip(message)
    return PHOENIX_URL


def project_name(label: str) -> str:
    return f"flock-{label}-{uuid.uuid4().hex[:8]}"


def phoenix_spans(project: str) -> list[dict[str, Any]]:
    """Every span Phoenix holds in ``project`` ([] while the project does not exist yet)."""
    spans: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        try:
            page = _get(f"/v1/projects/{urllib.parse.quote(project)}/spans", params)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []
            raise
        spans.extend(page["data"])
        cursor = page.get("next_cursor")
        if not cursor:
            return spans


def wait_for_spans(project: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + ARRIVAL_TIMEOUT
    while True:
        spans = phoenix_spans(project)
        if len(spans) >= count or time.monotonic() > deadline:
            return spans
        time.sleep(0.5)


def structure(spans: list[dict[str, Any]]) -> set[tuple[str, str | None, str]]:
    """(span id, parent span id, name) of Phoenix's spans."""
    return {(s["context"]["span_id"], s.get("parent_id") or None, s["name"]) for s in spans}


def tree_names(
    edges: set[tuple[str, str | None, str]],
) -> set[tuple[str, str | None]]:
    """(name, parent name) pairs: the shape of the tree without the ids."""
    names = {span_id: name for span_id, _, name in edges}
    return {(name, names.get(parent) if parent else None) for _, parent, name in edges}


@dataclass
class DemoRun:
    db: Path
    project: str
    trace_id: str
    edges: set[tuple[str, str | None, str]]


def _stored_edges(db: Path) -> tuple[list[str], set[tuple[str, str | None, str]]]:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        rows = conn.execute("SELECT trace_id, span_id, parent_id, name FROM spans").fetchall()
    finally:
        conn.close()
    return sorted({r[0] for r in rows}), {(r[1], r[2], r[3]) for r in rows}


def run_demo(workdir: Path, otlp_project: str | None) -> DemoRun:
    """The seed's pizza workflow in a child process, traced into its DuckDB file and, with
    ``otlp_project``, exported live to Phoenix through the standard OTEL_* variables."""
    db = workdir / "traces.duckdb"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLOCK_", "OTEL_")) and k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")
    }
    env.update(FLOCK_AUTO_TRACE="true", FLOCK_TRACE_DB=str(db), FLOCK_OUTPUT="off")
    if otlp_project is not None:
        env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=PHOENIX_URL,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            # Phoenix files spans under the project this resource attribute names.
            OTEL_RESOURCE_ATTRIBUTES=f"openinference.project.name={otlp_project}",
        )
    result = subprocess.run(
        [sys.executable, "-c", DEMO],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trace_ids, edges = _stored_edges(db)
    assert len(trace_ids) == 1, trace_ids  # one workflow, one trace
    assert tree_names(edges) == {(name, parent) for name, parent, *_ in SEED_SPANS}
    return DemoRun(db, otlp_project or "", trace_ids[0], edges)


def test_the_seed_workflow_arrives_in_phoenix_as_one_trace(phoenix: str, tmp_path: Path) -> None:
    run = run_demo(tmp_path, project_name("live"))
    spans = wait_for_spans(run.project, len(run.edges))
    assert {s["context"]["trace_id"] for s in spans} == {run.trace_id}
    # the same spans with the same parent/child structure as in the DuckDB file
    assert structure(spans) == run.edges
    by_name = {s["name"]: s for s in spans}
    assert by_name["pizza_workflow"]["parent_id"] is None
    assert by_name["pizza_workflow"]["attributes"]["workflow.name"] == "pizza_workflow"
    # GenAI semantic conventions beside ours, so Phoenix understands the agent span
    assert by_name["Agent.execute"]["attributes"]["gen_ai.agent.name"] == "pizza_master"


def test_flock_traces_export_replays_a_stored_trace_into_phoenix(
    phoenix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The seed workflow, traced only into DuckDB, then replayed from the file by the CLI,
    arrives whole: same ids, parents, names, times and attributes as stored."""
    run = run_demo(tmp_path, None)
    project = project_name("replay")
    args = ["traces", "export", run.trace_id, "--db", str(run.db)]
    args += ["--otlp-endpoint", phoenix, "--header", f"x-project-name={project}"]
    assert main(args) == 0, capsys.readouterr().err
    assert f"Sent 1 trace(s), {len(run.edges)} spans to {phoenix}/v1/traces" in (
        capsys.readouterr().err
    )
    replayed = wait_for_spans(project, len(run.edges))
    assert {s["context"]["trace_id"] for s in replayed} == {run.trace_id}
    assert structure(replayed) == run.edges
    conn = duckdb.connect(str(run.db), read_only=True)
    try:
        rows = conn.execute(
            "SELECT span_id, start_time, end_time, attributes FROM spans"
        ).fetchall()
    finally:
        conn.close()
    by_id = {s["context"]["span_id"]: s for s in replayed}
    for span_id, start_ns, end_ns, attributes in rows:
        got = by_id[span_id]
        start = datetime.fromisoformat(got["start_time"]).timestamp()
        end = datetime.fromisoformat(got["end_time"]).timestamp()
        assert start == pytest.approx(start_ns / 1e9, abs=1e-5)
        assert end - start == pytest.approx((end_ns - start_ns) / 1e9, abs=1e-5)
        for key, value in flatten(json.loads(attributes)).items():
            assert got["attributes"].get(key) == value, (got["name"], key)


def test_a_failed_span_replays_with_status_and_exception_event(
    phoenix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spans = seed_trace(start_ns=time.time_ns(), error=True)
    db = tmp_path / "seed.duckdb"
    write_spans(db, spans)
    project = project_name("seed")
    trace_id = hex_ids(spans[0])[0]
    args = ["traces", "export", "latest", "--db", str(db), "--otlp-endpoint", phoenix]
    assert main([*args, "--header", f"x-project-name={project}"]) == 0, capsys.readouterr().err
    received = wait_for_spans(project, len(spans))
    assert {s["context"]["trace_id"] for s in received} == {trace_id}
    assert structure(received) == {(hex_ids(s)[1], hex_ids(s)[2], s.name) for s in spans}
    evaluate = next(s for s in received if s["name"] == "DSPyEngine.evaluate")
    assert evaluate["status_code"] == "ERROR"
    assert evaluate["status_message"] == "ValueError: the oven is cold"
    (event,) = evaluate["events"]
    assert event["name"] == "exception"
    assert event["attributes"]["exception.message"] == "the oven is cold"
    root = next(s for s in received if s["parent_id"] is None)
    assert root["attributes"]["flock.workflow"] is True
    assert root["attributes"]["dataset.size"] == 10_000
