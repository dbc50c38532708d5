"""Tracing set-up from the environment, each case in a fresh child process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

APP = textwrap.dedent(
    """
    import asyncio, os, sys
    from pydantic import BaseModel
    from flock.orchestrator import Flock
    from flock.registry import flock_type

    @flock_type
    class Idea(BaseModel):
        topic: str

    @flock_type
    class Pizza(BaseModel):
        name: str

    async def cook(idea):
        await asyncio.sleep(float(os.environ.get("COOK_SECONDS", "0")))
        if os.environ.get("COOK_FAILS"):
            raise RuntimeError(os.environ["COOK_FAILS"])
        return Pizza(name=idea.topic)

    flock = Flock("openai/gpt-4o")
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(cook)
    """
)
"""A one-agent application (the scripts below add what they run)."""

WORKFLOW = APP + textwrap.dedent(
    """
    async def main():
        MODE = sys.argv[1]
        if MODE == "traced":
            async with flock.traced_run("pizza_workflow") as span:
                span.set_attribute("pipeline.version", "2.0")
                await flock.publish(Idea(topic="spicy"))
                print("published", flush=True)
                await flock.run_until_idle()
        else:
            await flock.publish(Idea(topic="spicy"))
            print("published", flush=True)
            await flock.run_until_idle()
        print("done", flush=True)

    asyncio.run(main())
    """
)


def run_script(
    tmp_path: Path, name: str, source: str, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as ``tmp_path/name`` in a fresh interpreter, in ``tmp_path``, with no
    FLOCK_*/OTEL_* variable but those of ``env``."""
    script = tmp_path / name
    script.write_text(source)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOCK_", "OTEL_"))}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=tmp_path,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def run(
    tmp_path: Path, mode: str, env: dict[str, str], *, prelude: str = ""
) -> subprocess.CompletedProcess[str]:
    return run_script(tmp_path, "pizza.py", prelude + WORKFLOW, mode, env=env)


def rows(
    db: Path,
    sql: str = "SELECT name, trace_id, parent_id, status_code, attributes FROM spans ORDER BY start_time",
) -> list[tuple]:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_defaults_write_the_trace_file(tmp_path: Path) -> None:
    result = run(tmp_path, "traced", {})
    assert result.returncode == 0, result.stderr
    spans = rows(tmp_path / ".flock" / "traces.duckdb")
    assert spans[0][0] == "pizza_workflow"
    assert {"Flock.publish", "Agent.execute", "Flock.run_until_idle"} <= {s[0] for s in spans}
    assert len({s[1] for s in spans}) == 1
    assert result.stderr == ""


def test_without_traced_run_two_root_traces(tmp_path: Path) -> None:
    result = run(tmp_path, "plain", {})
    assert result.returncode == 0, result.stderr
    spans = rows(tmp_path / ".flock" / "traces.duckdb")
    roots = [s[0] for s in spans if s[2] is None]
    assert roots == ["Flock.publish", "Flock.run_until_idle"]
    assert len({s[1] for s in spans}) == 2


def test_auto_workflow_trace_groups_a_plain_script(tmp_path: Path) -> None:
    result = run(tmp_path, "plain", {"FLOCK_AUTO_WORKFLOW_TRACE": "true"})
    assert result.returncode == 0, result.stderr
    spans = rows(tmp_path / ".flock" / "traces.duckdb")
    assert len({s[1] for s in spans}) == 1
    roots = [s for s in spans if s[2] is None]
    assert [r[0] for r in roots] == ["pizza_workflow"]  # <script name>_workflow
    attributes = json.loads(roots[0][4])
    assert attributes["flock"]["workflow"] is True and attributes["workflow"]["auto"] is True
    children = {s[0] for s in spans if s[2] is not None}
    assert {"Flock.publish", "Flock.run_until_idle", "Agent.execute"} <= children
    assert all(json.loads(s[4])["workflow"]["name"] == "pizza_workflow" for s in spans)


AUTO_SHAPES = APP + textwrap.dedent(
    """
    async def publish(topic):
        await flock.publish(Idea(topic=topic))

    async def gathered():
        await asyncio.gather(publish("a"), publish("b"))
        await flock.run_until_idle()
        await publish("c")  # a second round in the main task: a workflow of its own
        await flock.run_until_idle()

    async def idle_in_a_task():
        await publish("a")
        await asyncio.create_task(flock.run_until_idle())
        await publish("b")
        await flock.run_until_idle()

    async def no_run_until_idle():
        await publish("a")

    async def closed_elsewhere_then_traced_run():
        go = asyncio.Event()

        async def background():  # started before the workflow: a context of its own
            await go.wait()
            await flock.run_until_idle()

        task = asyncio.create_task(background())
        await publish("a")  # opens the workflow here
        go.set()
        await task  # closes it there; this context still holds the ended workflow
        async with flock.traced_run("explicit"):
            await publish("b")
            await flock.run_until_idle()

    shape = sys.argv[1]
    if shape == "two_asyncio_runs":
        asyncio.run(publish("a"))
        asyncio.run(flock.run_until_idle())
    else:
        asyncio.run(globals()[shape]())
    """
)


W = "shapes_workflow"


