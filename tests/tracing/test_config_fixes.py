"""Tracing configuration that used to be ignored or accepted silently: a late
``configure(redact=...)``, bad ``FLOCK_TRACE_FLUSH_INTERVAL`` values, ``clear_traces()``'s
default file, ``OTEL_EXPORTER_OTLP_PROTOCOL=http/json``, and a trace file whose ``spans``
table is not flock's."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from opentelemetry.sdk.trace import TracerProvider

from flock import Flock
from flock.exceptions import ConfigurationError
from flock.tracing import TracingSettings, configure
from flock.tracing.processor import DuckDBSpanProcessor
from flock.tracing.store import SCHEMA
from tests.faults.helpers import child_env, query, run_child

DB = Path(".flock") / "traces.duckdb"


def redact(key: str, value: Any) -> Any:
    return "***" if "secret" in key else value


def run_script(cwd: Path, source: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``source`` in a fresh interpreter (the global tracer provider is per process)."""
    script = cwd / "script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


APP = """
import asyncio, json, os, sys
from pydantic import BaseModel
from flock import Flock, flock_type
from flock.tracing import configure

@flock_type
class Note(BaseModel):
    text: str

flock = Flock()

async def workflow(name, **attributes):
    async with flock.traced_run(name) as span:
        for key, value in attributes.items():
            span.set_attribute(key, value)
        await flock.publish(Note(text="x"))
"""


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    provider = TracerProvider()
    yield provider
    provider.shutdown()


def file_of(settings: TracingSettings | None) -> DuckDBSpanProcessor:
    assert settings is not None and settings.file is not None
    return settings.file


def stored_attributes(db: Path, name: str) -> dict[str, Any]:
    (row,) = query(db, "SELECT attributes FROM spans WHERE name = ?", [name])
    return dict(json.loads(row[0]))


# (a) redact / max_attribute_chars given after the set-up ------------------------------------


def test_redact_and_cap_given_after_setup_apply_to_the_trace_file(
    tmp_path: Path, provider: TracerProvider
) -> None:
    db = tmp_path / "t.duckdb"
    settings = configure(provider, trace_file=True, db_path=str(db))
    file = file_of(settings)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("before") as span:
        span.set_attribute("api.secret", "visible")
    assert file.force_flush()

    again = configure(provider, redact=redact, max_attribute_chars=10)
    assert again is settings
    assert settings is not None and settings.redact is redact
    assert settings.max_attribute_chars == 10
    assert (file.redact, file.max_attribute_chars) == (redact, 10)
    with tracer.start_as_current_span("after") as span:
        span.set_attribute("api.secret", "hunter2")
        span.set_attribute("long", "y" * 50)
    assert file.force_flush()

    assert stored_attributes(db, "before") == {"api": {"secret": "visible"}}
    after = stored_attributes(db, "after")
    assert after["api"] == {"secret": "***"}
    assert after["long"].startswith("y" * 10 + "…[truncated 40 chars]")
    assert "hunter2" not in db.read_bytes().decode("latin-1")


def test_redact_given_before_the_file_is_set_up_is_used_by_it(
    tmp_path: Path, provider: TracerProvider
) -> None:
    settings = configure(provider, redact=redact, max_attribute_chars=20)  # no file yet
    assert settings is not None and settings.file is None and settings.redact is redact
    file = file_of(configure(provider, trace_file=True, db_path=str(tmp_path / "t.duckdb")))
    assert (file.redact, file.max_attribute_chars) == (redact, 20)


def test_configure_redact_after_a_first_traced_run_of_the_global_provider(
    tmp_path: Path,
) -> None:
    """The reviewer's script: the Flock set up the global provider, then the user turns
    redaction on as the README documents; the secret must not reach the file."""
    result = run_script(
        tmp_path,
        APP
        + """
def redact(key, value):
    return "***" if "secret" in key else value

async def main():
    await workflow("warmup")
    settings = configure(redact=redact)
    print("settings", settings.redact is redact, settings.file.redact is redact)
    await workflow("wf", **{"api.secret": "hunter2"})

asyncio.run(main())
""",
    )
    assert result.returncode == 0, result.stderr
    assert "settings True True" in result.stdout
    assert stored_attributes(tmp_path / DB, "wf")["api"] == {"secret": "***"}


