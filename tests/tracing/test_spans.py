from __future__ import annotations

import pytest
from opentelemetry.trace import StatusCode

from flock import AgentFailures, ConfigurationError, Flock
from flock.testing import ScriptedEngine, SpanCapture
from tests.models import Idea, Pizza, Review


def pizza_flock(capture: SpanCapture) -> Flock:
    flock = Flock("openai/gpt-4o", tracer_provider=capture.provider)
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(
        lambda idea: Pizza(name=f"{idea.topic} pizza")
    )
    return flock


async def test_traced_run_gives_the_seed_hierarchy(capture: SpanCapture) -> None:
    flock = pizza_flock(capture)
    async with flock.traced_run("pizza_workflow") as span:
        span.set_attribute("pipeline.version", "2.0")
        await flock.publish(Idea(topic="spicy"))
        await flock.run_until_idle()
    assert capture.tree() == [
        (
            "pizza_workflow",
            [
                (
                    "Flock.publish",
                    [
                        (
                            "Agent.execute",
                            [
                                ("OutputUtilityComponent.on_initialize", []),
                                ("FunctionEngine.evaluate", []),
                                ("OutputUtilityComponent.on_post_evaluate", []),
                            ],
                        )
                    ],
                ),
                ("Flock.run_until_idle", [("Flock.shutdown", [])]),
            ],
        )
    ]
    spans = capture.spans
    assert len({s.context.trace_id for s in spans}) == 1
    (root,) = capture.named("pizza_workflow")
    assert root.attributes["flock.workflow"] is True
    assert root.attributes["workflow.name"] == "pizza_workflow"
    assert root.attributes["pipeline.version"] == "2.0"
    assert root.parent is None
    # Every span of the workflow carries its attributes (the documented DuckDB query relies on it).
    assert all(s.attributes["workflow.name"] == "pizza_workflow" for s in spans)
    (execute,) = capture.named("Agent.execute")
    assert execute.attributes["gen_ai.agent.name"] == "chef"
    assert execute.attributes["flock.agent.name"] == "chef"
    assert execute.attributes["gen_ai.operation.name"] == "invoke_agent"


async def test_without_traced_run_each_call_is_its_own_trace(capture: SpanCapture) -> None:
    flock = pizza_flock(capture)
    await flock.publish(Idea(topic="spicy"))
    await flock.run_until_idle()
    roots = [name for name, _ in capture.tree()]
    assert roots == ["Flock.publish", "Flock.run_until_idle"]
    (publish,) = capture.named("Flock.publish")
    (run,) = capture.named("Flock.run_until_idle")
    (execute,) = capture.named("Agent.execute")
    assert publish.context.trace_id != run.context.trace_id
    assert execute.parent.span_id == publish.context.span_id
    assert "workflow.name" not in execute.attributes


async def test_nested_traced_run_is_a_child_span(capture: SpanCapture) -> None:
    flock = pizza_flock(capture)
    async with flock.traced_run("outer_workflow"):
        await flock.publish(Idea(topic="a"))
        async with flock.traced_run("inner_task"):
            await flock.publish(Idea(topic="b"))
            await flock.run_until_idle()
        await flock.run_until_idle()
    tree = capture.tree()
    assert [name for name, _ in tree] == ["outer_workflow"]
    outer_children = [name for name, _ in tree[0][1]]
    assert outer_children == ["Flock.publish", "inner_task", "Flock.run_until_idle"]
    (inner,) = capture.named("inner_task")
    assert inner.attributes["flock.workflow"] is True
    # A step of the outer workflow: every span of the trace is counted with the workflow.
    assert inner.attributes["workflow.name"] == "outer_workflow"
    assert inner.attributes["workflow.step"] == "inner_task"
    assert {s.attributes["workflow.name"] for s in capture.spans} == {"outer_workflow"}
    assert len({s.context.trace_id for s in capture.spans}) == 1


async def test_exception_is_recorded_and_reraised_unchanged(capture: SpanCapture) -> None:
    flock = pizza_flock(capture)
    error = KeyError("boom")
    with pytest.raises(KeyError) as info:
        async with flock.traced_run("risky_operation"):
            await flock.publish(Idea(topic="x"))
            raise error
    assert info.value is error
    (root,) = capture.named("risky_operation")
    assert root.status.status_code is StatusCode.ERROR
    assert [e.name for e in root.events] == ["exception"]
    assert root.events[0].attributes["exception.type"] == "KeyError"


