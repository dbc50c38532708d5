from __future__ import annotations

import asyncio
import threading

import pytest
from pydantic import BaseModel

from flock import (
    AgentComponent,
    AgentFailures,
    AgentRunError,
    ConfigurationError,
    Flock,
    PayloadValidationError,
    RegistryError,
    RunawayLoopError,
    RunContext,
)
from flock.artifacts import Artifact
from flock.registry import registry
from flock.testing import ScriptedEngine
from tests.models import Idea, Note, Pizza, Review

IDEA = registry.name_of(Idea)
PIZZA = registry.name_of(Pizza)


def chef(flock: Flock, name: str = "chef", **kw: object):
    return (
        flock.agent(name)
        .consumes(Idea)
        .publishes(Pizza)
        .with_engines(lambda idea: Pizza(name=f"{idea.topic} pizza", toppings=["cheese"]))
    )


async def test_publish_runs_matching_agent_and_stores_output() -> None:
    flock = Flock()
    chef(flock)
    artifact = await flock.publish(Idea(topic="spicy"))
    await flock.run_until_idle()
    pizzas = await flock.store.query(type=PIZZA)
    assert [p.payload for p in pizzas] == [Pizza(name="spicy pizza", toppings=["cheese"])]
    assert pizzas[0].produced_by == "chef"
    assert pizzas[0].correlation_id == artifact.correlation_id
    assert await flock.store.consumers(artifact.id) == ["chef"]


async def test_fan_out_runs_each_subscriber_exactly_once() -> None:
    flock = Flock()
    seen: dict[str, list[str]] = {}
    for i in range(5):
        name = f"a{i}"
        seen[name] = []

        async def record(idea: Idea, name: str = name) -> None:
            seen[name].append(idea.topic)

        flock.agent(name).consumes(Idea).with_engines(record)
    await flock.publish_many([Idea(topic="x"), Idea(topic="y")])
    await flock.run_until_idle()
    assert {k: sorted(v) for k, v in seen.items()} == {f"a{i}": ["x", "y"] for i in range(5)}


async def test_chain_of_agents_and_correlation_id_inherited() -> None:
    flock = Flock()
    chef(flock)
    flock.agent("critic").consumes(Pizza).publishes(Review).with_engines(
        lambda p: Review(score=len(p.toppings))
    )
    await flock.publish(Idea(topic="a"), correlation_id="wf-1", tags=["demo"])
    await flock.run_until_idle()
    reviews = await flock.store.query(correlation_id="wf-1", type=registry.name_of(Review))
    assert [r.payload.score for r in reviews] == [1]
    assert [a.type for a in await flock.store.query(correlation_id="wf-1")] == [
        IDEA,
        PIZZA,
        registry.name_of(Review),
    ]
    assert [a.id for a in await flock.store.query(produced_by="critic")] == [reviews[0].id]


async def test_where_from_agents_and_tags_filters() -> None:
    flock = Flock()
    got: list[str] = []

    async def keep(idea: Idea) -> None:
        got.append(idea.topic)

    flock.agent("picky").consumes(
        Idea, where=lambda i: i.topic.startswith("s"), tags=["hot"]
    ).with_engines(keep)
    flock.agent("only_from_chef").consumes(Pizza, from_agents=["chef"]).with_engines(
        lambda p: got.append("from-chef:" + p.name)
    )
    chef(flock)
    await flock.publish(Idea(topic="spicy"), tags=["hot", "x"])
    await flock.publish(Idea(topic="sweet"))  # no tag
    await flock.publish(Idea(topic="mild"), tags=["hot"])  # predicate false
    await flock.publish(Pizza(name="external"))  # not from chef
    await flock.run_until_idle()
    assert sorted(got) == sorted(
        ["spicy", "from-chef:spicy pizza", "from-chef:sweet pizza", "from-chef:mild pizza"]
    )


async def test_sync_function_engine_runs_off_the_event_loop() -> None:
    flock = Flock()
    threads: list[str] = []

    def engine(idea: Idea) -> Pizza:
        threads.append(threading.current_thread().name)
        return Pizza(name=idea.topic)

    flock.agent("sync").consumes(Idea).publishes(Pizza).with_engines(engine)
    await flock.publish(Idea(topic="t"))
    await flock.run_until_idle()
    assert threads and threads[0] != threading.main_thread().name


