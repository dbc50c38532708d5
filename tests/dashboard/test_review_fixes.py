"""Review fixes of the dashboard: strings UTF-8 cannot encode (lone surrogates), traces whose
parents form a cycle, and OTLP requests with more spans than the trace writer ever takes."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import httpx
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from playwright.sync_api import expect, sync_playwright
from pydantic import BaseModel

from flock import Flock
from flock.dashboard import create_app
from flock.dashboard._live import LiveHub
from flock.registry import flock_type
from flock.tracing._waterfall import critical_path, tree_order
from flock.tracing.export import encode_request
from flock.tracing.processor import DuckDBSpanProcessor
from flock.tracing.query import TraceStore
from tests.dashboard._support import server
from tests.dashboard.conftest import CHROMIUM, client_for
from tests.dashboard.test_ingest_grpc import grpc_address, refused
from tests.tracing.stored import new_trace_id, seed_trace, span, write_spans

PROTOBUF = "application/x-protobuf"
BAD = "\ud800"
REPLACED = "\ufffd"


@flock_type(name="ReviewNote")
class ReviewNote(BaseModel):
    text: str
    tags: list[str] = []
    meta: dict[str, Any] = {}


@flock_type(name="ReviewOrder")
class ReviewOrder(BaseModel):
    dish: str


# --- 1. lone surrogates ---------------------------------------------------------------------


@pytest.fixture
async def blackboard(tmp_path: Path) -> AsyncIterator[tuple[Flock, httpx.AsyncClient]]:
    flock = Flock("openai/gpt-4o")
    app = create_app(tmp_path / "traces.duckdb", flock=flock)
    async with client_for(app) as client:
        yield flock, client


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (rb'{"type":"ReviewNote","payload":{"text":"\ud800"}}', ["payload", "text"]),
        (
            rb'{"type":"ReviewNote","payload":{"text":"a","tags":["ok","b\udc00"]}}',
            ["payload", "tags", 1],
        ),
        (
            rb'{"type":"ReviewNote","payload":{"text":"a","meta":{"k":["\udfff"]}}}',
            ["payload", "meta", "k", 0],
        ),
        (rb'{"type":"ReviewNote","payload":{"text":"a","\ud800x":1}}', ["payload", f"{REPLACED}x"]),
        (rb'{"type":"ReviewNote","payload":{"text":"a"},"tags":["\ud800"]}', ["tags", 0]),
        (
            rb'{"type":"ReviewNote","payload":{"text":"a"},"correlation_id":"\ud800"}',
            ["correlation_id"],
        ),
        (rb'{"type":"Review\ud800","payload":{"text":"a"}}', ["type"]),
    ],
    ids=["field", "list item", "nested", "key", "tags", "correlation id", "type"],
)
async def test_publishing_a_lone_surrogate_is_422_naming_the_field_and_publishes_nothing(
    blackboard: tuple[Flock, httpx.AsyncClient], body: bytes, loc: list[Any]
) -> None:
    flock, client = blackboard
    r = await client.post(
        "/api/artifacts", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", *loc]
    assert error["type"] == "string_unicode"
    assert await flock.store.query() == []
    r = await client.get("/api/artifacts")
    assert r.status_code == 200 and r.json()["total"] == 0


async def test_a_validation_error_quoting_a_lone_surrogate_is_422_not_500(
    blackboard: tuple[Flock, httpx.AsyncClient],
) -> None:
    """FastAPI's own 422 echoes the input: the surrogate is replaced, not a 500."""
    _, client = blackboard
    r = await client.post(
        "/api/artifacts", content=rb'{"\ud800":1}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["input"] == {REPLACED: 1}


async def test_stored_strings_with_lone_surrogates_are_read_back_replaced(
    blackboard: tuple[Flock, httpx.AsyncClient],
) -> None:
    """An agent written in Python can publish such a string: every reading endpoint answers,
    with U+FFFD in its place."""
    flock, client = blackboard
    flock.agent("writer").description(f"writes {BAD}").consumes(ReviewOrder).publishes(ReviewNote)
    artifact = await flock.publish(
        ReviewNote(text=f"a{BAD}b", tags=[BAD], meta={BAD: [BAD]}),
        correlation_id=f"c{BAD}",
        tags={f"t{BAD}"},
    )
    r = await client.get("/api/artifacts")
    assert r.status_code == 200, r.text
    (item,) = r.json()["items"]
    assert item["id"] == artifact.id
    payload = item["payload"]
    assert payload["text"] == f"a{REPLACED}b" and payload["tags"] == [REPLACED]
    ((key, value),) = payload["meta"].items()
    assert set(key) == {REPLACED} and value == [REPLACED]
    assert item["correlation_id"] == f"c{REPLACED}" and item["tags"] == [f"t{REPLACED}"]
    r = await client.get("/api/artifacts", params={"type": "ReviewNote"})
    assert r.status_code == 200 and r.json()["total"] == 1
    r = await client.get("/api/blackboard")
    assert r.status_code == 200
    assert r.json()["agents"][0]["description"] == f"writes {REPLACED}"
    # A normal publish next to it still answers, and so does the list.
    r = await client.post("/api/artifacts", json={"type": "ReviewNote", "payload": {"text": "ok"}})
    assert r.status_code == 201
    r = await client.get("/api/artifacts")
    assert r.status_code == 200 and r.json()["total"] == 2


class FakeSocket:
    """A WebSocket whose transport encodes text as UTF-8, as a server's does."""

    def __init__(self, *, broken: bool = False) -> None:
        self.broken = broken
        self.sent: list[str] = []
        self.closed: int | None = None

    async def send_json(self, data: Any) -> None:
        await self.send_text(json.dumps(data, separators=(",", ":"), ensure_ascii=False))

    async def send_text(self, text: str) -> None:
        if self.broken:
            raise ConnectionResetError("the client went away")
        text.encode("utf-8")
        self.sent.append(text)

    async def close(self, code: int = 1000) -> None:
        self.closed = code


async def test_a_live_message_with_a_lone_surrogate_is_sent_replaced_to_every_client(
    tmp_path: Path,
) -> None:
    hub = LiveHub(TraceStore(tmp_path / "none.duckdb"), None)
    ok, broken = FakeSocket(), FakeSocket(broken=True)
    hub.clients.update({ok, broken})  # type: ignore[arg-type]
    await hub.broadcast({"type": "artifact", "artifact": {"payload": {"text": BAD}}})
    assert [json.loads(m) for m in ok.sent] == [
        {"type": "artifact", "artifact": {"payload": {"text": REPLACED}}}
    ]
    assert hub.clients == {ok}  # still served
    assert broken.closed == 1011  # the failed client is closed, not just forgotten
    await hub.broadcast({"type": "traces", "spans": 3})
    assert json.loads(ok.sent[-1]) == {"type": "traces", "spans": 3}


class StalledSocket(FakeSocket):
    """A client that stopped reading: its sends (and its close frame) never complete."""

    async def send_text(self, text: str) -> None:
        await asyncio.Event().wait()

    async def close(self, code: int = 1000) -> None:
        await asyncio.Event().wait()


async def test_a_client_that_stops_reading_is_dropped_and_holds_up_nobody(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A laptop asleep with the page open: its socket's buffers fill, and each send waited for
    # ever. Every publish broadcasts, so publishing hung, other clients got nothing, and the
    # server ignored SIGTERM while the stuck publish ran (found by a review).
    from flock.dashboard import _live

    monkeypatch.setattr(_live, "SEND_TIMEOUT", 0.2)
    hub = LiveHub(TraceStore(tmp_path / "none.duckdb"), None)
    ok, stalled = FakeSocket(), StalledSocket()
    hub.clients.update({ok, stalled})  # type: ignore[arg-type]
    await asyncio.wait_for(hub.broadcast({"type": "traces", "spans": 1}), 5)
    assert [json.loads(m) for m in ok.sent] == [{"type": "traces", "spans": 1}]
    assert hub.clients == {ok}
    await asyncio.wait_for(hub.broadcast({"type": "traces", "spans": 2}), 1)
    assert len(ok.sent) == 2


def test_live_clients_keep_getting_artifacts_after_an_agent_published_a_lone_surrogate(
    tmp_path: Path,
) -> None:
    """Over a real server: the artifact arrives (replaced) and so do the ones after it."""
    from websockets.sync.client import connect

    flock = Flock("openai/gpt-4o")
    flock.agent("scribbler").consumes(ReviewOrder).publishes(ReviewNote).with_engines(
        lambda order: ReviewNote(text=f"{order.dish}{BAD}")
    )
    with server(tmp_path / "traces.duckdb", flock=flock, ui=False) as srv:
        ws_url = srv.url.replace("http://", "ws://").rstrip("/") + "/api/live"
        with connect(ws_url, open_timeout=10) as ws, httpx.Client(base_url=srv.url) as http:
            assert json.loads(ws.recv(timeout=10))["type"] == "hello"

            def publish(dish: str) -> None:
                r = http.post(
                    "/api/artifacts", json={"type": "ReviewOrder", "payload": {"dish": dish}}
                )
                assert r.status_code == 201, r.text

            def artifacts_until(text: str) -> list[dict[str, Any]]:
                got: list[dict[str, Any]] = []
                deadline = time.monotonic() + 15
                while not any(a["payload"].get("text") == text for a in got):
                    message = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
                    if message["type"] == "artifact":
                        got.append(message["artifact"])
                return got

            ws.send(b"\x00binary")  # clients say nothing; what they send is ignored
            ws.send("text too")
            publish("first")
            assert artifacts_until(f"first{REPLACED}")
            publish("second")  # the client was not dropped: it hears of this one too
            assert artifacts_until(f"second{REPLACED}")
            r = http.get("/api/artifacts")
            assert r.status_code == 200 and r.json()["total"] == 4


# --- 2. parent cycles -------------------------------------------------------------------------


def test_a_trace_that_is_all_one_parent_cycle_has_a_root_and_a_critical_path() -> None:
    from flock.tracing import _waterfall

    spans = [("a", "b", 0, 10), ("b", "a", 1, 5), ("c", "b", 2, 3)]
    assert critical_path(spans) == {"a", "b", "c"}  # was: min() of an empty sequence
    roots, _ = _waterfall.forest(spans)
    assert [r[0] for r in roots] == ["a"]  # cut at its earliest span
    assert [(r[0], depth, kids) for r, depth, kids in tree_order(spans)] == [
        ("a", 0, 1),
        ("b", 1, 1),
        ("c", 2, 0),
    ]
    assert critical_path([("s", "s", 0, 1)]) == {"s"}
    two_cycles = [("x", "y", 0, 4), ("y", "x", 1, 2), ("p", "q", 5, 9), ("q", "p", 6, 8)]
    assert [r[0] for r in _waterfall.forest(two_cycles)[0]] == ["x", "p"]
    assert critical_path(two_cycles) == {"x", "y", "p", "q"}


def cyclic_traces(db: Path) -> dict[str, str]:
    """A trace that is a two-span parent cycle, one whose only span is its own parent, and
    one with a cycle beside a real root; their trace ids by name."""
    start = time.time_ns()
    ids = {"cycle": new_trace_id(), "self": new_trace_id(), "mixed": new_trace_id()}
    spans: list[ReadableSpan] = [
        span("a", trace_id=ids["cycle"], span_id=1, parent_id=2, start_ns=start, duration_ns=10),
        span("b", trace_id=ids["cycle"], span_id=2, parent_id=1, start_ns=start, duration_ns=10),
        span("self", trace_id=ids["self"], span_id=1, parent_id=1, start_ns=start, duration_ns=9),
        span("root", trace_id=ids["mixed"], span_id=1, start_ns=start, duration_ns=100),
        span("x", trace_id=ids["mixed"], span_id=2, parent_id=3, start_ns=start + 1, duration_ns=5),
        span("y", trace_id=ids["mixed"], span_id=3, parent_id=2, start_ns=start + 2, duration_ns=5),
    ]
    write_spans(db, spans)
    return {name: f"{tid:032x}" for name, tid in ids.items()}


async def test_the_timeline_of_a_trace_with_a_parent_cycle_is_drawn(tmp_path: Path) -> None:
    db = tmp_path / "cycle.duckdb"
    ids = cyclic_traces(db)
    async with client_for(create_app(db)) as client:
        shapes = {}
        for name, trace_id in ids.items():
            r = await client.get(f"/api/traces/{trace_id}")
            assert r.status_code == 200, (name, r.text)
            shapes[name] = [
                (s["name"], s["depth"], s["children"], s["critical"]) for s in r.json()["spans"]
            ]
    assert shapes == {
        "cycle": [("a", 0, 1, True), ("b", 1, 0, True)],
        "self": [("self", 0, 0, True)],
        "mixed": [("root", 0, 0, True), ("x", 0, 1, False), ("y", 1, 0, False)],
    }


def test_selecting_a_span_of_a_parent_cycle_in_the_browser_does_not_hang(tmp_path: Path) -> None:
    """The view expands a selected span's ancestors: round a cycle, that never ended.
    (Playwright runs in a thread of its own, so the async tests of this module keep the
    main thread's event loop to themselves.)"""
    db = tmp_path / "cycle.duckdb"
    ids = cyclic_traces(db)
    errors: list[str] = []

    def browse(url: str) -> None:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 860})
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.set_default_timeout(10_000)
                for name, span_name in (("self", "self"), ("cycle", "b"), ("cycle", "a")):
                    page.goto(f"{url}#/trace/{ids[name]}")
                    page.locator(f".wf-row[data-name='{span_name}']").click()
                    expect(page.locator(".wf-row.selected")).to_have_attribute(
                        "data-name", span_name
                    )
                    expect(page.locator("#span-detail h3")).to_have_text(span_name)
            finally:
                browser.close()

    with server(db, read_only=True) as srv:
        run_in_thread(browse, srv.url)
    assert not errors, errors


