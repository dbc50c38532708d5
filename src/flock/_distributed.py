"""The distributed branch of :class:`~flock.orchestrator.Flock`, used when its store is a
:class:`~flock.store.queue.WorkQueue` (e.g. :class:`~flock.store.postgres.PostgresStore`).

Publishing matches subscriptions exactly as in one process, but instead of starting local
tasks it stores the artifacts and enqueues one run per matching (agent, artifact) in the same
transaction. Workers (``flock worker`` or ``run_until_idle``) claim runs under a lease, run the
agent as a child span of the span that published its input (the artifact's W3C
``traceparent``), and complete the run atomically with its outputs and the runs those
trigger — so each (artifact, agent) pair is done once, and a run whose worker died is taken
over by another worker once its lease expired (``attempt`` 2, with a span for the abandoned
attempt).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Coroutine
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Status, StatusCode
from pydantic import BaseModel

from flock._errors import fatal
from flock.agent import FailedAfterPublish
from flock.artifacts import Artifact, new_id
from flock.components import RunContext
from flock.exceptions import AgentRunError, RunawayLoopError, retryable
from flock.store.queue import ClaimedRun, FailedRun, LeaseLost, RunRequest, WorkQueue
from flock.tracing.workflow import WORKFLOW_KEY, current_workflow
from flock.visibility import denied

if TYPE_CHECKING:
    from flock.agent import Agent
    from flock.orchestrator import Flock
    from flock.tracing._instrument import Instrument

__all__ = ["DEFAULT_LEASE", "Distributed"]

log = logging.getLogger("flock")

DEFAULT_LEASE = 30.0
"""Seconds a claimed run stays leased without a heartbeat (renewed every third of it)."""
IDLE_CHECK_INTERVAL = 0.02
"""At most one "idle across all workers?" query per this many seconds while waiting."""
MAX_TRACKED_WORKFLOWS = 100_000
"""A publisher that never calls ``run_until_idle`` forgets its oldest workflows past this."""


def _ns(value: datetime) -> int:
    return int(value.timestamp() * 1e9)


class Distributed:
    """Enqueues runs instead of spawning them, and works the queue for a Flock."""

    def __init__(self, flock: Flock, queue: WorkQueue) -> None:
        self.flock = flock
        self.queue = queue
        self.collect_failures = True
        self.published: dict[str, None] = {}
        """The workflows (correlation ids) this process published since the last report."""
        self.errors: dict[int, AgentRunError] = {}
        """Runs that failed in this process (with the original exception), by run id."""
        self.routing_errors: dict[tuple[str, tuple[str, ...]], AgentRunError] = {}
        """Runs stored as failed because their ``where=`` predicate raised here, by (agent,
        input ids) — unique in the queue; they have no run id until stored."""
        self.since: datetime | None = None
        """The store's clock at the last report: failures before it were reported."""

    # Publishing ------------------------------------------------------------

    def runs_for(self, artifacts: list[Artifact]) -> list[RunRequest]:
        """The runs the artifacts trigger (the Flock's own matching and loop limits)."""
        flock = self.flock
        collected: list[tuple[Agent, tuple[Artifact, ...], AgentRunError | None]] = []
        flock._outbox = collected
        try:
            for artifact in artifacts:
                flock._schedule(artifact)
        finally:
            flock._outbox = None
        workflow = current_workflow()
        requests = []
        for agent, inputs, error in collected:
            ids = tuple(a.id for a in inputs)
            if error is not None and self.collect_failures:  # reported with its exception
                self.routing_errors[(agent.name, ids)] = error
                while len(self.routing_errors) > MAX_TRACKED_WORKFLOWS:
                    del self.routing_errors[next(iter(self.routing_errors))]
            requests.append(
                RunRequest(
                    agent.name,
                    ids,
                    workflow,
                    correlation_id=inputs[0].correlation_id,
                    max_runs=flock.max_agent_runs,  # counted in the store, across all workers
                    error=str(error) if error is not None else None,
                )
            )
        return requests

    async def publish(self, artifacts: list[Artifact]) -> None:
        """Store the artifacts and enqueue the runs they trigger, in one transaction."""
        await self.queue.publish(artifacts, self.runs_for(artifacts))
        published = self.published
        for artifact in artifacts:
            published[artifact.correlation_id] = None
        while len(published) > MAX_TRACKED_WORKFLOWS:
            del published[next(iter(published))]

    async def take_failures(self) -> list[AgentRunError]:
        """The runs of this process's workflows that failed, in any worker, since the last
        call (call it once the store is idle); forgets those workflows afterwards.

        Runs that failed here (or whose ``where=`` predicate raised here) keep their original
        exception as ``__cause__``; the others carry the error text their worker stored.
        """
        workflows, self.published = list(self.published), {}
        local, self.errors = self.errors, {}
        routed, self.routing_errors = self.routing_errors, {}
        if not workflows:
            return []
        failed, self.since = await self.queue.failed_runs(workflows, since=self.since)
        return [
            local.get(run.id)
            or (routed.get((run.agent, run.artifact_ids)) if run.worker_id is None else None)
            or self._remote_error(run)
            for run in failed
        ]

    @staticmethod
    def _remote_error(run: FailedRun) -> AgentRunError:
        kind = RunawayLoopError if run.runaway else AgentRunError
        message = run.error
        if not message.startswith(f"agent {run.agent!r}"):
            inputs = ", ".join(run.artifact_ids)
            message = f"agent {run.agent!r} failed on {inputs}: {message}"
        if run.worker_id:
            message += f" (run {run.id}, attempt {run.attempt}, worker {run.worker_id})"
        return kind(message, agent=run.agent, artifacts=run.artifacts, attempts=run.attempt)

    # Waiting ---------------------------------------------------------------

    async def run_until_idle(self, timeout: float | None, *, work: bool) -> None:
        """Work on this process's agents (if ``work``) until no run is queued or leased."""
        job: Coroutine[Any, Any, None] = (
            self.work(until_idle=True) if work and self.flock.agents else self.wait_idle()
        )
        if timeout is None:
            await job
            return
        try:
            await asyncio.wait_for(job, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"run_until_idle timed out after {timeout}s with runs still queued or leased "
                "in the store; workers keep going (runs this process held are retried by "
                "others when their lease expires)"
            ) from None

    async def wait_idle(self, poll: float = 1.0) -> None:
        """Wait, without working, until the store is idle across all workers."""
        queue = self.queue
        await queue.listen()
        while True:
            seen = queue.changes()
            if await queue.is_idle():
                return
            await queue.wait_for_change(poll, seen=seen)
            await asyncio.sleep(IDLE_CHECK_INTERVAL)  # coalesce bursts of completions

    # Working ---------------------------------------------------------------

    async def work(
        self,
        *,
        concurrency: int | None = None,
        lease: float = DEFAULT_LEASE,
        until_idle: bool = False,
        worker_id: str | None = None,
    ) -> None:
        """Claim and run this process's agents' runs until cancelled (or idle everywhere).

        Args:
            concurrency: at most this many runs at once in this process (default: the sum
                of the agents' ``max_concurrency``); each agent also keeps its own limit.
            lease: seconds a claimed run stays leased without a heartbeat.
            until_idle: return once no run is queued or leased across all workers.
            worker_id: the name of this worker in the queue (default ``host:pid:random``).
        """
        flock, queue = self.flock, self.queue
        instrument = flock._prepare()
        agents = {agent.name: agent for agent in flock.agents}
        limit = concurrency or sum(a.max_concurrency for a in agents.values()) or 1
        me = worker_id or f"{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}"
        running: dict[int, asyncio.Task[None]] = {}
        busy: Counter[str] = Counter()
        kick = asyncio.Event()
        poll = min(max(lease / 3, 0.05), 2.0)  # also how soon expired leases are taken over
        loop = asyncio.get_running_loop()

        def finished(run: ClaimedRun, task: asyncio.Task[None]) -> None:
            if running.get(run.id) is task:  # not a later attempt of the same run, which
                del running[run.id]  # this worker may hold by now (its lease expired)
            busy[run.agent] -= 1
            kick.set()

        await queue.listen()
        heartbeat = loop.create_task(self._heartbeat(me, running, lease), name="flock:lease")
        try:
            while True:
                seen = queue.changes(work_only=True)
                seen_any = queue.changes()
                kick.clear()
                claimed = 0
                for name, agent in agents.items():
                    free = min(agent.max_concurrency - busy[name], limit - len(running))
                    if free <= 0:
                        continue
                    for run in await queue.claim(me, [name], lease, limit=free):
                        claimed += 1
                        busy[name] += 1
                        task = loop.create_task(
                            self._execute(run, agent, instrument), name=f"flock:{name}"
                        )
                        running[run.id] = task
                        task.add_done_callback(partial(finished, run))
                if until_idle and not running and not claimed and await queue.is_idle():
                    return
                if claimed and len(running) < limit:
                    continue  # there may be more queued
                if until_idle and not running:
                    # Waiting for other workers: wake on their completions too, coalesced.
                    await queue.wait_for_change(poll, seen=seen_any)
                    await asyncio.sleep(IDLE_CHECK_INTERVAL)
                    continue
                waiter = loop.create_task(queue.wait_for_change(poll, seen=seen, work_only=True))
                kicked = loop.create_task(kick.wait())
                try:
                    await asyncio.wait({waiter, kicked}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                    kicked.cancel()
        finally:
            # Stopping (SIGTERM, Ctrl-C, cancelled): cancel the runs still going and give
            # them back to the queue at once rather than after their lease expired. (A run
            # whose completion committed meanwhile is done and stays done.)
            heartbeat.cancel()
            held = list(running)
            for task in list(running.values()):
                task.cancel()
            if running:
                await asyncio.gather(*running.values(), return_exceptions=True)
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            if held:
                try:
                    released = await queue.release(me, held)
                except Exception as exc:  # their leases expire instead
                    log.warning("flock: could not release %d run(s): %r", len(held), exc)
                else:
                    log.info("flock: released %d run(s) back to the queue", released)

    async def _heartbeat(
        self, worker_id: str, running: dict[int, asyncio.Task[None]], lease: float
    ) -> None:
        while True:
            await asyncio.sleep(lease / 3)
            if running:
                try:
                    await self.queue.renew(worker_id, list(running), lease)
                except Exception as exc:  # the next beat tries again
                    log.warning("flock: could not renew leases: %r", exc)

    async def _execute(self, run: ClaimedRun, agent: Agent, instrument: Instrument) -> None:
        """One claimed run, as a child of the span that published its input."""
        ctx = otel_context.Context()
        parent = run.artifacts[0].span_context if run.artifacts else None
        if parent is not None:
            ctx = trace.set_span_in_context(NonRecordingSpan(parent), ctx)
        if run.workflow is not None:
            ctx = otel_context.set_value(WORKFLOW_KEY, run.workflow, ctx)
        token = otel_context.attach(ctx)
        try:
            if run.attempt > 1 and instrument.tracer is not None:
                self._abandoned_span(run, agent, instrument)
            await self._attempts(run, agent, instrument)
        except Exception as exc:  # the store failed for longer than its retries
            log.error("flock: run %d of %r could not be finished: %r", run.id, agent.name, exc)
            if self.collect_failures:
                self.flock._failures.append(
                    self.flock._error(agent, run.artifacts, exc, attempts=run.attempt)
                )
        finally:
            otel_context.detach(token)

    def _abandoned_span(self, run: ClaimedRun, agent: Agent, instrument: Instrument) -> None:
        """The previous, abandoned attempt as an ERROR span (its worker could not end it)."""
        assert instrument.tracer is not None
        start = _ns(run.previous_claimed_at) if run.previous_claimed_at else time.time_ns()
        span = instrument.tracer.start_span(
            "Agent.execute",
            start_time=start,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": agent.name,
                "flock.agent.name": agent.name,
                "flock.correlation_id": run.artifacts[0].correlation_id,
                "flock.run_id": str(run.id),
                "flock.attempt": run.attempt - 1,
                "flock.abandoned": True,
                "flock.worker.id": run.previous_worker or "",
                "flock.input.ids": [a.id for a in run.artifacts],
            },
        )
        span.set_status(
            Status(
                StatusCode.ERROR,
                f"abandoned: worker {run.previous_worker} stopped renewing its lease; "
                f"retried as attempt {run.attempt} by {run.worker_id}",
            )
        )
        span.end()

    async def _attempts(self, run: ClaimedRun, agent: Agent, instrument: Instrument) -> None:
        flock, queue = self.flock, self.queue
        refused = denied(agent, run.artifacts)
        if refused is not None:  # routed by a program that declares the agent otherwise
            await self._failed(run, flock._error(agent, run.artifacts, refused, attempts=1))
            return
        inputs = list(run.artifacts)
        done: list[bool] = []

        # With hooks after publishing, the run stays 'finishing' (not idle) until they end.
        finishing = bool(agent.hooks("on_post_publish") or agent.hooks("on_terminate"))

        async def emit(ctx: RunContext, outputs: list[BaseModel]) -> list[Artifact]:
            artifacts = await flock._wrap_outputs(ctx, outputs)
            await queue.complete(
                run, outputs=artifacts, runs=self.runs_for(artifacts), finishing=finishing
            )
            done.append(True)
            if instrument.enabled:
                trace.get_current_span().set_attribute("flock.worker.id", run.worker_id)
            return artifacts

        for retry in range(agent.retries + 1):
            ctx = RunContext(
                agent=agent,
                store=flock.store,
                correlation_id=inputs[0].correlation_id,
                run_id=str(run.id),
                attempt=run.attempt + retry,
                model=agent.model or flock.model,
                instrument=instrument,
            )
            done.clear()
            try:
                await agent.execute(ctx, inputs, instrument=instrument, emit=emit)
                if not done:  # e.g. on_pre_consume dropped every input
                    await queue.complete(run)
                elif finishing:
                    await queue.finish(run)
                return
            except LeaseLost as exc:
                log.warning("flock: %s", exc)
                return
            except FailedAfterPublish as failed:  # completed and published: not retried
                error = flock._error(
                    agent,
                    run.artifacts,
                    failed.error,
                    attempts=retry + 1,
                    published=failed.published,
                )
                await self._failed(run, error)
                return
            except BaseException as exc:
                # Not only Exception: a BaseException from the agent's code that is not fatal
                # (pytest's Failed, say) fails the run too. Escaping, it would end this task
                # silently and leave the run leased until its lease expired, then claimed
                # and lost the same way again.
                if fatal(exc):
                    raise  # Ctrl-C, sys.exit, the worker cancelled: the run goes back
                if retry < agent.retries and retryable(exc):
                    log.warning(
                        "agent %r failed (attempt %d of %d), retrying: %r",
                        agent.name,
                        retry + 1,
                        agent.retries + 1,
                        exc,
                    )
                    await asyncio.sleep(agent.retry_backoff * 2**retry)
                    continue
                await self._failed(run, flock._error(agent, run.artifacts, exc, attempts=retry + 1))
                return

    async def _failed(self, run: ClaimedRun, error: AgentRunError) -> None:
        await self.queue.fail(run, str(error))
        if self.collect_failures:  # reported to its publisher, with the exception
            self.errors[run.id] = error
