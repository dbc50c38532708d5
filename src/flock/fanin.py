"""Fan-in consumption: one agent run over several artifacts.

``.consumes(A, batch=10, batch_timeout=2.0)`` gives each run up to ten artifacts of ``A``
(in publish order); ``.consumes(A, B, join=True)`` gives each run one ``A`` and one ``B`` with
the same key (an AND gate). Plain ``.consumes(A, B)`` keeps its meaning: one run per
artifact of ``A`` or ``B``.

What the orchestrator does with the artifacts of a fan-in agent, in order: self-trigger
prevention and ``where=`` / ``from_agents=`` / ``tags=`` decide whether the agent takes an
artifact at all (exactly as for other agents); the group key is computed (``batch_by=`` /
``join_by=``, by default the correlation id); the artifact waits in its group here, in
memory, until its run is complete; the run is then counted against ``max_agent_runs`` and
started like any other (``max_concurrency``, retries, ``.timeout()``, failures).

Batches. A batch runs as soon as it holds ``batch`` artifacts; a partial batch runs when
``batch_timeout`` seconds have passed since its first artifact arrived, and in any case once
``run_until_idle()`` finds nothing else pending or running: it then starts every partial
batch (whatever their timeouts) and waits for those runs too, so it never returns with a
batched artifact unprocessed and never waits for a timeout. Without ``run_until_idle`` and
without ``batch_timeout`` a partial batch waits for more artifacts.

Joins. Per key, each type has a first-in first-out queue; an artifact whose key has an
artifact of every other type waiting completes a run with the oldest of each. With
``join_within`` an artifact that found no partner within that many seconds of arriving is
dropped from the waiting set (one warning; it stays on the blackboard). Unmatched artifacts
do not keep ``run_until_idle`` waiting: a later artifact can still complete them.

A fan-in agent consumes through that one ``consumes(...)`` declaration, and needs a
single-process store: fan-in groups live in this process's memory.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import numbers
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from flock.engines.function import FunctionEngine
from flock.exceptions import ConfigurationError, PayloadValidationError
from flock.subscription import FanIn, KeyFunction

if TYPE_CHECKING:
    from flock.agent import Agent
    from flock.artifacts import Artifact
    from flock.orchestrator import Flock
    from flock.tracing._instrument import AttributeValue

__all__ = ["BY_CORRELATION_ID", "FanInBuffers", "fanin_spec", "finite_seconds"]

log = logging.getLogger("flock")

BY_CORRELATION_ID: Final = "correlation_id"
"""``batch_by=`` / ``join_by=`` (the default of joins): group artifacts by their correlation
id."""
KEY_ATTRIBUTE_CHARS = 256

Attributes = dict[str, "AttributeValue"]


# Declaration ------------------------------------------------------------------------------


def fanin_spec(
    agent: str,
    types: Sequence[str],
    *,
    batch: int | None,
    batch_timeout: float | timedelta | None,
    batch_by: KeyFunction | str | None,
    join: bool,
    join_by: KeyFunction | str | None,
    join_within: float | timedelta | None,
) -> FanIn | None:
    """The :class:`FanIn` of a ``consumes(...)`` call (``None`` for a plain one), or a
    :class:`ConfigurationError` saying how to fix the arguments."""

    def fail(message: str) -> ConfigurationError:
        return ConfigurationError(f"agent {agent!r}: {message}")

    if not isinstance(join, bool):
        raise fail(f"join= takes True or False, got {join!r}")
    if batch is not None and join:
        raise fail(
            "batch= and join=True cannot be combined; join in one agent and batch its "
            "outputs in another (.consumes(Joined, batch=N))"
        )
    if batch is None:
        for name, value in (("batch_timeout", batch_timeout), ("batch_by", batch_by)):
            if value is not None:
                raise fail(
                    f"{name}= only applies to batches; add batch=N (the most artifacts "
                    f"per run) or drop {name}="
                )
    if not join:
        for name, value, default in (
            ("join_by", join_by, BY_CORRELATION_ID),
            ("join_within", join_within, None),
        ):
            if value != default:
                raise fail(f"{name}= only applies to joins; add join=True or drop {name}=")
    if batch is not None:
        if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
            raise fail(f"batch= takes the most artifacts per run, an int ≥ 1, got {batch!r}")
        return FanIn(
            types=tuple(dict.fromkeys(types)),
            batch=batch,
            timeout=_seconds(batch_timeout, "batch_timeout", fail),
            by=_key_function(batch_by, "batch_by", fail),
        )
    if not join:
        return None
    if len(types) < 2:
        raise fail(
            "join=True needs two or more types, e.g. .consumes(Order, Payment, join=True); "
            "to give one run several artifacts of one type use batch=N"
        )
    if len(set(types)) < len(types):
        twice = next(t for t in types if types.count(t) > 1)
        raise fail(
            f"join=True takes each type once ({twice} is given twice); to give one run "
            "several artifacts of one type use batch=N"
        )
    return FanIn(
        types=tuple(types),
        by=_key_function(join_by, "join_by", fail),
        within=_seconds(join_within, "join_within", fail),
    )


def finite_seconds(value: object, *, zero: bool = False) -> float | None:
    """``value`` (a real number or a ``timedelta``) in seconds, as a float, or ``None`` when
    it is not a finite number > 0 (≥ 0 with ``zero=True``): NaN, infinities, negatives,
    bools, strings and anything else are refused. The check of every duration argument
    (``batch_timeout=``, ``join_within=``, ``.timeout()``, ``.retries(backoff=)``)."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except (OverflowError, ValueError):  # an int too large for a float
            return None
    else:
        return None
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        return None
    return seconds


