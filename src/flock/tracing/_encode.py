"""Encoding finished spans into the Arrow batches the trace writer appends to the file.

This is the per-span cost of tracing to the file (it runs in the writer thread): the loop
reads the SDK's private fields instead of its copying properties, compiles attribute nesting
per key set (:mod:`flock.tracing._attributes`) and fills one list per column.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from flock._errors import describe
from flock.tracing._attributes import (
    attributes_jsons,
    cap,
    has_non_finite,
    nested_json,
    redact_description,
    redact_flat,
    to_json,
)
from flock.tracing.store import COLUMNS, DERIVED, INTEGER_IDS, MAX_ATTRIBUTE_CHARS

if TYPE_CHECKING:
    import pyarrow as pa
    from opentelemetry.sdk.trace import ReadableSpan

    from flock.tracing._attributes import Redactor

__all__ = ["FinishedSpan", "arrow_schema", "replace_surrogates", "spans_to_arrow"]


def _flat_attributes(
    attributes: Mapping[str, Any], max_chars: int, redact: Redactor | None
) -> dict[str, Any]:
    """Attributes kept flat (as OpenTelemetry names them), capped and redacted like a span's:
    those of links and resources."""
    if redact is not None:
        attributes = redact_flat(attributes, redact)
    return {key: cap(value, max_chars) for key, value in attributes.items()}


def _links_json(span_links: Sequence[Any], max_chars: int, redact: Redactor | None) -> str:
    """A span's links as JSON; their attributes flat (``$."flock.artifact.id"``)."""
    return to_json(
        [
            {
                "trace_id": f"{link.context.trace_id:032x}",
                "span_id": f"{link.context.span_id:016x}",
                "attributes": _flat_attributes(link.attributes or {}, max_chars, redact),
            }
            for link in span_links
        ]
    ).decode()


def _resource_columns(
    resource: Any, max_chars: int, redact: Redactor | None
) -> tuple[str | None, str]:
    """(service name, resource JSON) of a span's resource; its attributes flat
    (``$."service.name"``). The ``service`` column is named before redaction."""
    attributes = resource.attributes
    service = attributes.get("service.name")
    try:
        text = to_json(_flat_attributes(attributes, max_chars, redact)).decode()
    except BaseException as exc:  # a redact hook that raises (even SystemExit), say
        text = _unencodable("(resource)", "resource attributes", exc)
    return (str(service) if service is not None else None), text


def _events_json(span_events: Sequence[Any], max_chars: int, redact: Redactor | None) -> str:
    import orjson

    return to_json(
        [
            {
                "name": e.name,
                "timestamp": e.timestamp,
                "attributes": orjson.Fragment(  # already JSON: embedded as it is
                    nested_json(e.attributes or {}, max_chars=max_chars, redact=redact)
                ),
            }
            for e in span_events
        ]
    ).decode()


def _description(
    span: ReadableSpan | FinishedSpan, max_chars: int, redact: Redactor | None
) -> str | None:
    """A span's status description, redacted (as ``STATUS_DESCRIPTION_KEY``) and capped
    like an attribute: it typically holds an exception's message."""
    text: str | None = span._status._description
    if redact is not None and text is not None:
        text = redact_description(
            text, redact, lambda exc: _unencodable(span._name, "status description", exc)
        )
    return None if text is None else cap(text, max_chars)


_UNENCODABLE_REPORTED: set[str] = set()


def _unencodable(span_name: str, what: str, exc: BaseException) -> str:
    """The stand-in JSON for a span's attributes (or one event) that could not be encoded,
    e.g. because a redact hook raised or returned a cyclic value. Logged once per cause."""
    import logging

    import orjson

    reason = describe(exc, 300)
    if reason not in _UNENCODABLE_REPORTED and len(_UNENCODABLE_REPORTED) < 100:
        _UNENCODABLE_REPORTED.add(reason)
        logging.getLogger("flock.tracing").warning(
            "could not encode the %s of span %r (%s); they are stored as "
            '{"flock": {"encode_error": ...}} (further spans failing this way are not logged)',
            what,
            span_name,
            reason,
        )
    return orjson.dumps({"flock": {"encode_error": reason}}).decode()


class FinishedSpan:
    """The parts of a finished span the writer needs, in as few objects as possible.

    A ``ReadableSpan`` is about ten garbage-collected objects (locks, deques, bounded
    containers); spans waiting for the writer would make every collection of the application
    slower. This keeps the same field names, so :func:`spans_to_arrow` takes either.
    """

    __slots__ = (
        "_attributes",
        "_context",
        "_end_time",
        "_events",
        "_kind",
        "_links",
        "_name",
        "_parent",
        "_resource",
        "_start_time",
        "_status",
    )

    def __init__(self, span: ReadableSpan) -> None:
        self._context = span._context
        self._parent = span._parent
        self._name = span._name
        self._kind = span._kind
        self._start_time = span._start_time
        self._end_time = span._end_time
        self._status = span._status
        self._resource = span._resource
        raw = span._attributes
        self._attributes = getattr(raw, "_dict", raw) if raw else None
        self._events = tuple(span._events) if span._events else None
        self._links = tuple(span._links) if span._links else None


