"""The trace file under pressure: a reader holding it, and files that cannot be used."""

from __future__ import annotations

import os
import random
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from flock.tracing.processor import DuckDBSpanProcessor
from flock.tracing.store import pending_dir
from tests.faults.helpers import query, run_child

DB = Path(".flock") / "traces.duckdb"

HOLDER = """
import duckdb, sys, time
conn = duckdb.connect(sys.argv[1], read_only=sys.argv[3] == "read_only")
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
if sys.argv[4] == "until_released":
    sys.stdin.readline()
conn.close()
"""


def hold(
    db: Path, seconds: float, mode: str = "read_only", *, until_released: bool = False
) -> subprocess.Popen[str]:
    """Another process that opens ``db`` (read_only or read_write) and keeps it for
    ``seconds`` (and then, with ``until_released``, until a line arrives on its stdin)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HOLDER,
            str(db),
            str(seconds),
            mode,
            str(until_released and "until_released"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_reader_holding_the_file_for_5s_while_100k_spans_are_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "traces.duckdb"
    processor = DuckDBSpanProcessor(db, flush_interval=0.05)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("load")
    try:
        with tracer.start_as_current_span("before_reader"):
            pass
        assert processor.force_flush()
        reader = hold(db, 5, until_released=True)  # at least 5 s, and until the burst is done
        try:
            for i in range(100_000):
                with tracer.start_as_current_span("burst") as span:
                    span.set_attribute("i", i)
            assert not processor.force_flush(200)  # the reader holds the file: cannot finish
            assert processor.written == 1
        finally:
            assert reader.stdin is not None and reader.stdout is not None
            reader.stdin.write("release\n")
            reader.stdin.close()
            assert reader.wait(30) == 0
            reader.stdout.close()
        assert "is locked by another process" in caplog.text
        assert processor.force_flush(60_000)
        assert (processor.written, processor.dropped) == (100_001, 0)
        rows = query(db, "SELECT count(*), count(DISTINCT span_id) FROM spans WHERE name = 'burst'")
        assert rows == [(100_000, 100_000)]
        (i_sum,) = query(db, "SELECT sum(json_extract(attributes, '$.i')::BIGINT) FROM spans")[0]
        assert i_sum == sum(range(100_000))
    finally:
        provider.shutdown()


def test_clear_traces_waits_for_a_writer_process_then_gives_a_plain_error(tmp_path: Path) -> None:
    from flock.tracing.store import clear_traces

    db = tmp_path / "traces.duckdb"
    DuckDBSpanProcessor(db).shutdown()  # an empty trace file
    writer = hold(db, 3, mode="read_write")
    try:
        result = clear_traces(db, lock_wait=0.5)  # gives up while the file is still held
    finally:
        writer.wait(30)
        assert writer.stdout is not None and writer.stdin is not None
        writer.stdout.close()
        writer.stdin.close()
    assert result["success"] is False and result["deleted_count"] == 0
    assert "Could not set lock" in result["error"] and str(db) in result["error"]
    assert "another process holds the file" in result["error"]


def test_clear_traces_succeeds_once_a_brief_holder_lets_go(tmp_path: Path) -> None:
    from flock import Flock

    db = tmp_path / "traces.duckdb"
    DuckDBSpanProcessor(db).shutdown()
    writer = hold(db, 1, mode="read_write")
    try:
        result = Flock.clear_traces(str(db))  # waits up to 5 s by default
    finally:
        writer.wait(30)
        assert writer.stdout is not None and writer.stdin is not None
        writer.stdout.close()
        writer.stdin.close()
    assert result == {"success": True, "deleted_count": 0, "error": None}


# Files that cannot be used -----------------------------------------------------------------


def _garble(path: Path, start: int, end: int) -> None:
    rng = random.Random(7)
    with path.open("r+b") as f:
        f.seek(start)
        f.write(bytes(rng.getrandbits(8) for _ in range(end - start)))


def _valid_trace_file(tmp_path: Path) -> Path:
    """A real trace file written by a child run (in a scratch directory)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    _, code, stderr = run_child(scratch, "normal")
    assert code == 0, stderr
    return scratch / DB


def not_duckdb(tmp_path: Path) -> tuple[Path, dict[str, str], str]:
    target = tmp_path / DB
    target.parent.mkdir()
    target.write_text("these are not the spans you are looking for\n" * 100)
    return target, {}, "not a valid DuckDB database file"


def corrupt_header(tmp_path: Path) -> tuple[Path, dict[str, str], str]:
    target = tmp_path / DB
    target.parent.mkdir()
    shutil.copy(_valid_trace_file(tmp_path), target)
    _garble(target, 0, 4096)
    return target, {}, "not a valid DuckDB database file"