def _seconds(
    value: float | timedelta | None, name: str, fail: Callable[[str], Exception]
) -> float | None:
    if value is None:
        return None
    seconds = finite_seconds(value)
    if seconds is None:
        raise fail(f"{name}= takes seconds > 0 (a number or a timedelta), got {value!r}")
    return seconds


def _key_function(
    value: KeyFunction | str | None, name: str, fail: Callable[[str], Exception]
) -> KeyFunction | Literal["correlation_id"] | None:
    if value is None:
        return None
    if value == BY_CORRELATION_ID:
        return BY_CORRELATION_ID
    if isinstance(value, str) or not callable(value) or inspect.iscoroutinefunction(value):
        raise fail(
            f"{name}= takes a plain function of the payload returning the group key, None "
            f"(one group across all workflows) or {BY_CORRELATION_ID!r} (one per workflow), got "
            f"{value!r}" + (" (an async function)" if callable(value) else "")
        )
    return value


def bind_engines(agent: Agent) -> None:
    """Make the agent's plain-function engines take what its runs consume: the payload, a
    list of payloads (a batch) or one argument per type (a join). A ``FunctionEngine``
    built by hand on a fan-in agent must take a list (``batch=True``): given only the first
    input, it would silently ignore the others."""
    fanin = agent.fanin
    for engine in agent.engines:
        if not isinstance(engine, FunctionEngine):
            continue
        fn = next((f for e, f in agent.functions if e is engine), None)
        if fn is None:
            if fanin is not None and not engine.batch:
                raise ConfigurationError(
                    f"agent {agent.name!r}: FunctionEngine({engine.name}) would see only the "
                    f"first input of each {fanin.kind}; pass the function itself to "
                    "with_engines(), or FunctionEngine(fn, batch=True) to get a list of the "
                    "payloads"
                )
            continue
        engine.batch = fanin is not None
        engine.fn = fn if fanin is None or fanin.batch else _spread(fn, engine.is_async)


def _spread(fn: Callable[..., Any], is_async: bool) -> Callable[[list[Any]], Any]:
    """``fn(*payloads)`` for a list of payloads (a join's function takes one per type)."""
    if is_async:

        async def spread_async(payloads: list[Any]) -> Any:
            return await fn(*payloads)

        return spread_async

    def spread(payloads: list[Any]) -> Any:
        return fn(*payloads)

    return spread


