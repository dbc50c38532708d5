"""The ``flock`` command line.

Examples::

    flock demo                      # run the pizza workflow and draw its trace
    flock traces list --limit 5     # newest traces first
    flock traces show latest        # the tree of the newest trace
    flock traces stats --since 1d   # count, p50/p95/p99, error rate per workflow and span
    flock traces export latest -o trace.json           # OTLP/JSON
    flock traces export --all --otlp-endpoint http://127.0.0.1:6006   # replay to Phoenix
    flock traces clear --yes        # delete all spans
    flock serve app:flock           # the dashboard of a live Flock (app.py's `flock`)
    flock dashboard --db .flock/traces.duckdb   # browse a trace file (read-only)
    flock worker app:flock --concurrency 8      # run app.py's agents on a shared PostgreSQL store
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, cast

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column, Table

from flock.exceptions import ConfigurationError, TracingError
from flock.tracing.store import DEFAULT_DB_PATH

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from typing import Any

    from flock.orchestrator import Flock
    from flock.tracing.export import ExportError
    from flock.tracing.query import TraceStore

__all__ = ["app", "main"]

app = typer.Typer(
    help="flock: agents on a typed blackboard, traced into DuckDB.", no_args_is_help=True
)
traces_app = typer.Typer(help="Inspect the trace file.", no_args_is_help=True)
app.add_typer(traces_app, name="traces")

DbOption = Annotated[
    str,
    typer.Option("--db", help="Trace file.", envvar="FLOCK_TRACE_DB", show_default=True),
]


def _console() -> Console:
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 200  # piped: plain text, and tables not squeezed to 80 columns
    return console


LOCK_WAIT = 5.0
"""Seconds a command waits while another process holds the trace file."""


def _store(db: str) -> TraceStore:
    from flock.tracing.query import TraceStore

    return TraceStore(db, lock_wait=LOCK_WAIT)


def _since(value: str | None) -> int | None:
    from flock.tracing.query import parse_since

    return None if value is None else parse_since(value)  # checked by _check_since


def _check_since(value: str | None) -> str | None:
    """A bad ``--since`` is a usage error (usage, ``Error: ...``, exit 2), found while the
    command line is parsed."""
    from flock.tracing.query import parse_since

    if value is not None:
        try:
            parse_since(value)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _one_of(*choices: str) -> Callable[[str], str]:
    """An option callback that accepts only ``choices`` (a usage error otherwise)."""

    def check(value: str) -> str:
        if value not in choices:
            raise typer.BadParameter(
                f"{value!r} is not one of {', '.join(repr(c) for c in choices)}"
            )
        return value

    return check


SinceOption = Annotated[
    str | None,
    typer.Option(
        help="Only traces that started since: 10m, 2h, 1d, 1w or an ISO time.",
        callback=_check_since,
    ),
]


def _fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr (as plain text: no Rich markup, no control
    characters from a server's reply) and return the exit to raise."""
    _err_console().print(f"[red]error:[/red] {escape(_printable(message))}")
    return typer.Exit(code=1)


def _printable(text: str) -> str:
    """``text`` on one line: whitespace runs become one space, other control characters and
    U+FFFD (undecodable bytes) are dropped."""
    text = " ".join(text.split())
    return "".join(c for c in text if c.isprintable() and c != "\ufffd")


