"""The CLI's failures: usage errors, missing/corrupt/locked files, tracing off, an unreachable
store, an OTLP refusal — each a short message and an exit code, never a traceback."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

import flock.cli
from flock.cli import main
from tests.tracing.stored import OtlpReceiver, hex_ids, seed_trace, write_spans

ROOT = Path(__file__).resolve().parent.parent


def flock_cli(
    *args: str, cwd: Path, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    """``flock ARGS`` in a fresh process: this test's environment (FLOCK_*/OTEL_* cleaned by
    conftest) without OPENAI_* (the demo stays offline), tracing on as by default, ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    environ.update(FLOCK_OUTPUT="off", FLOCK_AUTO_TRACE="true")
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "flock.cli", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text and "╭" not in text, text


# --- 1. usage errors: click's usage message and exit code 2 --------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["traces", "list", "--limit", "0"], "Invalid value for '--limit'"),
        (["traces", "list", "--limit", "abc"], "Invalid value for '--limit'"),
        (["traces", "list", "--limit"], "Option '--limit' requires an argument"),
        (["traces", "list", "--bogus"], "No such option: --bogus"),
        (["--bogus"], "No such option: --bogus"),
        (["traces", "bogus"], "No such command 'bogus'"),
        (["serve"], "Missing argument 'target'"),
        (["worker"], "Missing argument 'target'"),
        (["traces", "show", "--depth", "-1"], "Invalid value for '--depth'"),
        (["traces", "stats", "--limit", "0"], "Invalid value for '--limit'"),
        (["dashboard", "--port", "70000"], "Invalid value for '--port'"),
        (["traces", "list", "--since", "bogus"], "Invalid value for '--since'"),
        (["traces", "stats", "--since", "bogus"], "Invalid value for '--since'"),
        (["traces", "stats", "--by", "wrong"], "Invalid value for '--by'"),
        (["traces", "export", "--all", "--since", "bogus"], "Invalid value for '--since'"),
        (
            ["traces", "export", "--all", "--otlp-protocol", "grpc"],
            "Invalid value for '--otlp-protocol'",
        ),
    ],
)
def test_usage_errors_print_usage_and_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    (line,) = [x for x in err.splitlines() if x.startswith("Error:")]
    assert message in line, err
    if args != ["traces", "list", "--limit"]:  # that one has no command context to show
        assert err.startswith("Usage: flock ") and "--help' for help." in err, err
    assert_no_traceback(err)


@pytest.mark.parametrize("args", [[], ["traces"]])
def test_no_command_prints_the_help(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2  # click's no_args_is_help
    captured = capsys.readouterr()
    assert "Usage: flock" in captured.out and "Commands" in captured.out
    assert captured.err == ""


def test_a_usage_error_in_a_real_process(tmp_path: Path) -> None:
    done = flock_cli("traces", "list", "--limit", "0", cwd=tmp_path)
    assert done.returncode == 2
    assert "Usage: flock traces list [OPTIONS]" in done.stderr
    assert "Error: Invalid value for '--limit'" in done.stderr
    assert_no_traceback(done.stderr)


def test_an_error_message_is_not_read_as_rich_markup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "t.duckdb")
    write_spans(db, seed_trace(start_ns=1_700_000_000 * 10**9))
    assert main(["traces", "show", "[/red][bold]x", "--db", db]) == 1
    assert "no trace '[/red][bold]x'" in capsys.readouterr().err


# --- 2. clear: only DuckDB's lock error is "held by another process" -----------------------


def test_clear_a_missing_file_says_not_found_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "flock" / "blocks.duckdb")  # "lock" in the path
    start = time.monotonic()
    assert main(["traces", "clear", "--yes", "--db", db]) == 1
    assert time.monotonic() - start < 2.0
    err = capsys.readouterr().err
    assert "not found" in err and "held by another process" not in err


