"""Python functions as the tools of LLM agents: ``flock.agent("x")....with_tools(fn, ...)``.

A tool is a plain function, ``def`` or ``async def``, with typed parameters and a docstring:
its name, signature and docstring are what the model is told about it. The model calls it
with arguments by name; what it returns (or the error it raises) is shown to the model, which
goes on until it has what it needs. ``DSPyEngine`` runs tool agents as ``dspy.ReAct``.

This module holds what is not specific to one engine:

- :func:`check_tools`: the declaration checks of ``with_tools()`` (no DSPy import);
- :func:`check_tool_engines`: an agent with tools needs an engine that calls them;
- :class:`ToolRun`: runs the tool calls of one engine evaluation, each in its own span
  ``Tool.<name>`` (a child of the engine's span), and counts them.

An engine uses tools when its class says ``uses_tools = True`` (``DSPyEngine`` does; a
``FunctionEngine`` does not). A custom engine that calls ``ctx.agent.tools`` sets it too, and
can run each call through :meth:`ToolRun.call` to get the same spans.

Example:
    >>> def get_weather(city: str) -> str:
    ...     '''The current weather in a city.'''
    ...     return f"sunny in {city}"
    >>> [f.__name__ for f in check_tools("forecaster", (get_weather,), [])]
    ['get_weather']
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import typing
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from pydantic import BaseModel, TypeAdapter

from flock._threads import run_sync
from flock.exceptions import ConfigurationError

if TYPE_CHECKING:
    from flock.agent import Agent
    from flock.components import RunContext

__all__ = [
    "RESERVED_TOOL_NAMES",
    "ToolRun",
    "call_tool",
    "check_tool_engines",
    "check_tools",
    "tool_description",
]

log = logging.getLogger("flock")

RESERVED_TOOL_NAMES = frozenset({"finish"})
"""Names the engine gives tools of its own: ``finish`` is how a ReAct model says it is done."""

_TOOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")  # a Python name that function-calling
# APIs accept too (OpenAI: at most 64 characters)


# -- declaration ---------------------------------------------------------------------------


def check_tools(
    agent: str, functions: Sequence[Any], existing: Sequence[Callable[..., Any]]
) -> list[Callable[..., Any]]:
    """The ``functions`` given to ``with_tools()``, checked; ``existing`` are the agent's
    tools so far. Raises :class:`ConfigurationError` saying what to do on misuse."""
    if not functions:
        raise ConfigurationError(
            f"agent {agent!r}: with_tools() needs at least one function, "
            "e.g. .with_tools(get_weather)"
        )
    names = {f.__name__: f for f in existing}
    checked: list[Callable[..., Any]] = []
    for fn in functions:
        name = _check_tool(agent, fn)
        if name in names:
            same = names[name] is fn
            raise ConfigurationError(
                f"agent {agent!r}: "
                + (
                    f"{name!r} is already one of its tools; give each tool once"
                    if same
                    else f"two tools are named {name!r} ({_where(names[name])} and "
                    f"{_where(fn)}); the model calls tools by name: rename one of them"
                )
            )
        names[name] = fn
        checked.append(fn)
    return checked


def _check_tool(agent: str, fn: Any) -> str:
    """Check one tool function; its name."""
    prefix = f"agent {agent!r}: with_tools()"
    if isinstance(fn, list | tuple | set | frozenset):
        raise ConfigurationError(
            f"{prefix} takes the functions as separate arguments, got a "
            f"{type(fn).__name__}; write .with_tools(*tools)"
        )
    if inspect.iscoroutine(fn):
        fn.close()  # never run: no "was never awaited" warning on top of this error
        raise ConfigurationError(
            f"{prefix} got a coroutine (the result of calling an async function); pass the "
            "function itself: .with_tools(fetch), not .with_tools(fetch())"
        )
    if inspect.isclass(fn):
        raise ConfigurationError(
            f"{prefix} takes functions, got the class {fn.__name__}; pass a function (or a "
            "bound method of an instance) that does the work and returns the result"
        )
    if not callable(fn):
        raise ConfigurationError(
            f"{prefix} takes functions, got {fn!r:.80} ({type(fn).__name__}); pass the "
            "function itself, e.g. .with_tools(get_weather), not .with_tools(get_weather())"
        )
    if not (inspect.isfunction(fn) or inspect.ismethod(fn)):
        raise ConfigurationError(
            f"{prefix} takes functions or bound methods, got {fn!r:.80} (a functools.partial, "
            "a callable object or a builtin); the model calls a tool by its function's name "
            "and is told its typed parameters and docstring: wrap it in a def with a "
            "docstring"
        )
    name = fn.__name__
    if name == "<lambda>":
        raise ConfigurationError(
            f"{prefix}: a lambda has no name for the model to call it by and no docstring "
            "to tell the model what it does; define it with def, typed parameters and a "
            "docstring"
        )
    if not _TOOL_NAME.fullmatch(name):
        raise ConfigurationError(
            f"{prefix}: the tool name {name!r} must be a Python name of at most 64 "
            "characters (function-calling APIs accept no other); rename the function"
        )
    if name in RESERVED_TOOL_NAMES:
        raise ConfigurationError(
            f"{prefix}: {name!r} is the engine's own tool (the model calls it when it is "
            "done); rename the function"
        )
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise ConfigurationError(
            f"{prefix}: {name} is a generator; a tool returns its result: collect the "
            "items into a list and return it"
        )
    if not (inspect.getdoc(fn) or "").strip():
        raise ConfigurationError(
            f"{prefix}: {name} has no docstring; the model chooses tools by their "
            "description: add a docstring saying what it does and returns"
        )
    _check_parameters(prefix, name, fn)
    return name


def _check_parameters(prefix: str, name: str, fn: Any) -> None:
    """Every parameter can be passed by name and has a type with a JSON schema (the model
    is told each argument's schema, as ``dspy.Tool`` builds it)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            f"{prefix}: the signature of {name} cannot be read ({exc}); wrap it in a def "
            "with typed parameters"
        ) from exc
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:  # NameError and friends: reported, with the cause chained
        raise ConfigurationError(
            f"{prefix}: the type annotations of {name} cannot be resolved "
            f"({type(exc).__name__}: {exc}); define the types they name at module level"
        ) from exc
    for parameter in signature.parameters.values():
        where = f"{prefix}: parameter {parameter.name!r} of {name}"
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.VAR_POSITIONAL):
            raise ConfigurationError(
                f"{where} cannot be passed by name, and the model passes every argument by "
                "name; make it an ordinary parameter"
            )
        if parameter.kind is parameter.VAR_KEYWORD:
            continue
        if parameter.name not in hints:
            raise ConfigurationError(
                f"{where} has no type annotation; the model is told each argument's type: "
                f"annotate it (e.g. {parameter.name}: str)"
            )
        try:
            schema = TypeAdapter(hints[parameter.name]).json_schema()
        except Exception as exc:  # pydantic's errors for types without a schema
            raise ConfigurationError(
                f"{where}: its type {hints[parameter.name]!r} has no JSON schema "
                f"({type(exc).__name__}); use str, int, float, bool, lists, dicts or "
                "Pydantic models"
            ) from exc
        if _recursive(schema):
            raise ConfigurationError(
                f"{where}: its type {hints[parameter.name]!r} refers to itself, and DSPy's "
                "tool schemas cannot describe a recursive type (every run would fail); give "
                "the tool a model without the cycle"
            )


