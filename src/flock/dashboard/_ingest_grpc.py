"""OTLP/gRPC: spans sent to ``TraceService/Export`` (port 4317 by convention), written into
the dashboard's trace file.

The gRPC twin of ``POST /v1/traces`` (:mod:`flock.dashboard._ingest`): exporters that speak
gRPC by default (``OTEL_EXPORTER_OTLP_PROTOCOL=grpc``, most collectors) send here, and the
spans go through the same :class:`~flock.dashboard._ingest.SpanSink` — the same writer,
redaction and queue bound — as the spans received over HTTP. Answers follow the OTLP/gRPC
specification:

- ``OK`` with an empty ``ExportTraceServiceResponse`` once the spans are written (or, while
  another process holds the file, queued for the writer's retries). A request is taken whole
  or refused whole, as over HTTP, so ``partial_success`` is never set;
- ``INVALID_ARGUMENT`` for a message that is not an ``ExportTraceServiceRequest`` or holds a
  span the file cannot take (an id of the wrong length, a time past 2262), or more spans
  than the writer's queue takes at once (``max_queue``: it could never be taken, and
  OpenTelemetry's exporters retry ``RESOURCE_EXHAUSTED`` even without ``RetryInfo``);
- ``RESOURCE_EXHAUSTED`` above the size cap (gRPC checks ``grpc.max_receive_message_length``,
  after decompression too);
- ``UNAVAILABLE`` while the writer's queue is full, with a ``google.rpc.RetryInfo`` (the
  exporter retries after it);
- ``PERMISSION_DENIED`` on a read-only dashboard, ``UNAUTHENTICATED`` without the token,
  ``INTERNAL`` when the trace file cannot be used.

gzip (and deflate) compressed requests are decompressed by gRPC. The message is parsed in a
worker thread, with the decoding of :mod:`flock.tracing.otlp_receiver`, never on the event
loop (a 64 MiB request takes a while), and so a malformed one is answered with
``INVALID_ARGUMENT`` rather than gRPC's own ``UNKNOWN``.

Security: the receiver binds the dashboard's host. When the dashboard has a token (any host
that is not loopback), every call needs the metadata ``authorization: Bearer <token>``
(``OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<token>``). There is no ``Host`` check
as over HTTP: browsers cannot speak gRPC, so a web page cannot reach it through DNS
rebinding. Like the dashboard, it speaks plaintext (no TLS): beyond loopback, put it behind
a TLS-terminating proxy on networks you do not trust.
"""

from __future__ import annotations

import errno
import functools
import hmac
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import grpc  # type: ignore[import-untyped]
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceServicer

from flock.dashboard._ingest import RETRY_AFTER_S, TooManySpansError, WriterBusyError
from flock.exceptions import TracingError
from flock.tracing.otlp_receiver import (
    PROTOBUF,
    OtlpBodyTooLargeError,
    OtlpDecodeError,
    count_spans,
    decode_request,
    request_to_spans,
)

if TYPE_CHECKING:
    from flock.dashboard._ingest import SpanSink

__all__ = ["GRACE_S", "SERVICE", "OtlpGrpcReceiver", "TraceExportService"]

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
GRACE_S = 5.0
"""How long exports in flight may finish when the receiver stops (they wait for their write
at most ``FLUSH_WAIT_MS``)."""
READ_ONLY_MESSAGE = (
    "this dashboard is read-only (flock dashboard --db views a file): it does not accept "
    "spans; send them to a dashboard serving a Flock (flock serve app:flock "
    "--otlp-grpc-port 4317, flock.dashboard.serve(..., otlp_grpc_port=4317))"
)
TOKEN_MESSAGE = (
    "missing or wrong token: send the metadata authorization: Bearer <token> "
    "(OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<token>)"
)


def _write(sink: SpanSink, request: ExportTraceServiceRequest | bytes) -> int:
    """Decode, queue and write (in a worker thread); the number of spans received."""
    if isinstance(request, bytes):
        request = decode_request(request, PROTOBUF, max_body=sink.max_body)
    count = count_spans(request)
    if count:
        sink.admit(count)  # refused before the (costly) spans are built
    sink.take(request_to_spans(request))
    return count


