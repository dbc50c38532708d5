"""Fan-in consumption, part 1: declaring it, and batches (``batch=``) — one run over several
artifacts, with the scheduler's guarantees of single-input runs. Joins, tracing, invoke()
and DSPy are in test_fanin_join.py."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from flock import (
    AgentFailures,
    ConfigurationError,
    Flock,
    RunawayLoopError,
)
from flock.engines.function import FunctionEngine
from flock.registry import registry
from flock.testing import SpanCapture
from tests.models import Idea, Note, Review

IDEA = registry.name_of(Idea)
NOTE = registry.name_of(Note)


async def eventually(condition: Any, timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds (runs of plain functions finish in worker threads)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.005)


def batcher(flock: Flock, seen: list[list[str]], name: str = "batcher", **kw: Any) -> Any:
    """An agent that records the topics of each batch it gets."""

    def record(ideas: list[Idea]) -> None:
        seen.append([i.topic for i in ideas])

    return flock.agent(name).consumes(Idea, **kw).with_engines(record)


# Declaration mistakes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("types", "kwargs", "needle"),
    [
        ((Idea,), {"batch": 0}, "batch= takes the most artifacts per run, an int ≥ 1"),
        ((Idea,), {"batch": -3}, "an int ≥ 1"),
        ((Idea,), {"batch": True}, "an int ≥ 1"),
        ((Idea,), {"batch": 2.5}, "an int ≥ 1"),
        ((Idea,), {"batch_timeout": 2.0}, "batch_timeout= only applies to batches; add batch=N"),
        ((Idea,), {"batch_by": "correlation_id"}, "batch_by= only applies to batches; add batch=N"),
        ((Idea,), {"batch": 2, "batch_timeout": 0}, "batch_timeout= takes seconds > 0"),
        ((Idea,), {"batch": 2, "batch_timeout": -1.0}, "batch_timeout= takes seconds > 0"),
        ((Idea,), {"batch": 2, "batch_timeout": math.nan}, "seconds > 0"),
        ((Idea,), {"batch": 2, "batch_timeout": math.inf}, "seconds > 0"),
        ((Idea,), {"batch": 2, "batch_timeout": "2s"}, "seconds > 0"),
        ((Idea,), {"batch": 2, "batch_by": "topic"}, "batch_by= takes a plain function"),
        ((Idea, Note), {"join": True, "batch": 2}, "batch= and join=True cannot be combined"),
        ((Idea,), {"join": True}, "join=True needs two or more types"),
        ((Idea, Idea), {"join": True}, f"({IDEA} is given twice)"),
        ((Idea, Note), {"join": 1}, "join= takes True or False"),
        ((Idea, Note), {"join_by": None}, "join_by= only applies to joins; add join=True"),
        ((Idea, Note), {"join_within": 5}, "join_within= only applies to joins"),
        ((Idea, Note), {"join": True, "join_within": 0}, "join_within= takes seconds > 0"),
        ((Idea, Note), {"join": True, "join_by": 3}, "join_by= takes a plain function"),
    ],
)
def test_misuse_fails_at_the_call_saying_how_to_fix_it(
    types: tuple[type[BaseModel], ...], kwargs: dict[str, Any], needle: str
) -> None:
    flock = Flock()
    with pytest.raises(ConfigurationError, match="agent 'a'") as info:
        flock.agent("a").consumes(*types, **kwargs)
    assert needle in str(info.value)
    assert flock.get_agent("a").subscriptions == []  # nothing half-declared


def test_an_async_key_function_is_refused() -> None:
    async def key(payload: BaseModel) -> str:
        return "k"

    with pytest.raises(ConfigurationError, match=r"join_by= .* \(an async function\)"):
        Flock().agent("a").consumes(Idea, Note, join=True, join_by=key)  # type: ignore[arg-type]


def test_timedelta_and_numbers_are_both_accepted_as_seconds() -> None:
    flock = Flock()
    flock.agent("b").consumes(Idea, batch=2, batch_timeout=timedelta(milliseconds=1500))
    flock.agent("j").consumes(Idea, Note, join=True, join_within=3)
    b, j = flock.get_agent("b").fanin, flock.get_agent("j").fanin
    assert b is not None and b.timeout == 1.5 and b.kind == "batch"
    assert j is not None and j.within == 3.0 and j.kind == "join"
    assert j.types == (IDEA, NOTE)  # declaration order


@pytest.mark.parametrize("fanin_first", [True, False])
def test_a_fanin_agent_has_one_consumes_declaration(fanin_first: bool) -> None:
    builder = Flock().agent("a")
    first: dict[str, Any] = {"batch": 3} if fanin_first else {}
    second: dict[str, Any] = {} if fanin_first else {"batch": 3}
    builder.consumes(Idea, **first)
    with pytest.raises(ConfigurationError, match="consumes through that one consumes"):
        builder.consumes(Note, **second)


async def test_a_handmade_function_engine_must_take_a_list() -> None:
    flock = Flock()
    flock.agent("b").consumes(Idea, batch=2).with_engines(FunctionEngine(lambda idea: None))
    with pytest.raises(ConfigurationError, match=r"FunctionEngine\(<lambda>\) would see only"):
        await flock.publish(Idea(topic="x"))
    seen: list[Any] = []
    flock.get_agent("b").engines = [FunctionEngine(seen.append, batch=True)]
    flock._agents_changed()
    await flock.publish_many([Idea(topic="x"), Idea(topic="y")], correlation_id="c")
    await flock.run_until_idle()
    assert seen == [[Idea(topic="x"), Idea(topic="y")]]


def test_fanin_is_refused_with_a_distributed_store(monkeypatch: pytest.MonkeyPatch) -> None:
    from flock.store.postgres import PostgresStore

    store = PostgresStore("postgresql://postgres@127.0.0.1:5432/test")  # never connects
    flock = Flock(store=store)
    flock.agent("plain").consumes(Idea)  # still fine
    for kwargs in ({"batch": 5}, {"join": True}):
        with pytest.raises(ConfigurationError, match="run in one process for now") as info:
            flock.agent(f"a{len(kwargs)}{next(iter(kwargs))}").consumes(Idea, Note, **kwargs)
        assert "PostgresStore" in str(info.value) and "MemoryStore" in str(info.value)
    monkeypatch.setenv("FLOCK_STORE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    with pytest.raises(ConfigurationError, match="run in one process for now"):
        Flock().agent("b").consumes(Idea, batch=2)


async def test_plain_consumes_of_several_types_still_means_one_run_per_artifact() -> None:
    flock = Flock()
    runs: list[str] = []
    flock.agent("either").consumes(Idea, Note).with_engines(lambda p: runs.append(type(p).__name__))
    await flock.publish(Idea(topic="x"), correlation_id="c")
    await flock.publish(Note(text="n"), correlation_id="c")
    await flock.run_until_idle()
    assert sorted(runs) == ["Idea", "Note"]


# Batches ----------------------------------------------------------------------------------


async def test_full_batches_in_publish_order_and_the_rest_at_idle(capture: SpanCapture) -> None:
    flock = Flock(tracer_provider=capture.provider)
    seen: list[list[str]] = []
    batcher(flock, seen, batch=3, batch_by=None)
    for i in range(7):
        await flock.publish(Idea(topic=str(i)))  # a new correlation id each
    await eventually(lambda: len(seen) == 2)
    await asyncio.sleep(0.05)
    assert seen == [["0", "1", "2"], ["3", "4", "5"]]  # "6" waits for more
    await flock.run_until_idle()
    assert seen == [["0", "1", "2"], ["3", "4", "5"], ["6"]]
    triggers = [
        ((s.attributes or {})["flock.batch.size"], (s.attributes or {})["flock.batch.trigger"])
        for s in sorted(capture.named("Agent.execute"), key=lambda s: s.start_time or 0)
    ]
    assert triggers == [(3, "full"), (3, "full"), (1, "idle")]


async def test_batches_span_workflows_by_default_or_stay_in_one_by_correlation_id() -> None:
    for batch_by, expected in [
        # Default: one stream of batches, each run in the workflow of its first input.
        (None, [("A", "a1+b1"), ("A", "a2+b2"), ("A", "a3")]),
        ("correlation_id", [("A", "a1+a2"), ("A", "a3"), ("B", "b1+b2")]),
    ]:
        flock = Flock()
        options = {} if batch_by is None else {"batch_by": batch_by}
        (
            flock.agent("batcher")
            .consumes(Idea, batch=2, **options)  # type: ignore[arg-type]
            .publishes(Note)
            .with_engines(lambda ideas: Note(text="+".join(i.topic for i in ideas)))
        )
        for topic, workflow in [("a1", "A"), ("b1", "B"), ("a2", "A"), ("b2", "B"), ("a3", "A")]:
            await flock.publish(Idea(topic=topic), correlation_id=workflow)
        await flock.run_until_idle()
        notes = await flock.store.query(type=NOTE)
        texts = sorted((n.correlation_id, getattr(n.payload, "text", None)) for n in notes)
        assert texts == expected, batch_by


async def test_batch_by_a_function_of_the_payload() -> None:
    flock = Flock()
    seen: list[list[str]] = []
    batcher(flock, seen, batch=2, batch_by=lambda idea: idea.topic[0])
    for topic in ["x1", "y1", "x2", "y2"]:
        await flock.publish(Idea(topic=topic))
    await flock.run_until_idle()
    assert sorted(seen) == [["x1", "x2"], ["y1", "y2"]]


async def test_a_partial_batch_runs_after_batch_timeout_without_run_until_idle(
    capture: SpanCapture,
) -> None:
    flock = Flock(tracer_provider=capture.provider)
    seen: list[list[str]] = []
    loop = asyncio.get_running_loop()
    ran_at: list[float] = []

    def record(ideas: list[Idea]) -> None:
        ran_at.append(loop.time())
        seen.append([i.topic for i in ideas])

    flock.agent("b").consumes(Idea, batch=5, batch_timeout=0.5, batch_by=None).with_engines(record)
    started = loop.time()
    await flock.publish(Idea(topic="a"))
    await asyncio.sleep(0.3)
    await flock.publish(Idea(topic="b"))  # the timeout counts from the first artifact
    assert seen == []
    await eventually(lambda: bool(seen))
    assert seen == [["a", "b"]]
    assert 0.5 <= ran_at[0] - started < 0.75  # counted from "b", it would be 0.8
    await eventually(lambda: capture.named("Agent.execute"))  # ends after the function
    (execute,) = capture.named("Agent.execute")
    assert (execute.attributes or {})["flock.batch.trigger"] == "timeout"


async def test_a_full_batch_cancels_its_timer() -> None:
    flock = Flock()
    seen: list[list[str]] = []
    batcher(flock, seen, batch=2, batch_timeout=0.05, batch_by=None)
    await flock.publish_many([Idea(topic="a"), Idea(topic="b")])
    await flock.publish(Idea(topic="c"))  # a new batch, with a timer of its own
    await eventually(lambda: len(seen) == 2)
    await asyncio.sleep(0.1)
    assert seen == [["a", "b"], ["c"]]  # no empty or repeated run from the first timer
    await flock.run_until_idle()
    assert seen == [["a", "b"], ["c"]]


async def test_run_until_idle_runs_partial_batches_without_waiting_for_their_timeout() -> None:
    flock = Flock()
    seen: list[list[str]] = []
    batcher(flock, seen, batch=10, batch_timeout=3600)
    await flock.publish(Idea(topic="a"), correlation_id="c")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await flock.run_until_idle(timeout=5)
    assert seen == [["a"]]
    assert loop.time() - started < 1


async def test_partial_batches_wait_while_other_runs_may_still_add_to_them() -> None:
    """Idle means no run pending or running: a slow agent's output joins the batch."""
    flock = Flock()
    seen: list[list[str]] = []
    batcher(flock, seen, batch=10)

    async def slow(note: Note) -> Idea:
        await asyncio.sleep(0.1)
        return Idea(topic="from-slow")

    flock.agent("slow").consumes(Note).publishes(Idea).with_engines(slow)
    await flock.publish(Idea(topic="first"), correlation_id="c")
    await flock.publish(Note(text="n"), correlation_id="c")
    await flock.run_until_idle()
    assert seen == [["first", "from-slow"]]


