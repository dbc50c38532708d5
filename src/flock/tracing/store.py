"""The DuckDB trace file: its ``spans`` table, span-to-row encoding, and clearing it.

One row per span; times are integer nanoseconds since the epoch; ``attributes`` is nested
JSON (see :mod:`flock.tracing._attributes`) so the queries of the docs work as printed::

    SELECT trace_id,
           json_extract(attributes, '$.workflow.name') AS workflow_name,
           COUNT(*) AS span_count,
           MIN(start_time) AS start_time, MAX(end_time) AS end_time,
           (MAX(end_time) - MIN(start_time)) / 1000000.0 AS duration_ms
    FROM spans
    WHERE json_extract(attributes, '$.flock.workflow') = 'true'
    GROUP BY trace_id, workflow_name
    ORDER BY start_time DESC
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa
    from opentelemetry.sdk.trace import ReadableSpan

    from flock.tracing._attributes import Redactor

__all__ = ["DEFAULT_DB_PATH", "SCHEMA", "clear_traces", "connect", "spans_to_arrow"]

DEFAULT_DB_PATH = ".flock/traces.duckdb"

COLUMNS: tuple[tuple[str, str], ...] = (
    ("trace_id", "VARCHAR NOT NULL"),
    ("span_id", "VARCHAR NOT NULL"),
    ("parent_id", "VARCHAR"),
    ("name", "VARCHAR NOT NULL"),
    ("service", "VARCHAR"),
    ("operation", "VARCHAR"),
    ("kind", "VARCHAR"),
    ("start_time", "BIGINT NOT NULL"),
    ("end_time", "BIGINT NOT NULL"),
    ("duration_ms", "DOUBLE NOT NULL"),
    ("status_code", "VARCHAR NOT NULL"),
    ("status_description", "VARCHAR"),
    ("attributes", "JSON"),
    ("events", "JSON"),
    ("links", "JSON"),
    ("resource", "JSON"),
)
SCHEMA = "CREATE TABLE IF NOT EXISTS spans (\n    {}\n)".format(
    ",\n    ".join(f"{name} {sql_type}" for name, sql_type in COLUMNS)
)


def connect(path: str | os.PathLike[str], *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the trace file (creating it and the table unless ``read_only``)."""
    import duckdb

    if read_only:
        return duckdb.connect(str(path), read_only=True)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = duckdb.connect(str(path))
    try:
        conn.execute(SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


def _dumps(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value, default=str)


def _raw(obj: Any, private: str, public: str) -> Any:
    # The SDK's public properties copy (and lock) on every access; the private fields hold the
    # same finished, immutable data. Fall back to the public API if the SDK changes.
    value = getattr(obj, private, None)
    return value if value is not None else getattr(obj, public)


def spans_to_arrow(
    spans: Sequence[ReadableSpan], *, max_chars: int = 4096, redact: Redactor | None = None
) -> pa.Table:
    """Encode finished spans as an Arrow table with the ``spans`` columns.

    Runs in the writer thread; it is the per-span cost of tracing, so it is kept lean.
    """
    import orjson
    import pyarrow as pa

    from flock.tracing._attributes import nest

    dumps = orjson.dumps
    trace_ids: list[str] = []
    span_ids: list[str] = []
    parent_ids: list[str | None] = []
    names: list[str] = []
    services: list[str | None] = []
    operations: list[str] = []
    kinds: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    durations: list[float] = []
    status_codes: list[str] = []
    status_descriptions: list[str | None] = []
    attributes: list[bytes] = []
    events: list[bytes] = []
    links: list[bytes] = []
    resources_col: list[bytes] = []
    resources: dict[int, tuple[str | None, bytes]] = {}
    for span in spans:
        ctx = span.context
        start = span.start_time or 0
        end = span.end_time or start
        resource = span.resource
        cached = resources.get(id(resource))
        if cached is None:
            attrs = dict(resource.attributes)
            service = attrs.get("service.name")
            cached = (str(service) if service is not None else None, _dumps(attrs))
            resources[id(resource)] = cached
        if ctx is not None:
            trace_ids.append(f"{ctx.trace_id:032x}")
            span_ids.append(f"{ctx.span_id:016x}")
        else:
            trace_ids.append("")
            span_ids.append("")
        parent = span.parent
        parent_ids.append(f"{parent.span_id:016x}" if parent is not None else None)
        name = span.name
        names.append(name)
        services.append(cached[0])
        operations.append(name.rpartition(".")[2])
        kinds.append(span.kind.name)
        starts.append(start)
        ends.append(end)
        durations.append((end - start) / 1e6)
        status = span.status
        status_codes.append(status.status_code.name)
        status_descriptions.append(status.description)
        raw_attributes = _raw(span, "_attributes", "attributes")
        raw_attributes = getattr(raw_attributes, "_dict", raw_attributes)
        attributes.append(
            dumps(nest(raw_attributes, max_chars=max_chars, redact=redact), default=str)
            if raw_attributes
            else b"{}"
        )
        span_events = _raw(span, "_events", "events")
        events.append(
            dumps(
                [
                    {
                        "name": e.name,
                        "timestamp": e.timestamp,
                        "attributes": nest(
                            e.attributes or {}, max_chars=max_chars * 4, redact=redact
                        ),
                    }
                    for e in span_events
                ],
                default=str,
            )
            if span_events
            else b"[]"
        )
        span_links = _raw(span, "_links", "links")
        links.append(
            dumps(
                [
                    {
                        "trace_id": f"{link.context.trace_id:032x}",
                        "span_id": f"{link.context.span_id:016x}",
                        "attributes": dict(link.attributes or {}),
                    }
                    for link in span_links
                ],
                default=str,
            )
            if span_links
            else b"[]"
        )
        resources_col.append(cached[1])
    columns = [
        trace_ids, span_ids, parent_ids, names, services, operations, kinds, starts, ends,
        durations, status_codes, status_descriptions, attributes, events, links, resources_col,
    ]  # fmt: skip
    return pa.Table.from_arrays(
        [
            pa.array(col, type=field.type)
            for col, field in zip(columns, _arrow_schema(), strict=True)
        ],
        schema=_arrow_schema(),
    )


_SCHEMA_CACHE: list[pa.Schema] = []


def _arrow_schema() -> pa.Schema:
    if not _SCHEMA_CACHE:
        import pyarrow as pa

        types = {"BIGINT": pa.int64(), "DOUBLE": pa.float64()}
        _SCHEMA_CACHE.append(
            pa.schema(
                [
                    pa.field(
                        name, types.get(sql.split()[0], pa.string()), nullable="NOT NULL" not in sql
                    )
                    for name, sql in COLUMNS
                ]
            )
        )
    return _SCHEMA_CACHE[0]


def clear_traces(db_path: str | os.PathLike[str] = DEFAULT_DB_PATH) -> dict[str, Any]:
    """Delete every span in ``db_path`` and reclaim the space.

    Returns ``{"success", "deleted_count", "error"}``; failures are reported, not raised.
    """
    path = Path(db_path)
    if not path.is_file():
        return {
            "success": False,
            "deleted_count": 0,
            "error": f"trace file not found: {str(path)!r} (nothing to clear)",
        }
    from contextlib import ExitStack

    from flock.tracing.processor import active_writers

    try:
        with ExitStack() as paused:
            for writer in active_writers(path):
                paused.enter_context(writer.pause())
            import duckdb

            conn = duckdb.connect(str(path))
            try:
                tables = {
                    r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()
                }
                if "spans" not in tables:
                    return {
                        "success": False,
                        "deleted_count": 0,
                        "error": f"{str(path)!r} has no spans table; is it a flock trace file?",
                    }
                row = conn.execute("SELECT count(*) FROM spans").fetchone()
                deleted = int(row[0]) if row else 0
                # Recreating the table frees its blocks; CHECKPOINT truncates the file.
                conn.execute("DROP TABLE spans")
                conn.execute(SCHEMA)
                conn.execute("CHECKPOINT")
            finally:
                conn.close()
    except Exception as exc:
        return {"success": False, "deleted_count": 0, "error": f"{type(exc).__name__}: {exc}"}
    return {"success": True, "deleted_count": deleted, "error": None}
