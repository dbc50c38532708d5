"""The seed's pizza workflow, used by ``flock demo`` / ``make demo``.

With ``OPENAI_API_KEY`` (or ``OPENAI_BASE_URL``) set the chef is the default DSPy engine on
``openai/gpt-4o``; otherwise a plain-Python engine stands in, so the demo runs offline.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, Field

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


def offline_chef(idea: PizzaIdea) -> Pizza:
    words = [w for w in idea.topic.replace(",", " ").split() if w]
    return Pizza(
        name=f"The {' '.join(w.capitalize() for w in words)} Pizza",
        toppings=["mozzarella", "tomato", *words[:3]],
        description=f"A pizza inspired by {idea.topic!r}.",
    )


def uses_llm() -> bool:
    return bool(os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL"))


def build_flock() -> Flock:
    flock = Flock("openai/gpt-4o")
    chef = (
        flock.agent("pizza_master")
        .description("Invents a pizza from an idea")
        .consumes(PizzaIdea)
        .publishes(Pizza)
    )
    if not uses_llm():
        chef.with_engines(offline_chef)
    return flock


async def run_demo(topic: str = "spicy pineapple with chili honey") -> list[Pizza]:
    flock = build_flock()
    async with flock.traced_run("pizza_workflow") as span:
        span.set_attribute("pipeline.version", "2.0")
        await flock.publish(PizzaIdea(topic=topic))
        await flock.run_until_idle()
    return [a.payload for a in await flock.store.query(type="Pizza")]  # type: ignore[misc]
