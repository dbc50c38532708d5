"""Helpers shared by the ``flock`` commands (:mod:`flock.cli`) and the ``flock traces``
commands (:mod:`flock._cli_traces`): the consoles, the ``--db`` option, opening the trace
file (``LOCK_WAIT``), drawing one trace, and ``error: ...`` exits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from flock.exceptions import TracingError

if TYPE_CHECKING:
    from flock.tracing.query import TraceStore

__all__ = [
    "LOCK_WAIT",
    "DbOption",
    "_console",
    "_err_console",
    "_fail",
    "_printable",
    "_show",
    "_store",
]

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
"""Seconds a command waits while another process holds the trace file (read as
``_cli_common.LOCK_WAIT`` everywhere, so that setting it here reaches every command)."""


def _store(db: str) -> TraceStore:
    from flock.tracing.query import TraceStore

    return TraceStore(db, lock_wait=LOCK_WAIT)


def _err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


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