@app.command()
def demo(
    topic: Annotated[
        str, typer.Option(help="The pizza idea.")
    ] = "spicy pineapple with chili honey",
    db: DbOption = DEFAULT_DB_PATH,
) -> None:
    """Run the pizza workflow inside traced_run and draw its trace.

    The chef is the default DSPy engine on openai/gpt-4o. It calls that model
    with OPENAI_API_KEY or OPENAI_BASE_URL set; otherwise a local stand-in
    OpenAI-compatible model on 127.0.0.1 answers (no key, no network).
    With tracing off (FLOCK_AUTO_TRACE, FLOCK_TRACE_FILE, OTEL_SDK_DISABLED)
    it runs the workflow and says that no trace was recorded.
    Example: flock demo --topic "four cheeses"
    """
    from flock._cli_demo import run_traced_demo
    from flock._demo import uses_llm

    # The file this run traces to (and whose trace is drawn): --db, else FLOCK_TRACE_DB
    # (typer puts it into db), else the default; before the demo's Flock sets up tracing.
    default_db = os.environ.get("FLOCK_TRACE_DB") or DEFAULT_DB_PATH  # what `flock traces` reads
    os.environ["FLOCK_TRACE_DB"] = db
    console = _console()
    model = "openai/gpt-4o via DSPy" if uses_llm() else "DSPy with a local stand-in model"
    console.print(f"Running the pizza workflow ({model}) …")
    pizzas, trace = run_traced_demo(topic)
    for pizza in pizzas:
        console.print(f"[bold]{escape(pizza.name)}[/bold]: {escape(', '.join(pizza.toppings))}")
    if trace.file is None:
        if trace.failed:
            raise _fail(f"no trace was recorded: {trace.why}")
        _err_console().print(f"[yellow]No trace was recorded:[/yellow] {escape(trace.why)}")
        return
    assert trace.trace_id is not None
    where = db if Path(db).resolve() == trace.file else str(trace.file)
    _show(where, trace.trace_id, attributes=False, depth=None, console=console)
    console.print(
        f"\nTrace {trace.trace_id} stored in {escape(where)} "
        f"(query it with DuckDB, or `flock traces list{escape(_db_flag(where, default_db))}`)."
    )


def _db_flag(path: str, default: str) -> str:
    """`` --db PATH`` (shell-quoted) for a command that should read ``path``; empty when it
    reads that file anyway (``default``: ``FLOCK_TRACE_DB`` as the shell has it, else
    ``.flock/traces.duckdb``)."""
    import shlex

    if Path(default).resolve() == Path(path).resolve():
        return ""
    return f" --db {shlex.quote(path)}"


@traces_app.command("list")
def list_traces(
    db: DbOption = DEFAULT_DB_PATH,
    name: Annotated[
        str | None, typer.Option(help="Only traces whose root name contains this.")
    ] = None,
    errors: Annotated[
        bool, typer.Option("--errors", help="Only traces with an error span.")
    ] = False,
    since: SinceOption = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for scripts.")] = False,
) -> None:
    """Traces, newest first. Example: flock traces list --name pizza --since 2h --limit 5"""
    since_ns = _since(since)
    try:
        traces = _store(db).list_traces(
            limit=limit, name=name, errors_only=errors, since_ns=since_ns
        )
    except TracingError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        for t in traces:
            print(json.dumps(asdict(t)))
        return
    from flock.tracing.render import format_ms

    table = Table(
        Column("trace id", no_wrap=True, min_width=32),
        Column("name", overflow="fold"),
        "started",
        "spans",
        "duration",
        "status",
    )
    for t in traces:
        status = f"[red]{t.errors} error(s)[/red]" if t.errors else "ok"
        table.add_row(
            t.trace_id,
            t.name,
            _local_time(t.start_time),
            str(t.span_count),
            format_ms(t.duration_ms),
            status,
        )
    _console().print(table)


def _local_time(ns: int) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(ns / 1e9).strftime("%m-%d %H:%M:%S")


def _show(db: str, trace_id: str, *, attributes: bool, depth: int | None, console: Console) -> None:
    from flock.tracing.render import render_tree

    store = _store(db)
    try:
        if trace_id == "latest":
            latest = store.latest_trace_id()
            if latest is None:
                raise _fail(f"{db} holds no traces yet")
            trace_id = latest
        console.print(render_tree(store.tree(trace_id), attributes=attributes, depth=depth))
    except TracingError as exc:
        raise _fail(str(exc)) from None


