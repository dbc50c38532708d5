"""DSPyEngine against a local OpenAI-compatible server and DSPy's DummyLM (never the network)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from flock import (
    AgentFailures,
    AgentRunError,
    ConfigurationError,
    Flock,
    MissingAPIKeyError,
    flock_type,
)
from flock.engines.dspy import DSPyEngine, _snake
from flock.fake_llm import FakeOpenAIServer, dspy_reply, schema_responder
from flock.testing import SpanCapture
from tests.models import Idea, Pizza, Review


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
def local_llm(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> FakeOpenAIServer:
    """The default engine reaches the fake server through the usual variable, with no key."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    return server


async def test_seed_hierarchy_with_the_default_dspy_engine(
    local_llm: FakeOpenAIServer, capture: SpanCapture
) -> None:
    flock = Flock("openai/gpt-4o", tracer_provider=capture.provider)
    flock.agent("pizza_master").consumes(Idea).publishes(Pizza)  # no engine: DSPyEngine
    async with flock.traced_run("pizza_workflow"):
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
                                ("DSPyEngine.on_initialize", []),
                                (
                                    "DSPyEngine.evaluate",
                                    [
                                        ("DSPyEngine.fetch_conversation_context", []),
                                        ("DSPyEngine.should_use_context", []),
                                    ],
                                ),
                                ("OutputUtilityComponent.on_post_evaluate", []),
                            ],
                        )
                    ],
                ),
                ("Flock.run_until_idle", [("Flock.shutdown", [])]),
            ],
        )
    ]
    (pizza,) = await flock.store.query(type="tests.models.Pizza")
    assert pizza.payload == Pizza(name="fake name", toppings=[])  # the schema default
    assert pizza.produced_by == "pizza_master"
    (request,) = local_llm.requests
    assert request["model"] == "gpt-4o"
    assert '"topic": "spicy"' in request["messages"][-1]["content"]
    (evaluate,) = capture.named("DSPyEngine.evaluate")
    assert evaluate.attributes["gen_ai.operation.name"] == "chat"
    assert evaluate.attributes["gen_ai.request.model"] == "gpt-4o"
    assert evaluate.attributes["gen_ai.provider.name"] == "openai"
    assert evaluate.attributes["gen_ai.usage.input_tokens"] == 42
    assert evaluate.attributes["gen_ai.usage.output_tokens"] == 17
    assert evaluate.attributes["workflow.name"] == "pizza_workflow"


async def test_signature_has_every_input_and_output_and_the_description(
    server: FakeOpenAIServer,
) -> None:
    @flock_type
    class Verdict(BaseModel):
        """A judge's decision."""

        accepted: bool

    flock = Flock()
    flock.agent("judge").description("Judge the pizza strictly").consumes(Pizza).publishes(
        Review, Verdict
    ).with_engines(DSPyEngine("openai/judge", api_base=server.base_url, api_key="k"))
    outputs = [
        a.payload for a in await flock.invoke("judge", Pizza(name="margherita", toppings=["basil"]))
    ]
    assert sorted(type(o).__name__ for o in outputs) == ["Review", "Verdict"]
    assert Verdict(accepted=True) in outputs
    system = server.requests[0]["messages"][0]["content"]
    assert "1. `pizza` (Pizza)" in system
    assert "`review` (Review)" in system and "`verdict` (Verdict)" in system
    assert "A judge's decision." in system
    assert "Judge the pizza strictly" in system
    assert "`context`" not in system  # nothing earlier in this conversation


async def test_conversation_context_comes_from_the_same_correlation_id(
    server: FakeOpenAIServer, capture: SpanCapture
) -> None:
    flock = Flock("openai/m", tracer_provider=capture.provider)
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(
        DSPyEngine(api_base=server.base_url)
    )
    await flock.publish(Idea(topic="first"), correlation_id="conv-1")
    await flock.run_until_idle()
    await flock.publish(Idea(topic="other conversation"), correlation_id="conv-2")
    await flock.run_until_idle()
    await flock.publish(Idea(topic="second"), correlation_id="conv-1")
    await flock.run_until_idle()

    third = server.requests[2]["messages"]
    assert "[[ ## context ## ]]" in third[-1]["content"]
    context = third[-1]["content"].split("[[ ## context ## ]]", 1)[1]
    assert "first" in context and "fake name" in context  # the idea and the chef's pizza
    assert "other conversation" not in context
    assert "second" not in context  # the input itself is not repeated as context
    used = [
        s.attributes["flock.context.used"] for s in capture.named("DSPyEngine.should_use_context")
    ]
    counts = [
        s.attributes["flock.context.count"]
        for s in capture.named("DSPyEngine.fetch_conversation_context")
    ]
    assert used == [False, False, True]
    assert counts == [0, 0, 2]


