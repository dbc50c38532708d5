"""End to end: each seed example in examples/ runs as a script and leaves the promised trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from flock.fake_llm import FakeOpenAIServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def run(name: str, cwd: Path, llm: FakeOpenAIServer) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOCK_", "OTEL_", "OPENAI_"))}
    env.update(FLOCK_OUTPUT="off", OPENAI_BASE_URL=llm.base_url)  # tracing on by default
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def spans(cwd: Path) -> list[dict[str, Any]]:
    with duckdb.connect(str(cwd / ".flock/traces.duckdb"), read_only=True) as conn:
        rows = conn.execute(
            "SELECT trace_id, span_id, parent_id, name, status_code, attributes, events "
            "FROM spans ORDER BY start_time"
        ).fetchall()
    keys = ("trace_id", "span_id", "parent_id", "name", "status_code", "attributes", "events")
    return [
        {
            **dict(zip(keys, r, strict=True)),
            "attributes": json.loads(r[5]),
            "events": json.loads(r[6]),
        }
        for r in rows
    ]


def roots(rows: list[dict[str, Any]]) -> list[str]:
    return [r["name"] for r in rows if r["parent_id"] is None]


def test_basic_usage(tmp_path: Path, llm: FakeOpenAIServer) -> None:
    assert "✅ Processing complete!" in run("01_basic_usage.py", tmp_path, llm)
    rows = spans(tmp_path)
    assert roots(rows) == ["data_processing"]
    assert len({r["trace_id"] for r in rows}) == 1
    names = [r["name"] for r in rows]
    assert "DSPyEngine.evaluate" in names and "Agent.execute" in names
    (execute,) = [r for r in rows if r["name"] == "Agent.execute"]
    assert execute["attributes"]["gen_ai"]["agent"]["name"] == "processor"
    assert '"result"' in execute["attributes"]["output"]["value"]


def test_names_and_attributes(tmp_path: Path, llm: FakeOpenAIServer) -> None:
    run("02_names_and_attributes.py", tmp_path, llm)
    rows = spans(tmp_path)
    assert roots(rows) == ["customer_onboarding", "daily_batch_job", "ml_pipeline"]
    assert len({r["trace_id"] for r in rows}) == 3
    (ml,) = [r for r in rows if r["name"] == "ml_pipeline"]
    assert ml["attributes"]["pipeline"]["version"] == "2.0"
    assert ml["attributes"]["dataset"]["size"] == 10000
    assert ml["attributes"]["flock"]["workflow"] is True


def test_nested_workflows(tmp_path: Path, llm: FakeOpenAIServer) -> None:
    run("03_nested_workflows.py", tmp_path, llm)
    rows = spans(tmp_path)
    by_id = {r["span_id"]: r for r in rows}
    assert roots(rows) == ["outer_workflow"]
    (inner,) = [r for r in rows if r["name"] == "inner_task"]
    assert by_id[inner["parent_id"]]["name"] == "outer_workflow"
    assert inner["attributes"]["workflow"] == {"name": "outer_workflow", "step": "inner_task"}
    assert len({r["trace_id"] for r in rows}) == 1
    # The docs' workflow query: one row for the trace, counting all of its spans.
    with duckdb.connect(str(tmp_path / ".flock" / "traces.duckdb"), read_only=True) as conn:
        listed = conn.execute(
            "SELECT json_extract(attributes, '$.workflow.name') AS workflow_name, count(*),"
            " (max(end_time) - min(start_time)) / 1e6 FROM spans"
            " WHERE json_extract(attributes, '$.flock.workflow') = 'true'"
            " GROUP BY trace_id, workflow_name"
        ).fetchall()
        root = conn.execute("SELECT duration_ms FROM spans WHERE parent_id IS NULL").fetchone()
    assert listed == [('"outer_workflow"', len(rows), pytest.approx(root[0]))]
    executes = [r for r in rows if r["name"] == "Agent.execute"]
    assert len(executes) == 2


def test_backward_compatibility(tmp_path: Path, llm: FakeOpenAIServer) -> None:
    run("04_backward_compatibility.py", tmp_path, llm)
    rows = spans(tmp_path)
    assert roots(rows) == ["Flock.publish", "Flock.run_until_idle", "workflow"]
    assert len({r["trace_id"] for r in rows}) == 3


def test_handle_errors(tmp_path: Path, llm: FakeOpenAIServer) -> None:
    out = run("05_handle_errors.py", tmp_path, llm)
    assert "Workflow failed:" in out and "risky_agent" in out
    rows = spans(tmp_path)
    (root,) = [r for r in rows if r["name"] == "risky_operation"]
    assert root["status_code"] == "ERROR"
    assert root["events"][0]["name"] == "exception"
    (execute,) = [r for r in rows if r["name"] == "Agent.execute"]
    assert execute["status_code"] == "ERROR"
    (event,) = [e for e in execute["events"] if e["name"] == "exception"]
    assert event["attributes"]["exception"]["type"] == "RuntimeError"  # nested like attributes
    assert "cannot process 7" in event["attributes"]["exception"]["message"]


def test_query_traces(tmp_path: Path, llm: FakeOpenAIServer) -> None:
    run("02_names_and_attributes.py", tmp_path, llm)
    out = run("06_query_traces.py", tmp_path, llm).splitlines()
    rows = spans(tmp_path)
    per_trace = {
        r["trace_id"]: sum(1 for s in rows if s["trace_id"] == r["trace_id"]) for r in rows
    }
    workflows = [line for line in out if line.startswith("Workflow: ")]
    # json_extract returns JSON, so the seed's print shows the name in quotes.
    assert [w.split(" - ")[0] for w in workflows] == [
        'Workflow: "ml_pipeline"',
        'Workflow: "daily_batch_job"',
        'Workflow: "customer_onboarding"',
    ]  # newest first
    root = {r["name"]: r for r in rows if r["parent_id"] is None}
    for line in workflows:
        name = line.split(" - ")[0].removeprefix("Workflow: ").strip('"')
        assert line.endswith(f"({per_trace[root[name]['trace_id']]} spans)")  # all its spans
    # The seed's slowest-workflows query keeps span names containing "workflow": none yet.
    assert not any(line.startswith("Slowest: ") for line in out)
    hierarchy = [line for line in out if line.startswith("Span: ")]
    assert hierarchy[0] == "Span: ml_pipeline parent=None"
    assert len(hierarchy) == per_trace[root["ml_pipeline"]["trace_id"]]

    run("03_nested_workflows.py", tmp_path, llm)
    out = run("06_query_traces.py", tmp_path, llm).splitlines()
    slowest = [line for line in out if line.startswith("Slowest: ")]
    assert len(slowest) == 1 and slowest[0].startswith('Slowest: "outer_workflow" - ')
    assert slowest[0].endswith("avg over 1")


def test_clear_traces(tmp_path: Path, llm: FakeOpenAIServer) -> None:
    run("02_names_and_attributes.py", tmp_path, llm)
    count = len(spans(tmp_path))
    out = run("07_clear_traces.py", tmp_path, llm)
    assert f"Deleted {count} spans" in out
    assert "❌ Error:" in out and "custom_traces.duckdb" in out  # that file does not exist
    assert spans(tmp_path) == []
