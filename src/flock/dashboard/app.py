"""The dashboard's FastAPI application.

Example:
    >>> from flock.dashboard import create_app
    >>> app = create_app(".flock/traces.duckdb")  # a read-only viewer of a trace file
    >>> paths = app.openapi()["paths"]
    >>> sorted(p for p in paths if p.startswith("/api/traces"))[:3]
    ['/api/traces', '/api/traces/clear', '/api/traces/names']
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

import flock
from flock.dashboard import _blackboard, _ingest, _live, _traces
from flock.dashboard._ingest import SpanSink, is_ingest_path
from flock.dashboard._live import LiveHub
from flock.dashboard._schemas import HealthOut, InfoOut, WriterOut
from flock.dashboard._security import SecurityMiddleware
from flock.dashboard._state import MAX_PUBLISH_BODY, DashboardState, get_state
from flock.dashboard._text import SafeJSONResponse, scrub
from flock.exceptions import TracingError
from flock.tracing.otlp_receiver import MAX_BODY
from flock.tracing.processor import active_writers, is_lock_error
from flock.tracing.query import TraceStore

if TYPE_CHECKING:
    from flock.orchestrator import Flock

__all__ = ["STATIC_DIR", "create_app"]

STATIC_DIR = Path(__file__).parent / "static"


def create_app(
    db_path: str | os.PathLike[str],
    *,
    flock: Flock | None = None,
    token: str | None = None,
    read_only: bool | None = None,
    ui: bool = True,
    live_interval: float = 1.0,
    lock_wait: float = 2.0,
    max_otlp_body: int = MAX_BODY,
    max_publish_body: int = MAX_PUBLISH_BODY,
) -> FastAPI:
    """Build the dashboard app over the trace file ``db_path``.

    Args:
        db_path: the DuckDB trace file (it may not exist yet).
        flock: a live Flock for the blackboard view and publishing; without one the
            dashboard is a viewer of the trace file.
        token: when given, every ``/api`` request, ``POST /v1/traces`` and the WebSocket need
            it (``Authorization: Bearer <token>`` or ``?token=``). Required when serving beyond loopback; without
            it only requests addressed to localhost are answered.
        read_only: forbid clearing traces, publishing and receiving spans over OTLP
            (default: when no ``flock``).
        ui: serve the single-page UI at ``/`` (the JSON API is always there).
        live_interval: seconds between checks for new spans and artifacts.
        lock_wait: how long a query waits while another process writes the file.
        max_otlp_body: the largest OTLP/HTTP body ``POST /v1/traces`` accepts, before and
            after decompression (bytes; larger ones get 413).
        max_publish_body: the largest body ``POST /api/artifacts`` (publishing) accepts
            (bytes; larger ones get 413 before they are read whole; 1 MiB by default).

    Unless read-only, ``POST /v1/traces`` accepts spans over OTLP/HTTP (protobuf or JSON)
    and writes them into ``db_path`` through this process's trace writer, so workers that
    export with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing here land in the same file.
    """
    state = DashboardState(
        traces=TraceStore(db_path, lock_wait=lock_wait),
        flock=flock,
        read_only=flock is None if read_only is None else read_only,
        hub=LiveHub(TraceStore(db_path, lock_wait=lock_wait), flock, interval=live_interval),
        sink=SpanSink(Path(db_path), max_body=max_otlp_body),
        max_publish_body=max_publish_body,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await state.hub.stop()
            await anyio.to_thread.run_sync(state.sink.close)  # write what was received

    extra: dict[str, Any] = {}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters:
        # FastAPI ≥ 0.16x traces every request itself: the dashboard's own polling would
        # flood the very trace file it shows, and a span per OTLP export request would grow
        # the file it fills (``exclude`` keeps that route out even if tracing is turned on).
        extra["telemetry"] = {
            "tracing": False,
            "metrics": False,
            "logs": False,
            "exclude": is_ingest_path,
        }
    app = FastAPI(
        title="flock dashboard",
        version=flock_version(),
        description="Traces, statistics and the blackboard of a flock application.",
        docs_url=None,  # Swagger UI loads from a CDN; these machines are offline
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
        **extra,
    )
    app.state.dashboard = state
    app.add_middleware(SecurityMiddleware, token=token)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.include_router(_traces.router)
    app.include_router(_blackboard.router)
    app.include_router(_live.router)
    app.include_router(_ingest.router)

    @app.get("/api/info", response_model=InfoOut, tags=["meta"], summary="About this server")
    async def info(state: Annotated[DashboardState, Depends(get_state)]) -> InfoOut:
        spans = (await state.read(state.traces.version))[0] if state.has_file else 0
        return InfoOut(
            db_path=str(state.traces.path),
            read_only=state.read_only,
            flock=state.flock is not None,
            spans=spans,
            version=flock_version(),
        )

    file_check = _FileCheck()

    @app.get(
        "/api/health",
        response_model=HealthOut,
        tags=["meta"],
        summary="Health: 200 ok, 503 degraded (for probes)",
        responses={503: {"model": HealthOut, "description": "degraded"}},
    )
    async def health(
        state: Annotated[DashboardState, Depends(get_state)], response: Response
    ) -> HealthOut:
        """Degraded while a trace writer of this process cannot write (for another reason
        than a reader holding the file, which it waits out) or has lost spans; without a
        writer here (a read-only dashboard), while the file cannot be read (missing, not a
        flock trace file, corrupt), except while another process writes to it."""
        writers, problems = [], []
        if not any(not w.closed for w in active_writers(state.traces.path)):
            problem = await anyio.to_thread.run_sync(file_check, state.traces.path)
            if problem is not None:
                problems.append(problem)
        for w in active_writers(state.traces.path):
            if w.closed:
                continue
            error = w.last_error
            if error is not None and not is_lock_error(Exception(error)):
                problems.append(f"the trace writer cannot write to {w.path}: {error}")
            if w.dropped:
                problems.append(f"the trace writer lost {w.dropped} span(s) (see its log)")
            writers.append(
                WriterOut(pending=w.pending, written=w.written, dropped=w.dropped, last_error=error)
            )
        if problems:
            response.status_code = 503
        return HealthOut(
            status="degraded" if problems else "ok", problems=problems, writers=writers
        )

    if ui:
        # StaticFiles resolves every path and refuses anything outside its directory.
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

        @app.get("/", include_in_schema=False)
        async def index() -> FileResponse:
            return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})

    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer to an ``HTTPException``, whose detail may quote a string UTF-8 cannot
    encode (a lone surrogate, replaced by U+FFFD)."""
    assert isinstance(exc, HTTPException)
    exc.detail = scrub(exc.detail)
    return await http_exception_handler(request, exc)


