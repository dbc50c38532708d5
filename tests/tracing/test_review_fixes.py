"""The trace writer around forks, foreign tracer providers, busy and odd files:

- a ``multiprocessing`` child (fork: the parent's writer; forkserver: one of its own) writes
  its spans when it ends, without a flush: multiprocessing ends it with ``os._exit``;
- a fork while the writer thread still loads its libraries waits for it (the child would
  inherit a held import lock and its writer hang), and a forked child that exits normally
  writes its spans and does not crash on the parent's DuckDB instance;
- an application's own global tracer provider that is not the SDK's gets flock's spans;
- a read-only connection to the file open in this process at start-up is only busy;
- a spilled file in ``<file>.pending/`` that cannot be added (or removed) never makes the
  writer store its batch again;
- a redact hook (or anything in the writer) raising a ``BaseException`` never kills the
  writer thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.util._once import Once
from pydantic import BaseModel

from flock.orchestrator import Flock
from flock.registry import flock_type
from flock.tracing._encode import spans_to_arrow
from flock.tracing.processor import DuckDBSpanProcessor
from flock.tracing.store import Appender, connect, pending_dir

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def names(db: Path) -> list[str]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return sorted(row[0] for row in conn.execute("SELECT name FROM spans").fetchall())


def run_script(tmp_path: Path, source: str, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOCK_", "OTEL_"))}
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# 1. multiprocessing children --------------------------------------------------------------

MULTIPROCESSING_CHILD = """
    import multiprocessing, sys
    import duckdb
    from opentelemetry.sdk.trace import TracerProvider
    from flock.tracing.processor import DuckDBSpanProcessor

    tracer = None

    def inherited(fail):  # fork: the parent's writer, with new threads in the child
        with tracer.start_as_current_span("in_fork_child"):
            pass
        if fail:
            raise RuntimeError("the child's work failed")

    def own(fail):  # forkserver: a writer of the child's own
        writer = DuckDBSpanProcessor("traces.duckdb", flush_interval=3600)
        provider = TracerProvider()
        provider.add_span_processor(writer)
        with provider.get_tracer("t").start_as_current_span("in_forkserver_child"):
            pass

    if __name__ == "__main__":
        method, fail = sys.argv[1], sys.argv[2] == "fail"
        writer = DuckDBSpanProcessor("traces.duckdb", flush_interval=3600)  # no timed write
        provider = TracerProvider()
        provider.add_span_processor(writer)
        tracer = provider.get_tracer("t")
        context = multiprocessing.get_context(method)
        child = context.Process(target=inherited if method == "fork" else own, args=(fail,))
        child.start()
        child.join(60)
        print("exitcode", child.exitcode)
        writer.shutdown()
        with duckdb.connect("traces.duckdb", read_only=True) as conn:
            print(sorted(r[0] for r in conn.execute("SELECT name FROM spans").fetchall()))
"""


@needs_fork
@pytest.mark.parametrize(
    ("method", "fail", "span", "exitcode"),
    [
        ("fork", "ok", "in_fork_child", 0),
        ("fork", "fail", "in_fork_child", 1),  # an exception ends the child: written too
        ("forkserver", "ok", "in_forkserver_child", 0),
    ],
)
def test_a_multiprocessing_child_writes_its_spans_when_it_ends(
    tmp_path: Path, method: str, fail: str, span: str, exitcode: int
) -> None:
    result = run_script(tmp_path, MULTIPROCESSING_CHILD, method, fail)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"exitcode {exitcode}", result.stderr
    assert lines[-1] == repr([span]), result.stderr
    assert "could not be written" not in result.stderr


# 2. a fork while the writer starts -------------------------------------------------------

EARLY_FORK = """
    import importlib.abc, os, sys, threading, time
    import duckdb

    importing = threading.Event()

    class SlowPyarrow(importlib.abc.MetaPathFinder):
        # The writer thread holds pyarrow's import lock for a while, as on a slow disk.
        def find_spec(self, name, path=None, target=None):
            if name == "pyarrow" and threading.current_thread().name == "flock-trace-writer":
                importing.set()
                time.sleep(1.0)
            return None

    sys.meta_path.insert(0, SlowPyarrow())
    from opentelemetry.sdk.trace import TracerProvider
    from flock.tracing.processor import DuckDBSpanProcessor

    writer = DuckDBSpanProcessor("traces.duckdb", flush_interval=3600, exit_timeout=2)
    provider = TracerProvider()
    provider.add_span_processor(writer)
    assert importing.wait(10)
    pid = os.fork()
    if pid == 0:
        with provider.get_tracer("t").start_as_current_span("in_child"):
            pass
        sys.exit(0)  # a normal exit: atexit shuts the child's writer down
    _, status = os.waitpid(pid, 0)
    print("child exit", os.waitstatus_to_exitcode(status))
    writer.shutdown()
    with duckdb.connect("traces.duckdb", read_only=True) as conn:
        print(sorted(r[0] for r in conn.execute("SELECT name FROM spans").fetchall()))
