"""Running the dashboard with uvicorn inside the caller's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from flock.dashboard._security import is_loopback, new_token

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from fastapi import FastAPI

    from flock.dashboard._ingest_grpc import OtlpGrpcReceiver
    from flock.orchestrator import Flock

__all__ = ["dashboard_url", "serve"]


def dashboard_url(host: str, port: int, token: str | None = None) -> str:
    """The address to open in a browser.

    Example:
        >>> dashboard_url("::1", 8344, "abc")
        'http://[::1]:8344/?token=abc'
    """
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


async def serve(
    db_path: str | os.PathLike[str],
    *,
    flock: Flock | None = None,
    host: str = "127.0.0.1",
    port: int = 8344,
    token: str | None = None,
    read_only: bool | None = None,
    ui: bool = True,
    announce: Callable[[str], None] | None = None,
    started: Callable[[str], None] | None = None,
    otlp_grpc_port: int | None = None,
) -> None:
    """Serve the dashboard until cancelled (or interrupted), printing its URL.

    Binding anything but loopback needs a token: one is generated (and printed) when none
    is given. ``port=0`` picks a free port. ``started(url)`` is called once it accepts
    connections.

    With ``otlp_grpc_port`` (``4317`` by convention, ``0``: a free port) an OTLP/gRPC trace
    receiver runs beside it on the same host, writing into the same trace file as
    ``POST /v1/traces`` (and needing the same token); its address is printed too. A read-only
    dashboard's receiver refuses spans (``PERMISSION_DENIED``), as ``/v1/traces`` does (403).

    Example:
        >>> async def main():  # doctest: +SKIP
        ...     await serve(".flock/traces.duckdb", port=8344)
    """
    import uvicorn

    from flock.dashboard.app import create_app

    say = announce or (lambda line: print(line, file=sys.stdout, flush=True))
    if token is not None and not token.strip():
        raise ValueError("token must not be empty")
    if token is None and not is_loopback(host):
        token = new_token()
        say(f"flock dashboard: {host} is not loopback, so requests need this token: {token}")
    app = create_app(db_path, flock=flock, token=token, read_only=read_only, ui=ui)
    receiver = _receiver(app, host, token, otlp_grpc_port)
    config = uvicorn.Config(
        app,
        host=host.strip("[]"),
        port=port,
        log_level="warning",
        lifespan="on",
        ws="websockets-sansio",
    )
    server = _Server(config)
    sock = bind_socket(host.strip("[]"), port)  # a taken port fails here, as a plain OSError
    bound = int(sock.getsockname()[1])
    if receiver is not None and receiver.port == bound:
        sock.close()
        raise ValueError(
            f"the OTLP/gRPC port {bound} is the dashboard's own port; give the receiver "
            "another one (4317 usually)"
        )
    if receiver is not None:
        try:
            await receiver.start()  # so does a taken gRPC port
        except BaseException:
            sock.close()
            raise
    loop = asyncio.get_running_loop()
    task = loop.create_task(server.serve(sockets=[sock]), name="flock-dashboard")
    restore = _stop_on_signals(loop, server)
    try:
        while not server.started:
            if task.done():
                await task
                raise OSError(f"the dashboard could not start on {host}:{bound}")
            await asyncio.sleep(0.02)
        url = dashboard_url(host, bound, token)
        say(f"flock dashboard: {url}")
        if receiver is not None:
            how = (
                "read-only: refuses spans"
                if receiver.service.read_only
                else "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"
            )
            say(f"flock dashboard: OTLP/gRPC receiver on http://{receiver.address} ({how})")
        if started is not None:
            started(url)
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), 10)
        raise
    finally:
        restore()
        if not task.done():
            server.should_exit = True
        if receiver is not None:
            await asyncio.shield(_stop_receiver(receiver, app))


def _receiver(
    app: FastAPI, host: str, token: str | None, port: int | None
) -> OtlpGrpcReceiver | None:
    """The OTLP/gRPC receiver for ``app``'s trace file (not started), stopped by the app's
    shutdown before the app closes its span writer."""
    if port is None:
        return None
    from flock.dashboard._ingest_grpc import OtlpGrpcReceiver

    state = app.state.dashboard
    receiver = OtlpGrpcReceiver(
        state.sink, host=host, port=port, token=token, read_only=state.read_only
    )
    app_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with app_lifespan(a) as value:
            try:
                yield value
            finally:  # before the app's own shutdown closes the sink's writer
                await receiver.stop()

    app.router.lifespan_context = lifespan
    return receiver


async def _stop_receiver(receiver: OtlpGrpcReceiver, app: FastAPI) -> None:
    """Stop the receiver if the app's shutdown did not (uvicorn did not start, or took too
    long to stop); then close the sink again, in case an export opened a writer after the
    app closed it."""
    if receiver.running:
        await receiver.stop()
        await asyncio.to_thread(app.state.dashboard.sink.close)


def bind_socket(
    host: str, port: int, *, who: str = "the dashboard", address: str | None = None
) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not listening yet); a taken or unusable address is
    a plain ``OSError`` saying that ``who`` cannot listen on ``address`` (default
    ``host:port``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        where = address or f"{host}:{port}"
        raise OSError(exc.errno, f"{who} cannot listen on {where}: {exc.strerror or exc}") from None
    return sock


def _server_class() -> type[Any]:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn without its own signal handling: it re-raises the signal after shutdown,
        which would end the caller's event loop abruptly; :func:`serve` stops it instead."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        def install_signal_handlers(self) -> None:  # uvicorn < 0.29
            pass

    return Server


def _Server(config: Any) -> Any:
    return _server_class()(config)


def _stop_on_signals(loop: asyncio.AbstractEventLoop, server: Any) -> Callable[[], None]:
    """Ctrl-C / SIGTERM stop the server gracefully (main thread only); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[signal.Signals, Any] = {}

    def stop() -> None:
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.getsignal(sig)
            loop.add_signal_handler(sig, stop)
        except (NotImplementedError, RuntimeError, ValueError):
            previous.pop(sig, None)

    def restore() -> None:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)

    return restore
