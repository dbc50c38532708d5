"""The DuckDB trace file: its ``spans`` table, appending to it (batches encoded by
:mod:`flock.tracing._encode`), and clearing it.

One row per span; times are integer nanoseconds since the epoch; ``attributes`` is nested
JSON (see :mod:`flock.tracing._attributes`) so the queries of the docs work as printed::

    SELECT trace_id,
           json_extract(attributes, '$.workflow.name') AS workflow_name,
           COUNT(*) AS span_count,
           MIN(start_time) AS start_time, MAX(end_time) AS end_time,
           (MAX(end_time) - MIN(start_time)) / 1000000.0 AS duration_ms
    FROM spans
    WHERE json_extract(attributes, '$.flock.workflow') = 'true'
    GROUP BY trace_id, workflow_name
    ORDER BY start_time DESC
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from flock._errors import describe

if TYPE_CHECKING:
    import logging
    from datetime import timedelta

    import duckdb
    import pyarrow as pa


__all__ = [
    "DEFAULT_DB_PATH",
    "SCHEMA",
    "Appender",
    "clear_traces",
    "connect",
    "pending_dir",
]

DEFAULT_DB_PATH = ".flock/traces.duckdb"
MAX_ATTRIBUTE_CHARS = 4096
"""Default cap on a string attribute's length in the file (longer ones are truncated)."""
WRITE_MEMORY_LIMIT = "64MB"
"""DuckDB's memory limit on the writer's connection (it spills to disk beyond it)."""
CHECKPOINT_THRESHOLD = "64KB"
"""Appends stay in the trace file's write-ahead log (``<file>.wal``, fsynced at commit,
replayed by every reader) until it holds this much; then DuckDB checkpoints them into the
file. A checkpoint per append rewrites the table's last row group each time: for the small
appends at each ``traced_run`` exit that is most of their cost (6.5 → 4.3 ms measured)."""

ROW_GROUP_SIZE = 16_384
"""Rows per row group of the spans the writer adds (DuckDB's default: 122,880). Every
checkpoint rewrites the table's last, partly filled row group: with DuckDB's default that
was most of a large append's cost (25,000-span appends 2.3x, 100,000-span ones 1.7x faster
with this size, measured; the file the writer makes is smaller too, while reads of 1M spans
take ~5 % longer). A per-attach setting: files written with another size stay readable and
appendable."""

PARALLEL_ROWS = 16_384
"""Appends of at least this many rows that someone waits for (the last one of a flush,
the exit's) run on two DuckDB threads, with the rows stored in any order: 100,000 spans
in 130-164 ms against 222-248 ms on one thread (measured; two threads keeping the order
were slower than one). Background appends keep one thread and leave the other core to
the application."""

COLUMNS: tuple[tuple[str, str], ...] = (
    ("trace_id", "VARCHAR NOT NULL"),
    ("span_id", "VARCHAR NOT NULL"),
    ("parent_id", "VARCHAR"),
    ("name", "VARCHAR NOT NULL"),
    ("service", "VARCHAR"),
    ("operation", "VARCHAR"),
    ("kind", "VARCHAR"),
    ("start_time", "BIGINT NOT NULL"),
    ("end_time", "BIGINT NOT NULL"),
    ("duration_ms", "DOUBLE NOT NULL"),
    ("status_code", "VARCHAR NOT NULL"),
    ("status_description", "VARCHAR"),
    ("attributes", "JSON"),
    ("events", "JSON"),
    ("links", "JSON"),
    ("resource", "JSON"),
)
# The JSON columns are most of the bytes; zstd makes them about half as large as DuckDB's
# default choice (FSST/dictionary) for span attributes, and appends ~30 % faster (no
# per-segment analysis of which compression to use). Queries on them are as fast.
SCHEMA = "CREATE TABLE IF NOT EXISTS spans (\n    {}\n)".format(
    ",\n    ".join(
        f"{name} {sql_type}" + (" USING COMPRESSION zstd" if sql_type == "JSON" else "")
        for name, sql_type in COLUMNS
    )
)


