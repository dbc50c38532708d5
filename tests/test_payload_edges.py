"""Payload and routing edge cases found in review: ids under random.seed(), re-puts, async
where= predicates, the scripted test engine with async functions, what re-validation at
publish keeps, and payloads JSON cannot show."""

from __future__ import annotations

import random

import pytest
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, computed_field

from flock import Flock, flock_type
from flock.exceptions import ConfigurationError
from flock.registry import registry
from flock.testing import ScriptedEngine
from tests.models import Idea, Pizza


async def test_ids_do_not_repeat_when_the_application_seeds_random() -> None:
    flock = Flock()
    artifacts = []
    for topic in ("a", "b", "c"):
        random.seed(0)
        artifacts.append(await flock.publish(Idea(topic=topic)))
    assert len({a.id for a in artifacts}) == 3
    assert len({a.correlation_id for a in artifacts}) == 3
    assert [a.payload.topic for a in await flock.store.query()] == ["a", "b", "c"]


async def test_putting_an_artifact_again_keeps_the_first_copy_and_the_indexes() -> None:
    flock = Flock()
    idea = await flock.publish(Idea(topic="a"))
    await flock.store.put([idea])
    assert len(await flock.store.query(type=registry.name_of(Idea))) == 1
    assert len(await flock.store.query(correlation_id=idea.correlation_id)) == 1


def test_an_async_where_predicate_is_refused() -> None:
    async def is_big(idea: Idea) -> bool:
        return len(idea.topic) > 3

    with pytest.raises(ConfigurationError, match="async function"):
        Flock().agent("chef").consumes(Idea, where=is_big)


async def test_the_scripted_engine_awaits_async_functions() -> None:
    async def cook(idea: Idea) -> Pizza:
        return Pizza(name=idea.topic)

    flock = Flock()
    chef = flock.agent("chef").consumes(Idea).publishes(Pizza).without_output()
    chef.with_engines(ScriptedEngine(cook))
    (pizza,) = await flock.invoke(chef, Idea(topic="x"))
    assert pizza.payload == Pizza(name="x")


class Animal(BaseModel):
    name: str


class Dog(Animal):
    breed: str


@flock_type
class Pet(BaseModel):
    animal: Animal
    api_token: str = Field(exclude=True)
    _seen: dict[str, int] = PrivateAttr(default_factory=dict)


@flock_type
class Square(BaseModel):
    model_config = ConfigDict(extra="forbid")
    side: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def area(self) -> float:
        return self.side**2


async def test_publishing_keeps_what_a_dump_would_lose() -> None:
    flock = Flock()
    pet = Pet(animal=Dog(name="rex", breed="lab"), api_token="t")
    pet._seen["k"] = 1
    stored = (await flock.publish(pet)).payload
    assert isinstance(stored, Pet)
    assert stored.animal == Dog(name="rex", breed="lab") and stored.api_token == "t"
    assert stored._seen == {"k": 1}
    square = (await flock.publish(Square(side=2))).payload
    assert isinstance(square, Square) and square.area == 4


@flock_type
class Blob(BaseModel):
    data: bytes


@flock_type
class Size(BaseModel):
    n: int


async def test_a_payload_json_cannot_show_still_runs_traced() -> None:
    from flock.testing import SpanCapture

    capture = SpanCapture()
    flock = Flock(tracer_provider=capture.provider)
    flock.agent("sizer").consumes(Blob).publishes(Size).with_engines(
        lambda blob: Size(n=len(blob.data))
    ).without_output()
    blob = await flock.publish(Blob(data=b"\xff\xfe"))
    await flock.run_until_idle()
    assert [a.payload for a in await flock.store.query(type=registry.name_of(Size))] == [Size(n=2)]
    (execute,) = capture.named("Agent.execute")
    assert "unserializable" in str(execute.attributes["input.value"])
    assert "unserializable" in str(blob.to_dict()["payload"])