async def test_context_limit_zero_turns_context_off(server: FakeOpenAIServer) -> None:
    flock = Flock("openai/m")
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(
        DSPyEngine(api_base=server.base_url, context_limit=0)
    )
    for topic in ("a", "b"):
        await flock.publish(Idea(topic=topic), correlation_id="same")
        await flock.run_until_idle()
    assert all("context" not in r["messages"][-1]["content"] for r in server.requests)


async def test_missing_api_key_names_the_variable_and_the_alternatives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE"):
        monkeypatch.delenv(var, raising=False)
    flock = Flock("openai/gpt-4o")
    flock.agent("chef").consumes(Idea).publishes(Pizza)
    await flock.publish(Idea(topic="x"))
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle()
    (failure,) = info.value.failures
    cause = failure.__cause__
    assert isinstance(cause, MissingAPIKeyError)
    assert "OPENAI_API_KEY" in str(cause)
    assert "OPENAI_BASE_URL" in str(cause)
    assert ".with_engines(" in str(cause)
    assert await flock.store.query(type="tests.models.Pizza") == []


async def test_a_missing_api_key_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE"):
        monkeypatch.delenv(var, raising=False)
    flock = Flock("openai/gpt-4o")
    flock.agent("chef").consumes(Idea).publishes(Pizza).retries(3, backoff=5)
    with pytest.raises(AgentRunError) as info:  # at once, not after 5 + 10 + 20 s of backoff
        await asyncio.wait_for(flock.invoke("chef", Idea(topic="x")), 10)
    assert info.value.attempts == 1 and isinstance(info.value.__cause__, MissingAPIKeyError)


def test_an_empty_api_key_with_a_base_url_uses_the_local_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert DSPyEngine()._credentials("openai/gpt-4o") == ("http://127.0.0.1:9/v1", "local")


async def test_other_providers_name_their_own_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # not read for anthropic
    with pytest.raises(MissingAPIKeyError, match="ANTHROPIC_API_KEY") as info:
        DSPyEngine("anthropic/claude-sonnet-4").language_model()
    assert "OPENAI_BASE_URL" not in str(info.value)


async def test_no_model_anywhere_says_where_to_put_one() -> None:
    flock = Flock()
    flock.agent("chef").consumes(Idea).publishes(Pizza)
    with pytest.raises(AgentRunError, match=r"Flock\('openai/gpt-4o'\)") as info:
        await flock.invoke("chef", Idea(topic="x"))
    assert isinstance(info.value.__cause__, ConfigurationError)
    assert "FLOCK_MODEL" in str(info.value)


@pytest.mark.parametrize(
    ("env", "model"),
    [
        ({"FLOCK_MODEL": "openai/from-flock"}, "from-flock"),
        ({"DEFAULT_MODEL": "openai/from-peer"}, "from-peer"),  # flock-core's variable
        ({"FLOCK_MODEL": "openai/first", "DEFAULT_MODEL": "openai/second"}, "first"),
    ],
)
async def test_the_model_can_come_from_the_environment(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], model: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    flock = Flock()
    assert Flock("openai/explicit").model == "openai/explicit"  # an argument wins
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(
        DSPyEngine(api_base=server.base_url)
    )
    await flock.invoke("chef", Idea(topic="x"))
    assert server.requests[0]["model"] == model


