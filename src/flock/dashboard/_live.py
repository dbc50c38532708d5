"""Live updates over a WebSocket: new spans (traces) and new artifacts.

One poller per app runs while at least one client is connected: every ``interval`` seconds
it asks the trace file for its version (span count and highest row id — table metadata,
cheap) and the blackboard for its newest artifacts, and tells the clients what changed.
Clients then re-fetch the page they show, with their own filters.

Messages (JSON): ``{"type": "traces", "spans": n}``, ``{"type": "artifact", "artifact":
{...}}``, ``{"type": "cleared"}``, ``{"type": "hello", ...}`` on connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from flock.dashboard._text import dumps
from flock.exceptions import TracingError

if TYPE_CHECKING:
    from flock.orchestrator import Flock
    from flock.tracing.query import TraceStore

__all__ = ["LiveHub", "router"]

log = logging.getLogger("flock.dashboard")
ARTIFACT_WINDOW = 100
SEND_TIMEOUT = 5.0
"""Seconds a live message may take to reach one client before it is dropped."""

router = APIRouter()


class LiveHub:
    """The connected clients and the poller that feeds them."""

    def __init__(self, traces: TraceStore, flock: Flock | None, *, interval: float = 1.0) -> None:
        self.traces = traces
        self.flock = flock
        self.interval = interval
        self.clients: set[WebSocket] = set()
        self._task: asyncio.Task[None] | None = None
        self._version: tuple[int, int] | None = None
        self._seen: set[str] | None = None

    async def broadcast(self, message: dict[str, Any]) -> None:
        """Send ``message`` to every client. It is encoded once, with strings UTF-8 cannot
        encode (lone surrogates, which Python code may put into an artifact) replaced, so
        no message can fail for its content; a client whose connection fails is closed
        (with a close frame, when it can still take one) and forgotten."""
        try:
            text = dumps(message)
        except (TypeError, ValueError):  # not JSON: a bug, but no reason to drop anyone
            log.exception("dashboard live message cannot be encoded: %.200r", message)
            return
        await asyncio.gather(*(self._send(ws, text) for ws in list(self.clients)))

    async def _send(self, ws: WebSocket, text: str) -> None:
        """Send to one client, for at most :data:`SEND_TIMEOUT` s: a client that does not
        read (a laptop asleep with the page open) must not hold up the others, nor the
        publish that broadcasts, nor the server's shutdown. It is dropped instead."""
        try:
            await asyncio.wait_for(ws.send_text(text), SEND_TIMEOUT)
        except Exception:  # went away mid-send, or stopped reading
            self.clients.discard(ws)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(1011), 1.0)

    async def serve(self, ws: WebSocket) -> None:
        await ws.accept()
        self.clients.add(ws)
        if self._task is None or self._task.done():
            self._version = self._seen = None
            await self.check()  # the baseline: what exists now is not news
            self._task = asyncio.get_running_loop().create_task(self._poll(), name="flock-live")
        try:
            await ws.send_json({"type": "hello", "interval": self.interval})
            while ws.application_state is WebSocketState.CONNECTED:  # until broadcast closes it
                # Clients say nothing (what they send, text or binary, is ignored): this
                # notices them leave.
                if (await ws.receive())["type"] == "websocket.disconnect":
                    break
        except WebSocketDisconnect:
            pass
        finally:
            self.clients.discard(ws)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _poll(self) -> None:
        while self.clients:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:
                log.exception("dashboard live update failed")

    async def check(self) -> None:
        """Compare with the previous check and broadcast what changed."""
        if self.traces.path.is_file():
            version: tuple[int, int] | None
            try:
                version = await anyio.to_thread.run_sync(self.traces.version)
            except TracingError:
                version = self._version  # held by another process right now; next time
            if version != self._version:
                if self._version is not None and version is not None:
                    await self.broadcast({"type": "traces", "spans": version[0]})
                self._version = version
        if self.flock is not None:
            newest = await self.flock.store.query(limit=ARTIFACT_WINDOW)
            ids = {a.id for a in newest}
            if self._seen is not None:
                for artifact in newest:
                    if artifact.id not in self._seen:
                        await self.broadcast({"type": "artifact", "artifact": artifact.to_dict()})
            self._seen = ids

    def mark_seen(self, artifact_id: str) -> None:
        if self._seen is not None:
            self._seen.add(artifact_id)


@router.websocket("/api/live")
async def live(ws: WebSocket) -> None:
    """New traces and artifacts as they appear (see the module docstring)."""
    hub: LiveHub = ws.app.state.dashboard.hub
    await hub.serve(ws)