def test_the_trace_file_cannot_change_after_setup(tmp_path: Path, provider: TracerProvider) -> None:
    db = tmp_path / "t.duckdb"
    file = file_of(configure(provider, trace_file=True, db_path=str(db)))
    with pytest.raises(ConfigurationError, match=r"already writes to .*t\.duckdb.*db_path="):
        configure(provider, trace_file=True, db_path=str(tmp_path / "other.duckdb"))
    with pytest.raises(ConfigurationError, match=r"trace_file=False cannot turn it off"):
        configure(provider, trace_file=False)
    assert not (tmp_path / "other.duckdb").exists()
    # The same file again, or nothing about the file, is fine.
    assert file_of(configure(provider, trace_file=True, db_path=str(db))) is file
    assert file_of(configure(provider)) is file


@pytest.mark.parametrize(
    "kwargs",
    [
        {"redact": "not callable"},
        {"max_attribute_chars": 0},
        {"max_attribute_chars": -5},
        {"max_attribute_chars": 1.5},
        {"max_attribute_chars": True},
    ],
)
def test_configure_rejects_a_bad_redact_or_cap(
    provider: TracerProvider, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(kwargs))):
        configure(provider, **kwargs)


# (b) FLOCK_TRACE_FLUSH_INTERVAL ------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "1e10", "3601", "0", "0.001", "-1", "nan", "soon"])
def test_an_invalid_flush_interval_warns_and_uses_the_default(
    tmp_path: Path, provider: TracerProvider, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("FLOCK_TRACE_FLUSH_INTERVAL", value)
    with pytest.warns(RuntimeWarning) as caught:
        settings = configure(provider, trace_file=True, db_path=str(tmp_path / "t.duckdb"))
    file = file_of(settings)
    (warning,) = caught
    message = str(warning.message)
    assert f"FLOCK_TRACE_FLUSH_INTERVAL={value!r}" in message
    assert "using the default 1.0" in message
    assert file.flush_interval == 1.0
    assert file._thread.is_alive()


@pytest.mark.parametrize(("value", "seconds"), [("0.01", 0.01), (" 0.2 ", 0.2), ("3600", 3600.0)])
def test_a_valid_flush_interval_is_used_silently(
    tmp_path: Path,
    provider: TracerProvider,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    seconds: float,
) -> None:
    monkeypatch.setenv("FLOCK_TRACE_FLUSH_INTERVAL", value)
    file = file_of(configure(provider, trace_file=True, db_path=str(tmp_path / "t.duckdb")))
    assert file.flush_interval == seconds  # and no warning (warnings are errors here)


def test_an_infinite_flush_interval_loses_no_span(tmp_path: Path) -> None:
    """``inf`` used to kill the writer thread (OverflowError in Event.wait): every span after
    the first traced_run was lost."""
    result = run_script(
        tmp_path,
        APP
        + """
async def main():
    for name in ("first", "second", "third"):
        await workflow(name)
        await asyncio.sleep(0.1)

asyncio.run(main())
""",
        FLOCK_TRACE_FLUSH_INTERVAL="inf",
    )
    assert result.returncode == 0, result.stderr
    assert "RuntimeWarning: FLOCK_TRACE_FLUSH_INTERVAL='inf'" in result.stderr
    assert "OverflowError" not in result.stderr
    assert "could not be written" not in result.stderr
    names = [r[0] for r in query(tmp_path / DB, "SELECT name FROM spans WHERE parent_id IS NULL")]
    assert sorted(names) == ["first", "second", "third"]


# (c) clear_traces() without a path ------------------------------------------------------------


CLEAR = """
async def main():
    await workflow("one")
    print("class", json.dumps(Flock.clear_traces()))
    await workflow("two")
    print("instance", json.dumps(flock.clear_traces()))

asyncio.run(main())
"""


def test_clear_traces_defaults_to_flock_trace_db(tmp_path: Path) -> None:
    result = run_script(tmp_path, APP + CLEAR, FLOCK_TRACE_DB=str(tmp_path / "mine.duckdb"))
    assert result.returncode == 0, result.stderr
    outcome = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    for how in ("class", "instance"):
        assert json.loads(outcome[how]) == {"success": True, "deleted_count": 2, "error": None}
    assert not (tmp_path / DB).exists()
    assert query(tmp_path / "mine.duckdb", "SELECT count(*) FROM spans") == [(0,)]


def test_clear_traces_defaults_to_the_file_configure_set_up(tmp_path: Path) -> None:
    result = run_script(
        tmp_path, APP + "configure(db_path='custom/t.duckdb')\n" + CLEAR, FLOCK_TRACE_DB=""
    )
    assert result.returncode == 0, result.stderr
    assert '"deleted_count": 2' in result.stdout and '"success": false' not in result.stdout
    assert query(tmp_path / "custom" / "t.duckdb", "SELECT count(*) FROM spans") == [(0,)]


def test_clear_traces_keeps_the_seeds_signature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOCK_TRACE_DB", str(tmp_path / "elsewhere.duckdb"))
    # As in a process whose tracing is not set up yet (another test may have set up the
    # global provider of this one, whose file the default would then be).
    monkeypatch.setattr("flock.tracing.setup._configured", {})
    DuckDBSpanProcessor(tmp_path / DB).shutdown()  # an empty file at the seed's default
    empty = {"success": True, "deleted_count": 0, "error": None}
    assert Flock.clear_traces(".flock/traces.duckdb") == empty
    assert Flock.clear_traces(db_path=".flock/traces.duckdb") == empty
    assert Flock().clear_traces(db_path=str(tmp_path / DB)) == empty
    missing = Flock.clear_traces()  # FLOCK_TRACE_DB, which does not exist
    assert missing["success"] is False and "elsewhere.duckdb" in missing["error"]


def test_trace_file_path_of_a_provider(tmp_path: Path, provider: TracerProvider) -> None:
    from flock.tracing.setup import trace_file_path

    db = tmp_path / "t.duckdb"
    configure(provider, trace_file=True, db_path=str(db))
    assert trace_file_path(provider) == str(db.resolve())
    assert trace_file_path(TracerProvider()) == ".flock/traces.duckdb"  # not set up


# (d) OTEL_EXPORTER_OTLP_PROTOCOL -------------------------------------------------------------


@pytest.mark.parametrize(
    "variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"]
)
def test_otlp_http_json_warns_and_exports_protobuf(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from flock.tracing.setup import _otlp_exporter

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv(variable, "http/json")
    with pytest.warns(RuntimeWarning) as caught:
        exporter = _otlp_exporter()
    (warning,) = caught
    assert f"{variable}='http/json' is not supported" in str(warning.message)
    assert "'http/protobuf'" in str(warning.message)
    assert isinstance(exporter, OTLPSpanExporter)
    exporter.shutdown()


def test_otlp_http_json_end_to_end_sends_protobuf_with_a_warning(tmp_path: Path) -> None:
    result = run_script(
        tmp_path,
        """
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
seen = []
class Collector(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        seen.append(self.headers["content-type"])
        self.send_response(200)
        self.send_header("content-type", self.headers["content-type"])
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = HTTPServer(("127.0.0.1", 0), Collector)
threading.Thread(target=server.serve_forever, daemon=True).start()
import os
os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{server.server_port}"
"""
        + APP
        + """
from opentelemetry import trace
asyncio.run(workflow("wf"))
trace.get_tracer_provider().force_flush()
print("content types", sorted(set(seen)))
""",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/json",
        FLOCK_TRACE_FILE="false",
    )
    assert result.returncode == 0, result.stderr
    assert "content types ['application/x-protobuf']" in result.stdout
    assert "RuntimeWarning: OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported" in (
        result.stderr
    )


@pytest.mark.parametrize(
    ("value", "exports", "warns"),
    [
        ("none", False, False),
        ("otlp", True, False),
        ("console", False, True),
        ("otlp,zipkin", True, True),
    ],
)
def test_otel_traces_exporter_chooses_whether_spans_go_over_otlp(
    monkeypatch: pytest.MonkeyPatch, value: str, exports: bool, warns: bool
) -> None:
    import warnings

    from flock.tracing.setup import _otlp_exporter

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exporter = _otlp_exporter()
    assert (exporter is not None) == exports
    if exporter is not None:
        exporter.shutdown()
    messages = [str(w.message) for w in caught]
    assert bool(messages) == warns, messages
    if warns:
        assert f"OTEL_TRACES_EXPORTER={value!r}" in messages[0] and "ignoring" in messages[0]
        assert ("OTLP export is off" in messages[0]) is not exports


def test_an_unknown_otlp_protocol_still_turns_otlp_export_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flock.tracing.setup import _otlp_exporter

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift")
    with pytest.warns(Warning, match=r"OTEL_EXPORTER_OTLP_PROTOCOL='thrift' is not supported"):
        assert _otlp_exporter() is None


# (e) a trace file whose spans table is not flock's --------------------------------------------


def other_columns(conn: duckdb.DuckDBPyConnection) -> str:
    conn.execute("CREATE TABLE spans (a INTEGER, b VARCHAR)")
    conn.execute("INSERT INTO spans VALUES (1, 'mine')")
    return "not flock's (its columns: a INTEGER, b VARCHAR)"


def flock_names_other_types(conn: duckdb.DuckDBPyConnection) -> str:
    from flock.tracing.store import COLUMNS

    conn.execute(
        "CREATE TABLE spans ("
        + ", ".join(f"{n} {'INTEGER' if n == 'start_time' else t}" for n, t in COLUMNS)
        + ")"
    )
    return "start_time INTEGER"


def a_view(conn: duckdb.DuckDBPyConnection) -> str:
    conn.execute("CREATE VIEW spans AS SELECT 1 AS a")
    return "its 'spans' is a view"


@pytest.mark.parametrize("make", [other_columns, flock_names_other_types, a_view])
def test_a_spans_table_that_is_not_flocks_warns_once_at_start_and_is_left_alone(
    tmp_path: Path, make: Callable[[duckdb.DuckDBPyConnection], str]
) -> None:
    target = tmp_path / DB
    target.parent.mkdir()
    conn = duckdb.connect(str(target))
    reason = make(conn)
    conn.close()
    before = target.read_bytes()
    child, code, stderr = run_child(tmp_path, "normal")
    assert code == 0, stderr
    assert child.seen[-1] == "done"
    assert len(child.ended()) == 12  # tracing itself goes on
    warning = [line for line in stderr.splitlines() if "trace file" in line]
    assert len(warning) == 1, stderr
    assert "RuntimeWarning: flock tracing without a trace file" in warning[0]
    assert repr(str(target)) in warning[0]
    assert "Move or delete the file" in warning[0] and "FLOCK_TRACE_DB" in warning[0]
    assert reason in warning[0]
    assert "could not be written" not in stderr and "BinderException" not in stderr
    assert target.read_bytes() == before


def test_a_spans_table_that_is_not_flocks_in_process(
    tmp_path: Path, provider: TracerProvider
) -> None:
    db = tmp_path / "t.duckdb"
    conn = duckdb.connect(str(db))
    other_columns(conn)
    conn.close()
    with pytest.warns(RuntimeWarning, match=r"without a trace file: .*t\.duckdb.*not flock's"):
        settings = configure(provider, trace_file=True, db_path=str(db))
    assert settings is not None and settings.file is None and settings.file_unusable


def test_a_trace_file_with_macros_is_written_to_and_they_change_nothing(
    tmp_path: Path, provider: TracerProvider
) -> None:
    db = tmp_path / "t.duckdb"
    with duckdb.connect(str(db)) as conn:
        conn.execute(SCHEMA)
        # The user's own helper, and one named like a function the appends call: the file
        # is attached to the writer's own database, so neither is in their search path.
        conn.execute("CREATE MACRO printf(a, b) AS 'not a span id'")
    file = file_of(configure(provider, trace_file=True, db_path=str(db)))
    with provider.get_tracer("test").start_as_current_span("s") as span:
        span_id = f"{span.get_span_context().span_id:016x}"
    assert file.force_flush()
    assert query(db, "SELECT name, span_id FROM spans") == [("s", span_id)]


def test_a_duckdb_file_without_a_spans_table_is_still_used(
    tmp_path: Path, provider: TracerProvider
) -> None:
    db = tmp_path / "t.duckdb"
    duckdb.connect(str(db)).close()  # an empty database: flock creates its table in it
    file = file_of(configure(provider, trace_file=True, db_path=str(db)))
    with provider.get_tracer("test").start_as_current_span("s"):
        pass
    assert file.force_flush()
    assert query(db, "SELECT name FROM spans") == [("s",)]


async def test_serve_shows_the_file_this_flock_traces_to(
    tmp_path: Path, provider: TracerProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "mine.duckdb"
    configure(provider, trace_file=True, db_path=str(db))
    flock = Flock(tracer_provider=provider)
    served: dict[str, Any] = {}

    async def fake_serve(db_path: str, **kwargs: Any) -> None:
        served["db"] = db_path

    monkeypatch.setattr("flock.dashboard.server.serve", fake_serve)
    await flock.serve()
    assert Path(served["db"]) == db.resolve()  # not FLOCK_TRACE_DB's default


def test_service_name_from_otel_resource_attributes_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flock.tracing.setup import _new_provider

    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv(
        "OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod, service.name=billing"
    )
    provider = _new_provider()
    try:
        assert provider.resource.attributes["service.name"] == "billing"
    finally:
        provider.shutdown()
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES")
    provider = _new_provider()
    try:
        assert provider.resource.attributes["service.name"] == "flock"  # flock's default
    finally:
        provider.shutdown()


def test_the_export_failure_warning_says_whether_a_trace_file_keeps_the_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import weakref

    from flock.tracing._otlp import _where_else

    monkeypatch.setattr("flock.tracing.processor._WRITERS", weakref.WeakSet())
    assert "No trace file is written" in _where_else() and "so they are lost" in _where_else()
    writer = DuckDBSpanProcessor(tmp_path / "kept.duckdb", flush_interval=60)
    try:
        assert _where_else() == (f"The spans are still written to the trace file {writer.path}")
    finally:
        writer.shutdown()
    # A writer that has shut down wrote the spans: the exporter gives up on a batch only
    # after its retries, often after a short program's writer has written and closed.
    assert _where_else() == (f"The spans are still written to the trace file {writer.path}")


@pytest.mark.parametrize(
    ("value", "default", "expected", "warns"),
    [
        ("ture", True, True, True),  # a typo keeps the default (it used to turn tracing off)
        ("maybe", False, False, True),
        (" Off ", True, False, False),
        ("YES", False, True, False),
        ("0", True, False, False),
        ("", True, True, False),
    ],
)
def test_on_off_variables_warn_on_a_value_that_is_neither(
    monkeypatch: pytest.MonkeyPatch, value: str, default: bool, expected: bool, warns: bool
) -> None:
    import warnings

    from flock.tracing import setup

    monkeypatch.setattr(setup, "_WARNED_FLAGS", set())
    monkeypatch.setenv("FLOCK_TRACE_FILE", value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert setup.env_flag("FLOCK_TRACE_FILE", default) is expected
        assert setup.env_flag("FLOCK_TRACE_FILE", default) is expected  # warned once
    messages = [str(w.message) for w in caught]
    assert len(messages) == (1 if warns else 0), messages
    if warns:
        assert f"FLOCK_TRACE_FILE={value!r} is neither on" in messages[0]
        assert f"using the default, {str(default).lower()}" in messages[0]
