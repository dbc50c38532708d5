from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from rich.console import Console

import flock._cli_common
import flock._cli_traces
from flock.cli import main
from tests.tracing.stored import SEED_TREE, OtlpReceiver, hex_ids, seed_trace, write_spans

# The seed's "Trace Hierarchy Example", durations masked.
SEED_SHAPE = """\
pizza_workflow (Xms) ← ROOT
├─ Flock.publish (Xms)
│  └─ Agent.execute (Xms)
│     ├─ OutputUtilityComponent.on_initialize (Xms)
│     ├─ DSPyEngine.on_initialize (Xms)
│     ├─ DSPyEngine.evaluate (Xms)
│     │  ├─ DSPyEngine.fetch_conversation_context (Xms)
│     │  └─ DSPyEngine.should_use_context (Xms)
│     └─ OutputUtilityComponent.on_post_evaluate (Xms)
└─ Flock.run_until_idle (Xms)
   └─ Flock.shutdown (Xms)"""


def shape(text: str) -> str:
    return re.sub(r"\((\d+|\d+\.\d\d)ms\)", "(Xms)", text)


@pytest.fixture
def traced_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOCK_AUTO_TRACE", "true")


def test_demo_then_show_draws_the_seed_tree(
    traced_env: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["demo", "--db", str(tmp_path / "t.duckdb")]) == 0
    out = capsys.readouterr().out
    assert SEED_SHAPE in shape(out)
    assert main(["traces", "show", "latest", "--db", str(tmp_path / "t.duckdb")]) == 0
    assert shape(capsys.readouterr().out).strip() == SEED_SHAPE
    assert main(["traces", "show", "--depth", "1", "--db", str(tmp_path / "t.duckdb")]) == 0
    assert shape(capsys.readouterr().out).strip().splitlines() == [
        "pizza_workflow (Xms) ← ROOT",
        "├─ Flock.publish (Xms)",
        "└─ Flock.run_until_idle (Xms)",
    ]
    assert main(["traces", "list", "--json", "--db", str(tmp_path / "t.duckdb")]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["name"] == "pizza_workflow" and row["span_count"] == 11 and row["errors"] == 0
    assert (
        main(
            ["traces", "show", row["trace_id"], "--attributes", "--db", str(tmp_path / "t.duckdb")]
        )
        == 0
    )
    assert 'workflow.name = "pizza_workflow"' in capsys.readouterr().out
    assert main(["traces", "clear", "--yes", "--db", str(tmp_path / "t.duckdb")]) == 0
    assert "Deleted 11 spans" in capsys.readouterr().out


def test_missing_file_and_unknown_trace_are_plain_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["traces", "show", "latest", "--db", str(tmp_path / "none.duckdb")]) == 1
    assert "no trace file" in capsys.readouterr().err
    assert main(["traces", "clear", "--yes", "--db", str(tmp_path / "none.duckdb")]) == 1
    assert "not found" in capsys.readouterr().err


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    main(["traces", "show", "--help"])
    assert "Example: flock traces show latest" in capsys.readouterr().out


