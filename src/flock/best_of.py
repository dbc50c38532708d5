"""Best of n: an agent's engines run n times at once, and the best candidate is published.

``.best_of(n, score=fn)`` makes each run of an agent evaluate ``n`` candidates concurrently:
the engine phase (every engine of the agent, in order, on the inputs as ``on_pre_evaluate``
left them) runs ``n`` times, ``fn(outputs)`` scores each candidate's outputs (the list of its
output models, possibly empty), and the highest-scoring candidate goes on through
``on_post_evaluate`` and publishing like the outputs of any run. A tie goes to the first
candidate. A candidate whose engines fail is logged and recorded on its span, and the others
compete without it; when every candidate fails, the run fails with the first one's error.
A score function that raises fails the run; one that returns something other than a real
number (or NaN) fails it with :class:`ConfigurationError` (not retried).

Each candidate gets its own shallow copy of ``ctx.state``; the chosen one's becomes the run's.

Tracing: one ``BestOf.candidate`` span per candidate, under ``Agent.execute``, with the
candidate's engine spans inside it (attributes ``flock.best_of.index``, ``.score``,
``.chosen``); ``Agent.execute`` carries ``flock.best_of.n``, ``.chosen_index`` and ``.failed``.

Example:
    >>> from pydantic import BaseModel
    >>> from flock import Flock, flock_type
    >>> @flock_type
    ... class Brief(BaseModel):
    ...     topic: str
    >>> @flock_type
    ... class Draft(BaseModel):
    ...     text: str
    >>> writer = (
    ...     Flock().agent("writer").consumes(Brief).publishes(Draft)
    ...     .best_of(3, score=lambda outputs: len(outputs[0].text))
    ... )
    >>> writer.agent.best_of.n
    3
"""

from __future__ import annotations

import asyncio
import dataclasses
import decimal
import inspect
import logging
import math
import numbers
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import Span, StatusCode, set_span_in_context

from flock._errors import describe, fatal
from flock.exceptions import ConfigurationError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from flock.agent import Agent
    from flock.artifacts import Artifact
    from flock.components import RunContext
    from flock.tracing._instrument import Instrument

__all__ = ["BestOf", "ScoreFunction", "best_of_spec", "evaluate_best_of"]

log = logging.getLogger("flock")

ScoreFunction = Callable[[list[Any]], float] | Callable[[list[Any]], Awaitable[float]]
"""Scores one candidate: gets its outputs (a list of the agent's output models), returns a
number (higher is better); ``async def`` works too."""

EXAMPLE = ".best_of(3, score=lambda outputs: len(outputs[0].text))"
MAX_CANDIDATES = 100
"""The most candidates ``best_of`` takes: they all run at once (one engine call each), and a
run holds every candidate's outputs until it chooses."""


@dataclass(frozen=True, slots=True)
class BestOf:
    """An agent's ``.best_of(n, score=...)``: ``n`` (≥ 2) candidates per run."""

    n: int
    score: ScoreFunction


def best_of_spec(agent: str, n: object, score: object) -> BestOf | None:
    """Check ``.best_of(n, score=...)``; ``None`` when ``n`` is 1 (off)."""
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_CANDIDATES:
        raise ConfigurationError(
            f"agent {agent!r}: best_of(n) needs an int from 1 to {MAX_CANDIDATES} (the "
            f"candidates per run, all run at once; 1 turns it off), got {n!r}"
        )
    if score is None:
        if n == 1:
            return None
        raise ConfigurationError(
            f"agent {agent!r}: best_of({n}) needs score=, a function of a candidate's outputs "
            f"(the list of its output models) returning a number, higher is better, e.g. "
            f"{EXAMPLE}"
        )
    if not callable(score) or inspect.isclass(score):
        raise ConfigurationError(
            f"agent {agent!r}: best_of(score=...) takes a function of a candidate's outputs "
            f"(the list of its output models) returning a number, got {score!r}; e.g. {EXAMPLE}"
        )
    return None if n == 1 else BestOf(n, score)


@dataclass(slots=True)
class _Candidate:
    index: int
    span: Span | None = None
    end_ns: int | None = None
    outputs: list[BaseModel] = dataclasses.field(default_factory=list)
    state: dict[str, Any] = dataclasses.field(default_factory=dict)
    score: Any = None
    """Its score (any real number), once scored."""
    error: BaseException | None = None
    """What its engines raised (the others compete without it)."""
    score_error: BaseException | None = None
    """What scoring it raised (fails the run)."""


