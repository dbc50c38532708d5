"""``POST /v1/traces``: the dashboard receives spans over OTLP/HTTP into its trace file."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest
from fastapi import FastAPI
from google.rpc.status_pb2 import Status
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import StatusCode

from flock.dashboard import create_app
from flock.testing import SpanCapture
from flock.tracing.export import encode_request, request_to_json
from flock.tracing.processor import DuckDBSpanProcessor, active_writers
from tests.dashboard._support import Traced, sdk_trace, server
from tests.dashboard.conftest import client_for
from tests.tracing.stored import hex_ids, seed_trace, write_spans

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
TOKEN = "otlp-s3cret"


def protobuf(spans: list[ReadableSpan]) -> bytes:
    return bytes(encode_request(spans).SerializeToString())


def otlp_json(spans: list[ReadableSpan]) -> bytes:
    return orjson.dumps(request_to_json(encode_request(spans)))


def file_rows(db: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute("SELECT * FROM spans ORDER BY start_time, span_id").fetchall()


def close(app: FastAPI) -> None:
    """What the app's shutdown does to its own writer (ASGITransport runs no lifespan)."""
    app.state.dashboard.sink.close()


@pytest.fixture
def seed() -> list[ReadableSpan]:
    return seed_trace(error=True)


@pytest.fixture
def ingest_app(tmp_path: Path) -> Iterator[FastAPI]:
    """A dashboard that is not read-only and has no Flock: it opens its own writer."""
    app = create_app(tmp_path / "collector.duckdb", read_only=False)
    yield app
    close(app)


