"""Reading the trace file: the one implementation of "list traces", "span tree" and
"statistics" shared by the CLI and the dashboard.

Reads open the file read-only for the duration of one query (pausing this process's own
writer meanwhile), so they never keep other processes out.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from flock.exceptions import TracingError
from flock.tracing._times import check_ns, parse_since
from flock.tracing.store import COLUMNS, DEFAULT_DB_PATH, macros_message, spans_catalog

if TYPE_CHECKING:
    import duckdb

__all__ = [
    "CorrelationSummary",
    "SpanDetail",
    "SpanNode",
    "SpanStats",
    "StatsBy",
    "StatsPoint",
    "Timeline",
    "TimelineSpan",
    "TraceNotFoundError",
    "TracePage",
    "TraceStore",
    "TraceSummary",
    "check_ns",
    "parse_since",
]

READ_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    # A trace file may come from anyone (``flock dashboard --db FILE``): SQL on a read
    # connection must not reach other files or the network — not through a ``spans`` view
    # over ``read_text('/etc/passwd')``, not through an extension loaded or installed on the
    # way — and cannot turn that back on (``SET`` is refused once the configuration is locked).
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "lock_configuration": True,
}
"""The DuckDB configuration of :meth:`TraceStore.connect`'s read-only connections."""
QUERY_TIMEOUT = 30.0
"""Seconds :meth:`TraceStore.connect`'s connection may run its queries before they are
interrupted (the dashboard's stay well under a second on a million spans)."""


@dataclass(frozen=True, slots=True)
class TraceSummary:
    trace_id: str
    name: str
    span_count: int
    start_time: int
    duration_ms: float
    errors: int
    end_time: int = 0
    in_progress: bool = False
    """No root span yet: the trace is still running (its root span ends last)."""


@dataclass(frozen=True, slots=True)
class TracePage:
    """One page of :meth:`TraceStore.search_traces` and how many traces match in all."""

    items: list[TraceSummary]
    total: int


@dataclass(frozen=True, slots=True)
class TimelineSpan:
    """One row of a trace's waterfall, in depth-first order (no attributes: see ``span``)."""

    span_id: str
    parent_id: str | None
    name: str
    start_time: int
    end_time: int
    duration_ms: float
    status_code: str
    depth: int
    children: int
    critical: bool


@dataclass(frozen=True, slots=True)
class Timeline:
    """A page of the waterfall of one trace; ``span_count`` counts the whole trace."""

    trace_id: str
    name: str
    start_time: int
    end_time: int
    span_count: int
    errors: int
    offset: int
    spans: list[TimelineSpan]


@dataclass(frozen=True, slots=True)
class SpanDetail:
    """Everything stored about one span, JSON columns decoded."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    service: str | None
    kind: str | None
    start_time: int
    end_time: int
    duration_ms: float
    status_code: str
    status_description: str | None
    attributes: dict[str, Any]
    events: list[Any]
    links: list[Any]
    resource: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CorrelationSummary:
    """The agent runs (``Agent.execute`` spans) that share one ``flock.correlation_id``."""

    correlation_id: str
    runs: int
    errors: int
    agents: list[str]
    trace_ids: list[str]
    start_time: int
    end_time: int


class TraceNotFoundError(TracingError, LookupError):
    """No trace (or span) with the requested id in the trace file."""


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


ILIKE = "ILIKE ? ESCAPE '\\'"
"""A case-insensitive LIKE against a parameter made by :func:`contains_pattern` or
:func:`prefix_pattern` (``\\`` escapes ``%``, ``_`` and itself)."""


def like_escape(text: str) -> str:
    """``text`` with LIKE's wildcards escaped: it matches only itself (see :data:`ILIKE`)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def contains_pattern(text: str) -> str:
    """The :data:`ILIKE` pattern of "contains ``text``" (``%`` in it is no wildcard)."""
    return f"%{like_escape(text)}%"


def prefix_pattern(text: str) -> str:
    """The :data:`ILIKE` pattern of "starts with ``text``"."""
    return f"{like_escape(text)}%"


TRACE_NAME = (
    "coalesce(arg_min(name, start_time) FILTER (WHERE parent_id IS NULL), "
    "arg_min(name, start_time))"
)
"""SQL (over one trace's spans) for a trace's name: its root span's, or while it runs (the
root span ends last) its earliest span's. The trace list and the stats name traces alike."""