def run_in_thread(fn: Any, *args: Any) -> None:
    failed: list[BaseException] = []

    def main() -> None:
        try:
            fn(*args)
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "the browser hung"
    if failed:
        raise failed[0]


# --- 3. OTLP requests larger than the writer's queue -------------------------------------------


async def test_a_request_that_can_never_fit_the_queue_is_413_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "small.duckdb"
    seed = seed_trace()
    writer = DuckDBSpanProcessor(db, flush_interval=60, max_queue=len(seed) - 1)
    try:
        async with client_for(create_app(db, read_only=False)) as client:
            import flock.dashboard._ingest as ingest

            def not_built(request: Any) -> list[ReadableSpan]:
                raise AssertionError("the spans are built before the request is refused")

            with monkeypatch.context() as patch:
                patch.setattr(ingest, "request_to_spans", not_built)
                r = await client.post(
                    "/v1/traces",
                    content=encode_request(seed).SerializeToString(),
                    headers={"Content-Type": PROTOBUF},
                )
            assert r.status_code == 413
            assert "retry-after" not in r.headers
            status = Status.FromString(r.content)
            assert status.code == 8  # RESOURCE_EXHAUSTED
            assert f"holds {len(seed)} spans" in status.message
            assert f"({len(seed) - 1})" in status.message
            assert writer.pending == 0 and writer.dropped == 0
            # One that fits is taken; the SDK exporter gives up on the other at once.
            r = await client.post(
                "/v1/traces",
                content=encode_request(seed[:3]).SerializeToString(),
                headers={"Content-Type": PROTOBUF},
            )
            assert r.status_code == 200
    finally:
        writer.shutdown()


