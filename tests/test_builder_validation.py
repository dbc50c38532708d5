"""Builder arguments are checked where they are given: nonsense (a string or NaN for a
duration, a bool for a count, a number for a model name) raises ConfigurationError at the
builder call, not a bare TypeError there or a failure (or a hang) at run time."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import timedelta
from fractions import Fraction
from typing import Any

import pytest

from flock import AgentFailures, ConfigurationError, Flock
from flock.agent import AgentBuilder
from flock.engines.function import FunctionEngine
from flock.fanin import finite_seconds
from tests.models import Idea, Pizza

Build = Callable[[AgentBuilder], object]

NAN, INF = float("nan"), float("inf")


def builder() -> AgentBuilder:
    return Flock().agent("b")


REFUSED: list[tuple[str, Build, str]] = [
    # timeout(): a finite number of seconds > 0, a timedelta or None
    (
        "timeout('5')",
        lambda b: b.timeout("5"),  # type: ignore[arg-type]
        "timeout must be > 0 seconds or None, got '5'",
    ),
    ("timeout(nan)", lambda b: b.timeout(NAN), "got nan"),
    ("timeout(inf)", lambda b: b.timeout(INF), "got inf"),
    ("timeout(-1)", lambda b: b.timeout(-1), "got -1"),
    ("timeout(True)", lambda b: b.timeout(True), "got True"),
    ("timeout(huge int)", lambda b: b.timeout(10**400), "timeout must be > 0 seconds"),
    ("timeout(timedelta(0))", lambda b: b.timeout(timedelta(0)), "got datetime.timedelta(0)"),
    ("timeout(-timedelta)", lambda b: b.timeout(-timedelta(seconds=1)), "timeout must be > 0"),
    # retries(): n an int ≥ 0 (not a bool), backoff a finite number of seconds ≥ 0
    ("retries(1, backoff=nan)", lambda b: b.retries(1, backoff=NAN), "backoff=nan"),
    ("retries(1, backoff=inf)", lambda b: b.retries(1, backoff=INF), "backoff=inf"),
    ("retries(1, backoff='x')", lambda b: b.retries(1, backoff="x"), "backoff='x'"),  # type: ignore[arg-type]
    ("retries(1, backoff=-1)", lambda b: b.retries(1, backoff=-1), "backoff=-1"),
    ("retries(1, backoff=None)", lambda b: b.retries(1, backoff=None), "backoff=None"),  # type: ignore[arg-type]
    ("retries(True)", lambda b: b.retries(True), "got n=True"),
    ("retries(1.0)", lambda b: b.retries(1.0), "got n=1.0"),  # type: ignore[arg-type]
    ("retries('2')", lambda b: b.retries("2"), "got n='2'"),  # type: ignore[arg-type]
    # the orchestrator waits backoff * 2**k: from k = 1024 on that raises OverflowError
    ("retries(1025, backoff=0)", lambda b: b.retries(1025, backoff=0), "too large to compute"),
    ("retries(10**12)", lambda b: b.retries(10**12), "too large to compute"),
    ("retries(2, backoff=1e308)", lambda b: b.retries(2, backoff=1e308), "too large to compute"),
    # model(): a non-empty string
    ("model(123)", lambda b: b.model(123), "model() takes a model name"),  # type: ignore[arg-type]
    ("model('')", lambda b: b.model(""), "got ''"),
    ("model('  ')", lambda b: b.model("  "), "got '  '"),
    ("model(None)", lambda b: b.model(None), "got None"),  # type: ignore[arg-type]
    # prevent_self_trigger(): a bool ('no' was True)
    (
        "prevent_self_trigger('no')",
        lambda b: b.prevent_self_trigger("no"),  # type: ignore[arg-type]
        "prevent_self_trigger() takes True or False, got 'no'",
    ),
    ("prevent_self_trigger(0)", lambda b: b.prevent_self_trigger(0), "got 0"),  # type: ignore[arg-type]
    # consumes(from_agents=, tags=, where=)
    (
        "consumes(from_agents=[1])",
        lambda b: b.consumes(Idea, from_agents=[1]),  # type: ignore[list-item]
        "from_agents= takes names (non-empty strings without NUL), got 1",
    ),
    ("consumes(from_agents=[''])", lambda b: b.consumes(Idea, from_agents=[""]), "got ''"),
    (
        "consumes(from_agents=5)",
        lambda b: b.consumes(Idea, from_agents=5),  # type: ignore[arg-type]
        "from_agents= takes a list of names, got 5",
    ),
    (
        "consumes(from_agents=b'chef')",
        lambda b: b.consumes(Idea, from_agents=b"chef"),  # type: ignore[arg-type]
        "from_agents= takes a list of names, got b'chef'",
    ),
    (
        "consumes(from_agents=[])",
        lambda b: b.consumes(Idea, from_agents=[]),
        "from_agents=[] would take artifacts from no agent",
    ),
    (
        "consumes(tags=[1])",
        lambda b: b.consumes(Idea, tags=[1]),  # type: ignore[list-item]
        "tags= takes names (non-empty strings without NUL), got 1",
    ),
    ("consumes(tags=[''])", lambda b: b.consumes(Idea, tags=[""]), "got ''"),
    ("consumes(tags=['a\\x00'])", lambda b: b.consumes(Idea, tags=["a\x00"]), "without NUL"),
    (
        "consumes(where=5)",
        lambda b: b.consumes(Idea, where=5),  # type: ignore[arg-type]
        "where= takes a plain function of the payload returning a bool, or a list of them, got 5",
    ),
    # calls that would do nothing
    ("publishes()", lambda b: b.publishes(), "publishes() needs at least one type"),
    ("with_utilities()", lambda b: b.with_utilities(), "with_utilities() needs at least one"),
]


@pytest.mark.parametrize(
    ("build", "message"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_nonsense_is_refused_at_the_builder_call(build: Build, message: str) -> None:
    b = builder()
    before = (b.agent.timeout, b.agent.retries, b.agent.retry_backoff, b.agent.model)
    with pytest.raises(ConfigurationError) as info:
        build(b)
    assert message in str(info.value)
    assert "agent 'b'" in str(info.value)
    assert (b.agent.timeout, b.agent.retries, b.agent.retry_backoff, b.agent.model) == before
    assert b.agent.subscriptions == []


def test_timeout_takes_a_timedelta_and_stores_seconds() -> None:
    b = builder()
    b.timeout(timedelta(seconds=5))
    assert b.agent.timeout == 5.0
    b.timeout(timedelta(milliseconds=250))
    assert b.agent.timeout == 0.25
    b.timeout(2)
    assert b.agent.timeout == 2.0 and isinstance(b.agent.timeout, float)
    b.timeout(Fraction(1, 2))  # type: ignore[arg-type]  # any real number
    assert b.agent.timeout == 0.5
    b.timeout(None)
    assert b.agent.timeout is None


def test_retries_take_finite_backoffs_including_zero_and_timedeltas() -> None:
    b = builder()
    b.retries(0, backoff=0)
    assert (b.agent.retries, b.agent.retry_backoff) == (0, 0.0)
    b.retries(3, backoff=timedelta(milliseconds=10))
    assert (b.agent.retries, b.agent.retry_backoff) == (3, 0.01)
    b.retries(1024, backoff=0.5)  # the largest count whose last wait is a float
    assert b.agent.retries == 1024
    b.retries(0, backoff=1e308)  # never waits: nothing to overflow
    assert b.agent.retry_backoff == 1e308


def test_the_other_arguments_still_accepted() -> None:
    b = builder()
    b.model("openai/gpt-4o").prevent_self_trigger(False).prevent_self_trigger()
    assert b.agent.model == "openai/gpt-4o" and b.agent.prevent_self_trigger is True
    b.consumes(Idea, from_agents=(name for name in ["chef", "critic"]), tags=[], where=[])
    (subscription,) = b.agent.subscriptions
    assert subscription.from_agents == frozenset({"chef", "critic"})
    assert subscription.tags == frozenset()
    assert subscription.where == ()
    other = Flock().agent("c").consumes(Idea, tags=("urgent",), from_agents={"chef"})
    assert other.agent.subscriptions[0].tags == frozenset({"urgent"})


@pytest.mark.parametrize(
    ("value", "zero", "expected"),
    [
        (1, False, 1.0),
        (0.25, False, 0.25),
        (timedelta(minutes=1), False, 60.0),
        (Fraction(3, 4), False, 0.75),
        (0, False, None),
        (0, True, 0.0),
        (timedelta(0), True, 0.0),
        (-0.1, True, None),
        (NAN, True, None),
        (INF, True, None),
        (-INF, True, None),
        (10**400, True, None),
        (True, True, None),
        ("1", True, None),
        (None, True, None),
    ],
)
def test_finite_seconds(value: Any, zero: bool, expected: float | None) -> None:
    seconds = finite_seconds(value, zero=zero)
    assert seconds == expected
    assert seconds is None or isinstance(seconds, float)


async def test_a_timedelta_timeout_fails_a_slow_run() -> None:
    flock = Flock()

    async def slow(idea: Idea) -> Pizza:
        await asyncio.sleep(10)
        return Pizza(name=idea.topic)

    flock.agent("slow").consumes(Idea).publishes(Pizza).with_engines(slow).timeout(
        timedelta(milliseconds=50)
    )
    await flock.publish(Idea(topic="x"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=5)
    assert isinstance(info.value.failures[0].__cause__, TimeoutError)


async def test_a_timedelta_backoff_retries() -> None:
    flock = Flock()
    calls: list[str] = []

    def flaky(idea: Idea) -> Pizza:
        calls.append(idea.topic)
        if len(calls) == 1:
            raise RuntimeError("once")
        return Pizza(name=idea.topic)

    flock.agent("flaky").consumes(Idea).publishes(Pizza).with_engines(
        FunctionEngine(flaky)
    ).retries(1, backoff=timedelta(milliseconds=1))
    assert flock.get_agent("flaky").retry_backoff == 0.001
    await flock.publish(Idea(topic="x"))
    await flock.run_until_idle(timeout=5)
    assert calls == ["x", "x"]
    assert [p.name for p in await flock.store.payloads(Pizza)] == ["x"]


def test_finite_seconds_is_what_fanin_checks_with() -> None:
    # batch_timeout= and join_within= keep their messages, now through the same check
    with pytest.raises(ConfigurationError, match="batch_timeout= takes seconds > 0"):
        Flock().agent("b").consumes(Idea, batch=2, batch_timeout=math.nan)
    with pytest.raises(ConfigurationError, match="batch_timeout= takes seconds > 0"):
        Flock().agent("b").consumes(Idea, batch=2, batch_timeout="1")  # type: ignore[arg-type]
    agent = Flock().agent("b").consumes(Idea, batch=2, batch_timeout=timedelta(seconds=2)).agent
    assert agent.fanin is not None and agent.fanin.timeout == 2.0
