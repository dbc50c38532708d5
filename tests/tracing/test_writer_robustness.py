"""The DuckDB writer under unusual conditions: a span the encoder cannot take is dropped,
counted and reported, never blocking the spans queued after it; link and resource
attributes are capped and redacted like a span's; a forked child writes its own spans."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from pathlib import Path

import duckdb
import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Link

from flock.tracing.processor import DuckDBSpanProcessor


def stored(db: Path, column: str = "attributes") -> dict[str, str]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return dict(conn.execute(f"SELECT name, {column} FROM spans").fetchall())


def test_a_span_out_of_range_is_dropped_and_the_others_are_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "traces.duckdb"
    writer = DuckDBSpanProcessor(db, flush_interval=60)
    tracer = TracerProvider().get_tracer("t")
    try:
        for name in ("before", "poison", "after"):
            span = tracer.start_span(name)
            span.end(end_time=2**64 - 1 if name == "poison" else None)  # not an int64 time
            writer.on_end(span)
        assert writer.force_flush(10_000)
        assert writer.pending == 0
        assert writer.unencodable == 1 and writer.dropped == 1
        assert "OverflowError" in (writer.unencodable_error or "")
        later = tracer.start_span("later")
        later.end()
        writer.on_end(later)
        assert writer.force_flush(10_000)
    finally:
        writer.shutdown()
    assert sorted(stored(db)) == ["after", "before", "later"]
    assert "dropping span 'poison'" in caplog.text
    assert "1 unencodable (OverflowError" in capsys.readouterr().err  # reported at exit too


def test_link_and_resource_attributes_are_redacted_capped_and_never_block(
    tmp_path: Path,
) -> None:
    db = tmp_path / "traces.duckdb"

    def redact(key: str, value: object) -> object:
        return None if "token" in key else value

    writer = DuckDBSpanProcessor(db, flush_interval=60, redact=redact, max_attribute_chars=10)
    resource = Resource.create({"service.name": "svc", "deploy.token": "R-SECRET"})
    tracer = TracerProvider(resource=resource).get_tracer("t")
    try:
        target = tracer.start_span("target")
        target.end()
        attributes = {"auth.token": "L-SECRET", "note": "x" * 50, "big": 2**70}
        for name, link_attributes in (
            ("linked", {k: v for k, v in attributes.items() if k != "big"}),
            ("huge", {"big": 2**70}),  # beyond JSON's 64-bit integers
        ):
            span = tracer.start_span(name, links=[Link(target.get_span_context(), link_attributes)])
            span.end()
            writer.on_end(span)
        writer.on_end(target)
        assert writer.force_flush(10_000) and writer.dropped == 0
    finally:
        writer.shutdown()
    links = {name: json.loads(value) for name, value in stored(db, "links").items()}
    assert links["linked"][0]["attributes"] == {"note": "x" * 10 + "…[truncated 40 chars]"}
    assert links["huge"][0]["attributes"] == {"big": str(2**70)}  # its digits, not lost
    resources = {name: json.loads(value) for name, value in stored(db, "resource").items()}
    assert all("deploy.token" not in r and r["service.name"] == "svc" for r in resources.values())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_writes_its_spans_and_not_its_parents(tmp_path: Path) -> None:
    db = tmp_path / "traces.duckdb"
    writer = DuckDBSpanProcessor(db, flush_interval=60)
    tracer = TracerProvider().get_tracer("t")
    queued = tracer.start_span("queued_in_parent")  # still queued when the child forks
    queued.end()
    writer.on_end(queued)

    def child() -> None:
        span = tracer.start_span("in_child")
        span.end()
        writer.on_end(span)
        os._exit(0 if writer.force_flush(10_000) else 1)  # as multiprocessing ends a child

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(30)
    assert process.exitcode == 0
    assert writer.force_flush(10_000)
    writer.shutdown()
    with duckdb.connect(str(db), read_only=True) as conn:
        names = sorted(row[0] for row in conn.execute("SELECT name FROM spans").fetchall())
    assert names == ["in_child", "queued_in_parent"]  # each once


def test_nan_and_infinities_are_stored_as_their_otlp_json_strings(tmp_path: Path) -> None:
    """JSON has no NaN or infinity; they used to be stored as null (the value was lost)."""
    db = tmp_path / "traces.duckdb"
    writer = DuckDBSpanProcessor(db, flush_interval=60)
    provider = TracerProvider(resource=Resource({"host.load": float("inf")}))
    provider.add_span_processor(writer)
    tracer = provider.get_tracer("t")
    try:
        nan, inf = float("nan"), float("inf")
        with tracer.start_as_current_span("ours") as span:
            span.set_attributes({"score.value": nan, "hi": inf, "lo": -inf, "xs": [1.5, nan]})
            span.set_attribute("text", "null")  # a string that reads null stays one
            span.add_event("measured", {"ratio": -inf})
        link = trace.Link(span.get_span_context(), {"weight": nan})
        with tracer.start_as_current_span("plain", links=[link]) as other:
            other.set_attribute("n", 2.5)
        assert writer.force_flush(10_000)
    finally:
        writer.shutdown()
    assert json.loads(stored(db)["ours"]) == {
        "score": {"value": "NaN"},
        "hi": "Infinity",
        "lo": "-Infinity",
        "xs": [1.5, "NaN"],
        "text": "null",
    }
    assert json.loads(stored(db)["plain"]) == {"n": 2.5}
    assert json.loads(stored(db, "events")["ours"])[0]["attributes"] == {"ratio": "-Infinity"}
    assert json.loads(stored(db, "links")["plain"])[0]["attributes"] == {"weight": "NaN"}
    assert json.loads(stored(db, "resource")["plain"])["host.load"] == "Infinity"


def test_a_redact_hook_runs_once_per_attribute_and_a_null_in_text_is_text(
    tmp_path: Path,
) -> None:
    """A span whose JSON holds "null" (a payload with a None field) was encoded twice, calling
    the hook twice per attribute."""
    db = tmp_path / "traces.duckdb"
    calls: list[str] = []

    def redact(key: str, value: object) -> object:
        calls.append(key)
        return value

    writer = DuckDBSpanProcessor(db, flush_interval=60, redact=redact)
    provider = TracerProvider(resource=Resource({}))
    provider.add_span_processor(writer)
    try:
        with provider.get_tracer("t").start_as_current_span("ours") as span:
            span.set_attributes({"input.value": '{"topic": null}', "n": float("nan")})
        assert writer.force_flush(10_000)
    finally:
        writer.shutdown()
    assert sorted(k for k in calls if k in ("input.value", "n")) == ["input.value", "n"]
    assert json.loads(stored(db)["ours"]) == {"input": {"value": '{"topic": null}'}, "n": "NaN"}


def test_a_lone_surrogate_in_a_span_name_or_status_is_replaced_not_the_span_dropped(
    tmp_path: Path,
) -> None:
    # A file name decoded with surrogateescape in an exception message, say: UTF-8 has no
    # encoding for it, and the whole span used to be dropped as unencodable.
    from opentelemetry.trace import Status, StatusCode

    db = tmp_path / "traces.duckdb"
    writer = DuckDBSpanProcessor(db, flush_interval=60)
    tracer = TracerProvider().get_tracer("t")
    try:
        for name in ("read \udcff.txt", "fine"):
            span = tracer.start_span(name)
            span.set_status(Status(StatusCode.ERROR, "no such file: \udcff.txt"))
            span.end()
            writer.on_end(span)
        assert writer.force_flush(10_000)
        assert writer.dropped == 0
    finally:
        writer.shutdown()
    assert stored(db, "status_description") == {
        "read \ufffd.txt": "no such file: \ufffd.txt",
        "fine": "no such file: \ufffd.txt",
    }


def test_values_json_cannot_hold_are_repaired_and_the_other_attributes_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A workflow named after a file name decoded with surrogateescape, an integer past 64
    # bits: each used to replace all of the span's attributes with an encode_error
    # stand-in, which took the workflow's spans out of the documented workflow listing.
    db = tmp_path / "traces.duckdb"
    name = "ingest " + os.fsdecode(b"caf\xe9.csv")
    writer = DuckDBSpanProcessor(db, flush_interval=60)
    tracer = TracerProvider().get_tracer("t")
    try:
        for span_name, attributes in (
            ("surrogate", {"flock.workflow": True, "workflow.name": name, "f\udce9": [name]}),
            ("big", {"flock.workflow": True, "n": 2**70, "small": [1, 2]}),
        ):
            span = tracer.start_span(span_name, attributes=attributes)
            span.add_event("read", {"file": name})
            span.end()
            writer.on_end(span)
        assert writer.force_flush(10_000) and writer.dropped == 0
    finally:
        writer.shutdown()
    attributes = {k: json.loads(v) for k, v in stored(db).items()}
    assert attributes["surrogate"] == {
        "flock": {"workflow": True},
        "workflow": {"name": "ingest caf\ufffd.csv"},
        "f\ufffd": ["ingest caf\ufffd.csv"],
    }
    assert attributes["big"] == {"flock": {"workflow": True}, "n": str(2**70), "small": [1, 2]}
    events = json.loads(stored(db, "events")["surrogate"])
    assert events[0]["attributes"] == {"file": "ingest caf\ufffd.csv"}
    with duckdb.connect(str(db), read_only=True) as conn:
        listed = conn.execute(
            "SELECT name FROM spans WHERE json_extract(attributes, '$.flock.workflow') = 'true'"
        ).fetchall()
    assert sorted(listed) == [("big",), ("surrogate",)]
    assert caplog.text.count("lone surrogates or an integer beyond 64 bits") <= 1


def test_status_descriptions_and_span_names_are_capped_and_redacted(tmp_path: Path) -> None:
    from opentelemetry.trace import Status, StatusCode

    db = tmp_path / "traces.duckdb"

    def redact(key: str, value: object) -> object:
        if key == "otel.status_description" and isinstance(value, str):
            return value.replace("sk-SECRET", "[redacted]")
        return value

    writer = DuckDBSpanProcessor(db, flush_interval=60, redact=redact, max_attribute_chars=40)
    tracer = TracerProvider().get_tracer("t")
    try:
        failed = tracer.start_span("failed")
        failed.set_status(Status(StatusCode.ERROR, "Boom: bad key sk-SECRET"))
        failed.end()
        long = tracer.start_span("n" * 100)
        long.set_status(Status(StatusCode.ERROR, "e" * 100))
        long.end()
        for span in (failed, long):
            writer.on_end(span)
        assert writer.force_flush(10_000)
    finally:
        writer.shutdown()
    descriptions = stored(db, "status_description")
    assert descriptions["failed"] == "Boom: bad key [redacted]"
    capped = "n" * 40 + "…[truncated 60 chars]"
    assert descriptions[capped] == "e" * 40 + "…[truncated 60 chars]"


def test_a_redact_hook_failing_on_a_status_description_stores_and_exports_the_same_stand_in(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The file stored a JSON object as the description and OTLP a "flock.encode_error: ..."
    # text; an exception whose str() raises would have broken the file's stand-in.
    from opentelemetry.trace import Status, StatusCode

    from flock.tracing._encode import FinishedSpan, spans_to_arrow
    from flock.tracing._otlp import redacted

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise ValueError("no text")

    def redact(key: str, value: object) -> object:
        if key == "otel.status_description":
            raise Unprintable
        return value

    span = TracerProvider().get_tracer("t").start_span("failed")
    span.set_status(Status(StatusCode.ERROR, "Boom: key sk-SECRET"))
    span.end()
    stored = spans_to_arrow([FinishedSpan(span)], redact=redact).column("status_description")
    exported = redacted(span, redact, {}).status.description
    expected = "flock.encode_error: Unprintable: <Unprintable: str() raised ValueError>"
    assert stored.to_pylist() == [expected] and exported == expected
    assert "could not encode the status description of span 'failed'" in caplog.text


def test_a_flush_retries_a_held_file_often_so_it_follows_a_short_read_closely(
    tmp_path: Path,
) -> None:
    # A reader (the seed's read_only connection, the dashboard) holds the file for a moment
    # as a traced_run exits. The retries used to back off from 50 ms (50, 100, 200, 400 ms,
    # ...): the exit waited up to twice as long as the read.
    writer = DuckDBSpanProcessor(tmp_path / "traces.duckdb", flush_interval=60)
    attempts: list[float] = []
    append = writer._appender.append

    def held_for_eight_tries(table: object, **options: bool) -> None:
        attempts.append(time.monotonic())
        if len(attempts) <= 8:
            raise duckdb.IOException("IO Error: Could not set lock on file: held by a reader")
        append(table, **options)  # type: ignore[arg-type]

    writer._appender.append = held_for_eight_tries  # type: ignore[method-assign]
    try:
        span = TracerProvider().get_tracer("t").start_span("s")
        span.end()
        writer.on_end(span)
        assert writer.force_flush(10_000)
    finally:
        writer.shutdown()
    assert len(attempts) == 9 and stored(db=tmp_path / "traces.duckdb", column="name") == {"s": "s"}
    assert attempts[-1] - attempts[0] < 1.0  # 8 waits of 10 ms (the old schedule: > 3 s)


def test_spans_with_float_times_are_stored(tmp_path: Path) -> None:
    # The SDK keeps start_time=/end_time= as given; time.time() * 1e9 is a float. The
    # encoder's array.array path refused floats, and such a span was dropped as unencodable.
    db = tmp_path / "traces.duckdb"
    writer = DuckDBSpanProcessor(db, flush_interval=60)
    tracer = TracerProvider().get_tracer("t")
    try:
        start = float(time.time_ns() // 1000 * 1000)
        span = tracer.start_span("float-start", start_time=start)  # type: ignore[arg-type]
        span.end(end_time=start + 5e6)  # type: ignore[arg-type]
        other = tracer.start_span("int")
        other.end()
        for s in (span, other):
            writer.on_end(s)
        assert writer.force_flush(10_000)
        assert writer.dropped == 0
    finally:
        writer.shutdown()
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = conn.execute(
            "SELECT name, start_time, duration_ms FROM spans ORDER BY name"
        ).fetchall()
    assert rows[0][:2] == ("float-start", int(start)) and rows[1][0] == "int"
    assert rows[0][2] == pytest.approx(5.0, abs=0.001)  # (a float's precision at 1.8e18 ns)


def test_encoding_attributes_keeps_no_value_alive_and_may_reenter() -> None:
    # An attribute key set's nested dict is reused from span to span: it must not keep the
    # last span's values (a large prompt, say) alive after the batch, and a value whose
    # str() (orjson's default=str) encodes attributes of the same keys in this thread must
    # not overwrite the dict being serialized.
    import gc
    import weakref

    from flock.tracing._attributes import attributes_json, attributes_jsons

    class Payload:
        def __str__(self) -> str:
            return "payload"

    payload = Payload()
    alive = weakref.ref(payload)
    assert attributes_jsons([{"llm.prompt": payload}], max_chars=100) == [
        '{"llm":{"prompt":"payload"}}'
    ]
    del payload
    gc.collect()
    assert alive() is None

    class Inner:
        def __str__(self) -> str:
            return attributes_json({"a": "INNER", "b": "inner-b"}, max_chars=100)

    outer = json.loads(attributes_json({"a": Inner(), "b": "outer-b"}, max_chars=1000))
    assert outer == {"a": '{"a":"INNER","b":"inner-b"}', "b": "outer-b"}


def test_an_append_error_whose_message_cannot_be_shown_is_reported_as_itself(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The writer formatted errors with str() (to tell a lock error, and in its last-resort
    # handler): an exception whose str() raises was replaced by the ValueError that str()
    # raised, and the report named that instead of the append's own failure.
    class Unprintable(RuntimeError):
        def __str__(self) -> str:
            raise ValueError("no text")

    writer = DuckDBSpanProcessor(tmp_path / "traces.duckdb", flush_interval=0.05)
    append = writer._appender.append
    failures = [Unprintable()]

    def failing_once(table: object, **options: bool) -> None:
        if failures:
            raise failures.pop()
        append(table, **options)  # type: ignore[arg-type]

    writer._appender.append = failing_once  # type: ignore[method-assign]
    try:
        span = TracerProvider().get_tracer("t").start_span("s")
        span.end()
        writer.on_end(span)
        with caplog.at_level(logging.ERROR, logger="flock.tracing"):
            writer.force_flush(500)  # (the flush the failed append served may report False)
            assert writer.force_flush(10_000)  # the writer goes on, and the span is written
        assert writer._thread.is_alive() and writer.written == 1
        assert "flock trace writer failed" in caplog.text  # reported, with its traceback
        assert "Unprintable" in caplog.text and "ValueError: no text" not in caplog.text
    finally:
        writer.shutdown()