# Validation: nothing is stored ----------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "error", "fragment"),
    [
        (Idea.model_construct(topic=""), PayloadValidationError, "nothing was stored"),
        ({"type": "Idea", "payload": {"topic": 3}}, PayloadValidationError, "topic"),
        ({"payload": {"topic": "x"}}, PayloadValidationError, "needs a 'type' key"),
        ({"type": "NoSuchType", "payload": {}}, RegistryError, "unknown type 'NoSuchType'"),
        ({"type": 42}, PayloadValidationError, "'type' must be a string"),
        ("just a string", PayloadValidationError, "got str"),
    ],
)
async def test_invalid_payloads_raise_and_store_nothing(
    obj: object, error: type, fragment: str
) -> None:
    flock = Flock()
    chef(flock)
    with pytest.raises(error, match=fragment):
        await flock.publish(obj)  # type: ignore[arg-type]
    assert await flock.store.query() == []


async def test_one_bad_item_in_a_batch_stores_nothing() -> None:
    flock = Flock()
    with pytest.raises(PayloadValidationError):
        await flock.publish([Idea(topic="ok"), {"type": "Idea", "payload": {}}])
    assert await flock.store.query() == []


async def test_unregistered_model_is_rejected() -> None:
    class Loose(BaseModel):
        x: int

    flock = Flock()
    with pytest.raises(RegistryError, match="@flock_type"):
        await flock.publish(Loose(x=1))


async def test_dict_publish_by_short_name() -> None:
    flock = Flock()
    artifact = await flock.publish({"type": "Idea", "payload": {"topic": "dict"}})
    assert artifact.payload == Idea(topic="dict")
    assert artifact.type == IDEA


# Builder misuse --------------------------------------------------------------------------


def test_builder_misuse_fails_with_a_fix() -> None:
    flock = Flock()
    flock.agent("a")
    with pytest.raises(ConfigurationError, match="already exists"):
        flock.agent("a")
    with pytest.raises(ConfigurationError, match="Pydantic model classes"):
        flock.agent("b").consumes(dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="Pydantic model classes"):
        flock.agent("c").consumes(Idea).publishes("Pizza")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_concurrency"):
        flock.agent("d").max_concurrency(0)
    with pytest.raises(ConfigurationError, match="non-empty"):
        flock.agent("")
    with pytest.raises(ConfigurationError, match="with_engines"):
        flock.agent("e").with_engines(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="single string"):
        flock.agent("f").consumes(Idea, from_agents="chef")


async def test_agent_without_consumes_fails_at_first_use() -> None:
    flock = Flock()
    flock.agent("lazy").publishes(Pizza)
    with pytest.raises(
        ConfigurationError, match=r"consumes nothing; call flock.agent\('lazy'\).consumes"
    ):
        await flock.publish(Idea(topic="x"))
    assert await flock.store.query() == []


# Failures are never lost ----------------------------------------------------------------


