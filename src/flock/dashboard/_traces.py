"""The trace routes: list, timeline, span detail, statistics, correlations, clearing."""

from __future__ import annotations

import re
import time
from dataclasses import asdict
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from starlette.convertors import PathConvertor, register_url_convertor

from flock.dashboard._running import Running, is_stale, merge_running, running_traces
from flock.dashboard._schemas import (
    ArtifactOut,
    ClearRequest,
    ClearResult,
    CorrelationDetail,
    CorrelationOut,
    CorrelationPage,
    NameCount,
    SpanDetailOut,
    StatsOut,
    StatsRow,
    TimelineOut,
    TraceOut,
    TracePageOut,
)
from flock.dashboard._state import DashboardState, get_state
from flock.tracing._times import check_ns, parse_since
from flock.tracing.query import TraceSummary

__all__ = ["MAX_PAGE", "MAX_TIMELINE_PAGE", "router"]

MAX_PAGE = 200
MAX_TIMELINE_PAGE = 10_000
MAX_OFFSET = 10_000_000
BUCKETS = 40
NS_DIGITS = re.compile(r"[0-9]+")
NICE_BUCKETS_S = (1, 5, 10, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400)


class IdPathConvertor(PathConvertor):
    """Starlette's ``path`` (``/`` included, as ids may hold one: the UI sends it as %2F,
    decoded before routing), but never empty, so ``/api/correlations/`` still redirects to
    the list instead of matching an empty id."""

    regex = ".+"


register_url_convertor("id_path", IdPathConvertor())

router = APIRouter(prefix="/api", tags=["traces"])
State = Annotated[DashboardState, Depends(get_state)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"page size (≤ {MAX_PAGE})")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]
TraceId = Annotated[str, Path(pattern="^[0-9a-f]{32}$", description="32 hex digits")]
SpanId = Annotated[str, Path(pattern="^[0-9a-f]{16}$", description="16 hex digits")]
TimeParam = Annotated[
    str | None,
    Query(
        max_length=64,
        description="`10m`, `2h`, `1d` (that long ago), an ISO time, or ns since the epoch",
    ),
]


def _time(value: str | None, field: str) -> int | None:
    """A time parameter in ns since the epoch; 422 (not 500) for anything else, such as
    ``"²"`` (a digit to ``str.isdigit``) or a time beyond what a trace file holds."""
    if value is None or not value.strip():
        return None
    try:
        if NS_DIGITS.fullmatch(value.strip()):
            return check_ns(int(value.strip()), value)
        return parse_since(value)
    except ValueError as exc:
        raise _unprocessable(["query", field], exc) from None