def test_python_dash_m_flock_runs_the_command_line(tmp_path: Path) -> None:
    # "No module named flock.__main__" before; the exit code is the command's.
    ok = subprocess.run(
        [sys.executable, "-m", "flock", "traces", "--help"], capture_output=True, text=True
    )
    assert ok.returncode == 0 and "Inspect the trace file." in ok.stdout
    missing = str(tmp_path / "none.duckdb")
    failed = subprocess.run(
        [sys.executable, "-m", "flock", "traces", "list", "--db", missing],
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 1 and "error: no trace file at" in failed.stderr


# --- stored traces: exact layout, list --since, stats, export, locking, progress ---------

NOW_NS = time.time_ns()


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[str, list[str]]:
    """A trace file with an old pizza_workflow (2023) and a failed one from a minute ago."""
    db = str(tmp_path / "seed.duckdb")
    old = seed_trace(start_ns=1_700_000_000 * 10**9)
    recent = seed_trace(start_ns=NOW_NS - 60 * 10**9, error=True, workflow="recent_workflow")
    write_spans(db, old + recent)
    return db, [hex_ids(old[0])[0], hex_ids(recent[0])[0]]


def test_clear_older_than_keeps_recent_traces(
    seeded: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    db, (_, recent) = seeded
    assert main(["traces", "clear", "--older-than", "1d", "--yes", "--db", db]) == 0
    assert f"Deleted 11 spans from {db}" in capsys.readouterr().out
    assert main(["traces", "list", "--json", "--db", db]) == 0
    assert [json.loads(x)["trace_id"] for x in capsys.readouterr().out.splitlines()] == [recent]
    assert main(["traces", "clear", "--older-than", "someday", "--yes", "--db", db]) == 2
    assert "Invalid value for '--older-than'" in capsys.readouterr().err


def test_show_draws_the_seed_hierarchy_example_exactly(
    seeded: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """A stored trace with the seed's spans and durations is drawn as the seed prints it,
    character for character (durations included)."""
    db, (old, _) = seeded
    assert main(["traces", "show", old, "--db", db]) == 0
    assert capsys.readouterr().out.rstrip("\n") == SEED_TREE
    assert main(["traces", "show", old, "--depth", "2", "--db", db]) == 0
    assert capsys.readouterr().out.rstrip("\n").splitlines() == [
        "pizza_workflow (5319ms) ← ROOT",
        "├─ Flock.publish (3ms)",
        "│  └─ Agent.execute (5218ms)",
        "└─ Flock.run_until_idle (5268ms)",
        "   └─ Flock.shutdown (0.17ms)",
    ]


def test_list_since(seeded: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]) -> None:
    db, (old, recent) = seeded
    assert main(["traces", "list", "--json", "--db", db]) == 0
    assert [json.loads(x)["trace_id"] for x in capsys.readouterr().out.splitlines()] == [
        recent,
        old,
    ]
    assert main(["traces", "list", "--since", "1h", "--json", "--db", db]) == 0
    (row,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert (row["trace_id"], row["name"], row["errors"]) == (recent, "recent_workflow", 1)
    assert main(["traces", "list", "--since", "2023-11-01T00:00Z", "--db", db]) == 0
    out = capsys.readouterr().out
    assert old in out and recent in out and "1 error(s)" in out
    assert main(["traces", "list", "--since", "last tuesday", "--db", db]) == 2  # a usage error
    assert "not a time" in capsys.readouterr().err


def test_stats_tables_and_json(
    seeded: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = seeded
    assert main(["traces", "stats", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "Per workflow (whole traces)" in out and "Per span name" in out
    assert "\x1b[" not in out  # piped: plain text
    workflow_row = next(line for line in out.splitlines() if "pizza_workflow" in line)
    assert "5319ms" in workflow_row
    evaluate_row = next(line for line in out.splitlines() if "DSPyEngine.evaluate" in line)
    assert "1 (50%)" in evaluate_row and "4938ms" in evaluate_row
    assert main(["traces", "stats", "--json", "--db", db]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    workflows = {r["name"]: r for r in rows if r["by"] == "workflow"}
    spans = {r["name"]: r for r in rows if r["by"] == "span"}
    assert set(workflows) == {"pizza_workflow", "recent_workflow"}
    assert workflows["recent_workflow"]["error_rate"] == 1.0
    assert workflows["pizza_workflow"]["error_rate"] == 0.0
    assert workflows["pizza_workflow"]["p99_ms"] == pytest.approx(5319.0)
    assert spans["Agent.execute"]["count"] == 2 and spans["Agent.execute"]["p50_ms"] == 5218.0
    assert len(spans) == 12  # the seed's 10 span names + 2 workflow names
    assert main(["traces", "stats", "--by", "span", "--since", "1h", "--json", "--db", db]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {r["by"] for r in rows} == {"span"} and all(r["count"] == 1 for r in rows)
    assert main(["traces", "stats", "--by", "agent", "--db", db]) == 2  # a usage error
    assert "Invalid value for '--by': 'agent' is not one of" in capsys.readouterr().err


def test_export_json_to_stdout_and_file(
    seeded: tuple[str, list[str]], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    db, (old, recent) = seeded
    assert main(["traces", "export", "latest", "--db", db]) == 0
    captured = capsys.readouterr()
    (doc,) = [orjson.loads(line) for line in captured.out.splitlines()]
    spans = doc["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert {s["traceId"] for s in spans} == {recent} and len(spans) == 11
    assert "Exported 1 trace(s), 11 spans as OTLP/JSON to stdout" in captured.err
    out = tmp_path / "all.jsonl"
    assert main(["traces", "export", "--all", "--db", db, "-o", str(out)]) == 0
    docs = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert [d["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] for d in docs] == [
        old,
        recent,
    ]
    assert "Exported 2 trace(s), 22 spans" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.part"))
    assert main(["traces", "export", "--all", "--since", "1h", "--db", db, "-o", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 1


def test_export_usage_errors(
    seeded: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    db, (old, _) = seeded
    for args, message, code in [
        ([], "name one trace", 2),
        ([old, "--all"], "name one trace", 2),
        ([old, "--since", "1h"], "select traces for --all", 2),
        ([old, "--otlp-endpoint", "http://x", "--header", "nokey"], "KEY=VALUE", 2),
        ([old, "--otlp-endpoint", "http://x", "--otlp-protocol", "grpc"], "--otlp-protocol", 2),
        (["0123", "-o", "-"], "no trace '0123'", 1),
        ([old, "--otlp-endpoint", "127.0.0.1:6006"], "not an http(s) URL", 1),
    ]:
        assert main(["traces", "export", *args, "--db", db]) == code, args
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)
        if code == 2:  # a mistyped command line: click's usage message, as for unknown options
            assert err.startswith("Usage: flock traces export [OPTIONS]"), err


def test_export_replays_to_an_otlp_receiver(
    seeded: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    db, (old, recent) = seeded
    with OtlpReceiver() as receiver:
        args = ["traces", "export", "--all", "--otlp-endpoint", receiver.url, "--db", db]
        assert main([*args, "--header", "x-project-name=flock-test"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing on stdout unless -o is given
    assert f"Sent 2 trace(s), 22 spans to {receiver.url}/v1/traces" in captured.err
    assert {s.trace_id.hex() for s in receiver.spans()} == {old, recent}
    assert all(h["x-project-name"] == "flock-test" for _, h, _ in receiver.requests)
    with OtlpReceiver(status=503) as receiver:
        assert main(["traces", "export", old, "--otlp-endpoint", receiver.url, "--db", db]) == 1
    assert "HTTP 503" in capsys.readouterr().err
    assert main(["traces", "export", old, "--otlp-endpoint", receiver.url, "--db", db]) == 1
    err = capsys.readouterr().err
    assert "cannot reach" in err and "Traceback" not in err


def test_progress_bar_on_a_terminal_only(
    seeded: tuple[str, list[str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    db, _ = seeded
    terminal = io.StringIO()
    monkeypatch.setattr(
        flock._cli_traces,
        "_err_console",
        lambda: Console(file=terminal, force_terminal=True, width=100),
    )
    assert main(["traces", "export", "--all", "--db", db, "-o", str(tmp_path / "x")]) == 0
    shown = terminal.getvalue()
    assert "Exporting" in shown and "2/2" in shown and "22 spans" in shown
    monkeypatch.undo()
    assert main(["traces", "export", "--all", "--db", db, "-o", str(tmp_path / "x")]) == 0
    err = capsys.readouterr().err
    assert "Exporting" not in err and "\x1b[" not in err


HOLD_LOCK = """
import sys, time, duckdb
conn = duckdb.connect(sys.argv[1])
conn.execute("SELECT count(*) FROM spans").fetchall()
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.close()
"""


@contextmanager
def file_locked(db: str, seconds: float = 60) -> Iterator[None]:
    """Another process holds the trace file open for writing (for ``seconds`` at most)."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, db, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    with child, child.stdout:
        try:
            assert child.stdout.readline().strip() == "locked"
            yield
        finally:
            if seconds >= 60:
                child.kill()
            child.wait(30)


@pytest.mark.parametrize(
    "command",
    [["traces", "list"], ["traces", "show"], ["traces", "stats"], ["traces", "export", "latest"]],
)
def test_a_locked_file_is_a_plain_message(
    seeded: tuple[str, list[str]],
    command: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db, _ = seeded
    monkeypatch.setattr(flock._cli_common, "LOCK_WAIT", 0.3)
    with file_locked(db):
        assert main([*command, "--db", db]) == 1
    err = capsys.readouterr().err
    assert "is held by another process" in err and "try again shortly" in err
    assert "Traceback" not in err and "IOException" not in err


def test_commands_wait_out_a_brief_lock(
    seeded: tuple[str, list[str]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db, _ = seeded
    monkeypatch.setattr(flock._cli_common, "LOCK_WAIT", 0.3)
    with file_locked(db):
        assert main(["traces", "clear", "--yes", "--db", db]) == 1
    assert "is held by another process" in capsys.readouterr().err
    monkeypatch.setattr(flock._cli_common, "LOCK_WAIT", 20.0)
    with file_locked(db, seconds=1.0):  # lets go after a second
        assert main(["traces", "list", "--json", "--db", db]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    with file_locked(db, seconds=1.0):
        assert main(["traces", "clear", "--yes", "--db", db]) == 0
    assert "Deleted 22 spans" in capsys.readouterr().out


@pytest.mark.parametrize(
    "command",
    [
        ["demo"],
        ["traces", "list"],
        ["traces", "show"],
        ["traces", "stats"],
        ["traces", "export"],
        ["traces", "clear"],
    ],
)
def test_every_command_has_help_with_an_example(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"Example: flock {' '.join(command)}" in out