async def test_run_until_idle_drains_a_cascade_of_batches() -> None:
    flock = Flock()
    (
        flock.agent("summarise")
        .consumes(Idea, batch=4)
        .publishes(Note)
        .with_engines(lambda ideas: [Note(text=i.topic) for i in ideas])
    )
    totals: list[int] = []
    (
        flock.agent("count")
        .consumes(Note, batch=100)
        .publishes(Review)
        .with_engines(lambda notes: totals.append(len(notes)))
    )
    await flock.publish_many([Idea(topic=str(i)) for i in range(6)], correlation_id="c")
    await flock.run_until_idle()
    assert sum(totals) == 6  # every Note reached the second batch agent
    ids = [a.id for a in await flock.store.query(type=NOTE)]
    assert len(ids) == 6
    assert [await flock.store.consumers(i) for i in ids] == [["count"]] * 6


async def test_filters_apply_before_buffering() -> None:
    flock = Flock()
    seen: list[list[str]] = []
    batcher(
        flock,
        seen,
        batch=2,
        batch_by=None,
        where=lambda idea: idea.topic != "skip",
        tags=["keep"],
        from_agents=["external"],
    )
    await flock.publish(Idea(topic="a"), tags=["keep"])
    await flock.publish(Idea(topic="skip"), tags=["keep"])
    await flock.publish(Idea(topic="untagged"))
    await flock.publish(Idea(topic="b"), tags=["keep", "more"])
    await flock.run_until_idle()
    assert seen == [["a", "b"]]


