"""The seed's pizza workflow, used by ``flock demo`` / ``make demo``.

The chef is the default DSPy engine on ``openai/gpt-4o``. With ``OPENAI_API_KEY`` (or
``OPENAI_BASE_URL``) set it calls that model; otherwise a local stand-in OpenAI server on
127.0.0.1 answers (:mod:`flock.fake_llm`), so the demo runs offline with the same spans.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from pydantic import BaseModel, Field

from flock.fake_llm import FakeOpenAIServer, dspy_reply
from flock.orchestrator import Flock
from flock.registry import flock_type

__all__ = ["Pizza", "PizzaIdea", "build_flock", "run_demo"]


@flock_type(name="PizzaIdea")
class PizzaIdea(BaseModel):
    topic: str = Field(description="what the pizza should be about")


@flock_type(name="Pizza")
class Pizza(BaseModel):
    name: str
    toppings: list[str]
    description: str


_FILLER = {"a", "an", "and", "the", "with", "of", "on", "in", "for", "some"}


def offline_chef(idea: PizzaIdea) -> Pizza:
    words = [w for w in idea.topic.replace(",", " ").split() if w.lower() not in _FILLER]
    return Pizza(
        name=f"The {' '.join(w.capitalize() for w in words)} Pizza",
        toppings=["mozzarella", "tomato", *words[:3]],
        description=f"A pizza inspired by {idea.topic!r}.",
    )


def offline_llm(request: dict[str, Any]) -> str:
    """The stand-in model: answers DSPy's request with :func:`offline_chef`'s pizza."""
    prompt = request["messages"][-1]["content"]
    found = re.search(r"\[\[ ## pizza_idea ## \]\]\s*(\{.*?\})\s*(?:\[\[|\n\n|$)", prompt, re.S)
    topic = json.loads(found.group(1))["topic"] if found else "mystery"
    return dspy_reply(pizza=offline_chef(PizzaIdea(topic=topic)).model_dump())


def uses_llm() -> bool:
    return bool(os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"))


def build_flock(api_base: str | None = None) -> Flock:
    """The seed's flock; ``api_base`` points the chef at another OpenAI-compatible server."""
    from flock.engines.dspy import DSPyEngine

    flock = Flock("openai/gpt-4o")
    chef = (
        flock.agent("pizza_master")
        .description("Invents a pizza from an idea")
        .consumes(PizzaIdea)
        .publishes(Pizza)
    )
    if api_base:
        chef.with_engines(DSPyEngine(api_base=api_base))
    return flock


async def run_demo(
    topic: str = "spicy pineapple with chili honey",
) -> tuple[list[Pizza], str | None]:
    """Run the seed's workflow; returns the pizzas and the trace id of its ``traced_run``
    (``None`` when tracing is off)."""
    if uses_llm():
        return await _workflow(build_flock(), topic)
    with FakeOpenAIServer(offline_llm) as server:
        return await _workflow(build_flock(server.base_url), topic)


async def _workflow(flock: Flock, topic: str) -> tuple[list[Pizza], str | None]:
    async with flock.traced_run("pizza_workflow") as span:
        span.set_attribute("pipeline.version", "2.0")
        await flock.publish(PizzaIdea(topic=topic))
        await flock.run_until_idle()
    context = span.get_span_context()
    trace_id = f"{context.trace_id:032x}" if context.is_valid else None
    pizzas = [a.payload for a in await flock.store.query(type="Pizza")]
    return pizzas, trace_id  # type: ignore[return-value]
