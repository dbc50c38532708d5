from __future__ import annotations

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
    assert await store.get(other.id) is other and await store.get("nope") is None
    assert len(store) == 3