def corrupt_blocks(tmp_path: Path) -> tuple[Path, dict[str, str], str]:
    target = tmp_path / DB
    target.parent.mkdir()
    shutil.copy(_valid_trace_file(tmp_path), target)
    _garble(target, 12_288, target.stat().st_size - 4096)
    return target, {}, "Corrupt database file"


def directory_in_its_place(tmp_path: Path) -> tuple[Path, dict[str, str], str]:
    target = tmp_path / DB
    target.mkdir(parents=True)
    return target, {}, ""


def parent_is_a_file(tmp_path: Path) -> tuple[Path, dict[str, str], str]:
    # Unwritable even for root (a chmod'ed directory is not, see the next case).
    (tmp_path / "blocker").write_text("a file, not a directory")
    target = tmp_path / "blocker" / "traces.duckdb"
    return target, {"FLOCK_TRACE_DB": str(target)}, ""


def read_only_directory(tmp_path: Path) -> tuple[Path, dict[str, str], str]:
    if os.geteuid() == 0:
        pytest.skip(
            "running as root: a read-only directory is still writable for root (the "
            "parent_is_a_file case covers an unwritable location)"
        )
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    target = ro / "traces.duckdb"
    return target, {"FLOCK_TRACE_DB": str(target)}, ""


@pytest.mark.parametrize(
    "make",
    [
        not_duckdb,
        corrupt_header,
        corrupt_blocks,
        directory_in_its_place,
        parent_is_a_file,
        read_only_directory,
    ],
)
def test_unusable_trace_file_warns_once_and_the_flock_still_runs(
    tmp_path: Path, make: Callable[[Path], tuple[Path, dict[str, str], str]]
) -> None:
    target, env, reason = make(tmp_path)
    before = target.read_bytes() if target.is_file() else None
    try:
        child, code, stderr = run_child(tmp_path, "normal", **env)
    finally:
        if target.parent.exists():
            target.parent.chmod(0o755)
    assert code == 0, stderr
    assert child.seen[-1] == "done"
    assert len(child.ended()) == 12  # tracing itself goes on (in memory, to other processors)
    warning = [line for line in stderr.splitlines() if "trace file" in line]
    assert len(warning) == 1, stderr
    assert "RuntimeWarning: flock tracing without a trace file" in warning[0]
    assert repr(str(target)) in warning[0]  # names the file
    assert "Move or delete the file" in warning[0] and "FLOCK_TRACE_DB" in warning[0]
    assert reason in warning[0]
    assert "could not be written" not in stderr  # nothing pretends to be queued for it
    if before is not None:
        assert target.read_bytes() == before  # the user's file is left alone


def test_a_locked_file_at_start_is_not_an_unusable_file(tmp_path: Path) -> None:
    _, code, stderr = run_child(tmp_path, "normal")  # create it
    assert code == 0, stderr
    holder = hold(tmp_path / DB, 2)
    try:
        _child, code, stderr = run_child(tmp_path, "normal")
    finally:
        holder.wait(30)
        assert holder.stdout is not None and holder.stdin is not None
        holder.stdout.close()
        holder.stdin.close()
    assert code == 0, stderr
    assert "without a trace file" not in stderr
    assert query(tmp_path / DB, "SELECT count(*) FROM spans")[0][0] == 2 * 12


def test_processor_refuses_an_unusable_file_with_a_clear_error(tmp_path: Path) -> None:
    from flock.exceptions import TracingError

    bogus = tmp_path / "bogus.duckdb"
    bogus.write_text("not a database")
    with pytest.raises(
        TracingError, match=r"cannot use trace file .*bogus\.duckdb.*Move or delete"
    ):
        DuckDBSpanProcessor(bogus)
    assert bogus.read_text() == "not a database"


