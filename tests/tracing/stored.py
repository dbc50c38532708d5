"""Spans with chosen ids, times and attributes, written to a trace file the way the DuckDB
writer writes them (``spans_to_arrow``), for the query, CLI and export tests."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from flock import __version__
from flock.tracing._encode import spans_to_arrow
from flock.tracing.store import Appender

# The seed's "Trace Hierarchy Example", verbatim.
SEED_TREE = """\
pizza_workflow (5319ms) ← ROOT
├─ Flock.publish (3ms)
│  └─ Agent.execute (5218ms)
│     ├─ OutputUtilityComponent.on_initialize (0.15ms)
│     ├─ DSPyEngine.on_initialize (0.15ms)
│     ├─ DSPyEngine.evaluate (4938ms)
│     │  ├─ DSPyEngine.fetch_conversation_context (0.19ms)
│     │  └─ DSPyEngine.should_use_context (0.14ms)
│     └─ OutputUtilityComponent.on_post_evaluate (0.30ms)
└─ Flock.run_until_idle (5268ms)
   └─ Flock.shutdown (0.17ms)"""

# (name, parent name, start offset ms, duration ms) reproducing SEED_TREE.
SEED_SPANS: tuple[tuple[str, str | None, float, float], ...] = (
    ("pizza_workflow", None, 0, 5319),
    ("Flock.publish", "pizza_workflow", 1, 3),
    ("Agent.execute", "Flock.publish", 2, 5218),
    ("OutputUtilityComponent.on_initialize", "Agent.execute", 3, 0.15),
    ("DSPyEngine.on_initialize", "Agent.execute", 4, 0.15),
    ("DSPyEngine.evaluate", "Agent.execute", 5, 4938),
    ("DSPyEngine.fetch_conversation_context", "DSPyEngine.evaluate", 6, 0.19),
    ("DSPyEngine.should_use_context", "DSPyEngine.evaluate", 7, 0.14),
    ("OutputUtilityComponent.on_post_evaluate", "Agent.execute", 5000, 0.30),
    ("Flock.run_until_idle", "pizza_workflow", 50, 5268),
    ("Flock.shutdown", "Flock.run_until_idle", 5300, 0.17),
)

RESOURCE = Resource({"service.name": "flock", "service.version": "0.1.0"})
SCOPE = InstrumentationScope("flock", __version__)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_ids = random.Random()


def new_trace_id() -> int:
    return _ids.getrandbits(128) or 1


def new_span_id() -> int:
    return _ids.getrandbits(64) or 1


def span(
    name: str,
    *,
    trace_id: int,
    span_id: int | None = None,
    parent_id: int | None = None,
    start_ns: int,
    duration_ns: int,
    attributes: Mapping[str, Any] | None = None,
    events: Sequence[Event] = (),
    links: Sequence[Link] = (),
    error: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    resource: Resource = RESOURCE,
) -> ReadableSpan:
    """A finished span as the SDK hands it to span processors."""
    return ReadableSpan(
        name=name,
        context=SpanContext(trace_id, span_id or new_span_id(), False, _SAMPLED),
        parent=SpanContext(trace_id, parent_id, False, _SAMPLED) if parent_id else None,
        resource=resource,
        attributes=dict(attributes or {}),
        events=events,
        links=links,
        kind=kind,
        status=Status(StatusCode.ERROR, error) if error else Status(StatusCode.OK),
        start_time=start_ns,
        end_time=start_ns + duration_ns,
        instrumentation_scope=SCOPE,
    )


def seed_trace(
    *,
    start_ns: int = 1_700_000_000_000_000_000,
    error: bool = False,
    workflow: str = "pizza_workflow",
) -> list[ReadableSpan]:
    """The seed's pizza workflow with the seed's durations, plus realistic attributes, an
    exception event (when ``error``) and a span link from ``Agent.execute`` to the publish."""
    trace_id = new_trace_id()
    ids: dict[str, int] = {name: new_span_id() for name, *_ in SEED_SPANS}
    spans: list[ReadableSpan] = []
    for seed_name, parent, offset_ms, duration_ms in SEED_SPANS:
        name = workflow if parent is None else seed_name
        attributes: dict[str, Any] = {"flock.workflow": True, "workflow.name": workflow}
        events: list[Event] = []
        links: list[Link] = []
        failed = None
        if parent is None:
            attributes.update({"pipeline.version": "2.0", "dataset.size": 10_000})
        if name == "Flock.publish":
            attributes.update({"flock.artifact.count": 1, "flock.artifact.types": ("PizzaIdea",)})
        if name == "Agent.execute":
            attributes.update(
                {
                    "gen_ai.agent.name": "pizza_master",
                    "gen_ai.operation.name": "invoke_agent",
                    "flock.input.types": ("PizzaIdea",),
                    # a key that is both a leaf and a prefix of another key
                    "flock.run": "run-1",
                    "flock.run.attempt": 1,
                }
            )
            links.append(
                Link(
                    SpanContext(trace_id, ids["Flock.publish"], False, _SAMPLED),
                    {"flock.artifact.id": "a-1"},
                )
            )
        if name == "DSPyEngine.evaluate":
            attributes.update(
                {"gen_ai.usage.input_tokens": 812, "gen_ai.usage.output_tokens": 95, "temp": 0.7}
            )
            if error:
                failed = "ValueError: the oven is cold"
                events.append(
                    Event(
                        "exception",
                        {
                            "exception.type": "ValueError",
                            "exception.message": "the oven is cold",
                            "exception.escaped": True,
                        },
                        timestamp=start_ns + int((offset_ms + 4900) * 1e6),
                    )
                )
        spans.append(
            span(
                name,
                trace_id=trace_id,
                span_id=ids[seed_name],
                parent_id=ids[parent] if parent else None,
                start_ns=start_ns + int(offset_ms * 1e6),
                duration_ns=round(duration_ms * 1e6),
                attributes=attributes,
                events=events,
                links=links,
                error=failed,
            )
        )
    return spans


def write_spans(db: str | Path, spans: Sequence[ReadableSpan]) -> None:
    """Append spans to the trace file exactly as the background writer does."""
    appender = Appender(db)
    try:
        appender.append(spans_to_arrow(list(spans)))
    finally:
        appender.close()


def hex_ids(s: ReadableSpan) -> tuple[str, str, str | None]:
    ctx = s.context
    assert ctx is not None
    return (
        f"{ctx.trace_id:032x}",
        f"{ctx.span_id:016x}",
        f"{s.parent.span_id:016x}" if s.parent is not None else None,
    )


class OtlpReceiver:
    """A minimal OTLP/HTTP receiver on 127.0.0.1 that records what it is sent.

    ``status`` is the HTTP status it answers with (``reply`` its body, of ``content_type``);
    ``requests`` holds ``(path, headers with lowercase names, body)``.
    """

    def __init__(
        self, status: int = 200, *, reply: bytes | None = None, content_type: str | None = None
    ) -> None:
        import http.server
        import threading

        self.status = status
        self.reply = reply
        self.content_type = content_type
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append(
                    (self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                reply = receiver.reply
                if reply is None:
                    reply = b"" if receiver.status == 200 else b"bad spans, go away"
                self.send_response(receiver.status)
                if receiver.content_type:
                    self.send_header("Content-Type", receiver.content_type)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def spans(self) -> list[Any]:
        """Every span received (protobuf requests), in order."""
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        out: list[Any] = []
        for _, _, body in self.requests:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    out.extend(ss.spans)
        return out
