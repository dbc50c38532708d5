"""What the routes share: the trace store, the optional live Flock, and the mode."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread
from fastapi import HTTPException, Request

from flock.exceptions import TracingError
from flock.tracing.query import TraceNotFoundError, TraceStore

if TYPE_CHECKING:
    from flock.dashboard._ingest import SpanSink
    from flock.dashboard._live import LiveHub
    from flock.orchestrator import Flock

__all__ = ["DashboardState", "get_state"]

T = TypeVar("T")


@dataclass(slots=True, kw_only=True)
class DashboardState:
    traces: TraceStore
    flock: Flock | None
    read_only: bool
    hub: LiveHub
    sink: SpanSink
    """Where spans received over OTLP (``POST /v1/traces``) are written."""

    @property
    def has_file(self) -> bool:
        return self.traces.path.is_file()

    async def read(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a blocking trace query off the event loop (the Flock's agents share it).

        Raises the HTTP error a reader should see: 404 for an unknown trace or span, 503
        while another process holds the file.
        """
        try:
            return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))
        except TraceNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        except TracingError as exc:
            raise HTTPException(503, str(exc)) from None

    def require_flock(self) -> Flock:
        if self.flock is None:
            raise HTTPException(
                404, "no live Flock attached (read-only trace viewer): use flock.serve()"
            )
        return self.flock

    def require_writable(self) -> None:
        if self.read_only:
            raise HTTPException(403, "this dashboard is read-only")


def get_state(request: Request) -> DashboardState:
    state: DashboardState = request.app.state.dashboard
    return state