INTEGER_IDS = ("span_id", "parent_id")
"""Id columns the encoder passes as integers (formatted as 16 hex digits by the INSERT)."""
DERIVED = {
    "operation": "string_split(name, '.')[-1]",  # the method part of "Class.method"
    "duration_ms": "(end_time - start_time) / 1e6",
}
"""Columns the INSERT computes from the encoded batch (cheaper in DuckDB than per span in
Python)."""
INSERT_COLUMNS = ", ".join(
    DERIVED.get(name) or (f"printf('%016x', {name})" if name in INTEGER_IDS else name)
    for name, _ in COLUMNS
)
"""The SELECT list that turns an encoded batch (:func:`spans_to_arrow`) into ``spans`` rows:
span ids travel as integers and are formatted as 16 hex digits here (NULL stays NULL)."""


def pending_dir(path: str | os.PathLike[str]) -> Path:
    """Where spans wait that a process could not write into ``path`` before it exited
    (``<file>.pending/``, Arrow IPC files): the next :class:`Appender` adds them."""
    path = Path(path)
    return path.with_name(path.name + ".pending")


def connect(path: str | os.PathLike[str], *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the trace file (creating it and the table unless ``read_only``)."""
    import duckdb

    if read_only:
        return duckdb.connect(str(path), read_only=True)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = duckdb.connect(str(path))
    try:
        check_schema(conn, missing_ok=True)  # before creating: a view named spans is refused
        conn.execute(SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


class Catalog(NamedTuple):
    """What a database holds of ``main.spans`` and of SQL of its own, from its catalog."""

    view: bool
    """``spans`` is a view."""
    columns: list[tuple[str, str, bool]]
    """``spans``'s ``(column, type, NOT NULL)`` in order (empty: no ``spans``)."""
    macros: list[str]
    """The SQL functions (macros) it defines. A flock trace file has none: in a file from
    elsewhere, a macro named like a DuckDB function stands in for it in every query on the
    file (a ``json_extract_string`` that never ends, say)."""


def spans_catalog(conn: duckdb.DuckDBPyConnection, database: str | None = None) -> Catalog:
    """The :class:`Catalog` of a database (nothing of it runs). ``database``: an attached
    database's name (default: the connection's current one)."""
    # Every function is named with its catalog: a macro of the file named like one of them
    # (a duckdb_functions() that finds no macros, say) must not answer for it.
    system = "system.main."
    name = f"{system}current_database()" if database is None else "?"
    row = conn.execute(
        f"SELECT (SELECT {system}count(*) FROM {system}duckdb_views() WHERE database_name = {name}"
        "        AND schema_name = 'main' AND view_name = 'spans') > 0, "
        f"       (SELECT {system}list([column_name, data_type, (NOT is_nullable)::VARCHAR]"
        "                    ORDER BY column_index)"
        f"        FROM {system}duckdb_columns() WHERE database_name = {name}"
        "        AND schema_name = 'main' AND table_name = 'spans'), "
        f"       (SELECT {system}list(DISTINCT function_name ORDER BY function_name)"
        f"        FROM {system}duckdb_functions() WHERE database_name = {name} AND NOT internal)",
        [] if database is None else [database] * 3,
    ).fetchone()
    view, columns, macros = row if row is not None else (False, None, None)
    return Catalog(
        bool(view),
        [(column, sql_type, not_null == "true") for column, sql_type, not_null in columns or ()],
        list(macros or ()),
    )


def check_schema(
    conn: duckdb.DuckDBPyConnection,
    *,
    missing_ok: bool = False,
    database: str | None = None,
    macros_ok: bool = False,
) -> None:
    """Raise ``ValueError`` unless the database's ``main.spans`` is flock's table (a file
    made by other software, or a view: every write would fail on it) and, unless
    ``macros_ok``, it defines no SQL functions (they would shadow DuckDB's in queries run with
    the file as the current database); with ``missing_ok``, no ``spans`` at all is fine too.
    ``database`` as for :func:`spans_catalog`."""
    catalog = spans_catalog(conn, database)
    if catalog.macros and not macros_ok:
        raise ValueError(macros_message(catalog.macros))
    if catalog.view:
        raise ValueError("its 'spans' is a view, not flock's spans table")
    if not catalog.columns:
        if missing_ok:
            return
        raise ValueError("it has no spans table")
    if [(column, sql_type) for column, sql_type, _ in catalog.columns] != [
        (name, sql_type.split()[0]) for name, sql_type in COLUMNS
    ]:
        columns = ", ".join(f"{name} {sql_type}" for name, sql_type, _ in catalog.columns)
        raise ValueError(f"its spans table is not flock's (its columns: {columns})")


def macros_message(macros: Sequence[str]) -> str:
    shown = ", ".join(macros[:5]) + (f" and {len(macros) - 5} more" if len(macros) > 5 else "")
    return (
        f"it defines SQL functions of its own ({shown}), which would take the place of "
        "DuckDB's in every query on it"
    )


class Appender:
    """Appends Arrow batches to a trace file, holding the file only while it appends.

    Opening a DuckDB database costs 10-20 ms (the instance: catalog, threads, extensions),
    more than the append itself. So one in-memory DuckDB instance lives as long as the
    appender, and each append ATTACHes the file, inserts and DETACHes it (about 3 ms): other
    processes can open the file read-only between appends, as with a connection per append.
    Not thread-safe: one append at a time.
    """

    ALIAS = "flock_trace_file"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._pending = pending_dir(self.path)
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._unmerged = False  # appended since the last full checkpoint
        self._stuck: set[str] = set()  # spilled files that failed to be added (see _recover)
        self._recover_errors: set[str] = set()  # other failures of _recover, logged once

    def check(self) -> None:
        """Open the file as :meth:`append` does, creating it and its ``spans`` table if
        missing; ``ValueError`` if its ``spans`` is not flock's table, DuckDB's error if it
        is no DuckDB file, a lock error (see ``is_lock_error``) while another connection,
        of this process or another, holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._attached() as conn:
            # Its macros are not in the search path of the appends (the file is attached).
            check_schema(conn, missing_ok=True, database=self.ALIAS, macros_ok=True)
            if not spans_catalog(conn, self.ALIAS).columns:
                conn.execute(SCHEMA.replace(" spans ", f" {self.ALIAS}.spans ", 1))
                conn.execute(f"CHECKPOINT {self.ALIAS}")  # the file alone holds the table

    def append(self, table: pa.Table, *, waited_on: bool = False) -> None:
        """Insert ``table`` (from :func:`spans_to_arrow`) into the file's ``spans`` table,
        and the spans other processes left in :func:`pending_dir` (if any). Once ``table``
        is in, nothing raises: a spilled file that cannot be added is logged and left.

        ``waited_on``: someone waits for this append (a flush, the exit); a large one then
        runs on two threads (see :data:`PARALLEL_ROWS`)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._attached() as conn:
            if waited_on and len(table) >= PARALLEL_ROWS:
                with _parallel(conn):
                    self._insert(conn, table)
            else:
                self._insert(conn, table)
            self._unmerged = True
            self._recover_safely(conn)

    def _insert(self, conn: duckdb.DuckDBPyConnection, table: pa.Table, where: str = "") -> None:
        import duckdb

        # DuckDB finds ``flock_batch`` among this frame's locals (a replacement scan, ~0.7 ms
        # cheaper than register/unregister); the table is created only when missing (a new
        # or deleted file), not checked on every append.
        flock_batch = table  # noqa: F841
        insert = f"INSERT INTO {self.ALIAS}.spans SELECT {INSERT_COLUMNS} FROM flock_batch b{where}"
        try:
            conn.execute(insert)
        except duckdb.CatalogException:
            conn.execute(SCHEMA.replace(" spans ", f" {self.ALIAS}.spans ", 1))
            conn.execute(insert)

    def spill(self, tables: Sequence[pa.Table]) -> Path:
        """Save encoded spans that cannot be written now (the file stays locked as the
        process exits) to a new file in :func:`pending_dir`, and return its path."""
        import time

        import pyarrow as pa

        table = pa.concat_tables(tables)
        for attempt in range(3):  # another process removes the directory once it is empty
            self._pending.mkdir(parents=True, exist_ok=True)
            target = self._pending / f"{os.getpid()}-{time.time_ns()}.arrow"
            partial = target.with_suffix(".partial")  # never read half-written
            try:
                with (
                    pa.OSFile(str(partial), "wb") as sink,
                    pa.ipc.new_file(sink, table.schema) as out,
                ):
                    out.write_table(table)
                os.replace(partial, target)
            except FileNotFoundError:
                if attempt == 2:
                    raise
                continue
            return target
        raise AssertionError("unreachable")  # pragma: no cover

    def _recover_safely(self, conn: duckdb.DuckDBPyConnection) -> None:
        """:meth:`_recover`, after the append's own batch is committed: whatever goes wrong
        there is logged, never raised, or the writer would append that batch again."""
        try:
            if self._pending.is_dir():
                with _optimizing(conn):  # its anti-join
                    self._recover(conn)
        except Exception as exc:  # the directory cannot be listed, say
            reason = describe(exc)
            if reason not in self._recover_errors:
                self._recover_errors.add(reason)
                _log().warning(
                    "flock: cannot add the spans left in %s (%s); trying again with the next "
                    "process that writes to %s",
                    self._pending,
                    reason,
                    self.path.name,
                )

    def _recover(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Insert the spilled spans of :func:`pending_dir` (each file once: a span already in
        the file, after a crash between an insert and its file's removal, is skipped). A
        file that fails is logged once and left alone by this appender, and the next files
        are still added: the next process that writes to the file tries it again."""
        from flock.tracing._encode import arrow_schema  # (it imports this module)

        for spilled in sorted(self._pending.glob("*.arrow")):
            if spilled.name in self._stuck:
                continue
            try:
                table = _read_spilled(spilled)
                if table.schema != arrow_schema():
                    raise ValueError("written by another version of flock")
            except Exception as exc:
                self._set_aside(spilled, exc)
                continue
            try:
                self._insert(
                    conn,
                    table,
                    f" WHERE NOT EXISTS (SELECT 1 FROM {self.ALIAS}.spans s"
                    " WHERE s.trace_id = b.trace_id AND s.span_id = printf('%016x', b.span_id))",
                )
            except Exception as exc:
                self._stuck.add(spilled.name)
                _log().warning(
                    "flock: cannot add the spans left in %s (%s: %s); leaving it for the next "
                    "process that writes to %s",
                    spilled,
                    type(exc).__name__,
                    exc,
                    self.path.name,
                )
                continue
            try:
                spilled.unlink()
            except OSError as exc:  # added, but cannot be removed (another user's file, say)
                self._stuck.add(spilled.name)  # not again here; added once anyway (above)
                _log().warning(
                    "flock: added the %d span(s) left in %s but cannot remove it (%s: %s); "
                    "remove it by hand (adding it again would skip its spans anyway)",
                    table.num_rows,
                    spilled,
                    type(exc).__name__,
                    exc,
                )
                continue
            _log().info("flock: added %d span(s) left by an earlier process", table.num_rows)
        with contextlib.suppress(OSError):
            self._pending.rmdir()  # only when empty

    def _set_aside(self, spilled: Path, exc: Exception) -> None:
        """Rename a spilled file that cannot be added to ``*.unreadable``, and say so."""
        target = spilled.with_suffix(".unreadable")
        why = describe(exc)
        try:
            spilled.rename(target)
        except OSError as error:
            self._stuck.add(spilled.name)
            _log().warning(
                "flock: cannot add the spans left in %s (%s), nor rename it to %s (%s: %s); "
                "leaving it",
                spilled,
                why,
                target.name,
                type(error).__name__,
                error,
            )
            return
        _log().warning(
            "flock: cannot add the spans left in %s (%s); renamed it to %s",
            spilled,
            why,
            target.name,
        )

    def prune(self, cutoff_ns: int) -> int:
        """Delete the traces that ended before ``cutoff_ns`` (ns since the epoch) from the
        file, if it exists, and return how many spans that deleted (for retention)."""
        import duckdb

        if not self.path.is_file():
            return 0
        with self._attached() as conn, _optimizing(conn):
            try:
                deleted = delete_older(conn, f"{self.ALIAS}.spans", cutoff_ns)
            except duckdb.CatalogException:  # no spans table yet: nothing to delete
                return 0
        self._unmerged = self._unmerged or deleted > 0
        return deleted

    @contextlib.contextmanager
    def _attached(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The in-memory instance with the file attached as :attr:`ALIAS`, detached after
        (every use of the file goes through here, so it is held only meanwhile)."""
        conn = self._conn if self._conn is not None else self._open()
        quoted = str(self.path).replace("'", "''")
        # (raises while another process holds it)
        conn.execute(f"ATTACH '{quoted}' AS {self.ALIAS} (ROW_GROUP_SIZE {ROW_GROUP_SIZE})")
        try:
            yield conn
        finally:
            try:
                conn.execute(f"DETACH {self.ALIAS}")
            except Exception:
                self._drop_instance()  # a fresh instance next time releases whatever is left
                raise

    def checkpoint(self) -> None:
        """Merge the write-ahead log into the file, so that the file alone holds every span
        (done when the writer shuts down; readers replay the log in the meantime)."""
        if not self._unmerged or self._conn is None:
            return
        with self._attached() as conn:
            conn.execute(f"CHECKPOINT {self.ALIAS}")
            self._unmerged = False

    def _open(self) -> duckdb.DuckDBPyConnection:
        import duckdb

        self._conn = duckdb.connect(
            ":memory:", config={"threads": 1, "memory_limit": WRITE_MEMORY_LIMIT}
        )
        # One core is enough for an append (leave the other to the app). Without a memory
        # limit DuckDB's transient memory while appending and checkpointing grows with the
        # file (~500 MB extra at 130 MB of spans); capped, it stays flat and as fast. Freed
        # memory goes back after each task instead of staying cached.
        self._conn.execute("SET allocator_flush_threshold = '16MB'")
        self._conn.execute("PRAGMA disable_checkpoint_on_shutdown")  # DETACH included
        self._conn.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
        # A plain INSERT ... SELECT from an Arrow batch has nothing to optimize, yet the
        # optimizer's passes took ~20 % of the small append at each traced_run exit
        # (measured). Statements that join or group turn it back on (:func:`_optimizing`).
        self._conn.execute("PRAGMA disable_optimizer")
        return self._conn

    def close(self) -> None:
        """Checkpoint (best effort: the log is durable and replayed by readers anyway), then
        release the in-memory instance."""
        try:
            self.checkpoint()
        finally:
            self._drop_instance()

    def _drop_instance(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()


@contextlib.contextmanager
def _parallel(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Two DuckDB threads (the writer's connection has one) for an append someone waits for,
    and rows stored in the order the threads finish them (queries sort; the file's order
    means nothing)."""
    conn.execute("SET threads = 2")
    conn.execute("SET preserve_insertion_order = false")
    try:
        yield
    finally:
        conn.execute("SET preserve_insertion_order = true")
        conn.execute("SET threads = 1")


@contextlib.contextmanager
def _optimizing(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """DuckDB's optimizer on meanwhile (the appender's instance runs without it)."""
    conn.execute("PRAGMA enable_optimizer")
    try:
        yield
    finally:
        conn.execute("PRAGMA disable_optimizer")


def _log() -> logging.Logger:
    import logging

    return logging.getLogger("flock.tracing")


def clear_traces(
    db_path: str | os.PathLike[str] = DEFAULT_DB_PATH,
    *,
    older_than: str | timedelta | None = None,
    lock_wait: float = 5.0,
) -> dict[str, Any]:
    """Delete every span in ``db_path`` and reclaim the space; with ``older_than`` (``"7d"``,
    ``"12h"``, an ISO time, or a ``timedelta``), only the spans of traces that ended before
    then (whole traces: a trace still going on, or ended later, keeps all its spans).

    Spans this process has finished but not yet written are written (and so cleared) first.
    While another process holds the file, it retries for up to ``lock_wait`` seconds.
    Returns ``{"success", "deleted_count", "error"}``; failures are reported, not raised.
    """
    if not isinstance(db_path, str | os.PathLike):
        return {
            "success": False,
            "deleted_count": 0,
            "error": f"db_path must be a path to a trace file, got {db_path!r}",
        }
    try:
        cutoff = None if older_than is None else _cutoff_ns(older_than)
    except ValueError as exc:
        return {"success": False, "deleted_count": 0, "error": f"older_than: {exc}"}
    path = Path(db_path)
    if not path.is_file():
        return {
            "success": False,
            "deleted_count": 0,
            "error": f"trace file not found: {str(path)!r} (nothing to clear)",
        }
    import time
    from contextlib import ExitStack

    from flock.tracing.processor import active_writers, is_lock_error

    writers = list(active_writers(path))
    for writer in writers:  # spans that ended before the call are cleared too
        writer.force_flush(10_000)
    deadline = time.monotonic() + lock_wait
    while True:
        try:
            with ExitStack() as paused:
                for writer in writers:
                    paused.enter_context(writer.pause())
                return _clear(path, cutoff)
        except Exception as exc:
            if is_lock_error(exc) and time.monotonic() < deadline:
                time.sleep(0.1)  # another process holds the file: wait briefly
                continue
            hint = (
                " (another process holds the file; try again when it is done)"
                if (is_lock_error(exc))
                else ""
            )
            return {
                "success": False,
                "deleted_count": 0,
                "error": f"{type(exc).__name__}: {exc}{hint}",
            }


def _cutoff_ns(older_than: str | timedelta) -> int:
    """``older_than`` as a time in ns since the epoch (``ValueError`` if it is none)."""
    import time
    from datetime import timedelta

    from flock.tracing._times import check_ns, parse_since

    if isinstance(older_than, timedelta):
        return check_ns(time.time_ns() - older_than // timedelta(microseconds=1) * 1000, older_than)
    if isinstance(older_than, str):
        return parse_since(older_than)
    raise ValueError(
        f"expected a duration like '7d', an ISO time or a timedelta, got {older_than!r}"
    )


def _clear(path: Path, cutoff_ns: int | None) -> dict[str, Any]:
    """Delete every span (and those still pending), or with ``cutoff_ns`` the traces that
    ended before it."""
    import duckdb

    conn = duckdb.connect(str(path))
    try:
        try:
            check_schema(conn)  # never delete from a table that other software made
        except ValueError as exc:
            return {
                "success": False,
                "deleted_count": 0,
                "error": f"{str(path)!r} is not a flock trace file ({exc}); nothing was deleted",
            }
        if cutoff_ns is None:
            row = conn.execute("SELECT count(*) FROM spans").fetchone()
            # Recreating the table frees its blocks; CHECKPOINT truncates the file.
            conn.execute("DROP TABLE spans")
            conn.execute(SCHEMA)
            deleted = int(row[0]) if row else 0
        else:
            # The space of the deleted rows is reused by later spans (DuckDB reclaims a row
            # group once all its rows are deleted); the file does not shrink.
            deleted = delete_older(conn, "spans", cutoff_ns)
        conn.execute("CHECKPOINT")
    finally:
        conn.close()
    if cutoff_ns is None:
        deleted += _clear_pending(path)
    return {"success": True, "deleted_count": deleted, "error": None}


ROOTLESS_GRACE_NS = 3600 * 10**9
"""A trace whose root span is not in the file is still running (the root ends last) or was
cut off by a crash: retention and ``clear_traces(older_than=)`` keep it until its last span
is this old too (1 hour), whatever the cutoff."""


def delete_older(conn: duckdb.DuckDBPyConnection, table: str, cutoff_ns: int) -> int:
    """Delete every span of ``table`` whose trace ended before ``cutoff_ns`` and return how
    many: whole traces only, so a trace ended later keeps all its spans, and a trace still
    running (no root span yet) is kept (see :data:`ROOTLESS_GRACE_NS`)."""
    import time

    rootless_cutoff = min(cutoff_ns, time.time_ns() - ROOTLESS_GRACE_NS)
    row = conn.execute(
        f"DELETE FROM {table} WHERE trace_id IN (SELECT trace_id FROM {table} "
        "GROUP BY trace_id HAVING max(end_time) < ? "
        "AND (bool_or(parent_id IS NULL) OR max(end_time) < ?))",
        [cutoff_ns, rootless_cutoff],
    ).fetchone()
    return int(row[0]) if row else 0


def _read_spilled(spilled: Path) -> pa.Table:
    """The spans saved in one file of :func:`pending_dir` (see :meth:`Appender.spill`)."""
    import pyarrow as pa

    with pa.memory_map(str(spilled)) as source:
        return pa.ipc.open_file(source).read_all()


def _clear_pending(path: Path) -> int:
    """Delete the spans waiting in :func:`pending_dir` to be added to ``path`` (they would
    come back at the next write) and return how many there were."""
    deleted = 0
    for spilled in pending_dir(path).glob("*.arrow"):
        with contextlib.suppress(Exception):  # an unreadable one is not counted
            deleted += _read_spilled(spilled).num_rows
        spilled.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        pending_dir(path).rmdir()
    return deleted
