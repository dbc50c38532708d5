"""OTLP/gRPC: the dashboard receives spans on ``TraceService/Export`` into its trace file,
through the same sink as ``POST /v1/traces`` (everything on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import errno
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import duckdb
import grpc
import httpx
import orjson
import pytest
from google.protobuf.any_pb2 import Any as AnyProto
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import (
    add_TraceServiceServicer_to_server,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from flock.cli import main
from flock.dashboard._ingest import SpanSink
from flock.dashboard._ingest_grpc import SERVICE, OtlpGrpcReceiver, TraceExportService
from flock.tracing.export import encode_request
from flock.tracing.processor import DuckDBSpanProcessor, active_writers
from tests.dashboard._support import ServerThread, sdk_trace, server
from tests.tracing.stored import seed_trace, write_spans

TOKEN = "grpc-s3cret"
EXPORT = f"/{SERVICE}/Export"
FLOCK = [sys.executable, "-m", "flock.cli"]


# Helpers -------------------------------------------------------------------------------


def grpc_address(lines: list[str]) -> str:
    """``host:port`` of the receiver, from the line ``serve`` announced."""
    for line in lines:
        found = re.search(r"OTLP/gRPC receiver on http://(\S+)", line)
        if found:
            return found.group(1)
    raise AssertionError(f"no OTLP/gRPC receiver announced: {lines}")


def call(
    address: str,
    request: ExportTraceServiceRequest | bytes,
    *,
    authorization: str | None = None,
    compression: grpc.Compression | None = None,
) -> ExportTraceServiceResponse:
    """One ``Export`` over a fresh channel; raw bytes go out as they are."""
    body = request if isinstance(request, bytes) else request.SerializeToString()
    metadata = None if authorization is None else (("authorization", authorization),)
    with grpc.insecure_channel(address) as channel:
        export = channel.unary_unary(
            EXPORT, response_deserializer=ExportTraceServiceResponse.FromString
        )
        response: ExportTraceServiceResponse = export(
            body, metadata=metadata, timeout=10, compression=compression
        )
        return response


def refused(address: str, request: ExportTraceServiceRequest | bytes, **kwargs: Any) -> Any:
    """The error of an ``Export`` that must fail (a ``grpc.Call``: code, details, trailers)."""
    with pytest.raises(grpc.RpcError) as info:
        call(address, request, **kwargs)
    return info.value


def file_rows(db: Path) -> list[dict[str, Any]]:
    if not db.exists():
        return []
    with duckdb.connect(str(db), read_only=True) as conn:
        cursor = conn.execute("SELECT * FROM spans ORDER BY start_time, span_id")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connection_refused(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    with closing(socket.socket()) as s:
        return s.connect_ex((host, int(port))) != 0


@pytest.fixture
def seed() -> list[ReadableSpan]:
    return seed_trace(error=True)


# The real exporter ---------------------------------------------------------------------


def test_the_real_grpc_exporter_stores_what_the_http_route_stores(tmp_path: Path) -> None:
    """One SDK trace sent over OTLP/HTTP to one dashboard and over OTLP/gRPC to another: both
    files hold the same rows, and every field arrived."""
    http_db, grpc_db = tmp_path / "http.duckdb", tmp_path / "grpc.duckdb"
    with (
        server(http_db, read_only=False, ui=False) as over_http,
        server(grpc_db, read_only=False, ui=False, otlp_grpc_port=0) as over_grpc,
    ):
        address = grpc_address(over_grpc.lines)
        assert address.startswith("127.0.0.1:")
        trace_id, ids = sdk_trace(
            HttpSpanExporter(endpoint=f"{over_http.url}v1/traces", timeout=10),
            GrpcSpanExporter(endpoint=address, insecure=True, timeout=10),
            service="grpc-worker",
        )
        # Answered only once written: the dashboard shows the trace right away.
        page = httpx.get(f"{over_grpc.url}api/traces", timeout=10).json()
        assert [(t["trace_id"], t["span_count"]) for t in page["items"]] == [
            (f"{trace_id:032x}", 3)
        ]
    assert list(active_writers(grpc_db)) == []  # the app's own writer was closed with it
    rows = file_rows(grpc_db)
    assert len(rows) == 3
    assert rows == file_rows(http_db)

    by_name = {r["name"]: r for r in rows}
    root, publish, run = (by_name[n] for n in ("remote_workflow", "Flock.publish", "Agent.execute"))
    assert {r["trace_id"] for r in rows} == {f"{trace_id:032x}"}
    assert [root["span_id"], publish["span_id"], run["span_id"]] == [
        f"{ids[n]:016x}" for n in ("remote_workflow", "Flock.publish", "Agent.execute")
    ]
    assert root["parent_id"] is None
    assert publish["parent_id"] == run["parent_id"] == root["span_id"]
    assert {r["service"] for r in rows} == {"grpc-worker"}
    assert orjson.loads(run["resource"])["service.name"] == "grpc-worker"
    assert (run["status_code"], run["status_description"]) == (
        "ERROR",
        "RuntimeError: the oven is on fire",
    )
    assert root["status_code"] == publish["status_code"] == "UNSET"
    assert run["end_time"] >= run["start_time"] >= root["start_time"]
    assert "the oven is on fire" in run["events"]
    assert [e["name"] for e in orjson.loads(run["events"])] == ["retrying", "exception"]
    (link,) = orjson.loads(run["links"])
    assert link["span_id"] == f"{ids['Flock.publish']:016x}"
    assert "consumed" in run["links"]
    for key in ("first", "flock", "0.5", "abandoned"):
        assert key in run["attributes"]
    assert "Job" in publish["attributes"] and "Step" in publish["attributes"]


def test_gzip_exports_store_the_rows_written_locally(
    tmp_path: Path, seed: list[ReadableSpan]
) -> None:
    """Every column — ids, parents, times, kinds, status, attributes, events, links,
    resource — is what this process's writer would have written itself."""
    db = tmp_path / "collector.duckdb"
    others = seed_trace(workflow="other")
    with server(db, read_only=False, ui=False, otlp_grpc_port=0) as srv:
        exporter = GrpcSpanExporter(
            endpoint=grpc_address(srv.lines),
            insecure=True,
            compression=grpc.Compression.Gzip,
            timeout=10,
        )
        assert exporter.export(seed) is SpanExportResult.SUCCESS
        assert exporter.export(others) is SpanExportResult.SUCCESS
        exporter.shutdown()
    write_spans(tmp_path / "local.duckdb", [*seed, *others])
    received = file_rows(db)
    assert len(received) == 22
    assert received == file_rows(tmp_path / "local.duckdb")