@pytest.fixture
async def collector(ingest_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(ingest_app) as client:
        yield client


def traced_spans(endpoint: str, **exporter: Any) -> tuple[int, dict[str, int]]:
    """:func:`sdk_trace` sent by the real OTLP/HTTP exporter."""
    return sdk_trace(
        OTLPSpanExporter(endpoint=endpoint, timeout=10, **exporter), service="otlp-worker"
    )


def test_spans_from_the_real_exporter_land_in_the_file(tmp_path: Path) -> None:
    db = tmp_path / "collector.duckdb"
    with server(db, read_only=False, ui=False) as srv:
        endpoint = f"{srv.url}v1/traces"
        trace_id, ids = traced_spans(endpoint, compression=Compression.Gzip)
        with httpx.Client(base_url=srv.url, timeout=10) as api:
            # Answered only once written: the dashboard shows the trace right away.
            page = api.get("/api/traces").json()
            assert [(t["trace_id"], t["name"], t["span_count"]) for t in page["items"]] == [
                (f"{trace_id:032x}", "remote_workflow", 3)
            ]
            timeline = api.get(f"/api/traces/{trace_id:032x}").json()
            shape = [(s["name"], s["depth"], s["status_code"]) for s in timeline["spans"]]
            assert shape == [
                ("remote_workflow", 0, "UNSET"),
                ("Flock.publish", 1, "UNSET"),
                ("Agent.execute", 1, "ERROR"),
            ]
            root_id = timeline["spans"][0]["span_id"]
            assert timeline["spans"][0]["parent_id"] is None
            assert {s["parent_id"] for s in timeline["spans"][1:]} == {root_id}
            run = api.get(f"/api/traces/{trace_id:032x}/spans/{ids['Agent.execute']:016x}").json()
            assert run["attributes"]["gen_ai"]["agent"]["name"] == "first"
            assert run["attributes"]["flock"] == {"attempt": 1, "ratio": 0.5, "abandoned": False}
            assert run["status_description"] == "RuntimeError: the oven is on fire"
            assert run["resource"]["service.name"] == "otlp-worker"
            assert run["service"] == "otlp-worker"
            assert [e["name"] for e in run["events"]] == ["retrying", "exception"]
            assert run["links"][0]["span_id"] == f"{ids['Flock.publish']:016x}"
            publish = api.get(
                f"/api/traces/{trace_id:032x}/spans/{ids['Flock.publish']:016x}"
            ).json()
            assert publish["attributes"]["flock"]["artifact"] == {
                "count": 3,
                "types": ["Job", "Step"],
            }
    # The app's own writer was closed with the server.
    assert list(active_writers(db)) == []


def test_received_rows_equal_the_rows_written_locally(
    tmp_path: Path, seed: list[ReadableSpan]
) -> None:
    """Every column — ids, parents, times, kinds, status, attributes, events, links,
    resource — is what this process's writer would have written itself."""
    db = tmp_path / "collector.duckdb"
    others = seed_trace(workflow="other")
    with server(db, read_only=False, ui=False) as srv:
        for compression, batch in ((Compression.Gzip, seed), (Compression.Deflate, others)):
            exporter = OTLPSpanExporter(
                endpoint=f"{srv.url}v1/traces", compression=compression, timeout=10
            )
            assert exporter.export(batch) is SpanExportResult.SUCCESS
            exporter.shutdown()
    write_spans(tmp_path / "local.duckdb", [*seed, *others])
    received = file_rows(db)
    assert len(received) == 22
    assert received == file_rows(tmp_path / "local.duckdb")


async def test_json_and_protobuf_answers_in_the_request_encoding(
    collector: httpx.AsyncClient, seed: list[ReadableSpan]
) -> None:
    r = await collector.post(
        "/v1/traces", content=otlp_json(seed[:5]), headers={"Content-Type": JSON}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == JSON and r.json() == {}
    r = await collector.post(
        "/v1/traces",
        content=gzip.compress(protobuf(seed[5:])),
        headers={"Content-Type": PROTOBUF, "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == PROTOBUF
    assert ExportTraceServiceResponse.FromString(r.content) == ExportTraceServiceResponse()
    # JSON with a charset, deflate-compressed, and an empty export are fine too.
    r = await collector.post(
        "/v1/traces",
        content=zlib.compress(orjson.dumps({"resourceSpans": []})),
        headers={"Content-Type": "application/json; charset=utf-8", "Content-Encoding": "deflate"},
    )
    assert r.status_code == 200 and r.json() == {}

    page = (await collector.get("/api/traces")).json()
    ((trace_id, span_id, _),) = {hex_ids(s) for s in seed if s.parent is None}
    errors = sum(s.status.status_code is StatusCode.ERROR for s in seed)
    assert errors >= 1
    assert [(t["trace_id"], t["span_count"], t["errors"]) for t in page["items"]] == [
        (trace_id, 11, errors)
    ]
    timeline = (await collector.get(f"/api/traces/{trace_id}")).json()
    expected = {hex_ids(s)[1]: hex_ids(s)[2] for s in seed}
    assert {s["span_id"]: s["parent_id"] for s in timeline["spans"]} == expected
    assert timeline["spans"][0]["span_id"] == span_id
    info = (await collector.get("/api/info")).json()
    assert info["spans"] == 11 and info["read_only"] is False


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (b"\xff\xff\xff", {"Content-Type": PROTOBUF}, "not an OTLP protobuf request"),
        (b"{not json", {"Content-Type": JSON}, "not an OTLP/JSON request"),
        (b"[1, 2]", {"Content-Type": JSON}, "must be an object"),
        (b"plain", {"Content-Type": PROTOBUF, "Content-Encoding": "gzip"}, "not valid gzip"),
    ],
)
async def test_undecodable_bodies_are_400(
    collector: httpx.AsyncClient, body: bytes, headers: dict[str, str], message: str
) -> None:
    r = await collector.post("/v1/traces", content=body, headers=headers)
    assert r.status_code == 400
    if headers["Content-Type"] == JSON:
        assert r.headers["content-type"] == JSON
        status = r.json()
        assert status["code"] == 3 and message in status["message"]
    else:  # a google.rpc.Status, protobuf-encoded like the request
        assert r.headers["content-type"] == PROTOBUF
        status = Status.FromString(r.content)
        assert status.code == 3 and message in status.message
    assert (await collector.get("/api/info")).json()["spans"] == 0


async def test_a_bad_span_refuses_the_whole_request(
    collector: httpx.AsyncClient, seed: list[ReadableSpan]
) -> None:
    request = encode_request(seed)
    request.resource_spans[0].scope_spans[0].spans[3].trace_id = b"\x01"
    r = await collector.post(
        "/v1/traces", content=request.SerializeToString(), headers={"Content-Type": PROTOBUF}
    )
    assert r.status_code == 400
    assert "invalid trace id or span id" in Status.FromString(r.content).message
    assert (await collector.get("/api/traces")).json()["total"] == 0


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"Content-Type": "application/grpc"},
        {},
    ],
)
async def test_other_content_types_are_415(
    collector: httpx.AsyncClient, seed: list[ReadableSpan], headers: dict[str, str]
) -> None:
    r = await collector.post("/v1/traces", content=protobuf(seed), headers=headers)
    assert r.status_code == 415
    assert "unsupported content type" in r.json()["message"]
    assert r.headers["accept-post"] == f"{PROTOBUF}, {JSON}"
    assert (await collector.get("/api/info")).json()["spans"] == 0


