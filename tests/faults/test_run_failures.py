"""Failures around publishing: after the outputs are out, in the error hooks, a stray
CancelledError, invoke() without publishing, and payloads with field aliases.

A run that already published its outputs is reported and not retried (a retry would publish
them twice); an error hook that fails does not hide the run's own error; nothing is lost.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel, Field

from flock import AgentFailures, Flock
from flock.agent import AgentBuilder
from flock.artifacts import Artifact
from flock.components import AgentComponent, OutputUtilityComponent, RunContext
from flock.exceptions import AgentRunError
from flock.registry import flock_type, registry
from tests.models import Idea, Pizza

PIZZA = registry.name_of(Pizza)


class FailingNotifier(AgentComponent):
    """Its on_post_publish raises the first ``failures`` times."""

    def __init__(self, failures: int = 1) -> None:
        self.failures = failures
        self.calls = 0

    async def on_post_publish(self, ctx: RunContext, artifact: Artifact) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("webhook down")


class SlowNotifier(AgentComponent):
    async def on_post_publish(self, ctx: RunContext, artifact: Artifact) -> None:
        await asyncio.sleep(5)


class FailingTerminate(AgentComponent):
    async def on_terminate(self, ctx: RunContext) -> None:
        raise RuntimeError("cleanup failed")


def chef(flock: Flock, component: AgentComponent, cook: Any = None) -> AgentBuilder:
    """An agent turning ideas into pizzas, with ``component``; chain retries/timeout on it."""
    return (
        flock.agent("chef")
        .consumes(Idea)
        .publishes(Pizza)
        .with_engines(cook or (lambda idea: Pizza(name=idea.topic)))
        .with_utilities(component)
        .without_output()
    )


async def the_failure(flock: Flock) -> tuple[AgentRunError, list[str]]:
    """Publish one idea (an eater consumes the pizzas) and return the run's one failure and
    what was eaten."""
    eaten: list[str] = []
    flock.agent("eater").consumes(Pizza).with_engines(
        lambda pizza: eaten.append(pizza.name)
    ).without_output()
    await flock.publish(Idea(topic="spicy"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=30)
    (failure,) = info.value.failures
    return failure, eaten


async def test_a_run_that_fails_after_publishing_is_reported_once_and_not_retried() -> None:
    flock, cooked = Flock(), []

    def cook(idea: Idea) -> Pizza:
        cooked.append(idea.topic)
        return Pizza(name=idea.topic)

    chef(flock, FailingNotifier(), cook).retries(2, backoff=0)
    failure, eaten = await the_failure(flock)
    assert isinstance(failure.__cause__, RuntimeError)
    assert "after publishing 1 output(s)" in str(failure) and "webhook down" in str(failure)
    assert [a.type for a in failure.published] == [PIZZA]
    # Published once, consumed once, and the engine was not run again.
    assert cooked == ["spicy"] and eaten == ["spicy"]
    assert len(await flock.store.query(type=PIZZA)) == 1
    # The inputs count as consumed: the outputs they produced are out.
    (idea,) = await flock.store.query(type=registry.name_of(Idea))
    assert await flock.store.consumers(idea.id) == ["chef"]


async def test_a_timeout_in_on_post_publish_reports_the_published_outputs() -> None:
    flock = Flock()
    chef(flock, SlowNotifier()).timeout(0.1)
    failure, eaten = await the_failure(flock)
    assert isinstance(failure.__cause__, TimeoutError)
    assert len(failure.published) == 1 and "stay published" in str(failure)
    assert eaten == ["spicy"]


async def test_a_failing_on_terminate_after_a_good_run_is_reported_not_retried() -> None:
    flock = Flock()
    chef(flock, FailingTerminate()).retries(1, backoff=0)
    failure, eaten = await the_failure(flock)
    assert "cleanup failed" in str(failure) and len(failure.published) == 1
    assert eaten == ["spicy"]


async def test_an_engine_that_raises_cancelled_error_itself_is_reported() -> None:
    flock = Flock()

    async def awaits_a_cancelled_future(idea: Idea) -> Pizza:
        future: asyncio.Future[Pizza] = asyncio.get_running_loop().create_future()
        future.cancel()  # e.g. a client library cancelled its own request
        return await future

    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(
        awaits_a_cancelled_future
    ).without_output()
    await flock.publish(Idea(topic="spicy"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=30)
    (failure,) = info.value.failures
    assert isinstance(failure.__cause__, RuntimeError)
    assert isinstance(failure.__cause__.__cause__, asyncio.CancelledError)
    assert "raised CancelledError although its run was not cancelled" in str(failure)


async def test_cancelling_a_run_still_cancels_it() -> None:
    flock = Flock()
    started = asyncio.Event()

    async def slow(idea: Idea) -> Pizza:
        started.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(slow).without_output()
    await flock.publish(Idea(topic="spicy"))
    await asyncio.wait_for(started.wait(), 10)
    (task,) = flock._tasks
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()  # a real cancellation is not turned into a failure


class Recorder(AgentComponent):
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    async def on_error(self, ctx: RunContext, error: BaseException) -> None:
        self.seen.append(f"on_error: {error}")

    async def on_terminate(self, ctx: RunContext) -> None:
        self.seen.append("on_terminate")


class BrokenErrorHook(AgentComponent):
    async def on_error(self, ctx: RunContext, error: BaseException) -> None:
        raise KeyError("bug in the error hook")

    async def on_terminate(self, ctx: RunContext) -> None:
        raise OSError("bug in the cleanup hook")


async def test_a_failing_error_hook_does_not_hide_the_runs_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flock, seen = Flock(), []

    def engine(idea: Idea) -> Pizza:
        raise ValueError("the real failure")

    (
        flock.agent("chef")
        .consumes(Idea)
        .publishes(Pizza)
        .with_engines(engine)
        .with_utilities(BrokenErrorHook(), Recorder(seen))
        .without_output()
    )
    await flock.publish(Idea(topic="spicy"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=30)
    (failure,) = info.value.failures
    cause = failure.__cause__
    assert isinstance(cause, ValueError) and str(cause) == "the real failure"
    assert "ValueError: the real failure" in str(failure)
    notes = getattr(cause, "__notes__", [])
    assert any(
        "BrokenErrorHook.on_error raised" in n and "bug in the error hook" in n for n in notes
    )
    assert any("BrokenErrorHook.on_terminate raised" in n for n in notes)
    # The other component's hooks still ran, and the hook failures were logged.
    assert seen == ["on_error: the real failure", "on_terminate"]
    assert "bug in the error hook" in caplog.text


async def test_invoke_without_publishing_leaves_the_blackboard_alone() -> None:
    flock = Flock()
    chef = (
        flock.agent("chef")
        .consumes(Idea)
        .publishes(Pizza)
        .with_engines(lambda idea: Pizza(name=idea.topic))
        .without_output()
    )
    idea = Idea(topic="spicy")
    (pizza,) = await flock.invoke(chef, idea)
    assert pizza.payload == Pizza(name="spicy")
    assert await flock.store.query() == []
    assert flock.store._consumers == {}  # type: ignore[attr-defined]  # no record of the input


@flock_type
class Ticket(BaseModel):
    ticket_id: str = Field(alias="ticketId")


async def test_models_with_field_aliases_are_published() -> None:
    flock = Flock()
    by_instance = await flock.publish(Ticket(ticketId="T-1"))
    by_dict = await flock.publish(
        {"type": registry.name_of(Ticket), "payload": {"ticketId": "T-2"}}
    )
    assert [by_instance.payload.ticket_id, by_dict.payload.ticket_id] == ["T-1", "T-2"]


class ForgetsToReturn(AgentComponent):
    async def on_post_evaluate(
        self, ctx: RunContext, inputs: list[Artifact], outputs: list[BaseModel]
    ) -> list[BaseModel]:
        outputs[0].name += " (checked)"  # edits in place and forgets `return outputs`
        return None  # type: ignore[return-value]


async def test_a_hook_that_returns_nothing_fails_the_run_instead_of_dropping_outputs() -> None:
    flock = Flock()
    chef(flock, ForgetsToReturn())
    await flock.publish(Idea(topic="spicy"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=30)
    (failure,) = info.value.failures
    assert "ForgetsToReturn.on_post_evaluate returned None" in str(failure)


class Censor(AgentComponent):
    async def on_post_evaluate(
        self, ctx: RunContext, inputs: list[Artifact], outputs: list[BaseModel]
    ) -> list[BaseModel]:
        return [Pizza(name="CENSORED")]


async def test_the_output_panel_shows_what_is_published(capsys: pytest.CaptureFixture[str]) -> None:
    flock = Flock()
    (
        flock.agent("chef[/v2]")  # not read as Rich markup
        .consumes(Idea)
        .publishes(Pizza)
        .with_engines(lambda idea: Pizza(name="secret draft"))
        .with_utilities(OutputUtilityComponent(enabled=True), Censor())
    )
    (pizza,) = await flock.invoke("chef[/v2]", Idea(topic="x"))
    out = capsys.readouterr().out
    assert pizza.payload.name == "CENSORED" and "CENSORED" in out
    assert "secret draft" not in out and "chef[/v2] → Pizza" in out


@pytest.mark.parametrize(
    ("returned", "fragment"),
    [
        ("a pizza", "returned str ('a pizza'), but it publishes Pizza; return instances"),
        (42, "returned int (42)"),
        ({"nom": 1}, "returned a dict that is not a valid Pizza"),
    ],
    ids=["str", "int", "bad dict"],
)
async def test_wrong_return_values_are_named_whole(returned: object, fragment: str) -> None:
    flock = Flock()
    chef = flock.agent("chef").consumes(Idea).publishes(Pizza).without_output()
    chef.with_engines(lambda idea: returned)
    with pytest.raises(AgentRunError) as info:
        await flock.invoke(chef, Idea(topic="x"))
    assert fragment in str(info.value)


async def test_a_sync_engine_returning_a_coroutine_says_so() -> None:
    async def cook(idea: Idea) -> Pizza:
        return Pizza(name=idea.topic)

    flock = Flock()
    chef = flock.agent("chef").consumes(Idea).publishes(Pizza).without_output()
    chef.with_engines(lambda idea: cook(idea))  # forgot to await
    with pytest.raises(AgentRunError, match="un-awaited coroutine"):
        await flock.invoke(chef, Idea(topic="x"))