def _unprocessable(loc: list[str], exc: ValueError) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors."""
    return HTTPException(422, [{"loc": loc, "msg": str(exc), "type": "value_error"}])


def _trace(t: TraceSummary, running: dict[str, Running] | None = None) -> TraceOut:
    """The API shape of a trace; a running one named after its workflow (see _running)."""
    out = TraceOut(**asdict(t))
    r = (running or {}).get(t.trace_id)
    if r is not None:
        out.name = r.workflow or out.name
        out.stale = is_stale(r.last_end)
    return out


async def _traces_out(state: DashboardState, items: list[TraceSummary]) -> list[TraceOut]:
    ids = [t.trace_id for t in items if t.in_progress]
    found = await state.read(running_traces, state.traces, trace_ids=ids) if ids else []
    running = {r.trace_id: r for r in found}
    return [_trace(t, running) for t in items]


@router.get("/traces", response_model=TracePageOut, summary="Traces, newest first")
async def list_traces(
    state: State,
    limit: Limit = 50,
    offset: Offset = 0,
    workflow: Annotated[
        str | None, Query(max_length=500, description="root span name, exactly")
    ] = None,
    name: Annotated[
        str | None, Query(max_length=500, description="root span name contains")
    ] = None,
    errors: Annotated[bool, Query(description="only traces with an error span")] = False,
    min_duration_ms: Annotated[float | None, Query(ge=0)] = None,
    since: TimeParam = None,
    until: TimeParam = None,
    q: Annotated[
        str | None,
        Query(max_length=200, description="free text: trace id prefix, span names, attributes"),
    ] = None,
) -> TracePageOut:
    """A page of traces with the given filters; ``total`` counts all matching traces."""
    if not state.has_file:
        return TracePageOut(items=[], total=0, limit=limit, offset=offset)
    filters = {
        "name": name or None,
        "errors_only": errors,
        "min_duration_ms": min_duration_ms,
        "since_ns": _time(since, "since"),
        "until_ns": _time(until, "until"),
        "text": (q or "").strip() or None,
    }
    if workflow:  # running traces of the workflow too, named by their spans
        page = await state.read(
            merge_running, state.traces, workflow=workflow, limit=limit, offset=offset, **filters
        )
    else:
        page = await state.read(state.traces.search_traces, limit=limit, offset=offset, **filters)
    items = await _traces_out(state, page.items)
    return TracePageOut(items=items, total=page.total, limit=limit, offset=offset)


@router.get("/traces/names", response_model=list[NameCount], summary="Workflow (root) names")
async def trace_names(state: State) -> list[NameCount]:
    """Root span names with their trace counts, most frequent first (at most 200)."""
    if not state.has_file:
        return []
    counts = dict(await state.read(state.traces.trace_names))
    # Running workflows have no root span yet: counted by the name their spans carry.
    for r in await state.read(running_traces, state.traces):
        if r.workflow and r.first_name != r.workflow:
            counts[r.workflow] = counts.get(r.workflow, 0) + 1
    ranked = sorted(counts.items(), key=lambda nc: (-nc[1], nc[0]))
    return [NameCount(name=n, count=c) for n, c in ranked]


@router.get(
    "/traces/{trace_id}",
    response_model=None,
    summary="The waterfall of one trace",
    responses={200: {"model": TimelineOut}, 404: {"description": "no such trace"}},
)
async def timeline(
    state: State,
    trace_id: TraceId,
    limit: Annotated[int, Query(ge=1, le=MAX_TIMELINE_PAGE)] = MAX_TIMELINE_PAGE,
    offset: Offset = 0,
) -> Response:
    """Spans in depth-first order with depth and critical-path flag (no attributes; fetch
    a span for those). Traces larger than ``limit`` come in pages."""
    if not state.has_file:
        raise HTTPException(404, f"no trace {trace_id!r}")
    t = await state.read(state.traces.timeline, trace_id, limit=limit, offset=offset)
    running: list[Running] = []
    if not any(span.parent_id is None for span in t.spans):  # no root (in this page)
        running = await state.read(running_traces, state.traces, trace_ids=[trace_id])
    # Up to 10,000 rows: serialised straight from the dataclasses by orjson (validating them
    # through the response model would take most of the time budget).
    body = orjson.dumps(
        {
            "trace_id": t.trace_id,
            "name": (running[0].workflow or t.name) if running else t.name,
            "in_progress": bool(running),
            "stale": bool(running) and is_stale(running[0].last_end),
            "start_time": t.start_time,
            "end_time": t.end_time,
            "span_count": t.span_count,
            "errors": t.errors,
            "offset": t.offset,
            "limit": limit,
            "spans": t.spans,
        }
    )
    return Response(content=body, media_type="application/json")


@router.get(
    "/traces/{trace_id}/spans/{span_id}",
    response_model=SpanDetailOut,
    summary="One span with attributes, events and links",
    responses={404: {"description": "no such span"}},
)
async def span_detail(state: State, trace_id: TraceId, span_id: SpanId) -> SpanDetailOut:
    if not state.has_file:
        raise HTTPException(404, f"no trace {trace_id!r}")
    detail = await state.read(state.traces.span, trace_id, span_id)
    return SpanDetailOut(**asdict(detail))


def _bucket_ns(span_ns: int) -> int:
    want = max(span_ns // BUCKETS, 1)
    for seconds in NICE_BUCKETS_S:
        if seconds * 1_000_000_000 >= want:
            return seconds * 1_000_000_000
    return NICE_BUCKETS_S[-1] * 1_000_000_000 * max(1, want // (NICE_BUCKETS_S[-1] * 10**9))


@router.get("/stats", response_model=StatsOut, summary="Duration and error statistics")
async def stats(
    state: State,
    by: Literal["workflow", "span"] = "workflow",
    name: Annotated[str | None, Query(max_length=500)] = None,
    since: TimeParam = None,
    until: TimeParam = None,
    limit: Limit = 100,
) -> StatsOut:
    """Per workflow (whole traces by root name) or per span name: count, p50/p95/p99,
    error rate and a series over time (about 40 buckets across the range)."""
    if not state.has_file:
        return StatsOut(by=by, bucket_ns=None, rows=[])
    since_ns, until_ns = _time(since, "since"), _time(until, "until")
    first, last = await state.read(state.traces.time_range)
    lo = since_ns if since_ns is not None else first
    hi = until_ns if until_ns is not None else (last if since_ns is None else time.time_ns())
    bucket = _bucket_ns(max(hi - lo, 1)) if lo is not None and hi is not None else None
    rows = await state.read(
        state.traces.stats,
        by=by,
        name=name or None,
        since_ns=since_ns,
        until_ns=until_ns,
        limit=limit,
        bucket_ns=bucket,
    )
    return StatsOut(by=by, bucket_ns=bucket, rows=[StatsRow(**asdict(r)) for r in rows])


async def _artifact_count(state: DashboardState, correlation_id: str) -> int | None:
    if state.flock is None:
        return None
    return len(await state.flock.store.query(correlation_id=correlation_id))


@router.get("/correlations", response_model=CorrelationPage, summary="Agent runs by correlation id")
async def correlations(
    state: State,
    limit: Limit = 50,
    offset: Offset = 0,
    q: Annotated[str | None, Query(max_length=200, description="correlation id prefix")] = None,
    trace_id: Annotated[str | None, Query(pattern="^[0-9a-f]{32}$")] = None,
) -> CorrelationPage:
    """Workflow executions grouped by ``flock.correlation_id`` (on ``Agent.execute`` spans),
    newest first, with the traces they span."""
    if not state.has_file:
        return CorrelationPage(items=[], total=0, limit=limit, offset=offset)
    rows, total = await state.read(
        state.traces.correlations,
        limit=limit,
        offset=offset,
        correlation_id=(q or "").strip() or None,
        trace_id=trace_id,
    )
    items = [
        CorrelationOut(**asdict(r), artifacts=await _artifact_count(state, r.correlation_id))
        for r in rows
    ]
    return CorrelationPage(items=items, total=total, limit=limit, offset=offset)


@router.get(
    "/correlations/{correlation_id:id_path}",  # an id may contain "/"
    response_model=CorrelationDetail,
    summary="The traces and artifacts of one correlation id",
)
async def correlation(
    state: State, correlation_id: Annotated[str, Path(min_length=1, max_length=200)]
) -> CorrelationDetail:
    """The agent runs with exactly this correlation id (which may contain ``/``), their
    traces and (with a live Flock) its artifacts."""
    found = None
    traces: list[TraceOut] = []
    if state.has_file:
        found = await state.read(state.traces.correlation, correlation_id)
    if found is not None:
        page = await state.read(
            state.traces.search_traces, limit=MAX_PAGE, trace_ids=found.trace_ids
        )
        traces = await _traces_out(state, page.items)
    artifacts: list[ArtifactOut] = []
    if state.flock is not None:
        found_artifacts = await state.flock.store.query(correlation_id=correlation_id)
        artifacts = [ArtifactOut(**a.to_dict()) for a in found_artifacts[-200:]]
    if found is None and not artifacts:
        raise HTTPException(404, f"no runs or artifacts with correlation id {correlation_id!r}")
    return CorrelationDetail(
        correlation=CorrelationOut(
            **asdict(found), artifacts=len(artifacts) if state.flock else None
        )
        if found
        else None,
        traces=sorted(traces, key=lambda t: t.start_time, reverse=True),
        artifacts=artifacts,
    )


@router.post(
    "/traces/clear",
    response_model=ClearResult,
    summary='Delete every span, or the traces older than older_than (needs {"confirm": true})',
    responses={403: {"description": "read-only dashboard"}},
)
async def clear(state: State, body: ClearRequest) -> ClearResult:
    state.require_writable()
    from flock.tracing.store import clear_traces

    older_than = (body.older_than or "").strip() or None
    if older_than is not None:
        try:
            parse_since(older_than)
        except ValueError as exc:
            raise _unprocessable(["body", "older_than"], exc) from None
    result = await state.read(clear_traces, state.traces.path, older_than=older_than)
    await state.hub.broadcast({"type": "cleared"})
    return ClearResult(**result)