async def test_a_batch_agent_ignores_its_own_outputs() -> None:
    flock = Flock()
    seen: list[list[str]] = []

    def echo(ideas: list[Idea]) -> list[Idea]:
        seen.append([i.topic for i in ideas])
        return [Idea(topic=i.topic + "!") for i in ideas]

    flock.agent("echo").consumes(Idea, batch=2).publishes(Idea).with_engines(echo)
    await flock.publish_many([Idea(topic="a"), Idea(topic="b")], correlation_id="c")
    await flock.run_until_idle()
    assert seen == [["a", "b"]]
    assert len(await flock.store.query(type=IDEA)) == 4


async def test_batch_runs_respect_max_concurrency() -> None:
    flock = Flock()
    running = peak = 0
    sizes: list[int] = []

    async def work(ideas: list[Idea]) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        sizes.append(len(ideas))
        running -= 1

    flock.agent("b").consumes(Idea, batch=2).with_engines(work).max_concurrency(1)
    await flock.publish_many([Idea(topic=str(i)) for i in range(6)], correlation_id="c")
    await flock.run_until_idle()
    assert sizes == [2, 2, 2]
    assert peak == 1


async def test_a_failed_batch_lists_every_input_and_is_retried_whole() -> None:
    flock = Flock()
    calls: list[list[str]] = []

    def flaky(ideas: list[Idea]) -> None:
        topics = [i.topic for i in ideas]
        calls.append(topics)
        if calls.count(topics) == 1:
            raise RuntimeError("first attempt fails")
        if topics[0] == "bad":
            raise ValueError("bad batch")

    flock.agent("b").consumes(Idea, batch=2, batch_by=None).with_engines(flaky).retries(
        1, backoff=0
    )
    ok = await flock.publish_many([Idea(topic="ok1"), Idea(topic="ok2")])
    bad = await flock.publish_many([Idea(topic="bad"), Idea(topic="b2")])
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle()
    # Each attempt of a batch had the same inputs.
    assert sorted(calls) == [["bad", "b2"], ["bad", "b2"], ["ok1", "ok2"], ["ok1", "ok2"]]
    (failure,) = info.value.failures
    assert failure.artifacts == tuple(bad)
    assert failure.attempts == 2
    assert all(a.id in str(failure) for a in bad)
    assert isinstance(failure.__cause__, ValueError)
    assert [await flock.store.consumers(a.id) for a in ok] == [["b"], ["b"]]
    assert [await flock.store.consumers(a.id) for a in bad] == [[], []]


