"""The orchestrator: a typed blackboard that schedules agents as artifacts appear.

Example:
    >>> import asyncio
    >>> from pydantic import BaseModel
    >>> from flock.orchestrator import Flock
    >>> from flock.registry import flock_type
    >>> @flock_type
    ... class Question(BaseModel):
    ...     text: str
    >>> @flock_type
    ... class Answer(BaseModel):
    ...     text: str
    >>> flock = Flock()
    >>> _ = (
    ...     flock.agent("echo")
    ...     .consumes(Question)
    ...     .publishes(Answer)
    ...     .with_engines(lambda q: Answer(text=q.text.upper()))
    ... )
    >>> async def main():
    ...     await flock.publish(Question(text="hi"))
    ...     await flock.run_until_idle()
    ...     return await flock.store.query(type="flock.orchestrator.Answer")
    >>> [a.payload.text for a in asyncio.run(main())]
    ['HI']
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from functools import partial, wraps
from typing import TYPE_CHECKING, Any, overload

from opentelemetry.trace import Span, TracerProvider
from pydantic import BaseModel

from flock._errors import RunTask, fatal, runaway
from flock._names import checked_correlation_id, checked_count, checked_tags
from flock._runs import Extra, Runs
from flock._validation import publishable
from flock.agent import Agent, AgentBuilder
from flock.artifacts import EXTERNAL, Artifact, new_id, shared_flags
from flock.exceptions import (
    AgentFailures,
    AgentRunError,
    ConfigurationError,
    RunawayLoopError,
)
from flock.fanin import FanInBuffers, finite_seconds, invoke_plan
from flock.store import store_from_env
from flock.store.base import Store
from flock.store.queue import WorkQueue
from flock.subscription import matches
from flock.tracing._instrument import Instrument
from flock.visibility import PUBLIC, Visibility, annotate, publish_visibility

if TYPE_CHECKING:
    from datetime import timedelta

    from flock._distributed import Distributed
    from flock.tracing.workflow import Workflows

__all__ = ["Flock"]

log = logging.getLogger("flock")

PublishInput = BaseModel | dict[str, Any]
_Run = tuple[Agent, tuple[Artifact, ...], Extra, list[Artifact]]  # ..., what it published


def _seconds(value: object, what: str) -> float:
    """``value`` in seconds if it is a finite number > 0 or a ``timedelta`` (not a bool),
    else a :class:`ConfigurationError` naming ``what``."""
    seconds = finite_seconds(value)
    if seconds is None:
        raise ConfigurationError(f"{what} must be a finite number of seconds > 0, got {value!r}")
    return seconds


def _stranded(task: asyncio.Task[Any], loop: asyncio.AbstractEventLoop) -> bool:
    """A task of another event loop that was closed or stopped by hand: it never ends."""
    other = task.get_loop()
    return other is not loop and (other.is_closed() or not other.is_running())


class _ClassOrInstanceMethod:
    """Lets ``Flock.clear_traces(...)`` be called on the class and on an instance alike (an
    instance passes itself as ``_flock``)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        return self.fn if obj is None else wraps(self.fn)(partial(self.fn, _flock=obj))


