"""The default in-memory store."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from pydantic import BaseModel

from flock.artifacts import Artifact
from flock.store.base import Store, checked_query

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Keeps artifacts in dicts, indexed by type, correlation id and producer."""

    def __init__(self) -> None:
        self._by_id: dict[str, Artifact] = {}
        self._by_type: defaultdict[str, list[Artifact]] = defaultdict(list)
        # A workflow of one artifact (e.g. an input no agent consumes) keeps the artifact
        # itself, not a list of one (88 bytes more).
        self._by_correlation: dict[str, Artifact | list[Artifact]] = {}
        self._by_producer: defaultdict[str, list[Artifact]] = defaultdict(list)
        # One consumer (the common case) is kept as the agent's name itself: a list per
        # artifact would cost ~100 bytes each on a blackboard of hundreds of thousands.
        self._consumers: dict[str, str | list[str]] = {}
        # Per payload class: one set of all its field names (or None: not shareable).
        self._all_fields: dict[type[BaseModel], set[str] | None] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    async def put(self, artifacts: Sequence[Artifact]) -> None:
        by_correlation = self._by_correlation
        for artifact in artifacts:
            if artifact.id in self._by_id:
                continue  # stored already (as on PostgreSQL: the first copy stays)
            self._share_fields_set(artifact.payload)
            self._by_id[artifact.id] = artifact
            self._by_type[artifact.type].append(artifact)
            workflow = by_correlation.get(artifact.correlation_id)
            if workflow is None:
                by_correlation[artifact.correlation_id] = artifact
            elif isinstance(workflow, list):
                workflow.append(artifact)
            else:  # appended one by one: room for four, as a list that grew from empty
                members: list[Artifact] = []
                members.append(workflow)
                members.append(artifact)
                by_correlation[artifact.correlation_id] = members
            self._by_producer[artifact.produced_by].append(artifact)

    def _share_fields_set(self, payload: BaseModel) -> None:
        """Give a payload that has every field set the set shared by all such payloads of its
        class (Pydantic keeps a ``model_fields_set`` per instance: 216 bytes, a quarter of a
        stored artifact). Equal value; Pydantic only ever adds field names to it (assignment,
        ``validate_assignment``) and copies it for ``model_copy``, so with every field already
        in it and no extra fields allowed it never changes. Other payloads keep their own.
        """
        cls = type(payload)
        try:
            shared = self._all_fields[cls]
        except KeyError:
            shareable = cls.model_config.get("extra") != "allow"
            shared = self._all_fields[cls] = set(cls.model_fields) if shareable else None
        if shared is None:
            return
        own = payload.__pydantic_fields_set__
        if own is not shared and type(own) is set and own == shared:
            object.__setattr__(payload, "__pydantic_fields_set__", shared)

    async def get(self, artifact_id: str) -> Artifact | None:
        return self._by_id.get(artifact_id)

    async def query(
        self,
        *,
        type: type[BaseModel] | str | None = None,
        correlation_id: str | None = None,
        produced_by: str | None = None,
        limit: int | None = None,
    ) -> list[Artifact]:
        type = checked_query(type, correlation_id, produced_by, limit)
        # Start from the smallest index that applies, then filter by the rest.
        candidates: list[list[Artifact]] = []
        if type is not None:
            candidates.append(self._by_type.get(type, []))
        if correlation_id is not None:
            workflow = self._by_correlation.get(correlation_id, [])
            candidates.append(workflow if isinstance(workflow, list) else [workflow])
        if produced_by is not None:
            candidates.append(self._by_producer.get(produced_by, []))
        base = min(candidates, key=len) if candidates else list(self._by_id.values())
        result = [
            a
            for a in base
            if (type is None or a.type == type)
            and (correlation_id is None or a.correlation_id == correlation_id)
            and (produced_by is None or a.produced_by == produced_by)
        ]
        if limit is not None:
            result = result[-limit:] if limit > 0 else []
        return result

    async def record_consumption(self, artifact_id: str, agent: str) -> None:
        known = self._consumers.get(artifact_id)
        if known is None:
            self._consumers[artifact_id] = agent
        elif isinstance(known, str):
            self._consumers[artifact_id] = [known, agent]
        else:
            known.append(agent)

    async def consumers(self, artifact_id: str) -> list[str]:
        known = self._consumers.get(artifact_id)
        if known is None:
            return []
        return [known] if isinstance(known, str) else list(known)
