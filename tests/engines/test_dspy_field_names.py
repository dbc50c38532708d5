"""DSPyEngine's signature field names never collide (DummyLM or the local stand-in server)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from flock import Flock, flock_type
from flock.engines.dspy import DSPyEngine
from flock.fake_llm import FakeOpenAIServer, dspy_reply
from tests.models import Idea, Review


@flock_type
class Draft(BaseModel):
    """A text being refined."""

    text: str


@flock_type
class Context(BaseModel):
    """Background the reader is given (its name is the engine's own context field)."""

    facts: str


@flock_type
class Items(BaseModel):
    """Named like a dspy.Prediction method."""

    names: list[str]


@flock_type
class Signature(BaseModel):
    """Named like a dspy.Signature attribute."""

    author: str


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as fake:
        yield fake


def _prompt(request: dict[str, Any]) -> str:
    return "\n".join(str(m["content"]) for m in request["messages"])


async def test_an_agent_that_consumes_and_publishes_one_type_sees_its_input() -> None:
    def responder(request: dict[str, Any]) -> str:
        """Answers every output field DSPy asks for; "improved" only if it saw the input."""
        system, user = request["messages"][0]["content"], request["messages"][-1]["content"]
        asked = re.findall(r"^\d+\. `(\w+)`", system.split("Your output fields are:")[1], re.M)
        text = "improved" if "my original draft" in user else "input missing"
        return dspy_reply(**{name: {"text": text} for name in asked})

    with FakeOpenAIServer(responder) as server:
        flock = Flock("openai/m")
        flock.agent("editor").description("Improve the draft").consumes(Draft).publishes(
            Draft
        ).with_engines(DSPyEngine(api_base=server.base_url))
        await flock.publish(Draft(text="my original draft"))
        await flock.run_until_idle()

    drafts = [a for a in await flock.store.query() if isinstance(a.payload, Draft)]
    published = [a for a in drafts if a.produced_by == "editor"]
    assert [a.payload for a in published] == [Draft(text="improved")]
    (request,) = server.requests
    system, user = request["messages"][0]["content"], request["messages"][-1]["content"]
    assert "[[ ## draft ## ]]" in user and "my original draft" in user
    assert "Your input fields are:\n1. `draft` (Draft)" in system  # keeps its plain name
    assert "Your output fields are:\n1. `draft_output` (Draft)" in system  # a distinct one


async def test_same_type_in_and_out_with_dummy_lm() -> None:
    from dspy.utils import DummyLM

    lm = DummyLM([{"draft_output": '{"text": "improved"}'}])
    flock = Flock()
    flock.agent("editor").consumes(Draft).publishes(Draft).with_engines(DSPyEngine(lm=lm))
    (output,) = await flock.invoke("editor", Draft(text="my original draft"))
    assert output.payload == Draft(text="improved")
    assert "my original draft" in _prompt(lm.history[-1])


async def test_an_artifact_type_named_context_is_not_replaced_by_the_conversation(
    server: FakeOpenAIServer,
) -> None:
    flock = Flock("openai/m")
    flock.agent("reader").consumes(Context).publishes(Review).with_engines(
        DSPyEngine(api_base=server.base_url)
    )
    await flock.publish(Idea(topic="an earlier idea"), correlation_id="conv")
    await flock.publish(Context(facts="the sky is green"), correlation_id="conv")
    await flock.run_until_idle()

    (request,) = server.requests
    system, user = request["messages"][0]["content"], request["messages"][-1]["content"]
    assert "the sky is green" in user  # the input was not replaced by the conversation
    artifact, conversation = user.split("[[ ## context ## ]]", 1)
    assert "[[ ## context_input ## ]]" in artifact and "the sky is green" in artifact
    assert "an earlier idea" in conversation  # the conversation context is still there
    assert "`context_input` (Context)" in system
    assert "`context` (list[dict[str, Any]])" in system
    (review,) = await flock.store.query(type="tests.models.Review")
    assert review.produced_by == "reader"


async def test_an_artifact_type_named_context_without_conversation(
    server: FakeOpenAIServer,
) -> None:
    flock = Flock("openai/m")
    flock.agent("reader").consumes(Context).publishes(Context).with_engines(
        DSPyEngine(api_base=server.base_url)
    )
    (output,) = await flock.invoke("reader", Context(facts="the sky is green"))
    assert isinstance(output.payload, Context)
    (request,) = server.requests
    system, user = request["messages"][0]["content"], request["messages"][-1]["content"]
    assert "`context_input` (Context)" in system and "`context_output` (Context)" in system
    assert "[[ ## context_input ## ]]" in user and "the sky is green" in user


async def test_an_output_named_like_a_prediction_method_is_read_as_a_field() -> None:
    from dspy.utils import DummyLM

    lm = DummyLM([{"items": '{"names": ["a", "b"]}', "signature_output": '{"author": "x"}'}])
    flock = Flock()
    flock.agent("lister").consumes(Idea).publishes(Items, Signature).with_engines(DSPyEngine(lm=lm))
    outputs = [a.payload for a in await flock.invoke("lister", Idea(topic="t"))]
    assert outputs == [Items(names=["a", "b"]), Signature(author="x")]


def test_field_names_keep_plain_names_unless_they_collide() -> None:
    from flock.engines.dspy import _field_names

    assert _field_names([Idea], [Review]) == ({Idea: "idea"}, {Review: "review"})
    assert _field_names([Draft], [Draft]) == ({Draft: "draft"}, {Draft: "draft_output"})
    assert _field_names([Context, Signature], [Draft]) == (
        {Context: "context_input", Signature: "signature_input"},
        {Draft: "draft"},
    )
    other_idea = type("Idea", (BaseModel,), {"__annotations__": {"x": int}})
    assert _field_names([Idea, other_idea], [Idea]) == (
        {Idea: "idea", other_idea: "idea_input"},
        {Idea: "idea_output"},
    )
