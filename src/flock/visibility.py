"""Visibility: which agents may see an artifact on the blackboard.

Every artifact carries a :class:`Visibility` (default :class:`PublicVisibility`). An agent
that may not see an artifact is never scheduled for it (whatever its subscription), never
collects it into a batch or a join, and never gets it as ``DSPyEngine`` conversation
context; its ``where=`` predicates are not even called with it. The application itself
(``flock.store.query``, ``Store.payloads``, the dashboard) sees everything: it owns the
blackboard.

Kinds, checked against the agent's identity (its name, ``.labels(...)`` and ``.tenant(...)``):

* :class:`PublicVisibility` — every agent (the default).
* :class:`PrivateVisibility` ``(agents={...})`` — only the agents named (not even the agent
  that published it, unless named); :func:`only_for` is a shorthand. Naming an agent the
  Flock does not have is refused with :class:`ConfigurationError` when publishing (or, for an
  agent's ``.publishes(..., visibility=)``, when the Flock is first used): routing happens in
  the publishing process, so such an artifact could never be delivered — it is a typo.
* :class:`LabelledVisibility` ``(required_labels={...})`` — agents that carry every one of
  the labels.
* :class:`TenantVisibility` ``(tenant_id="acme")`` — agents of that tenant only (an agent
  without a tenant sees none). ``TenantVisibility()`` (no tenant id) on an agent's
  ``.publishes(...)`` means *the publishing agent's own tenant* and is stored with that
  tenant filled in (the agent needs a ``.tenant(...)``); ``flock.publish()`` has no agent, so
  there it must name the tenant. An unresolved ``TenantVisibility()`` allows no agent.

Values are immutable and hashable; :meth:`Visibility.to_json` gives their stable JSON form
(the one stores keep) and :meth:`Visibility.from_json` reads it back exactly, refusing kinds
it does not know. (flock-core's time-based ``AfterVisibility`` is not offered: an artifact
that became visible later would have to be delivered then.)

Example:
    >>> from flock.visibility import LabelledVisibility, PrivateVisibility, only_for
    >>> only_for("auditor", "admin")
    PrivateVisibility(agents={'admin', 'auditor'})
    >>> only_for("auditor").to_json()
    {'kind': 'Private', 'agents': ['auditor']}
    >>> PrivateVisibility.from_json({"kind": "Private", "agents": ["auditor"]}) == only_for("auditor")
    True
    >>> LabelledVisibility(required_labels={"clearance:secret"}).kind
    'Labelled'
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, Self, cast

from flock._names import is_name, name_set
from flock.exceptions import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Set as AbstractSet

    from opentelemetry.trace import Span
    from pydantic import BaseModel

    from flock.agent import Agent
    from flock.artifacts import Artifact
    from flock.store.base import Store

__all__ = [
    "PUBLIC",
    "Identity",
    "LabelledVisibility",
    "PrivateVisibility",
    "PublicVisibility",
    "TenantVisibility",
    "Visibility",
    "VisibilityKind",
    "only_for",
    "visible_artifacts",
]

VisibilityKind = Literal["Public", "Private", "Labelled", "Tenant"]

ATTRIBUTE = "flock.artifact.visibility"
"""The span attribute naming the kind of a non-public artifact."""

_HINT = (
    "PublicVisibility(), PrivateVisibility(agents={'name'}) (or only_for('name')), "
    "LabelledVisibility(required_labels={'label'}) or TenantVisibility(tenant_id='tenant')"
)


class Identity(Protocol):
    """What a visibility is checked against: an :class:`~flock.agent.Agent` (or anything
    with these attributes)."""

    @property
    def name(self) -> str: ...

    @property
    def labels(self) -> AbstractSet[str]: ...

    @property
    def tenant_id(self) -> str | None: ...


@dataclass(frozen=True, slots=True, repr=False)
class Visibility(ABC):
    """Which agents may see an artifact. Immutable; compare and hash by value."""

    kind: ClassVar[VisibilityKind]

    @abstractmethod
    def allows(self, agent: Identity) -> bool:
        """Whether ``agent`` may see an artifact with this visibility."""

    @abstractmethod
    def to_json(self) -> dict[str, Any]:
        """The stable JSON form: ``{"kind": ..., <fields>}``, sets as sorted lists."""

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str | bytes) -> Self:
        """The visibility of a :meth:`to_json` form (a dict or its JSON text).

        On a subclass (``PrivateVisibility.from_json``) the data must be of that kind.

        Raises:
            ValueError: the data is not a visibility this flock knows (an unknown kind,
                e.g. written by a newer program, unexpected keys, invalid values).
        """
        value = _decode(data)
        if not isinstance(value, cls):
            raise ValueError(f"{value!r} is not a {cls.__name__}")
        return value

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{key}={{{', '.join(map(repr, value))}}}"
            if isinstance(value, list)
            else f"{key}={value!r}"
            for key, value in self.to_json().items()
            if key != "kind"
        )
        return f"{type(self).__name__}({fields})"


@dataclass(frozen=True, slots=True, repr=False)
class PublicVisibility(Visibility):
    """Every agent may see the artifact (the default)."""

    kind: ClassVar[VisibilityKind] = "Public"

    def allows(self, agent: Identity) -> bool:
        return True

    def to_json(self) -> dict[str, Any]:
        return {"kind": "Public"}


PUBLIC = PublicVisibility()
"""The default visibility (shared: every public artifact refers to this one)."""


@dataclass(frozen=True, slots=True, init=False, repr=False)
class PrivateVisibility(Visibility):
    """Only the agents named in ``agents`` may see the artifact."""

    kind: ClassVar[VisibilityKind] = "Private"
    agents: frozenset[str]

    def __init__(self, agents: Iterable[str]) -> None:
        object.__setattr__(self, "agents", _names(agents, "PrivateVisibility(agents=...)"))

    def allows(self, agent: Identity) -> bool:
        return agent.name in self.agents

    def to_json(self) -> dict[str, Any]:
        return {"kind": "Private", "agents": sorted(self.agents)}


@dataclass(frozen=True, slots=True, init=False, repr=False)
class LabelledVisibility(Visibility):
    """Only agents that carry every label in ``required_labels`` may see the artifact."""

    kind: ClassVar[VisibilityKind] = "Labelled"
    required_labels: frozenset[str]

    def __init__(self, required_labels: Iterable[str]) -> None:
        labels = _names(required_labels, "LabelledVisibility(required_labels=...)")
        object.__setattr__(self, "required_labels", labels)

    def allows(self, agent: Identity) -> bool:
        return self.required_labels.issubset(_identity(agent).labels)

    def to_json(self) -> dict[str, Any]:
        return {"kind": "Labelled", "required_labels": sorted(self.required_labels)}


@dataclass(frozen=True, slots=True, init=False, repr=False)
class TenantVisibility(Visibility):
    """Only agents of tenant ``tenant_id`` may see the artifact.

    ``TenantVisibility()`` on an agent's ``.publishes(...)`` stands for that agent's own
    tenant (filled in when it publishes); unresolved, it allows no agent.
    """

    kind: ClassVar[VisibilityKind] = "Tenant"
    tenant_id: str | None

    def __init__(self, tenant_id: str | None = None) -> None:
        if tenant_id is not None:
            tenant_id = tenant_name(tenant_id, "TenantVisibility(tenant_id=...)")
        object.__setattr__(self, "tenant_id", tenant_id)

    def allows(self, agent: Identity) -> bool:
        return self.tenant_id is not None and _identity(agent).tenant_id == self.tenant_id

    def to_json(self) -> dict[str, Any]:
        return {"kind": "Tenant", "tenant_id": self.tenant_id}


def _identity(agent: Identity) -> Identity:
    """The agent behind an ``AgentBuilder`` (what ``flock.agent()`` returns: its
    ``.labels`` is the builder method), else ``agent`` itself."""
    inner = getattr(agent, "agent", None)
    return inner if inner is not None else agent


def only_for(*agent_names: str) -> PrivateVisibility:
    """Visible to the named agents only: ``only_for("a", "b")`` is
    ``PrivateVisibility(agents={"a", "b"})``."""
    if len(agent_names) == 1 and not isinstance(agent_names[0], str):
        raise ConfigurationError(
            f"only_for() takes agent names as separate arguments, got {agent_names[0]!r}; "
            "write only_for('a', 'b')"
        )
    return PrivateVisibility(agents=agent_names)


# Validation -------------------------------------------------------------------------------


def _names(values: object, where: str) -> frozenset[str]:
    """A non-empty set of names, or a :class:`ConfigurationError`."""
    names = name_set(values, where)
    if not names:
        raise ConfigurationError(
            f"{where} needs at least one name (an empty set would hide the artifact from "
            "every agent); use PublicVisibility() for an artifact every agent may see"
        )
    return names


def tenant_name(value: object, where: str) -> str:
    if not is_name(value):
        raise ConfigurationError(f"{where} takes a non-blank string without NUL, got {value!r}")
    return value


def label_set(labels: Sequence[object], agent: str) -> frozenset[str]:
    """The labels given to ``.labels(...)``, or a :class:`ConfigurationError`."""
    if not labels:
        raise ConfigurationError(
            f"agent {agent!r}: labels() needs at least one label, e.g. .labels('legal')"
        )
    if len(labels) == 1 and not isinstance(labels[0], str):
        raise ConfigurationError(
            f"agent {agent!r}: labels() takes labels as separate arguments, got {labels[0]!r}; "
            "write .labels('a', 'b')"
        )
    return _names(labels, f"agent {agent!r}: labels()")


def checked(value: object, where: str) -> Visibility:
    """``value`` if it is a :class:`Visibility`, else a :class:`ConfigurationError`."""
    if not isinstance(value, Visibility):
        hint = " (call it: PublicVisibility())" if isinstance(value, type) else ""
        raise ConfigurationError(f"{where} takes a visibility such as {_HINT}; got {value!r}{hint}")
    return value


def _unknown(visibility: Visibility, agents: Collection[str], where: str) -> None:
    if not isinstance(visibility, PrivateVisibility):
        return
    missing = sorted(visibility.agents.difference(agents))
    if missing:
        raise ConfigurationError(
            f"{where}: {visibility!r} names {', '.join(map(repr, missing))}, which this Flock "
            f"has no agent called (agents: {', '.join(sorted(agents)) or 'none'}); check the "
            "spelling, or declare the agent before publishing (artifacts are routed when "
            "published, so nobody could ever receive it)"
        )


def publish_visibility(visibility: object, agents: Collection[str]) -> Visibility:
    """The visibility ``flock.publish(..., visibility=)`` stores (``None``: public), or a
    :class:`ConfigurationError`."""
    if visibility is None:
        return PUBLIC
    value = checked(visibility, "publish(visibility=...)")
    if isinstance(value, TenantVisibility) and value.tenant_id is None:
        raise ConfigurationError(
            "publish(visibility=TenantVisibility()) has no tenant: TenantVisibility() means "
            "the publishing agent's tenant, and flock.publish() is not an agent; name the "
            "tenant, TenantVisibility(tenant_id='acme')"
        )
    _unknown(value, agents, "publish(visibility=...)")
    return value


def check_agent(agent: Agent, agents: Collection[str]) -> None:
    """Raise :class:`ConfigurationError` if ``agent``'s output visibilities cannot hold."""
    for model, visibility in agent.output_visibility.items():
        where = f"agent {agent.name!r}: publishes({model.__name__}, visibility=...)"
        if (
            isinstance(visibility, TenantVisibility)
            and visibility.tenant_id is None
            and agent.tenant_id is None
        ):
            raise ConfigurationError(
                f"{where}: TenantVisibility() means the agent's own tenant, but it has none; "
                f"add .tenant('acme') to agent {agent.name!r} or name the tenant, "
                "TenantVisibility(tenant_id='acme')"
            )
        _unknown(visibility, agents, where)


