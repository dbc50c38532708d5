"""Executing one agent run for :class:`~flock.orchestrator.Flock`: its attempts (with
retries), the outputs it publishes and schedules, and the consumption of its inputs."""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from flock._errors import describe, fatal, run_error
from flock._validation import checked_output
from flock.agent import Agent, FailedAfterPublish
from flock.artifacts import Artifact, new_id, shared_flags
from flock.components import RunContext
from flock.exceptions import AgentRunError, retryable
from flock.registry import registry
from flock.visibility import PUBLIC, annotate, output_visibility

if TYPE_CHECKING:
    from flock._distributed import Distributed
    from flock.store.base import Store
    from flock.tracing._instrument import Instrument

__all__ = ["Extra", "Runs"]

log = logging.getLogger("flock")

Extra = dict[str, Any] | None  # span attributes of a fan-in run (see flock.fanin)


class Runs:
    """The part of :class:`~flock.orchestrator.Flock` that runs one agent run (a mixin)."""

    # Set up by Flock.__init__.
    model: str | None
    store: Store
    _checked: bool
    _failures: list[AgentRunError]
    _distributed: Distributed | None

    if TYPE_CHECKING:  # defined by Flock

        def _tracing(self) -> Instrument: ...

        def _schedule(self, artifact: Artifact) -> None: ...

    async def _run(
        self, agent: Agent, artifacts: tuple[Artifact, ...], extra: Extra, published: list[Artifact]
    ) -> None:
        try:
            await self._attempts(agent, artifacts, publish=True, extra=extra, into=published)
        except AgentRunError as error:
            self._failures.append(error)
        except BaseException as exc:  # e.g. the store failed while recording the run
            if fatal(exc):
                raise
            self._failures.append(
                self._error(agent, artifacts, exc, attempts=1, published=published)
            )

    async def _attempts(
        self,
        agent: Agent,
        artifacts: tuple[Artifact, ...],
        *,
        publish: bool,
        extra: Extra = None,
        into: list[Artifact] | None = None,
    ) -> list[Artifact]:
        """Run ``agent`` with retries; raise :class:`AgentRunError` when every attempt failed.
        ``into``: a list to add the published outputs to."""
        if not self._checked:  # another agent declared meanwhile fails the caller's next call
            agent.check()
        instrument = self._tracing()
        run_id = new_id()
        correlation_id = artifacts[0].correlation_id
        published: list[Artifact] = into if into is not None else []
        emit = partial(self._emit, into=published) if publish else self._wrap_outputs
        async with agent.semaphore():
            for attempt in range(1, agent.retries + 2):
                ctx = RunContext(
                    agent=agent,
                    store=self.store,
                    correlation_id=correlation_id,
                    run_id=run_id,
                    attempt=attempt,
                    model=agent.model or self.model,
                    instrument=instrument,
                )
                try:
                    outputs = await agent.execute(
                        ctx, list(artifacts), instrument=instrument, emit=emit, extra=extra
                    )
                except FailedAfterPublish as failed:
                    if publish:
                        await self._record_consumption(agent, artifacts)
                    raise self._error(
                        agent, artifacts, failed.error, attempts=attempt, published=failed.published
                    ) from failed.error
                except BaseException as exc:
                    if fatal(exc):
                        raise
                    if published:  # stored, then scheduling failed: not retried
                        await self._record_consumption(agent, artifacts)
                        raise self._error(
                            agent, artifacts, exc, attempts=attempt, published=published
                        ) from exc
                    if attempt <= agent.retries and retryable(exc):
                        log.warning(
                            "agent %r failed (attempt %d of %d), retrying: %s",
                            agent.name,
                            attempt,
                            agent.retries + 1,
                            describe(exc),
                        )
                        await asyncio.sleep(agent.retry_backoff * 2 ** (attempt - 1))
                        continue
                    raise self._error(agent, artifacts, exc, attempts=attempt) from exc
                if publish:  # invoke() without publishing leaves the blackboard alone
                    await self._record_consumption(agent, artifacts)
                return outputs
        raise AssertionError("unreachable")  # pragma: no cover

    async def _record_consumption(self, agent: Agent, artifacts: tuple[Artifact, ...]) -> None:
        for artifact in artifacts:
            await self.store.record_consumption(artifact.id, agent.name)

    _error = staticmethod(run_error)  # also used by flock.fanin and flock._distributed

    async def _wrap_outputs(self, ctx: RunContext, outputs: list[BaseModel]) -> list[Artifact]:
        from opentelemetry import trace

        current = trace.get_current_span().get_span_context()
        span_context = shared_flags(current) if current.is_valid else None
        hidden = bool(ctx.agent.output_visibility)  # else every output is public
        outputs = [checked_output(ctx.agent.name, o) for o in outputs]
        artifacts = [
            Artifact(
                type=registry.name_of(type(o)),
                payload=o,
                produced_by=ctx.agent.name,
                correlation_id=ctx.correlation_id,
                span_context=span_context,
                visibility=output_visibility(ctx.agent, type(o)) if hidden else PUBLIC,
            )
            for o in outputs
        ]
        if hidden:
            annotate(trace.get_current_span(), (a.visibility for a in artifacts))
        return artifacts

    async def _emit(
        self, ctx: RunContext, outputs: list[BaseModel], into: list[Artifact] | None = None
    ) -> list[Artifact]:
        """Publish an agent's outputs (inside its Agent.execute span) and schedule them;
        ``into``: a list of the run's published artifacts to add them to."""
        artifacts = await self._wrap_outputs(ctx, outputs)
        if artifacts:
            if self._distributed is not None:
                await self._distributed.publish(artifacts)
            else:
                await self.store.put(artifacts)
            if into is not None:  # stored: the run fails after publishing from here on
                into.extend(artifacts)
            if self._distributed is None:
                for artifact in artifacts:
                    self._schedule(artifact)
        return artifacts