async def test_failing_agent_span_is_an_error_and_so_is_the_workflow(capture: SpanCapture) -> None:
    flock = Flock(tracer_provider=capture.provider)
    flock.agent("broken").consumes(Idea).with_engines(ScriptedEngine(ValueError("nope")))
    with pytest.raises(AgentFailures):
        async with flock.traced_run("failing_workflow"):
            await flock.publish(Idea(topic="x"))
            await flock.run_until_idle()
    (execute,) = capture.named("Agent.execute")
    assert execute.status.status_code is StatusCode.ERROR
    assert execute.events[0].attributes["exception.type"] == "ValueError"
    assert "exception.stacktrace" in execute.events[0].attributes
    (evaluate,) = capture.named("ScriptedEngine.evaluate")
    assert evaluate.status.status_code is StatusCode.ERROR
    for name in ("Flock.run_until_idle", "failing_workflow"):
        (span,) = capture.named(name)
        assert span.status.status_code is StatusCode.ERROR


async def test_retries_are_visible_as_attempts(capture: SpanCapture) -> None:
    flock = Flock(tracer_provider=capture.provider)
    flock.agent("flaky").consumes(Idea).with_engines(
        ScriptedEngine(RuntimeError("x"), None)
    ).retries(1, backoff=0)
    await flock.publish(Idea(topic="x"))
    await flock.run_until_idle()
    attempts = [
        (s.attributes["flock.attempt"], s.status.status_code)
        for s in capture.named("Agent.execute")
    ]
    assert attempts == [(1, StatusCode.ERROR), (2, StatusCode.UNSET)]


async def test_agent_runs_link_to_the_artifacts_they_consumed(capture: SpanCapture) -> None:
    flock = pizza_flock(capture)
    flock.agent("critic").consumes(Pizza).publishes(Review).with_engines(lambda p: Review(score=7))
    await flock.publish(Idea(topic="x"))
    await flock.run_until_idle()
    (publish,) = capture.named("Flock.publish")
    executes = {s.attributes["flock.agent.name"]: s for s in capture.named("Agent.execute")}
    (chef_link,) = executes["chef"].links
    assert chef_link.context.span_id == publish.context.span_id
    assert chef_link.attributes["flock.artifact.type"].endswith("Idea")
    (critic_link,) = executes["critic"].links
    assert critic_link.context.span_id == executes["chef"].context.span_id
    # and the critic run is nested under the chef run that published its input
    assert executes["critic"].parent.span_id == executes["chef"].context.span_id


async def test_links_connect_runs_across_traces(capture: SpanCapture) -> None:
    flock = pizza_flock(capture)
    async with flock.traced_run("first"):
        produced = await flock.publish(Pizza(name="leftover"))
    eater = flock.agent("eater").consumes(Pizza).with_engines(lambda p: None)
    async with flock.traced_run("second"):
        await flock.invoke(eater, produced.payload)
    (first,) = capture.named("first")
    (execute,) = capture.named("Agent.execute")
    assert execute.context.trace_id != first.context.trace_id
    assert produced.traceparent is not None
    assert produced.traceparent.split("-")[1] == format(first.context.trace_id, "032x")


async def test_unimplemented_hooks_make_no_spans(capture: SpanCapture) -> None:
    flock = pizza_flock(capture)
    await flock.publish(Idea(topic="x"))
    await flock.run_until_idle()
    names = {s.name for s in capture.spans}
    assert not {n for n in names if "on_pre_consume" in n or "on_terminate" in n or "on_error" in n}


@pytest.mark.parametrize("name", ["", "   ", None, 42])
async def test_traced_run_rejects_bad_names(capture: SpanCapture, name: object) -> None:
    flock = pizza_flock(capture)
    with pytest.raises(ConfigurationError, match="non-empty workflow name"):
        async with flock.traced_run(name):  # type: ignore[arg-type]
            pass


async def test_otel_sdk_disabled_traces_nothing_and_does_not_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    capture = SpanCapture()
    flock = pizza_flock(capture)
    async with flock.traced_run("pizza_workflow") as span:
        span.set_attribute("pipeline.version", "2.0")
        await flock.publish(Idea(topic="x"))
        await flock.run_until_idle()
    assert capture.spans == []
    assert not span.is_recording()


async def test_artifacts_keep_their_span_context_with_one_shared_trace_flags(
    capture: SpanCapture,
) -> None:
    flock = pizza_flock(capture)
    ideas = await flock.publish([Idea(topic="a"), Idea(topic="b")])
    await flock.run_until_idle()
    pizzas = await flock.store.query(type="tests.models.Pizza")
    (publish,) = capture.named("Flock.publish")
    executes = {s.context.span_id: s for s in capture.named("Agent.execute")}
    assert all(a.span_context == publish.context for a in ideas)
    assert {p.span_context.span_id for p in pizzas if p.span_context} == set(executes)
    for pizza in pizzas:
        assert pizza.span_context is not None
        execute = executes[pizza.span_context.span_id].context
        assert pizza.span_context == execute
        assert (
            pizza.traceparent
            == f"00-{execute.trace_id:032x}-{execute.span_id:016x}-{execute.trace_flags:02x}"
        )
    # The SDK makes a TraceFlags per span; stored artifacts share one per value.
    assert len({id(a.span_context.trace_flags) for a in [*ideas, *pizzas] if a.span_context}) == 1