async def test_other_content_encodings_are_415(
    collector: httpx.AsyncClient, seed: list[ReadableSpan]
) -> None:
    r = await collector.post(
        "/v1/traces",
        content=protobuf(seed),
        headers={"Content-Type": PROTOBUF, "Content-Encoding": "br"},
    )
    assert r.status_code == 415
    assert "unsupported content encoding" in Status.FromString(r.content).message
    assert r.headers["accept-encoding"] == "gzip, deflate"


async def test_bodies_over_the_cap_are_413(tmp_path: Path, seed: list[ReadableSpan]) -> None:
    body = protobuf(seed)
    app = create_app(tmp_path / "small.duckdb", read_only=False, max_otlp_body=len(body) - 1)
    try:
        async with client_for(app) as client:
            r = await client.post("/v1/traces", content=body, headers={"Content-Type": PROTOBUF})
            assert r.status_code == 413
            assert "larger than" in Status.FromString(r.content).message

            async def streamed() -> AsyncIterator[bytes]:  # no Content-Length to trust
                for i in range(0, len(body), 100):
                    yield body[i : i + 100]

            r = await client.post(
                "/v1/traces", content=streamed(), headers={"Content-Type": PROTOBUF}
            )
            assert r.status_code == 413
            # Small on the wire, too large once decompressed (a zip bomb stops at the cap).
            r = await client.post(
                "/v1/traces",
                content=gzip.compress(body),
                headers={"Content-Type": PROTOBUF, "Content-Encoding": "gzip"},
            )
            assert r.status_code == 413
            assert "once decompressed" in Status.FromString(r.content).message
            r = await client.post(
                "/v1/traces", content=protobuf(seed[:3]), headers={"Content-Type": PROTOBUF}
            )
            assert r.status_code == 200
            assert (await client.get("/api/info")).json()["spans"] == 3
    finally:
        close(app)


async def test_read_only_viewer_refuses_spans(traced: Traced, seed: list[ReadableSpan]) -> None:
    """``flock dashboard --db`` views a file: it does not write into it."""
    before = traced.writer.written
    async with client_for(create_app(traced.db)) as viewer:
        r = await viewer.post(
            "/v1/traces", content=protobuf(seed), headers={"Content-Type": PROTOBUF}
        )
        assert r.status_code == 403
        assert "read-only" in Status.FromString(r.content).message
        r = await viewer.post("/v1/traces", content=otlp_json(seed), headers={"Content-Type": JSON})
        assert r.status_code == 403 and "read-only" in r.json()["message"]
        assert (await viewer.get("/api/traces")).json()["total"] == 2
    assert traced.writer.written == before


async def test_spans_go_through_the_live_flocks_writer(
    tmp_path: Path, seed: list[ReadableSpan]
) -> None:
    """With a live Flock tracing into the file, received spans share its writer (the one
    the dashboard's reads pause), next to the Flock's own traces."""
    t = Traced(tmp_path / "live.duckdb")
    t.writer.flush_interval = 60  # only the request's own flush writes
    try:
        await t.pizza_workflow()
        app = create_app(t.db, flock=t.flock)
        async with client_for(app) as client:
            r = await client.post(
                "/v1/traces", content=protobuf(seed), headers={"Content-Type": PROTOBUF}
            )
            assert r.status_code == 200
            assert app.state.dashboard.sink._own is None  # no second writer was opened
            assert t.writer.written == 8 + 11  # the Flock's spans were flushed with them
            page = (await client.get("/api/traces")).json()
            assert sorted(x["name"] for x in page["items"]) == ["pizza_workflow"] * 2
            assert sorted(x["span_count"] for x in page["items"]) == [8, 11]
    finally:
        t.close()


