"""Payloads on PostgreSQL load back as the memory store keeps them: fields a dump leaves out
(``Field(exclude=True)``, ``exclude_if``) are stored too, at any depth; a payload that would
still come back different (a lossy custom serializer, a subclass instance, NaN) is refused with
the fields named, and nothing is stored."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, computed_field, field_serializer
from pydantic.dataclasses import dataclass

from flock.exceptions import PayloadValidationError
from flock.orchestrator import Flock
from flock.registry import flock_type
from flock.store.memory import MemoryStore
from flock.store.postgres import PostgresStore

NAME = "tests.store.roundtrip."


@flock_type(name=NAME + "Job")
class Job(BaseModel):
    name: str
    priority: int = Field(default=0, exclude=True)


@flock_type(name=NAME + "Account")
class Account(BaseModel):
    user: str
    api_token: str = Field(exclude=True)  # required: a dump without it would not load


class Step(BaseModel):
    label: str
    weight: int = Field(exclude=True)
    retries: int = Field(default=0, exclude_if=lambda n: n > 1)


@dataclass
class Limits:
    budget: int = Field(exclude=True)


@flock_type(name=NAME + "Plan")
class Plan(BaseModel):
    steps: list[Step]
    by_name: dict[str, Step]
    limits: Limits
    hidden: Step = Field(exclude=True)
    alias_kept: str = Field(default="", alias="aliasKept", exclude=True)
    sub: Plan | None = None


@flock_type(name=NAME + "Square")
class Square(BaseModel):
    model_config = ConfigDict(extra="forbid")
    side: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def area(self) -> float:
        return self.side**2


@flock_type(name=NAME + "Masked")
class Masked(BaseModel):
    user: str
    token: str

    @field_serializer("token")
    def mask(self, token: str) -> str:
        return "***"


class Animal(BaseModel):
    name: str


class Dog(Animal):
    breed: str


@flock_type(name=NAME + "Kennel")
class Kennel(BaseModel):
    animal: Animal


@flock_type(name=NAME + "Loose")
class Loose(BaseModel):
    meta: dict[str, Any]


@flock_type(name=NAME + "Gauge")
class Gauge(BaseModel):
    values: list[float]
    peak: float | None = None


def a_plan() -> Plan:
    return Plan(
        steps=[Step(label="a", weight=1, retries=5)],
        by_name={"b": Step(label="b", weight=2)},
        limits=Limits(budget=3),
        hidden=Step(label="h", weight=4),
        aliasKept="kept",
        sub=Plan(steps=[], by_name={}, limits=Limits(budget=5), hidden=Step(label="s", weight=6)),
    )


@pytest.mark.parametrize("kind", ["memory", "postgres"])
async def test_an_agent_sees_excluded_fields_as_published(
    kind: str, pg_store: PostgresStore
) -> None:
    store = MemoryStore() if kind == "memory" else pg_store
    seen: list[Any] = []
    flock = Flock(store=store)
    flock.agent("worker").consumes(Job).with_engines(seen.append).without_output()
    flock.agent("planner").consumes(Plan).with_engines(seen.append).without_output()
    job = await flock.publish(Job(name="x", priority=9))
    plan = await flock.publish(a_plan())
    await flock.run_until_idle(timeout=30)
    assert sorted(seen, key=lambda p: type(p).__name__) == [Job(name="x", priority=9), a_plan()]
    stored_job, stored_plan = await store.get(job.id), await store.get(plan.id)
    assert stored_job is not None and stored_job.payload == Job(name="x", priority=9)
    assert stored_plan is not None and stored_plan.payload == a_plan()
    account = await flock.publish(Account(user="u", api_token="t"))
    stored = await store.get(account.id)
    assert stored is not None and stored.payload == Account(user="u", api_token="t")


async def test_computed_fields_are_computed_again_rather_than_stored(
    pg_store: PostgresStore,
) -> None:
    square = await Flock(store=pg_store).publish(Square(side=2))
    stored = await pg_store.get(square.id)
    assert stored is not None and stored.payload == Square(side=2) and stored.payload.area == 4


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (Masked(user="u", token="secret"), "'token'"),
        (Kennel(animal=Dog(name="rex", breed="lab")), "'animal'"),
        (Loose(meta={"pair": (1, 2)}), "'meta'"),
    ],
    ids=["lossy-serializer", "subclass", "tuple-in-any"],
)
async def test_a_payload_that_would_come_back_different_is_refused_naming_the_field(
    pg_store: PostgresStore, payload: BaseModel, field: str
) -> None:
    with pytest.raises(PayloadValidationError, match="would not load back") as info:
        await Flock(store=pg_store).publish(payload)
    message = str(info.value)
    assert f"field(s) {field} would come back different" in message
    assert "NaN" not in message and "secret" not in message
    assert await pg_store.query() == []


@pytest.mark.parametrize(
    ("payload", "what"),
    [
        (Gauge(values=[1.0, float("nan")]), "field(s) 'values' would not validate"),
        (Gauge(values=[1.0], peak=float("inf")), "field(s) 'peak' would come back different"),
    ],
    ids=["nan-in-list", "infinity-in-optional"],
)
async def test_nan_and_infinity_are_refused_naming_the_field(
    pg_store: PostgresStore, payload: Gauge, what: str
) -> None:
    with pytest.raises(PayloadValidationError, match="would not load back") as info:
        await Flock(store=pg_store).publish(payload)
    assert what in str(info.value) and "NaN and infinity" in str(info.value)
    assert await pg_store.query() == []


async def test_a_nul_character_in_an_excluded_field_is_refused(pg_store: PostgresStore) -> None:
    with pytest.raises(PayloadValidationError, match="NUL character"):
        await Flock(store=pg_store).publish(Account(user="u", api_token="a\x00b"))
    assert await pg_store.query() == []


class Guarded(BaseModel):
    value: int
    _lock: Any = PrivateAttr(default_factory=threading.Lock)  # never equal to another's


@flock_type(name=NAME + "Vault")
class Vault(BaseModel):
    items: list[Guarded]


async def test_private_attributes_do_not_count_at_any_depth(pg_store: PostgresStore) -> None:
    # The nested models' private locks differ from those of the loaded copy: compared value
    # by value (reading model_fields from the class: on an instance pydantic deprecates it).
    vault = Vault(items=[Guarded(value=1), Guarded(value=2)])
    await Flock(store=pg_store).publish(vault)
    assert [p.items[1].value for p in await pg_store.payloads(Vault)] == [2]
