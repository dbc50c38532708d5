"""The ``flock`` command line.

Examples::

    flock demo                      # run the pizza workflow and draw its trace
    flock traces list --limit 5     # newest traces first
    flock traces show latest        # the tree of the newest trace
    flock traces clear --yes        # delete all spans
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from flock.exceptions import TracingError
from flock.tracing.store import DEFAULT_DB_PATH

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
    return Console(highlight=False, soft_wrap=True)


def _fail(message: str) -> typer.Exit:
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[red]error:[/red] {message}")
    return typer.Exit(code=1)


@app.command()
def demo(
    topic: Annotated[
        str, typer.Option(help="The pizza idea.")
    ] = "spicy pineapple with chili honey",
    db: DbOption = DEFAULT_DB_PATH,
) -> None:
    """Run the pizza workflow inside traced_run and draw its trace.

    Offline (a plain-Python chef) unless OPENAI_API_KEY or OPENAI_BASE_URL is set.
    Example: flock demo --topic "four cheeses"
    """
    from flock._demo import run_demo, uses_llm

    os.environ.setdefault("FLOCK_TRACE_DB", db)
    console = _console()
    console.print(
        f"Running the pizza workflow ({'openai/gpt-4o via DSPy' if uses_llm() else 'offline chef'}) …"
    )
    pizzas = asyncio.run(run_demo(topic))
    for pizza in pizzas:
        console.print(f"[bold]{pizza.name}[/bold]: {', '.join(pizza.toppings)}")
    _show(db, "latest", attributes=False, depth=None, console=console)
    console.print(f"\nTrace stored in {db} (query it with DuckDB, or `flock traces list`).")


@traces_app.command("list")
def list_traces(
    db: DbOption = DEFAULT_DB_PATH,
    name: Annotated[
        str | None, typer.Option(help="Only traces whose root name contains this.")
    ] = None,
    errors: Annotated[
        bool, typer.Option("--errors", help="Only traces with an error span.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines for scripts.")] = False,
) -> None:
    """Traces, newest first. Example: flock traces list --name pizza --limit 5"""
    from flock.tracing.query import TraceStore

    try:
        traces = TraceStore(db).list_traces(limit=limit, name=name, errors_only=errors)
    except TracingError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        for t in traces:
            print(json.dumps(asdict(t)))
        return
    from flock.tracing.render import format_ms

    table = Table("trace id", "name", "spans", "duration", "status")
    for t in traces:
        status = f"[red]{t.errors} error(s)[/red]" if t.errors else "ok"
        table.add_row(t.trace_id, t.name, str(t.span_count), format_ms(t.duration_ms), status)
    _console().print(table)


def _show(db: str, trace_id: str, *, attributes: bool, depth: int | None, console: Console) -> None:
    from flock.tracing.query import TraceStore
    from flock.tracing.render import render_tree

    store = TraceStore(db)
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
) -> None:
    """Delete every span and reclaim the space. Example: flock traces clear --yes"""
    from flock.tracing.store import clear_traces

    if not yes and not typer.confirm(f"Delete all spans in {db}?"):
        raise typer.Exit(code=1)
    result = clear_traces(db)
    if not result["success"]:
        raise _fail(result["error"])
    _console().print(f"Deleted {result['deleted_count']} spans from {db}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI (``argv`` defaults to ``sys.argv[1:]``) and return its exit code."""
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
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