async def test_a_full_writer_answers_503_to_retry(tmp_path: Path, seed: list[ReadableSpan]) -> None:
    db = tmp_path / "busy.duckdb"
    writer = DuckDBSpanProcessor(db, flush_interval=60, max_queue=len(seed) + 2)
    try:
        async with client_for(create_app(db, read_only=False)) as client:
            writer.on_end(seed[0])
            writer.on_end(seed[1])
            writer.on_end(seed[2])  # queued, not written: the file is "behind"
            with writer.pause():  # and the writer cannot write right now
                r = await client.post(
                    "/v1/traces", content=protobuf(seed), headers={"Content-Type": PROTOBUF}
                )
            assert r.status_code == 503
            assert r.headers["retry-after"] == "2"
            assert "retry later" in Status.FromString(r.content).message
            assert writer.dropped == 0 and writer.pending == 3
    finally:
        writer.shutdown()


async def test_token_is_required_beyond_loopback(tmp_path: Path, seed: list[ReadableSpan]) -> None:
    db = tmp_path / "remote.duckdb"
    body, headers = protobuf(seed), {"Content-Type": PROTOBUF}
    app = create_app(db, token=TOKEN, read_only=False)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://10.1.2.3:8344"
        ) as client:
            assert (
                await client.post("/v1/traces", content=body, headers=headers)
            ).status_code == 401
            wrong = {**headers, "Authorization": "Bearer nope"}
            assert (await client.post("/v1/traces", content=body, headers=wrong)).status_code == 401
            good = {**headers, "Authorization": f"Bearer {TOKEN}"}
            assert (await client.post("/v1/traces", content=body, headers=good)).status_code == 200
            r = await client.get("/api/info", headers={"Authorization": f"Bearer {TOKEN}"})
            assert r.json()["spans"] == 11
    finally:
        close(app)
    # Without a token only requests addressed to loopback are answered, and no browser page
    # on another origin may post spans.
    app = create_app(db, read_only=False)
    try:
        for base in ("http://10.1.2.3:8344", "http://evil.example"):
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=base
            ) as client:
                r = await client.post("/v1/traces", content=body, headers=headers)
                assert r.status_code == 403, base
        async with client_for(app) as client:
            r = await client.post(
                "/v1/traces", content=body, headers={**headers, "Origin": "http://evil.example"}
            )
            assert r.status_code == 403
            assert (await client.get("/api/info")).json()["spans"] == 11
    finally:
        close(app)


def test_exporter_sends_the_token_from_otel_exporter_otlp_headers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: list[ReadableSpan]
) -> None:
    db = tmp_path / "token.duckdb"
    with server(db, read_only=False, ui=False, token=TOKEN) as srv:
        endpoint = srv.url.split("?")[0] + "v1/traces"
        refused = OTLPSpanExporter(endpoint=endpoint, timeout=10)
        assert refused.export(seed) is SpanExportResult.FAILURE  # 401: not retried
        refused.shutdown()
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"Authorization=Bearer%20{TOKEN}")
        exporter = OTLPSpanExporter(endpoint=endpoint, timeout=10)
        assert exporter.export(seed) is SpanExportResult.SUCCESS
        exporter.shutdown()
    assert len(file_rows(db)) == 11


async def test_fastapi_does_not_trace_the_ingestion_route(
    collector: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    capture: SpanCapture,
    seed: list[ReadableSpan],
) -> None:
    """Even with an SDK provider installed globally, receiving spans makes no spans (which
    would grow the very file being filled, or loop back to this endpoint)."""
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", capture.provider)
    control = FastAPI()

    @control.post("/v1/traces")
    async def accept() -> dict[str, str]:
        return {}

    async with client_for(control) as client:
        assert (await client.post("/v1/traces")).status_code == 200
    assert capture.spans, "FastAPI's native tracing is not active: the check below means nothing"
    capture.clear()

    r = await collector.post(
        "/v1/traces", content=protobuf(seed), headers={"Content-Type": PROTOBUF}
    )
    assert r.status_code == 200
    r = await collector.post("/v1/traces", content=b"junk", headers={"Content-Type": JSON})
    assert r.status_code == 400
    assert capture.spans == []
