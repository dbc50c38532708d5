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

__all__ = [
    "MAX_PUBLISH_BODY",
    "BodyTooLargeError",
    "DashboardState",
    "get_state",
    "read_body",
]

T = TypeVar("T")

MAX_PUBLISH_BODY = 1024 * 1024
"""The default cap on a ``POST /api/artifacts`` body (1 MiB): an artifact is one JSON
payload typed by hand or sent by a script — a few kilobytes — and every one is kept in the
blackboard's memory and handed to its agents, so a larger body is a mistake or an attack."""


@dataclass(slots=True, kw_only=True)
class DashboardState:
    traces: TraceStore
    flock: Flock | None
    read_only: bool
    hub: LiveHub
    sink: SpanSink
    """Where spans received over OTLP (``POST /v1/traces``) are written."""
    max_publish_body: int = MAX_PUBLISH_BODY
    """The largest body ``POST /api/artifacts`` reads (bytes; larger ones get 413)."""

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


class BodyTooLargeError(Exception):
    """A request body is larger than its route takes (answer 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"body is larger than {limit} bytes")
        self.limit = limit


async def read_body(request: Request, limit: int) -> bytes:
    """The body of ``request``, refused with :class:`BodyTooLargeError` once it is larger
    than ``limit`` bytes: from its ``Content-Length`` before anything is read, and while
    it streams in (a chunked body has none, and the header may lie), so at most ``limit``
    bytes and a chunk are ever held."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise BodyTooLargeError(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLargeError(limit)
    return bytes(body)


def get_state(request: Request) -> DashboardState:
    state: DashboardState = request.app.state.dashboard
    return state
