"""Agents that raise, hang past their timeout or return the wrong type; runaway loops.

Every failure is on its span (ERROR + an exception event), reported to the caller by
``run_until_idle`` (AgentFailures), retried when configured, and the other agents go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

from flock import AgentFailures, Flock, RunawayLoopError
from flock.registry import registry
from flock.testing import SpanCapture
from tests.models import Idea, Note, Pizza, Review

PIZZA = registry.name_of(Pizza)


async def raises(idea: Idea) -> Pizza:
    raise ValueError(f"cannot cook {idea.topic}")


async def hangs(idea: Idea) -> Pizza:
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


def hangs_in_a_thread(idea: Idea) -> Pizza:
    time.sleep(1.0)  # a blocking call: the run is abandoned at its timeout
    return Pizza(name="too late")


async def wrong_type(idea: Idea) -> Any:
    return Review(score=1)


async def wrong_dict(idea: Idea) -> Any:
    return {"nom": "no name field"}


@pytest.mark.parametrize(
    ("engine", "cause", "fragment"),
    [
        (raises, ValueError, "cannot cook"),
        (hangs, TimeoutError, "TimeoutError"),
        (hangs_in_a_thread, TimeoutError, "TimeoutError"),
        (wrong_type, TypeError, "returned Review"),
        (wrong_dict, TypeError, "returned a dict that is not a valid Pizza"),
    ],
)
async def test_failing_agent_is_traced_reported_retried_and_isolated(
    capture: SpanCapture, engine: Callable[[Idea], Any], cause: type, fragment: str
) -> None:
    flock = Flock(tracer_provider=capture.provider)
    flock.agent("bad").consumes(Idea).publishes(Pizza).with_engines(engine).retries(
        1, backoff=0
    ).timeout(0.2)
    flock.agent("good").consumes(Idea).publishes(Pizza).with_engines(
        lambda idea: Pizza(name=idea.topic)
    )
    with pytest.raises(AgentFailures) as info:
        async with flock.traced_run("faulty"):
            sent = await flock.publish([Idea(topic="a"), Idea(topic="b")])
            await flock.run_until_idle(timeout=30)
    # reported to the caller: one failure per input, after both attempts
    failures = sorted(info.value.failures, key=lambda f: f.artifacts[0].payload.topic)
    assert [(f.agent, f.attempts, f.artifacts) for f in failures] == [
        ("bad", 2, (sent[0],)),
        ("bad", 2, (sent[1],)),
    ]
    for failure in failures:
        assert isinstance(failure.__cause__, cause)
        assert fragment in str(failure) and "after 2 attempts" in str(failure)
    assert "1 agent run" not in str(info.value) and "bad" in str(info.value)
    # the other agent went on
    pizzas = await flock.store.query(type=PIZZA)
    assert sorted(p.payload.name for p in pizzas) == ["a", "b"]
    assert {p.produced_by for p in pizzas} == {"good"}
    # on the spans: every attempt ERROR with the exception event
    runs = [s for s in capture.named("Agent.execute") if s.attributes["flock.agent.name"] == "bad"]
    assert sorted(s.attributes["flock.attempt"] for s in runs) == [1, 1, 2, 2]
    for span in runs:
        assert span.status.status_code is StatusCode.ERROR
        (event,) = [e for e in span.events if e.name == "exception"]
        assert event.attributes["exception.type"] == cause.__name__
    good = [s for s in capture.named("Agent.execute") if s.attributes["flock.agent.name"] == "good"]
    assert [s.status.status_code for s in good] == [StatusCode.UNSET] * 2
    (root,) = capture.named("faulty")
    assert root.status.status_code is StatusCode.ERROR
    assert root.events[0].attributes["exception.type"] == "flock.exceptions.AgentFailures"
    # and the flock is usable again afterwards
    await flock.publish(Pizza(name="leftover"))
    await flock.run_until_idle(timeout=30)


async def test_run_until_idle_timeout_never_hangs_on_an_agent_that_ignores_cancellation(
    capture: SpanCapture,
) -> None:
    flock = Flock(tracer_provider=capture.provider)
    release = asyncio.Event()

    async def stubborn(idea: Idea) -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # swallows its timeout's cancellation

    flock.agent("stubborn").consumes(Idea).with_engines(stubborn).timeout(0.05)
    flock.agent("good").consumes(Idea).publishes(Pizza).with_engines(
        lambda idea: Pizza(name=idea.topic)
    )
    await flock.publish(Idea(topic="x"))
    with pytest.raises(TimeoutError, match=r"1 agent run\(s\) still going \(flock:stubborn\)"):
        await flock.run_until_idle(timeout=0.5)
    assert [p.payload.name for p in await flock.store.query(type=PIZZA)] == ["x"]
    release.set()
    # When it finally returns, the run is reported as the timeout it was, not as a success.
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=30)
    (failure,) = info.value.failures
    assert isinstance(failure.__cause__, TimeoutError)


async def test_runaway_ping_pong_loop_names_the_agent(capture: SpanCapture) -> None:
    flock = Flock(max_agent_runs=10, tracer_provider=capture.provider)
    flock.agent("ping").consumes(Note).publishes(Review).with_engines(lambda n: Review(score=1))
    flock.agent("pong").consumes(Review).publishes(Note).with_engines(lambda r: Note(text="again"))
    with pytest.raises(AgentFailures) as info:
        async with flock.traced_run("loop"):
            await flock.publish(Note(text="start"))
            await flock.run_until_idle(timeout=30)
    (failure,) = info.value.failures
    assert isinstance(failure, RunawayLoopError)
    assert failure.agent == "ping"
    assert str(failure).startswith("agent 'ping' ran 10 times in workflow")
    assert "max_agent_runs" in str(failure)
    assert failure.artifacts[0].produced_by == "pong"  # the input that would have been run 11th
    assert len(await flock.store.query(produced_by="ping")) == 10
    assert len(await flock.store.query(produced_by="pong")) == 10
    (root,) = capture.named("loop")
    assert root.status.status_code is StatusCode.ERROR


async def test_runaway_fan_out_is_bounded_too() -> None:
    flock = Flock(max_agent_runs=50)
    flock.agent("doubler").consumes(Note).publishes(Note).prevent_self_trigger(False).with_engines(
        lambda n: [Note(text=n.text + "a"), Note(text=n.text + "b")]
    )
    await flock.publish(Note(text=""))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=30)
    (failure,) = info.value.failures  # reported once, not once per extra artifact
    assert failure.agent == "doubler" and "ran 50 times" in str(failure)
    assert len(await flock.store.query(produced_by="doubler")) == 100


async def test_an_agent_that_swallows_its_timeout_does_not_publish_late(
    capture: SpanCapture,
) -> None:
    flock = Flock(tracer_provider=capture.provider)

    async def stubborn(idea: Idea) -> Pizza:
        with contextlib.suppress(asyncio.CancelledError):  # swallows its timeout's cancellation
            await asyncio.sleep(10)
        return Pizza(name="late")  # and answers anyway

    flock.agent("stubborn").consumes(Idea).publishes(Pizza).with_engines(stubborn).timeout(0.05)
    await flock.publish(Idea(topic="x"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=30)
    (failure,) = info.value.failures
    assert isinstance(failure.__cause__, TimeoutError)
    assert await flock.store.query(type=PIZZA) == []
    (span,) = capture.named("Agent.execute")
    assert span.status.status_code is StatusCode.ERROR