def _retry_metadata(message: str) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata telling the exporter when to retry: the ``RetryInfo`` the OTLP spec
    asks for in the status details, and under the key the OpenTelemetry Python exporter
    reads."""
    # googleapis-common-protos comes with the OTLP exporters (it has no type stubs).
    from google.protobuf.any_pb2 import Any as AnyProto
    from google.protobuf.duration_pb2 import Duration
    from google.rpc.error_details_pb2 import RetryInfo
    from google.rpc.status_pb2 import Status

    info = RetryInfo(retry_delay=Duration(seconds=RETRY_AFTER_S))
    detail = AnyProto()
    detail.Pack(info)
    status = Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message=message, details=[detail])
    return (
        ("google.rpc.retryinfo-bin", info.SerializeToString()),
        ("grpc-status-details-bin", status.SerializeToString()),
    )


class TraceExportService(TraceServiceServicer):
    """``TraceService/Export`` into ``sink``.

    ``Export`` takes the decoded request (as registered by
    ``add_TraceServiceServicer_to_server``) or the raw message (as :meth:`add_to` registers
    it, so the parsing happens in a worker thread).
    """

    def __init__(self, sink: SpanSink, *, token: str | None = None, read_only: bool = False):
        self.sink = sink
        self.token = token
        self.read_only = read_only

    def add_to(self, server: Any) -> None:
        """Register on a ``grpc.aio`` server, with the message left undecoded."""
        handler = grpc.unary_unary_rpc_method_handler(
            self.Export,
            request_deserializer=None,
            response_serializer=ExportTraceServiceResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),)
        )

    def _authorized(self, context: Any) -> bool:
        if self.token is None:
            return True
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                given = value[7:].strip() if value[:7].lower() == "bearer " else ""
                return hmac.compare_digest(given.encode(), self.token.encode())
        return False

    async def Export(  # the generated servicer's method name
        self, request: ExportTraceServiceRequest | bytes, context: Any
    ) -> ExportTraceServiceResponse:
        """One OTLP/gRPC trace export; see the module docstring."""
        if not self._authorized(context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, TOKEN_MESSAGE)
        if self.read_only:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, READ_ONLY_MESSAGE)
        try:
            await anyio.to_thread.run_sync(functools.partial(_write, self.sink, request))
        except TooManySpansError as exc:  # could never fit: not retried (no RetryInfo)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except WriterBusyError as exc:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, str(exc), trailing_metadata=_retry_metadata(str(exc))
            )
        except OtlpBodyTooLargeError as exc:  # gRPC's own cap comes first; kept for safety
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except OtlpDecodeError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except TracingError as exc:  # the trace file cannot be used (e.g. not a DuckDB file)
            await context.abort(grpc.StatusCode.INTERNAL, str(exc))
        return ExportTraceServiceResponse()


class OtlpGrpcReceiver:
    """A ``grpc.aio`` server with :class:`TraceExportService` on ``host:port``.

    Example:
        >>> async def main(sink):  # doctest: +SKIP
        ...     receiver = OtlpGrpcReceiver(sink, port=4317)
        ...     await receiver.start()  # OSError when the port is taken
        ...     ...
        ...     await receiver.stop()
    """

    def __init__(
        self,
        sink: SpanSink,
        *,
        host: str = "127.0.0.1",
        port: int = 4317,
        token: str | None = None,
        read_only: bool = False,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"the OTLP/gRPC port must be from 0 to 65535, got {port}")
        self.service = TraceExportService(sink, token=token, read_only=read_only)
        self.host = host.strip().strip("[]")
        self.port = port
        self._server: Any = None

    @property
    def address(self) -> str:
        """``host:port`` (brackets around an IPv6 address), the bound port once started."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> int:
        """Bind and start serving; returns the port (a free one for ``port=0``).

        Raises:
            OSError: the address cannot be bound (the port is taken, say).
        """
        if self._server is not None:
            raise RuntimeError("the OTLP/gRPC receiver is already running")
        if self.port:
            self._probe()  # the reason, and no gRPC log line, when the port is taken
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.service.sink.max_body),
                # gRPC sets SO_REUSEPORT by default: a second server on a taken port would
                # share it silently instead of failing.
                ("grpc.so_reuseport", 0),
            ]
        )
        self.service.add_to(server)
        try:
            port, reason = int(server.add_insecure_port(self.address)), "bind failed"
        except RuntimeError as exc:  # grpc: "Failed to bind to address …"
            port, reason = 0, str(exc)
        if port == 0:  # older grpc returns 0 instead of raising
            await server.stop(None)
            self._probe()  # raises with the reason, unless the address is free again
            raise OSError(
                errno.EADDRINUSE,
                f"the OTLP/gRPC receiver cannot listen on {self.address}: {reason}",
            )
        await server.start()
        self.port, self._server = port, server
        return port

    def _probe(self) -> None:
        """Bind the address with a plain socket, as gRPC will, and raise why it cannot be
        (gRPC itself only says that it failed)."""
        from flock.dashboard.server import bind_socket

        bind_socket(
            self.host, self.port, who="the OTLP/gRPC receiver", address=self.address
        ).close()

    async def stop(self, grace: float | None = GRACE_S) -> None:
        """Stop accepting exports; those in flight get ``grace`` seconds to finish."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