def invoke_plan(agent: Agent, types: Sequence[str]) -> tuple[list[int], Attributes | None]:
    """For ``Flock.invoke``: the order of the given inputs' types in the agent's run (or a
    :class:`PayloadValidationError`), and the run's span attributes. A batch agent takes
    1 to ``batch`` inputs, a join agent exactly one of each of its types (in any order)."""
    fanin = agent.fanin
    if fanin is None:
        if len(types) != 1:
            raise PayloadValidationError(
                f"agent {agent.name!r} consumes one artifact per run, got {len(types)}; "
                "invoke it once per input"
            )
        if types[0] not in agent.consumed_types:
            raise PayloadValidationError(
                f"agent {agent.name!r} consumes {', '.join(sorted(agent.consumed_types))}, "
                f"not {types[0]}"
            )
        return [0], None
    wrong = sorted({t for t in types if t not in fanin.types})
    if wrong:
        raise PayloadValidationError(
            f"agent {agent.name!r} consumes {', '.join(fanin.types)}, not {', '.join(wrong)}"
        )
    if fanin.batch:
        if not 1 <= len(types) <= fanin.batch:
            raise PayloadValidationError(
                f"agent {agent.name!r} takes batches of 1 to {fanin.batch} artifacts, got "
                f"{len(types)}"
            )
        return list(range(len(types))), _batch_attributes(len(types), "invoke")
    if sorted(types) != sorted(fanin.types):
        raise PayloadValidationError(
            f"agent {agent.name!r} joins one each of {', '.join(fanin.types)}; got "
            f"{', '.join(types) or 'nothing'}"
        )
    return [types.index(t) for t in fanin.types], {"flock.fanin": "join"}


def key_text(key: object) -> str:
    """A join key as a span attribute: its ``str()``, shortened; never raises (an int too
    long to print, a key whose ``str()`` raises: its type and hash instead)."""
    try:
        if isinstance(key, int) and key.bit_length() > 4 * KEY_ATTRIBUTE_CHARS:  # > 256 digits
            return f"<int of {key.bit_length()} bits, hash {hash(key):x}>"
        return str(key)[:KEY_ATTRIBUTE_CHARS]
    except Exception as error:
        return f"<{type(key).__name__} key: str() raised {type(error).__name__}>"


def _batch_attributes(size: int, trigger: str) -> Attributes:
    return {"flock.fanin": "batch", "flock.batch.size": size, "flock.batch.trigger": trigger}


# Waiting groups ---------------------------------------------------------------------------


class _Batch:
    __slots__ = ("agent", "artifacts", "loop", "started", "timer")

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.artifacts: list[Artifact] = []
        self.started = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None


