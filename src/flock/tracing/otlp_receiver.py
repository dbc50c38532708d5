"""Receiving OTLP/HTTP traces (``POST /v1/traces``) into the DuckDB trace file.

Workers of a distributed flock send their spans over OTLP (``OTEL_EXPORTER_OTLP_ENDPOINT``);
the process that owns the trace file accepts them with :func:`receive` and writes them with
its own :class:`~flock.tracing.processor.DuckDBSpanProcessor` — the same background writer,
batching and redaction as local spans — so one file holds the whole distributed trace::

    from flock.tracing.otlp_receiver import receive, response

    # in a web handler for POST /v1/traces:
    count = receive(body, content_type, writer, content_encoding=request_encoding)
    payload, media_type = response(content_type)

Both OTLP/HTTP encodings are accepted: binary protobuf (``application/x-protobuf``) and
OTLP/JSON (``application/json``: hex ids, lowerCamelCase keys, unknown fields ignored), each
optionally gzip-compressed.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from flock.exceptions import TracingError

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.sdk.trace import ReadableSpan

    from flock.tracing.processor import DuckDBSpanProcessor

__all__ = [
    "JSON",
    "MAX_BODY",
    "PROTOBUF",
    "OtlpBodyTooLargeError",
    "OtlpDecodeError",
    "OtlpUnsupportedError",
    "count_spans",
    "decode_request",
    "media_type",
    "receive",
    "request_to_spans",
    "response",
]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MAX_BODY = 64 * 1024 * 1024
"""Largest request body accepted, after decompression (bytes)."""
MAX_TIME_NS = 2**63 - 1
"""The latest time a span may carry (OTLP times are unsigned; the trace file's are int64)."""


class OtlpDecodeError(TracingError, ValueError):
    """The request is not a valid OTLP trace export (answer 400 Bad Request)."""


class OtlpUnsupportedError(OtlpDecodeError):
    """A content type or content encoding this receiver does not speak (answer 415)."""


class OtlpBodyTooLargeError(OtlpDecodeError):
    """The body is larger than allowed once decompressed (answer 413)."""


def media_type(content_type: str) -> str:
    """:data:`PROTOBUF` or :data:`JSON` for a ``Content-Type`` header value.

    Example:
        >>> media_type("application/json; charset=utf-8")
        'application/json'

    Raises:
        OtlpUnsupportedError: any other media type.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media in (PROTOBUF, "application/protobuf"):
        return PROTOBUF
    if media == JSON:
        return JSON
    raise OtlpUnsupportedError(
        f"unsupported content type {content_type!r}; send {PROTOBUF} or {JSON}"
    )


def _decompress(body: bytes, content_encoding: str | None, max_body: int = MAX_BODY) -> bytes:
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        if len(body) > max_body:
            raise OtlpBodyTooLargeError(f"body is larger than {max_body} bytes")
        return body
    if encoding not in ("gzip", "deflate"):
        raise OtlpUnsupportedError(
            f"unsupported content encoding {content_encoding!r}; send gzip, deflate or none"
        )
    try:
        decoder = (
            zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip" else zlib.decompressobj()
        )
        data = decoder.decompress(body, max_body + 1)
    except zlib.error as exc:
        raise OtlpDecodeError(f"body is not valid {encoding}: {exc}") from exc
    if len(data) > max_body:
        raise OtlpBodyTooLargeError(f"body is larger than {max_body} bytes once decompressed")
    if not decoder.eof:  # cut short (a gzip body without its checksum trailer, say)
        raise OtlpDecodeError(f"body is not valid {encoding}: it ends before its stream does")
    return data


def decode_request(
    body: bytes,
    content_type: str,
    *,
    content_encoding: str | None = None,
    max_body: int = MAX_BODY,
) -> ExportTraceServiceRequest:
    """An OTLP/HTTP request body as an ``ExportTraceServiceRequest``.

    ``max_body`` bounds the body after decompression (bytes).

    Raises:
        OtlpUnsupportedError: unsupported content type or encoding.
        OtlpBodyTooLargeError: the body is larger than ``max_body`` once decompressed.
        OtlpDecodeError: a malformed body.
    """
    from google.protobuf.json_format import ParseDict, ParseError
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    media = media_type(content_type)
    data = _decompress(body, content_encoding, max_body)
    request = ExportTraceServiceRequest()
    if media == PROTOBUF:
        try:
            request.ParseFromString(data)
        except DecodeError as exc:
            raise OtlpDecodeError(f"body is not an OTLP protobuf request: {exc}") from exc
        return request
    try:
        doc = orjson.loads(data)
        if not isinstance(doc, dict):
            raise OtlpDecodeError("OTLP/JSON body must be an object with resourceSpans")
        _hex_ids_to_base64(doc)
        ParseDict(doc, request, ignore_unknown_fields=True)
    except (orjson.JSONDecodeError, ParseError, ValueError, TypeError, AttributeError) as exc:
        if isinstance(exc, OtlpDecodeError):
            raise
        raise OtlpDecodeError(f"body is not an OTLP/JSON request: {exc}") from exc
    return request


def _hex_ids_to_base64(doc: dict[str, Any]) -> None:
    """OTLP/JSON carries ids as hex; the protobuf JSON mapping expects base64 bytes."""
    for resource_spans in doc.get("resourceSpans") or ():
        for scope_spans in resource_spans.get("scopeSpans") or ():
            for span in scope_spans.get("spans") or ():
                for item in (span, *(span.get("links") or ())):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        value = item.get(key)
                        if value:
                            item[key] = base64.b64encode(bytes.fromhex(value)).decode()


def _value(value: AnyValue, *, nested: bool = False) -> Any:
    """An OTLP attribute value as an OpenTelemetry one: a scalar or a list of scalars of one
    type; a key-value list or any other list becomes its JSON text. Nested values are
    converted as data and encoded once, at the top: encoding each level as a string inside
    the next one doubled the escaping per level (a 400-byte request of 30 nested lists asked
    for gigabytes)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        items = [_value(v, nested=True) for v in value.array_value.values]
        if nested:
            return items
        scalars = [v for v in items if isinstance(v, str | bool | int | float)]
        if len(scalars) == len(items) and len({type(v) for v in scalars}) <= 1:
            return items
        return orjson.dumps(items, default=str).decode()
    if kind == "kvlist_value":
        values = _dict(value.kvlist_value.values, nested=True)
        return values if nested else orjson.dumps(values, default=str).decode()
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def _dict(values: Sequence[KeyValue], *, nested: bool = False) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for kv in values:
        v = _value(kv.value, nested=nested)
        if v is not None:
            result[kv.key] = v
    return result


def count_spans(request: ExportTraceServiceRequest) -> int:
    """The number of spans in a request, without building them (cheap: a few ms for a
    million spans)."""
    return sum(
        len(scope_spans.spans)
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
    )


def request_to_spans(request: ExportTraceServiceRequest) -> list[ReadableSpan]:
    """The spans of a request as finished SDK spans (what the trace writer takes)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

    kinds = list(SpanKind)  # INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER = proto kind - 1
    codes = (StatusCode.UNSET, StatusCode.OK, StatusCode.ERROR)
    spans: list[ReadableSpan] = []
    for resource_spans in request.resource_spans:
        resource = Resource(_dict(resource_spans.resource.attributes))
        for scope_spans in resource_spans.scope_spans:
            scope = InstrumentationScope(
                scope_spans.scope.name or "otlp", scope_spans.scope.version or None
            )
            for s in scope_spans.spans:
                if len(s.trace_id) != 16 or len(s.span_id) != 8:
                    raise OtlpDecodeError(
                        f"span {s.name!r} has an invalid trace id or span id "
                        f"({len(s.trace_id)} and {len(s.span_id)} bytes, want 16 and 8)"
                    )
                end = s.end_time_unix_nano or s.start_time_unix_nano
                if max(s.start_time_unix_nano, end) > MAX_TIME_NS:
                    raise OtlpDecodeError(
                        f"span {s.name!r} has a start or end time after the year 2262 "
                        f"({s.start_time_unix_nano} and {end} ns since 1970): not a time "
                        "a trace file (int64 nanoseconds) can hold"
                    )
                trace_id = int.from_bytes(s.trace_id, "big")
                # Exporters often leave the trace flags out; an exported span was sampled.
                flags = TraceFlags((s.flags & 0xFF) or TraceFlags.SAMPLED)
                parent = None
                if len(s.parent_span_id) == 8:
                    parent_id = int.from_bytes(s.parent_span_id, "big")
                    parent = SpanContext(trace_id, parent_id, is_remote=True, trace_flags=flags)
                code = codes[s.status.code] if 0 <= s.status.code < len(codes) else codes[0]
                spans.append(
                    ReadableSpan(
                        name=s.name,
                        context=SpanContext(
                            trace_id, int.from_bytes(s.span_id, "big"), False, flags
                        ),
                        parent=parent,
                        resource=resource,
                        attributes=_dict(s.attributes),
                        events=[
                            Event(
                                e.name,
                                attributes=_dict(e.attributes),
                                timestamp=e.time_unix_nano,
                                limit=None,
                            )
                            for e in s.events
                        ],
                        links=[
                            Link(
                                SpanContext(
                                    int.from_bytes(link.trace_id, "big"),
                                    int.from_bytes(link.span_id, "big"),
                                    True,
                                    TraceFlags(link.flags & 0xFF),
                                ),
                                attributes=_dict(link.attributes),
                            )
                            for link in s.links
                            if len(link.trace_id) == 16 and len(link.span_id) == 8
                        ],
                        kind=kinds[s.kind - 1] if 1 <= s.kind <= len(kinds) else kinds[0],
                        status=Status(code, s.status.message if code is StatusCode.ERROR else None),
                        start_time=s.start_time_unix_nano,
                        end_time=end,
                        instrumentation_scope=scope,
                    )
                )
    return spans


def receive(
    body: bytes,
    content_type: str,
    writer: DuckDBSpanProcessor,
    *,
    content_encoding: str | None = None,
) -> int:
    """Decode an OTLP/HTTP trace export and queue its spans on ``writer``; returns the count.

    The spans are encoded at once (``writer.request_flush()``) and reach the file at the
    writer's next flush interval, or at once with ``writer.force_flush()``.

    Raises:
        OtlpDecodeError: the request is malformed (nothing was queued).
    """
    spans = request_to_spans(decode_request(body, content_type, content_encoding=content_encoding))
    for span in spans:
        writer.on_end(span)
    if spans:
        writer.request_flush()
    return len(spans)


def response(content_type: str) -> tuple[bytes, str]:
    """The success body (an empty ``ExportTraceServiceResponse``) and its media type, in the
    encoding of the request."""
    media = media_type(content_type)
    if media == JSON:
        return b"{}", JSON
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceResponse,
    )

    return ExportTraceServiceResponse().SerializeToString(), PROTOBUF
