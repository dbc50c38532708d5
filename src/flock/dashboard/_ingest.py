"""``POST /v1/traces``: spans sent over OTLP/HTTP, written into the dashboard's trace file.

Workers of a distributed flock (``OTEL_EXPORTER_OTLP_ENDPOINT=http://dashboard:8344``,
``FLOCK_TRACE_FILE=false``) send their spans here, so one file — and this dashboard — holds
the whole distributed trace. The route follows the OTLP/HTTP specification:

- bodies in binary protobuf (``application/x-protobuf``) or OTLP/JSON (``application/json``),
  optionally ``Content-Encoding: gzip`` or ``deflate``;
- ``200`` with an ``ExportTraceServiceResponse`` in the encoding of the request once the spans
  are written (or, while another process holds the file, queued for the writer's retries);
- ``400`` for a body that does not decode, ``413`` over the size cap (before or after
  decompression) or with more spans than the writer's queue takes at once (its
  ``max_queue``: such a request could never be taken, so it is not worth retrying),
  ``415`` for another content type or encoding, ``403`` on a read-only
  dashboard, ``503`` with ``Retry-After`` while the writer's queue is full (the exporter
  retries); errors carry a ``google.rpc.Status`` in the request's encoding.

The spans go through the DuckDB writer this process already has for the file (the live
Flock's, with its redaction), so the dashboard's reads pause it like any other write and
nothing is written twice; without one (a dashboard that is not read-only but traces nothing
itself) the app opens its own writer on the first request and flushes it at shutdown.

The same security rules apply as to ``/api``: loopback ``Host`` without a token, and with a
token ``Authorization: Bearer <token>`` (``OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20
<token>``). FastAPI's own request tracing is off for the whole dashboard, this route included:
a span per export request would grow the very file it fills.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Annotated, Any

import anyio.to_thread
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from flock.dashboard._state import BodyTooLargeError, DashboardState, get_state, read_body
from flock.exceptions import TracingError
from flock.tracing.otlp_receiver import (
    JSON,
    MAX_BODY,
    PROTOBUF,
    OtlpBodyTooLargeError,
    OtlpDecodeError,
    OtlpUnsupportedError,
    count_spans,
    decode_request,
    media_type,
    request_to_spans,
    response,
)

if TYPE_CHECKING:
    from pathlib import Path

    from opentelemetry.sdk.trace import ReadableSpan

    from flock.tracing.processor import DuckDBSpanProcessor

__all__ = [
    "INGEST_PATH",
    "SpanSink",
    "TooManySpansError",
    "WriterBusyError",
    "is_ingest_path",
    "router",
]

INGEST_PATH = "/v1/traces"
FLUSH_WAIT_MS = 2_000
"""How long a request waits for its spans to be written before answering; longer (another
process holds the file) and they stay queued on the writer, which keeps retrying."""
RETRY_AFTER_S = 2

# google.rpc.Code values for the Status in error bodies.
INVALID_ARGUMENT = 3
PERMISSION_DENIED = 7
RESOURCE_EXHAUSTED = 8
INTERNAL = 13
UNAVAILABLE = 14

router = APIRouter(tags=["otlp"])


def is_ingest_path(scope: Any) -> bool:
    """True for requests to the OTLP route (FastAPI's own telemetry skips them)."""
    return bool(scope.get("path") == INGEST_PATH)


class SpanSink:
    """The writer received spans go through: this process's writer of the trace file, or
    one of the app's own (opened on first use, shut down with :meth:`close`)."""

    def __init__(self, path: Path, *, max_body: int = MAX_BODY) -> None:
        self.path = path
        self.max_body = max_body
        self._own: DuckDBSpanProcessor | None = None
        self._lock = threading.Lock()

    def writer(self) -> DuckDBSpanProcessor:
        """The writer to use (blocking: opening one creates the file)."""
        from flock.tracing.processor import DuckDBSpanProcessor, active_writers

        with self._lock:
            for writer in active_writers(self.path):
                if not writer.closed:
                    return writer
            if self._own is None or self._own.closed:
                self._own = DuckDBSpanProcessor(self.path, flush_interval=0.5)
            return self._own

    def admit(self, count: int) -> DuckDBSpanProcessor:
        """The writer, if its queue can take ``count`` spans now (blocking: it may open one).

        Raises:
            TooManySpansError: more spans than the queue ever holds; retrying cannot help.
            WriterBusyError: the queue cannot take them now; it can once it has drained.
        """
        writer = self.writer()
        if count > writer.max_queue:
            raise TooManySpansError(
                f"the request holds {count} spans, more than the trace writer's queue takes "
                f"at once ({writer.max_queue}); send them in smaller requests (a smaller "
                "batch size of the exporter)"
            )
        if writer.pending + count > writer.max_queue:
            raise WriterBusyError(
                f"the trace writer is behind ({writer.pending} spans wait); retry later"
            )
        return writer

    def take(self, spans: list[ReadableSpan]) -> None:
        """Queue ``spans`` on the writer and wait (at most :data:`FLUSH_WAIT_MS`) for them
        to be written (blocking). :class:`TooManySpansError` or :class:`WriterBusyError`
        when its queue cannot take them (see :meth:`admit`)."""
        if not spans:
            return
        writer = self.admit(len(spans))
        for span in spans:
            writer.on_end(span)
        writer.force_flush(FLUSH_WAIT_MS)

    def close(self) -> None:
        with self._lock:
            own, self._own = self._own, None
        if own is not None:
            own.shutdown()  # writes what is queued


class WriterBusyError(TracingError):
    """The writer's queue cannot take a request's spans now (answer 503 / ``UNAVAILABLE``)."""


class TooManySpansError(TracingError):
    """A request holds more spans than the writer's queue ever takes at once: refused for
    good (answer 413 / ``INVALID_ARGUMENT`` without ``RetryInfo``, which exporters do not
    retry)."""


class _Refused(Exception):
    def __init__(self, status: int, code: int, message: str, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _status_body(code: int, message: str, media: str) -> bytes:
    """A ``google.rpc.Status`` in the request's encoding (the spec's error body)."""
    if media == PROTOBUF:
        # googleapis-common-protos comes with the OTLP exporters (it has no type stubs).
        from google.rpc.status_pb2 import Status

        return bytes(Status(code=code, message=message).SerializeToString())
    return orjson.dumps({"code": code, "message": message})


def _error(status: int, code: int, message: str, media: str, **headers: str) -> Response:
    return Response(
        _status_body(code, message, media),
        status_code=status,
        media_type=media,
        headers=headers or None,
    )


def _write(sink: SpanSink, body: bytes, content_type: str, encoding: str | None) -> int:
    """Decode, queue and write (in a worker thread); the number of spans received."""
    request = decode_request(body, content_type, content_encoding=encoding, max_body=sink.max_body)
    count = count_spans(request)
    try:
        if count:
            sink.admit(count)  # refused before the (costly) spans are built
        sink.take(request_to_spans(request))
    except TooManySpansError as exc:
        raise _Refused(413, RESOURCE_EXHAUSTED, str(exc), {}) from None
    except WriterBusyError as exc:
        raise _Refused(503, UNAVAILABLE, str(exc), {"Retry-After": str(RETRY_AFTER_S)}) from None
    return count


@router.post(
    INGEST_PATH,
    summary="Receive spans over OTLP/HTTP (protobuf or JSON) into the trace file",
    response_class=Response,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
                JSON: {"schema": {"type": "object", "description": "OTLP/JSON"}},
            },
        }
    },
    responses={
        200: {
            "description": "accepted: an ExportTraceServiceResponse in the request's encoding",
            "content": {PROTOBUF: {}, JSON: {}},
        },
        400: {"description": "the body is not an OTLP trace export"},
        403: {"description": "read-only dashboard (flock dashboard --db)"},
        413: {
            "description": "the body is too large, or holds more spans than the trace "
            "writer's queue takes at once (2,000,000 by default): send smaller requests"
        },
        415: {
            "description": "not application/x-protobuf or application/json, or an "
            "encoding other than gzip/deflate"
        },
        503: {"description": "the trace writer is behind; retry after Retry-After seconds"},
    },
)
async def receive_traces(
    request: Request, state: Annotated[DashboardState, Depends(get_state)]
) -> Response:
    """An OTLP/HTTP trace export; see the module docstring of ``flock.dashboard._ingest``."""
    content_type = request.headers.get("content-type", "")
    try:
        media = media_type(content_type)
    except OtlpUnsupportedError as exc:
        return _error(
            415,
            INVALID_ARGUMENT,
            str(exc),
            JSON,
            **{"Accept-Post": f"{PROTOBUF}, {JSON}"},
        )
    if state.read_only:
        return _error(
            403,
            PERMISSION_DENIED,
            "this dashboard is read-only (flock dashboard --db views a file): it does not "
            "accept spans; send them to a dashboard serving a Flock (flock serve app:flock, "
            "flock.serve()) or one created with read_only=False",
            media,
        )
    sink = state.sink
    encoding = request.headers.get("content-encoding")
    try:
        body = await read_body(request, sink.max_body)
        await anyio.to_thread.run_sync(
            functools.partial(_write, sink, body, content_type, encoding)
        )
    except _Refused as exc:
        return _error(exc.status, exc.code, exc.message, media, **exc.headers)
    except BodyTooLargeError as exc:
        return _error(413, RESOURCE_EXHAUSTED, str(exc), media)
    except OtlpUnsupportedError as exc:  # the content encoding
        return _error(
            415, INVALID_ARGUMENT, str(exc), media, **{"Accept-Encoding": "gzip, deflate"}
        )
    except OtlpBodyTooLargeError as exc:
        return _error(413, RESOURCE_EXHAUSTED, str(exc), media)
    except OtlpDecodeError as exc:
        return _error(400, INVALID_ARGUMENT, str(exc), media)
    except TracingError as exc:  # the trace file cannot be used (e.g. not a DuckDB file)
        return _error(500, INTERNAL, str(exc), media)
    payload, media = response(content_type)
    return Response(payload, media_type=media)
