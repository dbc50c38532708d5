from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flock.cli import main

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
