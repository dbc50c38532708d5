"""An export of several traces goes on past a trace that cannot be exported.

A trace id not in the file, a trace whose stored rows OTLP cannot hold (JSON flock cannot
read, an id that is not hex) or a request the receiver refuses fails that trace only: the
other traces are written or sent, and each failed trace is reported (id and reason) at the
end, with exit status 1 from ``flock traces export``. An unreachable receiver, or one that
refuses for a reason about itself (HTTP 503, 401, …), stops the export at once instead.
"""

from __future__ import annotations

import http.server
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from flock.cli import main
from flock.exceptions import TracingError
from flock.tracing.export import (
    ExportError,
    export_json,
    send_otlp,
    trace_ids_for_export,
    write_json_file,
)
from flock.tracing.query import TraceStore
from tests.tracing.stored import OtlpReceiver, hex_ids, seed_trace, write_spans

START = 1_700_000_000 * 10**9
SPANS_PER_TRACE = 11
BAD_JSON = "attributes is not JSON flock can read"
BAD_SPAN_ID = "span_id 'not-hex-id' is not an id of 1 to 16 hex digits"
BAD_TRACE_ID = "trace_id 'not-a-hex-trace-id' is not an id of 1 to 32 hex digits"


class Traces:
    """A trace file of five traces, oldest first: good, bad JSON, a span id that is not
    hex, a trace id that is not hex, good."""

    def __init__(self, db: Path) -> None:
        traces = [seed_trace(start_ns=START + i * 10**9) for i in range(5)]
        write_spans(db, [s for t in traces for s in t])
        ids = [hex_ids(t[0])[0] for t in traces]
        with duckdb.connect(str(db)) as conn:
            conn.execute(  # valid JSON, but a number no double holds
                "UPDATE spans SET attributes = '{\"a\": 1e400}' "
                "WHERE trace_id = ? AND name = 'Flock.publish'",
                [ids[1]],
            )
            conn.execute(
                "UPDATE spans SET span_id = 'not-hex-id' "
                "WHERE trace_id = ? AND name = 'Flock.shutdown'",
                [ids[2]],
            )
            conn.execute(
                "UPDATE spans SET trace_id = 'not-a-hex-trace-id' WHERE trace_id = ?", [ids[3]]
            )
        ids[3] = "not-a-hex-trace-id"
        self.db = str(db)
        self.ids = ids
        self.good = [ids[0], ids[4]]
        self.bad = {ids[1]: BAD_JSON, ids[2]: BAD_SPAN_ID, ids[3]: BAD_TRACE_ID}


@pytest.fixture
def traces(tmp_path: Path) -> Traces:
    return Traces(tmp_path / "traces.duckdb")


def line_trace_ids(text: str) -> list[str]:
    """The trace id of each OTLP/JSON line (one trace per line)."""
    ids = []
    for line in text.splitlines():
        doc = orjson.loads(line)
        spans = [s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
        assert len(spans) == SPANS_PER_TRACE
        (trace_id,) = {s["traceId"] for s in spans}
        ids.append(trace_id)
    return ids


def received_traces(receiver: Any) -> dict[str, int]:
    """Spans received per trace id."""
    counts: dict[str, int] = {}
    for span in receiver.spans():
        counts[span.trace_id.hex()] = counts.get(span.trace_id.hex(), 0) + 1
    return counts


def assert_failures(exc: ExportError, expected: dict[str, str]) -> None:
    assert [f.trace_id for f in exc.failures] == list(expected)
    for failure in exc.failures:
        assert expected[failure.trace_id] in failure.reason, failure


class SelectiveReceiver(OtlpReceiver):
    """An OTLP/HTTP receiver on 127.0.0.1 that refuses (HTTP ``status``) every request
    holding a span of ``refused`` traces, and the ``nth`` request (1-based) if given, and
    records the spans of the others."""

    def __init__(self, refused: set[str], status: int = 400, *, nth: int | None = None) -> None:
        super().__init__()
        self.refused = refused
        self.refused_status = status
        self.refusals = 0
        self.seen = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
                    ExportTraceServiceRequest,
                )

                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                ids = {
                    s.trace_id.hex()
                    for rs in request.resource_spans
                    for ss in rs.scope_spans
                    for s in ss.spans
                }
                receiver.seen += 1
                if ids & receiver.refused or receiver.seen == nth:
                    receiver.refusals += 1
                    reply, status = b"span too odd", receiver.refused_status
                else:
                    receiver.requests.append((self.path, {}, body))
                    reply, status = b"", 200
                self.send_response(status)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server.RequestHandlerClass = Handler


