"""Agent components: lifecycle hooks around each agent run.

An agent run calls the hooks of its components in this order (utilities first, then engines,
each in the order they were added)::

    on_initialize      every component
    on_pre_consume     may drop inputs; no inputs left -> the run ends here
    on_pre_evaluate    may replace inputs
    evaluate           every engine (see flock.engines)
    on_post_evaluate   may replace the outputs
    (outputs are validated against .publishes(...) and published)
    on_post_publish    once per published artifact
    on_error           only when a step above raised; the run then fails
    on_terminate       always, last

Only hooks a component overrides are called (and traced), so a component costs nothing for
the hooks it does not implement.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from flock.artifacts import Artifact
from flock.tracing._instrument import NOOP_INSTRUMENT

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from contextlib import AbstractContextManager

    from opentelemetry.trace import Span

    from flock.agent import Agent
    from flock.store.base import Store
    from flock.tracing._instrument import AttributeValue, Instrument

__all__ = ["HOOKS", "AgentComponent", "OutputUtilityComponent", "RunContext", "call_hook"]

HOOKS = (
    "on_initialize",
    "on_pre_consume",
    "on_pre_evaluate",
    "on_post_evaluate",
    "on_post_publish",
    "on_error",
    "on_terminate",
)


@dataclass(slots=True, kw_only=True)
class RunContext:
    """What a component knows about the run it is part of."""

    agent: Agent
    store: Store
    correlation_id: str
    run_id: str
    attempt: int = 1
    model: str | None = None
    state: dict[str, Any] = field(default_factory=dict)
    """Scratch space shared by the components of one run."""
    instrument: Instrument | None = None

    def span(
        self, name: str, attributes: dict[str, AttributeValue] | None = None
    ) -> AbstractContextManager[Span]:
        """A child span of the current step, on the Flock's tracer (free when tracing is off).

        Example:
            >>> class Lookup(AgentComponent):
            ...     async def on_pre_evaluate(self, ctx, inputs):
            ...         with ctx.span("Lookup.fetch", {"lookup.count": len(inputs)}):
            ...             return inputs
        """
        return (self.instrument or NOOP_INSTRUMENT).span(name, attributes)


class AgentComponent:
    """Base class of agent components. Override the hooks you need; all are optional."""

    async def on_initialize(self, ctx: RunContext) -> None:
        """Called first in every run."""

    async def on_pre_consume(self, ctx: RunContext, inputs: list[Artifact]) -> list[Artifact]:
        """Filter or replace the input artifacts; returning none ends the run."""
        return inputs

    async def on_pre_evaluate(self, ctx: RunContext, inputs: list[Artifact]) -> list[Artifact]:
        """Last chance to change the inputs before the engines see them."""
        return inputs

    async def on_post_evaluate(
        self, ctx: RunContext, inputs: list[Artifact], outputs: list[BaseModel]
    ) -> list[BaseModel]:
        """Inspect or replace the engines' outputs before they are published."""
        return outputs

    async def on_post_publish(self, ctx: RunContext, artifact: Artifact) -> None:
        """Called once for each artifact the run published."""

    async def on_error(self, ctx: RunContext, error: BaseException) -> None:
        """Called when the run failed; the error is still reported after this."""

    async def on_terminate(self, ctx: RunContext) -> None:
        """Called last in every run, failed or not."""


def call_hook(component: AgentComponent, hook: str, *args: Any) -> Awaitable[Any]:
    """``component.<hook>(*args)``, to be awaited; a hook defined without ``async`` (it
    returns no awaitable) is a ``TypeError`` naming the component and the hook."""
    result = getattr(component, hook)(*args)
    if not inspect.isawaitable(result):
        raise TypeError(
            f"{type(component).__name__}.{hook} returned {type(result).__name__} instead "
            f"of an awaitable: hooks are coroutines, define it with `async def {hook}(...)`"
        )
    return result


def overrides(component: AgentComponent, hook: str) -> bool:
    """Whether ``component`` implements ``hook`` itself (only those hooks are called)."""
    return getattr(type(component), hook) is not getattr(AgentComponent, hook)


class OutputUtilityComponent(AgentComponent):
    """Shows each agent's outputs to a person: a Rich panel on a terminal, silent otherwise.

    ``FLOCK_OUTPUT=rich`` forces the panels (e.g. in a notebook or CI log), ``FLOCK_OUTPUT=off``
    silences them; the default follows whether standard output is a terminal.
    """

    def __init__(self, *, enabled: bool | None = None, max_chars: int = 4000) -> None:
        self.enabled = enabled
        self.max_chars = max_chars
        self._auto: tuple[str, object, bool] | None = None

    async def on_initialize(self, ctx: RunContext) -> None:
        ctx.state["output.render"] = self._should_render()

    async def on_post_evaluate(
        self, ctx: RunContext, inputs: list[Artifact], outputs: list[BaseModel]
    ) -> list[BaseModel]:
        render = ctx.state.get("output.render")
        if render is None:
            render = self._should_render()
        if outputs and render:
            self.render(ctx.agent.name, outputs)
        return outputs

    def _should_render(self) -> bool:
        if self.enabled is not None:
            return self.enabled
        mode = os.environ.get("FLOCK_OUTPUT", "auto").lower()
        if mode in ("rich", "on", "true", "1"):
            return True
        if mode in ("off", "quiet", "false", "0"):
            return False
        # isatty() is a system call; ask once per stdout object, not once per run.
        stdout = sys.stdout
        if self._auto is None or self._auto[1] is not stdout:
            self._auto = (mode, stdout, stdout.isatty())
        return self._auto[2]

    def render(self, agent_name: str, outputs: list[BaseModel]) -> None:
        from rich.console import Console
        from rich.markup import escape
        from rich.panel import Panel
        from rich.syntax import Syntax

        console = Console()
        for output in outputs:
            text = json.dumps(output.model_dump(mode="json"), indent=2, ensure_ascii=False)
            if len(text) > self.max_chars:
                text = text[: self.max_chars] + "\n… (truncated)"
            console.print(
                Panel(
                    Syntax(text, "json", word_wrap=True),
                    title=escape(f"{agent_name} → {type(output).__name__}"),
                    title_align="left",
                )
            )
