"""How a process ends must never cost the trace of the run: normal exit, an unhandled
exception, SIGTERM and SIGKILL in the middle of a workflow, each in a real child process."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from tests.faults.helpers import Child, query, run_child, span_rows

DB = Path(".flock") / "traces.duckdb"
# chef: Agent.execute + on_initialize + evaluate + on_post_evaluate (OutputUtilityComponent is
# on by default); critic the same; plus Flock.publish, Flock.run_until_idle, Flock.shutdown.
SPANS_PER_RUN = 2 * 4 + 3


def test_normal_exit_writes_every_span(tmp_path: Path) -> None:
    child, code, stderr = run_child(tmp_path, "normal")
    assert code == 0, stderr
    assert stderr == ""
    ended = child.ended()
    rows = span_rows(tmp_path / DB)
    assert len(ended) == SPANS_PER_RUN + 1  # + the workflow root
    assert {e.span_id for e in ended} == set(rows)
    (root,) = [r for r in rows.values() if r[1] is None]
    assert root[0] == "fault_workflow" and root[2] == "OK"


def test_normal_exit_flushes_spans_no_timer_wrote(tmp_path: Path) -> None:
    # An hour between background writes: only the exit path can write these spans, including
    # the application's own span that ends after the last flock call.
    child, code, stderr = run_child(tmp_path, "plain", FLOCK_TRACE_FLUSH_INTERVAL="3600")
    assert code == 0, stderr
    rows = span_rows(tmp_path / DB)
    assert {e.span_id for e in child.ended()} == set(rows)
    assert "app.after_flock" in {r[0] for r in rows.values()}
    assert len(rows) == SPANS_PER_RUN + 1


def test_unhandled_exception_keeps_the_trace_and_marks_the_root(tmp_path: Path) -> None:
    child, code, stderr = run_child(tmp_path, "raise")
    assert code == 1
    assert "RuntimeError: boom in main" in stderr
    rows = span_rows(tmp_path / DB)
    assert {e.span_id for e in child.ended()} == set(rows)
    (root,) = [r for r in rows.values() if r[1] is None]
    name, _, status, description, events = root
    assert (name, status) == ("fault_workflow", "ERROR")
    assert description == "RuntimeError: boom in main"
    (event,) = json.loads(events)
    assert event["name"] == "exception"
    assert event["attributes"]["exception"]["type"] == "RuntimeError"


def test_sigterm_mid_workflow_keeps_every_ended_span(tmp_path: Path) -> None:
    child = Child.start(tmp_path, "hang")
    child.wait_for(lambda line: line == "critic sleeping")
    before_signal = {e.span_id for e in child.ended()}
    child.proc.send_signal(signal.SIGTERM)
    code, stderr = child.finish()
    assert code == 128 + signal.SIGTERM, stderr
    rows = span_rows(tmp_path / DB)
    # the chef's whole run, the publish ... ended before the signal:
    assert len(before_signal) >= 1 + 4
    assert before_signal <= set(rows)
    # ... and so did everything that ended while the process wound down
    assert {e.span_id for e in child.ended()} == set(rows)
    by_name = {r[0]: r for r in rows.values()}
    root = by_name["fault_workflow"]
    assert root[1] is None and root[2] == "ERROR"
    assert json.loads(root[4])[0]["name"] == "exception"
    interrupted = [r for r in rows.values() if r[0] == "Agent.execute" and r[2] == "ERROR"]
    assert len(interrupted) == 1  # the critic's run, marked as interrupted
    assert interrupted[0][3].startswith("interrupted")


FLUSH_INTERVAL = 0.2
WRITE_SLACK = 1.5  # time one background write may take on a loaded machine


def test_sigkill_loses_at_most_one_flush_interval(tmp_path: Path) -> None:
    child = Child.start(tmp_path, "ticker", FLOCK_TRACE_FLUSH_INTERVAL=str(FLUSH_INTERVAL))
    first: list[float] = []

    def enough(line: str) -> bool:
        if not line.startswith("ended "):
            return False
        at = float(line.rsplit(" ", 1)[1])
        first[:] = first or [at]
        return at - first[0] >= 3 * (FLUSH_INTERVAL + WRITE_SLACK)  # many flush intervals

    child.wait_for(enough)
    child.proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    code, _ = child.finish()
    assert code == -signal.SIGKILL
    ended = child.ended()
    db = tmp_path / DB
    # The file still opens and holds only whole, real spans.
    rows = span_rows(db)
    printed = {e.span_id for e in ended}
    assert rows and set(rows) <= printed
    # Everything that ended more than one flush interval (plus the write itself) before the
    # kill is in the file; what is missing ended within that last interval.
    old = {e.span_id for e in ended if e.at < killed_at - FLUSH_INTERVAL - WRITE_SLACK}
    assert old, "the child ran for too short a time to test anything"
    assert old <= set(rows)
    missing = [e for e in ended if e.span_id not in rows]
    if missing:
        assert min(e.at for e in missing) >= killed_at - FLUSH_INTERVAL - WRITE_SLACK
    # And the next process appends to the same file.
    _, code, stderr = run_child(tmp_path, "normal")
    assert code == 0, stderr
    total = query(db, "SELECT count(*) FROM spans")[0][0]
    assert total == len(rows) + SPANS_PER_RUN + 1


@pytest.mark.skipif(
    __import__("os").environ.get("FLOCK_SOAK") != "1", reason="soak test: set FLOCK_SOAK=1"
)
@pytest.mark.timeout(900)
def test_soak_repeated_sigkill_never_corrupts_the_file(tmp_path: Path) -> None:
    """Kill 50 writers at random moments (one of them likely mid-write): the file stays usable."""
    import random

    total_seen = 0
    for round_ in range(50):
        child = Child.start(tmp_path, "ticker", FLOCK_TRACE_FLUSH_INTERVAL="0.05")
        n = random.randint(5, 80)
        seen = 0

        def some(line: str, n: int = n) -> bool:
            nonlocal seen
            seen += 1
            return seen >= n

        child.wait_for(some)
        child.proc.kill()
        child.finish()
        rows = span_rows(tmp_path / DB)
        assert len(rows) >= total_seen, f"round {round_}: spans disappeared"
        total_seen = len(rows)