def replace_surrogates(span: FinishedSpan) -> None:
    """Replace the lone surrogates in ``span``'s name and status description (UTF-8 has no
    encoding for them, so the span could not be stored) by U+FFFD."""
    import re

    from opentelemetry.trace import Status

    lone = re.compile("[\ud800-\udfff]")
    span._name = lone.sub("\ufffd", span._name)
    status = span._status
    if status is not None and status._description:
        span._status = Status(status._status_code, lone.sub("\ufffd", status._description))


def spans_to_arrow(
    spans: Sequence[ReadableSpan | FinishedSpan],
    *,
    max_chars: int = MAX_ATTRIBUTE_CHARS,
    redact: Redactor | None = None,
) -> pa.Table:
    """Encode finished spans as an Arrow table for :class:`Appender`: the ``spans`` columns,
    with span ids as integers and without the columns the INSERT derives (INSERT_COLUMNS).

    Runs in the writer thread and is the per-span cost of tracing, so the loop is lean: the
    SDK's private fields instead of its copying properties, attribute nesting compiled per
    key set (:func:`~flock.tracing._attributes.attributes_json`), one list per column.
    """
    import pyarrow as pa

    n = len(spans)
    trace_ids: list[str] = [""] * n
    span_ids: list[int] = [0] * n
    parent_ids: list[int | None] = [None] * n
    names: list[str] = [""] * n
    services: list[str | None] = [None] * n
    kinds: list[str] = [""] * n
    starts: list[int] = [0] * n
    ends: list[int] = [0] * n
    status_codes: list[str] = [""] * n
    status_descriptions: list[str | None] = [None] * n
    raws: list[Mapping[str, Any] | None] = [None] * n
    events: list[str] = ["[]"] * n
    links: list[str] = ["[]"] * n
    resources_col: list[str] = ["{}"] * n
    resources: dict[int, tuple[str | None, str]] = {}
    # Trace ids repeat (one for many spans): format each once. Span ids go as integers, and
    # the INSERT formats them, derives ``operation`` and ``duration_ms`` (INSERT_COLUMNS):
    # DuckDB does per row in C what cost ~0.6 µs a span here. SpanContext is a tuple
    # (trace_id, span_id, ...): indexing skips its properties, as ``_name_`` skips the enum
    # machinery. The lookups are written out, not behind a helper: a call per span
    # measurably slows this loop (~0.3 µs a span).
    hex32: dict[int, str] = {}
    for i, span in enumerate(spans):
        ctx = span._context
        start = span._start_time or 0
        end = span._end_time or start
        resource = span._resource
        cached = resources.get(id(resource))
        if cached is None:
            cached = resources[id(resource)] = _resource_columns(resource, max_chars, redact)
        if ctx is not None:
            tid = ctx[0]
            text = hex32.get(tid)
            if text is None:
                text = hex32[tid] = f"{tid:032x}"
            trace_ids[i] = text
            span_ids[i] = ctx[1]
        parent = span._parent
        if parent is not None:
            parent_ids[i] = parent[1]
        names[i] = span._name
        services[i] = cached[0]
        resources_col[i] = cached[1]
        kinds[i] = span._kind._name_
        starts[i] = start
        ends[i] = end
        status = span._status
        status_codes[i] = status._status_code._name_
        if status._description is not None:  # (an exception's message, typically)
            status_descriptions[i] = _description(span, max_chars, redact)
        raw = span._attributes
        if raw:
            raws[i] = getattr(raw, "_dict", raw)
        if span._events:
            try:
                events[i] = _events_json(span._events, max_chars * 4, redact)
            except BaseException as exc:
                events[i] = "[" + _unencodable(span._name, "events", exc) + "]"
        if span._links:
            try:
                links[i] = _links_json(span._links, max_chars, redact)
            except BaseException as exc:
                links[i] = "[" + _unencodable(span._name, "links", exc) + "]"
    # One call for the batch's attributes. Where a span's cannot be encoded (a redact hook
    # that raises, even SystemExit): lose these, not the batch, nor the writer thread.
    attributes = attributes_jsons(
        raws,
        max_chars=max_chars,
        redact=redact,
        failed=lambda i, exc: _unencodable(spans[i]._name, "attributes", exc),
    )
    # The fast path writes NaN and infinities as null: redo the (rare) spans that have one
    # with nested_json, which keeps them. One search per batch, not one per span; "null" in
    # a string value (a JSON payload) is told apart by the values. (With a redact hook every
    # span went through nested_json already.)
    if redact is None and "null" in "\n".join(attributes):
        for i, text in enumerate(attributes):
            raw = spans[i]._attributes
            values = getattr(raw, "_dict", raw)
            if "null" in text and values and has_non_finite(values.values()):
                try:
                    attributes[i] = nested_json(values, max_chars=max_chars, redact=redact)
                except BaseException as exc:
                    attributes[i] = _unencodable(spans[i]._name, "attributes", exc)
    if max(map(len, names), default=0) > max_chars:  # (one pass per batch, not per span)
        names = [cap(name, max_chars) for name in names]
    columns: list[list[Any]] = [
        trace_ids, span_ids, parent_ids, names, services, kinds, starts, ends, status_codes,
        status_descriptions, attributes, events, links, resources_col,
    ]  # fmt: skip
    schema = arrow_schema()
    return pa.Table.from_arrays(
        [_arrow(col, field) for col, field in zip(columns, schema, strict=True)], schema=schema
    )


