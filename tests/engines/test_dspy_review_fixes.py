"""DSPyEngine fixes from a review: best-effort conversation context, cancelled runs on the
engine span, token usage of failed runs (and only the counts the replies gave), and tool
errors shown to the model without a traceback. Offline: local stand-in servers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.trace import StatusCode
from pydantic import BaseModel

from flock import AgentFailures, Flock, flock_type
from flock.engines.dspy import DSPyEngine
from flock.fake_llm import FakeOpenAIServer, dspy_reply
from flock.testing import SpanCapture
from tests.models import Idea, Pizza

PIZZA = {"name": "sunny pizza", "toppings": ["basil"]}
PNG = b"\x89PNG\r\n\x1a\n\xff\xd8"  # not UTF-8: no JSON form in pydantic's default mode


@flock_type
class Attachment(BaseModel):
    """A file, e.g. an image."""

    name: str
    data: bytes


def is_step(request: dict[str, Any]) -> bool:
    """A request for a ReAct step (not for the extract step that gives the outputs)."""
    return "`next_tool_name`" in request["messages"][0]["content"]


def user_text(request: dict[str, Any]) -> str:
    return str(request["messages"][-1]["content"])


def react_then(extract: str, *tools: str) -> Callable[[dict[str, Any]], str]:
    """Steps calling ``tools`` in order, then ``finish``; ``extract`` answers the extract step."""
    pending = list(tools)

    def respond(request: dict[str, Any]) -> str:
        if is_step(request):
            tool = pending.pop(0) if pending else "finish"
            args = {"minutes": 10} if tool != "finish" else {}
            return dspy_reply(next_thought="t", next_tool_name=tool, next_tool_args=args)
        return extract

    return respond


@pytest.fixture
def servers() -> Iterator[list[FakeOpenAIServer]]:
    """Servers a test started, stopped after it."""
    started: list[FakeOpenAIServer] = []
    yield started
    for server in started:
        server.stop()


def start(servers: list[FakeOpenAIServer], server: FakeOpenAIServer) -> FakeOpenAIServer:
    servers.append(server.start())
    return server


def chef(flock: Flock, server: FakeOpenAIServer, *tools: Any) -> Any:
    agent = flock.agent("chef").consumes(Idea).publishes(Pizza)
    if tools:
        agent.with_tools(*tools)
    return agent.with_engines(DSPyEngine(api_base=server.base_url))


# -- 1. context: an artifact without a JSON form ---------------------------------------------


async def test_an_artifact_with_binary_bytes_does_not_fail_the_runs_of_its_conversation(
    servers: list[FakeOpenAIServer], capture: SpanCapture
) -> None:
    server = start(servers, FakeOpenAIServer())
    flock = Flock("openai/m", tracer_provider=capture.provider)
    chef(flock, server)
    async with flock.traced_run("wf"):
        await flock.publish(Attachment(name="photo.png", data=PNG), correlation_id="c1")
        await flock.publish(Idea(topic="spicy"), correlation_id="c1")
        await flock.run_until_idle()  # raised UnicodeDecodeError before any model call

    assert len(await flock.store.payloads(Pizza)) == 1
    (request,) = server.requests
    context = user_text(request).split("[[ ## context ## ]]", 1)[1]
    assert "photo.png" in context and f"<{len(PNG)} bytes of binary data>" in context
    (fetch,) = capture.named("DSPyEngine.fetch_conversation_context")
    assert fetch.status.status_code is StatusCode.UNSET  # best effort: not a failure
    assert fetch.attributes is not None and fetch.attributes["flock.context.count"] == 1
    (event,) = fetch.events  # but not silent either
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "UnicodeDecodeError"
    assert event.attributes["flock.context.fallback"] is True


# -- 2. a cancelled run marks the engine span -----------------------------------------------


async def test_a_run_that_times_out_in_the_model_call_marks_the_engine_span(
    servers: list[FakeOpenAIServer], capture: SpanCapture
) -> None:
    release = threading.Event()
    server = start(servers, FakeOpenAIServer(lambda r: "late" if release.wait(10) else ""))
    flock = Flock("openai/m", tracer_provider=capture.provider)
    chef(flock, server).timeout(0.3)
    try:
        async with flock.traced_run("wf"):
            await flock.publish(Idea(topic="spicy"))
            with pytest.raises(AgentFailures):
                await flock.run_until_idle()
    finally:
        release.set()

    (evaluate,) = capture.named("DSPyEngine.evaluate")
    assert evaluate.status.status_code is StatusCode.ERROR
    assert evaluate.status.description == "cancelled: its run timed out or was stopped"


async def test_a_run_that_times_out_in_a_tool_marks_the_engine_span_as_its_tool_span(
    servers: list[FakeOpenAIServer], capture: SpanCapture
) -> None:
    async def bake(minutes: int) -> str:
        """Bake the pizza for some minutes."""
        await asyncio.sleep(30)
        return "baked"

    server = start(
        servers, FakeOpenAIServer(react_then(dspy_reply(reasoning="r", pizza=PIZZA), "bake"))
    )
    flock = Flock("openai/m", tracer_provider=capture.provider)
    chef(flock, server, bake).timeout(0.5)
    async with flock.traced_run("wf"):
        await flock.publish(Idea(topic="spicy"))
        with pytest.raises(AgentFailures):
            await flock.run_until_idle()

    (tool,) = capture.named("Tool.bake")
    assert tool.status.status_code is StatusCode.ERROR
    assert (tool.status.description or "").startswith("cancelled: its run timed out")
    (evaluate,) = capture.named("DSPyEngine.evaluate")
    assert evaluate.status.status_code is StatusCode.ERROR
    assert evaluate.status.description == "cancelled: its run timed out or was stopped"
    assert evaluate.attributes is not None
    assert evaluate.attributes["gen_ai.usage.input_tokens"] == 42  # the step before the tool


# -- 3. usage of a failed run ---------------------------------------------------------------


async def test_a_failed_run_records_the_tokens_of_its_model_calls(
    servers: list[FakeOpenAIServer], capture: SpanCapture
) -> None:
    server = start(servers, FakeOpenAIServer(lambda r: "I think pizza is nice!!"))
    flock = Flock("openai/m", tracer_provider=capture.provider)
    chef(flock, server)
    await flock.publish(Idea(topic="spicy"))
    with pytest.raises(AgentFailures):
        await flock.run_until_idle()  # unparseable, even after DSPy's JSON retry

    assert len(server.requests) == 2
    (evaluate,) = capture.named("DSPyEngine.evaluate")
    assert evaluate.status.status_code is StatusCode.ERROR
    assert evaluate.attributes is not None
    assert evaluate.attributes["gen_ai.usage.input_tokens"] == 2 * 42
    assert evaluate.attributes["gen_ai.usage.output_tokens"] == 2 * 17


async def test_a_tool_run_whose_extract_step_fails_records_every_model_call(
    servers: list[FakeOpenAIServer], capture: SpanCapture
) -> None:
    def bake(minutes: int) -> str:
        """Bake the pizza for some minutes."""
        return "baked"

    server = start(servers, FakeOpenAIServer(react_then("garbage", "bake", "bake")))
    flock = Flock("openai/m", tracer_provider=capture.provider)
    chef(flock, server, bake)
    await flock.publish(Idea(topic="spicy"))
    with pytest.raises(AgentFailures):
        await flock.run_until_idle()

    assert len(server.requests) == 5  # three steps, the extract step and its JSON retry
    (evaluate,) = capture.named("DSPyEngine.evaluate")
    assert evaluate.attributes is not None
    assert evaluate.attributes["flock.tool.calls"] == 2
    assert evaluate.attributes["gen_ai.usage.input_tokens"] == 5 * 42
    assert evaluate.attributes["gen_ai.usage.output_tokens"] == 5 * 17


# -- 4. a tool's error as the model sees it -------------------------------------------------


async def test_the_model_sees_a_tool_error_as_its_type_and_message_without_a_traceback(
    servers: list[FakeOpenAIServer], capture: SpanCapture
) -> None:
    def bake(minutes: int) -> str:
        """Bake the pizza for some minutes."""
        raise RuntimeError("the oven is broken")

    server = start(
        servers, FakeOpenAIServer(react_then(dspy_reply(reasoning="r", pizza=PIZZA), "bake"))
    )
    flock = Flock("openai/m", tracer_provider=capture.provider)
    chef(flock, server, bake)

    (pizza,) = await flock.invoke("chef", Idea(topic="x"))

    assert pizza.payload == Pizza(**PIZZA)
    second = user_text([r for r in server.requests if is_step(r)][1])
    observation = second.split("[[ ## observation_0 ## ]]\n", 1)[1].split("\n", 1)[0]
    assert observation == "Execution error in bake: RuntimeError: the oven is broken"
    assert "Traceback" not in second and ".py" not in second
    (tool,) = capture.named("Tool.bake")  # the span keeps the whole exception
    assert tool.status.status_code is StatusCode.ERROR
    (event,) = tool.events
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "RuntimeError"
    assert "Traceback" in str(event.attributes["exception.stacktrace"])
    (evaluate,) = capture.named("DSPyEngine.evaluate")
    assert evaluate.attributes is not None and evaluate.attributes["flock.tool.errors"] == 1


# -- 5. usage: only what the replies gave ----------------------------------------------------


class UsageServer(FakeOpenAIServer):
    """Replies whose ``usage`` is ``usage_body`` (``None``: no usage at all)."""

    def __init__(self, usage_body: dict[str, Any] | None) -> None:
        super().__init__()
        self.usage_body = usage_body

    def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        completion = super()._complete(body)
        if self.usage_body is None:
            del completion["usage"]
        else:
            completion["usage"] = self.usage_body
        return completion


@pytest.mark.parametrize(
    ("usage", "recorded"),
    [
        ({"total_tokens": 9}, {}),  # no false zeros
        (None, {}),
        (
            {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
            {"gen_ai.usage.input_tokens": 12, "gen_ai.usage.output_tokens": 3},
        ),
        ({"prompt_tokens": 12, "total_tokens": 12}, {"gen_ai.usage.input_tokens": 12}),
    ],
)
async def test_usage_records_only_the_counts_the_reply_gave(
    servers: list[FakeOpenAIServer],
    capture: SpanCapture,
    usage: dict[str, Any] | None,
    recorded: dict[str, int],
) -> None:
    server = start(servers, UsageServer(usage))
    flock = Flock("openai/m", tracer_provider=capture.provider)
    chef(flock, server)

    await flock.invoke("chef", Idea(topic="x"))

    (evaluate,) = capture.named("DSPyEngine.evaluate")
    attributes = dict(evaluate.attributes or {})
    assert {k: v for k, v in attributes.items() if k.startswith("gen_ai.usage.")} == recorded