class Flock(Runs):
    """A blackboard of typed artifacts and the agents that react to them.

    Args:
        model: default LLM model of agents that use the default :class:`DSPyEngine`
            (a LiteLLM name such as ``"openai/gpt-4o"``); default ``FLOCK_MODEL``, else
            ``DEFAULT_MODEL`` (the variable flock-core reads).
        store: where artifacts live (default: a new :class:`MemoryStore`).
        max_agent_runs: how often one agent may run within one workflow (one correlation
            id) before the orchestrator stops it as a runaway loop. Without a distributed
            store the count starts again once the workflow has no run pending or running.
        tracer_provider: the OpenTelemetry provider for flock's spans; by default the
            global one, set up from the environment on first use (see :mod:`flock.tracing`).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        store: Store | None = None,
        max_agent_runs: int = 1000,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        if model is not None and not isinstance(model, str):
            raise ConfigurationError(f"model must be a string like 'openai/gpt-4o', got {model!r}")
        if store is not None and not isinstance(store, Store):
            raise ConfigurationError(f"store must be a flock.store.Store, got {store!r}")
        checked_count(max_agent_runs, "max_agent_runs")
        self.model = model or os.environ.get("FLOCK_MODEL") or os.environ.get("DEFAULT_MODEL")
        self.store: Store = store if store is not None else store_from_env()
        self.max_agent_runs = max_agent_runs
        self._tracer_provider = tracer_provider
        self._instrument: Instrument | None = None
        self._workflows: Workflows | None = None
        self._agents: dict[str, Agent] = {}
        self._routes: dict[str, list[Agent]] | None = None
        self._checked = False
        # Runs per workflow (correlation id) and agent, for max_agent_runs, and the runs each
        # workflow has pending or running: a workflow's counts go when its last run ends, so
        # they do not pile up in a Flock that never calls run_until_idle.
        self._runs: dict[str, dict[str, int]] = {}
        self._live: dict[str, int] = {}
        self._stopped: dict[str, dict[str, RunawayLoopError]] = {}  # reported, by workflow, agent
        self._failures: list[AgentRunError] = []
        self._fanin = FanInBuffers(self)  # artifacts waiting for a batch= or join= run
        self._tasks: dict[asyncio.Task[Any], _Run] = {}
        self._interrupted: list[_Run] = []  # runs whose event loop ended before they did
        self._idle: asyncio.Event | None = None
        self._idle_loop: asyncio.AbstractEventLoop | None = None
        # A distributed store (one with a work queue): runs are enqueued, not spawned;
        # _schedule collects (agent, inputs, error) here, error when the agent's where=
        # predicate raised (then stored as a failed run).
        self._outbox: list[tuple[Agent, tuple[Artifact, ...], AgentRunError | None]] | None = None
        self._distributed: Distributed | None = None
        if isinstance(self.store, WorkQueue):
            from flock._distributed import Distributed

            self._distributed = Distributed(self, self.store)

    def __repr__(self) -> str:
        return f"Flock(model={self.model!r}, agents={list(self._agents)!r})"

    # Agents ---------------------------------------------------------------

    def agent(self, name: str) -> AgentBuilder:
        """Declare a new agent; chain ``.consumes(...)``, ``.publishes(...)`` etc. on the result."""
        if not isinstance(name, str) or not name.strip() or not name.isprintable():
            raise ConfigurationError(
                f"agent name must be a non-empty printable string, got {name!r}"
            )
        if name == EXTERNAL:
            raise ConfigurationError(
                f"{EXTERNAL!r} is reserved for artifacts published from outside"
            )
        if name in self._agents:
            raise ConfigurationError(
                f"an agent named {name!r} already exists; pick another name or reuse "
                f"flock.get_agent({name!r})"
            )
        agent = Agent(name, flock=self)
        self._agents[name] = agent
        self._agents_changed()
        return AgentBuilder(agent)

    @property
    def agents(self) -> list[Agent]:
        return list(self._agents.values())

    def get_agent(self, name: str) -> Agent:
        try:
            return self._agents[name]
        except KeyError:
            raise ConfigurationError(
                f"no agent named {name!r} (agents: {', '.join(self._agents) or 'none'})"
            ) from None

    def _agents_changed(self) -> None:
        self._routes = None
        self._checked = False

    def _prepare(self) -> Instrument:
        """Checks the agents once after each change and resolves tracing (cheap when done)."""
        if not self._checked:
            for agent in self._agents.values():
                agent.check()
            self._checked = True
        return self._tracing()

    def _tracing(self) -> Instrument:
        if self._instrument is None:
            from flock.tracing.setup import instrument_for

            self._instrument, self._workflows = instrument_for(self._tracer_provider)
        return self._instrument

    def _auto_workflow(self, *, begin: bool) -> AbstractContextManager[None]:
        """The implicit workflow of ``FLOCK_AUTO_WORKFLOW_TRACE`` around a top-level call."""
        workflows = self._workflows
        return nullcontext() if workflows is None else workflows.auto_scope(begin=begin)

    def _route(self, type_name: str) -> list[Agent]:
        if self._routes is None:
            routes: dict[str, list[Agent]] = {}
            for agent in self._agents.values():
                for t in agent.consumed_types:
                    routes.setdefault(t, []).append(agent)
            self._routes = routes
        return self._routes.get(type_name, [])

    # Publishing -----------------------------------------------------------

    @overload
    async def publish(
        self,
        obj: PublishInput,
        *,
        correlation_id: str | None = None,
        tags: Iterable[str] | None = None,
        visibility: Visibility | None = None,
    ) -> Artifact: ...

    @overload
    async def publish(
        self,
        obj: Sequence[PublishInput],
        *,
        correlation_id: str | None = None,
        tags: Iterable[str] | None = None,
        visibility: Visibility | None = None,
    ) -> list[Artifact]: ...

    async def publish(
        self,
        obj: PublishInput | Sequence[PublishInput],
        *,
        correlation_id: str | None = None,
        tags: Iterable[str] | None = None,
        visibility: Visibility | None = None,
    ) -> Artifact | list[Artifact]:
        """Validate and store ``obj`` (a model, a ``{"type", "payload"}`` dict, or a list of
        them) and schedule every agent it matches and may see it (``visibility``: see
        :mod:`flock.visibility`; default public). Returns the artifact (or list of them).

        Nothing is stored if any item fails validation.
        """
        if isinstance(obj, list | tuple):
            return await self.publish_many(
                obj, correlation_id=correlation_id, tags=tags, visibility=visibility
            )
        return (await self._publish([obj], correlation_id, tags, visibility))[0]

    async def publish_many(
        self,
        objs: Iterable[PublishInput],
        *,
        correlation_id: str | None = None,
        tags: Iterable[str] | None = None,
        visibility: Visibility | None = None,
    ) -> list[Artifact]:
        """Publish several items at once: all are validated before any is stored."""
        return await self._publish(list(objs), correlation_id, tags, visibility)

    async def _publish(
        self,
        objs: list[Any],
        correlation_id: str | None,
        tags: Iterable[str] | None,
        visibility: Visibility | None,
    ) -> list[Artifact]:
        instrument = self._prepare()
        shown = publish_visibility(visibility, self._agents)
        correlation_id = checked_correlation_id(correlation_id)
        tag_set = checked_tags(tags)
        payloads = [publishable(obj) for obj in objs]
        with (
            self._auto_workflow(begin=True),
            instrument.span("Flock.publish", {"flock.artifact.count": len(payloads)}) as span,
        ):
            span_context = shared_flags(span.get_span_context()) if instrument.enabled else None
            artifacts = [
                Artifact(
                    type=type_name,
                    payload=payload,
                    correlation_id=correlation_id or new_id(),
                    tags=tag_set,
                    span_context=span_context,
                    visibility=shown,
                )
                for type_name, payload in payloads
            ]
            if instrument.enabled:
                span.set_attribute("flock.artifact.ids", [a.id for a in artifacts])
                span.set_attribute("flock.artifact.types", sorted({a.type for a in artifacts}))
                if shown is not PUBLIC:
                    annotate(span, (shown,))
            if self._distributed is not None:
                await self._distributed.publish(artifacts)
            else:
                await self.store.put(artifacts)
                for artifact in artifacts:
                    self._schedule(artifact)
        # Let the event loop breathe: a loop of publishes would otherwise never suspend,
        # starving the runs it schedules, a dashboard in the same process, everything else.
        await asyncio.sleep(0)
        return artifacts

    # Scheduling -----------------------------------------------------------

    def _idle_event(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        if self._idle is None or self._idle_loop is not loop:
            self._idle = asyncio.Event()
            self._idle_loop = loop
            for task in [t for t in self._tasks if _stranded(t, loop)]:
                if not task.get_loop().is_closed():
                    task.cancel()  # should its loop ever run again: no second publish
                self._task_done(task)  # its loop was stopped by hand: the run never ends
            if not self._tasks:
                self._idle.set()
        return self._idle

    def _schedule(self, artifact: Artifact) -> None:
        """Start (or queue) the runs ``artifact`` triggers. Never raises: what fails for one
        consumer (its where=, the artifact's visibility) is that consumer's failed run."""
        for agent in self._route(artifact.type):
            if agent.prevent_self_trigger and artifact.produced_by == agent.name:
                continue
            why = "the artifact's visibility raised deciding whether the agent may see it"
            try:
                if not artifact.visibility.allows(agent):  # before where=: it may not see it
                    continue
                why = "its where= predicate raised"
                if not any(matches(sub, artifact) for sub in agent.subscriptions):
                    continue
                why = "scheduling its run raised"
                if agent.fanin is not None:  # waits for the other artifacts of its run
                    self._fanin.offer(agent, artifact)
                elif self._outbox is not None:  # a distributed store counts runs itself
                    self._outbox.append((agent, (artifact,), None))
                else:
                    self._start(agent, (artifact,))
            except BaseException as exc:  # (a where= raising pytest's Failed, say)
                if fatal(exc):
                    raise
                error = self._error(agent, (artifact,), exc, attempts=1, why=why)
                if self._outbox is not None:  # stored as a failed run: the publisher reports it
                    self._outbox.append((agent, (artifact,), error))
                else:
                    self._failures.append(error)

    def _start(self, agent: Agent, artifacts: tuple[Artifact, ...], extra: Extra = None) -> None:
        """Count the run against max_agent_runs (in its inputs' workflow) and spawn it."""
        workflow = artifacts[0].correlation_id
        runs = self._runs.get(workflow)
        if runs is None:
            runs = self._runs[workflow] = {}
        count = runs[agent.name] = runs.get(agent.name, 0) + 1
        if count > self.max_agent_runs:  # one error per agent and workflow lists every input
            stopped = self._stopped.setdefault(workflow, {})
            previous = stopped.get(agent.name)
            stopped[agent.name] = runaway(agent, workflow, self.max_agent_runs, artifacts, previous)
            if previous is None:
                self._failures.append(stopped[agent.name])
            if workflow not in self._live and not self._waiting(workflow):
                self._forget(workflow)  # the loop ends here: nothing of it is left
            return
        self._spawn(agent, artifacts, extra)

    def _spawn(self, agent: Agent, artifacts: tuple[Artifact, ...], extra: Extra) -> None:
        if self._outbox is not None:  # a distributed store: collected, then enqueued
            self._outbox.append((agent, artifacts, None))
            return
        idle = self._idle_event()
        idle.clear()
        published: list[Artifact] = []
        task = RunTask(
            self._run(agent, artifacts, extra, published), loop=asyncio.get_running_loop(),
            name=f"flock:{agent.name}",
        )  # fmt: skip
        self._tasks[task] = (agent, artifacts, extra, published)
        workflow = artifacts[0].correlation_id
        self._live[workflow] = self._live.get(workflow, 0) + 1
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        run = self._tasks.pop(task, None)
        if run is None:  # its loop was closed and the run given up already
            return
        agent, artifacts, _, published = run
        ended = task.done() and not task.cancelled()
        error = task.exception() if ended else None
        if not (ended and error is None) and (error is None or fatal(error)):
            # Its event loop ended first (asyncio.run cancels what is left; a loop closed by
            # hand leaves it pending), or Ctrl-C / sys.exit() in its code stopped the loop:
            # run again by the next run_until_idle, unless it had published (then reported:
            # running it again would publish twice). Cancelled by code in its running loop:
            # a failure, as the canceller meant it not to go on.
            outside = isinstance(task, RunTask) and task.cancelled() and task.cancelled_live
            if published or outside:
                cause, why = (
                    ("its task was cancelled while its event loop ran", "cancelled from outside flock")
                    if outside
                    else ("its event loop ended", "interrupted after publishing")
                )  # fmt: skip
                self._failures.append(self._error(
                    agent, artifacts, error or asyncio.CancelledError(cause), attempts=1,
                    published=published, why=f"{why}; not run again",
                ))  # fmt: skip
            else:
                self._interrupted.append(run)
        workflow = artifacts[0].correlation_id
        live = self._live.pop(workflow) - 1
        if live:
            self._live[workflow] = live
        elif not self._waiting(workflow):  # a loop has its next run pending or waiting
            self._forget(workflow)
        if error is not None and not fatal(error):  # a flock bug
            log.error("flock internal error", exc_info=error)
        if not self._tasks and self._idle is not None:
            self._idle.set()

    def _forget(self, workflow: str) -> None:
        self._runs.pop(workflow, None)
        self._stopped.pop(workflow, None)

    def _waiting(self, workflow: str) -> bool:
        """Whether a run of ``workflow`` waits: in a batch, or to run again (interrupted)."""
        if not (self._fanin.batches or self._interrupted):
            return False  # the usual case, at the end of every run: decided at once
        return self._fanin.holds(workflow) or any(
            run[1][0].correlation_id == workflow for run in self._interrupted
        )

    # Running --------------------------------------------------------------

    async def run_until_idle(
        self, *, timeout: float | timedelta | None = None, work: bool = True
    ) -> None:
        """Wait until no agent run is pending or running.

        With a distributed store (e.g. :class:`~flock.store.postgres.PostgresStore`) this
        means across all workers; this process works on its own agents' runs meanwhile
        unless ``work=False``.

        Raises:
            AgentFailures: agent runs failed since the previous call (the others completed);
                each failure names the agent, its inputs and the original exception. With a
                distributed store: every failed run of the workflows (correlation ids) this
                process published since the previous call, in whichever worker it failed —
                runs that failed elsewhere carry the error text their worker stored.
            TimeoutError: ``timeout`` seconds passed first (the runs keep going).
            ConfigurationError: ``timeout`` is not None or a finite number > 0, or it is
                called inside a run of this Flock (it would wait for ever for that run).
        """
        if asyncio.current_task() in self._tasks:  # (a task the run starts may wait: it ends)
            raise ConfigurationError(
                "run_until_idle() was called inside a run of this Flock, which it would wait "
                "for for ever; publish from the run and let the caller wait, or use invoke()"
            )
        if timeout is not None:
            timeout = _seconds(timeout, "run_until_idle(timeout=)")
        instrument = self._prepare()
        with self._auto_workflow(begin=False):
            await self._run_until_idle(instrument, timeout, work)

    async def _run_until_idle(
        self, instrument: Instrument, timeout: float | None, work: bool
    ) -> None:
        try:
            with instrument.span("Flock.run_until_idle") as span:
                if self._distributed is not None:
                    await self._distributed.run_until_idle(timeout, work=work)
                await self._wait_idle(timeout)
                await self.shutdown()
                failures, self._failures = self._failures, []
                self._stopped.clear()  # reported: later runs past the limit, in a new error
                if self._distributed is not None:
                    failures += await self._distributed.take_failures()
                if instrument.enabled:
                    span.set_attribute("flock.failures", len(failures))
                    if waiting := self._fanin.waiting():  # artifacts still without partners
                        span.set_attribute("flock.join.waiting", waiting)
                if failures:
                    raise AgentFailures(
                        f"{len(failures)} agent run(s) failed: "
                        + "; ".join(sorted({f.agent for f in failures})),
                        failures,
                    )
        except BaseException as exc:
            if self._workflows is not None:
                await self._workflows.auto_end(exc)
            raise
        if self._workflows is not None:
            await self._workflows.auto_end()

    async def _wait_idle(self, timeout: float | None) -> None:
        """Wait until no run is left, then start any partial batches and wait for them."""
        try:
            async with asyncio.timeout(timeout):
                self._idle_event()  # first: it gives up the runs of a loop closed by hand
                interrupted, self._interrupted = self._interrupted, []
                for agent, artifacts, extra, _ in interrupted:
                    self._spawn(agent, artifacts, extra)
                await self._idle_event().wait()
                while self._fanin.flush_idle():
                    await self._idle_event().wait()
        except TimeoutError:
            agents = sorted({t.get_name() for t in self._tasks})
            raise TimeoutError(
                f"run_until_idle timed out after {timeout}s with {len(self._tasks)} agent "
                f"run(s) still going ({', '.join(agents)}); they keep running"
            ) from None

    async def invoke(
        self,
        agent: AgentBuilder | Agent | str,
        obj: BaseModel | Sequence[BaseModel],
        *,
        publish_outputs: bool = False,
        correlation_id: str | None = None,
    ) -> list[Artifact]:
        """Run one agent once on ``obj`` and return its output artifacts.

        A batch agent takes a list of 1 to ``batch`` inputs (or one), a join agent a list
        with one input of each of its types (in any order); they run at once, whatever waits.
        With ``publish_outputs=True`` the inputs and the outputs are stored and the outputs
        are scheduled to their subscribers (once); otherwise nothing touches the blackboard.

        Raises:
            AgentRunError: the run failed (after its retries).
        """
        target = self._resolve_agent(agent)
        correlation_id = checked_correlation_id(correlation_id)
        instrument = self._prepare()
        items = [publishable(o) for o in (obj if isinstance(obj, list | tuple) else [obj])]
        order, extra = invoke_plan(target, [type_name for type_name, _ in items])
        with instrument.span("Flock.invoke", {"gen_ai.agent.name": target.name}) as span:
            span_context = shared_flags(span.get_span_context()) if instrument.enabled else None
            workflow = correlation_id or new_id()
            artifacts = tuple(
                Artifact(type=t, payload=p, correlation_id=workflow, span_context=span_context)
                for t, p in (items[i] for i in order)
            )
            if publish_outputs:
                await self.store.put(artifacts)
            return await self._attempts(target, artifacts, publish=publish_outputs, extra=extra)

    def _resolve_agent(self, agent: AgentBuilder | Agent | str) -> Agent:
        if isinstance(agent, AgentBuilder):
            agent = agent.agent
        if isinstance(agent, str):
            return self.get_agent(agent)
        if not isinstance(agent, Agent) or self._agents.get(agent.name) is not agent:
            raise ConfigurationError(f"{agent!r} is not an agent of this Flock")
        return agent

    async def work(
        self, *, concurrency: int | None = None, lease: float = 30.0, until_idle: bool = False
    ) -> None:
        """Run this program's agents on the runs queued in a distributed store, until
        cancelled (``until_idle``: until no run is queued or leased across all workers).

        This is what ``flock worker module:flock`` runs. When cancelled (SIGTERM/Ctrl-C in
        ``flock worker``) it cancels the runs it holds and gives them back to the queue, so
        other workers take them at once; a worker that dies instead keeps them until their
        lease (``lease`` seconds) expires.

        Args:
            concurrency: runs at once in this process (default: the sum of the agents'
                ``max_concurrency``; each agent also keeps its own limit).
            lease: seconds a claimed run stays leased without this worker's heartbeat.

        Raises:
            ConfigurationError: the store is not distributed (it has no work queue), or
                ``concurrency``/``lease`` is not a count/a finite number of seconds > 0.
        """
        if self._distributed is None:
            raise ConfigurationError(
                f"{type(self.store).__name__} has no work queue; give the Flock a distributed "
                "store such as PostgresStore (or set FLOCK_STORE_URL=postgresql://…)"
            )
        if concurrency is not None:
            checked_count(concurrency, "concurrency")
        lease = _seconds(lease, "work(lease=)")
        self._distributed.collect_failures = until_idle
        try:
            await self._distributed.work(
                concurrency=concurrency, lease=lease, until_idle=until_idle
            )
        finally:
            self._distributed.collect_failures = True

    async def shutdown(self) -> None:
        """Wake the trace writer to encode queued spans (without waiting; they are written at
        the next flush interval or ``traced_run`` exit); the Flock stays usable. Called by
        run_until_idle."""
        instrument = self._prepare()
        with instrument.span("Flock.shutdown"):
            if self._workflows is not None:
                self._workflows.request_flush()

    # Tracing --------------------------------------------------------------

    @asynccontextmanager
    async def traced_run(self, name: str = "workflow") -> AsyncIterator[Span]:
        """Group everything inside into one trace under a root span called ``name``.

        The span carries ``flock.workflow=true`` and ``workflow.name``, as does every span
        inside it; an exception is recorded on it and re-raised. Spans are in the trace file
        when the outermost ``traced_run`` exits.

        Example:
            >>> async def main(flock):
            ...     async with flock.traced_run("pizza_workflow") as span:
            ...         span.set_attribute("pipeline.version", "2.0")
        """
        self._prepare()
        assert self._workflows is not None
        async with self._workflows.workflow(name) as span:
            yield span

    async def serve(
        self,
        *,
        dashboard: bool = True,
        host: str = "127.0.0.1",
        port: int = 8344,
        token: str | None = None,
        otlp_grpc_port: int | None = None,
    ) -> None:
        """Serve the dashboard (and its JSON API) for this Flock until cancelled.

        Prints the URL. Binding anything but loopback needs a ``token`` (one is generated
        and printed if none is given); requests then send ``Authorization: Bearer <token>``
        or ``?token=``. Needs the ``dashboard`` extra (``pip install flock[dashboard]``).

        Args:
            dashboard: serve the web UI at ``/`` (``False``: only the JSON API).
            host: the address to bind (default loopback only).
            port: the TCP port (``0``: any free port).
            token: the access token.
            otlp_grpc_port: also receive spans over OTLP/gRPC there (4317; ``0``: a free
                port), beside ``POST /v1/traces``.

        Example:
            >>> async def main(flock):  # doctest: +SKIP
            ...     await flock.serve(dashboard=True)  # http://127.0.0.1:8344/
        """
        from flock.dashboard.server import serve
        from flock.tracing.setup import trace_file_path

        self._prepare()  # set up tracing first, so the trace file exists
        db_path = trace_file_path(self._tracer_provider)  # the file this Flock traces to
        await serve(
            db_path, flock=self, host=host, port=port, token=token, ui=dashboard,
            otlp_grpc_port=otlp_grpc_port,
        )  # fmt: skip

    @_ClassOrInstanceMethod
    def clear_traces(
        db_path: str | None = None,
        *,
        older_than: str | timedelta | None = None,
        _flock: Flock | None = None,
    ) -> dict[str, Any]:
        """Delete every span in the trace file and reclaim its space.

        ``db_path`` defaults to the file this process traces to (on an instance: the file
        that Flock traces to): ``FLOCK_TRACE_DB`` or ``.flock/traces.duckdb`` (or the
        ``db_path`` given to ``flock.tracing.configure``), the same file the CLI and ``serve``
        use. With ``older_than`` (``"7d"``, ``"12h"``, an
        ISO time or a ``timedelta``) only whole traces that ended before then are deleted.

        Returns ``{"success": bool, "deleted_count": int, "error": str | None}``; a missing or
        unreadable file gives ``success=False`` with the reason, never an exception.
        """
        from flock.tracing.store import clear_traces

        if db_path is None:
            from flock.tracing.setup import trace_file_path

            db_path = trace_file_path(_flock._tracer_provider if _flock is not None else None)
        return clear_traces(db_path, older_than=older_than)