@traces_app.command("show")
def show(
    trace_id: Annotated[str, typer.Argument(help="A trace id, or 'latest'.")] = "latest",
    db: DbOption = DEFAULT_DB_PATH,
    attributes: Annotated[bool, typer.Option("--attributes", help="Show span attributes.")] = False,
    depth: Annotated[int | None, typer.Option(min=0, help="Levels below the root to draw.")] = None,
) -> None:
    """Draw one trace as a tree. Example: flock traces show latest --depth 2"""
    _show(db, trace_id, attributes=attributes, depth=depth, console=_console())


@traces_app.command("clear")
def clear(
    db: DbOption = DEFAULT_DB_PATH,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    older_than: Annotated[
        str | None,
        typer.Option(
            help="Only whole traces that ended before: 7d, 12h, 1w or an ISO time.",
            callback=_check_since,
        ),
    ] = None,
) -> None:
    """Delete every span and reclaim the space, or only old traces.

    Example: flock traces clear --yes; flock traces clear --older-than 7d --yes
    """
    from flock.tracing.processor import is_lock_error
    from flock.tracing.store import clear_traces

    what = "all spans" if older_than is None else f"the traces older than {older_than}"
    if not yes and not typer.confirm(f"Delete {what} in {db}?"):
        raise typer.Exit(code=1)
    err = _err_console()
    with err.status(f"Clearing {db} …") if err.is_terminal else nullcontext():
        # clear_traces waits up to lock_wait while another process holds the file, and
        # reports any other failure (a missing or corrupt file) at once.
        result = clear_traces(db, older_than=older_than, lock_wait=LOCK_WAIT)
    if not result["success"]:
        error = str(result["error"])
        if is_lock_error(TracingError(error)):  # DuckDB's lock message, not any "lock"
            raise _fail(
                f"{db!r} is held by another process (one writing traces, or reading them: "
                "a dashboard, a DuckDB shell); tried for "
                f"{LOCK_WAIT:.0f} s — try again shortly"
            )
        raise _fail(error)
    _console().print(f"Deleted {result['deleted_count']} spans from {db}")


