"""Stored spans out as OTLP: JSON encoding round trip and OTLP/HTTP replay."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan

from flock.exceptions import TracingError
from flock.tracing.export import (
    encode_request,
    export_json,
    iter_trace_spans,
    parse_otlp_json,
    request_to_json,
    send_otlp,
    to_otlp_json,
    trace_ids_for_export,
    traces_endpoint,
)
from flock.tracing.query import TraceStore
from tests.tracing.stored import SEED_SPANS, OtlpReceiver, hex_ids, seed_trace, write_spans

STATUS_OK, STATUS_ERROR = 1, 2
KIND_INTERNAL = 1


def otlp_spans(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [span for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]


def attrs(items: list[dict[str, Any]]) -> dict[str, Any]:
    """OTLP KeyValue list -> {key: the AnyValue dict}."""
    return {kv["key"]: kv["value"] for kv in items}


def normalised(doc: dict[str, Any]) -> dict[str, Any]:
    """Attribute lists sorted by key (storage does not keep their order)."""

    def fix(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: fix(v) for k, v in node.items()}
            if isinstance(out.get("attributes"), list):
                out["attributes"] = sorted(out["attributes"], key=lambda kv: kv["key"])
            return out
        if isinstance(node, list):
            return [fix(v) for v in node]
        return node

    result: dict[str, Any] = fix(doc)
    return result


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "traces.duckdb"


@pytest.fixture
def stored(db: Path) -> list[ReadableSpan]:
    spans = seed_trace(error=True)
    write_spans(db, spans)
    return spans


def test_stored_trace_exports_as_the_live_exporter_would_send_it(
    db: Path, stored: list[ReadableSpan]
) -> None:
    trace_id = hex_ids(stored[0])[0]
    (line,) = export_json(TraceStore(db), [trace_id]).splitlines()
    doc = orjson.loads(line)
    # Exactly what the OTLP exporter's encoder makes of the original SDK spans (by start time)
    by_start = sorted(stored, key=lambda s: s.start_time or 0)
    assert normalised(doc) == normalised(to_otlp_json(by_start))


def test_otlp_json_round_trip_ids_parents_attributes_events_links_status(
    db: Path, stored: list[ReadableSpan]
) -> None:
    trace_id = hex_ids(stored[0])[0]
    doc = orjson.loads(export_json(TraceStore(db), [trace_id]))
    (resource_spans,) = doc["resourceSpans"]
    assert attrs(resource_spans["resource"]["attributes"])["service.name"] == {
        "stringValue": "flock"
    }
    (scope_spans,) = resource_spans["scopeSpans"]
    assert scope_spans["scope"]["name"] == "flock"
    spans = scope_spans["spans"]
    assert len(spans) == len(SEED_SPANS)

    # ids: lowercase hex, as stored; parents rebuild the seed's nesting
    expected = {hex_ids(s)[1]: (s.name, hex_ids(s)[2]) for s in stored}
    by_id = {s["spanId"]: s for s in spans}
    assert {s["traceId"] for s in spans} == {trace_id}
    assert {sid: (s["name"], s.get("parentSpanId")) for sid, s in by_id.items()} == expected
    name_of = {sid: s["name"] for sid, s in by_id.items()}
    parent_names = {s["name"]: name_of.get(s.get("parentSpanId", "")) for s in spans}
    assert parent_names == {name: parent for name, parent, *_ in SEED_SPANS}

    # times: decimal strings of integer nanoseconds
    root = next(s for s in spans if "parentSpanId" not in s)
    assert root["startTimeUnixNano"] == str(stored[0].start_time)
    assert int(root["endTimeUnixNano"]) - int(root["startTimeUnixNano"]) == 5319 * 10**6
    assert root["kind"] == KIND_INTERNAL and root["status"] == {"code": STATUS_OK}

    # attributes: nested in the file, dotted keys again, typed AnyValues
    root_attrs = attrs(root["attributes"])
    assert root_attrs["flock.workflow"] == {"boolValue": True}
    assert root_attrs["workflow.name"] == {"stringValue": "pizza_workflow"}
    assert root_attrs["dataset.size"] == {"intValue": "10000"}
    agent = next(s for s in spans if s["name"] == "Agent.execute")
    agent_attrs = attrs(agent["attributes"])
    assert agent_attrs["flock.run"] == {"stringValue": "run-1"}  # leaf and prefix
    assert agent_attrs["flock.run.attempt"] == {"intValue": "1"}
    assert agent_attrs["gen_ai.agent.name"] == {"stringValue": "pizza_master"}
    assert agent_attrs["flock.input.types"] == {
        "arrayValue": {"values": [{"stringValue": "PizzaIdea"}]}
    }
    # links: to the publish span, with their attributes
    (link,) = agent["links"]
    publish = next(s for s in spans if s["name"] == "Flock.publish")
    assert (link["traceId"], link["spanId"]) == (trace_id, publish["spanId"])
    assert attrs(link["attributes"]) == {"flock.artifact.id": {"stringValue": "a-1"}}

    # the failed span: status with its message, and the exception event
    evaluate = next(s for s in spans if s["name"] == "DSPyEngine.evaluate")
    assert evaluate["status"] == {"code": STATUS_ERROR, "message": "ValueError: the oven is cold"}
    assert attrs(evaluate["attributes"])["temp"] == {"doubleValue": 0.7}
    (event,) = evaluate["events"]
    assert event["name"] == "exception"
    assert int(event["timeUnixNano"]) > int(evaluate["startTimeUnixNano"])
    assert attrs(event["attributes"]) == {
        "exception.type": {"stringValue": "ValueError"},
        "exception.message": {"stringValue": "the oven is cold"},
        "exception.escaped": {"boolValue": True},
    }


def test_otlp_json_parses_strictly_back_to_the_same_request(
    db: Path, stored: list[ReadableSpan]
) -> None:
    text = export_json(TraceStore(db), [hex_ids(stored[0])[0]])
    request = parse_otlp_json(text)
    assert request_to_json(request) == orjson.loads(text)
    span_ids = {s.span_id for s in request.resource_spans[0].scope_spans[0].spans}
    assert span_ids == {bytes.fromhex(hex_ids(s)[1]) for s in stored}
    with pytest.raises(Exception, match="noSuchField"):
        parse_otlp_json({"resourceSpans": [{"noSuchField": 1}]})


def test_all_traces_are_json_lines_oldest_first_and_filterable(db: Path) -> None:
    old = seed_trace(start_ns=1_600_000_000_000_000_000, workflow="old_workflow")
    new = seed_trace(start_ns=1_700_000_000_000_000_000, workflow="new_workflow")
    write_spans(db, new + old)
    store = TraceStore(db)
    ids = trace_ids_for_export(store)
    assert ids == [hex_ids(old[0])[0], hex_ids(new[0])[0]]
    lines = export_json(store, ids).splitlines()
    assert [otlp_spans(orjson.loads(line))[0]["traceId"] for line in lines] == ids
    assert trace_ids_for_export(store, name="new") == [ids[1]]
    assert trace_ids_for_export(store, since_ns=1_650_000_000_000_000_000) == [ids[1]]


def test_unknown_trace_id_is_a_readable_error(db: Path, stored: list[ReadableSpan]) -> None:
    with pytest.raises(TracingError, match="no trace 'ffff'"):
        list(iter_trace_spans(TraceStore(db), ["ffff"]))


def test_replay_posts_protobuf_to_v1_traces(db: Path, stored: list[ReadableSpan]) -> None:
    trace_id = hex_ids(stored[0])[0]
    with OtlpReceiver() as receiver:
        assert send_otlp(TraceStore(db), [trace_id], receiver.url, headers={"x-k": "v"}) == (
            1,
            len(SEED_SPANS),
        )
    ((path, headers, _),) = receiver.requests
    assert path == "/v1/traces"
    assert headers["content-type"] == "application/x-protobuf" and headers["x-k"] == "v"
    received = receiver.spans()
    assert {(s.span_id.hex(), s.parent_span_id.hex() or None) for s in received} == {
        hex_ids(s)[1:] for s in stored
    }
    assert {s.trace_id.hex() for s in received} == {trace_id}
    # byte for byte what the OTLP exporter encodes for the original spans
    assert len(receiver.requests[0][2]) == len(encode_request(stored).SerializeToString())


def test_replay_as_json_and_batches_whole_traces(db: Path) -> None:
    traces = [seed_trace(start_ns=1_700_000_000_000_000_000 + i) for i in range(3)]
    write_spans(db, [s for t in traces for s in t])
    store = TraceStore(db)
    ids = trace_ids_for_export(store)
    with OtlpReceiver() as receiver:
        assert send_otlp(store, ids, receiver.url + "/v1/traces", max_spans_per_request=15) == (
            3,
            33,
        )
    # 11 spans a trace: never split, so one trace per request
    assert [len(r[2]) > 0 for r in receiver.requests] == [True] * 3
    per_request = [
        len({s.trace_id for s in receiver.spans()[i * 11 : i * 11 + 11]}) for i in range(3)
    ]
    assert per_request == [1, 1, 1]
    # a trace larger than a request is split (receivers cap request sizes)
    with OtlpReceiver() as receiver:
        assert send_otlp(store, ids[:1], receiver.url, max_spans_per_request=4) == (1, 11)
    assert len(receiver.requests) == 3  # 4 + 4 + 3 spans
    assert {hex_ids(s)[1] for s in traces[0]} == {s.span_id.hex() for s in receiver.spans()}
    with OtlpReceiver() as receiver:
        send_otlp(store, ids[:1], receiver.url, protocol="http/json")
    ((_, headers, body),) = receiver.requests
    assert headers["content-type"] == "application/json"
    doc = orjson.loads(body)
    assert {s["spanId"] for s in otlp_spans(doc)} == {hex_ids(s)[1] for s in traces[0]}
    # ids are hex, not the protobuf JSON mapping's base64
    assert all(len(s["traceId"]) == 32 for s in otlp_spans(doc))
    assert base64.b64encode(bytes.fromhex(ids[0])).decode() not in body.decode()


def test_replay_errors_are_readable(db: Path, stored: list[ReadableSpan]) -> None:
    trace_id = hex_ids(stored[0])[0]
    with OtlpReceiver(status=400) as receiver:
        with pytest.raises(TracingError, match=r"refused the spans: HTTP 400.*go away"):
            send_otlp(TraceStore(db), [trace_id], receiver.url)
        url = receiver.url
    with pytest.raises(TracingError, match=f"cannot reach {url}/v1/traces"):
        send_otlp(TraceStore(db), [trace_id], url, timeout=2)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:6006", "http://127.0.0.1:6006/v1/traces"),
        ("http://127.0.0.1:6006/", "http://127.0.0.1:6006/v1/traces"),
        ("https://otel.example:4318/v1/traces", "https://otel.example:4318/v1/traces"),
        ("http://h/prefix", "http://h/prefix/v1/traces"),
    ],
)
def test_traces_endpoint(url: str, expected: str) -> None:
    assert traces_endpoint(url) == expected


def test_traces_endpoint_wants_http() -> None:
    with pytest.raises(ValueError, match="not an http"):
        traces_endpoint("127.0.0.1:6006")