"""


@needs_fork
def test_a_fork_while_the_writer_loads_its_libraries_leaves_the_childs_writer_working(
    tmp_path: Path,
) -> None:
    result = run_script(tmp_path, EARLY_FORK)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["child exit 0", "['in_child']"], result.stderr
    assert "could not be written" not in result.stderr


NORMAL_EXIT_AFTER_WRITES = """
    import os, sys
    import duckdb
    from opentelemetry.sdk.trace import TracerProvider
    from flock.tracing.processor import DuckDBSpanProcessor

    writer = DuckDBSpanProcessor("traces.duckdb", flush_interval=3600)
    provider = TracerProvider()
    provider.add_span_processor(writer)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("in_parent"):
        pass
    assert writer.force_flush(10_000)  # the parent's DuckDB instance is alive at the fork
    pid = os.fork()
    if pid == 0:
        with tracer.start_as_current_span("in_child"):
            pass
        sys.exit(0)
    _, status = os.waitpid(pid, 0)
    print("child exit", os.waitstatus_to_exitcode(status))
    writer.shutdown()
    with duckdb.connect("traces.duckdb", read_only=True) as conn:
        print(sorted(r[0] for r in conn.execute("SELECT name FROM spans").fetchall()))
"""


@needs_fork
def test_a_forked_child_exits_normally_with_the_parents_duckdb_instance_alive(
    tmp_path: Path,
) -> None:
    # Freeing the parent's DuckDB instance in the child (as the modules are cleared at its
    # exit) aborts it: the instance's destructor joins threads the child does not have.
    result = run_script(tmp_path, NORMAL_EXIT_AFTER_WRITES)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["child exit 0", "['in_child', 'in_parent']"]


def test_a_fork_waits_only_while_the_writer_loads_its_libraries(tmp_path: Path) -> None:
    writer = DuckDBSpanProcessor(tmp_path / "traces.duckdb", flush_interval=60)
    try:
        assert writer._ready.wait(30)
        writer._before_fork()  # returns at once, holding the file (no append during a fork)
        assert writer._append_lock.locked()
        writer._after_fork_in_parent()
        assert not writer._append_lock.locked()
        writer._ready.clear()  # as if still loading: waits, then goes on
        release = threading.Timer(0.2, writer._ready.set)
        release.start()
        writer._before_fork()
        writer._after_fork_in_parent()
        assert writer._ready.is_set()
    finally:
        writer.shutdown()


# 3. an application's own API tracer provider ----------------------------------------------


class _ApiSpan(NonRecordingSpan):
    def __init__(self, name: str, seen: list[str]) -> None:
        parent = trace.get_current_span().get_span_context()
        trace_id = parent.trace_id if parent.is_valid else 0xABC
        super().__init__(SpanContext(trace_id, len(seen) + 1, False, TraceFlags(1)))
        self._span_name, self._seen = name, seen

    def is_recording(self) -> bool:
        return True

    def end(self, end_time: int | None = None) -> None:
        self._seen.append(self._span_name)


class _ApiTracer(trace.Tracer):
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    def start_span(self, name: str, *args: Any, **kwargs: Any) -> trace.Span:
        return _ApiSpan(name, self.seen)

    def start_as_current_span(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return trace.use_span(self.start_span(name), end_on_exit=True)


class _ApiProvider(trace.TracerProvider):
    """A tracer provider of another OpenTelemetry API implementation (a vendor's, say)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _ApiTracer(self.seen)


@flock_type
class ReviewPing(BaseModel):
    n: int


@flock_type
class ReviewPong(BaseModel):
    n: int


@pytest.mark.parametrize("auto_trace", ["true", "false"])
def test_an_applications_own_api_provider_gets_flocks_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auto_trace: str
) -> None:
    mine = _ApiProvider()
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", mine)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setenv("FLOCK_AUTO_TRACE", auto_trace)
    flock = Flock()
    flock.agent("ponger").consumes(ReviewPing).publishes(ReviewPong).with_engines(
        lambda p: ReviewPong(n=p.n)
    )

    async def main() -> None:
        async with flock.traced_run("wf"):
            await flock.publish(ReviewPing(n=1))
            await flock.run_until_idle()

    asyncio.run(main())
    assert trace.get_tracer_provider() is mine  # not replaced
    assert {"wf", "Flock.publish", "Agent.execute", "Flock.run_until_idle"} <= set(mine.seen)
    assert not (tmp_path / ".flock").exists()  # its spans are its own: no file of flock's


