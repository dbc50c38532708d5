"""Agents and the chainable builder that declares them.

Example:
    >>> from pydantic import BaseModel
    >>> from flock import Flock, flock_type
    >>> @flock_type
    ... class Idea(BaseModel):
    ...     topic: str
    >>> @flock_type
    ... class Pizza(BaseModel):
    ...     name: str
    >>> flock = Flock()
    >>> chef = (
    ...     flock.agent("chef")
    ...     .description("Turns ideas into pizzas")
    ...     .consumes(Idea)
    ...     .publishes(Pizza)
    ...     .with_engines(lambda idea: Pizza(name=f"{idea.topic} pizza"))
    ... )
    >>> chef.name
    'chef'
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry.trace import Link, StatusCode
from pydantic import BaseModel, ValidationError

from flock._errors import describe, fatal, safe_repr
from flock._names import is_name
from flock.artifacts import Artifact, payload_json
from flock.best_of import BestOf, ScoreFunction, best_of_spec, evaluate_best_of
from flock.components import (
    HOOKS,
    AgentComponent,
    OutputUtilityComponent,
    RunContext,
    call_hook,
    overrides,
)
from flock.engines.base import Engine
from flock.engines.function import FunctionEngine
from flock.exceptions import ConfigurationError
from flock.fanin import BY_CORRELATION_ID, bind_engines, fanin_spec, finite_seconds
from flock.registry import registry
from flock.subscription import FanIn, KeyFunction, Predicate, Subscription, normalize_predicates
from flock.tools import check_tool_engines, check_tools
from flock.visibility import Visibility, check_agent, checked, label_set, tenant_name

if TYPE_CHECKING:
    from flock.orchestrator import Flock
    from flock.tracing._instrument import AttributeValue, Instrument

__all__ = ["Agent", "AgentBuilder"]

log = logging.getLogger("flock")

Emit = Callable[[RunContext, list[BaseModel]], Awaitable[list[Artifact]]]
PAYLOAD_ATTRIBUTE_CHARS = 2048
MAX_FLOAT_EXPONENT = 1023  # 2**1023 is the largest power of two a float holds


class Agent:
    """An agent as the scheduler runs it. Built with :meth:`Flock.agent`, not directly."""

    def __init__(self, name: str, *, flock: Flock) -> None:
        self.name = name
        self.flock = flock
        self.description: str | None = None
        self.subscriptions: list[Subscription] = []
        self.outputs: list[type[BaseModel]] = []
        self.utilities: list[AgentComponent] = [OutputUtilityComponent()]
        self.engines: list[Engine] = []
        self.functions: list[tuple[FunctionEngine, Callable[..., Any]]] = []
        """The plain functions given to with_engines(), with the FunctionEngine of each."""
        self.tools: list[Callable[..., Any]] = []
        """The functions its LLM engine may call (``with_tools()``, see :mod:`flock.tools`)."""
        self.fanin: FanIn | None = None
        """How one run consumes several artifacts (``batch=`` / ``join=True``), if it does."""
        self.max_concurrency = 2
        self.prevent_self_trigger = True
        self.retries = 0
        self.retry_backoff = 0.5
        self.timeout: float | None = None
        self.model: str | None = None
        self.labels: frozenset[str] = frozenset()
        self.tenant_id: str | None = None
        self.output_visibility: dict[type[BaseModel], Visibility] = {}
        """Who may see its outputs, by type (``publishes(..., visibility=)``; else public)."""
        self.best_of: BestOf | None = None
        """Candidates per run and how they are scored (``best_of()``, :mod:`flock.best_of`)."""
        self._semaphore: asyncio.Semaphore | None = None
        self._semaphore_loop: asyncio.AbstractEventLoop | None = None
        self._hooks: dict[str, tuple[AgentComponent, ...]] | None = None

    def __repr__(self) -> str:
        return f"Agent({self.name!r})"

    @property
    def consumed_types(self) -> frozenset[str]:
        return frozenset(t for sub in self.subscriptions for t in sub.types)

    @property
    def published_types(self) -> tuple[str, ...]:
        return tuple(registry.name_of(t) for t in self.outputs)

    @property
    def components(self) -> list[AgentComponent]:
        """Utilities first, then engines: the order hooks run in. Output utilities run last
        among the utilities, so their panels show what is published (after every other
        component's ``on_post_evaluate``)."""
        shown = [u for u in self.utilities if isinstance(u, OutputUtilityComponent)]
        others = [u for u in self.utilities if not isinstance(u, OutputUtilityComponent)]
        return [*others, *shown, *self.resolved_engines()]

    def resolved_engines(self) -> list[Engine]:
        if not self.engines:
            from flock.engines.dspy import DSPyEngine

            self.engines = [DSPyEngine()]
            self._hooks = None
        return self.engines

    def check(self) -> None:
        """Raise :class:`ConfigurationError` if the agent cannot run."""
        if not self.subscriptions:
            raise ConfigurationError(
                f"agent {self.name!r} consumes nothing; "
                f"call flock.agent({self.name!r}).consumes(SomeType)"
            )
        bind_engines(self)
        check_tool_engines(self)
        check_agent(self, self.flock._agents)

    def semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._semaphore_loop is not loop:
            self._semaphore = asyncio.Semaphore(self.max_concurrency)
            self._semaphore_loop = loop
        return self._semaphore

    def hooks(self, hook: str) -> tuple[AgentComponent, ...]:
        if self._hooks is None:
            components = self.components
            self._hooks = {h: tuple(c for c in components if overrides(c, h)) for h in HOOKS}
        return self._hooks[hook]

    async def evaluate_engines(
        self, ctx: RunContext, inputs: list[Artifact], instrument: Instrument
    ) -> list[BaseModel]:
        """The engine phase of a run: every engine in order, each in its ``<Engine>.evaluate``
        span; their outputs together."""
        outputs: list[BaseModel] = []
        for engine in self.resolved_engines():
            with instrument.span(
                f"{type(engine).__name__}.evaluate", {"gen_ai.agent.name": self.name}
            ):
                outputs.extend(
                    self.coerce_outputs(await call_hook(engine, "evaluate", ctx, inputs))
                )
        return outputs

    def coerce_outputs(self, result: Any) -> list[BaseModel]:
        """Turn an engine's return value into a list of declared output models."""
        if result is None:
            return []
        if isinstance(result, BaseModel | list):  # the common cases first: no checks
            items = [result] if isinstance(result, BaseModel) else result
            return self._declared(items)
        if inspect.isawaitable(result) or inspect.isasyncgen(result):
            if inspect.iscoroutine(result):
                result.close()  # not run: no "never awaited" warning on top of this error
            raise TypeError(
                f"agent {self.name!r}: its engine returned {type(result).__name__} (an "
                "un-awaited coroutine or an async generator); make the engine an async "
                "function that returns the outputs, or a plain function"
            )
        single = isinstance(result, BaseModel | dict | str | bytes) or not isinstance(
            result, Iterable
        )
        return self._declared([result] if single else list(result))

    def _declared(self, items: list[Any]) -> list[BaseModel]:
        outputs: list[BaseModel] = []
        for item in items:
            if isinstance(item, dict) and len(self.outputs) == 1:
                try:
                    item = self.outputs[0].model_validate(item)
                except ValidationError as exc:
                    raise TypeError(
                        f"agent {self.name!r} returned a dict that is not a valid "
                        f"{self.outputs[0].__name__}: {exc}"
                    ) from exc
            if not isinstance(item, BaseModel) or type(item) not in self.outputs:
                declared = ", ".join(t.__name__ for t in self.outputs) or "nothing"
                hint = (
                    f"add .publishes({type(item).__name__}) or return one of the declared types"
                    if isinstance(item, BaseModel)
                    else "return instances of the declared types (or dicts of their fields)"
                )
                raise TypeError(
                    f"agent {self.name!r} returned {type(item).__name__} ({safe_repr(item)}), "
                    f"but it publishes {declared}; {hint}"
                )
            outputs.append(item)
        return outputs

    async def execute(
        self,
        ctx: RunContext,
        inputs: list[Artifact],
        *,
        instrument: Instrument,
        emit: Emit,
        extra: Mapping[str, AttributeValue] | None = None,
    ) -> list[Artifact]:
        """Run the components and engines once over ``inputs`` (the ``Agent.execute`` span,
        with the ``extra`` attributes of a fan-in run)."""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": self.name,
            "flock.agent.name": self.name,
            "flock.correlation_id": ctx.correlation_id,
            "flock.run_id": ctx.run_id,
            "flock.attempt": ctx.attempt,
            "flock.input.ids": [a.id for a in inputs],
            "flock.input.types": [a.type for a in inputs],
        }
        if extra:
            attributes.update(extra)
        links = None
        if instrument.enabled:
            links = [
                Link(a.span_context, {"flock.artifact.id": a.id, "flock.artifact.type": a.type})
                for a in inputs
                if a.span_context is not None and a.span_context.is_valid
            ]
            attributes["input.value"] = _payload_text(inputs)
        emitted: list[list[Artifact]] = []  # the published outputs, once _steps emitted them
        try:
            with instrument.span("Agent.execute", attributes, links=links) as span:
                try:
                    if self.timeout is None:
                        published = await self._steps(ctx, inputs, instrument, emit, emitted)
                    else:
                        published = await self._timed(ctx, inputs, instrument, emit, emitted)
                except BaseException as error:
                    if isinstance(error, GeneratorExit):
                        raise  # a run abandoned with its event loop, collected: it cannot await
                    if fatal(error) and instrument.enabled:
                        # The span leaves CancelledError/SystemExit unrecorded; an
                        # interrupted run did not complete, so mark it.
                        span.record_exception(error)
                        span.set_status(StatusCode.ERROR, f"interrupted: {type(error).__name__}")
                    await self._final_hooks(ctx, instrument, "on_error", error)
                    await self._final_hooks(ctx, instrument, "on_terminate", error)
                    raise
                if self.hooks("on_terminate"):
                    await self._final_hooks(ctx, instrument, "on_terminate")
                if instrument.enabled:
                    span.set_attribute("flock.output.ids", [a.id for a in published])
                    span.set_attribute("output.value", _payload_text(published))
                return published
        except asyncio.CancelledError as cancelled:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # the run itself is being cancelled (shutdown, a worker stopping)
            # The agent's own code raised it (e.g. it awaited a future someone cancelled):
            # a failure like any other, not a run that silently disappears.
            failure = RuntimeError(
                "the agent's code raised CancelledError although its run was not cancelled"
            )
            failure.__cause__ = cancelled
            if emitted:
                raise FailedAfterPublish(failure, emitted[0]) from failure
            raise failure from cancelled
        except BaseException as error:  # (not only Exception: pytest's Failed, say)
            if emitted and not fatal(error):  # on the blackboard: a retry would publish again
                raise FailedAfterPublish(error, emitted[0]) from error
            raise

    async def _timed(
        self,
        ctx: RunContext,
        inputs: list[Artifact],
        instrument: Instrument,
        emit: Emit,
        emitted: list[list[Artifact]],
    ) -> list[Artifact]:
        """:meth:`_steps` within the agent's timeout; past it, a TimeoutError saying so."""
        assert self.timeout is not None
        deadline = asyncio.timeout(self.timeout)
        try:
            async with deadline:
                return await self._steps(ctx, inputs, instrument, emit, emitted, deadline)
        except TimeoutError as error:
            if not deadline.expired():
                raise  # the agent's own code raised it
            raise TimeoutError(
                f"the run took longer than the agent's timeout of {self.timeout:g}s"
            ) from error

    async def _final_hooks(
        self,
        ctx: RunContext,
        instrument: Instrument,
        hook: Literal["on_error", "on_terminate"],
        error: BaseException | None = None,
    ) -> None:
        """Run the ``on_error`` or ``on_terminate`` hooks. While ``error`` fails the run, a
        hook that raises does not replace it: the hook's exception is logged, recorded on
        its span and noted on ``error``, and the remaining hooks still run."""
        for component in self.hooks(hook):
            try:
                with instrument.span(f"{type(component).__name__}.{hook}"):
                    if hook == "on_terminate":
                        await call_hook(component, hook, ctx)
                    elif error is not None:
                        await call_hook(component, hook, ctx, error)
            except Exception as hook_error:
                if error is None:
                    raise
                note = (
                    f"{type(component).__name__}.{hook} raised while handling it: "
                    f"{describe(hook_error)}"
                )
                log.error("agent %r: %s", self.name, note, exc_info=hook_error)
                error.add_note(note)

    async def _steps(
        self,
        ctx: RunContext,
        inputs: list[Artifact],
        instrument: Instrument,
        emit: Emit,
        emitted: list[list[Artifact]],
        deadline: asyncio.Timeout | None = None,
    ) -> list[Artifact]:
        for component in self.hooks("on_initialize"):
            with instrument.span(f"{type(component).__name__}.on_initialize"):
                await call_hook(component, "on_initialize", ctx)
        for component in self.hooks("on_pre_consume"):
            with instrument.span(f"{type(component).__name__}.on_pre_consume"):
                inputs = _returned(
                    component,
                    "on_pre_consume",
                    await call_hook(component, "on_pre_consume", ctx, inputs),
                )
            if not inputs:
                return []
        for component in self.hooks("on_pre_evaluate"):
            with instrument.span(f"{type(component).__name__}.on_pre_evaluate"):
                inputs = _returned(
                    component,
                    "on_pre_evaluate",
                    await call_hook(component, "on_pre_evaluate", ctx, inputs),
                )
        if self.best_of is not None:  # n candidates at once; the best one goes on from here
            outputs = await evaluate_best_of(self.best_of, self, ctx, inputs, instrument)
        else:
            outputs = await self.evaluate_engines(ctx, inputs, instrument)
        for component in self.hooks("on_post_evaluate"):
            with instrument.span(f"{type(component).__name__}.on_post_evaluate"):
                outputs = self.coerce_outputs(
                    _returned(
                        component,
                        "on_post_evaluate",
                        await call_hook(component, "on_post_evaluate", ctx, inputs, outputs),
                    )
                )
        if deadline is not None and deadline.expired():
            # The run's timeout fired and an engine or component caught the CancelledError
            # and went on: it does not publish after the fact. Raising it again lets the
            # timeout report the TimeoutError.
            raise asyncio.CancelledError
        published = await emit(ctx, outputs)
        emitted.append(published)
        for artifact in published:
            for component in self.hooks("on_post_publish"):
                with instrument.span(f"{type(component).__name__}.on_post_publish"):
                    await call_hook(component, "on_post_publish", ctx, artifact)
        return published


