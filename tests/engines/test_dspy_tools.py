"""Agents with tools: ``.with_tools(fn, ...)`` run as ``dspy.ReAct`` by DSPyEngine, each tool
call a ``Tool.<name>`` span. Offline: a scripted local OpenAI-compatible server plays the model."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.trace import StatusCode, Tracer
from pydantic import BaseModel

from flock import AgentRunError, ConfigurationError, Flock, flock_type
from flock.agent import AgentBuilder
from flock.artifacts import Artifact
from flock.components import RunContext
from flock.engines.base import Engine, EngineOutput
from flock.engines.dspy import DSPyEngine, _field_names
from flock.fake_llm import FakeOpenAIServer, dspy_reply
from flock.testing import SpanCapture
from tests.models import Idea, Pizza

PIZZA = {"name": "sunny pizza", "toppings": ["basil", "chili"]}


@flock_type
class Trajectory(BaseModel):
    """A route (its type name is a field dspy.ReAct uses itself)."""

    stops: list[str]


@flock_type
class Reasoning(BaseModel):
    """An argument (its type name is the field dspy.ReAct's extract step adds)."""

    text: str


# -- the scripted model -------------------------------------------------------------------


def step(tool: str, **arguments: Any) -> dict[str, Any]:
    """A ReAct step's answer: call ``tool`` with ``arguments``."""
    return {"next_thought": f"I use {tool}.", "next_tool_name": tool, "next_tool_args": arguments}


FINISH = step("finish")


def is_step(request: dict[str, Any]) -> bool:
    """A request for a ReAct step (not for the extract step that gives the outputs)."""
    return "`next_tool_name`" in request["messages"][0]["content"]


def user_text(request: dict[str, Any]) -> str:
    return str(request["messages"][-1]["content"])


def react_model(
    *steps: dict[str, Any] | str, outputs: dict[str, Any] | None = None
) -> Callable[[dict[str, Any]], str]:
    """Answers ReAct's step requests with ``steps`` in order (a dict is a step's fields, a
    string is sent as it is) and the extract request with ``outputs`` (a pizza by default).
    A step request beyond the script fails the request (and so the test)."""
    pending = list(steps)

    def respond(request: dict[str, Any]) -> str:
        if is_step(request):
            answer = pending.pop(0)
            return answer if isinstance(answer, str) else dspy_reply(**answer)
        return dspy_reply(reasoning="The tools said so.", **(outputs or {"pizza": PIZZA}))

    return respond


# -- tools ----------------------------------------------------------------------------------


class Kitchen:
    """Tools as bound methods, recording their calls and the thread they ran in."""

    def __init__(self, tracer: Tracer | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.threads: dict[str, int] = {}
        self.tracer = tracer

    def get_weather(self, city: str) -> str:
        """The current weather in a city.

        Used to pick seasonal toppings.
        """
        self.calls.append(("get_weather", {"city": city}))
        self.threads["get_weather"] = threading.get_ident()
        if self.tracer is not None:  # a span of the tool's own: nests under the tool's span
            with self.tracer.start_as_current_span("Kitchen.lookup"):
                pass
        return f"sunny in {city}"

    async def count_toppings(self, names: list[str]) -> int:
        """How many toppings a list names."""
        self.calls.append(("count_toppings", {"names": names}))
        self.threads["count_toppings"] = threading.get_ident()
        return len(names)

    def bake(self, minutes: int) -> str:
        """Bake the pizza for some minutes."""
        self.calls.append(("bake", {"minutes": minutes}))
        raise RuntimeError("the oven is broken")


def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"sunny in {city}"


@pytest.fixture
def kitchen() -> Kitchen:
    return Kitchen()


def chef(flock: Flock, server: FakeOpenAIServer, *tools: Any, **engine: Any) -> AgentBuilder:
    return (
        flock.agent("chef")
        .consumes(Idea)
        .publishes(Pizza)
        .with_tools(*tools)
        .with_engines(DSPyEngine(api_base=server.base_url, **engine))
    )


@pytest.fixture
def scripted() -> Iterator[Callable[..., FakeOpenAIServer]]:
    """``scripted(*steps, outputs=...)``: a started fake server playing ``react_model``."""
    servers: list[FakeOpenAIServer] = []

    def start(*steps: dict[str, Any] | str, outputs: dict[str, Any] | None = None) -> Any:
        server = FakeOpenAIServer(react_model(*steps, outputs=outputs)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# -- calling tools ----------------------------------------------------------------------------


async def test_sync_and_async_tools_get_the_models_arguments_and_the_model_their_results(
    kitchen: Kitchen, scripted: Callable[..., FakeOpenAIServer]
) -> None:
    server = scripted(
        step("get_weather", city="Paris"), step("count_toppings", names=["basil", "chili"]), FINISH
    )
    flock = Flock("openai/m")  # tracing off: tools work without spans too
    chef(flock, server, kitchen.get_weather, kitchen.count_toppings)

    (pizza,) = await flock.invoke("chef", Idea(topic="summer"))

    assert pizza.payload == Pizza(**PIZZA)
    assert kitchen.calls == [
        ("get_weather", {"city": "Paris"}),
        ("count_toppings", {"names": ["basil", "chili"]}),
    ]
    loop_thread = threading.get_ident()
    assert kitchen.threads["get_weather"] != loop_thread  # a plain function: a worker thread
    assert kitchen.threads["count_toppings"] == loop_thread  # async: awaited on the loop
    steps = [r for r in server.requests if is_step(r)]
    assert len(steps) == 3 and len(server.requests) == 4  # three steps, then the extract step
    assert "observation_0" not in user_text(steps[0])
    assert "[[ ## observation_0 ## ]]\nsunny in Paris" in user_text(steps[1])
    assert "[[ ## observation_1 ## ]]\n2" in user_text(steps[2])
    extract = user_text(server.requests[-1])
    assert "sunny in Paris" in extract and "[[ ## tool_name_2 ## ]]\nfinish" in extract
    system = steps[0]["messages"][0]["content"]  # the tools, described to the model
    assert (
        "(1) get_weather, whose description is <desc>The current weather in a city.    "
        "Used to pick seasonal toppings.</desc>. It takes arguments {'city': {'type': 'string'}}."
    ) in system
    assert "(2) count_toppings, whose description is <desc>How many toppings" in system
    assert '"topic": "summer"' in user_text(steps[0])


async def test_each_tool_call_is_a_span_under_the_engine_span(
    scripted: Callable[..., FakeOpenAIServer], capture: SpanCapture
) -> None:
    kitchen = Kitchen(tracer=capture.provider.get_tracer("kitchen"))
    server = scripted(
        step("get_weather", city="Paris"), step("count_toppings", names=["basil", "chili"]), FINISH
    )
    flock = Flock("openai/m", tracer_provider=capture.provider)
    chef(flock, server, kitchen.get_weather, kitchen.count_toppings)
    async with flock.traced_run("pizza_workflow"):
        await flock.publish(Idea(topic="summer"))
        await flock.run_until_idle()

    (execute,) = capture.named("Agent.execute")
    assert execute.status.status_code is not StatusCode.ERROR
    evaluate_tree = [c for c in capture.tree()[0][1][0][1][0][1] if c[0] == "DSPyEngine.evaluate"]
    assert evaluate_tree == [
        (
            "DSPyEngine.evaluate",
            [
                ("DSPyEngine.fetch_conversation_context", []),
                ("DSPyEngine.should_use_context", []),
                ("Tool.get_weather", [("Kitchen.lookup", [])]),  # the worker thread's span
                ("Tool.count_toppings", []),
            ],
        )
    ]
    (evaluate,) = capture.named("DSPyEngine.evaluate")
    (weather,) = capture.named("Tool.get_weather")
    (count,) = capture.named("Tool.count_toppings")
    for span in (weather, count):
        assert span.parent is not None and evaluate.context is not None
        assert span.parent.span_id == evaluate.context.span_id
        assert span.status.status_code is StatusCode.UNSET
        assert span.attributes is not None
        assert span.attributes["workflow.name"] == "pizza_workflow"
    assert {k: v for k, v in (weather.attributes or {}).items() if k.startswith("gen_ai.")} == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "get_weather",
        "gen_ai.tool.type": "function",
        "gen_ai.tool.description": "The current weather in a city.",  # the first line
        "gen_ai.tool.call.arguments": '{"city": "Paris"}',
        "gen_ai.tool.call.result": "sunny in Paris",
        "gen_ai.agent.name": "chef",
    }
    assert count.attributes is not None
    assert count.attributes["gen_ai.tool.call.arguments"] == '{"names": ["basil", "chili"]}'
    assert count.attributes["gen_ai.tool.call.result"] == "2"  # results are text (JSON)
    assert evaluate.attributes is not None
    assert evaluate.attributes["flock.tool.calls"] == 2
    assert evaluate.attributes["flock.tool.errors"] == 0
    assert evaluate.attributes["flock.tool.stop_reason"] == "finish"
    assert evaluate.attributes["gen_ai.usage.input_tokens"] == 4 * 42  # all four model calls
    assert evaluate.attributes["gen_ai.usage.output_tokens"] == 4 * 17


async def test_a_tool_that_raises_is_an_error_span_and_the_model_sees_the_error(
    kitchen: Kitchen,
    scripted: Callable[..., FakeOpenAIServer],
    capture: SpanCapture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = scripted(step("bake", minutes=10), FINISH)
    flock = Flock("openai/m", tracer_provider=capture.provider)
    chef(flock, server, kitchen.bake)

    with caplog.at_level(logging.WARNING, logger="flock"):
        (pizza,) = await flock.invoke("chef", Idea(topic="x"))  # the run goes on

    assert pizza.payload == Pizza(**PIZZA)
    assert kitchen.calls == [("bake", {"minutes": 10})]
    (bake,) = capture.named("Tool.bake")
    assert bake.status.status_code is StatusCode.ERROR
    assert bake.status.description == "RuntimeError: the oven is broken"
    (event,) = bake.events
    assert event.name == "exception" and event.attributes is not None
    assert event.attributes["exception.type"] == "RuntimeError"
    assert event.attributes["exception.message"] == "the oven is broken"
    assert "gen_ai.tool.call.result" not in (bake.attributes or {})
    (evaluate,) = capture.named("DSPyEngine.evaluate")
    assert evaluate.status.status_code is not StatusCode.ERROR
    assert evaluate.attributes is not None
    assert (evaluate.attributes["flock.tool.calls"], evaluate.attributes["flock.tool.errors"]) == (
        1,
        1,
    )
    second = user_text([r for r in server.requests if is_step(r)][1])
    assert "Execution error in bake" in second and "the oven is broken" in second
    assert "tool bake raised RuntimeError: the oven is broken" in caplog.text


@pytest.mark.parametrize(
    ("arguments", "error"),
    [({"town": "Paris"}, "Arg town is not in the tool's args"), ({"city": 42}, "Arg city is")],
)
async def test_arguments_the_tool_does_not_take_fail_the_call_in_its_span(
    kitchen: Kitchen,
    scripted: Callable[..., FakeOpenAIServer],
    capture: SpanCapture,
    arguments: dict[str, Any],
    error: str,
) -> None:
    server = scripted(step("get_weather", **arguments), FINISH)
    flock = Flock("openai/m", tracer_provider=capture.provider)
    chef(flock, server, kitchen.get_weather)

    (pizza,) = await flock.invoke("chef", Idea(topic="x"))

    assert pizza.payload == Pizza(**PIZZA)
    assert kitchen.calls == []  # DSPy refused the arguments: the function never ran
    (weather,) = capture.named("Tool.get_weather")
    assert weather.status.status_code is StatusCode.ERROR
    assert error in (weather.status.description or "")
    assert weather.attributes is not None
    assert weather.attributes["gen_ai.tool.call.arguments"] == json.dumps(arguments)
    assert error in user_text([r for r in server.requests if is_step(r)][1])


async def test_a_tool_name_the_model_invents_ends_the_tool_loop_visibly(
    kitchen: Kitchen,
    scripted: Callable[..., FakeOpenAIServer],
    capture: SpanCapture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    invented = step("get_wether", city="Paris")
    # DSPy cannot parse the step (the name is not one of the tools) and asks again in JSON.
    server = scripted(invented, json.dumps(invented))
    flock = Flock("openai/m", tracer_provider=capture.provider)
    chef(flock, server, kitchen.get_weather)

    with caplog.at_level(logging.WARNING, logger="flock"):
        (pizza,) = await flock.invoke("chef", Idea(topic="x"))  # no crash

    assert pizza.payload == Pizza(**PIZZA)  # extracted from what the tools gave (nothing)
    assert kitchen.calls == []
    assert [s.name for s in capture.spans if s.name.startswith("Tool.")] == []
    assert [is_step(r) for r in server.requests] == [True, True, False]
    assert "[[ ## tool_name_0 ## ]]" not in user_text(server.requests[-1])
    (evaluate,) = capture.named("DSPyEngine.evaluate")
    assert evaluate.status.status_code is not StatusCode.ERROR
    assert evaluate.attributes is not None
    assert evaluate.attributes["flock.tool.stop_reason"] == "invalid_step"
    assert evaluate.attributes["flock.tool.calls"] == 0
    (event,) = evaluate.events
    assert event.attributes is not None
    assert str(event.attributes["exception.type"]).endswith(".AdapterParseError")
    assert event.attributes["flock.tool.invalid_step"] is True
    assert "get_wether" in str(event.attributes["exception.message"])
    assert "could not be parsed" in caplog.text and "get_wether" in caplog.text


async def test_max_tool_calls_bounds_the_tool_loop(kitchen: Kitchen, capture: SpanCapture) -> None:
    def never_finishes(request: dict[str, Any]) -> str:
        if is_step(request):
            return dspy_reply(**step("get_weather", city="Paris"))
        return dspy_reply(reasoning="Enough.", pizza=PIZZA)

    with FakeOpenAIServer(never_finishes) as server:
        flock = Flock("openai/m", tracer_provider=capture.provider)
        chef(flock, server, kitchen.get_weather, max_tool_calls=2)
        (pizza,) = await flock.invoke("chef", Idea(topic="x"))

    assert pizza.payload == Pizza(**PIZZA)  # extracted after the last allowed call
    assert len(kitchen.calls) == 2
    assert [is_step(r) for r in server.requests] == [True, True, False]
    assert len(capture.named("Tool.get_weather")) == 2
    (evaluate,) = capture.named("DSPyEngine.evaluate")
    assert evaluate.attributes is not None
    assert evaluate.attributes["flock.tool.calls"] == 2
    assert evaluate.attributes["flock.tool.stop_reason"] == "max_tool_calls"


async def test_concurrent_runs_share_the_program_but_not_their_tool_calls(
    capture: SpanCapture,
) -> None:
    both_asked = threading.Barrier(2, timeout=10)

    def respond(request: dict[str, Any]) -> str:
        if not is_step(request):
            return dspy_reply(reasoning="r", pizza=PIZZA)
        text = user_text(request)
        if "[[ ## tool_name_0 ## ]]" in text:
            return dspy_reply(**FINISH)
        both_asked.wait()  # both runs are inside their tool loop at once
        topic = json.loads(text.split("[[ ## idea ## ]]", 1)[1].split("[[ ##", 1)[0])["topic"]
        return dspy_reply(**step("get_weather", city=topic))

    with FakeOpenAIServer(respond) as server:
        flock = Flock("openai/m", tracer_provider=capture.provider)
        builder = chef(flock, server, get_weather).max_concurrency(2)
        await flock.publish([Idea(topic="Lisbon"), Idea(topic="Oslo")])
        await flock.run_until_idle(timeout=30)

    (engine,) = builder.agent.engines
    assert isinstance(engine, DSPyEngine) and len(engine._programs) == 1  # built once
    spans = {s.context.span_id: s for s in capture.spans if s.context is not None}
    cities = []
    for tool in capture.named("Tool.get_weather"):
        assert tool.parent is not None and tool.attributes is not None
        evaluate = spans[tool.parent.span_id]
        assert evaluate.name == "DSPyEngine.evaluate" and evaluate.attributes is not None
        assert evaluate.attributes["flock.tool.calls"] == 1
        assert evaluate.parent is not None
        execute = spans[evaluate.parent.span_id]
        assert execute.attributes is not None
        city = json.loads(str(tool.attributes["gen_ai.tool.call.arguments"]))["city"]
        assert f'"topic":"{city}"' in str(execute.attributes["input.value"])  # its own run's
        cities.append(city)
    assert sorted(cities) == ["Lisbon", "Oslo"]


def test_max_tool_calls_defaults_to_ten() -> None:
    assert DSPyEngine().max_tool_calls == 10


@pytest.mark.parametrize("value", [0, -1, True, 2.5, "3"])
def test_max_tool_calls_must_be_a_positive_int(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="max_tool_calls must be"):
        DSPyEngine(max_tool_calls=value)


async def test_the_default_fake_server_calls_the_first_tool_then_finishes(
    capture: SpanCapture,
) -> None:
    with FakeOpenAIServer() as server:
        flock = Flock("openai/m", tracer_provider=capture.provider)
        chef(flock, server, get_weather)
        (pizza,) = await flock.invoke("chef", Idea(topic="x"))

    assert isinstance(pizza.payload, Pizza)
    assert [is_step(r) for r in server.requests] == [True, True, False]
    (weather,) = capture.named("Tool.get_weather")
    assert weather.attributes is not None
    assert weather.attributes["gen_ai.tool.call.arguments"] == '{"city": "fake city"}'
    assert weather.attributes["gen_ai.tool.call.result"] == "sunny in fake city"
    (evaluate,) = capture.named("DSPyEngine.evaluate")
    assert evaluate.attributes is not None
    assert evaluate.attributes["flock.tool.stop_reason"] == "finish"


async def test_type_names_react_uses_itself_get_suffixed_fields_with_tools(
    scripted: Callable[..., FakeOpenAIServer],
) -> None:
    outputs = {"reasoning_output": {"text": "because"}}
    server = scripted(FINISH, outputs=outputs)
    flock = Flock("openai/m")
    flock.agent("planner").consumes(Trajectory).publishes(Reasoning).with_tools(
        get_weather
    ).with_engines(DSPyEngine(api_base=server.base_url))

    (reasoning,) = await flock.invoke("planner", Trajectory(stops=["a"]))

    assert reasoning.payload == Reasoning(text="because")
    assert "`trajectory_input` (Trajectory)" in server.requests[0]["messages"][0]["content"]
    assert "`reasoning_output` (Reasoning)" in server.requests[-1]["messages"][0]["content"]
    # Without tools, the names stay as they were.
    assert _field_names([Trajectory], [Reasoning]) == (
        {Trajectory: "trajectory"},
        {Reasoning: "reasoning"},
    )


# -- agents without tools ------------------------------------------------------------------


async def test_an_agent_without_tools_sends_what_dspy_predict_sends() -> None:
    import dspy

    with FakeOpenAIServer() as server:
        engine = DSPyEngine(api_base=server.base_url)
        flock = Flock("openai/m")
        flock.agent("chef").description("Invent a pizza").consumes(Idea).publishes(
            Pizza
        ).with_engines(engine)
        await flock.invoke("chef", Idea(topic="spicy"))

        (signature,) = engine._signatures.values()
        with dspy.context(lm=engine.language_model("openai/m"), track_usage=True):
            await dspy.Predict(signature).acall(idea=Idea(topic="spicy"))

    by_engine, by_predict = server.requests
    assert by_engine == by_predict
    assert "next_tool_name" not in json.dumps(by_engine)


# -- declaring tools ------------------------------------------------------------------------


def undocumented(city: str) -> str:
    return city


def untyped(city) -> str:  # type: ignore[no-untyped-def]
    """Untyped."""
    return str(city)


def star_args(*cities: str) -> str:
    """Star args."""
    return ",".join(cities)


def positional_only(city: str, /) -> str:
    """Positional only."""
    return city


def generator(city: str) -> Iterator[str]:
    """A generator."""
    yield city


def finish(city: str) -> str:
    """Named like ReAct's own tool."""
    return city


def unresolvable(city: NotDefinedAnywhere) -> str:  # type: ignore[name-defined]  # noqa: F821
    """An annotation naming nothing."""
    return str(city)


def no_schema(event: threading.Event) -> str:
    """A parameter type without a JSON schema."""
    return str(event)


def named_get_weather() -> Callable[..., Any]:
    def get_weather(town: str) -> str:
        """Another function with the same name."""
        return town

    return get_weather


async def fetch(city: str) -> str:
    """An async tool."""
    return city


def coroutine_object() -> Any:
    return fetch("Paris")


class CallableTool:
    """A callable object: DSPy read its wrapper's annotations and every run failed."""

    __name__ = "ship"

    def __call__(self, city: str) -> str:
        """Ship to a city."""
        return city


class Node(BaseModel):
    children: list[Node] = []


def count_nodes(tree: Node) -> int:
    """Count a tree's nodes (DSPy's tool schema recursed for ever on this type)."""
    return 1 + sum(count_nodes(c) for c in tree.children)


MISUSES: list[tuple[str, Callable[[], tuple[Any, ...]], str]] = [
    ("nothing", lambda: (), "needs at least one function, e.g. .with_tools(get_weather)"),
    ("a number", lambda: (42,), "pass the function itself"),
    ("a call's result", lambda: (get_weather("x"),), "not .with_tools(get_weather())"),
    ("a coroutine", lambda: (coroutine_object(),), "pass the function itself"),
    ("a class", lambda: (Kitchen,), "got the class Kitchen; pass a function"),
    ("a lambda", lambda: (lambda city: city,), "define it with def"),
    ("a list", lambda: ([get_weather],), "write .with_tools(*tools)"),
    ("a partial", lambda: (functools.partial(get_weather, "x"),), "wrap it in a def"),
    ("no docstring", lambda: (undocumented,), "add a docstring"),
    ("no annotation", lambda: (untyped,), "annotate it (e.g. city: str)"),
    ("*args", lambda: (star_args,), "make it an ordinary parameter"),
    ("positional-only", lambda: (positional_only,), "make it an ordinary parameter"),
    ("a generator", lambda: (generator,), "collect the items into a list"),
    ("finish", lambda: (finish,), "'finish' is the engine's own tool"),
    ("an unknown annotation", lambda: (unresolvable,), "define the types they name"),
    ("a type without schema", lambda: (no_schema,), "use str, int, float, bool"),
    ("a callable object", lambda: (CallableTool(),), "takes functions or bound methods"),
    ("a recursive model", lambda: (count_nodes,), "refers to itself"),
    ("the same function twice", lambda: (get_weather, get_weather), "give each tool once"),
    ("two of one name", lambda: (get_weather, named_get_weather()), "rename one of them"),
]


@pytest.mark.parametrize(
    ("arguments", "advice"), [m[1:] for m in MISUSES], ids=[m[0] for m in MISUSES]
)
def test_with_tools_misuse_says_what_to_do(
    arguments: Callable[[], tuple[Any, ...]], advice: str
) -> None:
    builder = Flock().agent("chef").consumes(Idea).publishes(Pizza)
    with pytest.raises(ConfigurationError) as info:
        builder.with_tools(*arguments())
    assert "agent 'chef'" in str(info.value)
    assert advice in str(info.value)
    assert builder.agent.tools == []  # nothing of a refused call is kept


def test_with_tools_adds_tools_on_each_call_and_refuses_one_given_twice(
    kitchen: Kitchen,
) -> None:
    builder = Flock().agent("chef").consumes(Idea).publishes(Pizza)
    assert builder.with_tools(get_weather).with_tools(fetch, kitchen.bake) is builder
    assert builder.agent.tools == [get_weather, fetch, kitchen.bake]
    with pytest.raises(ConfigurationError, match="'get_weather' is already one of its tools"):
        builder.with_tools(get_weather)
    with pytest.raises(ConfigurationError, match="two tools are named 'get_weather'"):
        builder.with_tools(kitchen.get_weather)
    assert builder.agent.tools == [get_weather, fetch, kitchen.bake]


@pytest.mark.parametrize("tools_first", [True, False])
async def test_an_agent_whose_engines_never_call_tools_fails_its_check(tools_first: bool) -> None:
    flock = Flock("openai/m")
    builder = flock.agent("chef").consumes(Idea).publishes(Pizza)
    engine = lambda idea: Pizza(name=idea.topic)  # noqa: E731
    if tools_first:
        builder.with_tools(get_weather).with_engines(engine)
    else:
        builder.with_engines(engine).with_tools(get_weather)
    with pytest.raises(ConfigurationError) as info:
        await flock.invoke("chef", Idea(topic="x"))
    message = str(info.value)
    assert "agent 'chef' has tools (get_weather)" in message
    assert "drop .with_engines(...) to use the default DSPyEngine" in message
    with pytest.raises(ConfigurationError, match="never call them"):
        await flock.publish(Idea(topic="x"))


class ToolEngine(Engine):
    """A custom engine that calls the agent's tools itself."""

    uses_tools = True

    async def evaluate(self, ctx: RunContext, inputs: list[Artifact]) -> EngineOutput:
        return None


@pytest.mark.parametrize(
    "engines",
    [
        [],  # the default DSPyEngine
        [DSPyEngine(), lambda idea: None],
        [ToolEngine()],
    ],
    ids=["default", "dspy-and-function", "custom-uses-tools"],
)
def test_agents_with_an_engine_that_calls_tools_pass_the_check(engines: list[Any]) -> None:
    builder = Flock("openai/m").agent("chef").consumes(Idea).publishes(Pizza)
    builder.with_tools(get_weather)
    if engines:
        builder.with_engines(*engines)
    builder.agent.check()


# -- found by a review: failures that used to hang, fail or hide a tool call -------------


def find_city(prefix: str) -> str:
    """The first known city with a prefix."""
    return next(c for c in ("Paris", "Rome") if c.startswith(prefix))  # StopIteration


class Handle:
    """Not JSON: no span can show it as JSON."""


class Fetched(BaseModel):
    model_config = {"arbitrary_types_allowed": True}
    count: int
    handle: Handle


def fetch_handle(city: str) -> Fetched:
    """Fetch a client handle for a city."""
    return Fetched(count=3, handle=Handle())


def addresses(city: str) -> list[Reasoning]:
    """Addresses in a city, as models."""
    return [Reasoning(text=city)]


async def test_a_plain_tool_raising_stop_iteration_is_an_error_not_a_hang(
    scripted: Callable[..., FakeOpenAIServer], capture: SpanCapture
) -> None:
    """asyncio cannot put StopIteration into a future: the run used to hang for ever."""
    server = scripted(step("find_city", prefix="X"), FINISH)
    flock = Flock("openai/m", tracer_provider=capture.provider)
    chef(flock, server, find_city)
    (pizza,) = await asyncio.wait_for(flock.invoke("chef", Idea(topic="x")), 30)
    assert pizza.payload == Pizza(**PIZZA)
    (span,) = capture.named("Tool.find_city")
    assert span.status.status_code is StatusCode.ERROR
    assert "find_city raised StopIteration" in (span.status.description or "")


async def test_a_result_no_span_can_show_as_json_still_reaches_the_model(
    scripted: Callable[..., FakeOpenAIServer], capture: SpanCapture
) -> None:
    """Encoding the result for the span used to fail the tool call (tracing on only)."""
    server = scripted(step("fetch_handle", city="Oslo"), step("addresses", city="Rome"), FINISH)
    flock = Flock("openai/m", tracer_provider=capture.provider)
    chef(flock, server, fetch_handle, addresses)
    await flock.invoke("chef", Idea(topic="x"))
    (fetched,) = capture.named("Tool.fetch_handle")
    assert fetched.status.status_code is StatusCode.UNSET
    assert "Handle" in str((fetched.attributes or {})["gen_ai.tool.call.result"])
    steps = [r for r in server.requests if is_step(r)]
    assert "Execution error" not in user_text(steps[1])
    (listed,) = capture.named("Tool.addresses")  # models inside a list: JSON, not str()
    assert (listed.attributes or {})["gen_ai.tool.call.result"] == '[{"text": "Rome"}]'


async def test_a_tool_call_cut_off_by_the_timeout_is_an_error_span(
    scripted: Callable[..., FakeOpenAIServer], capture: SpanCapture
) -> None:
    release = threading.Event()

    def slow(minutes: int) -> str:
        """Bake slowly."""
        release.wait(5)
        return "done"

    warm = scripted(step("get_weather", city="Oslo"), FINISH)  # DSPy and litellm imported
    warm_flock = Flock("openai/m")
    chef(warm_flock, warm, get_weather)
    await warm_flock.invoke("chef", Idea(topic="x"))
    server = scripted(step("slow", minutes=1), FINISH)
    flock = Flock("openai/m", tracer_provider=capture.provider)
    chef(flock, server, slow).timeout(0.5)
    try:
        with pytest.raises(AgentRunError, match=r"TimeoutError"):
            await flock.invoke("chef", Idea(topic="x"))
    finally:
        release.set()
    (span,) = capture.named("Tool.slow")
    assert span.status.status_code is StatusCode.ERROR
    assert "cancelled" in (span.status.description or "")
    assert (span.attributes or {})["flock.tool.cancelled"] is True
    (evaluate,) = capture.named("DSPyEngine.evaluate")
    assert (evaluate.attributes or {})["flock.tool.errors"] == 1