async def test_a_batch_run_that_times_out_fails_with_all_its_inputs() -> None:
    flock = Flock()

    async def slow(ideas: list[Idea]) -> None:
        await asyncio.sleep(5)

    flock.agent("b").consumes(Idea, batch=3).with_engines(slow).timeout(0.05)
    inputs = await flock.publish_many([Idea(topic=str(i)) for i in range(3)], correlation_id="c")
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=5)
    (failure,) = info.value.failures
    assert isinstance(failure.__cause__, TimeoutError)
    assert failure.artifacts == tuple(inputs)


async def test_max_agent_runs_counts_batch_runs_not_artifacts() -> None:
    flock = Flock(max_agent_runs=2)
    seen: list[list[str]] = []
    batcher(flock, seen, batch=2)
    await flock.publish_many([Idea(topic=str(i)) for i in range(4)], correlation_id="c")
    await flock.run_until_idle()  # 4 artifacts, 2 runs: within the limit
    assert seen == [["0", "1"], ["2", "3"]]

    flock = Flock(max_agent_runs=2)
    seen = []
    batcher(flock, seen, batch=2)
    inputs = await flock.publish_many([Idea(topic=str(i)) for i in range(6)], correlation_id="w")
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle()
    (failure,) = info.value.failures
    assert isinstance(failure, RunawayLoopError)
    assert failure.artifacts == tuple(inputs[4:])
    assert seen == [["0", "1"], ["2", "3"]]