@pytest.fixture
def closed_port() -> Iterator[str]:
    """The URL of a port on 127.0.0.1 nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield f"http://127.0.0.1:{port}"


# --- Python API -----------------------------------------------------------------------------


def test_json_export_goes_on_past_a_missing_and_undecodable_traces(traces: Traces) -> None:
    store = TraceStore(traces.db)
    missing = "f" * 32
    asked = [traces.ids[0], missing, *traces.ids[1:]]
    with pytest.raises(ExportError) as info:
        export_json(store, asked)
    exc = info.value
    assert isinstance(exc, TracingError)  # what a failed export always raised
    assert_failures(exc, {missing: f"no trace {missing!r}", **traces.bad})
    assert (exc.total, exc.traces, exc.spans) == (6, 2, 2 * SPANS_PER_TRACE)
    assert exc.stopped is None and exc.not_sent == 0 and exc.not_exported == 4
    assert str(exc).startswith("4 of 6 traces not exported: ffff")
    # the good traces, both of them, in order, written to a file
    out = Path(traces.db).with_name("out.jsonl")
    out.write_text("old\n")
    with pytest.raises(ExportError):
        write_json_file(store, asked, out)
    assert line_trace_ids(out.read_text()) == traces.good
    assert not list(out.parent.glob("*.part"))


def test_a_file_export_of_only_bad_traces_leaves_the_old_file(traces: Traces) -> None:
    out = Path(traces.db).with_name("out.jsonl")
    out.write_text("old\n")
    with pytest.raises(ExportError) as info:
        write_json_file(TraceStore(traces.db), list(traces.bad), out)
    assert_failures(info.value, traces.bad)
    assert out.read_text() == "old\n" and not list(out.parent.glob("*.part"))


def test_replay_goes_on_past_bad_traces(traces: Traces) -> None:
    store = TraceStore(traces.db)
    with OtlpReceiver() as receiver, pytest.raises(ExportError) as info:
        send_otlp(store, trace_ids_for_export(store), receiver.url)
    assert received_traces(receiver) == dict.fromkeys(traces.good, SPANS_PER_TRACE)
    assert_failures(info.value, traces.bad)
    assert (info.value.traces, info.value.spans) == (2, 2 * SPANS_PER_TRACE)


@pytest.mark.parametrize("status", [400, 413, 500])
def test_a_refused_request_fails_its_traces_only(traces: Traces, status: int) -> None:
    store = TraceStore(traces.db)
    refused = traces.ids[0]
    with SelectiveReceiver({refused}, status) as receiver, pytest.raises(ExportError) as info:
        # one trace a request: the first is refused, the last still arrives
        send_otlp(store, traces.good, receiver.url, max_spans_per_request=SPANS_PER_TRACE)
    assert receiver.refusals == 1
    assert received_traces(receiver) == {traces.ids[4]: SPANS_PER_TRACE}
    (failure,) = info.value.failures
    assert failure.trace_id == refused
    assert (
        f"refused the spans: HTTP {status}" in failure.reason and "span too odd" in failure.reason
    )
    assert (info.value.traces, info.value.spans, info.value.stopped) == (1, 11, None)


def test_a_refused_request_fails_every_trace_in_it_and_a_split_trace_once(
    traces: Traces,
) -> None:
    store = TraceStore(traces.db)
    with SelectiveReceiver({traces.ids[0]}) as receiver, pytest.raises(ExportError) as info:
        # 4 spans a request: trace 0 would go in 3 requests; once the first is refused, the
        # rest of it is not sent (it would only add to a partial trace); trace 4 goes in 3
        send_otlp(store, traces.good, receiver.url, max_spans_per_request=4)
    assert receiver.refusals == 1
    assert received_traces(receiver) == {traces.ids[4]: SPANS_PER_TRACE}
    assert [f.trace_id for f in info.value.failures] == [traces.ids[0]]
    with SelectiveReceiver({traces.ids[0]}) as receiver, pytest.raises(ExportError) as info:
        send_otlp(store, traces.good, receiver.url)  # both traces in one request
    assert [f.trace_id for f in info.value.failures] == traces.good
    assert receiver.requests == [] and info.value.traces == 0


def test_a_trace_refused_after_a_part_was_accepted_is_not_counted_as_sent(
    traces: Traces,
) -> None:
    # 4 spans a request: trace 0's second request is refused (its first was accepted, its
    # third is not sent); the counts are those of the traces sent whole, as the progress.
    store = TraceStore(traces.db)
    progress: list[tuple[int, int]] = []
    with SelectiveReceiver(set(), nth=2) as receiver, pytest.raises(ExportError) as info:
        send_otlp(
            store,
            traces.good,
            receiver.url,
            max_spans_per_request=4,
            progress=lambda done, n: progress.append((done, n)),
        )
    assert (receiver.seen, receiver.refusals) == (5, 1)  # 1 + 1 refused + 3 of trace 4
    exc = info.value
    assert [f.trace_id for f in exc.failures] == [traces.ids[0]]
    assert (exc.traces, exc.spans) == (1, SPANS_PER_TRACE)
    assert progress == [(1, 0), (2, SPANS_PER_TRACE)]


@pytest.mark.parametrize("status", [401, 403, 404, 503])
def test_a_receiver_that_refuses_every_request_stops_the_export_at_once(
    traces: Traces, status: int
) -> None:
    store = TraceStore(traces.db)
    with OtlpReceiver(status=status) as receiver, pytest.raises(ExportError) as info:
        send_otlp(store, traces.good, receiver.url, max_spans_per_request=SPANS_PER_TRACE)
    assert len(receiver.requests) == 1  # not one more
    exc = info.value
    assert exc.stopped is not None and f"refused the spans: HTTP {status}" in exc.stopped
    assert (exc.failures, exc.not_sent, exc.traces, exc.spans) == ([], 2, 0, 0)


def test_an_unreachable_receiver_stops_the_export_at_once(traces: Traces, closed_port: str) -> None:
    store = TraceStore(traces.db)
    started = time.monotonic()
    with pytest.raises(ExportError) as info:
        send_otlp(store, trace_ids_for_export(store), closed_port, max_spans_per_request=11)
    assert time.monotonic() - started < 10
    exc = info.value
    assert exc.stopped is not None and exc.stopped.startswith(f"cannot reach {closed_port}")
    # the bad traces, read before the second request was due, failed on their own; the
    # request of the first trace found the receiver down, so it and the last were not sent
    assert_failures(exc, traces.bad)
    assert (exc.not_sent, exc.traces, exc.spans) == (2, 0, 0)
    assert str(exc).startswith("5 of 5 traces not exported: ")
    assert str(exc).endswith(f"stopped, 2 not exported: {exc.stopped}")


# --- flock traces export --------------------------------------------------------------------


def test_cli_export_to_a_file_writes_the_good_traces_and_names_each_bad_one(
    traces: Traces, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    assert main(["traces", "export", "--all", "--db", traces.db, "-o", str(out)]) == 1
    assert line_trace_ids(out.read_text()) == traces.good
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"Exported 2 trace(s), 22 spans as OTLP/JSON to {out}"
    assert err[1] == f"error: 3 of 5 traces could not be exported to {out}:"
    assert len(err) == 5, err
    for line, (trace_id, reason) in zip(err[2:], traces.bad.items(), strict=True):
        assert line.startswith(f"  {trace_id}: cannot export {traces.db!r}: span "), line
        assert reason in line, line
    assert "Traceback" not in "\n".join(err)


def test_cli_export_to_stdout_writes_the_good_traces_and_names_each_bad_one(
    traces: Traces, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["traces", "export", "--all", "--db", traces.db]) == 1
    captured = capsys.readouterr()
    assert line_trace_ids(captured.out) == traces.good
    assert "Exported 2 trace(s), 22 spans as OTLP/JSON to stdout" in captured.err
    assert "error: 3 of 5 traces could not be exported to stdout:" in captured.err
    assert all(f"  {t}: " in captured.err for t in traces.bad), captured.err


def test_cli_export_of_only_bad_traces_says_so_and_leaves_the_old_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "bad.duckdb"
    write_spans(db, seed_trace(start_ns=START) + seed_trace(start_ns=START + 10**9))
    with duckdb.connect(str(db)) as conn:
        conn.execute("UPDATE spans SET span_id = 'not-hex-id' WHERE name = 'Flock.shutdown'")
    out = tmp_path / "out.jsonl"
    out.write_text("old\n")
    assert main(["traces", "export", "--all", "--db", str(db), "-o", str(out)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: 2 of 2 traces could not be exported to {out}:", err
    assert len(err) == 3 and all(BAD_SPAN_ID in line for line in err[1:]), err
    assert out.read_text() == "old\n"


def test_cli_replay_sends_the_good_traces_and_names_each_bad_one(
    traces: Traces, capsys: pytest.CaptureFixture[str]
) -> None:
    with OtlpReceiver() as receiver:
        args = ["traces", "export", "--all", "--db", traces.db, "--otlp-endpoint", receiver.url]
        assert main(args) == 1
    assert received_traces(receiver) == dict.fromkeys(traces.good, SPANS_PER_TRACE)
    err = capsys.readouterr().err.splitlines()
    url = f"{receiver.url}/v1/traces"
    assert err[0] == f"Sent 2 trace(s), 22 spans to {url}"
    assert err[1] == f"error: 3 of 5 traces could not be sent to {url}:"
    assert [line.split(":")[0].strip() for line in err[2:]] == list(traces.bad)


def test_cli_replay_names_the_traces_of_a_refused_request(
    traces: Traces, capsys: pytest.CaptureFixture[str]
) -> None:
    with SelectiveReceiver({traces.ids[0]}) as receiver:
        args = ["traces", "export", "--all", "--db", traces.db, "--otlp-endpoint", receiver.url]
        assert main(args) == 1
    # the refused request held the first trace and the last (the bad ones were never read)
    assert receiver.refusals == 1 and received_traces(receiver) == {}
    err = capsys.readouterr().err
    assert "Sent" not in err
    assert "error: 5 of 5 traces could not be sent to" in err
    assert err.count("refused the spans: HTTP 400 Bad Request — span too odd") == 2, err


def test_cli_replay_to_a_receiver_that_is_down_stops_with_one_error(
    tmp_path: Path, closed_port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "good.duckdb")
    write_spans(db, [s for i in range(3) for s in seed_trace(start_ns=START + i * 10**9)])
    args = ["traces", "export", "--all", "--db", db, "--otlp-endpoint", closed_port]
    assert main([*args, "--otlp-protocol", "http/json"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    url = f"{closed_port}/v1/traces"
    assert err[0].startswith(f"error: cannot reach {url}: "), err
    assert err[0].endswith(f"— stopped, 3 of 3 traces not sent to {url}"), err


def test_cli_replay_reports_bad_traces_and_the_stop(
    traces: Traces, closed_port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["traces", "export", "--all", "--db", traces.db, "--otlp-endpoint", closed_port]
    assert main(args) == 1
    err = capsys.readouterr().err.splitlines()
    url = f"{closed_port}/v1/traces"
    assert err[0] == f"error: 3 of 5 traces could not be sent to {url}:", err
    assert [line.split(":")[0].strip() for line in err[1:4]] == list(traces.bad)
    assert err[4].startswith(f"error: cannot reach {url}: "), err
    assert err[4].endswith(f"— stopped, 2 of 5 traces not sent to {url}"), err
    assert len(err) == 5, err
