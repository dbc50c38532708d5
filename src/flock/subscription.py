"""Subscriptions: which artifacts an agent consumes. Matching is a pure function."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flock.artifacts import Artifact

__all__ = ["Predicate", "Subscription", "matches"]

Predicate = Callable[[Any], object]
"""``where=``: a plain function of the payload (the consumed model) whose result is tested
for truth; typed loosely so that ``lambda idea: idea.topic == "x"`` checks as written."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscription:
    """One ``consumes(...)`` declaration of an agent.

    An artifact matches when its type name is one of ``types`` (exact registered type, not
    subclasses), every ``where`` predicate accepts its payload, it comes from one of
    ``from_agents`` (if given), and it carries all ``tags`` (if given).
    """

    types: frozenset[str]
    where: tuple[Predicate, ...] = ()
    from_agents: frozenset[str] | None = None
    tags: frozenset[str] | None = None


def matches(subscription: Subscription, artifact: Artifact) -> bool:
    """Whether ``artifact`` matches ``subscription``.

    Predicates run last and only when everything else matched; an exception in a predicate
    propagates to the caller (the orchestrator records it as a failure of the agent).
    """
    if artifact.type not in subscription.types:
        return False
    if (
        subscription.from_agents is not None
        and artifact.produced_by not in subscription.from_agents
    ):
        return False
    if subscription.tags is not None and not subscription.tags <= artifact.tags:
        return False
    return all(predicate(artifact.payload) for predicate in subscription.where)


def normalize_predicates(where: Predicate | Sequence[Predicate] | None) -> tuple[Predicate, ...]:
    if where is None:
        return ()
    predicates = (where,) if callable(where) else tuple(where)
    for p in predicates:
        if not callable(p) or inspect.iscoroutinefunction(p):
            from flock.exceptions import ConfigurationError

            raise ConfigurationError(
                f"where= takes plain functions of the payload returning a bool, got {p!r}"
                + (
                    " (an async function: its coroutine would always count as true)"
                    if callable(p)
                    else ""
                )
            )
    return predicates