def _err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _progress(console: Console, total: int) -> Progress:
    """A progress bar on stderr when it is a terminal (and not for a single item)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("traces · {task.fields[spans]} spans"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal or total < 2,
    )


@traces_app.command("stats")
def stats(
    db: DbOption = DEFAULT_DB_PATH,
    by: Annotated[
        str,
        typer.Option(
            help="'workflow' (whole traces by root name), 'span' (spans by name) or 'both'.",
            callback=_one_of("workflow", "span", "both"),
        ),
    ] = "both",
    name: Annotated[str | None, typer.Option(help="Only names containing this.")] = None,
    since: SinceOption = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many rows each.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON lines for scripts (with a 'by' key).")
    ] = False,
) -> None:
    """Count, p50/p95/p99 duration and error rate per workflow and per span name.

    Example: flock traces stats --by span --since 1d
    """
    from flock.tracing.render import format_ms

    groups: list[Literal["workflow", "span"]] = (
        ["workflow", "span"] if by == "both" else [cast('Literal["workflow", "span"]', by)]
    )
    since_ns = _since(since)
    store = _store(db)
    try:
        results = [
            (group, store.stats(by=group, name=name, since_ns=since_ns, limit=limit))
            for group in groups
        ]
    except TracingError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        for group, rows in results:
            for row in rows:
                print(json.dumps({"by": group, **asdict(row)}))
        return
    console = _console()
    for i, (group, rows) in enumerate(results):
        title = "Per workflow (whole traces)" if group == "workflow" else "Per span name"
        table = Table(
            Column("workflow" if group == "workflow" else "span", overflow="fold", min_width=24),
            "count",
            "errors",
            "p50",
            "p95",
            "p99",
            "max",
            "total",
            title=title,
            title_justify="left",
        )
        for row in rows:
            errors = f"[red]{row.errors} ({row.error_rate:.0%})[/red]" if row.errors else "0"
            table.add_row(
                row.name,
                str(row.count),
                errors,
                format_ms(row.p50_ms),
                format_ms(row.p95_ms),
                format_ms(row.p99_ms),
                format_ms(row.max_ms),
                format_ms(row.total_ms),
            )
        if i:
            console.print()
        console.print(table if rows else f"{title}: no spans")


@traces_app.command("export")
def export(
    ctx: typer.Context,
    trace_id: Annotated[
        str | None, typer.Argument(help="A trace id, or 'latest'; or use --all.")
    ] = None,
    db: DbOption = DEFAULT_DB_PATH,
    all_traces: Annotated[bool, typer.Option("--all", help="Every trace in the file.")] = False,
    name: Annotated[
        str | None, typer.Option(help="With --all: only traces whose root name contains this.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="With --all: only traces that started since (10m, 2h, 1d, ISO time).",
            callback=_check_since,
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Write OTLP/JSON here ('-' = stdout, the default without --otlp-endpoint).",
        ),
    ] = None,
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(
            help="Replay the traces to this OTLP/HTTP receiver (base URL; /v1/traces is added)."
        ),
    ] = None,
    otlp_protocol: Annotated[
        str,
        typer.Option(
            help="'http/protobuf' or 'http/json' for --otlp-endpoint.",
            callback=_one_of("http/protobuf", "http/json"),
        ),
    ] = "http/protobuf",
    header: Annotated[
        list[str] | None,
        typer.Option(help="Extra HTTP header for --otlp-endpoint, KEY=VALUE (repeatable)."),
    ] = None,
) -> None:
    """Export traces as OTLP/JSON, or replay them to Jaeger, Phoenix or any OTLP receiver.

    OTLP/JSON Lines: one ExportTraceServiceRequest per trace and line.

    Example: flock traces export latest -o trace.json;
    flock traces export --all --otlp-endpoint http://127.0.0.1:6006
    """
    from flock.tracing import export as otlp

    if trace_id is None and not all_traces:
        ctx.fail("name one trace (TRACE_ID or 'latest'), or pass --all for every trace")
    if trace_id is not None and all_traces:
        ctx.fail(f"name one trace ({trace_id!r}) or pass --all, not both")
    if not all_traces and (name is not None or since is not None):
        ctx.fail("--name and --since select traces for --all")
    if output == "":
        ctx.fail("--output wants a file path ('-' for stdout)")
    headers: dict[str, str] = {}
    for item in header or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            ctx.fail(f"--header wants KEY=VALUE, got {item!r}")
        try:
            otlp.check_header(key.strip(), value.strip())
        except ValueError as exc:
            ctx.fail(f"--header {item!r}: {exc}")
        headers[key.strip()] = value.strip()
    endpoint: str | None = None
    if otlp_endpoint is not None:
        try:
            endpoint = otlp.traces_endpoint(otlp_endpoint)
        except ValueError as exc:
            raise _fail(str(exc)) from None
    since_ns = _since(since)
    store = _store(db)
    err = _err_console()
    try:
        if all_traces:
            trace_ids = otlp.trace_ids_for_export(store, name=name, since_ns=since_ns)
        elif trace_id == "latest":
            latest = store.latest_trace_id()
            if latest is None:
                raise _fail(f"{db} holds no traces yet")
            trace_ids = [latest]
        else:
            trace_ids = [cast(str, trace_id)]
        if not trace_ids:
            err.print(f"No traces to export in {db}.")
            return
        # A trace that cannot be exported does not stop the others: each failure is
        # reported at the end, and the exit status is 1.
        incomplete: list[tuple[otlp.ExportError, str]] = []
        if output is not None or endpoint is None:
            incomplete += _export_json(store, trace_ids, output, err)
        if endpoint is not None:
            with _progress(err, len(trace_ids)) as bar:
                task = bar.add_task("Sending", total=len(trace_ids), spans=0)
                try:
                    traces, spans = otlp.send_otlp(
                        store,
                        trace_ids,
                        endpoint,
                        protocol=cast("otlp.OtlpProtocol", otlp_protocol),
                        headers=headers,
                        progress=lambda done, n: bar.update(
                            task, completed=done, spans=bar.tasks[0].fields["spans"] + n
                        ),
                    )
                    sent_all = True
                except otlp.ExportError as exc:
                    traces, spans, sent_all = exc.traces, exc.spans, False
                    incomplete.append((exc, f"sent to {endpoint}"))
            if traces or sent_all:
                err.print(f"Sent {traces} trace(s), {spans} spans to {endpoint}")
    except TracingError as exc:
        raise _fail(str(exc)) from None
    if incomplete:
        for export_error, where in incomplete:
            _report_incomplete_export(export_error, where, err)
        raise typer.Exit(code=1)


def _report_incomplete_export(exc: ExportError, where: str, err: Console) -> None:
    """``error: ...`` lines for an export that left traces out: the reason alone when one
    trace was asked for (as for any failure); else a count and each trace with its reason,
    then why the export stopped, if it did."""

    def line(text: str) -> str:
        return escape(_printable(text))

    if exc.total == 1:
        reason = exc.failures[0].reason if exc.failures else exc.stopped or str(exc)
        err.print(f"[red]error:[/red] {line(reason)}")
        return
    if exc.failures:
        err.print(
            f"[red]error:[/red] {len(exc.failures)} of {exc.total} traces could not be "
            f"{line(where)}:"
        )
        for failure in exc.failures:
            err.print(f"  {line(failure.trace_id)}: {line(failure.reason)}")
    if exc.stopped:
        err.print(
            f"[red]error:[/red] {line(exc.stopped)} — stopped, {exc.not_sent} of "
            f"{exc.total} traces not {line(where)}"
        )


def _export_json(
    store: TraceStore, trace_ids: list[str], output: str | None, err: Console
) -> list[tuple[ExportError, str]]:
    """Export as OTLP/JSON; returns the export's failures to report, with where it went."""
    from flock.tracing.export import ExportError, write_json_file, write_json_lines

    incomplete: list[tuple[ExportError, str]] = []
    with _progress(err, len(trace_ids)) as bar:
        task = bar.add_task("Exporting", total=len(trace_ids), spans=0)

        def advance(done: int, n: int) -> None:
            bar.update(task, completed=done, spans=bar.tasks[0].fields["spans"] + n)

        where = "stdout" if output is None or output == "-" else output
        try:
            if output is None or output == "-":
                try:
                    traces, spans = write_json_lines(store, trace_ids, sys.stdout, progress=advance)
                finally:
                    sys.stdout.flush()
            else:  # a regular file is replaced atomically; a FIFO or a symlink's target written
                try:
                    traces, spans = write_json_file(store, trace_ids, output, progress=advance)
                except OSError as exc:
                    raise _fail(f"cannot write {output!r}: {exc.strerror or exc}") from None
        except ExportError as exc:  # the traces that could be exported were
            traces, spans = exc.traces, exc.spans
            incomplete.append((exc, f"exported to {where}"))
    if traces or not incomplete:
        err.print(f"Exported {traces} trace(s), {spans} spans as OTLP/JSON to {where}")
    return incomplete