StatsBy = Literal["workflow", "span"]
"""What :meth:`TraceStore.stats` groups by: ``"workflow"`` — whole traces, named after their
root span (a ``traced_run`` name, or e.g. ``Flock.publish`` outside one), timed from their first
span's start to their last span's end, failed when any span failed; ``"span"`` — single spans
by span name (``Agent.execute``, ``DSPyEngine.evaluate``, …)."""


@dataclass(frozen=True, slots=True)
class StatsPoint:
    """One time bucket of a :class:`SpanStats` series (for a chart)."""

    start_time: int
    """Start of the bucket, ns since the epoch (a multiple of the bucket width)."""
    count: int
    errors: int
    p50_ms: float
    p95_ms: float


@dataclass(frozen=True, slots=True)
class SpanStats:
    """Duration and error statistics of one workflow or span name."""

    name: str
    count: int
    errors: int
    error_rate: float
    """``errors / count``, from 0.0 to 1.0."""
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    total_ms: float
    last_start_time: int
    """Start of the newest run, ns since the epoch."""
    series: tuple[StatsPoint, ...] = ()
    """Oldest bucket first; only non-empty buckets; empty unless ``bucket_ns`` was given."""


class TraceStore:
    """Queries over a trace file."""

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_DB_PATH,
        *,
        lock_wait: float = 5.0,
        query_timeout: float | None = QUERY_TIMEOUT,
    ) -> None:
        self.path = Path(path)
        self.lock_wait = lock_wait
        self.query_timeout = query_timeout

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection; waits up to ``lock_wait`` s while another process writes.

        The connection can read nothing but the trace file (see :data:`READ_CONFIG`), and
        the file must be a flock trace file (a ``spans`` table with flock's columns).

        Raises:
            TracingError: no file, another process holds it too long, it is not a flock
                trace file, or a query on it fails (with DuckDB's message).
        """
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
                    conn = duckdb.connect(str(self.path), read_only=True, config=READ_CONFIG)
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
                    timer = None
                    if self.query_timeout is not None:
                        timer = threading.Timer(self.query_timeout, conn.interrupt)
                        timer.daemon = True
                        timer.start()
                    try:
                        self._check_schema(conn)
                        yield conn
                    except duckdb.Error as exc:
                        if timer is not None and timer.finished.is_set():
                            raise TracingError(
                                f"reading {str(self.path)!r} took longer than "
                                f"{self.query_timeout:g} s and was stopped"
                            ) from exc
                        raise TracingError(f"cannot read {str(self.path)!r}: {exc}") from exc
                    finally:
                        if timer is not None:
                            timer.cancel()
                        conn.close()
                    return
            time.sleep(0.1)

    def _check_schema(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Raise :class:`TracingError` unless ``spans`` is a table with flock's columns, of
        flock's types and constraints (a view, which could run any SQL, a table in another
        schema, or rows the queries cannot read are refused), and the file defines no SQL
        functions of its own. Columns flock does not know are allowed."""
        import duckdb

        where = f"{str(self.path)!r} is not a flock trace file"
        try:
            catalog = spans_catalog(conn)
        except duckdb.Error as exc:  # (DuckDB < 2 lets a file's macro shadow its catalog's)
            raise TracingError(f"{where}: its catalog cannot be read ({exc})") from exc
        if catalog.view or not catalog.columns:
            raise TracingError(
                f"{where}: its 'spans' is a view, not a table"
                if catalog.view
                else f"{where}: it has no 'spans' table"
            )
        found = {name: (sql_type, not_null) for name, sql_type, not_null in catalog.columns}
        missing = [name for name, _ in COLUMNS if name not in found]
        if missing:
            raise TracingError(
                f"{where} (or one from an incompatible flock version): its 'spans' table "
                f"lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
            )
        wrong = [
            f"{name} {found[name][0]}{' NOT NULL' if found[name][1] else ''} (flock's: {sql})"
            for name, sql in COLUMNS
            if found[name][0] != sql.split()[0] or ("NOT NULL" in sql and not found[name][1])
        ]
        if wrong:
            raise TracingError(
                f"{where} (or one from an incompatible flock version): its 'spans' table has "
                f"the column{'s' if len(wrong) > 1 else ''} {', '.join(wrong)}"
            )
        if catalog.macros:
            raise TracingError(f"{where}: {macros_message(catalog.macros)}")

    def list_traces(
        self,
        *,
        limit: int = 20,
        offset: int = 0,
        name: str | None = None,
        errors_only: bool = False,
        since_ns: int | None = None,
    ) -> list[TraceSummary]:
        """Traces newest first, named after their root span (see :meth:`search_traces`)."""
        return self.search_traces(
            limit=limit, offset=offset, name=name, errors_only=errors_only, since_ns=since_ns
        ).items

    def latest_trace_id(self) -> str | None:
        traces = self.list_traces(limit=1)
        return traces[0].trace_id if traces else None

    def tree(self, trace_id: str) -> list[SpanNode]:
        """The spans of one trace as trees (roots and children in start order).

        Roots are the spans without a parent, with a parent not in the trace, or that are
        their own parent; a parent cycle (corrupt data) is cut at its earliest span, which
        becomes a root. Every span is in exactly one tree, once."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT span_id, parent_id, name, start_time, duration_ms, status_code, attributes "
                "FROM spans WHERE trace_id = ? ORDER BY start_time",
                [trace_id],
            ).fetchall()
        if not rows:
            raise TracingError(f"no trace {trace_id!r} in {str(self.path)!r}")
        from flock.tracing._waterfall import forest

        nodes = {
            r[0]: SpanNode(r[0], r[1], r[2], r[3], r[4], r[5], _decoded(r[6], dict)) for r in rows
        }
        # The timeline's rule: a span whose parent is missing, or is itself, is a root, and
        # a parent cycle (corrupt data) is cut at its earliest span — every span is shown once.
        roots, children = forest(
            [(n.span_id, n.parent_id, n.start_time, 0, n) for n in nodes.values()]
        )
        for parent_id, kids in children.items():
            nodes[parent_id].children = [kid[4] for kid in kids]
        return [root[4] for root in roots]

    def search_traces(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        name: str | None = None,
        workflow: str | None = None,
        errors_only: bool = False,
        min_duration_ms: float | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        text: str | None = None,
        trace_ids: list[str] | None = None,
    ) -> TracePage:
        """A page of traces, newest first, and the number of traces that match in all.

        Args:
            name: the root span's name contains this (case-insensitive).
            workflow: the root span's name is exactly this (a ``traced_run`` name).
            errors_only: only traces with at least one ERROR span.
            min_duration_ms: only traces that took at least this long.
            since_ns, until_ns: only traces starting in ``[since_ns, until_ns)``.
            text: free text: a trace id prefix, or contained in any span's name, status
                message or attributes (slower: it reads every span's attributes).
            trace_ids: only these traces.

        Example:
            >>> store = TraceStore(".flock/traces.duckdb")
            >>> page = store.search_traces(workflow="pizza_workflow", errors_only=True)  # doctest: +SKIP
            >>> [t.name for t in page.items], page.total  # doctest: +SKIP
            (['pizza_workflow'], 1)
        """
        having = ["TRUE"]
        params: list[Any] = []
        text_column = ""
        if text:
            # The trace id prefix is matched after grouping; span contents while grouping.
            text_column = (
                f", bool_or(name {ILIKE} OR status_description {ILIKE} "
                f"OR CAST(attributes AS VARCHAR) {ILIKE}) AS text_hit"
            )
            params += [contains_pattern(text)] * 3
        prefilter = ""
        if trace_ids is not None:
            prefilter = "WHERE list_contains(?, trace_id)"
            params.append(trace_ids)
        if name is not None:
            having.append(f"name {ILIKE}")
            params.append(contains_pattern(name))
        if workflow is not None:
            having.append("name = ?")
            params.append(workflow)
        if errors_only:
            having.append("errors > 0")
        if min_duration_ms is not None:
            having.append("duration_ms >= ?")
            params.append(min_duration_ms)
        if since_ns is not None:
            having.append("start_time >= ?")
            params.append(since_ns)
        if until_ns is not None:
            having.append("start_time < ?")
            params.append(until_ns)
        if text:
            having.append(f"(text_hit OR trace_id {ILIKE})")
            params.append(prefix_pattern(text.strip()))
        sql = f"""
            SELECT trace_id, name, span_count, start_time, duration_ms, errors, end_time,
                   in_progress, count(*) OVER () AS total
            FROM (
                SELECT trace_id,
                       {TRACE_NAME} AS name,
                       count(*) AS span_count,
                       min(start_time) AS start_time,
                       (max(end_time) - min(start_time)) / 1e6 AS duration_ms,
                       count(*) FILTER (WHERE status_code = 'ERROR') AS errors,
                       max(end_time) AS end_time,
                       count(*) FILTER (WHERE parent_id IS NULL) = 0 AS in_progress
                       {text_column}
                FROM spans {prefilter} GROUP BY trace_id
            )
            WHERE {" AND ".join(having)}
            ORDER BY start_time DESC, trace_id
            LIMIT ? OFFSET ?
        """
        with self.connect() as conn:
            rows = conn.execute(sql, [*params, limit, offset]).fetchall()
            if rows:
                total = int(rows[0][-1])
            elif offset > 0:  # past the end: count what matches
                count_sql = sql.split("ORDER BY")[0].replace(
                    "count(*) OVER () AS total", "NULL AS total", 1
                )
                row = conn.execute(f"SELECT count(*) FROM ({count_sql})", params).fetchone()
                total = int(row[0]) if row else 0
            else:
                total = 0
        return TracePage(items=[TraceSummary(*row[:-1]) for row in rows], total=total)

    def trace_names(self, *, limit: int = 200) -> list[tuple[str, int]]:
        """Root span names (workflow names) with how many traces have each, most first."""
        with self.connect() as conn:
            rows = conn.execute(
                "SELECT name, count(*) FROM spans WHERE parent_id IS NULL "
                "GROUP BY name ORDER BY count(*) DESC, name LIMIT ?",
                [limit],
            ).fetchall()
        return [(str(r[0]), int(r[1])) for r in rows]

    def time_range(self) -> tuple[int | None, int | None]:
        """``(earliest start, latest end)`` of all spans in ns, ``(None, None)`` if empty."""
        with self.connect() as conn:
            row = conn.execute("SELECT min(start_time), max(end_time) FROM spans").fetchone()
        return (row[0], row[1]) if row else (None, None)

    def version(self) -> tuple[int, int]:
        """``(span count, highest row id)``: changes whenever spans are added or cleared.

        Cheap (table metadata), for polling by live views.
        """
        with self.connect() as conn:
            row = conn.execute("SELECT count(*), coalesce(max(rowid), -1) FROM spans").fetchone()
        return (int(row[0]), int(row[1])) if row else (0, -1)

    def timeline(self, trace_id: str, *, limit: int = 10_000, offset: int = 0) -> Timeline:
        """A page of one trace's waterfall: spans in depth-first order (siblings by start)
        with their depth and whether they are on the critical path.

        Raises:
            TraceNotFoundError: no span has this trace id.
        """
        from flock.tracing._waterfall import critical_path, tree_order

        with self.connect() as conn:
            rows = conn.execute(
                "SELECT span_id, parent_id, start_time, end_time, name, duration_ms, status_code "
                "FROM spans WHERE trace_id = ?",
                [trace_id],
            ).fetchall()
        if not rows:
            raise TraceNotFoundError(f"no trace {trace_id!r} in {str(self.path)!r}")
        ordered = tree_order(rows)
        critical = critical_path(rows)
        true_roots = [r for r in rows if r[1] is None]
        name = min(true_roots or rows, key=lambda r: r[2])[4]
        return Timeline(
            trace_id=trace_id,
            name=name,
            start_time=min(r[2] for r in rows),
            end_time=max(r[3] for r in rows),
            span_count=len(rows),
            errors=sum(1 for r in rows if r[6] == "ERROR"),
            offset=offset,
            spans=[
                TimelineSpan(
                    span_id=r[0],
                    parent_id=r[1],
                    name=r[4],
                    start_time=r[2],
                    end_time=r[3],
                    duration_ms=r[5],
                    status_code=r[6],
                    depth=depth,
                    children=children,
                    critical=r[0] in critical,
                )
                for r, depth, children in ordered[offset : offset + limit]
            ],
        )

    def span(self, trace_id: str, span_id: str) -> SpanDetail:
        """One span with its attributes, events (exceptions with stack traces) and links.

        Raises:
            TraceNotFoundError: no such span in that trace.
        """
        with self.connect() as conn:
            row = conn.execute(
                "SELECT trace_id, span_id, parent_id, name, service, kind, start_time, end_time, "
                "duration_ms, status_code, status_description, attributes, events, links, "
                "resource FROM spans WHERE trace_id = ? AND span_id = ? LIMIT 1",
                [trace_id, span_id],
            ).fetchone()
        if row is None:
            raise TraceNotFoundError(f"no span {span_id!r} in trace {trace_id!r}")
        return SpanDetail(
            trace_id=row[0],
            span_id=row[1],
            parent_id=row[2],
            name=row[3],
            service=row[4],
            kind=row[5],
            start_time=row[6],
            end_time=row[7],
            duration_ms=row[8],
            status_code=row[9],
            status_description=row[10],
            attributes=_decoded(row[11], dict),
            events=_decoded(row[12], list),
            links=_decoded(row[13], list),
            resource=_decoded(row[14], dict),
        )

    def correlations(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        correlation_id: str | None = None,
        trace_id: str | None = None,
    ) -> tuple[list[CorrelationSummary], int]:
        """Agent runs grouped by ``flock.correlation_id`` (newest first) and the group count
        (of every matching group, whatever the page).

        ``correlation_id`` keeps ids starting with it (case-insensitive; ``%`` and ``_`` are
        no wildcards); ``trace_id`` keeps the groups with a run in that trace.
        """
        where = "cid IS NOT NULL"
        params: list[Any] = []
        if correlation_id:
            where += f" AND cid {ILIKE}"
            params.append(prefix_pattern(correlation_id))
        having = "TRUE"
        if trace_id:
            having = "list_contains(list(DISTINCT trace_id), ?)"
            params.append(trace_id)
        groups = _CORRELATION_GROUPS.format(where=where, having=having)
        with self.connect() as conn:
            rows = conn.execute(
                f"SELECT *, count(*) OVER () FROM ({groups}) "
                "ORDER BY start_time DESC, cid LIMIT ? OFFSET ?",
                [*params, limit, offset],
            ).fetchall()
            if rows:
                total = int(rows[0][-1])
            elif offset > 0:  # past the end: count what matches
                row = conn.execute(f"SELECT count(*) FROM ({groups})", params).fetchone()
                total = int(row[0]) if row else 0
            else:
                total = 0
        return [_correlation(r) for r in rows], total

    def correlation(self, correlation_id: str) -> CorrelationSummary | None:
        """The agent runs with exactly this ``flock.correlation_id``, or ``None``."""
        groups = _CORRELATION_GROUPS.format(where="cid = ?", having="TRUE")
        with self.connect() as conn:
            row = conn.execute(groups, [correlation_id]).fetchone()
        return _correlation(row) if row is not None else None

    def stats(
        self,
        *,
        by: StatsBy = "workflow",
        name: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        limit: int | None = None,
        bucket_ns: int | None = None,
    ) -> list[SpanStats]:
        """Count, p50/p95/p99 duration and error rate per workflow or per span name.

        Args:
            by: ``"workflow"`` (whole traces by root-span name) or ``"span"`` (spans by name);
                see :data:`StatsBy`.
            name: only names containing this (case-insensitive).
            since_ns, until_ns: only runs starting in ``[since_ns, until_ns)`` (ns since the
                epoch; see :func:`parse_since`).
            limit: at most this many rows.
            bucket_ns: also compute a time series per row with buckets this wide (ns).

        Rows are ordered by total time spent, largest first.
        """
        if by not in ("workflow", "span"):
            raise ValueError(f"by must be 'workflow' or 'span', not {by!r}")
        if bucket_ns is not None and bucket_ns <= 0:
            raise ValueError("bucket_ns must be positive")
        if by == "span":
            source = (
                "SELECT name, start_time, duration_ms, status_code = 'ERROR' AS failed FROM spans"
            )
        else:
            source = f"""
                SELECT {TRACE_NAME} AS name,
                       min(start_time) AS start_time,
                       (max(end_time) - min(start_time)) / 1e6 AS duration_ms,
                       bool_or(status_code = 'ERROR') AS failed
                FROM spans GROUP BY trace_id
            """
        where = ["TRUE"]
        params: list[Any] = []
        if name is not None:
            where.append(f"name {ILIKE}")
            params.append(contains_pattern(name))
        if since_ns is not None:
            where.append("start_time >= ?")
            params.append(since_ns)
        if until_ns is not None:
            where.append("start_time < ?")
            params.append(until_ns)
        runs = f"WITH runs AS (SELECT * FROM ({source}) WHERE {' AND '.join(where)})"
        sql = f"""
            {runs}
            SELECT name, count(*), count(*) FILTER (WHERE failed), avg(duration_ms),
                   quantile_cont(duration_ms, [0.5, 0.95, 0.99]), max(duration_ms),
                   sum(duration_ms), max(start_time)
            FROM runs GROUP BY name ORDER BY sum(duration_ms) DESC, name
            {"LIMIT ?" if limit is not None else ""}
        """
        with self.connect() as conn:
            rows = conn.execute(sql, [*params, *([limit] if limit is not None else [])]).fetchall()
            points: dict[str, list[StatsPoint]] = {}
            if bucket_ns is not None and rows:
                names = [r[0] for r in rows]
                for row in conn.execute(
                    f"""
                    {runs}
                    SELECT name, start_time // ? * ? AS bucket, count(*),
                           count(*) FILTER (WHERE failed),
                           quantile_cont(duration_ms, [0.5, 0.95])
                    FROM runs WHERE list_contains(?, name)
                    GROUP BY name, bucket ORDER BY name, bucket
                    """,
                    [*params, bucket_ns, bucket_ns, names],
                ).fetchall():
                    points.setdefault(row[0], []).append(
                        StatsPoint(int(row[1]), int(row[2]), int(row[3]), *row[4])
                    )
        return [
            SpanStats(
                name=r[0],
                count=int(r[1]),
                errors=int(r[2]),
                error_rate=r[2] / r[1],
                mean_ms=float(r[3]),
                p50_ms=float(r[4][0]),
                p95_ms=float(r[4][1]),
                p99_ms=float(r[4][2]),
                max_ms=float(r[5]),
                total_ms=float(r[6]),
                last_start_time=int(r[7]),
                series=tuple(points.get(r[0], ())),
            )
            for r in rows
        ]


_CORRELATION_GROUPS = """
    SELECT cid, count(*) AS runs, count(*) FILTER (WHERE status_code = 'ERROR') AS errors,
           list(DISTINCT agent ORDER BY agent) FILTER (WHERE agent IS NOT NULL) AS agents,
           list(DISTINCT trace_id ORDER BY trace_id)[1:100] AS trace_ids,
           min(start_time) AS start_time, max(end_time) AS end_time
    FROM (
        SELECT json_extract_string(attributes, '$.flock.correlation_id') AS cid,
               json_extract_string(attributes, '$.flock.agent.name') AS agent,
               trace_id, status_code, start_time, end_time
        FROM spans WHERE name = 'Agent.execute'
    )
    WHERE {where}
    GROUP BY cid HAVING {having}
"""
"""SQL of the correlation groups (``Agent.execute`` spans by correlation id), one row per
group: what :func:`_correlation` reads."""


def _correlation(r: tuple[Any, ...]) -> CorrelationSummary:
    return CorrelationSummary(
        correlation_id=r[0],
        runs=int(r[1]),
        errors=int(r[2]),
        agents=list(r[3] or []),
        trace_ids=list(r[4] or []),
        start_time=int(r[5]),
        end_time=int(r[6]),
    )


def _decoded(text: str | None, kind: type[dict[str, Any]] | type[list[Any]]) -> Any:
    """A JSON column's value as the ``kind`` flock writes there; in a file from elsewhere,
    other JSON is shown wrapped (``{"(not an object)": 1}``, ``[1]``), not a failure."""
    value = json.loads(text) if text else None
    if value is None or isinstance(value, kind):
        return kind() if value is None else value
    return {"(not an object)": value} if kind is dict else [value]