async def test_the_size_cap_holds_after_decompression(
    tmp_path: Path, seed: list[ReadableSpan]
) -> None:
    """The sink's ``max_body`` is gRPC's receive cap, for compressed messages too: gRPC
    decompresses gzip itself and checks the decompressed size."""
    db = tmp_path / "capped.duckdb"
    small = encode_request(seed)
    cap = small.ByteSize() + 1_000
    big = encode_request(seed)
    big.resource_spans[0].scope_spans[0].spans[0].name = "x" * (cap + 1)  # compresses well
    sink = SpanSink(db, max_body=cap)
    receiver = OtlpGrpcReceiver(sink, port=0)
    await receiver.start()
    try:
        address = receiver.address
        plain = await asyncio.to_thread(refused, address, big)
        assert plain.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than" in plain.details()
        zipped = await asyncio.to_thread(refused, address, big, compression=grpc.Compression.Gzip)
        assert zipped.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "ecompressed" in zipped.details()  # small on the wire, too large inside
        assert file_rows(db) == []
        response = await asyncio.to_thread(call, address, small, compression=grpc.Compression.Gzip)
        assert response == ExportTraceServiceResponse()
        assert not response.HasField("partial_success")
    finally:
        await receiver.stop()
        sink.close()
    assert len(file_rows(db)) == 11


