"""Subscriptions: which artifacts an agent consumes. Matching is a pure function."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from flock.artifacts import Artifact

__all__ = ["FanIn", "KeyFunction", "Predicate", "Subscription", "matches"]

Predicate = Callable[[Any], object]
"""``where=``: a plain function of the payload (the consumed model) whose result is tested
for truth; typed loosely so that ``lambda idea: idea.topic == "x"`` checks as written."""


KeyFunction = Callable[[Any], Hashable]
"""``batch_by=`` / ``join_by=``: a plain function of the payload giving its group's key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FanIn:
    """The ``batch=`` or ``join=True`` part of a ``consumes(...)`` declaration: one run
    consumes several artifacts (see :mod:`flock.fanin`).

    Attributes:
        types: the consumed type names in declaration order (a join's run gets one of each,
            in this order).
        batch: the most artifacts per batch run; ``0`` for a join.
        timeout: a batch's ``batch_timeout`` in seconds (``None``: none).
        by: the key that groups artifacts: ``"correlation_id"``, ``None`` (one group for
            every workflow) or a function of the payload.
        within: a join's ``join_within`` in seconds (``None``: wait for ever).
    """

    types: tuple[str, ...]
    batch: int = 0
    timeout: float | None = None
    by: KeyFunction | Literal["correlation_id"] | None = "correlation_id"
    within: float | None = None

    @property
    def kind(self) -> Literal["batch", "join"]:
        return "batch" if self.batch else "join"


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
    fanin: FanIn | None = None
    """Set when one run consumes several artifacts (``batch=`` or ``join=True``)."""


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