# 4. a read-only connection open in this process at start-up -------------------------------


def test_a_read_only_connection_of_this_process_at_start_is_only_busy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "traces.duckdb"
    connect(db).close()  # an existing trace file (empty spans table)
    reader = duckdb.connect(str(db), read_only=True)
    try:
        assert reader.execute("SELECT count(*) FROM spans").fetchone() == (0,)
        writer = DuckDBSpanProcessor(db, flush_interval=60)  # raised TracingError before
    finally:
        reader.close()
    try:
        provider = TracerProvider()
        provider.add_span_processor(writer)
        with provider.get_tracer("t").start_as_current_span("after_the_reader"):
            pass
        assert writer.force_flush(10_000)
    finally:
        writer.shutdown()
    assert names(db) == ["after_the_reader"]


def test_a_new_trace_file_has_its_table_from_the_start(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "traces.duckdb"
    writer = DuckDBSpanProcessor(db, flush_interval=60)
    try:
        assert names(db) == []  # readable at once: created with its (empty) spans table
    finally:
        writer.shutdown()


# 5. spilled files that cannot be added ----------------------------------------------------


def _spill_one(db: Path, name: str) -> Path:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span(name):
        pass
    return Appender(db).spill([spans_to_arrow(exporter.get_finished_spans())])


def _write_spans(writer: DuckDBSpanProcessor, *span_names: str) -> None:
    provider = TracerProvider()
    provider.add_span_processor(writer)
    for name in span_names:
        with provider.get_tracer("t").start_as_current_span(name):
            pass
        assert writer.force_flush(10_000)  # one append each, each adding what is pending


def test_an_unreadable_spill_that_cannot_be_renamed_is_left_and_nothing_is_stored_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "traces.duckdb"
    pending = pending_dir(db)
    pending.mkdir()
    (pending / "1-1.arrow").write_bytes(b"not arrow")
    (pending / "1-1.unreadable").mkdir()  # the rename target is taken: renaming fails
    (pending / "1-1.unreadable" / "x").write_text("x")
    _spill_one(db, "spilled_earlier")  # a good one beside it is still added
    writer = DuckDBSpanProcessor(db, flush_interval=60)
    try:
        with caplog.at_level(logging.WARNING, logger="flock.tracing"):
            _write_spans(writer, "span0", "span1", "span2")
    finally:
        writer.shutdown()
    assert names(db) == ["span0", "span1", "span2", "spilled_earlier"]  # each once
    assert (pending / "1-1.arrow").exists()
    # Logged once, not at every append:
    assert len([r for r in caplog.records if "1-1.arrow" in r.getMessage()]) == 1
    assert writer.last_error is None


def test_a_spill_that_cannot_be_removed_is_added_once_and_nothing_is_stored_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "traces.duckdb"
    spilled = _spill_one(db, "spilled_earlier")
    unlink = Path.unlink

    def refuse(self: Path, missing_ok: bool = False) -> None:
        if self == spilled:  # another user's file in a shared directory, say
            raise PermissionError(13, "Permission denied", str(self))
        unlink(self, missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    writer = DuckDBSpanProcessor(db, flush_interval=60)
    try:
        with caplog.at_level(logging.WARNING, logger="flock.tracing"):
            _write_spans(writer, "span0", "span1", "span2")
    finally:
        writer.shutdown()
    assert names(db) == ["span0", "span1", "span2", "spilled_earlier"]  # each once
    assert len([r for r in caplog.records if "cannot remove it" in r.getMessage()]) == 1
    assert writer.last_error is None


def test_a_failing_insert_of_a_spill_never_fails_the_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "traces.duckdb"
    spilled = _spill_one(db, "spilled_earlier")
    insert = Appender._insert

    def failing(self: Appender, conn: Any, table: Any, where: str = "") -> None:
        if where:  # only the spill's insert
            raise duckdb.IOException("IO Error: disk full")
        insert(self, conn, table, where)

    monkeypatch.setattr(Appender, "_insert", failing)
    writer = DuckDBSpanProcessor(db, flush_interval=60)
    try:
        _write_spans(writer, "span0", "span1")
    finally:
        writer.shutdown()
    assert names(db) == ["span0", "span1"]
    assert spilled.exists()  # kept for the next process


# 6. BaseException in the writer -----------------------------------------------------------


@pytest.mark.parametrize("exception", [SystemExit, KeyboardInterrupt])
def test_a_redact_hook_raising_a_base_exception_gives_a_stand_in(
    tmp_path: Path, exception: type[BaseException]
) -> None:
    def redact(key: str, value: object) -> object:
        if value == "poison":
            raise exception("bad value")
        return value

    db = tmp_path / "traces.duckdb"
    writer = DuckDBSpanProcessor(db, flush_interval=0.05, redact=redact)
    try:
        provider = TracerProvider()
        provider.add_span_processor(writer)
        tracer = provider.get_tracer("t")
        with tracer.start_as_current_span("poisoned") as span:
            span.set_attribute("k", "poison")
        with tracer.start_as_current_span(
            "linked", links=[trace.Link(span.get_span_context(), {"k": "poison"})]
        ):
            pass
        with tracer.start_as_current_span("later"):
            pass
        assert writer.force_flush(10_000)
        assert writer._thread.is_alive()
    finally:
        writer.shutdown()
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = dict(conn.execute("SELECT name, attributes || links FROM spans").fetchall())
    assert set(rows) == {"poisoned", "linked", "later"}
    assert "encode_error" in rows["poisoned"] and "encode_error" in rows["linked"]


def test_the_writer_survives_a_base_exception_and_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    append = Appender.append
    failures = [SystemExit("from somewhere in the append")]

    def failing_once(self: Appender, table: Any, **options: Any) -> None:
        if failures:
            raise failures.pop()
        append(self, table, **options)

    monkeypatch.setattr(Appender, "append", failing_once)
    db = tmp_path / "traces.duckdb"
    writer = DuckDBSpanProcessor(db, flush_interval=0.05)
    try:
        provider = TracerProvider()
        provider.add_span_processor(writer)
        with provider.get_tracer("t").start_as_current_span("kept"):
            pass
        with caplog.at_level(logging.ERROR, logger="flock.tracing"):
            assert not writer.force_flush(200) or not failures
            assert writer.force_flush(10_000)
        assert writer._thread.is_alive()
    finally:
        writer.shutdown()
    assert names(db) == ["kept"]
    assert "flock trace writer failed" in caplog.text


def test_a_sigterm_while_a_writer_writes_its_last_spans_does_not_cut_it_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A pool worker is terminated (SIGTERM) while its exit hook writes its spans: the
    # handler raised SystemExit inside that shutdown, and the spans were lost.
    import signal

    from flock.tracing import processor, setup

    monkeypatch.setattr(setup, "_sigterm_installed", False)
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        setup._install_sigterm_flush()
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        monkeypatch.setattr(processor, "_EXITING", {1})
        handler(signal.SIGTERM, None)  # returns: the shutdown goes on
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # a second one ends it
        signal.signal(signal.SIGTERM, handler)
        monkeypatch.setattr(processor, "_EXITING", set())
        with pytest.raises(SystemExit):
            handler(signal.SIGTERM, None)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_fork_while_the_writer_appends_leaves_the_child_able_to_write(tmp_path: Path) -> None:
    # The child inherited the parent's DuckDB instance with the file attached mid-append,
    # and DuckDB refused the child's own attach for good (24 of 30 children, reviewed).
    db = tmp_path / "traces.duckdb"
    writer = DuckDBSpanProcessor(db, flush_interval=0.001)
    tracer = TracerProvider().get_tracer("t")
    stop, quiet = threading.Event(), threading.Event()

    def busy() -> None:
        while not stop.is_set():
            if quiet.is_set():  # while a child writes: no contention for the file
                time.sleep(0.001)
                continue
            for _ in range(50):
                span = tracer.start_span("parent")
                span.end()
                writer.on_end(span)
            time.sleep(0.001)

    thread = threading.Thread(target=busy, daemon=True)
    thread.start()
    failed = 0
    try:
        for i in range(8):
            time.sleep(0.02)
            pid = os.fork()
            if pid == 0:  # the child: one span, written before it leaves
                span = tracer.start_span(f"child {i}")
                span.end()
                writer.on_end(span)
                os._exit(0 if writer.force_flush(5_000) else 1)
            quiet.set()  # the fork came while the parent was appending; now let it write
            _, status = os.waitpid(pid, 0)
            quiet.clear()
            failed += os.waitstatus_to_exitcode(status) != 0
    finally:
        stop.set()
        thread.join()
        writer.shutdown()
    assert failed == 0


def test_threads_forking_at_once_leave_the_writer_free_to_write(tmp_path: Path) -> None:
    # One flag per writer: a second thread's fork cleared the first's, whose lock was then
    # never released, and the parent could never write again.
    writer = DuckDBSpanProcessor(tmp_path / "traces.duckdb", flush_interval=60)
    tracer = TracerProvider().get_tracer("t")

    def forks() -> None:
        for _ in range(10):
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            os.waitpid(pid, 0)

    try:
        assert writer._ready.wait(30)
        threads = [threading.Thread(target=forks) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not writer._append_lock.locked()
        span = tracer.start_span("after")
        span.end()
        writer.on_end(span)
        assert writer.force_flush(5_000)
    finally:
        writer.shutdown()
