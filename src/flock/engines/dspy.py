"""The LLM engine: DSPy with a signature built from the agent's Pydantic types.

For a run of agent ``chef`` that consumes ``PizzaIdea`` and publishes ``Pizza``, the engine
asks DSPy for ``pizza_idea: PizzaIdea, context: list[dict] -> pizza: Pizza`` with the agent's
description as instructions, awaits ``dspy.Predict(...).acall`` (never blocking the event
loop) and validates the answer into a ``Pizza``. Earlier artifacts with the same correlation
id are passed as conversation context. Field names never collide: an agent that consumes and
publishes ``Draft`` is asked ``draft: Draft -> draft_output: Draft``, and a type whose name the
engine or DSPy uses itself (``Context``, ``Signature``, ...) gets a suffixed field
(``context_input``).

An agent with tools (``.with_tools(fn, ...)``, see :mod:`flock.tools`) is run as
``dspy.ReAct`` instead, awaited with ``acall`` too: the model calls the tools (at most
``max_tool_calls`` of them), sees their results, then the outputs are extracted. Each call is
a ``Tool.<name>`` span under ``DSPyEngine.evaluate``.

Credentials follow the usual variables: ``OPENAI_API_KEY`` (or the provider's own, e.g.
``ANTHROPIC_API_KEY``), and ``OPENAI_BASE_URL`` for local OpenAI-compatible servers (vLLM,
Ollama, LM Studio); or pass ``api_base=`` / ``api_key=``. DSPy is imported on first use.

Example:
    >>> engine = DSPyEngine("openai/gpt-4o-mini", temperature=0.2)
    >>> engine.model
    'openai/gpt-4o-mini'
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ValidationError

from flock._errors import describe, safe_repr
from flock.artifacts import Artifact
from flock.components import RunContext
from flock.engines.base import Engine, EngineOutput
from flock.exceptions import ConfigurationError, MissingAPIKeyError

if TYPE_CHECKING:
    from flock.tools import ToolRun

__all__ = ["DSPyEngine"]

log = logging.getLogger("flock")

_TOOL_RUN: ContextVar[ToolRun] = ContextVar("flock_tool_run")
"""The tool calls of the current run: a tool agent's ``dspy.ReAct`` program is built once per
engine and shared by its runs (building it takes milliseconds of the event loop), so each run
passes its own :class:`~flock.tools.ToolRun` to it this way (each asyncio task has its own)."""

# Providers whose models need an API key, and the variable litellm reads it from.
API_KEY_VARIABLES = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "groq": "GROQ_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY",
    "azure": "AZURE_API_KEY",
    "cohere": "COHERE_API_KEY",
    "xai": "XAI_API_KEY",
}
LOCAL_KEY = "local"  # OpenAI-compatible local servers accept any key but the client needs one

CONTEXT_FIELD = "context"  # the engine's own input field: the conversation context
# Field names an artifact type must not take: the engine's own field, the keywords
# ``dspy.Predict`` takes for itself, and the chat adapter's end marker. (Attributes of
# ``dspy.Signature`` such as ``instructions`` or ``schema`` are refused too, see _field_names.)
RESERVED_FIELDS = frozenset(
    {
        CONTEXT_FIELD,
        "completed",
        "signature",
        "new_signature",
        "demos",
        "config",
        "lm",
        "prediction",
    }
)
# With tools, dspy.ReAct adds fields of its own: ``trajectory`` (an input of both of its
# steps), ``next_thought``/``next_tool_name``/``next_tool_args`` (its steps' outputs) and
# ``reasoning`` (its extract step's); and it takes a ``max_iters`` keyword for itself.
TOOL_RESERVED_FIELDS = RESERVED_FIELDS | {
    "trajectory",
    "next_thought",
    "next_tool_name",
    "next_tool_args",
    "reasoning",
    "max_iters",
}


def _snake(name: str) -> str:
    """``PizzaIdea`` → ``pizza_idea`` (the signature's field name for a type)."""
    name = re.sub(r"(?<=[a-z0-9])([A-Z])|(?<=[A-Z])([A-Z][a-z])", r"_\1\2", name)
    return re.sub(r"\W+", "_", name).strip("_").lower() or "value"


def _field_names(
    inputs: Iterable[type[BaseModel]],
    outputs: Iterable[type[BaseModel]],
    reserved: frozenset[str] = RESERVED_FIELDS,
) -> tuple[dict[type[BaseModel], str], dict[type[BaseModel], str]]:
    """The signature's field name for each input type and for each output type.

    A field is named after its type (``PizzaIdea`` → ``pizza_idea``) unless that name is
    reserved (in ``reserved``: :data:`RESERVED_FIELDS`, or :data:`TOOL_RESERVED_FIELDS` for an
    agent with tools; or an attribute of ``dspy.Signature``) or taken:
    then an input gets ``_input`` and an output ``_output`` appended (``consumes(Draft)
    .publishes(Draft)`` → ``draft -> draft_output``), and a number if that is taken too.
    Inputs are named first, so a type keeps its plain name as an input.
    """
    dspy = _import_dspy()
    taken: set[str] = set()

    def free(name: str) -> bool:
        return not (name in reserved or hasattr(dspy.Signature, name)) and name not in taken

    def allocate(model: type[BaseModel], suffix: str) -> str:
        name = _snake(model.__name__)
        if not free(name):
            name = f"{name}_{suffix}"
        candidate, n = name, 2
        while not free(candidate):
            candidate, n = f"{name}_{n}", n + 1
        taken.add(candidate)
        return candidate

    input_names = {model: allocate(model, "input") for model in inputs}
    output_names = {model: allocate(model, "output") for model in outputs}
    return input_names, output_names


def _input_types(inputs: Iterable[Artifact]) -> dict[type[BaseModel], int]:
    """How many inputs of each payload type, in the order the types first appear."""
    counts: dict[type[BaseModel], int] = {}
    for artifact in inputs:
        counts[type(artifact.payload)] = counts.get(type(artifact.payload), 0) + 1
    return counts


def _import_dspy() -> Any:
    # Offline, litellm would retry downloading its price list (with sleeps) on first use.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import dspy

    return dspy


class DSPyEngine(Engine):
    """Evaluates an agent with an LLM through DSPy.

    Args:
        model: a litellm model name (``"openai/gpt-4o"``); default: the agent's
            ``.model(...)``, else the ``Flock(model)``.
        api_base: an OpenAI-compatible endpoint (default ``OPENAI_BASE_URL`` for ``openai/``).
        api_key: the key (default: the provider's variable, e.g. ``OPENAI_API_KEY``).
        temperature, max_tokens: sampling settings passed to the model.
        lm: a ready ``dspy.LM`` (or ``dspy.utils.DummyLM``) to use instead of building one.
        context_limit: at most this many earlier artifacts of the same correlation id are
            given as conversation context (``0`` turns context off).
        instructions: the signature's instructions (default: the agent's description).
        cache: let DSPy cache identical requests (off by default: agents expect fresh answers).
        max_tool_calls: for an agent with tools: at most this many ReAct steps (DSPy's
            ``max_iters``), each a model call that picks a tool or ``finish``, so at most this
            many tool calls per run; the outputs are extracted after the last one.
    """

    uses_tools: ClassVar[bool] = True
    """It calls the agent's tools (``.with_tools(...)``), see :mod:`flock.tools`."""

    def __init__(
        self,
        model: str | None = None,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        lm: Any | None = None,
        context_limit: int = 20,
        instructions: str | None = None,
        cache: bool = False,
        max_tool_calls: int = 10,
    ) -> None:
        if context_limit < 0:
            raise ConfigurationError(f"context_limit must be ≥ 0, got {context_limit!r}")
        if not isinstance(max_tool_calls, int) or isinstance(max_tool_calls, bool):
            raise ConfigurationError(f"max_tool_calls must be an int, got {max_tool_calls!r}")
        if max_tool_calls < 1:
            raise ConfigurationError(
                f"max_tool_calls must be ≥ 1, got {max_tool_calls!r}; to run without tools, "
                "declare the agent without .with_tools(...)"
            )
        self.model = model
        self.api_base = api_base
        self.api_key = api_key
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.lm = lm
        self.context_limit = context_limit
        self.instructions = instructions
        self.cache = cache
        self.max_tool_calls = max_tool_calls
        self._lms: dict[str, Any] = {}
        self._signatures: dict[tuple[Any, ...], Any] = {}
        self._programs: dict[tuple[Any, ...], Any] = {}

    def __repr__(self) -> str:
        return f"DSPyEngine(model={self.model!r})"

    # -- set-up ----------------------------------------------------------------------------

    async def on_initialize(self, ctx: RunContext) -> None:
        """Resolve the language model (fails fast, before any tokens are spent).

        The first use imports DSPy (about a second) in a worker thread, off the event loop.
        """
        if "dspy" not in sys.modules:
            await asyncio.to_thread(_import_dspy)
        ctx.state["dspy.lm"] = self.language_model(ctx.model)

    def language_model(self, default_model: str | None = None) -> Any:
        """The ``dspy.LM`` for ``self.model`` (else ``default_model``), built once."""
        if self.lm is not None:
            return self.lm
        model = self.model or default_model
        if not model:
            raise ConfigurationError(
                "DSPyEngine has no model: pass one to Flock('openai/gpt-4o') (or set "
                "FLOCK_MODEL), to flock.agent(...).model('openai/gpt-4o'), or to "
                "DSPyEngine(model=...); or give "
                "the agent another engine with .with_engines(...)"
            )
        lm = self._lms.get(model)
        if lm is None:
            api_base, api_key = self._credentials(model)
            dspy = _import_dspy()
            kwargs: dict[str, Any] = {"cache": self.cache}
            if self.temperature is not None:
                kwargs["temperature"] = self.temperature
            if self.max_tokens is not None:
                kwargs["max_tokens"] = self.max_tokens
            lm = dspy.LM(model, api_base=api_base, api_key=api_key, **kwargs)
            self._lms[model] = lm
        return lm

    def _credentials(self, model: str) -> tuple[str | None, str | None]:
        provider = model.split("/", 1)[0] if "/" in model else "openai"
        api_base = self.api_base
        if api_base is None and provider == "openai":
            api_base = os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE")
        variable = API_KEY_VARIABLES.get(provider)
        api_key = self.api_key or (os.environ.get(variable) if variable else None) or None
        if api_key is None and variable is not None:  # unset or empty
            if api_base:
                return api_base, LOCAL_KEY  # a local OpenAI-compatible server
            local = (
                " (or OPENAI_BASE_URL for a local OpenAI-compatible server such as vLLM, "
                "Ollama or LM Studio)"
                if provider == "openai"
                else ""
            )
            raise MissingAPIKeyError(
                f"model {model!r} needs an API key: set {variable}{local}, pass "
                "DSPyEngine(api_key=..., api_base=...), or give the agent a plain-Python "
                "engine with .with_engines(my_function)"
            )
        return api_base, api_key

    # -- evaluation ------------------------------------------------------------------------

    async def evaluate(self, ctx: RunContext, inputs: list[Artifact]) -> EngineOutput:
        try:
            return await self._evaluate(ctx, inputs)
        except asyncio.CancelledError:  # the run timed out or was stopped
            _record_cancelled()
            raise

    async def _evaluate(self, ctx: RunContext, inputs: list[Artifact]) -> EngineOutput:
        lm = ctx.state.get("dspy.lm") or self.language_model(ctx.model)
        outputs = ctx.agent.outputs
        if not outputs:
            raise ConfigurationError(
                f"agent {ctx.agent.name!r} uses DSPyEngine but publishes nothing; "
                "declare its outputs with .publishes(SomeType)"
            )
        with ctx.span(
            "DSPyEngine.fetch_conversation_context", {"flock.context.limit": self.context_limit}
        ) as span:
            context = await self.fetch_conversation_context(ctx, inputs)
            span.set_attribute("flock.context.count", len(context))
        with ctx.span("DSPyEngine.should_use_context") as span:
            use_context = self.should_use_context(ctx, context)
            span.set_attribute("flock.context.used", use_context)

        counts = _input_types(inputs)
        tools = ctx.agent.tools
        input_names, output_names = _field_names(
            counts, outputs, TOOL_RESERVED_FIELDS if tools else RESERVED_FIELDS
        )
        # Several inputs of a type are a list; a batch agent's always are (a batch of one
        # too), so its prompt keeps one shape.
        batch = ctx.agent.fanin is not None and ctx.agent.fanin.batch > 0
        lists = {model: batch or n > 1 for model, n in counts.items()}
        kwargs = self._input_values(inputs, input_names, lists)
        if use_context:
            kwargs[CONTEXT_FIELD] = context
        signature = self._signature(
            ctx, lists, outputs, input_names, output_names, with_context=use_context
        )
        dspy = _import_dspy()
        self._record_model(lm)  # before the call: a failed call's span names its model too
        # The run's own usage tracker (DSPy's modules then use it instead of theirs), read
        # whether the run succeeds, fails or is cancelled: the tokens of every model call.
        with dspy.track_usage() as usage:
            try:
                if tools:
                    prediction = await self._call_with_tools(ctx, lm, signature, kwargs)
                else:
                    with dspy.context(lm=lm, track_usage=True):
                        prediction = await dspy.Predict(signature).acall(**kwargs)
            finally:
                self._record_usage(usage.usage_data)
        # prediction[name], not getattr: an output named like a Prediction method
        # (``items``, ``values``) would give the method.
        return [self._to_model(prediction[output_names[t]], t, ctx) for t in outputs]

    async def _call_with_tools(
        self, ctx: RunContext, lm: Any, signature: Any, kwargs: dict[str, Any]
    ) -> Any:
        """``dspy.ReAct`` over the agent's tools, each call in a ``Tool.<name>`` span; the
        counts and why the tool loop stopped go on the ``DSPyEngine.evaluate`` span."""
        from flock.tools import ToolRun

        dspy = _import_dspy()
        key = (signature, tuple(ctx.agent.tools), self.max_tool_calls)
        program = self._programs.get(key)
        if program is None:
            flock_tool, flock_react = _react_classes()
            tools = [flock_tool.of(fn) for fn in ctx.agent.tools]
            program = flock_react(signature, tools=tools, max_iters=self.max_tool_calls)
            self._programs[key] = program
        run = ToolRun(ctx)
        token = _TOOL_RUN.set(run)
        try:
            with dspy.context(lm=lm, track_usage=True):
                prediction = await program.acall(**kwargs)
            if run.stop_reason is None:
                run.stop_reason = _stop_reason(prediction)
        finally:
            _TOOL_RUN.reset(token)
            run.record()
        return prediction

    async def fetch_conversation_context(
        self, ctx: RunContext, inputs: Sequence[Artifact]
    ) -> list[dict[str, Any]]:
        """Earlier artifacts of this correlation id (oldest first), without the inputs and
        without those the agent may not see (:mod:`flock.visibility`).

        Each payload is given in its JSON form; one that has none (e.g. ``bytes`` that are not
        UTF-8 text) is given as its values with such bytes replaced by a note of their length,
        and the error is an exception event on the current span: context never fails a run.
        """
        from flock.visibility import visible_artifacts

        kept = await visible_artifacts(
            ctx.store,
            ctx.agent,
            correlation_id=ctx.correlation_id,
            limit=self.context_limit,
            exclude={a.id for a in inputs},
        )
        return [
            {
                "type": a.type,
                "produced_by": a.produced_by,
                "payload": _context_payload(a),
            }
            for a in kept
        ]

    def should_use_context(self, ctx: RunContext, context: Sequence[dict[str, Any]]) -> bool:
        """Whether to give the model the context (override for your own policy)."""
        return bool(context)

    def _input_values(
        self,
        inputs: Sequence[Artifact],
        names: Mapping[type[BaseModel], str] | None = None,
        lists: Mapping[type[BaseModel], bool] | None = None,
    ) -> dict[str, Any]:
        """The keyword arguments for the signature's input fields (see :func:`_field_names`):
        one payload, or a list of them where ``lists`` says (default: several of a type)."""
        if names is None:
            names = _field_names(_input_types(inputs), ())[0]
        values: dict[str, list[BaseModel]] = {}
        listed: set[str] = set()
        for artifact in inputs:
            model = type(artifact.payload)
            values.setdefault(names[model], []).append(artifact.payload)
            if lists is not None and lists.get(model):
                listed.add(names[model])
        return {
            name: items if len(items) > 1 or name in listed else items[0]
            for name, items in values.items()
        }

    def _signature(
        self,
        ctx: RunContext,
        lists: Mapping[type[BaseModel], bool],
        outputs: Sequence[type[BaseModel]],
        input_names: Mapping[type[BaseModel], str],
        output_names: Mapping[type[BaseModel], str],
        *,
        with_context: bool,
    ) -> Any:
        instructions = (
            self.instructions
            or ctx.agent.description
            or (
                f"You are the agent {ctx.agent.name!r}. Produce "
                + ", ".join(t.__name__ for t in outputs)
                + " from the inputs."
            )
        )
        key = (
            tuple(lists.items()),
            tuple(outputs),
            with_context,
            instructions,
            tuple(input_names.items()),  # an agent with tools reserves more names
            tuple(output_names.items()),
        )
        signature = self._signatures.get(key)
        if signature is None:
            signature = self._build_signature(
                lists, outputs, input_names, output_names, with_context, instructions
            )
            self._signatures[key] = signature
        return signature

    @staticmethod
    def _build_signature(
        lists: Mapping[type[BaseModel], bool],
        outputs: Sequence[type[BaseModel]],
        input_names: Mapping[type[BaseModel], str],
        output_names: Mapping[type[BaseModel], str],
        with_context: bool,
        instructions: str,
    ) -> Any:
        dspy = _import_dspy()
        fields: dict[str, tuple[Any, Any]] = {}
        for model, listed in lists.items():
            doc = (model.__doc__ or "").strip() or None
            annotation: Any = list[model] if listed else model  # type: ignore[valid-type]
            fields[input_names[model]] = (annotation, dspy.InputField(desc=doc))
        if with_context:
            fields[CONTEXT_FIELD] = (
                list[dict[str, Any]],
                dspy.InputField(desc="earlier artifacts of this conversation, oldest first"),
            )
        for model in outputs:
            doc = (model.__doc__ or "").strip() or None
            fields[output_names[model]] = (model, dspy.OutputField(desc=doc))
        return dspy.make_signature(fields, instructions)

    @staticmethod
    def _to_model(value: Any, model: type[BaseModel], ctx: RunContext) -> BaseModel:
        if isinstance(value, model):
            return value
        try:
            if isinstance(value, str):
                return model.model_validate_json(value)
            return model.model_validate(value)
        except ValidationError as exc:
            raise ValueError(
                f"agent {ctx.agent.name!r}: the model's answer is not a valid "
                f"{model.__name__}: {exc}"
            ) from exc

    @staticmethod
    def _record_model(lm: Any) -> None:
        """GenAI semantic-convention attributes of the call on the ``DSPyEngine.evaluate``
        span: operation, model and provider."""
        from opentelemetry import trace

        span = trace.get_current_span()
        if not span.is_recording():
            return
        model = str(getattr(lm, "model", "") or "")
        attributes: dict[str, Any] = {"gen_ai.operation.name": "chat"}
        if model:
            provider, _, name = model.partition("/")
            attributes["gen_ai.request.model"] = name or provider
            attributes["gen_ai.provider.name"] = provider if name else "openai"
        span.set_attributes(attributes)

    @staticmethod
    def _record_usage(usage: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """The token usage of the run's model calls (``usage``: DSPy's entries by model, one
        per call) on the ``DSPyEngine.evaluate`` span, a failed run's too. Only what the
        replies gave: ``gen_ai.usage.input_tokens`` if some call reported its prompt tokens,
        ``output_tokens`` if some call reported its completion tokens (never a false 0)."""
        from opentelemetry import trace

        span = trace.get_current_span()
        if not span.is_recording():
            return
        entries = [entry for calls in usage.values() for entry in calls]
        attributes: dict[str, int] = {}
        for attribute, key in (
            ("gen_ai.usage.input_tokens", "prompt_tokens"),
            ("gen_ai.usage.output_tokens", "completion_tokens"),
        ):
            counts = [_token_count(entry.get(key)) for entry in entries]
            given = [n for n in counts if n is not None]
            if given:
                attributes[attribute] = sum(given)
        if attributes:
            span.set_attributes(attributes)


def _context_payload(artifact: Artifact) -> Any:
    """An artifact's payload for the conversation context: its JSON form, else (the error is
    logged and recorded on the current span) its values with what has no JSON form shown as
    a short text, else a note."""
    payload = artifact.payload
    try:
        return payload.model_dump(mode="json")
    except Exception as error:  # e.g. bytes that are not UTF-8 text
        from opentelemetry import trace

        log.debug(
            "artifact %s (%s) has no JSON form, its context entry shows it another way: %s: %s",
            artifact.id,
            artifact.type,
            type(error).__name__,
            error,
        )
        span = trace.get_current_span()
        if span.is_recording():
            span.record_exception(
                error,
                {"flock.context.artifact_id": str(artifact.id), "flock.context.fallback": True},
            )
    try:
        from pydantic_core import to_jsonable_python

        return to_jsonable_python(_without_binary(payload.model_dump()), fallback=safe_repr)
    except Exception as error:  # a serializer of the model's own that fails in Python too
        log.debug("artifact %s has no Python form either: %r", artifact.id, error)
        return f"<a {type(payload).__name__} that cannot be shown: {type(error).__name__}>"


def _without_binary(value: Any) -> Any:
    """``value`` with the bytes that are not UTF-8 text replaced by a note of their length."""
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return f"<{len(data)} bytes of binary data>"
    if isinstance(value, Mapping):
        return {
            _without_binary(k) if isinstance(k, bytes) else k: _without_binary(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_without_binary(v) for v in value]
    return value


def _token_count(value: Any) -> int | None:
    """A usage entry's token count, or None if the reply gave none (or not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _record_cancelled() -> None:
    """Mark the current (``DSPyEngine.evaluate``) span as cancelled, as the tool spans are: an
    ERROR status saying so (a ``CancelledError`` is no exception event)."""
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.is_recording():
        span.set_status(
            trace.Status(trace.StatusCode.ERROR, "cancelled: its run timed out or was stopped")
        )


@functools.cache
def _react_classes() -> tuple[Any, Any]:
    """The ``dspy.Tool`` and ``dspy.ReAct`` subclasses for agents with tools (defined on
    first use: DSPy is imported lazily)."""
    dspy = _import_dspy()
    from dspy.utils.exceptions import AdapterParseError, ContextWindowExceededError

    from flock.tools import call_tool

    tool_base: Any = dspy.Tool
    react_base: Any = dspy.ReAct

    class FlockTool(tool_base):  # type: ignore[misc]
        """A ``dspy.Tool`` whose every call is a ``Tool.<name>`` span of the current run,
        DSPy's checks of the model's arguments included (a bad argument is a failed call
        too), and whose plain functions run in a worker thread (``dspy.Tool.acall`` would
        call them on the loop)."""

        _flock_function: Callable[..., Any] | None = None

        @classmethod
        def of(cls, fn: Callable[..., Any]) -> Any:
            if inspect.iscoroutinefunction(fn):
                func = fn
            else:

                @functools.wraps(fn)  # DSPy reads the name, docstring and signature from it
                async def func(**arguments: Any) -> Any:
                    return await call_tool(fn, arguments)

            tool = cls(func, desc=inspect.getdoc(fn))
            tool._flock_function = fn
            return tool

        async def acall(self, **kwargs: Any) -> Any:
            assert self._flock_function is not None
            run = _TOOL_RUN.get()
            try:
                return await run.call(
                    self._flock_function, kwargs, lambda: dspy.Tool.acall(self, **kwargs)
                )
            except Exception as error:  # logged and on the tool's span (ToolRun.call)
                # The model gets the error as the tool's result, without the traceback that
                # DSPy would add (frames of flock's and DSPy's code, install paths).
                return f"Execution error in {self.name}: {describe(error)}"

    class FlockReAct(react_base):  # type: ignore[misc]
        """``dspy.ReAct`` that survives a step it cannot parse (e.g. a tool name the model
        made up, after DSPy's JSON retry): DSPy 3 raises ``AdapterParseError`` there, which
        its loop does not catch, so the run would fail. Here it ends the tool loop as DSPy
        does for a ``ValueError`` ("failed to select a valid tool"): the outputs are
        extracted from what the tools gave so far. It is logged and recorded on the
        ``DSPyEngine.evaluate`` span (an exception event, ``flock.tool.stop_reason =
        "invalid_step"``)."""

        async def _async_call_with_potential_trajectory_truncation(
            self, module: Any, trajectory: dict[str, Any], **input_args: Any
        ) -> Any:
            try:
                return await super()._async_call_with_potential_trajectory_truncation(
                    module, trajectory, **input_args
                )
            except AdapterParseError as error:
                if module is not self.react:
                    raise  # the extract step: the run fails, as without tools
                run = _TOOL_RUN.get()
                run.stop_reason = "invalid_step"
                log.warning(
                    "agent %r: the model's next tool step could not be parsed (an unknown "
                    "tool or malformed arguments); the tool loop ends after %d tool calls "
                    "and the outputs are extracted: %s",
                    run.ctx.agent.name,
                    run.calls,
                    error,
                )
                if run.engine_span.is_recording():
                    run.engine_span.record_exception(error, {"flock.tool.invalid_step": True})
                raise ValueError(f"invalid tool step: {error}") from error
            except ContextWindowExceededError:
                if module is self.react:
                    _TOOL_RUN.get().stop_reason = "context_window"  # DSPy ends the loop
                raise

    return FlockTool, FlockReAct


def _stop_reason(prediction: Any) -> str:
    """Why a ReAct tool loop that DSPy did not cut short ended: the model said ``finish``,
    or it used up ``max_tool_calls``."""
    trajectory = prediction.get("trajectory") or {}
    names = [v for k, v in trajectory.items() if k.startswith("tool_name_")]
    return "finish" if names and names[-1] == "finish" else "max_tool_calls"
