"""A Flock used from more than one event loop (one ``asyncio.run`` to publish, another to
wait, as scripts do): a run its loop ended before it finished is run again by the next
``run_until_idle``, or reported when it had published already; never lost or waited for."""

from __future__ import annotations

import asyncio

import pytest

from flock import Flock
from flock.agent import AgentBuilder
from flock.components import AgentComponent, RunContext
from flock.exceptions import AgentFailures
from tests.models import Idea, Pizza


def chef(flock: Flock, calls: list[str], *, wait: float = 0.05) -> AgentBuilder:
    async def cook(idea: Idea) -> Pizza:
        calls.append(idea.topic)
        await asyncio.sleep(wait)
        return Pizza(name=idea.topic.upper())

    return flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(cook)


async def pizzas(flock: Flock) -> list[str]:
    return [pizza.name for pizza in await flock.store.payloads(Pizza)]


def test_a_run_cancelled_as_its_loop_ended_runs_again_in_the_next_one() -> None:
    flock, calls = Flock(), []
    chef(flock, calls)
    asyncio.run(flock.publish(Idea(topic="hi")))  # asyncio.run cancels the run it started
    asyncio.run(flock.run_until_idle(timeout=10))
    assert asyncio.run(pizzas(flock)) == ["HI"]
    assert calls == ["hi", "hi"]  # started, cut off, run again


def test_a_run_of_a_loop_closed_by_hand_is_not_waited_for_but_run_again() -> None:
    flock, calls = Flock(), []
    chef(flock, calls)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(flock.publish(Idea(topic="hi")))
    loop.close()  # the run is left pending for ever
    asyncio.run(flock.run_until_idle(timeout=10))  # ended only by the timeout before
    assert asyncio.run(pizzas(flock)) == ["HI"]


def test_a_run_cut_off_after_publishing_is_reported_not_run_twice() -> None:
    flock, calls = Flock(), []

    class SlowAfterPublishing(AgentComponent):
        async def on_post_publish(self, ctx: RunContext, artifact: object) -> None:
            await asyncio.sleep(10)

    chef(flock, calls, wait=0).with_utilities(SlowAfterPublishing())

    async def publish_and_leave() -> None:
        await flock.publish(Idea(topic="hi"))
        await asyncio.sleep(0.1)  # the pizza is published, the run still going

    asyncio.run(publish_and_leave())
    with pytest.raises(AgentFailures) as info:
        asyncio.run(flock.run_until_idle(timeout=10))
    (failure,) = info.value.failures
    assert "interrupted after publishing" in str(failure)
    assert [a.payload.name for a in failure.published] == ["HI"]
    assert asyncio.run(pizzas(flock)) == ["HI"]
    assert calls == ["hi"]


def test_a_run_of_a_loop_stopped_but_not_closed_is_run_again() -> None:
    flock, calls = Flock(), []
    chef(flock, calls)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(flock.publish(Idea(topic="hi")))  # the loop stops, its run waits
    asyncio.run(flock.run_until_idle(timeout=10))  # it waited for it until the timeout
    assert asyncio.run(pizzas(flock)) == ["HI"]
    loop.run_until_complete(asyncio.sleep(0.1))  # the old loop again: its run was cancelled
    loop.close()
    assert asyncio.run(pizzas(flock)) == ["HI"]  # not published twice


def test_an_interrupted_run_keeps_its_workflow_counted_against_max_agent_runs() -> None:
    flock = Flock(max_agent_runs=3)

    async def again(idea: Idea) -> Idea:
        await asyncio.sleep(0.02)
        return Idea(topic=idea.topic + "!")

    flock.agent("loop").consumes(Idea).publishes(Idea).with_engines(again).prevent_self_trigger(
        False
    )

    async def start() -> None:
        await flock.publish(Idea(topic="x"))
        await asyncio.sleep(0.05)  # the loop is under way when this event loop ends

    asyncio.run(start())
    with pytest.raises(AgentFailures) as info:  # its count was reset, the loop went on
        asyncio.run(flock.run_until_idle(timeout=10))
    assert "runaway loop" in str(info.value.exceptions[0])
    assert len(asyncio.run(flock.store.payloads(Idea))) == 4  # the input and 3 runs
