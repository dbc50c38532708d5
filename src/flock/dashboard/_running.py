"""Traces still running: named after their workflow, and flagged stale when they stopped.

A ``traced_run`` span is written when it ends, so while a workflow runs its trace holds only
the finished spans inside it, with no root: the trace file's own naming would call it after
its earliest span (``Flock.publish``). Every span inside a workflow carries the outermost
workflow's name as ``workflow.name``; the dashboard names running traces by that, counts
them under it in the workflow list and matches them with the workflow filter.

A trace whose writer died (killed, power loss) never gets its root span: it would show as
running forever. One with no span ending for :data:`STALE_AFTER_NS` is reported ``stale``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flock.tracing.query import TracePage, TraceStore, TraceSummary

__all__ = ["STALE_AFTER_NS", "Running", "is_stale", "merge_running", "running_traces"]

STALE_AFTER_NS = 10 * 60 * 1_000_000_000
"""A running trace with no span ending for 10 minutes is flagged stale (probably abandoned).

Spans are written as they end, and a live workflow ends spans all the time (every agent run,
engine call, publish); only one step running longer than this without any traced sub-step —
a very slow model call — would be flagged wrongly, and the flag goes away with its next span.
"""

_WORKFLOW = "json_extract_string(attributes, '$.workflow.name')"


@dataclass(frozen=True, slots=True)
class Running:
    """A trace without a root span yet."""

    trace_id: str
    workflow: str | None
    """The outermost workflow's name (``workflow.name`` on its spans), if in one."""
    first_name: str
    """Its earliest span's name (what the trace file calls it for now)."""
    last_end: int
    """When its latest span ended (ns since the epoch)."""


def is_stale(last_end: int, now_ns: int | None = None) -> bool:
    return (time.time_ns() if now_ns is None else now_ns) - last_end > STALE_AFTER_NS


_ALL: dict[Path, tuple[tuple[int, ...], list[Running]]] = {}
"""Per trace file: its version (see :func:`_version`) and all its running traces then."""


def _version(path: Path) -> tuple[int, ...]:
    """Changes whenever spans are written (to the file, or to its write-ahead log).

    Not :meth:`TraceStore.version`: that opens the file (schema check, a count), which made
    the cached requests ~15-20 ms slower at 1,000,000 spans (measured); two ``stat`` calls
    cost microseconds.
    """
    version: list[int] = []
    for file in (path, path.with_name(path.name + ".wal")):
        try:
            st = file.stat()
        except OSError:
            version += [0, 0]
        else:
            version += [st.st_mtime_ns, st.st_size]
    return tuple(version)


def running_traces(
    store: TraceStore, *, trace_ids: list[str] | None = None, workflow: str | None = None
) -> list[Running]:
    """The running traces (of ``trace_ids``, or all), with their workflow names.

    The workflow is read from the spans that are not a workflow span themselves (a nested
    ``traced_run`` span carries its own name), else from the earliest one. All of them (for
    the workflow menu and filter, asked again whenever spans arrive) are kept until the file
    changes: finding them scans the whole table (~60 ms at 1,000,000 spans).
    """
    if trace_ids is not None:
        return _query(store, trace_ids)
    version = _version(store.path)
    cached = _ALL.get(store.path)
    if cached is None or cached[0] != version:
        cached = _ALL[store.path] = (version, _query(store, None))
    return [r for r in cached[1] if workflow is None or r.workflow == workflow]


def _query(store: TraceStore, trace_ids: list[str] | None) -> list[Running]:
    where = "WHERE list_contains(?, trace_id)" if trace_ids is not None else ""
    params: list[Any] = [trace_ids] if trace_ids is not None else []
    # The rootless traces first, without touching the attributes (a scan of two columns);
    # then the workflow names from those traces' spans only: extracting JSON from every span
    # of a 1,000,000-span file cost ~200 ms a request (measured).
    sql = f"""
        WITH rootless AS (
            SELECT trace_id FROM spans {where}
            GROUP BY trace_id HAVING count(*) FILTER (WHERE parent_id IS NULL) = 0
        )
        SELECT * FROM (
            SELECT trace_id,
                   coalesce(arg_min(wf, start_time) FILTER (WHERE wf IS NOT NULL AND wf <> name),
                            arg_min(wf, start_time) FILTER (WHERE wf IS NOT NULL)) AS workflow,
                   arg_min(name, start_time) AS first_name,
                   max(end_time) AS last_end
            FROM (SELECT trace_id, name, start_time, end_time, {_WORKFLOW} AS wf
                  FROM spans WHERE trace_id IN (SELECT trace_id FROM rootless))
            GROUP BY trace_id
        )
    """
    with store.connect() as conn:
        rows = conn.execute(sql, params).fetchall()
    return [Running(str(r[0]), r[1], str(r[2]), int(r[3])) for r in rows]


def _newer(a: TraceSummary, b: TraceSummary) -> bool:
    """``a`` comes before ``b`` in the list (newest first, then by id)."""
    return (a.start_time, b.trace_id) > (b.start_time, a.trace_id)


def merge_running(
    store: TraceStore,
    *,
    workflow: str,
    limit: int,
    offset: int,
    since_ns: int | None,
    **filters: Any,
) -> TracePage:
    """:meth:`TraceStore.search_traces` with ``workflow``, also matching the running traces
    of that workflow (which have no root span to be named by), paged together."""
    extra_ids = [
        r.trace_id for r in running_traces(store, workflow=workflow) if r.first_name != workflow
    ]
    extra: list[TraceSummary] = []
    if extra_ids:
        extra = store.search_traces(
            limit=len(extra_ids), trace_ids=extra_ids, since_ns=since_ns, **filters
        ).items
    if not extra:
        return store.search_traces(
            workflow=workflow, limit=limit, offset=offset, since_ns=since_ns, **filters
        )
    # A page of the union: the named traces around the page, each running one placed by how
    # many named traces are newer (a count per running trace; there are few).
    k = len(extra)
    named = store.search_traces(
        workflow=workflow, limit=limit + k, offset=max(0, offset - k), since_ns=since_ns, **filters
    )
    placed: list[tuple[int, TraceSummary]] = []
    for j, t in enumerate(named.items, start=max(0, offset - k)):
        placed.append((j + sum(1 for e in extra if _newer(e, t)), t))
    for i, e in enumerate(extra):
        lower = e.start_time + 1 if since_ns is None else max(since_ns, e.start_time + 1)
        newer = store.search_traces(workflow=workflow, limit=1, since_ns=lower, **filters).total
        placed.append((i + newer, e))
    items = [t for pos, t in sorted(placed, key=lambda p: p[0]) if offset <= pos < offset + limit]
    return TracePage(items=items, total=named.total + k)