@pytest.mark.parametrize("timeout", [None, 0.01])
async def test_a_batch_agent_that_feeds_itself_is_stopped_as_a_runaway_loop(
    timeout: float | None,
) -> None:
    # Its next input waits in a batch (run when the flock is idle, or at the timeout), so
    # between runs none is live: the workflow's run count must survive that (it was reset,
    # and run_until_idle never returned).
    flock = Flock(max_agent_runs=5)
    runs: list[int] = []

    def again(notes: list[Note]) -> Note:
        runs.append(len(notes))
        return Note(text=notes[0].text + "!")

    flock.agent("echo").consumes(Note, batch=3, batch_timeout=timeout).publishes(Note).with_engines(
        again
    ).prevent_self_trigger(False)
    await flock.publish(Note(text="x"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=10)
    (failure,) = info.value.failures
    assert isinstance(failure, RunawayLoopError)
    assert runs == [1] * 5
    assert flock._runs == {}  # and forgotten once the workflow has nothing left


async def test_a_raising_batch_by_is_reported_and_the_others_still_batch() -> None:
    flock = Flock()
    seen: list[list[str]] = []

    def key(idea: Idea) -> str:
        if idea.topic == "boom":
            raise KeyError("no key")
        return "k"

    batcher(flock, seen, batch=2, batch_by=key)
    await flock.publish(Idea(topic="a"))
    boom = await flock.publish(Idea(topic="boom"))
    await flock.publish(Idea(topic="b"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle()
    assert seen == [["a", "b"]]
    (failure,) = info.value.failures
    assert failure.artifacts == (boom,)
    assert "batch_by= raised" in str(failure)


async def test_an_unhashable_key_is_reported() -> None:
    flock = Flock()
    seen: list[list[str]] = []
    batcher(flock, seen, batch=2, batch_by=lambda idea: [idea.topic])
    await flock.publish(Idea(topic="a"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle()
    assert isinstance(info.value.failures[0].__cause__, TypeError)
    assert seen == []


async def test_every_input_of_a_batch_is_recorded_as_consumed() -> None:
    flock = Flock()
    batcher(flock, [], batch=3)
    inputs = await flock.publish_many([Idea(topic=str(i)) for i in range(3)], correlation_id="c")
    await flock.run_until_idle()
    assert [await flock.store.consumers(a.id) for a in inputs] == [["batcher"]] * 3


async def test_async_engine_and_engine_declared_before_consumes_get_lists() -> None:
    flock = Flock()
    seen: list[Any] = []

    async def record(ideas: list[Idea]) -> None:
        seen.append(ideas)

    flock.agent("b").with_engines(record).consumes(Idea, batch=2)
    await flock.publish_many([Idea(topic="x"), Idea(topic="y")], correlation_id="c")
    await flock.run_until_idle()
    assert seen == [[Idea(topic="x"), Idea(topic="y")]]


async def test_a_batch_left_in_a_finished_event_loop_runs_in_the_next() -> None:
    flock = Flock()
    seen: list[list[str]] = []
    batcher(flock, seen, batch=3, batch_timeout=0.05)

    async def first() -> None:
        await flock.publish(Idea(topic="a"), correlation_id="c")

    async def second() -> None:
        await flock.run_until_idle(timeout=5)

    await asyncio.to_thread(asyncio.run, first())  # the loop ends before the timeout
    assert seen == []
    await asyncio.to_thread(asyncio.run, second())
    assert seen == [["a"]]


async def batch_behind_a_blocker() -> tuple[Flock, list[list[str]], asyncio.Event]:
    """A partial batch of one, and a run of another agent that waits for the event: the
    flock is not idle until it is set."""
    flock = Flock()
    seen: list[list[str]] = []
    batcher(flock, seen, batch=5)
    release = asyncio.Event()

    async def blocker(note: Note) -> None:
        await release.wait()

    flock.agent("blocker").consumes(Note).with_engines(blocker)
    await flock.publish(Idea(topic="a"), correlation_id="c")
    await flock.publish(Note(text="n"))
    return flock, seen, release


async def test_run_until_idle_timing_out_keeps_the_partial_batch() -> None:
    flock, seen, release = await batch_behind_a_blocker()
    with pytest.raises(TimeoutError, match="blocker"):
        await flock.run_until_idle(timeout=0.05)
    assert seen == []  # still waiting: the flock was never idle
    release.set()
    await flock.run_until_idle(timeout=5)
    assert seen == [["a"]]


async def test_a_cancelled_run_until_idle_loses_nothing() -> None:
    flock, seen, release = await batch_behind_a_blocker()
    waiter = asyncio.ensure_future(flock.run_until_idle())
    await asyncio.sleep(0.02)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await flock.publish(Idea(topic="b"), correlation_id="c")
    release.set()
    await flock.run_until_idle(timeout=5)
    assert seen == [["a", "b"]]