def _load_flock(target: str) -> object:
    """``module:attribute`` (a dotted module or a ``.py`` path) → the object it names."""
    import importlib
    import importlib.util

    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise _fail(
            f"expected module:flock_object (e.g. app:flock or app.py:flock), got {target!r}"
        )
    is_file = module_name.endswith(".py") or Path(module_name).is_file()
    if module_name.startswith(".") and not is_file:  # ./app.py is a file, .app a module
        raise _fail(
            f"cannot import {module_name!r}: relative module names are not supported (e.g. app:flock)"
        )
    if is_file:
        try:
            Path(module_name).open("rb").close()
        except OSError as exc:  # missing, a directory, not readable
            raise _fail(f"cannot import {module_name!r}: {exc.strerror or exc}") from None
    sys.path.insert(0, os.getcwd())
    try:
        if is_file:
            spec = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            if spec is None or spec.loader is None:
                raise _fail(f"cannot load {module_name!r}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except (ImportError, FileNotFoundError) as exc:
        raise _fail(f"cannot import {module_name!r}: {exc}") from None
    except ConfigurationError as exc:  # e.g. FLOCK_STORE_URL=notadsn when it builds its Flock
        raise _fail(f"cannot load {module_name!r}: {exc}") from None
    obj = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise _fail(f"{module_name!r} has no attribute {attribute!r}")
        obj = getattr(obj, part)
    return obj


HostOption = Annotated[
    str, typer.Option(help="Address to bind; anything but loopback needs a token.")
]
PortOption = Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free port).")]
TokenOption = Annotated[
    str | None,
    typer.Option(
        help="Access token (generated and printed when binding beyond loopback).",
        envvar="FLOCK_DASHBOARD_TOKEN",
    ),
]