@pytest.mark.parametrize(
    ("shape", "roots", "publishes"),
    [
        ("gathered", [W, W], [2, 1]),  # publishes in tasks of their own join the workflow
        ("idle_in_a_task", [W], [2]),  # a task the opening context started: it stays open
        ("two_asyncio_runs", [W], [1]),  # the opening context is gone when it closes
        ("no_run_until_idle", [W], [1]),  # closed as the interpreter exits
        ("closed_elsewhere_then_traced_run", [W, "explicit"], [1, 1]),
    ],
)
def test_auto_workflow_trace_across_tasks_and_event_loops(
    tmp_path: Path, shape: str, roots: list[str], publishes: list[int]
) -> None:
    env = {"FLOCK_AUTO_WORKFLOW_TRACE": "true"}
    result = run_script(tmp_path, "shapes.py", AUTO_SHAPES, shape, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    spans = rows(
        tmp_path / ".flock" / "traces.duckdb",
        "SELECT name, trace_id, parent_id, span_id, attributes FROM spans ORDER BY start_time",
    )
    ids = {s[3] for s in spans}
    assert [s[0] for s in spans if s[2] not in ids] == roots
    by_trace: dict[str, list[str]] = {}
    for name, trace_id, *_ in spans:
        by_trace.setdefault(trace_id, []).append(name)
    assert len(by_trace) == len(roots)  # every span under one of the workflows, none orphaned
    assert [names.count("Flock.publish") for names in by_trace.values()] == publishes
    root_of = {s[1]: s[0] for s in spans if s[2] not in ids}
    assert all(json.loads(s[4])["workflow"]["name"] == root_of[s[1]] for s in spans)


@pytest.mark.parametrize(
    "env",
    [{"FLOCK_AUTO_TRACE": "false"}, {"FLOCK_TRACE_FILE": "false"}, {"OTEL_SDK_DISABLED": "true"}],
)
def test_switches_that_turn_the_file_off(tmp_path: Path, env: dict[str, str]) -> None:
    result = run(tmp_path, "traced", env)
    assert result.returncode == 0, result.stderr
    assert "done" in result.stdout
    assert not (tmp_path / ".flock" / "traces.duckdb").exists()


def test_trace_db_and_service_name(tmp_path: Path) -> None:
    result = run(
        tmp_path, "traced", {"FLOCK_TRACE_DB": "custom/t.duckdb", "OTEL_SERVICE_NAME": "pizzeria"}
    )
    assert result.returncode == 0, result.stderr
    services = rows(tmp_path / "custom" / "t.duckdb", "SELECT DISTINCT service FROM spans")
    assert services == [("pizzeria",)]


USER_PROVIDER = textwrap.dedent(
    """
    import atexit
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.resources import Resource
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "mine"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    atexit.register(lambda: print("user exporter saw", len(exporter.get_finished_spans()), flush=True))
    """
)


def test_users_own_provider_is_respected(tmp_path: Path) -> None:
    result = run(tmp_path, "traced", {}, prelude=USER_PROVIDER)
    assert result.returncode == 0, result.stderr
    assert "user exporter saw 8" in result.stdout
    assert rows(tmp_path / ".flock" / "traces.duckdb", "SELECT DISTINCT service FROM spans") == [
        ("mine",)
    ]


def test_sigterm_mid_workflow_keeps_finished_spans_and_marks_the_root(tmp_path: Path) -> None:
    script = tmp_path / "pizza.py"
    script.write_text(WORKFLOW)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOCK_", "OTEL_"))}
    env["COOK_SECONDS"] = "30"
    child = subprocess.Popen(
        [sys.executable, str(script), "traced"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "published"
        time.sleep(0.3)
        child.send_signal(signal.SIGTERM)
        child.wait(20)
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()  # type: ignore[union-attr]
        child.stderr.close()  # type: ignore[union-attr]
    assert child.returncode != 0
    spans = {s[0]: s for s in rows(tmp_path / ".flock" / "traces.duckdb")}
    assert spans["pizza_workflow"][3] == "ERROR"
    assert "Flock.publish" in spans
    assert spans["Agent.execute"][3] == "ERROR"  # interrupted, recorded


REDACTED_EXPORT = APP + textwrap.dedent(
    """
    from flock.tracing import configure

    def redact(key, value):
        if key == "api.key":
            return None
        return value.replace("sk-SECRET", "[redacted]") if isinstance(value, str) else value

    configure(redact=redact)

    async def main():
        try:
            async with flock.traced_run("pizza_workflow") as span:
                span.set_attribute("api.key", "sk-" + "SECRET")
                span.set_attribute("note", "kept")
                await flock.publish(Idea(topic="spicy"))
                await flock.run_until_idle()
        except Exception as exc:
            print("failed as planned:", type(exc).__name__)

    asyncio.run(main())
    """
)


def test_the_redact_hook_applies_to_otlp_export_as_to_the_file(tmp_path: Path) -> None:
    from tests.tracing.stored import OtlpReceiver

    with OtlpReceiver() as receiver:
        env = {
            "COOK_FAILS": "the oven rejected key sk-SECRET",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        }
        result = run_script(tmp_path, "redacted.py", REDACTED_EXPORT, env=env)
    assert result.returncode == 0, result.stderr
    assert "failed as planned: AgentFailures" in result.stdout
    assert receiver.requests and all(b"sk-SECRET" not in body for _, _, body in receiver.requests)
    exported = {span.name: span for span in receiver.spans()}
    keys = {a.key for a in exported["pizza_workflow"].attributes}
    assert "note" in keys and "api.key" not in keys
    assert exported["Agent.execute"].status.message.endswith("[redacted]")
    db = tmp_path / ".flock" / "traces.duckdb"
    assert len(receiver.spans()) == len(rows(db))
    everything = "concat_ws('|', attributes, events, status_description)"
    assert rows(db, f"SELECT count(*) FROM spans WHERE {everything} LIKE '%sk-SECRET%'") == [(0,)]
    assert rows(db, f"SELECT count(*) FROM spans WHERE {everything} LIKE '%[redacted]%'") != [(0,)]
