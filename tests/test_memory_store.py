from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from flock.artifacts import Artifact
from flock.store import MemoryStore
from tests.models import Idea, Pizza


async def test_consumers_in_order_and_queries_by_every_index() -> None:
    store = MemoryStore()
    idea = Artifact(type="tests.models.Idea", payload=Idea(topic="a"), correlation_id="c1")
    pizza = Artifact(
        type="tests.models.Pizza", payload=Pizza(name="p"), produced_by="chef", correlation_id="c1"
    )
    other = Artifact(type="tests.models.Idea", payload=Idea(topic="b"), correlation_id="c2")
    await store.put([idea, pizza, other])
    assert await store.consumers(idea.id) == []
    for agent in ("chef", "critic", "chef"):
        await store.record_consumption(idea.id, agent)
    await store.record_consumption(pizza.id, "critic")
    assert await store.consumers(idea.id) == ["chef", "critic", "chef"]
    assert await store.consumers(pizza.id) == ["critic"]
    returned = await store.consumers(pizza.id)
    returned.append("mutated")  # a copy: the store is unchanged
    assert await store.consumers(pizza.id) == ["critic"]
    assert await store.query(type="tests.models.Idea") == [idea, other]
    assert await store.query(correlation_id="c1") == [idea, pizza]
    assert await store.query(produced_by="chef") == [pizza]
    assert await store.query(type="tests.models.Idea", correlation_id="c2") == [other]
    assert await store.query(correlation_id="c1", limit=1) == [pizza]
    assert await store.query(limit=0) == []
    assert await store.query(correlation_id="c2") == [other]
    assert await store.query(correlation_id="c2", limit=1) == [other]
    assert await store.query(correlation_id="nope") == []
    late = Artifact(type="tests.models.Idea", payload=Idea(topic="late"), correlation_id="c1")
    await store.put([late])
    assert await store.query(correlation_id="c1") == [idea, pizza, late]
    assert await store.get(other.id) is other and await store.get("nope") is None
    assert len(store) == 4
    # Typed payloads: Idea in, list[Idea] out, with the same filters.
    ideas: list[Idea] = await store.payloads(Idea)
    assert ideas == [Idea(topic="a"), Idea(topic="b"), Idea(topic="late")]
    assert await store.payloads(Idea, correlation_id="c1", limit=1) == [Idea(topic="late")]
    assert await store.payloads(Pizza, produced_by="chef") == [Pizza(name="p")]


class Loose(BaseModel):
    text: str

    model_config = ConfigDict(extra="allow")


async def test_payloads_with_every_field_set_share_one_fields_set_of_equal_value() -> None:
    store = MemoryStore()
    full = [Pizza(name="a", toppings=["x"]), Pizza(name="b", toppings=[])]
    partial = Pizza(name="c")  # toppings left at its default: not in model_fields_set
    loose = [Loose(text="d"), Loose(text="e")]
    await store.put([Artifact(type="tests.models.Pizza", payload=p) for p in [*full, partial]])
    await store.put([Artifact(type="Loose", payload=p) for p in loose])
    assert full[0].model_fields_set is full[1].model_fields_set
    assert full[0].model_fields_set == {"name", "toppings"}
    assert partial.model_fields_set == {"name"}
    assert partial.model_fields_set is not full[0].model_fields_set
    assert loose[0].model_fields_set is not loose[1].model_fields_set  # extra fields may be added
    # What Pydantic does with the set leaves it as it is.
    full[0].name = "changed"
    partial.toppings = ["y"]
    loose[0].extra_field = 1
    assert full[1].model_fields_set == {"name", "toppings"}
    assert partial.model_fields_set == {"name", "toppings"}
    assert loose[1].model_fields_set == {"text"}
    copy = full[0].model_copy(update={"name": "copy"})
    assert copy.model_fields_set == {"name", "toppings"}
    assert copy.model_fields_set is not full[0].model_fields_set
    assert full[1].model_dump(exclude_unset=True) == {"name": "b", "toppings": []}
    assert partial.model_dump(exclude_unset=True) == {"name": "c", "toppings": ["y"]}