def test_spans_a_locked_file_refuses_at_exit_are_kept_and_added_by_the_next_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from flock.tracing.store import clear_traces, pending_dir

    db = tmp_path / "traces.duckdb"
    processor = DuckDBSpanProcessor(db, flush_interval=60, exit_timeout=0.5)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("exit")
    with tracer.start_as_current_span("before"):
        pass
    assert processor.force_flush()
    holder = hold(db, 0, "read_write", until_released=True)  # a writer: no one else may open it
    try:
        for i in range(50):
            with tracer.start_as_current_span("during") as span:
                span.set_attribute("flock.i", i)
        provider.shutdown()  # as at exit: the file stays locked past exit_timeout
    finally:
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write("release\n")
        holder.stdin.close()
        assert holder.wait(30) == 0
        holder.stdout.close()
    err = capsys.readouterr().err
    (spilled,) = pending_dir(db).glob("*.arrow")
    assert f"50 span(s) could not be written to {db} before exit" in err
    assert "Conflicting lock is held" in err and f"kept in {spilled}" in err
    assert "unwritten at exit" not in err  # nothing is lost
    assert query(db, "SELECT count(*) FROM spans WHERE name = 'during'") == [(0,)]
    saved = spilled.read_bytes()

    def next_writer_writes_one_span() -> None:
        later = DuckDBSpanProcessor(db, flush_interval=60)
        provider = TracerProvider()
        provider.add_span_processor(later)
        with provider.get_tracer("next").start_as_current_span("after"):
            pass
        assert later.force_flush()
        provider.shutdown()

    next_writer_writes_one_span()
    rows = query(
        db,
        "SELECT count(*), count(DISTINCT span_id), sum(json_extract(attributes, '$.flock.i')::INT)"
        " FROM spans WHERE name = 'during'",
    )
    assert rows == [(50, 50, sum(range(50)))]
    assert not pending_dir(db).exists()
    # A process that died between adding a file's spans and deleting the file adds none twice.
    pending_dir(db).mkdir()
    spilled.write_bytes(saved)
    next_writer_writes_one_span()
    assert query(db, "SELECT count(*) FROM spans WHERE name = 'during'") == [(50,)]
    assert query(db, "SELECT count(*) FROM spans WHERE name = 'after'") == [(2,)]
    # A file that cannot be read is set aside with a warning, not retried forever.
    pending_dir(db).mkdir()
    (pending_dir(db) / "1-2.arrow").write_bytes(b"not arrow")
    next_writer_writes_one_span()
    assert "cannot add the spans left in" in caplog.text
    assert [p.name for p in pending_dir(db).iterdir()] == ["1-2.unreadable"]
    # Clearing the traces clears the spans still waiting to be added, too.
    spilled.write_bytes(saved)
    result = clear_traces(db)
    assert result == {"success": True, "deleted_count": 1 + 50 + 3 + 50, "error": None}
    next_writer_writes_one_span()
    assert query(db, "SELECT count(*) FROM spans") == [(1,)]


def test_a_connection_left_open_in_the_same_process_is_waited_for_like_a_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import duckdb

    db = tmp_path / "traces.duckdb"
    processor = DuckDBSpanProcessor(db, flush_interval=0.05)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("same-process")
    try:
        with tracer.start_as_current_span("first"):
            pass
        assert processor.force_flush()
        # The seed's query, run in the program that traces, its connection left open:
        conn = duckdb.connect(str(db), read_only=True)
        try:
            assert conn.execute("SELECT count(*) FROM spans").fetchone() == (1,)
            with tracer.start_as_current_span("second"):
                pass
            assert not processor.force_flush(300)  # DuckDB: "Unique file handle conflict"
        finally:
            conn.close()
        assert processor.force_flush(10_000)
        assert query(db, "SELECT name FROM spans ORDER BY start_time") == [("first",), ("second",)]
        assert "or by a connection to it left open in this one" in caplog.text
        assert "trace writer failed" not in caplog.text  # a wait, not a writer failure
    finally:
        provider.shutdown()


def test_a_write_retrying_when_shutdown_starts_gives_up_at_exit_timeout_and_spills(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The insert thread was already retrying against a reader: it kept retrying for good,
    # shutdown waited exit_timeout + 5 s, and the spans were neither written nor kept.
    db = tmp_path / "traces.duckdb"
    processor = DuckDBSpanProcessor(db, flush_interval=0.05, exit_timeout=2)
    tracer = TracerProvider().get_tracer("t")
    reader = hold(db, 30, until_released=True)
    try:
        for _ in range(10):
            span = tracer.start_span("late")
            span.end()
            processor.on_end(span)
        processor.request_flush()
        time.sleep(1.0)  # the insert thread is retrying now
        started = time.monotonic()
        processor.shutdown()
        took = time.monotonic() - started
    finally:
        reader.kill()
        reader.communicate()
    assert took < 6, took  # (it waited exit_timeout + 5 = 7 s)
    assert "they are kept in" in capsys.readouterr().err
    assert len(list(pending_dir(db).glob("*.arrow"))) == 1


def test_shutdown_while_other_threads_still_end_spans_reports_instead_of_raising(
    tmp_path: Path,
) -> None:
    db = tmp_path / "traces.duckdb"
    processor = DuckDBSpanProcessor(db, flush_interval=0.05, exit_timeout=1)
    tracer = TracerProvider().get_tracer("t")
    stop = threading.Event()

    def produce() -> None:
        while not stop.is_set():
            span = tracer.start_span("bg")
            span.end()
            processor.on_end(span)

    threads = [threading.Thread(target=produce, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        processor.shutdown()  # raised "deque mutated during iteration"
        # and its threads are done: one still inside DuckDB when the interpreter exits
        # aborts the process ("FATAL: exception not rethrown")
        assert not processor._thread.is_alive()
        assert list(pending_dir(db).glob("*.arrow"))  # what it could not write is kept
    finally:
        stop.set()
        for thread in threads:
            thread.join()