def test_clear_a_corrupt_file_says_so_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "flock" / "traces.duckdb"
    path.parent.mkdir()
    write_spans(str(path), seed_trace(start_ns=1_700_000_000 * 10**9))
    data = bytearray(path.read_bytes())
    for offset in range(12288 + 64, 12288 + 128):  # a block's payload: its checksum fails
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    start = time.monotonic()
    assert main(["traces", "clear", "--yes", "--db", str(path)]) == 1
    assert time.monotonic() - start < 2.0
    err = capsys.readouterr().err
    assert "checksum" in err and "block" in err, err
    assert "held by another process" not in err


# --- 4. and 5. demo: --db wins, and it draws its own run's trace or says there is none ------


def test_demo_db_option_wins_over_flock_trace_db(tmp_path: Path) -> None:
    done = flock_cli("demo", "--db", "a.duckdb", cwd=tmp_path, FLOCK_TRACE_DB="b.duckdb")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a.duckdb").is_file() and not (tmp_path / "b.duckdb").exists()
    assert "pizza_workflow" in done.stdout and "stored in a.duckdb" in done.stdout
    done = flock_cli("demo", cwd=tmp_path, FLOCK_TRACE_DB="b.duckdb")  # no --db: the variable
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "b.duckdb").is_file() and "stored in b.duckdb" in done.stdout


