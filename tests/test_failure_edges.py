"""Failures at the edges of a run: after its publish (while its consumers are scheduled),
raised as something other than an ``Exception``, cancelled from outside, past
``max_agent_runs`` in a fan-out, and failures that cannot even be printed. Each is reported
once, against the run it belongs to; nothing is published twice or lost."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from flock import AgentComponent, AgentFailures, ConfigurationError, Flock, RunawayLoopError
from flock.agent import Agent
from flock.registry import flock_type
from flock.testing import SpanCapture
from flock.visibility import Visibility
from tests.models import Idea, Note, Pizza, Review


@flock_type
class Nested(BaseModel):
    child: Nested | None = None


@flock_type
class Order(BaseModel):
    key: int


@flock_type
class Payment(BaseModel):
    key: int


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class NotAnException(BaseException):
    """Like pytest's ``Failed``: a BaseException that is not a way of stopping the process."""


@dataclass(frozen=True, slots=True, repr=False)
class Broken(Visibility):
    kind: ClassVar[str] = "Broken"

    def allows(self, agent: Agent) -> bool:
        if agent.name == "picky":
            raise AttributeError("a bug in a custom visibility")
        return True

    def to_json(self) -> dict[str, Any]:
        return {"kind": "Broken"}


def failures_of(info: pytest.ExceptionInfo[AgentFailures]) -> list[tuple[str, str, int]]:
    return sorted(
        (f.agent, type(f.__cause__).__name__, len(f.published)) for f in info.value.failures
    )


def producer(flock: Flock, **publishes: Any) -> None:
    flock.agent("chef").consumes(Idea).publishes(Pizza, **publishes).with_engines(
        lambda idea: Pizza(name=idea.topic)
    ).retries(2, backoff=0)


def raises_unprintable(pizza: Pizza) -> bool:
    raise Unprintable()


@pytest.mark.parametrize("problem", ["visibility", "where"])
async def test_a_consumer_side_failure_is_the_consumers_and_the_others_still_run(
    problem: str,
) -> None:
    flock, seen = Flock(), []
    producer(flock, **({"visibility": Broken()} if problem == "visibility" else {}))
    where = raises_unprintable if problem == "where" else None
    flock.agent("picky").consumes(Pizza, where=where).with_engines(lambda p: None)
    flock.agent("eater").consumes(Pizza).with_engines(lambda p: seen.append(p.name))
    await flock.publish(Idea(topic="margherita"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=10)
    cause = "AttributeError" if problem == "visibility" else "Unprintable"
    assert failures_of(info) == [("picky", cause, 0)]  # not the producer's, not retried
    assert [p.name for p in await flock.store.payloads(Pizza)] == ["margherita"]
    assert seen == ["margherita"]


class UnprintableKey:
    def __init__(self, n: int) -> None:
        self.n = n

    def __hash__(self) -> int:
        return hash(self.n)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnprintableKey) and other.n == self.n

    def __str__(self) -> str:
        raise RuntimeError("no str for this key")


@pytest.mark.parametrize("key", [lambda p: 10**5000 + p.key, lambda p: UnprintableKey(p.key)])
async def test_a_join_key_that_cannot_be_printed_still_joins(key: Any) -> None:
    flock, shipped = Flock(), []
    flock.agent("ship").consumes(Order, Payment, join=True, join_by=key).with_engines(
        lambda order, payment: shipped.append(order.key)
    )
    flock.agent("bill").consumes(Idea).publishes(Order, Payment).with_engines(
        lambda idea: [Order(key=1), Payment(key=1)]
    ).retries(2, backoff=0)
    await flock.publish(Idea(topic="x"))
    await flock.publish([Order(key=2), Payment(key=2)])
    await flock.run_until_idle(timeout=10)
    assert sorted(shipped) == [1, 2]
    assert len(await flock.store.payloads(Order)) == 2  # the run's outputs once


