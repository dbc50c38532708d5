"""An OTLP endpoint that is down, speaks the wrong protocol or never answers.

The run completes, every span still lands in the DuckDB file, and the export failure is
reported once (by flock), not once per batch and retry (as the OpenTelemetry exporters log).
Each case is a child process exporting to a server of this test on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.faults.helpers import query, run_child

DB = Path(".flock") / "traces.duckdb"
SPANS = 8 * (1 + 1 + 20 * 8 + 2)  # rounds x (root, publish, 20 x (chef + critic), run, shutdown)


@contextmanager
def raw_server(mode: str) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that answers every connection the wrong way."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()
    conns: list[socket.socket] = []

    def handle(conn: socket.socket) -> None:
        try:
            conn.settimeout(30)
            if mode == "silent":  # accepts, reads, never answers
                while not stop.is_set() and conn.recv(65536):
                    pass
                return
            conn.recv(65536)
            if mode == "ssh":  # neither HTTP/1.1 nor HTTP/2
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\nProtocol mismatch.\r\n")
            elif mode == "http1":  # plain HTTP/1.1 (what a gRPC client gets from an HTTP port)
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        except OSError:
            pass
        finally:
            conn.close()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        listener.close()
        for conn in conns:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        thread.join(5)


@contextmanager
def grpc_server() -> Iterator[int]:
    """A real gRPC server with no services (what an HTTP/protobuf exporter gets from :4317)."""
    import grpc

    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(0).wait(5)


@contextmanager
def closed_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    yield port  # nothing listens there any more: connection refused


@contextmanager
def http_collector(
    status: Callable[[int], int] = lambda n: 200,
) -> Iterator[tuple[int, list[bytes]]]:
    """An OTLP/HTTP collector on 127.0.0.1 answering the n-th request (1-based) with
    ``status(n)``; yields its port and the bodies of the requests it got."""
    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(status(len(bodies)))
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], bodies
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def span_count(body: bytes) -> int:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest.FromString(body)
    return sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)


@pytest.mark.parametrize(
    ("server", "protocol", "cause"),
    [
        (closed_port, "http/protobuf", "Connection refused"),
        (closed_port, "grpc", "Connection refused"),
        (lambda: raw_server("ssh"), "http/protobuf", "BadStatusLine"),
        (lambda: raw_server("ssh"), "grpc", "Failed parsing HTTP/2"),
        (lambda: raw_server("http1"), "grpc", "Failed parsing HTTP/2"),
        (grpc_server, "http/protobuf", "Connection aborted"),
        (lambda: raw_server("silent"), "http/protobuf", "timeout"),
        (lambda: raw_server("silent"), "grpc", "DEADLINE_EXCEEDED"),
    ],
    ids=[
        "down-http",
        "down-grpc",
        "garbage-http",
        "garbage-grpc",
        "http1-server-grpc-client",
        "grpc-server-http-client",
        "slow-http",
        "slow-grpc",
    ],
)
def test_broken_otlp_endpoint_is_reported_once_and_loses_no_span(
    tmp_path: Path, server: object, protocol: str, cause: str
) -> None:
    with server() as port:  # type: ignore[operator]
        started = time.monotonic()
        child, code, stderr = run_child(
            tmp_path,
            "rounds",
            timeout=90,
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
            OTEL_EXPORTER_OTLP_TIMEOUT="2",
            OTEL_BSP_SCHEDULE_DELAY="100",  # many small batches, each of which fails
        )
        wall = time.monotonic() - started
    assert code == 0, stderr
    assert child.seen[-2] == "done"
    failed = int(next(line.split()[1] for line in child.seen if line.startswith("otlp_")))
    assert failed >= 2, "too few batches to show that failures are reported once"
    # One line on stderr for the whole outage, naming the endpoint and the cause:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("flock: OTLP export to ") and str(port) in lines[0]
    assert cause.lower() in lines[0].lower()
    assert "still written to the trace file" in lines[0]
    # ... and the trace file has every span
    assert query(tmp_path / DB, "SELECT count(*) FROM spans")[0][0] == SPANS
    assert wall < 60  # the exit is not held for a retry per remaining batch (a hang guard)


def test_healthy_exporter_is_unaffected_and_silent(tmp_path: Path) -> None:
    """The wrapper passes successes through: a collector that answers 200 gets every span."""
    with http_collector() as (port, bodies):
        child, code, stderr = run_child(
            tmp_path,
            "rounds",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
    assert code == 0, stderr
    assert stderr == ""
    assert "otlp_failed_batches 0" in child.seen
    assert sum(map(span_count, bodies)) == SPANS  # every span exported, at exit included
    assert query(tmp_path / DB, "SELECT count(*) FROM spans")[0][0] == SPANS


def test_a_failing_export_at_exit_is_tried_once_not_retried(tmp_path: Path) -> None:
    """A short program's only export happens at exit; against a failing endpoint the exporter
    used to retry it with back-off (1 s, 2 s, 4 s: a 0.3 s program took ~7 s to exit). Now
    the exit export gets one attempt, and the failure is still reported once."""
    with http_collector(lambda n: 503) as (port, posts):  # (503: retryable)
        child, code, stderr = run_child(
            tmp_path,
            "normal",
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
            OTEL_BSP_SCHEDULE_DELAY="600000",  # no export before the exit's
        )
    assert code == 0, stderr
    assert len(posts) == 1  # one attempt, no retry
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("flock: OTLP export to ") and "still written" in lines[0]
    ended = [line for line in child.seen if line.startswith("ended ")]
    assert query(tmp_path / DB, "SELECT count(*) FROM spans")[0][0] == len(ended) > 0


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_at_exit_each_batch_gets_one_attempt(protocol: str) -> None:
    """At exit a batch is tried once, without the exporter's back-off, and the batches after
    a failed one are still tried: a collector answering 503 (gRPC: UNAVAILABLE) once, as
    one restarting does, gets every later exit batch. (The first fix shut the exporter
    down at the first retry, and the later batches were lost.)"""
    import grpc
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GrpcExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult

    from flock.tracing._otlp import ReportingSpanExporter

    attempts: list[bytes] = []

    def grpc_fails_once(request: bytes, context: grpc.ServicerContext) -> bytes:
        attempts.append(request)
        if len(attempts) == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return b""

    spans = []
    tracer = TracerProvider().get_tracer("t")
    for i in range(6):
        span = tracer.start_span(f"s{i}")
        span.end()
        spans.append(span)
    with contextlib.ExitStack() as stack:
        if protocol == "grpc":
            server = grpc.server(ThreadPoolExecutor(max_workers=2))
            handler = grpc.unary_unary_rpc_method_handler(grpc_fails_once)
            server.add_generic_rpc_handlers(
                [
                    grpc.method_handlers_generic_handler(
                        "opentelemetry.proto.collector.trace.v1.TraceService",
                        {"Export": handler},
                    )
                ]
            )
            port = server.add_insecure_port("127.0.0.1:0")
            server.start()
            stack.callback(lambda: server.stop(0).wait(5))
            inner: Any = GrpcExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
        else:
            port, bodies = stack.enter_context(http_collector(lambda n: 503 if n == 1 else 200))
            attempts = bodies  # what the collector got: one body per attempt
            inner = HttpExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")
        exporter = ReportingSpanExporter(inner)
        stack.callback(exporter.shutdown)
        exporter._at_exit()  # what the interpreter's exit does
        started = time.monotonic()
        results = [exporter.export(spans[i : i + 2]) for i in range(0, 6, 2)]
        took = time.monotonic() - started
    assert results == [SpanExportResult.FAILURE, SpanExportResult.SUCCESS, SpanExportResult.SUCCESS]
    assert len(attempts) == 3  # no retry of the first, nothing skipped after it
    assert exporter.failed_spans == 2
    assert took < 0.8  # the exporters' first back-off is ~1 s


def test_at_exit_an_endpoint_already_failing_is_not_tried_again() -> None:
    """An endpoint that failed before the exit is not waited for again at exit (one that
    never answers would hold it a full timeout per try): its exit batches are counted."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult

    from flock.tracing._otlp import ReportingSpanExporter

    tracer = TracerProvider().get_tracer("t")
    spans = [tracer.start_span(f"s{i}") for i in range(4)]
    for span in spans:
        span.end()
    with http_collector(lambda n: 503) as (port, attempts):
        # (timeout 0.5 s: the exporter's first back-off, ~1 s, does not fit: no retry)
        inner = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces", timeout=0.5)
        exporter = ReportingSpanExporter(inner)
        try:
            assert exporter.export(spans[:2]) is SpanExportResult.FAILURE  # while running
            exporter._at_exit()
            assert exporter.export(spans[2:]) is SpanExportResult.FAILURE
        finally:
            exporter.shutdown()
    assert len(attempts) == 1  # nothing tried at exit
    assert (exporter.failed_batches, exporter.failed_spans) == (2, 4)