_NUMBERS = {"span_id": "Q", "start_time": "q", "end_time": "q"}
"""The columns never null, of 64-bit integers: converted through :mod:`array` (a C loop)
rather than pyarrow's per-object conversion (8-12 against 18-20 µs per 256 spans, measured)."""
_NOT_REPEATED = frozenset({"attributes", *_NUMBERS})
"""Columns whose values differ from span to span (not worth looking for a repeated one)."""
_REPEATED: dict[tuple[str, str | None], pa.Array] = {}
_REPEATED_ROWS = 256  # (the writer encodes at most ENCODE_CHUNK = 256 spans at a time)


def _arrow(values: list[Any], field: pa.Field) -> pa.Array:
    """One column of a batch as Arrow. Converting Python objects costs ~0.08 µs a value
    and column, a third of the encoding: most columns hold one value for a whole batch
    (the service, the resource, ``"[]"`` events and links, no status description, ...),
    which comes as a slice of an array made once; the integer columns go through
    :mod:`array`."""
    import pyarrow as pa

    n = len(values)
    name = field.name
    code = _NUMBERS.get(name)
    if code is not None and sys.byteorder == "little":
        try:  # (OverflowError out of range, as pyarrow's)
            numbers = array.array(code, values)
        except TypeError:  # a float time (start_time=time.time() * 1e9): pyarrow takes it
            return pa.array(values, type=field.type, memory_pool=_pool())
        return pa.Array.from_buffers(field.type, n, [None, pa.py_buffer(numbers)])
    if name not in _NOT_REPEATED and 0 < n <= _REPEATED_ROWS:
        first = values[0]
        if (first is None or (first.__class__ is str and len(first) <= 1024)) and values.count(
            first
        ) == n:
            key = (name, first)
            repeated = _REPEATED.get(key)
            if repeated is None:
                repeated = pa.array([first] * _REPEATED_ROWS, type=field.type, memory_pool=_pool())
                if len(_REPEATED) < 64:  # (at most 64 x 256 values of ≤ 1 KB)
                    _REPEATED[key] = repeated
            return repeated.slice(0, n)
    return pa.array(values, type=field.type, memory_pool=_pool())


def _pool() -> pa.MemoryPool:
    """The system allocator, not Arrow's default (mimalloc): with mimalloc, allocating the
    batch's small arrays in this thread while another frees the batches already written
    stalled the event loop for ~5 ms every ~15 ms (loop lag p99 4-6 ms -> 1.4-2.5 ms,
    measured)."""
    import pyarrow as pa

    return pa.system_memory_pool()


_SCHEMA_CACHE: list[pa.Schema] = []


def arrow_schema() -> pa.Schema:
    """The encoded batch: the ``spans`` columns, less those the INSERT derives."""
    if not _SCHEMA_CACHE:
        import pyarrow as pa

        # JSON columns travel as Arrow's canonical JSON type, which DuckDB takes as JSON
        # without re-validating every value (the encoder produced it with orjson).
        types = {"BIGINT": pa.int64(), "DOUBLE": pa.float64(), "JSON": pa.json_(pa.large_string())}
        _SCHEMA_CACHE.append(
            pa.schema(
                [
                    pa.field(
                        name,
                        pa.uint64()
                        if name in INTEGER_IDS
                        else types.get(sql.split()[0], pa.large_string()),
                        nullable="NOT NULL" not in sql,
                    )
                    for name, sql in COLUMNS
                    if name not in DERIVED
                ]
            )
        )
    return _SCHEMA_CACHE[0]
