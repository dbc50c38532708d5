"""The work-queue interface of distributed stores (shared by many worker processes).

A store that also implements :class:`WorkQueue` makes a :class:`~flock.orchestrator.Flock`
distributed: publishing enqueues one *run* per (agent, input artifacts) instead of starting a
local task, and workers in any process claim runs under a lease, complete them (atomically with
their outputs and the runs those outputs trigger) or fail them. A run whose worker died is
claimed again once its lease expired, with its ``attempt`` counter incremented.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from flock.artifacts import Artifact
from flock.exceptions import FlockError

__all__ = ["ClaimedRun", "FailedRun", "LeaseLost", "RunRequest", "WorkQueue"]


class LeaseLost(FlockError):
    """The run's lease expired and another worker claimed it: this attempt's work is dropped."""


@dataclass(frozen=True, slots=True)
class RunRequest:
    """A run to enqueue: ``agent`` on ``artifact_ids`` (the pair is unique in the queue).

    Attributes:
        agent: the agent's name.
        artifact_ids: the input artifacts, in order.
        workflow: the ``traced_run`` workflow name in force when it was enqueued, so the
            worker's spans carry the same ``workflow.name``.
        correlation_id: the workflow (correlation id) of the inputs; runs are counted per
            (correlation id, agent) in the store when it is given.
        max_runs: with ``correlation_id``, a run past this many of the agent in the workflow
            (across all workers) is not queued but stored as a failed *runaway* run.
        error: set when the run cannot start (the agent's ``where=`` predicate raised on
            the inputs): it is stored as failed with this text, so that the workflow's
            publisher reports it whichever worker scheduled it.
    """

    agent: str
    artifact_ids: tuple[str, ...]
    workflow: str | None = None
    correlation_id: str | None = None
    max_runs: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    """A run that a worker holds under a lease.

    Attributes:
        id: the run's id in the queue.
        agent: the agent to run.
        artifacts: its input artifacts, re-validated through the registry.
        attempt: 1 for the first claim, 2 after one takeover, …
        worker_id: the worker holding the lease.
        workflow: see :class:`RunRequest`.
        previous_worker: the worker that held the previous (abandoned) attempt, if any.
        previous_claimed_at: when that attempt was claimed.
    """

    id: int
    agent: str
    artifacts: tuple[Artifact, ...]
    attempt: int
    worker_id: str
    workflow: str | None = None
    previous_worker: str | None = None
    previous_claimed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class FailedRun:
    """A run marked failed in the queue (by any worker).

    Attributes:
        id: the run's id in the queue.
        agent: the agent's name.
        artifacts: its input artifacts (those still in the store), in order.
        artifact_ids: the ids of its input artifacts, in order.
        error: the error text the failing worker recorded.
        attempt: the attempt that failed.
        worker_id: the worker that held it (``None`` for a runaway run, never claimed).
        runaway: the run was stopped by the ``max_runs`` limit, not by an error.
    """

    id: int
    agent: str
    artifacts: tuple[Artifact, ...]
    artifact_ids: tuple[str, ...]
    error: str
    attempt: int
    worker_id: str | None
    runaway: bool = False


class WorkQueue(ABC):
    """Runs shared by many workers: enqueue, claim under a lease, complete or fail."""

    @abstractmethod
    async def publish(self, artifacts: Sequence[Artifact], runs: Sequence[RunRequest]) -> None:
        """Store ``artifacts`` and enqueue ``runs`` in one transaction, then wake workers."""

    @abstractmethod
    async def enqueue(
        self, agent: str, artifact_ids: Sequence[str], *, workflow: str | None = None
    ) -> bool:
        """Enqueue one run; ``False`` if that (agent, artifacts) run already exists."""

    @abstractmethod
    async def claim(
        self, worker_id: str, agents: Sequence[str], lease_s: float, *, limit: int = 1
    ) -> list[ClaimedRun]:
        """Lease up to ``limit`` queued (or lease-expired) runs of ``agents``, oldest first."""

    @abstractmethod
    async def renew(self, worker_id: str, run_ids: Sequence[int], lease_s: float) -> int:
        """Extend the leases ``worker_id`` still holds; returns how many were extended."""

    @abstractmethod
    async def complete(
        self,
        run: ClaimedRun,
        *,
        outputs: Sequence[Artifact] = (),
        runs: Sequence[RunRequest] = (),
        finishing: bool = False,
    ) -> None:
        """Mark ``run`` done, store its outputs, record the consumption of its inputs and
        enqueue ``runs`` — all in one transaction. With ``finishing`` the run is marked
        *finishing* instead (hooks still run after publishing; the store is not idle, the
        lease is still renewed) until :meth:`finish` or :meth:`fail`; a worker that dies
        meanwhile leaves it failed (its outputs stay, it is never run again).

        Raises:
            LeaseLost: another worker took the run over; nothing was stored.
        """

    @abstractmethod
    async def finish(self, run: ClaimedRun) -> None:
        """Mark ``run`` done after :meth:`complete` with ``finishing=True`` (its hooks after
        publishing succeeded)."""

    @abstractmethod
    async def fail(self, run: ClaimedRun, error: str) -> None:
        """Mark ``run`` failed (it is not retried); a lost lease is ignored. A run completed
        with ``finishing=True`` can be marked failed too: it published its outputs and then
        failed (an ``on_post_publish`` or ``on_terminate`` hook raised)."""

    @abstractmethod
    async def release(self, worker_id: str, run_ids: Sequence[int]) -> int:
        """Give the runs ``worker_id`` still holds back to the queue at once (a worker that
        stops), without counting the attempt; returns how many were released."""

    @abstractmethod
    async def failed_runs(
        self, correlation_ids: Sequence[str], *, since: datetime | None = None
    ) -> tuple[list[FailedRun], datetime]:
        """The runs of these workflows marked failed after ``since`` (all if ``None``),
        oldest first, one runaway run per (workflow, agent); and the store's clock now, the
        ``since`` of the next call."""

    @abstractmethod
    async def is_idle(self) -> bool:
        """Whether no run is queued or leased, across all workers."""

    @abstractmethod
    def changes(self, *, work_only: bool = False) -> int:
        """A counter of the change notifications received so far (runs enqueued, or with
        ``work_only=False`` also runs finished anywhere). Read it before a check and pass it
        to :meth:`wait_for_change` so that no notification is missed in between."""

    @abstractmethod
    async def wait_for_change(
        self, timeout: float, *, seen: int | None = None, work_only: bool = False
    ) -> None:
        """Return once :meth:`changes` exceeds ``seen`` (default: its current value), or after
        ``timeout`` seconds."""

    async def listen(self, timeout: float = 10.0) -> bool:
        """Start receiving change notifications; ``True`` once they arrive. Optional."""
        return False
