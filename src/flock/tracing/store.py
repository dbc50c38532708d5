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

import json
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


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def spans_to_arrow(
    spans: Sequence[ReadableSpan], *, max_chars: int = 4096, redact: Redactor | None = None
) -> pa.Table:
    """Encode finished spans as an Arrow table with the ``spans`` columns."""
    import pyarrow as pa

    from flock.tracing._attributes import nest

    cols: dict[str, list[Any]] = {name: [] for name, _ in COLUMNS}
    resources: dict[int, tuple[str | None, str]] = {}
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
        cols["trace_id"].append(_hex(ctx.trace_id, 32) if ctx else "")
        cols["span_id"].append(_hex(ctx.span_id, 16) if ctx else "")
        cols["parent_id"].append(_hex(span.parent.span_id, 16) if span.parent else None)
        cols["name"].append(span.name)
        cols["service"].append(cached[0])
        cols["operation"].append(span.name.rsplit(".", 1)[-1])
        cols["kind"].append(span.kind.name)
        cols["start_time"].append(start)
        cols["end_time"].append(end)
        cols["duration_ms"].append((end - start) / 1e6)
        cols["status_code"].append(span.status.status_code.name)
        cols["status_description"].append(span.status.description)
        cols["attributes"].append(
            _dumps(nest(span.attributes or {}, max_chars=max_chars, redact=redact))
        )
        cols["events"].append(
            _dumps(
                [
                    {
                        "name": e.name,
                        "timestamp": e.timestamp,
                        "attributes": nest(
                            e.attributes or {}, max_chars=max_chars * 4, redact=redact
                        ),
                    }
                    for e in span.events
                ]
            )
            if span.events
            else "[]"
        )
        cols["links"].append(
            _dumps(
                [
                    {
                        "trace_id": _hex(link.context.trace_id, 32),
                        "span_id": _hex(link.context.span_id, 16),
                        "attributes": dict(link.attributes or {}),
                    }
                    for link in span.links
                ]
            )
            if span.links
            else "[]"
        )
        cols["resource"].append(cached[1])
    return pa.table(cols, schema=_arrow_schema())


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
