"""``.best_of(n, score=...)``: n candidates per run, evaluated at once, the best one published."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from pydantic import BaseModel

from flock import (
    AgentComponent,
    AgentFailures,
    ConfigurationError,
    Engine,
    Flock,
    RunContext,
)
from flock.agent import AgentBuilder
from flock.artifacts import Artifact
from flock.engines.dspy import DSPyEngine
from flock.fake_llm import FakeOpenAIServer, dspy_reply
from flock.store.postgres import PostgresStore
from flock.testing import SpanCapture
from tests.models import Idea, Pizza, Review
from tests.store.conftest import pg_dsn, pg_schema, pg_store  # noqa: F401 - fixtures


def toppings(outputs: list[Pizza]) -> int:
    return len(outputs[0].toppings)


def numbered(*counts: int) -> tuple[Callable[[Idea], Any], list[int]]:
    """An async engine whose k-th call returns pizza ``k`` with ``counts[k]`` toppings;
    candidates start in index order, so call k is candidate k."""
    calls: list[int] = []

    async def engine(idea: Idea) -> Pizza:
        k = len(calls)
        calls.append(k)
        await asyncio.sleep(0)  # the candidates interleave
        return Pizza(name=f"{idea.topic} {k}", toppings=["x"] * counts[k])

    return engine, calls


def chef(flock: Flock, engine: Any, *, n: int = 3, score: Any = toppings) -> AgentBuilder:
    return (
        flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(engine).best_of(n, score)
    )


async def pizzas(flock: Flock) -> list[Pizza]:
    return await flock.store.payloads(Pizza)


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def candidate_spans(capture: SpanCapture) -> list[ReadableSpan]:
    """The ``BestOf.candidate`` spans, by candidate index."""
    spans = capture.named("BestOf.candidate")
    return sorted(spans, key=lambda s: attrs(s)["flock.best_of.index"])


# Choosing -----------------------------------------------------------------------------------


async def test_the_best_candidate_is_published_and_only_it() -> None:
    engine, calls = numbered(1, 3, 2)
    flock = Flock()
    chef(flock, engine)
    await flock.publish(Idea(topic="t"))
    await flock.run_until_idle()
    assert calls == [0, 1, 2]
    assert await pizzas(flock) == [Pizza(name="t 1", toppings=["x"] * 3)]


async def test_async_score_functions_are_awaited() -> None:
    engine, _ = numbered(2, 1, 4)

    async def score(outputs: list[Pizza]) -> float:
        await asyncio.sleep(0)
        return -len(outputs[0].toppings)  # the fewest toppings wins

    flock = Flock()
    chef(flock, engine, score=score)
    (pizza,) = await flock.invoke("chef", Idea(topic="t"))
    assert pizza.payload == Pizza(name="t 1", toppings=["x"])


async def test_a_tie_goes_to_the_first_candidate() -> None:
    engine, _ = numbered(2, 5, 5, 5)
    flock = Flock()
    chef(flock, engine, n=4, score=lambda outputs: min(len(outputs[0].toppings), 3))
    await flock.publish(Idea(topic="t"))
    await flock.run_until_idle()
    assert [p.name for p in await pizzas(flock)] == ["t 1"]


async def test_the_score_gets_every_output_and_none_is_a_valid_answer() -> None:
    seen: list[list[BaseModel]] = []
    calls: list[int] = []

    async def engine(idea: Idea) -> list[BaseModel] | None:
        calls.append(len(calls))
        if len(calls) == 1:
            return None
        return [Pizza(name="a"), Review(score=len(calls))]

    def score(outputs: list[BaseModel]) -> int:
        seen.append(outputs)
        return sum(o.score for o in outputs if isinstance(o, Review))

    flock = Flock()
    flock.agent("chef").consumes(Idea).publishes(Pizza, Review).with_engines(engine).best_of(
        3, score=score
    )
    outputs = await flock.invoke("chef", Idea(topic="t"))
    assert sorted(map(len, seen)) == [0, 2, 2]
    assert [a.payload for a in outputs] == [Pizza(name="a"), Review(score=3)]


async def test_candidates_run_concurrently_async() -> None:
    barrier = asyncio.Barrier(3)  # releases only when all three candidates are waiting

    async def engine(idea: Idea) -> Pizza:
        async with asyncio.timeout(5):
            index = await barrier.wait()
        return Pizza(name=str(index))

    flock = Flock()
    chef(flock, engine, score=lambda outputs: 0)
    (pizza,) = await flock.invoke("chef", Idea(topic="t"))
    assert pizza.payload.name in {"0", "1", "2"}


async def test_candidates_run_concurrently_sync() -> None:
    barrier = threading.Barrier(3, timeout=5)  # sync engines: three worker threads at once

    def engine(idea: Idea) -> Pizza:
        return Pizza(name=str(barrier.wait()))

    flock = Flock()
    chef(flock, engine, score=lambda outputs: int(outputs[0].name))
    (pizza,) = await flock.invoke("chef", Idea(topic="t"))
    assert pizza.payload.name == "2"
    assert not barrier.broken


async def test_on_post_evaluate_sees_only_the_chosen_candidate_and_its_state() -> None:
    class Numbered(Engine):
        def __init__(self) -> None:
            self.calls = 0

        async def evaluate(self, ctx: RunContext, inputs: list[Artifact]) -> Pizza:
            k = self.calls
            self.calls += 1
            ctx.state["candidate"] = k  # each candidate writes its own copy of the state
            await asyncio.sleep(0)
            return Pizza(name=str(k), toppings=["x"] * [1, 3, 2][k])

    class Watch(AgentComponent):
        def __init__(self) -> None:
            self.seen: list[tuple[Any, list[BaseModel]]] = []

        async def on_initialize(self, ctx: RunContext) -> None:
            ctx.state["before"] = True

        async def on_post_evaluate(
            self, ctx: RunContext, inputs: list[Artifact], outputs: list[BaseModel]
        ) -> list[BaseModel]:
            self.seen.append((dict(ctx.state), outputs))
            return outputs

    watch = Watch()
    flock = Flock()
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(Numbered()).with_utilities(
        watch
    ).without_output().best_of(3, score=toppings)
    await flock.invoke("chef", Idea(topic="t"))
    ((state, outputs),) = watch.seen
    assert state["candidate"] == 1 and state["before"] is True
    assert outputs == [Pizza(name="1", toppings=["x"] * 3)]


async def test_works_for_batches() -> None:
    calls: list[int] = []

    def engine(ideas: list[Idea]) -> Pizza:
        calls.append(len(ideas))
        return Pizza(name="+".join(i.topic for i in ideas), toppings=["x"] * len(calls))

    flock = Flock()
    flock.agent("chef").consumes(Idea, batch=2).publishes(Pizza).with_engines(engine).best_of(
        2, score=toppings
    )
    await flock.publish_many([Idea(topic="a"), Idea(topic="b")])
    await flock.run_until_idle()
    assert calls == [2, 2]
    assert await pizzas(flock) == [Pizza(name="a+b", toppings=["x", "x"])]


# Failing candidates -------------------------------------------------------------------------


class Oops(BaseException):
    """A BaseException that is not fatal (as pytest's ``Failed``): a failure like any other."""


@pytest.mark.parametrize("error", [ValueError, Oops])
async def test_a_failing_candidate_is_recorded_and_the_others_compete(
    capture: SpanCapture, caplog: pytest.LogCaptureFixture, error: type[BaseException]
) -> None:
    # (Oops used to fail the whole run: the other candidates cancelled, nothing published.)
    calls: list[int] = []

    async def engine(idea: Idea) -> Pizza:
        k = len(calls)
        calls.append(k)
        await asyncio.sleep(0)
        if k == 1:
            raise error("candidate one burnt it")
        return Pizza(name=str(k), toppings=["x"] * [1, 9, 2][k])

    flock = Flock(tracer_provider=capture.provider)
    chef(flock, engine)
    with caplog.at_level(logging.WARNING, logger="flock"):
        await flock.publish(Idea(topic="t"))
        await flock.run_until_idle()  # no AgentFailures: the run succeeded
    assert calls == [0, 1, 2]
    assert await pizzas(flock) == [Pizza(name="2", toppings=["x", "x"])]
    (warning,) = [r for r in caplog.records if "best_of candidate" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert "agent 'chef': best_of candidate 1 of 3 failed" in warning.getMessage()
    assert f"{error.__name__}: candidate one burnt it" in warning.getMessage()
    spans = candidate_spans(capture)
    assert spans[1].status.status_code.name == "ERROR"
    assert spans[1].status.description == f"{error.__name__}: candidate one burnt it"
    assert [attrs(e)["exception.message"] for e in spans[1].events] == ["candidate one burnt it"]
    assert [attrs(s)["flock.best_of.chosen"] for s in spans] == [False, False, True]
    assert [s.status.status_code.name for s in (spans[0], spans[2])] == ["UNSET", "UNSET"]
    (execute,) = capture.named("Agent.execute")
    assert execute.status.status_code.name == "UNSET"
    assert attrs(execute)["flock.best_of.failed"] == 1
    assert attrs(execute)["flock.best_of.chosen_index"] == 2


async def test_a_cancelled_error_raised_by_the_engine_itself_fails_only_its_candidate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    async def engine(idea: Idea) -> Pizza:
        k = len(calls)
        calls.append(k)
        await asyncio.sleep(0)
        if k == 0:
            raise asyncio.CancelledError  # e.g. it awaited a future someone cancelled
        return Pizza(name=str(k), toppings=["x"] * k)

    flock = Flock()
    chef(flock, engine)
    with caplog.at_level(logging.WARNING, logger="flock"):
        (pizza,) = await flock.invoke("chef", Idea(topic="t"))
    assert pizza.payload.name == "2"
    assert any(
        "best_of candidate 0 of 3 failed" in r.getMessage() and "CancelledError" in r.getMessage()
        for r in caplog.records
    )


async def test_when_every_candidate_raises_a_base_exception_each_is_reported() -> None:
    """The first one used to cancel the others: the run's error named only it."""
    calls: list[int] = []

    async def engine(idea: Idea) -> Pizza:
        k = len(calls)
        calls.append(k)
        await asyncio.sleep(0.01 * (3 - k))  # the first candidate fails last
        raise Oops(f"boom {k}")

    flock = Flock()
    chef(flock, engine)
    await flock.publish(Idea(topic="t"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle()
    (failure,) = info.value.failures
    assert str(failure).startswith("agent 'chef' failed on tests.models.Idea ")
    assert str(failure).endswith(": Oops: boom 0")
    cause = failure.__cause__
    assert isinstance(cause, Oops) and str(cause) == "boom 0"
    assert cause.__notes__ == [
        "best_of candidate 1 of agent 'chef' failed too: Oops: boom 1",
        "best_of candidate 2 of agent 'chef' failed too: Oops: boom 2",
    ]
    assert await pizzas(flock) == []


async def test_a_score_function_raising_a_base_exception_fails_the_run_naming_it() -> None:
    engine, _ = numbered(1, 2, 3)

    def score(outputs: list[Pizza]) -> int:
        if len(outputs[0].toppings) == 2:
            raise Oops("no ruler")
        return len(outputs[0].toppings)

    flock = Flock()
    chef(flock, engine, score=score)
    await flock.publish(Idea(topic="t"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle()
    cause = info.value.failures[0].__cause__
    assert isinstance(cause, RuntimeError)
    assert str(cause) == (
        "agent 'chef': its best_of score function raised on candidate 1: Oops: no ruler"
    )
    assert isinstance(cause.__cause__, Oops)
    assert await pizzas(flock) == []


@pytest.mark.parametrize("kind", [SystemExit, KeyboardInterrupt])
def test_a_fatal_base_exception_of_a_candidate_still_propagates(
    kind: type[BaseException],
) -> None:
    """Ctrl-C or ``sys.exit`` in one candidate stops everything, not just the candidate."""
    calls: list[int] = []

    async def engine(idea: Idea) -> Pizza:
        k = len(calls)
        calls.append(k)
        await asyncio.sleep(0)
        if k == 1:
            raise kind("stop")
        return Pizza(name=str(k), toppings=["x"] * k)

    async def main() -> None:
        flock = Flock()
        chef(flock, engine)
        await flock.publish(Idea(topic="t"))
        await flock.run_until_idle()

    with pytest.raises(kind):
        asyncio.run(main())


async def test_when_every_candidate_fails_the_run_fails_with_the_first_error(
    capture: SpanCapture,
) -> None:
    calls: list[int] = []

    async def engine(idea: Idea) -> Pizza:
        k = len(calls)
        calls.append(k)
        await asyncio.sleep(0.01 * (3 - k % 3))  # the first candidate fails last
        raise ValueError(f"boom {k % 3}")

    flock = Flock(tracer_provider=capture.provider)
    chef(flock, engine).retries(1, backoff=0)
    await flock.publish(Idea(topic="t"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle()
    (failure,) = info.value.failures
    assert failure.attempts == 2 and len(calls) == 6  # retries cover the whole run, as before
    cause = failure.__cause__
    assert isinstance(cause, ValueError) and str(cause) == "boom 0"
    assert cause.__notes__ == [
        "best_of candidate 1 of agent 'chef' failed too: ValueError: boom 1",
        "best_of candidate 2 of agent 'chef' failed too: ValueError: boom 2",
    ]
    assert await pizzas(flock) == []
    for execute in capture.named("Agent.execute"):  # one per attempt
        assert execute.status.status_code.name == "ERROR"
        assert attrs(execute)["flock.best_of.failed"] == 3
        assert "flock.best_of.chosen_index" not in attrs(execute)


@pytest.mark.parametrize(
    ("score", "kind", "needle"),
    [
        (lambda outputs: 1 / 0, RuntimeError, "raised on candidate 0: ZeroDivisionError"),
        (lambda outputs: math.nan, ValueError, "returned NaN for candidate 0"),
        (lambda outputs: "high", ConfigurationError, "returned str ('high') for candidate 0"),
        (lambda outputs: None, ConfigurationError, "returned NoneType (None) for candidate 0"),
    ],
    ids=["raises", "nan", "string", "none"],
)
async def test_a_bad_score_fails_the_run_naming_the_agent(
    score: Any, kind: type[Exception], needle: str, capture: SpanCapture
) -> None:
    engine, _ = numbered(1, 2, 3)
    flock = Flock(tracer_provider=capture.provider)
    chef(flock, engine, score=score)
    await flock.publish(Idea(topic="t"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle()
    cause = info.value.failures[0].__cause__
    assert isinstance(cause, kind)
    assert f"agent 'chef': its best_of score function {needle}" in str(cause)
    assert "agent 'chef'" in str(info.value.failures[0])
    assert await pizzas(flock) == []
    assert {s.status.status_code.name for s in capture.named("BestOf.candidate")} == {"ERROR"}


async def test_the_timeout_covers_the_whole_run_and_ends_every_candidate_span(
    capture: SpanCapture,
) -> None:
    async def engine(idea: Idea) -> Pizza:
        await asyncio.Event().wait()  # never answers
        raise AssertionError("unreachable")

    flock = Flock(tracer_provider=capture.provider)
    chef(flock, engine).timeout(0.2)
    await flock.publish(Idea(topic="t"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=10)
    assert isinstance(info.value.failures[0].__cause__, TimeoutError)
    candidates = capture.named("BestOf.candidate")
    assert len(candidates) == 3
    for span in candidates:
        assert (span.status.description or "").startswith("interrupted: CancelledError")
        assert attrs(span)["flock.best_of.chosen"] is False
    assert len(capture.named("FunctionEngine.evaluate")) == 3


# Declaring ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            (0, toppings),
            "best_of(n) needs an int from 1 to 100 (the candidates per run, all run at once; "
            "1 turns it off), got 0",
        ),
        ((-2, toppings), "got -2"),
        ((101, toppings), "needs an int from 1 to 100"),
        ((10**9, toppings), "got 1000000000"),
        ((True, toppings), "got True"),
        ((2.0, toppings), "got 2.0"),
        (("3", toppings), "got '3'"),
        ((3,), "best_of(3) needs score=, a function of a candidate's outputs"),
        ((3, None), "best_of(3) needs score="),
        ((3, 0.5), "best_of(score=...) takes a function of a candidate's outputs"),
        ((3, "len"), "got 'len'"),
        ((3, float), "got <class 'float'>"),
    ],
)
def test_misuse_is_a_configuration_error(args: tuple[Any, ...], needle: str) -> None:
    builder = Flock().agent("chef").consumes(Idea).publishes(Pizza)
    with pytest.raises(ConfigurationError) as info:
        builder.best_of(*args)
    assert str(info.value).startswith("agent 'chef': best_of(")
    assert needle in str(info.value)
    assert builder.agent.best_of is None


def test_n_one_turns_it_off() -> None:
    builder = Flock().agent("chef").consumes(Idea).publishes(Pizza)
    assert builder.best_of(3, score=toppings).agent.best_of is not None
    assert builder.best_of(1).agent.best_of is None
    assert builder.best_of(1, score=toppings).agent.best_of is None


async def test_n_one_leaves_the_run_and_its_spans_as_before() -> None:
    trees = []
    for best_of in (None, 1):
        capture = SpanCapture()
        engine, calls = numbered(1, 1, 1)
        flock = Flock(tracer_provider=capture.provider)
        builder = flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(engine)
        if best_of is not None:
            builder.best_of(3, score=toppings).best_of(best_of)
        async with flock.traced_run("wf"):
            await flock.publish(Idea(topic="t"))
            await flock.run_until_idle()
        assert calls == [0]
        (execute,) = capture.named("Agent.execute")
        assert not [k for k in execute.attributes or {} if k.startswith("flock.best_of")]
        trees.append(capture.tree())
    assert trees[0] == trees[1]
    assert trees[0][0][1][0][1][0][1] == [  # wf / Flock.publish / Agent.execute
        ("OutputUtilityComponent.on_initialize", []),
        ("FunctionEngine.evaluate", []),
        ("OutputUtilityComponent.on_post_evaluate", []),
    ]


# Tracing ------------------------------------------------------------------------------------


async def test_each_candidate_is_a_span_with_its_engine_spans_inside(capture: SpanCapture) -> None:
    engine, _ = numbered(1, 3, 2)
    flock = Flock(tracer_provider=capture.provider)
    chef(flock, engine)
    async with flock.traced_run("wf"):
        await flock.publish(Idea(topic="t"))
        await flock.run_until_idle()
    candidate = ("BestOf.candidate", [("FunctionEngine.evaluate", [])])
    assert capture.tree() == [
        (
            "wf",
            [
                (
                    "Flock.publish",
                    [
                        (
                            "Agent.execute",
                            [
                                ("OutputUtilityComponent.on_initialize", []),
                                candidate,
                                candidate,
                                candidate,
                                ("OutputUtilityComponent.on_post_evaluate", []),
                            ],
                        )
                    ],
                ),
                ("Flock.run_until_idle", [("Flock.shutdown", [])]),
            ],
        )
    ]
    (execute,) = capture.named("Agent.execute")
    assert execute.attributes is not None
    assert execute.attributes["flock.best_of.n"] == 3
    assert execute.attributes["flock.best_of.chosen_index"] == 1
    assert execute.attributes["flock.best_of.failed"] == 0
    spans = candidate_spans(capture)
    assert [attrs(s) for s in spans] == [
        {
            "flock.best_of.index": i,
            "gen_ai.agent.name": "chef",
            "flock.best_of.score": score,
            "flock.best_of.chosen": i == 1,
            "flock.workflow": True,
            "workflow.name": "wf",
        }
        for i, score in enumerate([1.0, 3.0, 2.0])
    ]
    for span in spans:
        assert span.parent is not None and span.parent.span_id == execute.context.span_id
        assert span.end_time is not None and execute.end_time is not None
        assert span.end_time <= execute.end_time
    for evaluate in capture.named("FunctionEngine.evaluate"):
        assert evaluate.attributes is not None
        assert evaluate.attributes["gen_ai.agent.name"] == "chef"
        assert evaluate.parent is not None
        assert evaluate.parent.span_id in {s.context.span_id for s in spans}


async def test_a_candidate_span_ends_when_its_candidate_finishes(capture: SpanCapture) -> None:
    release = asyncio.Event()

    async def engine(idea: Idea) -> Pizza:
        if not release.is_set():
            release.set()  # the first candidate answers at once
            return Pizza(name="fast")
        await asyncio.sleep(0.2)
        return Pizza(name="slow", toppings=["x"])

    flock = Flock(tracer_provider=capture.provider)
    chef(flock, engine, n=2)
    await flock.invoke("chef", Idea(topic="t"))
    fast, slow = candidate_spans(capture)
    assert fast.end_time is not None and slow.end_time is not None
    assert slow.end_time - fast.end_time > 100_000_000  # ns: not held open for the slow one
    assert attrs(slow)["flock.best_of.chosen"] is True


# DSPy and PostgreSQL ------------------------------------------------------------------------


async def test_dspy_engine_asks_the_model_n_times_and_publishes_the_best(
    capture: SpanCapture,
) -> None:
    answers = iter([3, 9, 5])
    lock = threading.Lock()

    def responder(request: dict[str, Any]) -> str:
        with lock:
            return dspy_reply(review={"score": next(answers)})

    with FakeOpenAIServer(responder) as server:
        flock = Flock("openai/m", tracer_provider=capture.provider)
        flock.agent("critic").consumes(Pizza).publishes(Review).with_engines(
            DSPyEngine(api_base=server.base_url)
        ).best_of(3, score=lambda outputs: outputs[0].score)
        await flock.publish(Pizza(name="p"))
        await flock.run_until_idle(timeout=30)
    assert len(server.requests) == 3
    assert await flock.store.payloads(Review) == [Review(score=9)]
    evaluates = capture.named("DSPyEngine.evaluate")
    candidates = {s.context.span_id for s in capture.named("BestOf.candidate")}
    assert len(evaluates) == 3 and len(candidates) == 3
    for span in evaluates:  # token usage stays on each candidate's own engine span
        assert span.parent is not None and span.parent.span_id in candidates
        assert span.attributes is not None and span.attributes["gen_ai.usage.input_tokens"] > 0
    assert sorted(attrs(s)["flock.best_of.score"] for s in candidate_spans(capture)) == [
        3.0,
        5.0,
        9.0,
    ]


async def test_postgres_workers_run_the_candidates_too(pg_store: PostgresStore) -> None:  # noqa: F811
    engine, calls = numbered(1, 3, 2)
    flock = Flock(store=pg_store)
    chef(flock, engine).without_output()
    await flock.publish(Idea(topic="t"))
    await flock.run_until_idle(timeout=30)
    assert calls == [0, 1, 2]
    assert await pg_store.payloads(Pizza) == [Pizza(name="t 1", toppings=["x"] * 3)]


# Found by a review ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "best"),
    [
        (lambda outputs: 10 ** (400 + len(outputs[0].toppings)), 1),  # beyond float range
        (lambda outputs: Decimal(len(outputs[0].toppings)) / 3, 1),
        (lambda outputs: Fraction(len(outputs[0].toppings), 3), 1),
    ],
    ids=["huge int", "Decimal", "Fraction"],
)
async def test_any_real_number_is_a_score(score: Any, best: int, capture: SpanCapture) -> None:
    """A huge int failed with a bare OverflowError, a Decimal was refused as no number."""
    engine, _ = numbered(1, 3, 2)
    flock = Flock(tracer_provider=capture.provider)
    chef(flock, engine, score=score)
    await flock.publish(Idea(topic="t"))
    await flock.run_until_idle()
    assert [p.name for p in await pizzas(flock)] == [f"t {best}"]
    assert isinstance(attrs(candidate_spans(capture)[1])["flock.best_of.score"], float)


async def test_a_score_that_is_no_number_is_not_retried() -> None:
    engine, calls = numbered(1, 2, 3, 4, 5, 6, 7, 8, 9)
    flock = Flock()
    chef(flock, engine, score=lambda outputs: "high").retries(2, backoff=0)
    await flock.publish(Idea(topic="t"))
    with pytest.raises(AgentFailures):
        await flock.run_until_idle()
    assert len(calls) == 3  # one attempt: a configuration error fails the same way each time


async def test_an_engine_failure_beside_a_score_failure_is_reported_too(
    capture: SpanCapture,
) -> None:
    """The score function's error used to hide the other candidate's engine error."""
    calls: list[int] = []

    async def engine(idea: Idea) -> Pizza:
        calls.append(len(calls))
        if len(calls) == 1:
            raise ValueError("database credentials rejected")
        return Pizza(name="p", toppings=[])

    def score(outputs: list[Any]) -> float:
        raise KeyError("toppings_count")

    flock = Flock(tracer_provider=capture.provider)
    chef(flock, engine, n=2, score=score)
    await flock.publish(Idea(topic="t"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle()
    cause = info.value.failures[0].__cause__
    assert isinstance(cause, RuntimeError) and "raised on candidate 1: KeyError" in str(cause)
    assert "database credentials rejected" in " ".join(getattr(cause, "__notes__", []))
    (execute,) = capture.named("Agent.execute")
    assert attrs(execute)["flock.best_of.failed"] == 2


async def test_an_error_raised_while_candidates_are_cancelled_is_the_runs_error() -> None:
    """It came out as an ExceptionGroup from the candidates' task group."""

    async def engine(idea: Idea) -> Pizza:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ConnectionError("could not close the connection cleanly") from None
        raise AssertionError("unreachable")

    flock = Flock()
    chef(flock, engine).timeout(0.1)
    await flock.publish(Idea(topic="t"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle()
    cause = info.value.failures[0].__cause__
    assert not isinstance(cause, BaseExceptionGroup)
    assert isinstance(cause, ConnectionError | TimeoutError)