async def test_the_generated_servicer_registration_takes_decoded_requests(
    tmp_path: Path, seed: list[ReadableSpan]
) -> None:
    """``TraceExportService`` is a ``TraceServiceServicer``: registered the standard way,
    gRPC decodes the message and ``Export`` takes the request object."""
    db = tmp_path / "standard.duckdb"
    sink = SpanSink(db)
    grpc_server = grpc.aio.server()
    add_TraceServiceServicer_to_server(TraceExportService(sink), grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    try:
        bad = encode_request(seed)
        bad.resource_spans[0].scope_spans[0].spans[0].span_id = b"\x01\x02"
        error = await asyncio.to_thread(refused, f"127.0.0.1:{port}", bad)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        await asyncio.to_thread(call, f"127.0.0.1:{port}", encode_request(seed))
    finally:
        await grpc_server.stop(None)
        sink.close()
    assert len(file_rows(db)) == 11


# Refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["given", "generated beyond loopback"])
def test_a_token_is_required_when_the_dashboard_has_one(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    seed: list[ReadableSpan],
    source: str,
) -> None:
    db = tmp_path / "token.duckdb"
    kwargs: dict[str, Any] = {"read_only": False, "ui": False, "otlp_grpc_port": 0}
    if source == "given":
        kwargs["token"] = TOKEN
    else:  # what binding 0.0.0.0 does, without leaving loopback
        monkeypatch.setattr("flock.dashboard.server.is_loopback", lambda host: False)
    with server(db, **kwargs) as srv:
        token = TOKEN
        if source != "given":
            (line,) = [x for x in srv.lines if "requests need this token" in x]
            token = line.rsplit(" ", 1)[1]
            assert token != TOKEN and len(token) >= 32
        address = grpc_address(srv.lines)
        request = encode_request(seed[:4])
        for authorization in (None, "Bearer nope", f"Basic {token}", token, f"Bearer {token}x"):
            error = refused(address, request, authorization=authorization)
            assert error.code() is grpc.StatusCode.UNAUTHENTICATED, authorization
            assert "authorization: Bearer <token>" in error.details()
        assert file_rows(db) == []

        assert call(address, request, authorization=f"Bearer {token}") == (
            ExportTraceServiceResponse()
        )
        call(address, encode_request(seed[4:8]), authorization=f"bearer  {token} ")
        # The SDK exporter: refused without the header (not retried), accepted with it.
        refused_exporter = GrpcSpanExporter(endpoint=address, insecure=True, timeout=10)
        assert refused_exporter.export(seed[8:]) is SpanExportResult.FAILURE
        refused_exporter.shutdown()
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"Authorization=Bearer%20{token}")
        exporter = GrpcSpanExporter(endpoint=address, insecure=True, timeout=10)
        assert exporter.export(seed[8:]) is SpanExportResult.SUCCESS
        exporter.shutdown()
    assert len(file_rows(db)) == 11


def test_a_read_only_dashboard_refuses_spans(tmp_path: Path, seed: list[ReadableSpan]) -> None:
    """``flock dashboard --db`` views a file: over gRPC too, it does not write into it."""
    db = tmp_path / "viewed.duckdb"
    write_spans(db, seed)
    with server(db, read_only=True, ui=False, otlp_grpc_port=0) as srv:
        assert "read-only: refuses spans" in srv.lines[-1]
        address = grpc_address(srv.lines)
        error = refused(address, encode_request(seed_trace(workflow="other")))
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "read-only" in error.details()
        exporter = GrpcSpanExporter(endpoint=address, insecure=True, timeout=10)
        assert exporter.export(seed_trace()) is SpanExportResult.FAILURE  # not retried
        exporter.shutdown()
    assert len(file_rows(db)) == 11