async def test_agent_model_overrides_the_flock_model(server: FakeOpenAIServer) -> None:
    flock = Flock("openai/flock-wide")
    flock.agent("chef").consumes(Idea).publishes(Pizza).model("openai/special").with_engines(
        DSPyEngine(api_base=server.base_url)
    )
    await flock.invoke("chef", Idea(topic="x"))
    assert server.requests[0]["model"] == "special"


async def test_dummy_lm_works_in_process() -> None:
    from dspy.utils import DummyLM

    lm = DummyLM([{"review": '{"score": 7}'}])
    flock = Flock()
    flock.agent("critic").consumes(Pizza).publishes(Review).with_engines(DSPyEngine(lm=lm))
    (review,) = await flock.invoke("critic", Pizza(name="p"))
    assert review.payload == Review(score=7)


async def test_an_invalid_answer_fails_the_run_with_the_reason(capture: SpanCapture) -> None:
    with FakeOpenAIServer(lambda request: dspy_reply(review={"score": 99})) as server:
        flock = Flock("openai/m", tracer_provider=capture.provider)
        flock.agent("critic").consumes(Pizza).publishes(Review).with_engines(
            DSPyEngine(api_base=server.base_url)
        )
        await flock.publish(Pizza(name="p"))
        with pytest.raises(AgentFailures) as info:
            await flock.run_until_idle()
    assert "critic" in str(info.value.failures[0])
    assert "[review]" in str(info.value.failures[0].__cause__)  # DSPy names the bad field
    (execute,) = capture.named("Agent.execute")
    assert execute.status.status_code.name == "ERROR"
    (evaluate,) = capture.named("DSPyEngine.evaluate")  # the failed call names its model
    assert evaluate.attributes["gen_ai.request.model"] == "m"
    assert await flock.store.query(type="tests.models.Review") == []


async def test_calls_run_concurrently_without_blocking_the_loop() -> None:
    in_flight = 0
    peak = 0
    lock = threading.Lock()
    release = threading.Event()

    def responder(request: dict[str, Any]) -> str:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
            if in_flight == 3:
                release.set()
        release.wait(timeout=10)  # holds every request until three are open at once
        with lock:
            in_flight -= 1
        return schema_responder(request)

    with FakeOpenAIServer(responder) as server:
        flock = Flock("openai/m")
        flock.agent("chef").consumes(Idea).publishes(Pizza).max_concurrency(3).with_engines(
            DSPyEngine(api_base=server.base_url)
        )
        await flock.publish([Idea(topic=str(i)) for i in range(3)])
        await flock.run_until_idle(timeout=30)
    assert peak == 3
    assert release.is_set()
    assert len(await flock.store.query(type="tests.models.Pizza")) == 3


async def test_several_inputs_of_one_type_become_a_list_field() -> None:
    from flock.artifacts import Artifact

    inputs = [Artifact(type="tests.models.Idea", payload=Idea(topic=t)) for t in ("a", "b")]
    inputs.append(Artifact(type="tests.models.Pizza", payload=Pizza(name="p")))
    values = DSPyEngine()._input_values(inputs)
    assert values == {"idea": [Idea(topic="a"), Idea(topic="b")], "pizza": Pizza(name="p")}


@pytest.mark.parametrize(
    ("name", "snake"),
    [
        ("PizzaIdea", "pizza_idea"),
        ("HTTPRequest", "http_request"),
        ("Idea", "idea"),
        ("A1B", "a1_b"),
    ],
)
def test_field_names_are_snake_case(name: str, snake: str) -> None:
    assert _snake(name) == snake


def test_importing_flock_does_not_import_dspy() -> None:
    code = "import sys, flock; import flock.engines; print('dspy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fake_server_fills_every_output_field_from_its_schema() -> None:
    system = (
        "Your output fields are:\n1. `review` (Review): \n2. `note` (str):\nAll interactions will\n\n"
        "[[ ## review ## ]]\n{review}        # note: the value you produce must adhere to the JSON"
        ' schema: {"type": "object", "properties": {"score": {"type": "integer", "minimum": 0}}}'
        "\n\n[[ ## note ## ]]\n{note}\n\n[[ ## completed ## ]]"
    )
    reply = schema_responder({"messages": [{"role": "system", "content": system}]})
    assert reply == dspy_reply(review={"score": 1}, note="fake note")