@pytest.mark.parametrize("kind", ["sync", "async", "best_of"])
async def test_a_base_exception_from_an_engine_is_the_runs_failure(kind: str) -> None:
    def cook(idea: Idea) -> Pizza:
        if idea.topic == "bad":
            raise NotAnException("the engine gave up")
        return Pizza(name=idea.topic)

    async def cook_async(idea: Idea) -> Pizza:
        return cook(idea)

    flock = Flock()
    chef = flock.agent("chef").consumes(Idea).publishes(Pizza)
    chef.with_engines(cook if kind == "sync" else cook_async)
    if kind == "best_of":
        chef.best_of(2, score=lambda outputs: 1)
    await flock.publish([Idea(topic="good"), Idea(topic="bad")])
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=10)
    assert failures_of(info) == [("chef", "NotAnException", 0)]
    assert "the engine gave up" in str(info.value.failures[0])
    assert [p.name for p in await flock.store.payloads(Pizza)] == ["good"]


async def test_a_run_cancelled_from_outside_while_its_loop_runs_is_reported() -> None:
    flock = Flock()

    async def slow(idea: Idea) -> Pizza:
        await asyncio.sleep(5)
        return Pizza(name=idea.topic)

    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(slow)
    await flock.publish(Idea(topic="x"))
    await asyncio.sleep(0.05)
    for task in asyncio.all_tasks():
        if task.get_name() == "flock:chef":
            task.cancel()  # as a library cleaning up "its" tasks might
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=10)
    assert failures_of(info) == [("chef", "CancelledError", 0)]
    assert "cancelled" in str(info.value.failures[0])
    await flock.run_until_idle(timeout=10)  # reported once, not run again
    assert await flock.store.payloads(Pizza) == []


async def test_a_fan_out_past_max_agent_runs_reports_every_input_not_run() -> None:
    flock, done = Flock(max_agent_runs=10), []
    flock.agent("eater").consumes(Idea).with_engines(lambda i: done.append(i)).max_concurrency(50)
    sent = await flock.publish([Idea(topic=str(i)) for i in range(25)], correlation_id="job")
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=10)
    (failure,) = info.value.failures  # stopped once per workflow
    assert isinstance(failure, RunawayLoopError)
    assert failure.artifacts == tuple(sent[10:])
    assert "15 run(s) not started" in str(failure)
    assert len(done) == 10


async def test_a_deeply_nested_payload_runs_with_tracing_on(capture: SpanCapture) -> None:
    flock = Flock(tracer_provider=capture.provider)
    flock.agent("reader").consumes(Nested).publishes(Note).with_engines(lambda n: Note(text="ok"))
    deep = Nested()
    for _ in range(400):
        deep = Nested(child=deep)
    await flock.publish(deep)
    await flock.run_until_idle(timeout=30)
    assert [n.text for n in await flock.store.payloads(Note)] == ["ok"]
    (span,) = capture.named("Agent.execute")
    assert "unshowable" in str(span.attributes["input.value"])


async def test_an_agent_declared_while_runs_are_in_flight_fails_only_the_next_call() -> None:
    flock = Flock()

    async def slow(idea: Idea) -> Pizza:
        await asyncio.sleep(0.1)
        return Pizza(name=idea.topic)

    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(slow)
    flock.agent("critic").consumes(Pizza).publishes(Review).with_engines(lambda p: Review(score=1))
    await flock.publish([Idea(topic="a"), Idea(topic="b")])
    unfinished = flock.agent("later")  # not yet given consumes()
    await asyncio.sleep(0.3)  # meanwhile chef's runs end and critic's run
    with pytest.raises(ConfigurationError, match="'later' consumes nothing"):
        await flock.run_until_idle(timeout=10)
    unfinished.consumes(Review).with_engines(lambda r: None)
    await flock.run_until_idle(timeout=10)  # the runs in flight were not failed by it
    assert len(await flock.store.payloads(Review)) == 2