@app.command()
def serve(
    target: Annotated[str, typer.Argument(help="module:flock_object, e.g. app:flock")],
    dashboard: Annotated[
        bool, typer.Option("--dashboard/--no-dashboard", help="Serve the web UI too.")
    ] = True,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8344,
    token: TokenOption = None,
    db: DbOption = DEFAULT_DB_PATH,
    otlp_grpc_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Also receive spans over OTLP/gRPC on this port (4317 usually; 0: any free "
            "port), on the same host and token as the dashboard.",
        ),
    ] = None,
) -> None:
    """Serve a Flock: the dashboard with its blackboard, until Ctrl-C.

    Example: flock serve app:flock --port 8344   (then open the printed URL)
    """
    from flock.orchestrator import Flock

    os.environ["FLOCK_TRACE_DB"] = db  # before the module sets up tracing
    obj = _load_flock(target)
    if not isinstance(obj, Flock):
        raise _fail(f"{target!r} is a {type(obj).__name__}, not a Flock")
    _serve_until_interrupted(
        obj.serve(
            dashboard=dashboard, host=host, port=port, token=token, otlp_grpc_port=otlp_grpc_port
        )
    )


def _serve_until_interrupted(server: Coroutine[Any, Any, None]) -> None:
    """Run a server until Ctrl-C; a taken port or a bad option is a plain error."""
    try:
        asyncio.run(server)
    except KeyboardInterrupt:
        pass
    except (OSError, ValueError) as exc:
        raise _fail(str(exc)) from None


@app.command("dashboard")
def dashboard_command(
    db: DbOption = DEFAULT_DB_PATH,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8344,
    token: TokenOption = None,
) -> None:
    """Browse a trace file in the (read-only) dashboard, until Ctrl-C.

    Read-only: it takes no spans over OTLP (POST /v1/traces answers 403, and it
    has no --otlp-grpc-port); to collect workers' spans into the file, serve a
    Flock instead (flock serve app:flock --otlp-grpc-port 4317).
    Example: flock dashboard --db .flock/traces.duckdb --port 8344
    """
    from flock.dashboard import serve as serve_dashboard

    if not Path(db).is_file():
        raise _fail(f"no trace file at {db!r}; run a traced workflow first (e.g. flock demo)")
    _serve_until_interrupted(serve_dashboard(db, host=host, port=port, token=token, read_only=True))