def test_demo_draws_the_trace_of_its_own_run(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    future = seed_trace(start_ns=time.time_ns() + 86_400 * 10**9)  # "latest" by start time
    write_spans(str(db), future)
    done = flock_cli("demo", "--db", str(db), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with duckdb.connect(str(db), read_only=True) as conn:
        ids = {r[0] for r in conn.execute("SELECT DISTINCT trace_id FROM spans").fetchall()}
    (this_run,) = ids - {hex_ids(future[0])[0]}
    assert "pizza_workflow (" in done.stdout
    assert "5319ms" not in done.stdout  # not the seeded trace (the newest by start time)
    assert f"Trace {this_run} stored in" in done.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [("FLOCK_AUTO_TRACE", "false"), ("OTEL_SDK_DISABLED", "true"), ("FLOCK_TRACE_FILE", "false")],
)
def test_demo_with_tracing_off_says_no_trace_was_recorded(
    variable: str, value: str, tmp_path: Path
) -> None:
    db = tmp_path / "t.duckdb"
    write_spans(str(db), seed_trace(start_ns=1_700_000_000 * 10**9))  # a previous run
    done = flock_cli("demo", "--db", str(db), cwd=tmp_path, **{variable: value})
    assert done.returncode == 0, done.stderr  # the workflow ran; tracing was turned off
    assert "The Spicy Pineapple Chili Honey Pizza" in done.stdout
    assert "ROOT" not in done.stdout and "stored in" not in done.stdout
    assert "No trace was recorded" in done.stderr and f"{variable}={value}" in done.stderr


def test_demo_with_an_unusable_trace_file_fails(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    db.write_bytes(b"not a duckdb file" * 1000)
    done = flock_cli("demo", "--db", str(db), cwd=tmp_path)
    assert done.returncode == 1
    assert "error: no trace was recorded: the trace file could not be used" in done.stderr
    assert_no_traceback(done.stderr)


# --- 6. worker: a bad FLOCK_STORE_URL or an unreachable store is one line, exit 1 ----------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


WORKER_APP = """
from pydantic import BaseModel
from flock.orchestrator import Flock
from flock.registry import flock_type

@flock_type
class Job(BaseModel):
    n: int

{store}
flock.agent("echo").consumes(Job).publishes(Job).with_engines(lambda j: None)
"""


def test_worker_with_an_unsupported_store_url(tmp_path: Path) -> None:
    (tmp_path / "envapp.py").write_text(WORKER_APP.format(store='flock = Flock("openai/gpt-4o")'))
    done = flock_cli("worker", "envapp:flock", "--store-url", "notadsn", cwd=tmp_path)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: ") and "FLOCK_STORE_URL='notadsn' is not supported" in line


def test_worker_with_an_unreachable_store(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/x"  # nothing listens there
    store = (
        "from flock.store.postgres import PostgresStore\n"
        f'flock = Flock("openai/gpt-4o", store=PostgresStore("{dsn}", reconnect_timeout=0.5))'
    )
    (tmp_path / "pgapp.py").write_text(WORKER_APP.format(store=store))
    done = flock_cli("worker", "pgapp:flock", cwd=tmp_path)
    assert done.returncode == 1
    assert_no_traceback(done.stderr)
    last = done.stderr.splitlines()[-1]
    assert last.startswith("error: cannot use the store") and "Connection refused" in last


def test_store_unreachable_is_only_the_database_failing() -> None:
    psycopg = pytest.importorskip("psycopg")
    failure = psycopg.OperationalError("connection refused")
    assert flock.cli._store_unreachable(failure)
    assert flock.cli._store_unreachable(ExceptionGroup("x", [failure]))
    assert not flock.cli._store_unreachable(RuntimeError("a bug"))  # keeps its traceback
    assert not flock.cli._store_unreachable(ExceptionGroup("x", [failure, KeyError("k")]))


# --- 7. an OTLP refusal shows the receiver's status message, not protobuf bytes ------------


def refusing_receiver(message: str, *, protobuf: bool = True) -> OtlpReceiver:
    """An OTLP/HTTP receiver on 127.0.0.1 answering 403 with a google.rpc.Status body."""
    from google.rpc.status_pb2 import Status  # comes with the OTLP exporters

    if protobuf:
        body = bytes(Status(code=7, message=message).SerializeToString())
        return OtlpReceiver(403, reply=body, content_type="application/x-protobuf")
    body = json.dumps({"code": 7, "message": message}).encode()
    return OtlpReceiver(403, reply=body, content_type="application/json")


@pytest.fixture
def one_trace(tmp_path: Path) -> Iterator[str]:
    db = str(tmp_path / "t.duckdb")
    write_spans(db, seed_trace(start_ns=1_700_000_000 * 10**9))
    yield db


@pytest.mark.parametrize("length", [10, 60, 200])  # length varint < 32, printable, 2 bytes
@pytest.mark.parametrize("protobuf", [True, False])
def test_an_otlp_refusal_shows_the_status_message(
    length: int, protobuf: bool, one_trace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    message = ("this dashboard is read-only " * 10)[: length - 1] + "!"
    with refusing_receiver(message, protobuf=protobuf) as receiver:
        args = ["traces", "export", "latest", "--otlp-endpoint", receiver.url, "--db", one_trace]
        protocol = [] if protobuf else ["--otlp-protocol", "http/json"]
        assert main([*args, *protocol]) == 1
    err = capsys.readouterr().err
    assert err.rstrip("\n").endswith(f"refused the spans: HTTP 403 Forbidden — {message}"), err
    assert not re.search(r"[\x00-\x08\x0b-\x1f\ufffd]", err), repr(err)


# --- 8. docs: the demo's help, --db, and the example that needs a key ----------------------


def test_demo_help_says_what_the_demo_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "plain-Python" not in out
    assert "local stand-in OpenAI-compatible model" in out and "OPENAI_API_KEY" in out


@pytest.mark.parametrize(
    ("command", "has_db"),
    [
        (["demo"], True),
        (["traces", "list"], True),
        (["traces", "show"], True),
        (["traces", "stats"], True),
        (["traces", "export"], True),
        (["traces", "clear"], True),
        (["serve"], True),
        (["dashboard"], True),
        (["worker"], False),
    ],
)
def test_the_readme_says_which_commands_take_db(
    command: list[str], has_db: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--help"]) == 0
    assert ("--db" in capsys.readouterr().out) is has_db
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Command line") :]
    section = section[: section.index("\n### ")]
    assert "Every command takes `--db" not in section
    if not has_db:
        assert f"`flock {command[0]}` has no `--db`" in section
    elif command[0] == "traces":
        assert "the `flock traces` commands" in section
    else:
        assert f"`flock {command[0]}`" in section


def test_basic_usage_example_without_a_key_exits_with_one_line(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE")
    }
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "01_basic_usage.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert "OPENAI_API_KEY" in line and "OPENAI_BASE_URL" in line
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    examples = readme[readme.index("### Examples") : readme.index("## Tracing")]
    assert "`01_basic_usage.py`" in examples and "OPENAI_API_KEY" in examples