def _recursive(schema: dict[str, Any]) -> bool:
    """Whether a JSON schema's ``$defs`` refer to themselves, directly or not."""
    defs = schema.get("$defs", {})

    def refs(node: Any) -> set[str]:
        if isinstance(node, dict):
            found = (
                {node["$ref"].rsplit("/", 1)[-1]} if isinstance(node.get("$ref"), str) else set()
            )
            return found.union(*(refs(v) for v in node.values()))
        if isinstance(node, list):
            return set().union(*(refs(v) for v in node))
        return set()

    graph = {name: refs(body) for name, body in defs.items()}
    done: set[str] = set()

    def cyclic(name: str, path: frozenset[str]) -> bool:
        if name in path:
            return True
        if name in done:
            return False
        done.add(name)
        return any(cyclic(n, path | {name}) for n in graph.get(name, ()))

    return any(cyclic(name, frozenset()) for name in graph)


def _where(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', None) or '?'}.{getattr(fn, '__qualname__', fn.__name__)}"


def tool_description(fn: Callable[..., Any]) -> str:
    """The first line of the tool's docstring."""
    return (inspect.getdoc(fn) or "").strip().split("\n", 1)[0].strip()


def check_tool_engines(agent: Agent) -> None:
    """Raise :class:`ConfigurationError` if the agent has tools but none of its engines
    calls tools (e.g. only plain-function engines). No engine given means the default
    ``DSPyEngine``, which does."""
    if not agent.tools or not agent.engines:
        return
    if any(getattr(engine, "uses_tools", False) for engine in agent.engines):
        return
    tools = ", ".join(f.__name__ for f in agent.tools)
    engines = ", ".join(repr(e) for e in agent.engines)
    raise ConfigurationError(
        f"agent {agent.name!r} has tools ({tools}) but its engines ({engines}) never call "
        "them; drop .with_engines(...) to use the default DSPyEngine, add a DSPyEngine(...) "
        "to .with_engines(...), or remove .with_tools(...) (a custom Engine that calls "
        "ctx.agent.tools says so with the class attribute uses_tools = True)"
    )


# -- calls ---------------------------------------------------------------------------------


async def call_tool(fn: Callable[..., Any], arguments: Mapping[str, Any]) -> Any:
    """``fn(**arguments)`` without blocking the event loop: an ``async def`` tool is awaited,
    a plain function runs in a worker thread (with the context copied, so its own spans
    nest under the tool's span)."""
    if inspect.iscoroutinefunction(fn):
        return await fn(**arguments)
    result = await run_sync(fn, **arguments)
    if inspect.isawaitable(result):  # a plain function that returned an awaitable
        result = await result
    return result


class ToolRun:
    """The tool calls of one engine evaluation (one per run, never shared between runs).

    Each call is a span ``Tool.<name>``, a child of the engine's span, with the GenAI
    semantic-convention attributes (``gen_ai.operation.name = "execute_tool"``,
    ``gen_ai.tool.name``, ``gen_ai.tool.description``, ``gen_ai.tool.call.arguments``,
    ``gen_ai.tool.call.result``, ``gen_ai.agent.name``). A call that raises is an ERROR
    span with the exception event, is logged, and raises on to the engine (which usually
    shows the error to the model). :meth:`record` puts ``flock.tool.calls``,
    ``flock.tool.errors`` and ``flock.tool.stop_reason`` on the engine's span.
    """

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.calls = 0
        self.errors = 0
        self.stop_reason: str | None = None
        """Why the engine's tool loop ended, when the engine says (``DSPyEngine``:
        ``finish``, ``max_tool_calls``, ``invalid_step`` or ``context_window``)."""
        self.engine_span = trace.get_current_span()
        """The engine's span: current when the engine creates this object."""

    @property
    def tracing(self) -> bool:
        return self.ctx.instrument is not None and self.ctx.instrument.enabled

    async def call(
        self,
        fn: Callable[..., Any],
        arguments: Mapping[str, Any],
        invoke: Callable[[], Awaitable[Any]] | None = None,
    ) -> Any:
        """Call the tool ``fn`` with the model's ``arguments`` in its span; ``invoke``
        replaces the call itself (e.g. an engine's own argument checks, then the call), so
        that what fails in it is the tool call's failure too."""
        name = fn.__name__
        self.calls += 1
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.type": "function",
            "gen_ai.tool.description": tool_description(fn),
            "gen_ai.agent.name": self.ctx.agent.name,
        }
        if self.tracing:
            attributes["gen_ai.tool.call.arguments"] = _text(dict(arguments))
        with self.ctx.span(f"Tool.{name}", attributes) as span:
            try:
                result = await (invoke() if invoke is not None else call_tool(fn, arguments))
            except Exception as error:  # recorded on the span (ERROR) as it leaves the block
                self.errors += 1
                log.warning(
                    "agent %r: tool %s raised %s: %s",
                    self.ctx.agent.name,
                    name,
                    type(error).__name__,
                    error,
                )
                raise
            except asyncio.CancelledError:  # the run timed out or was stopped
                self.errors += 1
                span.set_attribute("flock.tool.cancelled", True)
                span.set_status(
                    trace.Status(
                        trace.StatusCode.ERROR,
                        "cancelled: its run timed out or was stopped (a plain-function tool "
                        "goes on in its thread until it returns)",
                    )
                )
                raise
            if span.is_recording():
                span.set_attribute("gen_ai.tool.call.result", _text(result))
        return result

    def record(self) -> None:
        """The counts (and the stop reason, if known) on the engine's span."""
        if not self.engine_span.is_recording():
            return
        attributes: dict[str, str | int] = {
            "flock.tool.calls": self.calls,
            "flock.tool.errors": self.errors,
        }
        if self.stop_reason is not None:
            attributes["flock.tool.stop_reason"] = self.stop_reason
        self.engine_span.set_attributes(attributes)


def _text(value: Any) -> str:
    """A tool's arguments or result as span text: strings as they are, the rest as JSON
    (Pydantic models inside too), else its ``repr``: what cannot be shown never fails the
    tool call."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=_jsonable)
    except Exception:  # e.g. a circular structure, a field without a JSON form
        try:
            return repr(value)
        except Exception as exc:
            return f"<{type(value).__name__}: repr failed: {type(exc).__name__}>"


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return str(value)