# Hooks of the orchestrator and engines ----------------------------------------------------


def output_visibility(agent: Agent, model: type[BaseModel]) -> Visibility:
    """The visibility of ``agent``'s outputs of type ``model`` (its own tenant filled in)."""
    visibility = agent.output_visibility.get(model, PUBLIC)
    if isinstance(visibility, TenantVisibility) and visibility.tenant_id is None:
        return TenantVisibility(agent.tenant_id)  # check_agent() made sure it has one
    return visibility


def annotate(span: Span, visibilities: Iterable[Visibility]) -> None:
    """Record the kinds of the non-public visibilities on ``span`` (``flock.artifact.
    visibility``, e.g. ``"Private"``; several kinds comma-separated, sorted); nothing for
    public artifacts, so that spans stay small."""
    kinds = {v.kind for v in visibilities if not isinstance(v, PublicVisibility)}
    if kinds:
        span.set_attribute(ATTRIBUTE, ",".join(sorted(kinds)))


def denied(agent: Agent, artifacts: Iterable[Artifact]) -> PermissionError | None:
    """The error of a run whose inputs ``agent`` may not all see (``None`` if it may).

    Routing never makes such a run; a worker whose program declares the agent differently
    (other labels, tenant or name) than the publisher's can receive one.
    """
    hidden = [a for a in artifacts if not a.visibility.allows(agent)]
    if not hidden:
        return None
    return PermissionError(
        f"agent {agent.name!r} may not see "
        + ", ".join(f"{a.type} {a.id} ({a.visibility!r})" for a in hidden)
        + " in this process, although the publisher routed it here: publishers and workers "
        "must declare the agent alike (.labels(), .tenant(), visibilities); not run"
    )