def _returned(component: AgentComponent, hook: str, value: Any) -> Any:
    """A hook's return value, or a clear error when it returned nothing (a hook that edits
    in place and forgets ``return`` would otherwise drop every input or output silently)."""
    if value is None:
        raise TypeError(
            f"{type(component).__name__}.{hook} returned None; it must return the "
            f"{'outputs' if hook == 'on_post_evaluate' else 'inputs'} (an empty list to "
            "drop them all)"
        )
    return value


class FailedAfterPublish(Exception):
    """A run failed after it published its outputs (an ``on_post_publish`` or
    ``on_terminate`` hook raised, or its timeout fired there). The outputs stay on the
    blackboard, so the run is reported and not retried: a retry would publish them again.
    The run's own exception is ``error`` (and ``__cause__``)."""

    def __init__(self, error: BaseException, published: list[Artifact]) -> None:
        super().__init__(describe(error))
        self.error = error
        self.published = published


def _payload_text(artifacts: Sequence[Artifact]) -> str:
    if len(artifacts) == 1:
        text = _shown(artifacts[0].payload)
    else:
        text = "[" + ",".join(_shown(a.payload) for a in artifacts) + "]"
    if len(text) > PAYLOAD_ATTRIBUTE_CHARS:
        return (
            text[:PAYLOAD_ATTRIBUTE_CHARS]
            + f"…[truncated {len(text) - PAYLOAD_ATTRIBUTE_CHARS} chars]"
        )
    return text