async def _validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's 422, whose ``input`` may be a string with a lone surrogate (from a
    ``\\ud800`` escape in the JSON body): replaced by U+FFFD instead of failing with 500."""
    assert isinstance(exc, RequestValidationError)
    return SafeJSONResponse(status_code=422, content={"detail": jsonable_encoder(exc.errors())})


def flock_version() -> str:
    return flock.__version__


class _FileCheck:
    """Why the trace file cannot be read (None: it can, it is not there yet, or another
    process is writing to it, which readers wait out). Opening a large file takes a while
    and holds it meanwhile, so a probe opens it only when it changed since the last one."""

    def __init__(self) -> None:
        self._seen: tuple[tuple[int, int], str | None] | None = None

    def __call__(self, path: Path) -> str | None:
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None  # no trace yet (a dashboard started first)
        except OSError as exc:
            return f"cannot read {str(path)!r}: {exc}"
        key = (stat.st_mtime_ns, stat.st_size)
        if self._seen is not None and self._seen[0] == key:
            return self._seen[1]
        try:
            with TraceStore(path, lock_wait=0).connect():
                problem = None
        except TracingError as exc:
            if is_lock_error(exc.__cause__ or exc):
                return None  # not remembered: it may change without the file changing
            problem = str(exc)
        self._seen = (key, problem)
        return problem