@app.command("worker")
def worker_command(
    target: Annotated[str, typer.Argument(help="module:flock_object, e.g. app:flock")],
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help="Runs at once (default: the sum of the agents' limits)."),
    ] = None,
    lease: Annotated[
        float, typer.Option(min=0.1, help="Seconds a run stays leased without a heartbeat.")
    ] = 30.0,
    store_url: Annotated[
        str | None,
        typer.Option(
            "--store-url",
            envvar="FLOCK_STORE_URL",
            help="postgresql://… (used when the program does not pass a store itself).",
        ),
    ] = None,
) -> None:
    """Run a program's agents on the runs queued in its shared store, until Ctrl-C/SIGTERM.

    Start as many workers (on as many machines) as you like; any process may publish.
    Example: FLOCK_STORE_URL=postgresql://127.0.0.1/app flock worker app:flock --concurrency 8
    """
    import contextlib

    from flock.orchestrator import Flock

    if store_url:
        os.environ["FLOCK_STORE_URL"] = store_url  # before the module builds its Flock
    obj = _load_flock(target)
    if not isinstance(obj, Flock):
        raise _fail(f"{target!r} is a {type(obj).__name__}, not a Flock")
    if obj._distributed is None:
        raise _fail(
            f"{target!r} uses a {type(obj.store).__name__}, which no other process can see; "
            "give it Flock(store=PostgresStore(dsn)) or set FLOCK_STORE_URL=postgresql://…"
        )
    if not obj.agents:
        raise _fail(f"{target!r} has no agents to run")
    names = ", ".join(a.name for a in obj.agents)
    _err_console().print(f"flock worker {os.getpid()}: agents {names} on {obj.store!r}")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_work(obj, concurrency=concurrency, lease=lease))
    except ConfigurationError as exc:  # e.g. a schema newer than this flock
        raise _fail(str(exc)) from None
    except Exception as exc:
        if not _store_unreachable(exc):
            raise  # a bug: keep its traceback
        raise _fail(f"cannot use the store {obj.store!r}: {exc}") from None
    _err_console().print(f"flock worker {os.getpid()}: stopped")


def _store_unreachable(exc: BaseException) -> bool:
    """The store's database could not be reached (after the store's own retries)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_store_unreachable(e) for e in exc.exceptions)
    try:
        import psycopg
        from psycopg_pool import PoolTimeout
    except ImportError:  # no PostgreSQL support installed: not a PostgresStore
        return False
    return isinstance(exc, psycopg.OperationalError | PoolTimeout)


async def _work(flock: Flock, *, concurrency: int | None, lease: float) -> None:
    """``flock.work()`` until SIGINT/SIGTERM, then close the store."""
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, task.cancel)
    try:
        await flock.work(concurrency=concurrency, lease=lease)
    except asyncio.CancelledError:
        pass
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await flock.store.close()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI (``argv`` defaults to ``sys.argv[1:]``) and return its exit code.

    A usage error (unknown option or command, bad or missing value) prints click's usage
    message on stderr and returns 2; ``error: ...`` failures return 1.
    """
    try:
        code = app(
            args=argv if argv is not None else sys.argv[1:],
            prog_name="flock",
            standalone_mode=False,
        )
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        return 1
    except Exception as exc:
        if not isinstance(exc, _usage_errors()):
            raise
        show = getattr(exc, "show", None)
        format_message = getattr(exc, "format_message", exc.__str__)
        if not str(format_message()).strip():
            pass  # no_args_is_help: typer printed the help already
        elif callable(show):
            show()  # "Usage: ...", "Try 'flock ... --help' for help.", "Error: ..."
        else:
            _err_console().print(f"Error: {escape(str(exc))}")
        return int(getattr(exc, "exit_code", 2))
    return code if isinstance(code, int) else 0


def _usage_errors() -> tuple[type[Exception], ...]:
    """The exceptions typer raises for bad command lines: typer >= 0.2x raises its vendored
    click's (``typer._click.exceptions.UsageError`` & co., all ``typer.TyperException``),
    which are not ``click.ClickException``; older typer raises click's own."""
    errors: list[type[Exception]] = []
    typer_error = getattr(typer, "TyperException", None)
    if isinstance(typer_error, type) and issubclass(typer_error, Exception):
        errors.append(typer_error)
    try:
        import click
    except ImportError:  # typer with its vendored click needs no click
        pass
    else:
        errors.append(click.ClickException)
    return tuple(errors)


if __name__ == "__main__":
    sys.exit(main())