def test_a_full_writer_answers_unavailable_with_a_retry_delay(
    tmp_path: Path, seed: list[ReadableSpan]
) -> None:
    db = tmp_path / "busy.duckdb"
    writer = DuckDBSpanProcessor(db, flush_interval=60, max_queue=len(seed) + 2)
    try:
        with server(db, read_only=False, ui=False, otlp_grpc_port=0) as srv:
            for span in seed[:3]:
                writer.on_end(span)  # queued, not written: the file is "behind"
            with writer.pause():  # and the writer cannot write right now
                error = refused(grpc_address(srv.lines), encode_request(seed))
            assert error.code() is grpc.StatusCode.UNAVAILABLE  # the exporter retries
            assert "retry later" in error.details()
            trailers = dict(error.trailing_metadata())
            assert RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"]).retry_delay.seconds
            status = Status.FromString(trailers["grpc-status-details-bin"])
            assert status.code == grpc.StatusCode.UNAVAILABLE.value[0]
            (detail,) = status.details
            info = RetryInfo()
            assert isinstance(detail, AnyProto) and detail.Unpack(info)
            assert info.retry_delay.seconds == 2
            assert writer.dropped == 0 and writer.pending == 3
    finally:
        writer.shutdown()
    assert len(file_rows(db)) == 3


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("trace_id", b"\x01", "invalid trace id or span id"),
        ("span_id", b"\x00" * 9, "invalid trace id or span id"),
        ("end_time_unix_nano", 2**63, "after the year 2262"),
        (None, None, "not an OTLP protobuf request"),
    ],
    ids=["short trace id", "long span id", "time past 2262", "not protobuf"],
)
def test_a_request_that_cannot_be_stored_is_invalid_argument(
    tmp_path: Path, seed: list[ReadableSpan], field: str | None, value: Any, message: str
) -> None:
    """The whole request is refused (as over HTTP: no partial success), with a readable
    reason instead of gRPC's ``UNKNOWN`` for a message it cannot parse."""
    db = tmp_path / "invalid.duckdb"
    with server(db, read_only=False, ui=False, otlp_grpc_port=0) as srv:
        address = grpc_address(srv.lines)
        request: ExportTraceServiceRequest | bytes = b"\xff\xff\xff"
        if field is not None:
            request = encode_request(seed)
            setattr(request.resource_spans[0].scope_spans[0].spans[3], field, value)
        error = refused(address, request)
        assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert message in error.details()
        assert file_rows(db) == []
        call(address, encode_request(seed[:2]))  # and the receiver goes on
    assert len(file_rows(db)) == 2


# Ports ---------------------------------------------------------------------------------


def test_a_taken_port_fails_and_the_port_is_freed_after_stop(
    tmp_path: Path, seed: list[ReadableSpan]
) -> None:
    db = tmp_path / "ports.duckdb"
    with server(db, read_only=False, ui=False, otlp_grpc_port=0) as first:
        address = grpc_address(first.lines)
        port = int(address.rsplit(":", 1)[1])
        # A second receiver on the same port fails (gRPC's SO_REUSEPORT is off), and frees
        # the dashboard port it had bound already.
        http_port = free_port()
        second = ServerThread(
            tmp_path / "second.duckdb", read_only=False, port=http_port, otlp_grpc_port=port
        )
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}: .*in use"):
            second.start()
        with closing(socket.socket()) as s:
            s.bind(("127.0.0.1", http_port))
        call(address, encode_request(seed[:3]))
    assert connection_refused(address)
    with server(db, read_only=False, ui=False, otlp_grpc_port=port) as again:
        assert grpc_address(again.lines) == address
        call(address, encode_request(seed[3:]))
    assert len(file_rows(db)) == 11


