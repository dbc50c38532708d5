"""Fan-in consumption, part 2: joins (``join=True``), the spans of fan-in runs, invoke() of
fan-in agents, and DSPyEngine's inputs (part 1, declarations and batches: test_fanin.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from pydantic import BaseModel

from flock import (
    AgentFailures,
    AgentRunError,
    Flock,
    PayloadValidationError,
    flock_type,
)
from flock.registry import registry
from flock.testing import SpanCapture
from tests.models import Idea, Note, Pizza, Review
from tests.test_fanin import batcher, eventually


@flock_type
class Order(BaseModel):
    id: str


@flock_type
class Payment(BaseModel):
    order_id: str
    amount: int = 1


@flock_type
class Shipment(BaseModel):
    order_id: str


IDEA = registry.name_of(Idea)
NOTE = registry.name_of(Note)


# Joins ------------------------------------------------------------------------------------


async def test_join_pairs_one_of_each_type_by_correlation_id() -> None:
    flock = Flock()
    pairs: list[tuple[str, str, str]] = []

    def pair(idea: Idea, note: Note) -> Pizza:
        pairs.append((idea.topic, note.text, type(idea).__name__))
        return Pizza(name=f"{idea.topic}/{note.text}")

    flock.agent("j").consumes(Idea, Note, join=True).publishes(Pizza).with_engines(pair)
    await flock.publish(Idea(topic="i1"), correlation_id="w1")
    await flock.publish(Idea(topic="i2"), correlation_id="w2")
    await flock.publish(Note(text="n2"), correlation_id="w2")  # a Note first is fine too
    await eventually(lambda: bool(pairs))
    assert pairs == [("i2", "n2", "Idea")]
    await flock.publish(Note(text="n1"), correlation_id="w1")
    await flock.run_until_idle()
    assert sorted(pairs) == [("i1", "n1", "Idea"), ("i2", "n2", "Idea")]
    pizzas = await flock.store.query(type=registry.name_of(Pizza))
    assert sorted((p.correlation_id, getattr(p.payload, "name", None)) for p in pizzas) == [
        ("w1", "i1/n1"),
        ("w2", "i2/n2"),
    ]


async def test_join_inputs_follow_the_declaration_order_not_the_arrival_order() -> None:
    flock = Flock()
    seen: list[list[str]] = []

    async def pair(note: Note, idea: Idea) -> None:  # async functions too
        seen.append([type(note).__name__, type(idea).__name__])

    flock.agent("j").consumes(Note, Idea, join=True).with_engines(pair)
    await flock.publish(Idea(topic="i"), correlation_id="c")
    await flock.publish(Note(text="n"), correlation_id="c")
    await flock.run_until_idle()
    assert seen == [["Note", "Idea"]]


async def test_join_matches_first_in_first_out() -> None:
    flock = Flock()
    pairs: list[tuple[str, str]] = []
    flock.agent("j").consumes(Idea, Note, join=True).with_engines(
        lambda i, n: pairs.append((i.topic, n.text))
    )
    for topic in ["i1", "i2", "i3"]:
        await flock.publish(Idea(topic=topic), correlation_id="c")
    await flock.publish(Note(text="n1"), correlation_id="c")
    await flock.publish(Note(text="n2"), correlation_id="c")
    await flock.run_until_idle()
    assert sorted(pairs) == [("i1", "n1"), ("i2", "n2")]
    assert flock._fanin.waiting() == 1  # i3 still waits for its Note
    await flock.publish(Note(text="n3"), correlation_id="c")
    await flock.run_until_idle()
    assert sorted(pairs) == [("i1", "n1"), ("i2", "n2"), ("i3", "n3")]


async def test_join_by_a_key_called_with_every_payload_of_every_type() -> None:
    flock = Flock()
    keyed: list[str] = []

    def key(payload: Order | Payment | Shipment) -> str:
        keyed.append(type(payload).__name__)
        return payload.id if isinstance(payload, Order) else payload.order_id

    done: list[tuple[str, int, str]] = []
    flock.agent("ship").consumes(Order, Payment, Shipment, join=True, join_by=key).with_engines(
        lambda o, p, s: done.append((o.id, p.amount, s.order_id))
    )
    # Each publish gets its own correlation id: only the key brings them together.
    await flock.publish(Payment(order_id="o2", amount=20))
    await flock.publish(Order(id="o1"))
    await flock.publish(Order(id="o2"))
    await flock.publish(Shipment(order_id="o1"))
    await flock.publish(Payment(order_id="o1", amount=10))
    await flock.publish(Shipment(order_id="o2"))
    await flock.run_until_idle()
    assert sorted(done) == [("o1", 10, "o1"), ("o2", 20, "o2")]
    assert sorted(set(keyed)) == ["Order", "Payment", "Shipment"]
    assert len(keyed) == 6


async def test_join_by_none_pairs_any_artifacts_in_arrival_order() -> None:
    flock = Flock()
    pairs: list[tuple[str, str]] = []
    flock.agent("j").consumes(Idea, Note, join=True, join_by=None).with_engines(
        lambda i, n: pairs.append((i.topic, n.text))
    )
    await flock.publish(Idea(topic="i1"))
    await flock.publish(Idea(topic="i2"))
    await flock.publish(Note(text="n1"))
    await flock.publish(Note(text="n2"))
    await flock.run_until_idle()
    assert sorted(pairs) == [("i1", "n1"), ("i2", "n2")]


async def test_the_join_run_takes_the_correlation_id_of_its_first_declared_input() -> None:
    flock = Flock()
    flock.agent("j").consumes(Order, Payment, join=True, join_by=lambda p: "k").publishes(
        Note
    ).with_engines(lambda o, p: Note(text="joined"))
    await flock.publish(Payment(order_id="x"), correlation_id="payment-wf")
    await flock.publish(Order(id="x"), correlation_id="order-wf")
    await flock.run_until_idle()
    (note,) = await flock.store.query(type=NOTE)
    assert note.correlation_id == "order-wf"


async def test_an_unmatched_artifact_does_not_hold_up_run_until_idle(
    capture: SpanCapture,
) -> None:
    flock = Flock(tracer_provider=capture.provider)
    pairs: list[tuple[str, str]] = []
    flock.agent("j").consumes(Idea, Note, join=True).with_engines(
        lambda i, n: pairs.append((i.topic, n.text))
    )
    await flock.publish(Idea(topic="lonely"), correlation_id="c")
    await flock.run_until_idle(timeout=5)
    assert pairs == []
    (idle_span,) = capture.named("Flock.run_until_idle")
    assert idle_span.attributes is not None
    assert idle_span.attributes["flock.join.waiting"] == 1
    await flock.publish(Note(text="late"), correlation_id="c")  # still matched later
    await flock.run_until_idle(timeout=5)
    assert pairs == [("lonely", "late")]
    assert "flock.join.waiting" not in (capture.named("Flock.run_until_idle")[-1].attributes or {})


async def test_join_within_drops_an_unmatched_artifact_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flock = Flock()
    pairs: list[tuple[str, str]] = []
    flock.agent("j").consumes(Idea, Note, join=True, join_within=0.05).with_engines(
        lambda i, n: pairs.append((i.topic, n.text))
    )
    caplog.set_level(logging.WARNING, logger="flock")
    old = await flock.publish(Idea(topic="old"), correlation_id="c")
    await eventually(lambda: flock._fanin.waiting() == 0)  # the timer drops it
    dropped = [r for r in caplog.records if "found no join partner" in r.getMessage()]
    assert len(dropped) == 1
    assert old.id in dropped[0].getMessage() and "'j'" in dropped[0].getMessage()
    assert dropped[0].levelno == logging.WARNING

    await flock.publish(Note(text="n"), correlation_id="c")
    await flock.run_until_idle()
    assert pairs == []  # "old" no longer waits: the Note waits instead, no error
    assert await flock.store.get(old.id) == old  # still on the blackboard
    await flock.publish(Idea(topic="new"), correlation_id="c")
    await flock.run_until_idle()
    assert pairs == [("new", "n")]
    await asyncio.sleep(0.1)  # the matched artifacts' deadlines pass: nothing is logged
    assert len([r for r in caplog.records if "found no join partner" in r.getMessage()]) == 1


async def test_an_expired_artifact_is_never_matched_even_before_its_timer_fires() -> None:
    flock = Flock()
    pairs: list[tuple[str, str]] = []
    flock.agent("j").consumes(Idea, Note, join=True, join_within=0.05).with_engines(
        lambda i, n: pairs.append((i.topic, n.text))
    )
    await flock.publish(Idea(topic="old"), correlation_id="c")
    join = flock._fanin.joins["j"]
    assert join.timer is not None
    join.timer.cancel()  # as if the loop were too busy to run the timer in time
    join.timer = None
    await asyncio.sleep(0.08)
    await flock.publish(Note(text="n"), correlation_id="c")
    await flock.run_until_idle()
    assert pairs == []


async def test_join_failures_list_both_inputs_and_self_trigger_is_prevented() -> None:
    flock = Flock()
    calls: list[str] = []

    def pair(idea: Idea, note: Note) -> Idea:
        calls.append(idea.topic)
        if note.text == "bad":
            raise RuntimeError("cannot pair")
        return Idea(topic="own output")  # not fed back into the join

    flock.agent("j").consumes(Idea, Note, join=True).publishes(Idea).with_engines(pair)
    idea = await flock.publish(Idea(topic="i"), correlation_id="c")
    note = await flock.publish(Note(text="ok"), correlation_id="c")
    await flock.run_until_idle()
    assert calls == ["i"]
    assert flock._fanin.waiting() == 0
    idea = await flock.publish(Idea(topic="i2"), correlation_id="d")
    note = await flock.publish(Note(text="bad"), correlation_id="d")
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle()
    (failure,) = info.value.failures
    assert failure.artifacts == (idea, note)
    assert idea.id in str(failure) and note.id in str(failure)


async def test_a_raising_join_by_is_reported() -> None:
    flock = Flock()
    flock.agent("j").consumes(Idea, Note, join=True, join_by=lambda p: p.missing).with_engines(
        lambda i, n: None
    )
    artifact = await flock.publish(Idea(topic="i"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle()
    (failure,) = info.value.failures
    assert failure.artifacts == (artifact,)
    assert "join_by= raised" in str(failure)
    assert isinstance(failure.__cause__, AttributeError)


# Tracing ----------------------------------------------------------------------------------


async def test_a_batch_run_links_to_every_input(capture: SpanCapture) -> None:
    flock = Flock(tracer_provider=capture.provider)
    batcher(flock, [], batch=3, batch_by=None)
    inputs = [await flock.publish(Idea(topic=str(i))) for i in range(3)]
    await flock.run_until_idle()
    (execute,) = capture.named("Agent.execute")
    publishes = capture.named("Flock.publish")
    assert len({s.context.span_id for s in publishes if s.context}) == 3
    linked = [
        (link.context.span_id, (link.attributes or {})["flock.artifact.id"])
        for link in execute.links
    ]
    assert linked == [(a.span_context.span_id if a.span_context else 0, a.id) for a in inputs]
    attributes = execute.attributes or {}
    assert list(attributes["flock.input.ids"]) == [a.id for a in inputs]  # type: ignore[arg-type]
    assert attributes["flock.fanin"] == "batch"
    assert attributes["flock.batch.size"] == 3
    assert attributes["flock.batch.trigger"] == "full"
    assert '"topic":"0"' in str(attributes["input.value"])
    assert '"topic":"2"' in str(attributes["input.value"])


async def test_a_join_run_links_to_both_inputs_and_names_its_key(capture: SpanCapture) -> None:
    flock = Flock(tracer_provider=capture.provider)
    flock.agent("j").consumes(Order, Payment, join=True, join_by=lambda p: "k-1").with_engines(
        lambda o, p: None
    )
    async with flock.traced_run("join_workflow"):
        payment = await flock.publish(Payment(order_id="1"))
        order = await flock.publish(Order(id="1"))
        await flock.run_until_idle()
    (execute,) = capture.named("Agent.execute")
    ids = [link.attributes["flock.artifact.id"] for link in execute.links]  # type: ignore[index]
    assert ids == [order.id, payment.id]  # declaration order
    attributes = execute.attributes or {}
    assert attributes["flock.fanin"] == "join"
    assert attributes["flock.join.key"] == "k-1"
    assert attributes["workflow.name"] == "join_workflow"


async def test_every_retry_of_a_batch_run_is_traced_with_its_inputs(
    capture: SpanCapture,
) -> None:
    flock = Flock(tracer_provider=capture.provider)
    attempts: list[int] = []

    def flaky(ideas: list[Idea]) -> None:
        attempts.append(len(ideas))
        if len(attempts) == 1:
            raise RuntimeError("once")

    flock.agent("b").consumes(Idea, batch=2).with_engines(flaky).retries(1, backoff=0)
    await flock.publish_many([Idea(topic="a"), Idea(topic="b")], correlation_id="c")
    await flock.run_until_idle()
    spans = sorted(capture.named("Agent.execute"), key=lambda s: s.start_time or 0)
    assert [s.attributes["flock.attempt"] for s in spans] == [1, 2]  # type: ignore[index]
    assert [len(s.links) for s in spans] == [2, 2]
    assert [s.status.status_code.name for s in spans] == ["ERROR", "UNSET"]


# invoke() ---------------------------------------------------------------------------------


async def test_invoke_a_batch_agent_with_a_list_or_one_input() -> None:
    flock = Flock()
    seen: list[list[str]] = []
    batcher(flock, seen, batch=3)
    await flock.publish(Idea(topic="waiting"), correlation_id="c")
    await flock.invoke("batcher", [Idea(topic="x"), Idea(topic="y")])
    await flock.invoke("batcher", Idea(topic="z"))
    assert seen == [["x", "y"], ["z"]]  # the waiting batch is left alone
    with pytest.raises(PayloadValidationError, match="batches of 1 to 3 artifacts, got 4"):
        await flock.invoke("batcher", [Idea(topic=str(i)) for i in range(4)])
    with pytest.raises(PayloadValidationError, match="batches of 1 to 3 artifacts, got 0"):
        await flock.invoke("batcher", [])
    with pytest.raises(PayloadValidationError, match=f"consumes {IDEA}, not {NOTE}"):
        await flock.invoke("batcher", [Idea(topic="x"), Note(text="n")])
    await flock.run_until_idle()
    assert seen[-1] == ["waiting"]


async def test_invoke_a_join_agent_with_one_input_of_each_type() -> None:
    flock = Flock()
    flock.agent("j").consumes(Idea, Note, join=True).publishes(Pizza).with_engines(
        lambda i, n: Pizza(name=f"{i.topic}/{n.text}")
    )
    (pizza,) = await flock.invoke("j", [Note(text="n"), Idea(topic="i")])  # any order
    assert pizza.payload == Pizza(name="i/n")
    assert await flock.store.query() == []  # nothing touched the blackboard
    with pytest.raises(PayloadValidationError, match=f"joins one each of {IDEA}, {NOTE}"):
        await flock.invoke("j", Idea(topic="i"))
    with pytest.raises(PayloadValidationError, match="joins one each"):
        await flock.invoke("j", [Idea(topic="i"), Idea(topic="i2"), Note(text="n")])
    outputs = await flock.invoke(
        "j", [Idea(topic="a"), Note(text="b")], publish_outputs=True, correlation_id="wf"
    )
    stored = await flock.store.query(correlation_id="wf")
    assert sorted(a.type for a in stored) == sorted([IDEA, NOTE, registry.name_of(Pizza)])
    assert outputs[0].correlation_id == "wf"


async def test_invoke_a_plain_agent_with_a_list_is_refused() -> None:
    flock = Flock()
    flock.agent("one").consumes(Idea).with_engines(lambda idea: None)
    with pytest.raises(PayloadValidationError, match="one artifact per run, got 2"):
        await flock.invoke("one", [Idea(topic="a"), Idea(topic="b")])
    assert await flock.invoke("one", [Idea(topic="a")]) == []


async def test_invoke_failure_of_a_join_names_both_inputs() -> None:
    flock = Flock()

    def pair(idea: Idea, note: Note) -> None:
        raise RuntimeError("no")

    flock.agent("j").consumes(Idea, Note, join=True).with_engines(pair)
    with pytest.raises(AgentRunError) as info:
        await flock.invoke("j", [Idea(topic="i"), Note(text="n")])
    assert [a.type for a in info.value.artifacts] == [IDEA, NOTE]


# DSPy ----------------------------------------------------------------------------------------


async def test_dspy_engine_gets_a_batch_as_a_list_and_a_join_as_one_field_per_type() -> None:
    from flock.engines.dspy import DSPyEngine
    from flock.fake_llm import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        flock = Flock("openai/m")
        engine = DSPyEngine(api_base=server.base_url, context_limit=0)
        flock.agent("b").consumes(Idea, batch=2).publishes(Review).with_engines(engine)
        flock.agent("j").consumes(Note, Pizza, join=True).publishes(Review).with_engines(
            DSPyEngine(api_base=server.base_url, context_limit=0)
        )
        await flock.publish_many([Idea(topic="alpha"), Idea(topic="beta")], correlation_id="c")
        await flock.publish(Note(text="gamma"), correlation_id="d")
        await flock.publish(Pizza(name="delta"), correlation_id="d")
        await flock.run_until_idle()
        await flock.publish(Idea(topic="omega"))  # a batch of one, run at idle
        await flock.run_until_idle()
    prompts = [str(request["messages"]) for request in server.requests]
    (batch_prompt,) = [p for p in prompts if "alpha" in p]
    assert "beta" in batch_prompt and "list[Idea]" in batch_prompt
    (single_prompt,) = [p for p in prompts if "omega" in p]
    assert "list[Idea]" in single_prompt  # the same shape for a batch of one
    (join_prompt,) = [p for p in prompts if "gamma" in p]
    assert "delta" in join_prompt and "`note`" in join_prompt and "`pizza`" in join_prompt
    assert len(await flock.store.query(type=registry.name_of(Review))) == 3