async def test_an_exception_whose_str_raises_stays_the_cause(capture: SpanCapture) -> None:
    flock = Flock(tracer_provider=capture.provider)

    def cook(idea: Idea) -> Pizza:
        raise Unprintable("x")

    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(cook)
    await flock.publish(Idea(topic="x"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=10)
    assert failures_of(info) == [("chef", "Unprintable", 0)]
    assert "Unprintable: <Unprintable: str() raised RuntimeError>" in str(info.value.failures[0])


async def test_a_hook_defined_without_async_is_named() -> None:
    class Forgetful(AgentComponent):
        def on_initialize(self, ctx: Any) -> None:  # type: ignore[override]
            pass

    flock = Flock()
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(
        lambda i: Pizza(name="p")
    ).with_utilities(Forgetful())
    await flock.publish(Idea(topic="x"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=10)
    message = str(info.value.failures[0])
    assert "Forgetful.on_initialize" in message and "async def" in message


async def test_a_timeout_says_how_long() -> None:
    async def slow(idea: Idea) -> Pizza:
        await asyncio.sleep(5)
        return Pizza(name="late")

    flock = Flock()
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(slow).timeout(0.05)
    await flock.publish(Idea(topic="x"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=10)
    (failure,) = info.value.failures
    assert isinstance(failure.__cause__, TimeoutError)
    assert "timeout of 0.05s" in str(failure)


async def test_run_until_idle_inside_a_run_raises_instead_of_waiting_for_itself() -> None:
    flock = Flock()

    async def waits(idea: Idea) -> Pizza:
        await flock.run_until_idle()
        return Pizza(name="never")

    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(waits)
    await flock.publish(Idea(topic="x"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=10)
    (failure,) = info.value.failures
    assert isinstance(failure.__cause__, ConfigurationError)
    assert "inside a run" in str(failure)


async def test_a_task_a_run_started_may_publish_and_wait_once_the_run_is_over() -> None:
    flock = Flock()
    background: list[asyncio.Task[None]] = []
    run_over = asyncio.Event()

    async def later() -> None:
        await run_over.wait()
        await flock.publish(Note(text="from the background"))
        await flock.run_until_idle()

    async def starts(idea: Idea) -> Pizza:
        background.append(asyncio.create_task(later()))
        return Pizza(name=idea.topic)

    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(starts)
    await flock.publish(Idea(topic="x"))
    await flock.run_until_idle()
    run_over.set()
    await asyncio.wait_for(background[0], 10)  # no ConfigurationError, no deadlock
    assert [n.text for n in await flock.store.payloads(Note)] == ["from the background"]


INTERRUPTED = """
import asyncio, sys
from pydantic import BaseModel
from flock.orchestrator import Flock
from flock.registry import flock_type

@flock_type
class Idea(BaseModel):
    topic: str

@flock_type
class Pizza(BaseModel):
    name: str

calls = []

def cook(idea):  # Ctrl-C (or sys.exit()) in its first call, fine in its second
    calls.append(idea.topic)
    if len(calls) == 1:
        raise {stop}
    return Pizza(name=idea.topic)

flock = Flock()
flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(cook)

async def first():
    await flock.publish(Idea(topic="margherita"))
    await flock.run_until_idle()

try:
    asyncio.run(first())
except {caught}:
    print("stopped")
asyncio.run(flock.run_until_idle())
print("pizzas", [p.name for p in asyncio.run(flock.store.payloads(Pizza))], "calls", len(calls))
"""


@pytest.mark.parametrize(
    ("stop", "caught"),
    [("KeyboardInterrupt", "KeyboardInterrupt"), ("SystemExit(3)", "SystemExit")],
)
def test_a_run_stopped_by_ctrl_c_or_sys_exit_is_run_again_not_lost(
    tmp_path: Path, stop: str, caught: str
) -> None:
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED.replace("{stop}", stop).replace("{caught}", caught))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOCK_", "OTEL_"))}
    env["FLOCK_TRACE_FILE"] = "false"
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "stopped" in result.stdout
    assert "pizzas ['margherita'] calls 2" in result.stdout
    assert "internal error" not in result.stderr
