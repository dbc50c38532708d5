"""Reading the trace file: the one implementation of "list traces", "span tree" and
"statistics" shared by the CLI and the dashboard.

Reads open the file read-only for the duration of one query (pausing this process's own
writer meanwhile), so they never keep other processes out.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flock.exceptions import TracingError
from flock.tracing.store import DEFAULT_DB_PATH

if TYPE_CHECKING:
    import duckdb

__all__ = ["SpanNode", "TraceStore", "TraceSummary"]


@dataclass(frozen=True, slots=True)
class TraceSummary:
    trace_id: str
    name: str
    span_count: int
    start_time: int
    duration_ms: float
    errors: int


@dataclass(slots=True)
class SpanNode:
    span_id: str
    parent_id: str | None
    name: str
    start_time: int
    duration_ms: float
    status_code: str
    attributes: dict[str, Any]
    children: list[SpanNode] = field(default_factory=list)


class TraceStore:
    """Queries over a trace file."""

    def __init__(
        self, path: str | os.PathLike[str] = DEFAULT_DB_PATH, *, lock_wait: float = 5.0
    ) -> None:
        self.path = Path(path)
        self.lock_wait = lock_wait

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection; waits up to ``lock_wait`` s while another process writes."""
        import duckdb

        from flock.tracing.processor import active_writers, is_lock_error

        if not self.path.is_file():
            raise TracingError(f"no trace file at {str(self.path)!r}; run a traced workflow first")
        deadline = time.monotonic() + self.lock_wait
        while True:
            with ExitStack() as paused:
                for writer in active_writers(self.path):
                    paused.enter_context(writer.pause())
                try:
                    conn = duckdb.connect(str(self.path), read_only=True)
                except duckdb.Error as exc:
                    if is_lock_error(exc) and time.monotonic() < deadline:
                        conn = None
                    elif is_lock_error(exc):
                        raise TracingError(
                            f"{str(self.path)!r} is held by another process (it is writing "
                            f"traces); tried for {self.lock_wait:.0f} s — try again shortly"
                        ) from exc
                    else:
                        raise TracingError(f"cannot read {str(self.path)!r}: {exc}") from exc
                if conn is not None:
                    try:
                        yield conn
                    finally:
                        conn.close()
                    return
            time.sleep(0.1)

    def list_traces(
        self,
        *,
        limit: int = 20,
        offset: int = 0,
        name: str | None = None,
        errors_only: bool = False,
        since_ns: int | None = None,
    ) -> list[TraceSummary]:
        """Traces newest first, named after their root span."""
        where = ["TRUE"]
        params: list[Any] = []
        if since_ns is not None:
            where.append("start_time >= ?")
            params.append(since_ns)
        if name is not None:
            where.append("name ILIKE ?")
            params.append(f"%{name}%")
        if errors_only:
            where.append("errors > 0")
        sql = f"""
            SELECT * FROM (
                SELECT trace_id,
                       coalesce(arg_min(name, start_time) FILTER (WHERE parent_id IS NULL), '?')
                           AS name,
                       count(*) AS span_count,
                       min(start_time) AS start_time,
                       (max(end_time) - min(start_time)) / 1e6 AS duration_ms,
                       count(*) FILTER (WHERE status_code = 'ERROR') AS errors
                FROM spans GROUP BY trace_id
            )
            WHERE {" AND ".join(where)}
            ORDER BY start_time DESC
            LIMIT ? OFFSET ?
        """
        with self.connect() as conn:
            rows = conn.execute(sql, [*params, limit, offset]).fetchall()
        return [TraceSummary(*row) for row in rows]

    def latest_trace_id(self) -> str | None:
        traces = self.list_traces(limit=1)
        return traces[0].trace_id if traces else None

    def tree(self, trace_id: str) -> list[SpanNode]:
        """The spans of one trace as trees (roots in start order)."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT span_id, parent_id, name, start_time, duration_ms, status_code, attributes "
                "FROM spans WHERE trace_id = ? ORDER BY start_time",
                [trace_id],
            ).fetchall()
        if not rows:
            raise TracingError(f"no trace {trace_id!r} in {str(self.path)!r}")
        nodes = {
            r[0]: SpanNode(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]) if r[6] else {})
            for r in rows
        }
        roots: list[SpanNode] = []
        for node in nodes.values():
            parent = nodes.get(node.parent_id) if node.parent_id else None
            (parent.children if parent is not None else roots).append(node)
        return roots