class _Join:
    """One join agent's waiting artifacts: per key, a queue per type (first in, first
    matched), and with ``join_within`` their deadlines in arrival order."""

    def __init__(self, agent: Agent, fanin: FanIn) -> None:
        self.agent = agent
        self.fanin = fanin
        self.position = {t: i for i, t in enumerate(fanin.types)}
        self.groups: dict[Hashable, list[deque[Artifact]]] = {}
        self.deadlines: deque[tuple[float, Hashable, int, Artifact]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def offer(self, key: Hashable, artifact: Artifact) -> tuple[Artifact, ...] | None:
        """The run's inputs (in declaration order) if ``artifact`` completes one, else
        ``None`` (it waits)."""
        if self.deadlines:
            self.expire()  # an expired artifact is never matched, even if the timer is late
        position = self.position[artifact.type]
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = [deque() for _ in self.fanin.types]
        elif all(queue for i, queue in enumerate(group) if i != position):
            inputs = tuple(
                artifact if i == position else queue.popleft() for i, queue in enumerate(group)
            )
            if not any(group):
                del self.groups[key]
            return inputs
        group[position].append(artifact)
        if self.fanin.within is not None:
            self.deadlines.append((time.monotonic() + self.fanin.within, key, position, artifact))
            self.arm()
        return None

    def waiting(self) -> int:
        return sum(len(queue) for group in self.groups.values() for queue in group)

    def expire(self) -> None:
        """Drop the artifacts that waited longer than ``join_within`` (logged once)."""
        now = time.monotonic()
        dropped: list[Artifact] = []
        deadlines = self.deadlines
        while deadlines and deadlines[0][0] <= now:
            _, key, position, artifact = deadlines.popleft()
            group = self.groups.get(key)
            # Still waiting, it is the oldest of its queue; otherwise it was matched.
            if group is not None and group[position] and group[position][0] is artifact:
                group[position].popleft()
                dropped.append(artifact)
                if not any(group):
                    del self.groups[key]
        if dropped:
            log.warning(
                "agent %r: %d artifact(s) found no join partner within %gs and no longer "
                "wait (they stay on the blackboard): %s",
                self.agent.name,
                len(dropped),
                self.fanin.within,
                ", ".join(f"{a.type} {a.id}" for a in dropped),
            )

    def arm(self) -> None:
        loop = asyncio.get_running_loop()
        if (self.timer is not None and self.loop is loop) or not self.deadlines:
            return  # armed for an earlier deadline (deadlines only grow)
        delay = max(0.0, self.deadlines[0][0] - time.monotonic())
        self.timer, self.loop = loop.call_later(delay, self.fire), loop

    def fire(self) -> None:
        self.timer = None
        self.expire()
        if self.deadlines:
            self.arm()


class FanInBuffers:
    """The artifacts that wait for their fan-in run, in memory (one per :class:`Flock`)."""

    def __init__(self, flock: Flock) -> None:
        self.flock = flock
        self.batches: dict[tuple[str, Hashable], _Batch] = {}
        self.joins: dict[str, _Join] = {}

    def offer(self, agent: Agent, artifact: Artifact) -> None:
        """Let ``artifact`` (which the agent takes) wait for, or complete, its run."""
        fanin = agent.fanin
        assert fanin is not None
        by = fanin.by
        try:
            key: Hashable = (
                artifact.correlation_id
                if by == BY_CORRELATION_ID
                else None
                if by is None
                else by(artifact.payload)
            )
            hash(key)
        except Exception as exc:
            flock = self.flock
            why = f"its {fanin.kind}_by= raised, so the artifact waits for no {fanin.kind}"
            flock._failures.append(flock._error(agent, (artifact,), exc, attempts=1, why=why))
            return
        if fanin.batch:
            self._batch(agent, fanin, key, artifact)
            return
        join = self.joins.get(agent.name)
        if join is None or join.fanin is not fanin:
            join = self.joins[agent.name] = _Join(agent, fanin)
        inputs = join.offer(key, artifact)
        if inputs is not None:
            extra: Attributes = {"flock.fanin": "join", "flock.join.key": key_text(key)}
            try:
                self.flock._start(agent, inputs, extra)
            except Exception as exc:  # its partners no longer wait: reported with them
                failed = self.flock._error(agent, inputs, exc, attempts=1, why="it did not start")
                self.flock._failures.append(failed)

    def _batch(self, agent: Agent, fanin: FanIn, key: Hashable, artifact: Artifact) -> None:
        slot = (agent.name, key)
        batch = self.batches.get(slot)
        if batch is None:
            batch = self.batches[slot] = _Batch(agent)
        batch.artifacts.append(artifact)
        if len(batch.artifacts) >= fanin.batch:
            self._run(slot, "full")
        elif fanin.timeout is not None:
            loop = asyncio.get_running_loop()
            if batch.timer is None or batch.loop is not loop:  # (re-)armed on a new loop
                delay = max(0.0, batch.started + fanin.timeout - time.monotonic())
                batch.timer = loop.call_later(delay, self._timed_out, slot, batch)
                batch.loop = loop

    def _timed_out(self, slot: tuple[str, Hashable], batch: _Batch) -> None:
        if self.batches.get(slot) is batch:
            self._run(slot, "timeout")

    def _run(self, slot: tuple[str, Hashable], trigger: str) -> None:
        batch = self.batches.pop(slot)
        if batch.timer is not None:
            batch.timer.cancel()
        inputs = tuple(batch.artifacts)
        self.flock._start(batch.agent, inputs, _batch_attributes(len(inputs), trigger))

    def flush_idle(self) -> bool:
        """Start every partial batch (the flock is otherwise idle); whether there was any."""
        if not self.batches:
            return False
        for slot in list(self.batches):
            self._run(slot, "idle")
        return True

    def holds(self, workflow: str) -> bool:
        """Whether an artifact of ``workflow`` waits in a batch (it runs at idle or timeout)."""
        return any(a.correlation_id == workflow for b in self.batches.values() for a in b.artifacts)

    def waiting(self) -> int:
        """How many artifacts wait in joins for their partners."""
        return sum(join.waiting() for join in self.joins.values())
