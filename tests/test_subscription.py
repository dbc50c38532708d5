from __future__ import annotations

import itertools

import pytest

from flock.artifacts import Artifact
from flock.subscription import Subscription, matches
from tests.models import Idea


def artifact(
    type_: str = "Idea", produced_by: str = "external", tags: frozenset[str] = frozenset()
) -> Artifact:
    return Artifact(type=type_, payload=Idea(topic="t"), produced_by=produced_by, tags=tags)


@pytest.mark.parametrize(
    ("types", "from_agents", "tags", "where", "art_type", "producer", "art_tags"),
    list(
        itertools.product(
            [frozenset({"Idea"}), frozenset({"Other"}), frozenset({"Idea", "Other"})],
            [None, frozenset({"chef"})],
            [None, frozenset({"hot"})],
            [(), (lambda p: True,), (lambda p: False,)],
            ["Idea"],
            ["external", "chef"],
            [frozenset(), frozenset({"hot", "x"})],
        )
    ),
)
def test_matches_is_the_conjunction_of_all_filters(
    types, from_agents, tags, where, art_type, producer, art_tags
) -> None:  # type: ignore[no-untyped-def]
    sub = Subscription(types=types, where=where, from_agents=from_agents, tags=tags)
    expected = (
        art_type in types
        and (from_agents is None or producer in from_agents)
        and (tags is None or tags <= art_tags)
        and all(w(None) for w in where)
    )
    assert matches(sub, artifact(art_type, producer, art_tags)) is expected


def test_predicate_not_called_when_type_differs() -> None:
    def explode(_: object) -> bool:
        raise AssertionError("must not be called")

    assert matches(Subscription(types=frozenset({"Other"}), where=(explode,)), artifact()) is False