@pytest.mark.parametrize("port", [-1, 65536])
async def test_ports_out_of_range_are_value_errors(tmp_path: Path, port: int) -> None:
    from flock.dashboard import serve

    with pytest.raises(ValueError, match="from 0 to 65535"):
        await serve(tmp_path / "x.duckdb", port=0, otlp_grpc_port=port)


async def test_the_dashboards_own_port_is_refused_in_one_line(tmp_path: Path) -> None:
    """It used to bind too (SO_REUSEADDR) and uvicorn failed with a traceback."""
    from flock.dashboard import serve

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ValueError, match=f"port {port} is the dashboard's own port"):
        await serve(tmp_path / "x.duckdb", port=port, otlp_grpc_port=port)
    with socket.socket() as again:  # and the dashboard's port is free again
        again.bind(("127.0.0.1", port))


# The command line ----------------------------------------------------------------------

APP = """
from flock import Flock
from flock._demo import Pizza, PizzaIdea, offline_chef

flock = Flock()
flock.agent("pizza_master").consumes(PizzaIdea).publishes(Pizza).with_engines(offline_chef)
"""


@contextmanager
def flock_process(args: list[str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    (cwd / "app.py").write_text(textwrap.dedent(APP))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOCK_", "OTEL_"))}
    env.update(FLOCK_OUTPUT="off", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [*FLOCK, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(20)
        if proc.stdout is not None:
            proc.stdout.close()


def read_until(proc: subprocess.Popen[str], pattern: str) -> list[str]:
    """The output lines up to one that contains ``pattern``."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line.rstrip("\n"))
        if pattern in line:
            return lines
    raise AssertionError(f"no {pattern!r} in the output (exit {proc.poll()}): {lines}")


def test_help_and_bad_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--otlp-grpc-port" in out and "OTLP/gRPC" in out
    assert main(["serve", "app:flock", "--otlp-grpc-port", "65536"]) == 2
    assert "--otlp-grpc-port" in capsys.readouterr().err
    assert main(["dashboard", "--help"]) == 0
    out = capsys.readouterr().out
    assert "no --otlp-grpc-port" in out  # read-only: it takes no spans, over gRPC neither


def test_flock_serve_receives_over_grpc(tmp_path: Path, seed: list[ReadableSpan]) -> None:
    db = tmp_path / "served.duckdb"
    args = ["serve", "app:flock", "--port", "0", "--db", str(db), "--token", TOKEN]
    with flock_process([*args, "--otlp-grpc-port", "0"], tmp_path) as proc:
        lines = read_until(proc, "OTLP/gRPC receiver on")
        address = grpc_address(lines)
        url = next(x for x in lines if "flock dashboard: http" in x).split(": ", 1)[1]
        exporter = GrpcSpanExporter(
            endpoint=f"http://{address}",  # the address as printed
            headers={"authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert exporter.export(seed) is SpanExportResult.SUCCESS
        exporter.shutdown()
        page = httpx.get(
            f"{url.split('?')[0]}api/traces",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        ).json()
        assert [(t["name"], t["span_count"]) for t in page["items"]] == [("pizza_workflow", 11)]
        proc.terminate()  # SIGTERM: a graceful stop
        assert proc.wait(20) == 0
    assert connection_refused(address)


def test_flock_serve_reports_a_taken_grpc_port(tmp_path: Path) -> None:
    with closing(socket.socket()) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = int(holder.getsockname()[1])
        args = ["serve", "app:flock", "--port", "0", "--otlp-grpc-port", str(port)]
        with flock_process([*args, "--db", str(tmp_path / "t.duckdb")], tmp_path) as proc:
            assert proc.stdout is not None
            out = proc.stdout.read()
            assert proc.wait(30) == 1, out
    # As for a taken dashboard port: one error line, no traceback, no gRPC log line.
    assert out.splitlines() == [
        f"error: [Errno {errno.EADDRINUSE}] the OTLP/gRPC receiver cannot listen on "
        f"127.0.0.1:{port}: Address already in use"
    ]