async def visible_artifacts(
    store: Store,
    agent: Identity,
    *,
    correlation_id: str,
    limit: int,
    exclude: Collection[str] = (),
) -> list[Artifact]:
    """The newest ``limit`` artifacts of the workflow ``correlation_id`` that ``agent`` may
    see, oldest first, without the ids in ``exclude``. (What ``DSPyEngine`` gives as
    conversation context; for components of your own that read the store.)"""
    if limit <= 0:
        return []
    want = limit + len(exclude)
    while True:
        found = await store.query(correlation_id=correlation_id, limit=want)
        kept = [a for a in found if a.id not in exclude and a.visibility.allows(agent)]
        if len(kept) >= limit or len(found) < want:
            return kept[-limit:]
        want *= 2  # hidden artifacts took places: look further back


# JSON -------------------------------------------------------------------------------------

_FIELDS: dict[str, tuple[str, ...]] = {
    "Public": (),
    "Private": ("agents",),
    "Labelled": ("required_labels",),
    "Tenant": ("tenant_id",),
}


def _decode(data: Mapping[str, Any] | str | bytes) -> Visibility:
    if isinstance(data, str | bytes):
        try:
            data = cast(Mapping[str, Any], json.loads(data))
        except ValueError as exc:
            raise ValueError(f"stored visibility is not JSON: {data!r:.200}") from exc
    if not isinstance(data, Mapping) or not isinstance(data.get("kind"), str):
        raise ValueError(f"a stored visibility is an object with a 'kind', got {data!r:.200}")
    kind = data["kind"]
    fields = _FIELDS.get(kind)
    if fields is None:
        raise ValueError(
            f"unknown visibility kind {kind!r} in stored data (this flock knows "
            f"{', '.join(_FIELDS)}): it was written by another program or a newer version; "
            "it is not guessed at, so that nothing becomes visible by mistake"
        )
    extra = sorted(set(data) - {"kind", *fields})
    if extra:
        raise ValueError(f"stored {kind} visibility has unexpected keys {extra}: {data!r:.200}")
    try:
        if kind == "Public":
            return PUBLIC
        if kind == "Private":
            return PrivateVisibility(agents=data.get("agents", ()))
        if kind == "Labelled":
            return LabelledVisibility(required_labels=data.get("required_labels", ()))
        return TenantVisibility(tenant_id=data.get("tenant_id"))
    except ConfigurationError as exc:
        raise ValueError(f"stored {kind} visibility is invalid: {exc}") from exc
