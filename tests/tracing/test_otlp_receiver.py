"""OTLP/HTTP requests (protobuf and JSON) decoded into rows of the trace file."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export import SpanExportResult

from flock.tracing.export import encode_request, request_to_json
from flock.tracing.otlp_receiver import (
    JSON,
    PROTOBUF,
    OtlpDecodeError,
    decode_request,
    receive,
    request_to_spans,
    response,
)
from flock.tracing.processor import DuckDBSpanProcessor
from tests.tracing.stored import OtlpReceiver, seed_trace, write_spans


def rows(db: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute("SELECT * FROM spans ORDER BY start_time, span_id").fetchall()


@pytest.fixture
def spans() -> list[Any]:
    return [*seed_trace(error=True), *seed_trace(workflow="other")]


def test_protobuf_request_gives_the_same_rows_as_local_spans(
    spans: list[Any], tmp_path: Path
) -> None:
    write_spans(tmp_path / "local.duckdb", spans)
    body = encode_request(spans).SerializeToString()
    received = request_to_spans(decode_request(body, PROTOBUF))
    write_spans(tmp_path / "received.duckdb", received)
    expected = rows(tmp_path / "local.duckdb")
    assert len(expected) == len(spans) == 22
    assert rows(tmp_path / "received.duckdb") == expected


@pytest.mark.parametrize("encoding", [None, "gzip", "deflate"])
def test_json_request_gives_the_same_rows(
    spans: list[Any], tmp_path: Path, encoding: str | None
) -> None:
    write_spans(tmp_path / "local.duckdb", spans)
    body = orjson.dumps(request_to_json(encode_request(spans)))
    if encoding == "gzip":
        body = gzip.compress(body)
    elif encoding == "deflate":
        body = zlib.compress(body)
    request = decode_request(body, "application/json; charset=utf-8", content_encoding=encoding)
    write_spans(tmp_path / "received.duckdb", request_to_spans(request))
    assert rows(tmp_path / "received.duckdb") == rows(tmp_path / "local.duckdb")


def test_json_with_unknown_fields_is_accepted(spans: list[Any]) -> None:
    doc = request_to_json(encode_request(spans[:1]))
    doc["resourceSpans"][0]["somethingNew"] = 1
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["futureField"] = "x"
    (span,) = request_to_spans(decode_request(orjson.dumps(doc), JSON))
    assert span.name == spans[0].name and span.context == spans[0].context


def test_receive_writes_through_the_duckdb_writer(spans: list[Any], tmp_path: Path) -> None:
    writer = DuckDBSpanProcessor(tmp_path / "traces.duckdb", flush_interval=60)
    try:
        body = gzip.compress(encode_request(spans).SerializeToString())
        assert receive(body, PROTOBUF, writer, content_encoding="gzip") == len(spans)
        assert writer.force_flush(10_000)
    finally:
        writer.shutdown()
    stored = rows(tmp_path / "traces.duckdb")
    assert len(stored) == len(spans)
    names = {r[3] for r in stored}
    assert {"pizza_workflow", "other", "Agent.execute", "DSPyEngine.evaluate"} <= names


def test_spans_sent_by_the_real_otlp_exporter_are_received(
    spans: list[Any], tmp_path: Path
) -> None:
    with OtlpReceiver() as server:
        exporter = OTLPSpanExporter(
            endpoint=f"{server.url}/v1/traces", compression=Compression.Gzip, timeout=10
        )
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        exporter.shutdown()
    write_spans(tmp_path / "local.duckdb", spans)
    received = []
    for path, headers, body in server.requests:
        assert path == "/v1/traces"
        request = decode_request(
            body, headers["content-type"], content_encoding=headers.get("content-encoding")
        )
        received.extend(request_to_spans(request))
    write_spans(tmp_path / "received.duckdb", received)
    assert rows(tmp_path / "received.duckdb") == rows(tmp_path / "local.duckdb")


@pytest.mark.parametrize(
    ("body", "content_type", "encoding", "message"),
    [
        (b"x", "text/plain", None, "unsupported content type"),
        (b"\xff\xff\xff", PROTOBUF, None, "not an OTLP protobuf request"),
        (b"{not json", JSON, None, "not an OTLP/JSON request"),
        (b"[1, 2]", JSON, None, "must be an object"),
        (b'{"resourceSpans": 5}', JSON, None, "not an OTLP/JSON request"),
        (b"plain", PROTOBUF, "gzip", "not valid gzip"),
        (gzip.compress(b"{}")[:-8], JSON, "gzip", "ends before its stream does"),  # no trailer
        (zlib.compress(b"{}")[:-4], JSON, "deflate", "ends before its stream does"),
        (b"plain", PROTOBUF, "br", "unsupported content encoding"),
    ],
)
def test_malformed_requests_are_refused(
    body: bytes, content_type: str, encoding: str | None, message: str
) -> None:
    with pytest.raises(OtlpDecodeError, match=message):
        decode_request(body, content_type, content_encoding=encoding)


def test_invalid_ids_are_refused_and_nothing_is_written(spans: list[Any], tmp_path: Path) -> None:
    request = encode_request(spans[:2])
    request.resource_spans[0].scope_spans[0].spans[1].span_id = b"\x01\x02"
    writer = DuckDBSpanProcessor(tmp_path / "traces.duckdb", flush_interval=60)
    try:
        with pytest.raises(OtlpDecodeError, match="invalid trace id or span id"):
            receive(request.SerializeToString(), PROTOBUF, writer)
        assert writer.force_flush(10_000)
    finally:
        writer.shutdown()
    assert rows(tmp_path / "traces.duckdb") == []


def test_response_matches_the_request_encoding() -> None:
    body, media = response(PROTOBUF)
    assert media == PROTOBUF
    assert ExportTraceServiceResponse.FromString(body) == ExportTraceServiceResponse()
    assert response("application/json") == (b"{}", JSON)


def test_times_past_int64_are_refused_and_nothing_is_written(
    spans: list[Any], tmp_path: Path
) -> None:
    request = encode_request(spans[:2])
    request.resource_spans[0].scope_spans[0].spans[1].end_time_unix_nano = 2**64 - 1  # legal OTLP
    writer = DuckDBSpanProcessor(tmp_path / "traces.duckdb", flush_interval=60)
    try:
        with pytest.raises(OtlpDecodeError, match="after the year 2262"):
            receive(request.SerializeToString(), PROTOBUF, writer)
        receive(encode_request(spans[2:3]).SerializeToString(), PROTOBUF, writer)
        assert writer.force_flush(10_000)  # the writer goes on with the next request
    finally:
        writer.shutdown()
    assert len(rows(tmp_path / "traces.duckdb")) == 1


def test_nested_key_value_lists_are_encoded_once_as_json() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    # 30 nested lists in a ~400-byte request: encoding each level as a string inside the
    # next doubled the escaping per level (gigabytes asked for; the server process died).
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x0e" * 16, b"\x02" * 8, "deep"
    span.start_time_unix_nano = span.end_time_unix_nano = 1_700_000_000_000_000_000
    value = span.attributes.add(key="deep").value
    for _ in range(30):
        value = value.kvlist_value.values.add(key="k").value
    value.string_value = "x"
    mixed = span.attributes.add(key="mixed").value.array_value.values
    mixed.add().int_value = 1
    mixed.add().kvlist_value.values.add(key="a").value.array_value.values.add().bool_value = True
    body = request.SerializeToString()
    assert len(body) < 500
    (received,) = request_to_spans(decode_request(body, PROTOBUF))
    expected: Any = "x"
    for _ in range(30):
        expected = {"k": expected}
    assert orjson.loads(received.attributes["deep"]) == expected
    assert orjson.loads(received.attributes["mixed"]) == [1, {"a": [True]}]
