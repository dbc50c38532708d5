"""Arguments that are not what a call takes: a clear ConfigurationError, and nothing lost.

``store.query(type=...)`` takes a registered class or its name on every store;
``run_until_idle(timeout=)`` positive finite seconds; counts are ints, never bools.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from flock.artifacts import Artifact
from flock.exceptions import ConfigurationError
from flock.orchestrator import Flock
from flock.registry import flock_type
from flock.store import MemoryStore, Store
from flock.store.postgres import PostgresStore
from tests.models import Idea, Pizza
from tests.store.conftest import pg_dsn, pg_schema  # noqa: F401  (fixtures)


class ScriptDish(BaseModel):
    """A type as a script registers it: its module is ``__main__``."""

    name: str


ScriptDish.__module__ = "__main__"
flock_type(ScriptDish)
SCRIPT_DISH = "__main__.ScriptDish"


class Unregistered(BaseModel):
    x: int


class NotAModel:
    pass


@pytest.fixture(params=["memory", "postgres"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")
    pg = PostgresStore(dsn, schema=schema, reconnect_timeout=10.0)
    yield pg
    await pg.close()


async def _filled(store: Store) -> tuple[Artifact, Artifact]:
    dish = Artifact(type=SCRIPT_DISH, payload=ScriptDish(name="margherita"), correlation_id="c")
    idea = Artifact(type="tests.models.Idea", payload=Idea(topic="t"), correlation_id="c")
    await store.put([dish, idea])
    return dish, idea


# query(type=) ------------------------------------------------------------------------


async def test_query_type_takes_the_class_or_any_of_its_names(store: Store) -> None:
    dish, idea = await _filled(store)
    for type_ in (ScriptDish, "ScriptDish", SCRIPT_DISH):
        assert [a.id for a in await store.query(type=type_)] == [dish.id], type_
    assert [a.id for a in await store.query(type=Idea, correlation_id="c")] == [idea.id]
    assert await store.query(type=Pizza) == []  # registered, none stored: really empty
    assert [d.name for d in await store.payloads(ScriptDish)] == ["margherita"]


async def test_query_type_takes_the_exact_name_of_a_type_not_registered_here() -> None:
    # A model renamed since, or stored by other code: its stored name filters. (PostgreSQL
    # loads each payload into its registered model, so there it must be registered anyway.)
    store = MemoryStore()
    other = Artifact(type="other_service.Invoice", payload=Idea(topic="i"), correlation_id="c")
    await store.put([other])
    assert [a.id for a in await store.query(type="other_service.Invoice")] == [other.id]
    assert await store.query(type="other_service.Nope") == []


async def test_query_refuses_a_short_name_that_several_types_share(store: Store) -> None:
    from flock.registry import registry

    class Twin(BaseModel):
        x: int = 0

    first = registry.register(Twin, name="tests.twins.a.Twin")
    Twin2 = type("Twin", (BaseModel,), {"__module__": "tests.twins.b", "__annotations__": {}})
    second = registry.register(Twin2, name="tests.twins.b.Twin")
    with pytest.raises(ConfigurationError, match=r"'Twin' is ambiguous; use one of: "):
        await store.query(type="Twin")
    assert await store.query(type=first) == [] and await store.query(type=second) == []


@pytest.mark.parametrize(
    ("type_", "message"),
    [
        (ScriptDish(name="x"), r"not an instance: got ScriptDish\(name='x'\); pass the class"),
        ("  ", r"got '  '"),
        (Unregistered, r"Unregistered is not a registered flock type"),
        (NotAModel, r"registered model class .* got <class"),
        (5, r"registered model class .* got 5"),
        (["ScriptDish"], r"got \['ScriptDish'\]"),
    ],
    ids=["instance", "blank name", "unregistered class", "not a model", "int", "list"],
)
async def test_query_refuses_what_is_not_a_registered_type(
    store: Store, type_: Any, message: str
) -> None:
    dish, _ = await _filled(store)
    with pytest.raises(ConfigurationError, match=r"query\(type=\) takes|query\(type=\): "):
        await store.query(type=type_)
    with pytest.raises(ConfigurationError, match=message):
        await store.query(type=type_)
    assert [a.id for a in await store.query(type=ScriptDish)] == [dish.id]  # nothing lost


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": True}, "limit must be an int ≥ 0, got True"),
        ({"limit": "2"}, "limit must be an int ≥ 0, got '2'"),
        ({"limit": -1}, "limit must be an int ≥ 0, got -1"),
        ({"correlation_id": 5}, "correlation_id= must be a non-blank string"),
        ({"produced_by": ["chef"]}, r"produced_by= must be a non-blank string.*\['chef'\]"),
    ],
)
async def test_query_refuses_filters_that_are_not_filters(
    store: Store, kwargs: dict[str, Any], message: str
) -> None:
    await _filled(store)
    with pytest.raises(ConfigurationError, match=message):
        await store.query(**kwargs)


async def test_payloads_refuses_an_instance() -> None:
    store = MemoryStore()
    await _filled(store)
    with pytest.raises(ConfigurationError, match=r"payloads\(\) takes .* not an instance"):
        await store.payloads(ScriptDish(name="x"))  # type: ignore[arg-type]


# run_until_idle(timeout=) ------------------------------------------------------------


@pytest.mark.parametrize(
    "timeout",
    ["x", -1, 0, 0.0, math.nan, math.inf, -math.inf, True, False, timedelta(seconds=-5)],
    ids=repr,
)
async def test_run_until_idle_refuses_a_timeout_that_is_not_positive_seconds(
    timeout: Any,
) -> None:
    flock = Flock()
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(lambda i: Pizza(name=i.topic))
    await flock.publish(Idea(topic="kept"))
    with pytest.raises(
        ConfigurationError,
        match=r"run_until_idle\(timeout=\) must be a finite number of seconds > 0, got ",
    ):
        await flock.run_until_idle(timeout=timeout)
    await flock.run_until_idle(timeout=5)  # the run was not lost
    assert [p.name for p in await flock.store.payloads(Pizza)] == ["kept"]


async def test_run_until_idle_takes_a_timedelta_as_the_builder_does() -> None:
    flock = Flock()
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(lambda i: Pizza(name=i.topic))
    await flock.publish(Idea(topic="kept"))
    await flock.run_until_idle(timeout=timedelta(seconds=5))
    assert [p.name for p in await flock.store.payloads(Pizza)] == ["kept"]


# counts: ints, never bools -----------------------------------------------------------


@pytest.mark.parametrize("value", [True, False, 0, 2.0, "3"], ids=repr)
def test_flock_refuses_a_max_agent_runs_that_is_not_an_int(value: Any) -> None:
    with pytest.raises(
        ConfigurationError, match=f"max_agent_runs must be an int ≥ 1, got {value!r}"
    ):
        Flock(max_agent_runs=value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": True}, "max_attempts must be an int ≥ 1, got True"),
        ({"max_attempts": 0}, "max_attempts must be an int ≥ 1, got 0"),
        ({"max_connections": "8"}, "max_connections must be an int ≥ 2, got '8'"),
        ({"max_connections": True}, "max_connections must be an int ≥ 2, got True"),
    ],
)
def test_postgres_store_refuses_counts_that_are_not_ints(
    kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        PostgresStore("postgresql://nobody@127.0.0.1:1/none", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concurrency": True}, "concurrency must be an int ≥ 1, got True"),
        ({"concurrency": 0}, "concurrency must be an int ≥ 1, got 0"),
        ({"lease": True}, r"work\(lease=\) must be a finite number of seconds > 0, got True"),
        ({"lease": "x"}, r"work\(lease=\) must be a finite number of seconds > 0, got 'x'"),
        ({"lease": math.nan}, r"work\(lease=\) must be a finite number of seconds > 0, got nan"),
    ],
)
async def test_work_refuses_a_concurrency_or_lease_that_is_not_one(
    pg_dsn: str,  # noqa: F811
    pg_schema: str,  # noqa: F811
    kwargs: dict[str, Any],
    message: str,
) -> None:
    store = PostgresStore(pg_dsn, schema=pg_schema, reconnect_timeout=10.0)
    try:
        flock = Flock(store=store)
        with pytest.raises(ConfigurationError, match=message):
            await flock.work(until_idle=True, **kwargs)
    finally:
        await store.close()
