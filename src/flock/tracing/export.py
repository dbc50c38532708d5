"""Stored traces out as OTLP: the OTLP/JSON encoding, and replay to an OTLP/HTTP receiver.

Rows of the ``spans`` table become OpenTelemetry SDK ``ReadableSpan`` objects again, which
the OTLP exporter's own encoder (``opentelemetry-exporter-otlp-proto-common``) turns into an
``ExportTraceServiceRequest`` — so what we send is exactly what a live OTLP exporter would
have sent, and nothing here writes protobuf by hand::

    from flock.tracing.export import export_json, send_otlp
    from flock.tracing.query import TraceStore

    store = TraceStore(".flock/traces.duckdb")
    trace_id = store.latest_trace_id()
    print(export_json(store, [trace_id]))                        # OTLP/JSON document
    send_otlp(store, [trace_id], "http://127.0.0.1:6006")        # POST …/v1/traces

The JSON is the official OTLP/JSON encoding (the protobuf JSON mapping with lowerCamelCase
keys, trace and span ids as hex strings, 64-bit integers and nanosecond times as decimal
strings, enums as integers). Attributes, stored nested in the trace file, are flattened back
to their dotted keys (``{"flock": {"workflow": true}}`` -> ``flock.workflow``).

Not stored, so not exported: the instrumentation scope (every span gets scope ``flock``),
trace state and flags (spans are sent as sampled), and dropped-attribute counts.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import http.client
import io
import os
import re
import stat
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from string import hexdigits
from typing import IO, TYPE_CHECKING, Any, Literal

import orjson

from flock.exceptions import TracingError
from flock.tracing._attributes import flatten

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan

    from flock.tracing.query import TraceStore

__all__ = [
    "ExportError",
    "OtlpProtocol",
    "TraceFailure",
    "check_header",
    "encode_request",
    "export_json",
    "iter_trace_spans",
    "parse_otlp_json",
    "post_request",
    "request_to_json",
    "rows_to_spans",
    "send_otlp",
    "to_otlp_json",
    "trace_ids_for_export",
    "traces_endpoint",
    "write_json_file",
    "write_json_lines",
]

OtlpProtocol = Literal["http/protobuf", "http/json"]

_COLUMNS = (
    "trace_id, span_id, parent_id, name, kind, start_time, end_time, status_code, "
    "status_description, attributes, events, links, resource"
)
_ID_KEYS = ("traceId", "spanId", "parentSpanId")
_READ_CHUNK = 200
"""Traces read per short read-only connection."""


@dataclass(frozen=True)
class TraceFailure:
    """A trace that could not be exported, and why (one line, e.g. ``no trace '…' in …``)."""

    trace_id: str
    reason: str


class ExportError(TracingError):
    """An export of stored traces that did not export them all.

    Raised once the export has gone through every trace it could: a trace that cannot be
    read or encoded (not in the file, a span OTLP cannot hold) or whose request the receiver
    refused is a :attr:`failures` entry, and the other traces are exported all the same. An
    export *stops* early (:attr:`stopped` says why; the :attr:`not_sent` traces it did not
    get to are not in :attr:`failures`) only when going on could not help: the trace file
    cannot be read any more, or the OTLP receiver is unreachable, does not speak HTTP, or
    refuses for a reason that holds for every request (401, 403, 404, 405, 407, 408, 415,
    429, 502, 503, 504).

    ``str()`` is the reason alone when one trace was asked for; otherwise a count and every
    failure, ``trace id: reason``, joined by ``; ``.
    """

    def __init__(
        self,
        *,
        total: int,
        traces: int,
        spans: int,
        failures: Sequence[TraceFailure] = (),
        stopped: str | None = None,
        not_sent: int = 0,
    ) -> None:
        self.total = total
        """Traces asked for."""
        self.traces = traces
        """Traces exported (written, or every span accepted by the receiver)."""
        self.spans = spans
        """Spans exported."""
        self.failures = list(failures)
        """Each trace that could not be exported, in the order met."""
        self.stopped = stopped
        """Why the export stopped before its end, or ``None``."""
        self.not_sent = not_sent
        """Traces not exported because the export stopped (not in :attr:`failures`)."""
        reasons = [f.reason for f in self.failures] + ([stopped] if stopped else [])
        if total == 1 and len(reasons) == 1:
            message = reasons[0]
        else:
            parts = [f"{f.trace_id}: {f.reason}" for f in self.failures]
            if stopped:
                parts.append(f"stopped, {not_sent} not exported: {stopped}")
            message = f"{self.not_exported} of {total} traces not exported: " + "; ".join(parts)
        super().__init__(message)

    @property
    def not_exported(self) -> int:
        """Traces asked for but not exported: :attr:`failures` and :attr:`not_sent`."""
        return len(self.failures) + self.not_sent


class _Tally:
    """What an export has done so far: the traces settled (for ``progress``), those
    exported and their spans, the failures; and the :class:`ExportError` that says so."""

    def __init__(
        self, trace_ids: Sequence[str], progress: Callable[[int, int], None] | None
    ) -> None:
        self.total = len(trace_ids)
        self.progress = progress
        self.done = self.traces = self.spans = 0
        self.failures: list[TraceFailure] = []

    def exported(self, spans: int) -> None:
        self.traces += 1
        self.spans += spans
        self._settled(spans)

    def failed(self, failure: TraceFailure) -> None:
        self.failures.append(failure)
        self._settled(0)

    def _settled(self, spans: int) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, spans)

    def error(self, stopped: str | None = None) -> ExportError:
        """The export's error: its failures, and why it stopped before its end, if it did
        (the traces it did not get to are then ``not_sent``)."""
        return ExportError(
            total=self.total,
            traces=self.traces,
            spans=self.spans,
            failures=self.failures,
            stopped=stopped,
            not_sent=self.total - self.done if stopped is not None else 0,
        )


def trace_ids_for_export(
    store: TraceStore, *, name: str | None = None, since_ns: int | None = None
) -> list[str]:
    """Every trace id in the file (optionally filtered like ``traces list``), oldest first."""
    summaries = store.list_traces(limit=2**62, name=name, since_ns=since_ns)
    return [t.trace_id for t in reversed(summaries)]


def iter_trace_spans(
    store: TraceStore,
    trace_ids: Sequence[str],
    *,
    on_failure: Callable[[TraceFailure], None] | None = None,
) -> Iterator[tuple[str, list[ReadableSpan]]]:
    """``(trace_id, spans)`` for each trace, in the given order; spans by start time.

    Reads a chunk of traces per connection, so the file is never held for long. A trace id
    that is not in the file, or a span OTLP cannot hold (see :func:`rows_to_spans`), raises
    :class:`TracingError` — or, with ``on_failure``, is passed to it as a
    :class:`TraceFailure` and skipped, and the other traces follow. A file that cannot be
    read raises :class:`TracingError` either way.
    """
    resources: dict[str, Resource] = {}
    for first in range(0, len(trace_ids), _READ_CHUNK):
        chunk = list(trace_ids[first : first + _READ_CHUNK])
        with store.connect() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM spans WHERE list_contains(?, trace_id) "
                "ORDER BY trace_id, start_time",
                [chunk],
            ).fetchall()
        by_trace: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            by_trace.setdefault(row[0], []).append(row)
        for trace_id in chunk:
            if trace_id not in by_trace:
                reason = f"no trace {trace_id!r} in {str(store.path)!r}"
            else:
                try:
                    spans = rows_to_spans(by_trace[trace_id], resources=resources)
                except ValueError as exc:  # a span OTLP cannot hold (a crafted or corrupt file)
                    reason = f"cannot export {str(store.path)!r}: {exc}"
                else:
                    yield trace_id, spans
                    continue
            if on_failure is None:
                raise TracingError(reason)
            on_failure(TraceFailure(trace_id, reason))


_INT64 = range(-(2**63), 2**63)
"""What an OTLP ``int_value`` holds."""


def _json(value: Any, kind: type[dict[str, Any]] | type[list[Any]], column: str) -> Any:
    """A JSON column's value, ``kind()`` for SQL NULL or JSON ``null``.

    Raises:
        ValueError: it is JSON of another kind (``[]`` for attributes, ``1`` for events) or
            holds a number no double can hold (``1e400``).
    """
    if value is None or value == "":
        return kind()
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{column} is not JSON flock can read: {exc}") from None
    if decoded is None:
        return kind()
    if not isinstance(decoded, kind):
        want = "object" if kind is dict else "array"
        raise ValueError(f"{column} {_shorten(value)} is not a JSON {want}")
    return decoded


def _shorten(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _hex_id(value: Any, digits: int, column: str) -> int:
    """A stored trace (32 hex digits) or span id (16) as an integer.

    Raises:
        ValueError: not 1 to ``digits`` hex digits (e.g. ``'not-hex-id'``, ``''``).
    """
    if isinstance(value, str) and 0 < len(value) <= digits and not value.strip(hexdigits):
        return int(value, 16)
    raise ValueError(f"{column} {_shorten(value)} is not an id of 1 to {digits} hex digits")


def _time(value: Any, column: str) -> int | None:
    """A time in nanoseconds since 1970 (OTLP's unsigned 64-bit field); ``None`` stays."""
    if value is None or (isinstance(value, int) and 0 <= value < 2**64):
        return value
    raise ValueError(f"{column} {_shorten(value)} is not a time OTLP can hold (ns since 1970)")


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{what} {_shorten(value)} is not a JSON object")
    return value


def _value(value: Any) -> Any:
    """An attribute value as OTLP can hold it: an integer beyond 64 bits as its digits (as
    the trace file stores one), inside arrays and maps too."""
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        return str(value)
    if isinstance(value, list):
        return [_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _value(v) for k, v in value.items()}
    return value


def _attributes(values: Any, what: str) -> dict[str, Any]:
    return {k: _value(v) for k, v in flatten(_object(values, what)).items() if v is not None}


def rows_to_spans(
    rows: Sequence[Sequence[Any]], *, resources: dict[str, Resource] | None = None
) -> list[ReadableSpan]:
    """Rows of ``SELECT trace_id, span_id, parent_id, name, kind, start_time, end_time,
    status_code, status_description, attributes, events, links, resource FROM spans`` as
    finished SDK spans.

    Raises:
        ValueError: a row OTLP cannot hold, naming the span and the value: an id that is not
            hex (``'not-hex-id'``, ``''``) or too long, a negative time, JSON of the wrong
            kind (attributes ``[]``, events ``1``).
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

    from flock import __version__

    scope = InstrumentationScope("flock", __version__)
    sampled = TraceFlags(TraceFlags.SAMPLED)
    resources = {} if resources is None else resources
    spans: list[ReadableSpan] = []
    for (
        trace_hex, span_hex, parent_hex, name, kind, start, end, status_code,
        status_description, attributes, events, links, resource,
    ) in rows:  # fmt: skip
        try:
            trace_id = _hex_id(trace_hex, 32, "trace_id")
            res = resources.get(resource or "")
            if res is None:
                res = Resource(_value(_json(resource, dict, "resource")))
                resources[resource or ""] = res
            code = (
                StatusCode[status_code]
                if status_code in StatusCode.__members__
                else StatusCode.UNSET
            )
            span_events = []
            for e in _json(events, list, "events"):
                e = _object(e, "an event")
                event_name = e.get("name", "")
                if not isinstance(event_name, str):
                    raise ValueError(f"an event's name {_shorten(event_name)} is not text")
                span_events.append(
                    Event(
                        event_name,
                        attributes=_attributes(e.get("attributes"), "an event's attributes"),
                        timestamp=_time(e.get("timestamp"), "an event's timestamp"),
                        limit=None,
                    )
                )
            span_links = []
            for link in _json(links, list, "links"):
                link = _object(link, "a link")
                span_links.append(
                    Link(
                        SpanContext(
                            _hex_id(link.get("trace_id"), 32, "a link's trace_id"),
                            _hex_id(link.get("span_id"), 16, "a link's span_id"),
                            False,
                            sampled,
                        ),
                        attributes=_attributes(link.get("attributes"), "a link's attributes"),
                    )
                )
            spans.append(
                ReadableSpan(
                    name=name,
                    context=SpanContext(trace_id, _hex_id(span_hex, 16, "span_id"), False, sampled),
                    parent=(
                        SpanContext(trace_id, _hex_id(parent_hex, 16, "parent_id"), False, sampled)
                        if parent_hex
                        else None
                    ),
                    resource=res,
                    attributes=_attributes(_json(attributes, dict, "attributes"), "attributes"),
                    events=span_events,
                    links=span_links,
                    kind=SpanKind[kind] if kind in SpanKind.__members__ else SpanKind.INTERNAL,
                    status=Status(code, status_description if code is StatusCode.ERROR else None),
                    start_time=_time(start, "start_time"),
                    end_time=_time(end, "end_time"),
                    instrumentation_scope=scope,
                )
            )
        except ValueError as exc:
            raise ValueError(
                f"span {_shorten(span_hex)} ({_shorten(name)}) of trace {_shorten(trace_hex)}: {exc}"
            ) from None
    return spans


def encode_request(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """The OTLP ``ExportTraceServiceRequest`` for these spans (the OTLP exporter's encoder)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return encode_spans(spans)


def _map_ids(doc: Any, convert: Callable[[str], str]) -> None:
    for resource_spans in doc.get("resourceSpans", ()):
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                for item in (span, *span.get("links", ())):
                    for key in _ID_KEYS:
                        if item.get(key):
                            item[key] = convert(item[key])


def request_to_json(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """An ``ExportTraceServiceRequest`` as an OTLP/JSON document."""
    from google.protobuf.json_format import MessageToDict

    doc: dict[str, Any] = MessageToDict(request, use_integers_for_enums=True)
    # The protobuf JSON mapping writes bytes as base64; OTLP/JSON wants ids in hex.
    _map_ids(doc, lambda b64: base64.b64decode(b64).hex())
    return doc


def to_otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """The OTLP/JSON document (``{"resourceSpans": [...]}``) for these spans."""
    return request_to_json(encode_request(spans))


def parse_otlp_json(doc: Mapping[str, Any] | str | bytes) -> ExportTraceServiceRequest:
    """An OTLP/JSON document back to an ``ExportTraceServiceRequest`` (strict: unknown
    fields are errors), e.g. to check or re-send an exported file."""
    from google.protobuf.json_format import ParseDict
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    data: Any = (
        orjson.loads(doc) if isinstance(doc, str | bytes) else orjson.loads(orjson.dumps(doc))
    )
    _map_ids(data, lambda hex_id: base64.b64encode(bytes.fromhex(hex_id)).decode())
    request = ExportTraceServiceRequest()
    ParseDict(data, request)
    return request


def write_json_lines(
    store: TraceStore,
    trace_ids: Sequence[str],
    out: IO[str],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Write OTLP/JSON Lines for these traces to ``out``: one ``ExportTraceServiceRequest``
    per trace and line (the format of the OpenTelemetry Collector's file exporter and its
    ``otlpjsonfile`` receiver; a single trace is a plain JSON document that can be POSTed to
    ``/v1/traces`` as it is). Returns ``(traces, spans)`` written; ``progress(traces_done,
    spans_of_trace)`` is called after each trace (written, or failed with 0 spans).

    Raises:
        ExportError: some traces could not be exported (not in the file, a span OTLP cannot
            hold); raised after every other trace was written. Also when the file cannot
            be read any more after some traces were done (``stopped``).
        TracingError: the file cannot be read at all (no file, held by another process).
    """
    tally = _Tally(trace_ids, progress)
    try:
        for trace_id, spans in iter_trace_spans(store, trace_ids, on_failure=tally.failed):
            try:
                line = orjson.dumps(to_otlp_json(spans)).decode()
            except (ValueError, TypeError) as exc:  # what the OTLP encoder cannot take
                tally.failed(TraceFailure(trace_id, f"cannot encode trace {trace_id!r}: {exc}"))
                continue
            out.write(line)
            out.write("\n")
            tally.exported(len(spans))
    except ExportError:
        raise
    except TracingError as exc:  # the file cannot be read (any more)
        if not tally.done:
            raise
        raise tally.error(stopped=str(exc)) from None
    if tally.failures:
        raise tally.error()
    return tally.traces, tally.spans


def export_json(store: TraceStore, trace_ids: Sequence[str]) -> str:
    """OTLP/JSON Lines for these traces as a string (see :func:`write_json_lines`)."""
    buffer = io.StringIO()
    write_json_lines(store, trace_ids, buffer)
    return buffer.getvalue()


def write_json_file(
    store: TraceStore,
    trace_ids: Sequence[str],
    path: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """:func:`write_json_lines` into the file at ``path``; returns ``(traces, spans)``.

    A regular file (or a new one) is replaced whole: written beside it (``NAME.part``) and
    renamed over it once the export has gone through every trace, so no reader sees half an
    export (its permissions are kept). When some traces cannot be exported the file holds
    the others and :class:`ExportError` names the missing ones; an export that wrote no trace
    at all leaves the old file as it was. Anything else that can be opened for writing — a
    FIFO, a terminal, a character device — is written to as it is. A symlink is followed:
    its target is written (or replaced), the link stays.

    Raises:
        ExportError: some traces could not be exported (see :func:`write_json_lines`).
        TracingError: the trace file cannot be read.
        OSError: the path cannot be written (a directory, a missing folder, no permission).
    """
    name = os.fspath(path)
    try:
        info: os.stat_result | None = os.stat(name)  # through symlinks
    except FileNotFoundError:  # a new file, or a symlink to one
        info = None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), name)
    if info is not None and not stat.S_ISREG(info.st_mode):
        with open(name, "w", encoding="utf-8") as out:
            return write_json_lines(store, trace_ids, out, progress=progress)
    target = os.path.realpath(name)  # the file itself, not a symlink to it
    tmp = target + ".part"
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            if info is not None:
                os.chmod(tmp, stat.S_IMODE(info.st_mode))
            try:
                result = write_json_lines(store, trace_ids, out, progress=progress)
            except ExportError as exc:
                partial: ExportError | None = exc
                result = (exc.traces, exc.spans)
            else:
                partial = None
        if result[0] or partial is None:  # the traces that could be exported
            os.replace(tmp, target)
        if partial is not None:
            raise partial
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return result


def traces_endpoint(url: str) -> str:
    """``http://host:4318`` -> ``http://host:4318/v1/traces`` (left alone if it has that, so
    applying it twice changes nothing).

    Raises:
        ValueError: not an ``http(s)://host[:port]`` URL (no host, a port that is not a
            number from 0 to 65535, an unclosed ``[`` of an IPv6 address, spaces).

    Example:
        >>> traces_endpoint("http://127.0.0.1:6006/")
        'http://127.0.0.1:6006/v1/traces'
        >>> traces_endpoint(traces_endpoint("https://[::1]:4318?project=x"))
        'https://[::1]:4318/v1/traces?project=x'
    """
    url = url.strip()
    example = "(e.g. http://127.0.0.1:6006)"
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError(f"not a URL: {url!r} holds spaces or control characters {example}")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {url!r}: {exc} {example}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL with a host: {url!r} {example}")
    path = parts.path.rstrip("/")
    if not path.endswith("/v1/traces"):
        path += "/v1/traces"
    return urllib.parse.urlunsplit(parts._replace(path=path))


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP header name (RFC 9110 token)."""


def check_header(name: str, value: str) -> None:
    """Raise ``ValueError`` saying why ``name: value`` cannot be sent as an HTTP header.

    Example:
        >>> check_header("x-project-name", "pizza")
        >>> check_header("X", "a\\nb")
        Traceback (most recent call last):
        ...
        ValueError: the value of header 'X' holds a character other than printable ASCII: '\\n'
    """
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"{name!r} is not an HTTP header name (letters, digits, -_.!#$%&'*+^`|~)")
    for c in value:
        if not (" " <= c <= "~" or c == "\t"):
            raise ValueError(
                f"the value of header {name!r} holds a character other than printable ASCII: {c!r}"
            )


def post_request(
    url: str,
    request: ExportTraceServiceRequest,
    *,
    protocol: OtlpProtocol = "http/protobuf",
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> None:
    """POST one request to an OTLP/HTTP traces endpoint (the full URL); raises
    :class:`TracingError` with a readable message when the receiver is unreachable, does not
    speak HTTP or refuses it, or the URL or a header (see :func:`check_header`) cannot be
    sent."""
    if protocol == "http/json":
        body, content_type = orjson.dumps(request_to_json(request)), "application/json"
    elif protocol == "http/protobuf":
        body, content_type = request.SerializeToString(), "application/x-protobuf"
    else:
        raise ValueError(f"protocol must be 'http/protobuf' or 'http/json', not {protocol!r}")
    try:
        for name, value in (headers or {}).items():
            check_header(name, value)
        req = urllib.request.Request(
            url, data=body, method="POST", headers={**(headers or {}), "Content-Type": content_type}
        )
    except ValueError as exc:  # a header that cannot be sent, a URL that is not one
        raise TracingError(f"cannot send to {url!r}: {exc}") from None
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        detail = _refusal_message(exc.read(64 * 1024), exc.headers.get("Content-Type", ""))
        raise _Refused(
            f"{url} refused the spans: HTTP {exc.code} {exc.reason}"
            + (f" — {detail}" if detail else ""),
            exc.code,
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TracingError(f"cannot reach {url}: {reason}") from None
    except (http.client.HTTPException, ValueError) as exc:  # not HTTP, a bad URL or header
        raise TracingError(f"cannot send to {url!r}: {type(exc).__name__}: {exc}") from None


class _Refused(TracingError):
    """The receiver answered with an HTTP error ``status``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


_ENDPOINT_REFUSALS = frozenset({401, 403, 404, 405, 407, 408, 415, 429, 502, 503, 504})
"""HTTP errors about the receiver, not the spans (auth, a wrong URL or protocol, overload,
a receiver down behind a proxy): every later request would get them too, so an export
stops at the first. Other errors (400, 413, 422, 500, …) fail the request's traces only."""


def _refusal_message(body: bytes, content_type: str) -> str:
    """The message of an OTLP receiver's error reply (a ``google.rpc.Status``, protobuf or
    JSON), else the body's printable text; at most 300 characters."""
    message: object = None
    if "protobuf" in content_type:
        from google.protobuf.message import DecodeError
        from google.rpc.status_pb2 import Status

        with contextlib.suppress(DecodeError):
            message = Status.FromString(body).message
    elif "json" in content_type:
        with contextlib.suppress(ValueError):
            decoded = orjson.loads(body)
            message = decoded.get("message") if isinstance(decoded, dict) else None
    if not isinstance(message, str) or not message:
        message = body.decode("utf-8", "replace")
    return "".join(c for c in message if c.isprintable() or c == " ").strip()[:300]


def send_otlp(
    store: TraceStore,
    trace_ids: Sequence[str],
    endpoint: str,
    *,
    protocol: OtlpProtocol = "http/protobuf",
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    max_spans_per_request: int = 1000,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, int]:
    """Replay stored traces to an OTLP/HTTP receiver; returns ``(traces, spans)`` sent.

    ``endpoint`` is the receiver's base URL (``/v1/traces`` is added) or the full traces URL.
    Traces are batched into requests of at most ``max_spans_per_request`` spans (a larger
    trace is split across requests; when one of its requests is refused, the rest of it is
    not sent, but the parts already accepted stay at the receiver). The traces and spans
    returned, and counted in :class:`ExportError`, are those of the traces sent whole.
    ``progress(traces_done, spans_of_trace)`` is called as each trace is settled: sent (all
    its requests accepted) or failed (0 spans).

    Raises:
        ExportError: some traces could not be sent — not in the file, a span OTLP cannot
            hold, or a request holding spans of theirs refused (e.g. HTTP 400 or 413) —
            raised after every other trace was sent. The export *stops* at once, with the
            traces not yet sent counted in ``not_sent``, when going on cannot help: the
            receiver is unreachable, does not speak HTTP, or refuses for a reason about
            itself (see :data:`_ENDPOINT_REFUSALS`: 401, 403, 404, 429, 503, …), or the
            trace file cannot be read any more.
        TracingError: the trace file cannot be read at all.
    """
    url = traces_endpoint(endpoint)
    batch: list[ReadableSpan] = []
    # the traces with spans in the batch: their span count once their last spans are in it
    in_batch: dict[str, int | None] = {}
    failed: set[str] = set()
    tally = _Tally(trace_ids, progress)

    def fail(failure: TraceFailure) -> None:
        if failure.trace_id not in failed:  # a trace split over requests fails once
            failed.add(failure.trace_id)
            tally.failed(failure)

    def flush() -> None:
        if not batch:
            return
        try:
            post_request(
                url, encode_request(batch), protocol=protocol, headers=headers, timeout=timeout
            )
        except _Refused as exc:
            if exc.status in _ENDPOINT_REFUSALS:
                raise tally.error(stopped=str(exc)) from None
            for trace_id in in_batch:
                fail(TraceFailure(trace_id, str(exc)))
        except TracingError as exc:  # unreachable, not HTTP: so is every later request
            raise tally.error(stopped=str(exc)) from None
        else:  # counted when a trace's last part is in: spans of the traces sent whole
            for trace_id, count in in_batch.items():
                if count is not None and trace_id not in failed:
                    tally.exported(count)
        batch.clear()
        in_batch.clear()

    try:
        for trace_id, spans in iter_trace_spans(store, trace_ids, on_failure=fail):
            if batch and len(batch) + len(spans) > max_spans_per_request:
                flush()
            # A trace larger than a request is split (receivers limit request sizes; flock's
            # dashboard takes 64 MiB), as a live exporter sends it in batches.
            for start in range(0, len(spans), max_spans_per_request):
                if len(batch) >= max_spans_per_request:
                    flush()
                if trace_id in failed:  # a request with its first spans was refused: the
                    break  # rest would only add to a partial trace at the receiver
                batch.extend(spans[start : start + max_spans_per_request])
                in_batch[trace_id] = None
            else:
                in_batch[trace_id] = len(spans)
    except ExportError:
        raise
    except TracingError as exc:  # the file cannot be read (any more)
        if not tally.done and not batch:
            raise
        flush()  # what was read still goes
        raise tally.error(stopped=str(exc)) from None
    flush()
    if tally.failures:
        raise tally.error()
    return tally.traces, tally.spans