def _shown(payload: BaseModel) -> str:
    """The payload as JSON text for a span attribute; a placeholder when it cannot be shown
    (nested too deep to serialize, say): tracing never fails a run."""
    try:
        return payload_json(payload)
    except Exception as error:
        log.debug("cannot show a %s payload: %s", type(payload).__name__, describe(error))
        return f'{{"unshowable": "{type(payload).__name__} ({type(error).__name__})"}}'


def _model_type(t: Any, *, role: str, agent: str) -> type[BaseModel]:
    if not (isinstance(t, type) and issubclass(t, BaseModel)):
        raise ConfigurationError(
            f"agent {agent!r}: {role}() takes Pydantic model classes, got {t!r}; "
            "declare the type as `class X(BaseModel): ...` and decorate it with @flock_type"
        )
    registry.register(t)
    return t


class AgentBuilder:
    """Chainable declaration of an agent; every method returns the builder.

    Mistakes fail at the call that makes them (a non-model type, a bad limit); an agent that
    consumes nothing fails when the orchestrator is first used.
    """

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def __repr__(self) -> str:
        return f"AgentBuilder({self.agent.name!r})"

    def _changed(self) -> AgentBuilder:
        self.agent._hooks = None
        self.agent.flock._agents_changed()
        return self

    @property
    def name(self) -> str:
        return self.agent.name

    def description(self, text: str) -> AgentBuilder:
        """What the agent does (also given to LLM engines as instructions)."""
        if not isinstance(text, str):
            raise ConfigurationError(f"description must be a string, got {text!r}")
        self.agent.description = text
        return self

    def consumes(
        self,
        *types: type[BaseModel],
        where: Predicate | Sequence[Predicate] | None = None,
        from_agents: Iterable[str] | None = None,
        tags: Iterable[str] | None = None,
        batch: int | None = None,
        batch_timeout: float | timedelta | None = None,
        batch_by: KeyFunction | Literal["correlation_id"] | None = None,
        join: bool = False,
        join_by: KeyFunction | Literal["correlation_id"] | None = BY_CORRELATION_ID,
        join_within: float | timedelta | None = None,
    ) -> AgentBuilder:
        """Run this agent for each published artifact of one of ``types`` — or, with
        ``batch=`` or ``join=True``, once for several of them (see :mod:`flock.fanin`).

        Args:
            *types: registered Pydantic models (unregistered ones are registered here).
            where: predicate(s) on the payload; all must return True.
            from_agents: only artifacts published by these agents.
            tags: only artifacts that carry all of these tags.
            batch: one run gets up to this many artifacts (in publish order); the function
                engine gets a list of payloads.
            batch_timeout: seconds after a batch's first artifact when it runs anyway
                (``run_until_idle()`` runs partial batches without waiting for it).
            batch_by: what batches are grouped by: nothing (default: one stream of batches,
                whatever workflow the artifacts belong to), ``"correlation_id"`` (batches
                within one workflow) or a function of the payload giving a key.
            join: one run gets one artifact of each of ``types`` with the same key (an AND
                gate); the function engine gets one argument per type, in this order.
            join_by: the join key: the correlation id (default), ``None`` (any artifacts)
                or a function called with each payload, of every type.
            join_within: an artifact with no partner after this many seconds stops waiting.

        A fan-in agent (``batch=`` or ``join=True``) consumes through this one declaration.
        """
        if not types:
            raise ConfigurationError(
                f"agent {self.agent.name!r}: consumes() needs at least one type"
            )
        models = [_model_type(t, role="consumes", agent=self.agent.name) for t in types]
        if isinstance(from_agents, str) or isinstance(tags, str):
            raise ConfigurationError(
                f"agent {self.agent.name!r}: from_agents= and tags= take a list of names, "
                f"not a single string (write [{(from_agents or tags)!r}])"
            )
        if where is not None and not callable(where) and not isinstance(where, Iterable):
            raise ConfigurationError(
                f"agent {self.agent.name!r}: where= takes a plain function of the payload "
                f"returning a bool, or a list of them, got {where!r}"
            )
        producers = self._names(from_agents, "from_agents")
        if producers is not None and not producers:
            raise ConfigurationError(
                f"agent {self.agent.name!r}: from_agents=[] would take artifacts from no "
                "agent, so it would never run; name the agents, or leave from_agents= out "
                "to take artifacts from any"
            )
        tag_set = self._names(tags, "tags")
        names = [registry.name_of(m) for m in models]
        fanin = fanin_spec(
            self.agent.name,
            names,
            batch=batch,
            batch_timeout=batch_timeout,
            batch_by=batch_by,
            join=join,
            join_by=join_by,
            join_within=join_within,
        )
        if fanin is not None or self.agent.fanin is not None:
            self._check_fanin()
        subscription = Subscription(
            types=frozenset(names),
            where=normalize_predicates(where),
            from_agents=producers,
            tags=tag_set,
            fanin=fanin,
        )
        self.agent.subscriptions.append(subscription)
        self.agent.fanin = fanin
        return self._changed()

    def _names(self, values: Iterable[str] | None, keyword: str) -> frozenset[str] | None:
        """``from_agents=`` / ``tags=`` as a set of names (non-empty strings without NUL, as
        agent names and published tags are), or a :class:`ConfigurationError`."""
        if values is None:
            return None
        if isinstance(values, bytes) or not isinstance(values, Iterable):
            raise ConfigurationError(
                f"agent {self.agent.name!r}: {keyword}= takes a list of names, got {values!r}"
            )
        items = list(values)
        for item in items:
            if not is_name(item):
                raise ConfigurationError(
                    f"agent {self.agent.name!r}: {keyword}= takes names (non-empty strings "
                    f"without NUL), got {item!r} in {items!r}"
                )
        return frozenset(items)

    def _check_fanin(self) -> None:
        name = self.agent.name
        if self.agent.subscriptions:
            raise ConfigurationError(
                f"agent {name!r}: an agent with batch= or join=True consumes through that "
                "one consumes() call; list every type there, or declare another agent for "
                "the other declaration"
            )
        if self.agent.flock._distributed is not None:
            raise ConfigurationError(
                f"agent {name!r}: batch= and join=True run in one process for now (the "
                f"waiting artifacts live in its memory), not with "
                f"{type(self.agent.flock.store).__name__}; use the default MemoryStore for "
                "this flock"
            )

    def publishes(
        self, *types: type[BaseModel], visibility: Visibility | None = None
    ) -> AgentBuilder:
        """The model types this agent's outputs may have; ``visibility`` (see
        :mod:`flock.visibility`) sets which agents may see its outputs of these types
        (default: public; ``None`` leaves what an earlier call set)."""
        name = self.agent.name
        if visibility is None and not types:
            raise ConfigurationError(
                f"agent {name!r}: publishes() needs at least one type, e.g. .publishes(Pizza)"
            )
        if visibility is not None:
            checked(visibility, f"agent {name!r}: publishes(visibility=...)")
            if not types:
                raise ConfigurationError(
                    f"agent {name!r}: publishes(visibility=...) needs the types it applies "
                    "to, e.g. .publishes(Report, visibility=only_for('auditor'))"
                )
        for t in types:
            model = _model_type(t, role="publishes", agent=name)
            if model not in self.agent.outputs:
                self.agent.outputs.append(model)
            if visibility is not None:
                self.agent.output_visibility[model] = visibility
        return self._changed()

    def labels(self, *labels: str) -> AgentBuilder:
        """Add labels to the agent's identity: it may see artifacts whose
        ``LabelledVisibility`` requires only labels it carries."""
        self.agent.labels |= label_set(labels, self.agent.name)
        return self._changed()

    def tenant(self, tenant_id: str) -> AgentBuilder:
        """The agent's tenant: it may see artifacts of ``TenantVisibility(tenant_id)``, and
        ``TenantVisibility()`` on its ``publishes(...)`` means this tenant."""
        self.agent.tenant_id = tenant_name(tenant_id, f"agent {self.agent.name!r}: tenant()")
        return self._changed()

    def with_engines(self, *engines: Engine | Callable[..., Any]) -> AgentBuilder:
        """Replace the engines; a plain function becomes a :class:`FunctionEngine`."""
        resolved: list[Engine] = []
        functions: list[tuple[FunctionEngine, Callable[..., Any]]] = []
        for engine in engines:
            if isinstance(engine, Engine):
                resolved.append(engine)
            elif callable(engine) and not inspect.isclass(engine):
                function_engine = FunctionEngine(engine)
                resolved.append(function_engine)
                functions.append((function_engine, engine))
            else:
                raise ConfigurationError(
                    f"agent {self.agent.name!r}: with_engines() takes Engine instances or "
                    f"functions, got {engine!r}"
                )
        if not resolved:
            raise ConfigurationError(f"agent {self.agent.name!r}: with_engines() needs an engine")
        self.agent.engines = resolved
        self.agent.functions = functions
        return self._changed()

    def with_tools(self, *functions: Callable[..., Any]) -> AgentBuilder:
        """Python functions the agent's LLM engine may call (``DSPyEngine`` runs them with
        ``dspy.ReAct``; see :mod:`flock.tools`); calling it again adds more.

        Each is a ``def`` or ``async def`` with typed parameters and a docstring: its name,
        signature and docstring describe it to the model. Plain functions run in a worker
        thread. Each call is a ``Tool.<name>`` span.
        """
        self.agent.tools.extend(check_tools(self.agent.name, functions, self.agent.tools))
        return self._changed()

    def with_utilities(self, *components: AgentComponent) -> AgentBuilder:
        """Add components. Output panels (:class:`OutputUtilityComponent`) run after the
        other utilities, so they show the outputs as published."""
        if not components:
            raise ConfigurationError(
                f"agent {self.agent.name!r}: with_utilities() needs at least one component"
            )
        for component in components:
            if not isinstance(component, AgentComponent) or isinstance(component, Engine):
                raise ConfigurationError(
                    f"agent {self.agent.name!r}: with_utilities() takes AgentComponent "
                    f"instances (engines go to with_engines()), got {component!r}"
                )
            self.agent.utilities.append(component)
        return self._changed()

    def without_output(self) -> AgentBuilder:
        """Drop the default OutputUtilityComponent."""
        self.agent.utilities = [
            c for c in self.agent.utilities if not isinstance(c, OutputUtilityComponent)
        ]
        return self._changed()

    def max_concurrency(self, n: int) -> AgentBuilder:
        """At most ``n`` runs of this agent at once (default 2)."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigurationError(
                f"agent {self.agent.name!r}: max_concurrency must be an int ≥ 1, got {n!r}"
            )
        self.agent.max_concurrency = n
        self.agent._semaphore = None
        return self

    def prevent_self_trigger(self, enabled: bool = True) -> AgentBuilder:
        """Whether the agent ignores artifacts it published itself (default True)."""
        if not isinstance(enabled, bool):
            raise ConfigurationError(
                f"agent {self.agent.name!r}: prevent_self_trigger() takes True or False, "
                f"got {enabled!r}"
            )
        self.agent.prevent_self_trigger = enabled
        return self

    def retries(self, n: int, *, backoff: float | timedelta = 0.5) -> AgentBuilder:
        """Retry a failed run up to ``n`` times, waiting ``backoff * 2**k`` seconds before
        retry ``k + 1`` (``backoff``: a finite number of seconds ≥ 0 or a ``timedelta``)."""
        name = self.agent.name
        seconds = finite_seconds(backoff, zero=True)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0 or seconds is None:
            raise ConfigurationError(
                f"agent {name!r}: retries needs n ≥ 0 (an int) and backoff ≥ 0 seconds (a "
                f"finite number or a timedelta), got n={n!r}, backoff={backoff!r}"
            )
        if n and finite_seconds(_longest_wait(seconds, n), zero=True) is None:
            raise ConfigurationError(
                f"agent {name!r}: retries({n}, backoff={backoff!r}) would wait backoff * "
                f"2**{n - 1} seconds before its last retry, too large to compute; use fewer "
                "retries"
            )
        self.agent.retries = n
        self.agent.retry_backoff = seconds
        return self

    def best_of(self, n: int, score: ScoreFunction | None = None) -> AgentBuilder:
        """Evaluate ``n`` candidates per run, concurrently, and publish the best one.

        Each run's engine phase (all engines, on the inputs after ``on_pre_evaluate``) runs
        ``n`` times at once; ``score(outputs)`` gets one candidate's outputs (the list of its
        output models) and returns a number, higher is better (``async def`` works too). The
        best candidate (the first of equals) goes on through ``on_post_evaluate`` and is
        published; the others are dropped. Failing candidates are logged and skipped; when
        all fail, so does the run. ``n=1`` turns it off. See :mod:`flock.best_of`.
        """
        self.agent.best_of = best_of_spec(self.agent.name, n, score)
        return self

    def timeout(self, seconds: float | timedelta | None) -> AgentBuilder:
        """Fail a run (with ``TimeoutError``) that takes longer than ``seconds`` (a finite
        number > 0 or a ``timedelta``; ``None``: no timeout, the default)."""
        limit = None if seconds is None else finite_seconds(seconds)
        if seconds is not None and limit is None:
            raise ConfigurationError(
                f"agent {self.agent.name!r}: timeout must be > 0 seconds or None, got "
                f"{seconds!r}; give a finite number of seconds or a timedelta"
            )
        self.agent.timeout = limit
        return self

    def model(self, name: str) -> AgentBuilder:
        """The LLM model for this agent's default engine (overrides the Flock's), e.g.
        ``"openai/gpt-4o"``."""
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(
                f"agent {self.agent.name!r}: model() takes a model name, a non-empty string "
                f"such as 'openai/gpt-4o', got {name!r}"
            )
        self.agent.model = name
        return self


def _longest_wait(backoff: float, retries: int) -> float:
    """The wait before the last of ``retries`` retries, as the orchestrator computes it
    (``backoff * 2 ** k``); ``inf`` when a float cannot hold it (from ``k = 1024`` on the
    multiplication raises ``OverflowError``, whatever ``backoff`` is, even 0)."""
    k = retries - 1
    return math.inf if k > MAX_FLOAT_EXPONENT else backoff * 2**k