async def test_failing_agent_is_reported_and_others_keep_running() -> None:
    flock = Flock()
    chef(flock)

    def boom(idea: Idea) -> None:
        raise ValueError(f"bad idea {idea.topic}")

    flock.agent("broken").consumes(Idea).with_engines(boom)
    sent = await flock.publish(Idea(topic="x"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle()
    (failure,) = info.value.failures
    assert failure.agent == "broken"
    assert failure.artifacts == (sent,)
    assert isinstance(failure.__cause__, ValueError)
    assert "bad idea x" in str(failure)
    assert len(await flock.store.query(type=PIZZA)) == 1  # chef still ran
    await flock.run_until_idle()  # reported once, then cleared


async def test_a_plain_function_raising_stop_iteration_fails_its_run_instead_of_hanging() -> None:
    """asyncio cannot put StopIteration into a future: run_until_idle used to wait for ever."""
    flock = Flock()

    def first_vegan(idea: Idea) -> Pizza:
        return next(p for p in () if p)  # StopIteration

    flock.agent("picky").consumes(Idea).publishes(Pizza).with_engines(first_vegan)
    await flock.publish(Idea(topic="x"))
    with pytest.raises(AgentFailures) as info:
        await asyncio.wait_for(flock.run_until_idle(), 30)
    (failure,) = info.value.failures
    assert isinstance(failure.__cause__, RuntimeError)
    assert "first_vegan raised StopIteration" in str(failure)


async def test_wrong_output_type_is_a_failure() -> None:
    flock = Flock()
    flock.agent("liar").consumes(Idea).publishes(Pizza).with_engines(lambda i: Review(score=1))
    await flock.publish(Idea(topic="x"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle()
    assert "returned Review" in str(info.value.failures[0])
    assert await flock.store.query(type=registry.name_of(Review)) == []


async def test_retries_with_backoff_then_success() -> None:
    flock = Flock()
    engine = ScriptedEngine(RuntimeError("flaky"), RuntimeError("flaky"), Pizza(name="third time"))
    flock.agent("flaky").consumes(Idea).publishes(Pizza).with_engines(engine).retries(
        2, backoff=0.01
    )
    await flock.publish(Idea(topic="x"))
    await flock.run_until_idle()
    assert len(engine.calls) == 3
    assert [a.payload.name for a in await flock.store.query(type=PIZZA)] == ["third time"]


async def test_retries_exhausted_reports_attempts() -> None:
    flock = Flock()
    engine = ScriptedEngine(RuntimeError("always"))
    flock.agent("flaky").consumes(Idea).with_engines(engine).retries(1, backoff=0)
    await flock.publish(Idea(topic="x"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle()
    assert info.value.failures[0].attempts == 2
    assert "after 2 attempts" in str(info.value.failures[0])


async def test_timeout_fails_the_run_not_the_workflow() -> None:
    flock = Flock()

    async def slow(idea: Idea) -> None:
        await asyncio.sleep(10)

    flock.agent("slow").consumes(Idea).with_engines(slow).timeout(0.05)
    chef(flock)
    await flock.publish(Idea(topic="x"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle()
    assert isinstance(info.value.failures[0].__cause__, TimeoutError)
    assert len(await flock.store.query(type=PIZZA)) == 1


async def test_run_until_idle_timeout() -> None:
    flock = Flock()
    release = asyncio.Event()

    async def wait(idea: Idea) -> None:
        await release.wait()

    flock.agent("waiter").consumes(Idea).with_engines(wait)
    await flock.publish(Idea(topic="x"))
    with pytest.raises(TimeoutError, match="1 agent run"):
        await flock.run_until_idle(timeout=0.05)
    release.set()
    await flock.run_until_idle(timeout=5)


async def test_runaway_loop_is_stopped_loudly() -> None:
    flock = Flock(max_agent_runs=20)
    flock.agent("echo").consumes(Note).publishes(Note).prevent_self_trigger(False).with_engines(
        lambda n: Note(text=n.text + ".")
    )
    await flock.publish(Note(text="x"))
    with pytest.raises(AgentFailures) as info:
        await asyncio.wait_for(flock.run_until_idle(), 10)
    (failure,) = info.value.failures
    assert isinstance(failure, RunawayLoopError)
    assert "agent 'echo' ran 20 times" in str(failure)
    assert len(await flock.store.query(produced_by="echo")) == 20


async def test_self_trigger_prevented_by_default() -> None:
    flock = Flock()
    engine = ScriptedEngine(lambda n: Note(text=n.text + "!"))
    flock.agent("echo").consumes(Note).publishes(Note).with_engines(engine)
    await flock.publish(Note(text="x"))
    await flock.run_until_idle()
    assert len(engine.calls) == 1


async def test_max_concurrency_is_respected() -> None:
    flock = Flock()
    running = 0
    peak = 0

    async def work(idea: Idea) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    flock.agent("worker").consumes(Idea).with_engines(work).max_concurrency(3)
    await flock.publish_many(Idea(topic=str(i)) for i in range(20))
    await flock.run_until_idle()
    assert peak == 3


async def test_predicate_error_is_a_failure_of_that_agent() -> None:
    flock = Flock()
    flock.agent("picky").consumes(Idea, where=lambda i: 1 / 0).with_engines(lambda i: None)
    chef(flock)
    await flock.publish(Idea(topic="x"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle()
    assert info.value.failures[0].agent == "picky"
    assert "where= predicate raised" in str(info.value.failures[0])
    assert len(await flock.store.query(type=PIZZA)) == 1


async def test_a_predicate_raising_a_base_exception_fails_only_that_agent() -> None:
    # A BaseException that is not fatal escaped publish(): the consumers routed after the
    # predicate's agent were never scheduled, the artifact stored but not delivered.
    class Oops(BaseException):
        pass

    def picky(idea: Idea) -> bool:
        raise Oops("no opinion")

    flock = Flock()
    flock.agent("picky").consumes(Idea, where=picky).with_engines(lambda i: None)
    chef(flock)
    await flock.publish(Idea(topic="x"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle()
    assert [f.agent for f in info.value.failures] == ["picky"]
    assert "where= predicate raised" in str(info.value.failures[0])
    assert "Oops: no opinion" in str(info.value.failures[0])
    assert len(await flock.store.query(type=PIZZA)) == 1


# invoke -----------------------------------------------------------------------------------


async def test_invoke_returns_outputs_without_publishing() -> None:
    flock = Flock()
    builder = chef(flock)
    downstream = ScriptedEngine(None)
    flock.agent("eater").consumes(Pizza).with_engines(downstream)
    outputs = await flock.invoke(builder, Idea(topic="direct"))
    assert [o.payload for o in outputs] == [Pizza(name="direct pizza", toppings=["cheese"])]
    await flock.run_until_idle()
    assert await flock.store.query() == []
    assert downstream.calls == []


async def test_invoke_publishes_outputs_exactly_once_when_asked() -> None:
    flock = Flock()
    chef(flock)
    downstream = ScriptedEngine(None)
    flock.agent("eater").consumes(Pizza).with_engines(downstream)
    outputs = await flock.invoke("chef", Idea(topic="direct"), publish_outputs=True)
    await flock.run_until_idle()
    pizzas = await flock.store.query(type=PIZZA)
    assert [p.id for p in pizzas] == [outputs[0].id]
    assert len(downstream.calls) == 1


async def test_invoke_rejects_wrong_model_and_failure_raises() -> None:
    flock = Flock()
    chef(flock)
    with pytest.raises(PayloadValidationError, match="consumes"):
        await flock.invoke("chef", Pizza(name="x"))
    flock.agent("broken").consumes(Idea).with_engines(ScriptedEngine(KeyError("k")))
    with pytest.raises(AgentRunError) as info:
        await flock.invoke("broken", Idea(topic="x"))
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(ConfigurationError, match="no agent named"):
        await flock.invoke("ghost", Idea(topic="x"))


# Components -------------------------------------------------------------------------------


class Recorder(AgentComponent):
    def __init__(self, log: list[str], tag: str) -> None:
        self.log = log
        self.tag = tag

    async def on_initialize(self, ctx: RunContext) -> None:
        self.log.append(f"{self.tag}.on_initialize")

    async def on_pre_consume(self, ctx: RunContext, inputs: list[Artifact]) -> list[Artifact]:
        self.log.append(f"{self.tag}.on_pre_consume")
        return inputs

    async def on_pre_evaluate(self, ctx: RunContext, inputs: list[Artifact]) -> list[Artifact]:
        self.log.append(f"{self.tag}.on_pre_evaluate")
        return inputs

    async def on_post_evaluate(self, ctx, inputs, outputs):  # type: ignore[no-untyped-def]
        self.log.append(f"{self.tag}.on_post_evaluate")
        return outputs

    async def on_post_publish(self, ctx: RunContext, artifact: Artifact) -> None:
        self.log.append(f"{self.tag}.on_post_publish")

    async def on_error(self, ctx: RunContext, error: BaseException) -> None:
        self.log.append(f"{self.tag}.on_error:{type(error).__name__}")

    async def on_terminate(self, ctx: RunContext) -> None:
        self.log.append(f"{self.tag}.on_terminate")


async def test_hooks_run_in_documented_order() -> None:
    log: list[str] = []
    flock = Flock()
    flock.agent("a").consumes(Idea).publishes(Pizza).with_utilities(
        Recorder(log, "r1"), Recorder(log, "r2")
    ).with_engines(ScriptedEngine(lambda i: (log.append("evaluate"), Pizza(name="p"))[1]))
    await flock.publish(Idea(topic="x"))
    await flock.run_until_idle()
    assert log == [
        "r1.on_initialize",
        "r2.on_initialize",
        "r1.on_pre_consume",
        "r2.on_pre_consume",
        "r1.on_pre_evaluate",
        "r2.on_pre_evaluate",
        "evaluate",
        "r1.on_post_evaluate",
        "r2.on_post_evaluate",
        "r1.on_post_publish",
        "r2.on_post_publish",
        "r1.on_terminate",
        "r2.on_terminate",
    ]


async def test_on_error_and_on_terminate_on_failure() -> None:
    log: list[str] = []
    flock = Flock()
    flock.agent("a").consumes(Idea).with_utilities(Recorder(log, "r")).with_engines(
        ScriptedEngine(ValueError("x"))
    )
    await flock.publish(Idea(topic="x"))
    with pytest.raises(AgentFailures):
        await flock.run_until_idle()
    assert log[-2:] == ["r.on_error:ValueError", "r.on_terminate"]


async def test_pre_consume_can_drop_inputs() -> None:
    class Drop(AgentComponent):
        async def on_pre_consume(self, ctx: RunContext, inputs: list[Artifact]) -> list[Artifact]:
            return [a for a in inputs if a.payload.topic != "skip"]

    engine = ScriptedEngine(None)
    flock = Flock()
    flock.agent("a").consumes(Idea).with_utilities(Drop()).with_engines(engine)
    await flock.publish_many([Idea(topic="skip"), Idea(topic="keep")])
    await flock.run_until_idle()
    assert [c.topic for c in engine.calls] == ["keep"]


async def test_output_component_renders_with_rich(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOCK_OUTPUT", "rich")
    flock = Flock()
    chef(flock)
    await flock.publish(Idea(topic="loud"))
    await flock.run_until_idle()
    out = capsys.readouterr().out
    assert "chef → Pizza" in out and "loud pizza" in out


async def test_output_component_quiet_when_not_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLOCK_OUTPUT")
    flock = Flock()
    chef(flock)
    await flock.publish(Idea(topic="quiet"))
    await flock.run_until_idle()
    assert capsys.readouterr().out == ""


async def test_flock_is_reusable_across_event_loops() -> None:
    flock = Flock()
    chef(flock)

    async def once() -> None:
        await flock.publish(Idea(topic="x"))
        await flock.run_until_idle()

    await once()
    await asyncio.to_thread(asyncio.run, once())
    assert len(await flock.store.query(type=PIZZA)) == 2


async def test_a_publishing_loop_lets_other_tasks_run() -> None:
    """publish() suspends once, so a loop of publishes does not starve the event loop (the
    runs it schedules, a dashboard served from the same process, ...)."""
    flock = Flock()
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(
        lambda idea: Pizza(name=idea.topic)
    )
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    for i in range(100):
        await flock.publish(Idea(topic=str(i)))
    seen = ticks
    task.cancel()
    await flock.run_until_idle()
    assert seen >= 99
    assert len(await flock.store.query(type="tests.models.Pizza")) == 100


async def test_run_counts_of_a_workflow_end_with_its_last_run() -> None:
    # A long-lived Flock that never calls run_until_idle: a workflow (a conversation, say)
    # that goes on with new inputs is not a runaway loop, and its counts are not kept forever.
    flock = Flock(max_agent_runs=2)
    ran = asyncio.Event()

    async def echo(idea: Idea) -> Note:
        ran.set()
        return Note(text=idea.topic)

    flock.agent("echo").consumes(Idea).publishes(Note).with_engines(echo)
    for i in range(4):
        ran.clear()
        await flock.publish(Idea(topic=str(i)), correlation_id="chat")
        await asyncio.wait_for(ran.wait(), 5)
        await asyncio.sleep(0.05)  # the run ends just after its engine returns
    await flock.run_until_idle(timeout=5)
    notes = await flock.store.query(correlation_id="chat", produced_by="echo")
    assert [n.payload.text for n in notes] == ["0", "1", "2", "3"]
