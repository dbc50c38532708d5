"""Review fixes of the CLI: ``traces show`` of corrupt or very deep traces, ``traces export``
arguments that used to end in a traceback, exports to a FIFO or through a symlink, and
``serve``/``worker`` targets that cannot be imported."""

from __future__ import annotations

import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from flock.cli import main
from flock.exceptions import TracingError
from flock.tracing.export import encode_request, post_request, traces_endpoint
from flock.tracing.query import TraceStore
from flock.tracing.render import render_tree
from tests.test_cli_errors import assert_no_traceback, flock_cli
from tests.tracing.stored import OtlpReceiver, hex_ids, new_trace_id, seed_trace, span, write_spans

START = 1_700_000_000 * 10**9
MS = 1_000_000

# --- traces show ------------------------------------------------------------------------------


@pytest.fixture
def corrupt(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """Traces the OTLP receiver accepts as they come: a parent cycle (a <-> b, with a child
    of b), a span that is its own parent, a cycle beside a real root, and a 1,500-deep
    chain."""
    ids = {name: new_trace_id() for name in ("cycle", "self", "mixed", "deep")}
    t = ids["cycle"]
    spans = [
        span("a", trace_id=t, span_id=1, parent_id=2, start_ns=START, duration_ns=5 * MS),
        span("b", trace_id=t, span_id=2, parent_id=1, start_ns=START + MS, duration_ns=3 * MS),
        span("c", trace_id=t, span_id=3, parent_id=2, start_ns=START + MS, duration_ns=MS),
        span("self", trace_id=ids["self"], span_id=7, parent_id=7, start_ns=START, duration_ns=MS),
    ]
    t = ids["mixed"]
    spans += [
        span("root", trace_id=t, span_id=1, start_ns=START, duration_ns=9 * MS),
        span("x", trace_id=t, span_id=2, parent_id=3, start_ns=START + MS, duration_ns=MS),
        span("y", trace_id=t, span_id=3, parent_id=2, start_ns=START + 2 * MS, duration_ns=MS),
    ]
    t = ids["deep"]
    spans.append(span("d1", trace_id=t, span_id=1, start_ns=START, duration_ns=2000 * MS))
    spans += [
        span(f"d{i}", trace_id=t, span_id=i, parent_id=i - 1, start_ns=START + i, duration_ns=MS)
        for i in range(2, 1501)
    ]
    db = str(tmp_path / "corrupt.duckdb")
    write_spans(db, spans)
    return db, {name: f"{tid:032x}" for name, tid in ids.items()}


def show(db: str, trace_id: str, capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert main(["traces", "show", trace_id, "--db", db, *args]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    return captured.out.rstrip("\n").splitlines()


def test_show_draws_parent_cycles_and_self_parents(
    corrupt: tuple[str, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    db, ids = corrupt
    assert show(db, ids["cycle"], capsys) == [
        "a (5ms) ← (parent cycle)",
        "└─ b (3ms)",
        "   └─ c (1ms)",
    ]
    assert show(db, ids["self"], capsys) == ["self (1ms) ← (its own parent)"]
    assert show(db, ids["mixed"], capsys) == [
        "root (9ms) ← ROOT",
        "x (1ms) ← (parent cycle)",
        "└─ y (1ms)",
    ]


def test_show_draws_a_chain_deeper_than_the_recursion_limit(
    corrupt: tuple[str, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    db, ids = corrupt
    lines = show(db, ids["deep"], capsys)
    assert len(lines) == 1500
    assert lines[0] == "d1 (2000ms) ← ROOT"
    assert lines[-1] == " " * 3 * 1498 + "└─ d1500 (1ms)"
    assert show(db, ids["deep"], capsys, "--depth", "2") == [
        "d1 (2000ms) ← ROOT",
        "└─ d2 (1ms)",
        "   └─ d3 (1ms)",
    ]


def test_the_tree_holds_every_span_once(corrupt: tuple[str, dict[str, str]]) -> None:
    db, ids = corrupt
    store = TraceStore(db)
    (root,) = store.tree(ids["cycle"])
    assert (root.name, [c.name for c in root.children]) == ("a", ["b"])
    assert [c.name for c in root.children[0].children] == ["c"]
    (self_root,) = store.tree(ids["self"])
    assert self_root.name == "self" and self_root.children == []
    # Hand-made nodes that loop are drawn once each, not forever.
    root.children[0].children[0].children.append(root)
    assert str(render_tree([root])).count("a (") == 1


# --- traces export: arguments -------------------------------------------------------------------


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[str, str]:
    db = str(tmp_path / "seed.duckdb")
    spans = seed_trace(start_ns=START)
    write_spans(db, spans)
    return db, hex_ids(spans[0])[0]


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["-o", ""], "--output wants a file path", 2),
        (["-o", "."], "cannot write '.': Is a directory", 1),
        (["-o", "/"], "cannot write '/': Is a directory", 1),
        (["--otlp-endpoint", "http://[::1"], "not a valid URL: 'http://[::1'", 1),
        (["--otlp-endpoint", "http://127.0.0.1:abc"], "not a valid URL", 1),
        (["--otlp-endpoint", "http://127.0.0.1:99999"], "Port out of range", 1),
        (["--otlp-endpoint", "http://"], "not an http(s) URL with a host: 'http://'", 1),
        (["--otlp-endpoint", "http://a b"], "spaces or control characters", 1),
        (["--otlp-endpoint", "http://127.0.0.1:1", "--header", "X=a\nb"], "'\\n'", 2),
        (["--otlp-endpoint", "http://127.0.0.1:1", "--header", "X=€"], "'€'", 2),
        (["--otlp-endpoint", "http://127.0.0.1:1", "--header", "X Y=1"], "header name", 2),
    ],
    ids=[
        "empty output",
        "output dot",
        "output root",
        "unclosed ipv6",
        "port not a number",
        "port out of range",
        "no host",
        "space",
        "newline in header",
        "non-ascii header",
        "bad header name",
    ],
)
def test_bad_export_arguments_are_plain_errors(
    seeded: tuple[str, str],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
    code: int,
) -> None:
    db, _ = seeded
    assert main(["traces", "export", "latest", "--db", db, *args]) == code
    err = capsys.readouterr().err
    assert message in err, err
    assert_no_traceback(err)
    if code == 2:
        assert err.startswith("Usage: flock traces export"), err
    else:
        assert err.startswith("error: "), err


def test_the_traces_endpoint_is_added_once() -> None:
    for url in (
        "http://127.0.0.1:6006",
        "http://127.0.0.1:6006/",
        "http://collector/base/",
        "https://[::1]:4318/v1/traces/",
        "http://h:4318?project=p",
    ):
        once = traces_endpoint(url)
        assert traces_endpoint(once) == once
        assert once.count("/v1/traces") == 1
    assert traces_endpoint("http://h:4318?project=p") == "http://h:4318/v1/traces?project=p"
    assert traces_endpoint("http://collector/base/") == "http://collector/base/v1/traces"


@pytest.fixture
def not_http() -> Iterator[str]:
    """A TCP server that answers anything with a line that is not HTTP."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)
            conn.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1/traces"
    listener.close()
    thread.join(5)


def test_post_request_turns_every_failure_into_a_tracing_error(not_http: str) -> None:
    request = encode_request(seed_trace())
    with pytest.raises(TracingError, match="BadStatusLine"):
        post_request(not_http, request, timeout=5)
    with pytest.raises(TracingError, match=r"nonnumeric port|Port could not"):
        post_request("http://127.0.0.1:abc/v1/traces", request)
    with pytest.raises(TracingError, match="Invalid IPv6 URL"):
        post_request("http://[::1/v1/traces", request)
    with pytest.raises(TracingError, match="printable ASCII"):
        post_request("http://127.0.0.1:1/v1/traces", request, headers={"X": "€"})
    with pytest.raises(TracingError, match="header name"):
        post_request("http://127.0.0.1:1/v1/traces", request, headers={"X\nY": "1"})


def test_export_replays_with_a_valid_header_and_a_query_in_the_url(
    seeded: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    db, trace_id = seeded
    with OtlpReceiver() as receiver:
        url = f"{receiver.url}/?project=p"
        args = ["traces", "export", "latest", "--db", db, "--otlp-endpoint", url]
        assert main([*args, "--header", "Authorization=Bearer a b\tc"]) == 0
    assert f"to {receiver.url}/v1/traces?project=p" in capsys.readouterr().err
    assert {s.trace_id.hex() for s in receiver.spans()} == {trace_id}
    ((path, headers, _),) = receiver.requests
    assert path == "/v1/traces?project=p"
    assert headers["authorization"] == "Bearer a b\tc"


# --- traces export -o: FIFOs, symlinks, permissions -----------------------------------------------


def test_export_writes_into_a_fifo_instead_of_replacing_it(
    seeded: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, trace_id = seeded
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as f:
            got.append(f.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert main(["traces", "export", "latest", "--db", db, "-o", str(fifo)]) == 0
        reader.join(10)
    finally:
        if reader.is_alive():  # the FIFO was replaced: let the reader go
            with open(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK), "wb", closefd=True):
                pass
    assert stat.S_ISFIFO(fifo.lstat().st_mode), "the FIFO was replaced"
    (doc,) = [orjson.loads(line) for line in got[0].splitlines()]
    assert doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] == trace_id
    assert f"to {fifo}" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.part"))


def test_export_through_a_symlink_writes_its_target_and_keeps_the_link(
    seeded: tuple[str, str], tmp_path: Path
) -> None:
    db, trace_id = seeded
    (tmp_path / "out").mkdir()
    real = tmp_path / "out" / "real.json"
    real.write_text("old")
    real.chmod(0o600)
    link = tmp_path / "link.json"
    link.symlink_to(Path("out") / "real.json")
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(Path("out") / "new.json")
    for path in (link, dangling):
        assert main(["traces", "export", "latest", "--db", db, "-o", str(path)]) == 0
        assert path.is_symlink()
    for target in (real, tmp_path / "out" / "new.json"):
        (doc,) = [orjson.loads(line) for line in target.read_text().splitlines()]
        assert doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] == trace_id
    assert stat.S_IMODE(real.stat().st_mode) == 0o600  # replaced, with its permissions
    assert not list(tmp_path.rglob("*.part"))


def test_a_failed_export_leaves_the_old_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "seed.duckdb")
    write_spans(db, seed_trace(start_ns=START))
    out = tmp_path / "out.json"
    out.write_text("old")
    assert main(["traces", "export", "0" * 32, "--db", db, "-o", str(out)]) == 1
    assert "no trace" in capsys.readouterr().err
    assert out.read_text() == "old" and not list(tmp_path.glob("*.part"))


# --- serve / worker targets ---------------------------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_targets_that_cannot_be_imported_are_plain_errors(tmp_path: Path, command: str) -> None:
    (tmp_path / "app.py").write_text("flock = None\n")
    (tmp_path / "dir.py").mkdir()
    started = time.monotonic()
    for target, message in (
        (".app:flock", "cannot import '.app': relative module names are not supported"),
        ("..app:flock", "cannot import '..app'"),
        ("dir.py:flock", "cannot import 'dir.py': Is a directory"),
        ("missing.py:flock", "cannot import 'missing.py': No such file or directory"),
    ):
        done = flock_cli(command, target, cwd=tmp_path, timeout=60)
        assert done.returncode == 1, (target, done.stderr)
        assert f"error: {message}" in done.stderr, (target, done.stderr)
        assert_no_traceback(done.stderr)
    assert time.monotonic() - started < 60
    done = flock_cli(command, "./app.py:flock", cwd=tmp_path, timeout=60)  # a path: loaded
    assert "relative module names" not in done.stderr and "cannot import" not in done.stderr


# --- traces export: neither or both of TRACE_ID and --all -----------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "name one trace (TRACE_ID or 'latest'), or pass --all for every trace"),
        (["latest", "--all"], "name one trace ('latest') or pass --all, not both"),
    ],
    ids=["neither", "both"],
)
def test_export_says_which_of_trace_id_and_all_is_wrong(
    seeded: tuple[str, str], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    db, _ = seeded
    assert main(["traces", "export", "--db", db, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Usage: flock traces export"), err
    assert message in err, err


# --- demo: its hint reads the file the demo wrote ---------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "hint"),
    [
        (["--db", "cli.duckdb"], {}, "`flock traces list --db cli.duckdb`"),
        (["--db", "my traces.duckdb"], {}, "`flock traces list --db 'my traces.duckdb'`"),
        ([], {"FLOCK_TRACE_DB": "env.duckdb"}, "`flock traces list`"),
        (["--db", ".flock/traces.duckdb"], {"FLOCK_TRACE_DB": "env.duckdb"}, "--db .flock/"),
    ],
    ids=["db", "db with a space", "env only", "db over env"],
)
def test_the_demo_hint_names_the_file_it_wrote(
    tmp_path: Path, args: list[str], env: dict[str, str], hint: str
) -> None:
    result = flock_cli("demo", *args, cwd=tmp_path, **env)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert hint in last, last
    # the command it suggests lists the demo's trace
    command = last.split("`")[1].split()[1:]
    if "--db" in command:
        command = [*command[:3], " ".join(command[3:]).strip("'")]
    listed = flock_cli(*command, "--json", cwd=tmp_path, **env)
    assert listed.returncode == 0, listed.stderr
    assert last.split()[1] in listed.stdout


# --- traces export/list/show/stats/clear of odd rows (the right column types) -----------------

ODD_BASE: dict[str, object] = {
    "trace_id": "ab" * 16,
    "span_id": "01" * 8,
    "parent_id": None,
    "name": "root",
    "service": None,
    "operation": None,
    "kind": None,
    "start_time": START,
    "end_time": START + MS,
    "duration_ms": 1.0,
    "status_code": "OK",
    "status_description": None,
    "attributes": None,
    "events": None,
    "links": None,
    "resource": None,
}


def odd_file(path: Path, *rows: dict[str, object]) -> str:
    """A trace file with flock's schema holding ``ODD_BASE`` rows with these changes."""
    import duckdb

    from flock.tracing.store import COLUMNS, SCHEMA

    names = [name for name, _ in COLUMNS]
    with duckdb.connect(str(path)) as conn:
        conn.execute(SCHEMA)
        for change in rows:
            row = {**ODD_BASE, **change}
            conn.execute(
                f"INSERT INTO spans ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                [row[n] for n in names],
            )
    return str(path)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"trace_id": "not-hex-id"}, "trace_id 'not-hex-id' is not an id of 1 to 32 hex digits"),
        ({"trace_id": ""}, "trace_id '' is not an id"),
        ({"trace_id": "1" * 33}, f"trace_id '{'1' * 33}' is not an id of 1 to 32 hex"),
        ({"span_id": "not-hex-id"}, "span_id 'not-hex-id' is not an id of 1 to 16 hex digits"),
        ({"span_id": "0x12"}, "span_id '0x12' is not an id"),
        ({"parent_id": "zz"}, "parent_id 'zz' is not an id of 1 to 16 hex digits"),
        ({"start_time": -5}, "start_time -5 is not a time OTLP can hold"),
        ({"attributes": "[]"}, "attributes '[]' is not a JSON object"),
        ({"attributes": "1"}, "attributes '1' is not a JSON object"),
        ({"events": "1"}, "events '1' is not a JSON array"),
        ({"events": "[1]"}, "an event 1 is not a JSON object"),
        ({"events": '[{"timestamp": -1}]'}, "an event's timestamp -1 is not a time"),
        ({"links": '[{"trace_id": "zz"}]'}, "a link's trace_id 'zz' is not an id"),
        ({"resource": "[1]"}, "resource '[1]' is not a JSON object"),
        ({"attributes": '{"a": 1e400}'}, "attributes is not JSON flock can read"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
@pytest.mark.parametrize("select", ["--all", "one"])
def test_export_of_a_span_otlp_cannot_hold_names_the_file_and_the_value(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    row: dict[str, object],
    message: str,
    select: str,
) -> None:
    db = odd_file(tmp_path / "odd.duckdb", {"name": "odd", **row})
    out = tmp_path / "out.json"
    out.write_text("old export\n")
    trace = str(row.get("trace_id", ODD_BASE["trace_id"]))
    args = ["--all"] if select == "--all" else [trace]
    assert main(["traces", "export", *args, "--db", db, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot export {db!r}: span "), err
    assert "('odd')" in err and message in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert_no_traceback(err)
    assert out.read_text() == "old export\n"  # the old file is left as it was


def test_export_keeps_odd_but_valid_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """NULLs where the table allows them, JSON null, an end before the start, an unknown
    kind and status, and integers beyond 64 bits (as strings, as the trace file keeps them)."""
    big = 2**64 - 1
    db = odd_file(
        tmp_path / "odd.duckdb",
        {"name": ""},
        {"span_id": "02" * 8, "parent_id": "01" * 8, "name": "child", "status_code": "ERROR"},
        {
            "trace_id": "cd" * 16,
            "name": "odd",
            "end_time": START - MS,
            "duration_ms": -1.0,
            "kind": "weird",
            "status_code": "weird",
            "status_description": "",
            "attributes": f'{{"a": {big}, "b": [1, {big}], "c": {{"d": null}}}}',
            "events": "null",
            "links": "null",
            "resource": f'{{"r": {big}}}',
        },
    )
    assert main(["traces", "export", "--all", "--db", db]) == 0
    captured = capsys.readouterr()
    assert "Exported 2 trace(s), 3 spans" in captured.err, captured.err
    docs = [orjson.loads(line) for line in captured.out.splitlines()]
    (odd,) = [
        d["resourceSpans"][0]
        for d in docs
        if d["resourceSpans"][0]["scopeSpans"][0]["spans"][0].get("name") == "odd"
    ]
    assert odd["resource"]["attributes"] == [{"key": "r", "value": {"stringValue": str(big)}}]
    span_doc = odd["scopeSpans"][0]["spans"][0]
    assert span_doc["attributes"] == [
        {"key": "a", "value": {"stringValue": str(big)}},
        {
            "key": "b",
            "value": {"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": str(big)}]}},
        },
    ]
    assert int(span_doc["endTimeUnixNano"]) < int(span_doc["startTimeUnixNano"])


@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["list", "--json", "--errors"],
        ["show", "latest"],
        ["show", "f0" * 16, "--attributes"],  # attributes that are JSON but not an object
        ["show", "not-hex-id"],
        ["show", ""],
        ["stats"],
        ["stats", "--json"],
        ["clear", "--older-than", "1d", "--yes"],
    ],
    ids=lambda args: " ".join(args),
)
def test_other_traces_commands_take_odd_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    db = odd_file(
        tmp_path / "odd.duckdb",
        {"trace_id": "not-hex-id", "span_id": "zz", "name": "nonhex"},
        {"trace_id": "", "span_id": "", "name": "", "status_code": ""},
        {"trace_id": "ee" * 16, "name": "neg", "start_time": -5, "end_time": -(10**18)},
        {"trace_id": "ef" * 16, "name": "huge", "start_time": 2**62, "end_time": 2**63 - 1},
        {"trace_id": "f0" * 16, "name": "json", "attributes": "[]", "events": "1"},
        {"trace_id": "f1" * 16, "parent_id": "xyz", "status_code": "ERROR"},
    )
    assert main(["traces", *args, "--db", db]) == 0
    assert_no_traceback(capsys.readouterr().err)