async def evaluate_best_of(
    spec: BestOf, agent: Agent, ctx: RunContext, inputs: list[Artifact], instrument: Instrument
) -> list[BaseModel]:
    """Run the engine phase ``spec.n`` times at once; return the best candidate's outputs
    (and make its ``ctx.state`` the run's)."""
    candidates = [_Candidate(i) for i in range(spec.n)]
    execute = trace.get_current_span() if instrument.enabled else None  # Agent.execute
    if execute is not None:
        execute.set_attribute("flock.best_of.n", spec.n)
    chosen_index = -1
    try:
        try:
            async with asyncio.TaskGroup() as group:
                for candidate in candidates:
                    group.create_task(_candidate(spec, agent, ctx, inputs, instrument, candidate))
        except BaseExceptionGroup as group:  # raised by candidates while being cancelled
            first, *others = group.exceptions
            for other in others:
                first.add_note(f"another best_of candidate raised {type(other).__name__}: {other}")
            raise first from None  # as the run would raise it without best_of
        chosen = _choose(agent, candidates)
        chosen_index = chosen.index
    finally:  # also when the run is cancelled (its timeout): every candidate span ends
        for candidate in candidates:
            if candidate.span is not None:
                candidate.span.set_attribute(
                    "flock.best_of.chosen", candidate.index == chosen_index
                )
                candidate.span.end(end_time=candidate.end_ns)
        if execute is not None:
            failed = sum(c.error is not None or c.score_error is not None for c in candidates)
            execute.set_attribute("flock.best_of.failed", failed)
    if execute is not None:
        execute.set_attribute("flock.best_of.chosen_index", chosen.index)
    ctx.state.clear()
    ctx.state.update(chosen.state)
    return chosen.outputs


async def _candidate(
    spec: BestOf,
    agent: Agent,
    ctx: RunContext,
    inputs: list[Artifact],
    instrument: Instrument,
    candidate: _Candidate,
) -> None:
    """One candidate, in a task of its own: its engines (as ``Agent._steps`` runs them),
    then its score. :func:`evaluate_best_of` ends its span once the choice is made, at the
    time the candidate finished."""
    own = dataclasses.replace(ctx, state=dict(ctx.state))
    span = token = None
    if instrument.tracer is not None:
        span = candidate.span = instrument.tracer.start_span(
            "BestOf.candidate",
            attributes={"flock.best_of.index": candidate.index, "gen_ai.agent.name": agent.name},
        )
        token = context_api.attach(set_span_in_context(span))
    scoring = False
    try:
        candidate.outputs.extend(await agent.evaluate_engines(own, inputs, instrument))
        candidate.state = own.state
        scoring = True
        candidate.score = await _score(spec, agent, candidate)
        if span is not None:
            span.set_attribute("flock.best_of.score", _as_float(candidate.score))
    except BaseException as error:
        task = asyncio.current_task()
        interrupted = (fatal(error) and not isinstance(error, asyncio.CancelledError)) or bool(
            task is not None and task.cancelling()
        )  # the run is being cancelled (its timeout, a shutdown), or the process is stopping
        if span is not None:
            span.record_exception(error)
            status = f"{type(error).__name__}: {error}"
            span.set_status(StatusCode.ERROR, f"interrupted: {status}" if interrupted else status)
        if interrupted:
            raise
        # A CancelledError the agent's own code raised, or another BaseException that is not
        # fatal (pytest's Failed, say), fails the candidate like any error.
        if scoring:
            candidate.score_error = error
        else:
            candidate.error = error
    finally:
        candidate.end_ns = time.time_ns()
        if token is not None:
            context_api.detach(token)


async def _score(spec: BestOf, agent: Agent, candidate: _Candidate) -> Any:
    """The candidate's score: any real number (``int``, ``float``, ``Decimal``, ``Fraction``,
    ``bool``), compared as it is (a huge ``int`` too). A score function that returns something
    else is a configuration error (not retried)."""
    where = f"agent {agent.name!r}: its best_of score function"
    try:
        value: Any = spec.score(candidate.outputs)
        if inspect.isawaitable(value):
            value = await value
    except BaseException as error:
        if fatal(error):
            raise
        raise RuntimeError(
            f"{where} raised on candidate {candidate.index}: {describe(error)}"
        ) from error
    if not isinstance(value, numbers.Real | decimal.Decimal):
        raise ConfigurationError(
            f"{where} returned {type(value).__name__} ({value!r:.100}) for candidate "
            f"{candidate.index}; it must return a number (higher is better)"
        )
    if value != value:  # NaN (float or Decimal)
        raise ConfigurationError(
            f"{where} returned NaN for candidate {candidate.index}; it must return a number "
            "that compares (higher is better)"
        )
    return value


def _as_float(score: Any) -> float:
    """A score as a span attribute (an ``int`` beyond float range: ±inf)."""
    try:
        return float(score)
    except OverflowError:
        return math.inf if score > 0 else -math.inf


def _choose(agent: Agent, candidates: list[_Candidate]) -> _Candidate:
    """The highest-scoring candidate (the first of equals); raise when scoring failed or
    every candidate failed."""
    scored = [(c.score, c) for c in candidates if c.score is not None]
    failed = [(c.index, c.error) for c in candidates if c.error is not None]
    score_errors = [c.score_error for c in candidates if c.score_error is not None]
    if score_errors:
        for index, error in failed:  # reported, not hidden behind the scoring error
            score_errors[0].add_note(
                f"best_of candidate {index} of agent {agent.name!r} failed too: "
                f"{type(error).__name__}: {error}"
            )
        raise score_errors[0]
    if not scored:
        (_, first), *others = failed
        for index, error in others:
            first.add_note(
                f"best_of candidate {index} of agent {agent.name!r} failed too: "
                f"{type(error).__name__}: {error}"
            )
        raise first
    for index, error in failed:
        log.warning(
            "agent %r: best_of candidate %d of %d failed, the others compete without it: %s: %s",
            agent.name,
            index,
            len(candidates),
            type(error).__name__,
            error,
            exc_info=error,
        )
    return max(scored, key=lambda pair: pair[0])[1]  # max() keeps the first of equals
