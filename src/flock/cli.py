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

The ``flock traces`` commands live in :mod:`flock._cli_traces`, the helpers both use in
:mod:`flock._cli_common`.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from flock._cli_common import DbOption, _console, _err_console, _fail, _show
from flock._cli_traces import traces_app
from flock.exceptions import ConfigurationError
from flock.tracing.store import DEFAULT_DB_PATH

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from typing import Any

    from flock.orchestrator import Flock

__all__ = ["app", "main"]

app = typer.Typer(
    help="flock: agents on a typed blackboard, traced into DuckDB.", no_args_is_help=True
)
app.add_typer(traces_app, name="traces")


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