def test_the_sdk_exporter_gives_up_on_a_request_that_can_never_fit_at_once(
    tmp_path: Path,
) -> None:
    """413 is not retried by the OTLP/HTTP exporter (503 is, with backoff, for 10 s)."""
    db = tmp_path / "small.duckdb"
    seed = seed_trace()
    with server(db, read_only=False, ui=False) as srv:
        writer = DuckDBSpanProcessor(db, flush_interval=60, max_queue=len(seed) - 1)
        exporter = OTLPSpanExporter(endpoint=f"{srv.url}v1/traces", timeout=10)
        try:
            started = time.monotonic()
            assert exporter.export(seed) is SpanExportResult.FAILURE
            assert time.monotonic() - started < 5
            assert writer.pending == 0 and writer.dropped == 0
        finally:
            exporter.shutdown()
            writer.shutdown()


async def test_a_request_that_fits_later_still_gets_503(tmp_path: Path) -> None:
    db = tmp_path / "busy.duckdb"
    seed = seed_trace()
    writer = DuckDBSpanProcessor(db, flush_interval=60, max_queue=len(seed) + 2)
    try:
        async with client_for(create_app(db, read_only=False)) as client:
            for s in seed[:3]:
                writer.on_end(s)
            with writer.pause():
                r = await client.post(
                    "/v1/traces",
                    content=encode_request(seed).SerializeToString(),
                    headers={"Content-Type": PROTOBUF},
                )
            assert r.status_code == 503 and r.headers["retry-after"] == "2"
    finally:
        writer.shutdown()


def test_over_grpc_a_request_that_can_never_fit_is_invalid_argument_without_retry_info(
    tmp_path: Path,
) -> None:
    db = tmp_path / "small.duckdb"
    seed = seed_trace()
    with server(db, read_only=False, ui=False, otlp_grpc_port=0) as srv:
        writer = DuckDBSpanProcessor(db, flush_interval=60, max_queue=len(seed) - 1)
        try:
            address = grpc_address(srv.lines)
            error = refused(address, encode_request(seed))
            assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert f"holds {len(seed)} spans" in error.details()
            trailers = dict(error.trailing_metadata() or ())
            assert "google.rpc.retryinfo-bin" not in trailers
            exporter = GrpcSpanExporter(endpoint=address, insecure=True, timeout=10)
            started = time.monotonic()
            assert exporter.export(seed) is SpanExportResult.FAILURE
            assert time.monotonic() - started < 5  # not retried
            exporter.shutdown()
            assert writer.pending == 0 and writer.dropped == 0
        finally:
            writer.shutdown()
