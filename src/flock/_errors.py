"""Reporting failures safely: text of any exception or value (whose ``str()`` or ``repr()``
may raise, or be huge), the :class:`AgentRunError` of a failed run, the one
:class:`RunawayLoopError` of an agent stopped in a workflow, the task of a run (which tells
a cancellation from outside from its event loop ending)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from flock.exceptions import AgentRunError, RunawayLoopError

if TYPE_CHECKING:
    from flock.agent import Agent
    from flock.artifacts import Artifact

__all__ = [
    "RunTask",
    "describe",
    "fatal",
    "run_error",
    "runaway",
    "safe_repr",
    "safe_text",
]

log = logging.getLogger("flock")

_FATAL = (KeyboardInterrupt, SystemExit, asyncio.CancelledError, GeneratorExit)


def fatal(error: BaseException) -> bool:
    """Whether ``error`` stops more than one run (Ctrl-C, ``sys.exit``, a cancellation, a
    coroutine being closed): it propagates. Any other exception, even a ``BaseException``
    such as pytest's ``Failed``, is the failure of the run that raised it."""
    return isinstance(error, _FATAL)


def _shown(value: object, text: str, limit: int) -> str:
    if len(text) > limit:
        return f"{text[:limit]}…[{len(text) - limit} more chars]"
    return text


def safe_text(value: object, limit: int = 2000) -> str:
    """``str(value)``, shortened to ``limit`` characters; a placeholder naming its type when
    ``str()`` raises (an int too long to print, a broken ``__str__``). Never raises."""
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception as error:
        return f"<{type(value).__name__}: str() raised {type(error).__name__}>"
    return _shown(value, text, limit)


def safe_repr(value: object, limit: int = 200) -> str:
    """``repr(value)`` as :func:`safe_text` gives ``str()``. Never raises."""
    try:
        text = repr(value)
    except Exception as error:
        return f"<{type(value).__name__}: repr() raised {type(error).__name__}>"
    return _shown(value, text, limit)


def describe(error: BaseException, limit: int = 2000) -> str:
    """``"Type: message"`` of an exception (``"Type"`` when it has no message). Never raises."""
    text = safe_text(error, limit)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def run_error(
    agent: Agent,
    artifacts: tuple[Artifact, ...],
    exc: BaseException,
    *,
    attempts: int,
    published: Sequence[Artifact] = (),
    why: str = "",
) -> AgentRunError:
    """The report of one failed run of ``agent`` on ``artifacts`` (logged; ``exc`` is its
    ``__cause__``). Never raises on what ``exc`` holds."""
    inputs = ", ".join(f"{a.type} {a.id}" for a in artifacts)
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    after = (
        f" after publishing {len(published)} output(s), which stay published (not retried)"
        if published
        else ""
    )
    error = AgentRunError(
        f"agent {agent.name!r} failed{tries} on {inputs}{after}: {describe(exc)}"
        + (f" ({why})" if why else ""),
        agent=agent.name,
        artifacts=artifacts,
        attempts=attempts,
        published=tuple(published),
    )
    error.__cause__ = exc
    try:
        log.error("%s", error, exc_info=exc)
    except Exception:  # a handler formatting the traceback hit the same broken __str__
        log.error("%s", error)
    return error


def runaway(
    agent: Agent,
    workflow: str,
    max_runs: int,
    artifacts: tuple[Artifact, ...],
    previous: RunawayLoopError | None,
) -> RunawayLoopError:
    """The report of ``agent`` stopped in ``workflow`` past ``max_runs`` runs: ``previous``
    (the one error of that agent and workflow) with the inputs of one more run not started,
    or a new one (logged)."""
    inputs = (previous.artifacts if previous is not None else ()) + artifacts
    shown = ", ".join(f"{a.type} {a.id}" for a in inputs[:3])
    more = f" and {len(inputs) - 3} more" if len(inputs) > 3 else ""
    message = (
        f"agent {agent.name!r} ran {max_runs} times in workflow {workflow!r} and was stopped "
        "as a runaway loop; fix the loop or raise Flock(max_agent_runs=...); "
        f"{len(inputs)} run(s) not started, on {shown}{more} (all in .artifacts)"
    )
    if previous is not None:
        previous.args = (message,)
        previous.artifacts = inputs
        return previous
    error = RunawayLoopError(message, agent=agent.name, artifacts=inputs)
    log.error("%s", error)
    return error


class RunTask(asyncio.Task[None]):
    """An agent run's task. It tells a cancellation by code in its running event loop
    (``cancelled_live``: reported as the run's failure) from one at the loop's end
    (``asyncio.run`` cancels what is left between running the loop; a loop closed or
    stopped by hand), after which the run is run again."""

    cancelled_live = False

    def cancel(self, msg: object = None) -> bool:
        loop = self.get_loop()
        self.cancelled_live = loop.is_running() and not loop.is_closed()
        return super().cancel(msg)
