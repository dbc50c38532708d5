"""The ``flock traces`` commands (``list``, ``show``, ``clear``, ``stats``, ``export``) in
``traces_app``, and the helpers only they use; :mod:`flock.cli` adds it as ``traces``.
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Literal, cast

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column, Table

from flock import _cli_common
from flock._cli_common import (
    DbOption,
    _console,
    _err_console,
    _fail,
    _printable,
    _show,
    _store,
)
from flock.exceptions import TracingError
from flock.tracing.store import DEFAULT_DB_PATH

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console

    from flock.tracing.export import ExportError
    from flock.tracing.query import TraceStore

__all__ = ["traces_app"]

traces_app = typer.Typer(help="Inspect the trace file.", no_args_is_help=True)


def _since(value: str | None) -> int | None:
    from flock.tracing._times import parse_since

    return None if value is None else parse_since(value)  # checked by _check_since


def _check_since(value: str | None) -> str | None:
    """A bad ``--since`` is a usage error (usage, ``Error: ...``, exit 2), found while the
    command line is parsed."""
    from flock.tracing._times import parse_since

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
        result = clear_traces(db, older_than=older_than, lock_wait=_cli_common.LOCK_WAIT)
    if not result["success"]:
        error = str(result["error"])
        if is_lock_error(TracingError(error)):  # DuckDB's lock message, not any "lock"
            raise _fail(
                f"{db!r} is held by another process (one writing traces, or reading them: "
                "a dashboard, a DuckDB shell); tried for "
                f"{_cli_common.LOCK_WAIT:.0f} s — try again shortly"
            )
        raise _fail(error)
    _console().print(f"Deleted {result['deleted_count']} spans from {db}")


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
