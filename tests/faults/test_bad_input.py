"""Bad input, table-driven: each case is an action, the exact error type it raises and a
fragment of the message; afterwards nothing is stored and no agent has run."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from pydantic import BaseModel

from flock import (
    AgentComponent,
    ConfigurationError,
    Flock,
    PayloadValidationError,
    RegistryError,
)
from flock.engines.function import FunctionEngine
from flock.registry import flock_type, registry
from flock.testing import ScriptedEngine
from flock.tracing import configure
from flock.visibility import PrivateVisibility
from tests.models import Idea, Note, Pizza, Review

IDEA = registry.name_of(Idea)


class Loose(BaseModel):  # never registered
    x: int


@flock_type(name="tests.faults.left.Twin")
class Twin(BaseModel):
    a: int


Twin2 = flock_type(name="tests.faults.right.Twin")(
    type("Twin", (BaseModel,), {"__annotations__": {"a": int}})
)


def _cyclic_list() -> list[Any]:
    items: list[Any] = ["cheese"]
    items.append(items)
    return items


def _cyclic_dict() -> dict[str, Any]:
    payload: dict[str, Any] = {"name": "loop"}
    payload["toppings"] = [payload]
    return payload


@dataclass
class World:
    flock: Flock
    engine: ScriptedEngine


Action = Callable[[World], Awaitable[Any] | Any]


def publish(obj: Any, **kw: Any) -> Action:
    return lambda w: w.flock.publish(obj, **kw)


async def _traced_run(w: World, name: Any) -> None:
    async with w.flock.traced_run(name):
        await w.flock.publish(Idea(topic="inside"))


CASES: list[tuple[str, Action, type[Exception], str]] = [
    # payloads
    (
        "model with an invalid field",
        publish(Idea.model_construct(topic="")),
        PayloadValidationError,
        "String should have at least 1 character",
    ),
    (
        "field of the wrong type",
        publish({"type": "Idea", "payload": {"topic": 3}}),
        PayloadValidationError,
        "topic\n  Input should be a valid string",
    ),
    (
        "missing required field",
        publish({"type": "Review", "payload": {}}),
        PayloadValidationError,
        "score\n  Field required",
    ),
    (
        "value out of range",
        publish({"type": "Review", "payload": {"score": 11}}),
        PayloadValidationError,
        "less than or equal to 10",
    ),
    (
        "payload that is not a mapping",
        publish({"type": "Idea", "payload": "spicy"}),
        PayloadValidationError,
        "Idea payload is invalid; nothing was stored",
    ),
    (
        "unknown type name",
        publish({"type": "NoSuchType", "payload": {}}),
        RegistryError,
        "unknown type 'NoSuchType'; register the model with @flock_type",
    ),
    (
        "ambiguous short type name",
        publish({"type": "Twin", "payload": {"a": 1}}),
        RegistryError,
        "type name 'Twin' is ambiguous; use one of: tests.faults.left.Twin, tests.faults.right.Twin",
    ),
    (
        "dict without a type",
        publish({"payload": {"topic": "x"}}),
        PayloadValidationError,
        "a dict needs a 'type' key naming a registered type, got keys ['payload']",
    ),
    (
        "type that is not a string",
        publish({"type": Idea, "payload": {}}),
        PayloadValidationError,
        "'type' must be a string",
    ),
    (
        "unregistered model",
        publish(Loose(x=1)),
        RegistryError,
        "Loose is not a registered flock type; decorate it with @flock_type",
    ),
    ("plain string", publish("an idea"), PayloadValidationError, "got str: 'an idea'"),
    ("None", publish(None), PayloadValidationError, "got NoneType"),
    ("a class instead of an instance", publish(Idea), PayloadValidationError, "got ModelMetaclass"),
    (
        "one bad item in a batch",
        publish([Idea(topic="ok"), {"type": "Idea"}]),
        PayloadValidationError,
        "topic\n  Field required",
    ),
    (
        "cyclic list in a payload",
        publish({"type": "Pizza", "payload": {"name": "x", "toppings": _cyclic_list()}}),
        PayloadValidationError,
        "toppings.1\n  Input should be a valid string",
    ),
    (
        "cyclic dict in a payload",
        publish({"type": "Pizza", "payload": _cyclic_dict()}),
        PayloadValidationError,
        "toppings.0\n  Input should be a valid string",
    ),
    (
        "empty correlation id",
        publish(Idea(topic="x"), correlation_id=""),
        ConfigurationError,
        "correlation_id must be a non-blank string without NUL, got ''",
    ),
    (
        "correlation id with a NUL (PostgreSQL cannot store it)",
        publish(Idea(topic="x"), correlation_id="a\x00b"),
        ConfigurationError,
        "correlation_id must be a non-blank string without NUL, got 'a\\x00b'",
    ),
    (
        "tags as one string",
        publish(Idea(topic="x"), tags="hot"),
        ConfigurationError,
        "tags takes a collection of names, not a single string: write ['hot']",
    ),
    (
        "a tag that is no string",
        publish(Idea(topic="x"), tags=[1]),
        ConfigurationError,
        "tags: every name must be a non-blank string without NUL, got 1",
    ),
    (
        "an empty tag",
        publish(Idea(topic="x"), tags=["ok", ""]),
        ConfigurationError,
        "tags: every name must be a non-blank string without NUL, got ''",
    ),
    (
        "a blank tag (a subscription's tags= refuses it too)",
        publish(Idea(topic="x"), tags=[" \t"]),
        ConfigurationError,
        "tags: every name must be a non-blank string without NUL, got ' \\t'",
    ),
    (
        "a blank correlation id",
        publish(Idea(topic="x"), correlation_id="  "),
        ConfigurationError,
        "correlation_id must be a non-blank string without NUL, got '  '",
    ),
    (
        "tags as bytes",
        publish(Idea(topic="x"), tags=b"hot"),
        ConfigurationError,
        "tags takes a collection of names (strings), got b'hot'",
    ),
    (
        "tags that are no collection",
        publish(Idea(topic="x"), tags=5),
        ConfigurationError,
        "tags takes a collection of names, got 5",
    ),
    (
        "tags holding a list (unhashable)",
        publish(Idea(topic="x"), tags=[["a"]]),
        ConfigurationError,
        "tags: every name must be a string, got [['a']]",
    ),
    (
        "a private visibility naming an agent with a NUL",
        lambda w: w.flock.publish(Idea(topic="x"), visibility=PrivateVisibility(agents={"a\x00"})),
        ConfigurationError,
        "every name must be a non-blank string without NUL, got 'a\\x00'",
    ),
    # invoke
    (
        "invoke with a correlation id holding a NUL",
        lambda w: w.flock.invoke("chef", Idea(topic="x"), correlation_id="a\x00b"),
        ConfigurationError,
        "correlation_id must be a non-blank string without NUL, got 'a\\x00b'",
    ),
    (
        "invoke with a type the agent does not consume",
        lambda w: w.flock.invoke("chef", Pizza(name="x")),
        PayloadValidationError,
        "agent 'chef' consumes",
    ),
    (
        "invoke an unknown agent",
        lambda w: w.flock.invoke("ghost", Idea(topic="x")),
        ConfigurationError,
        "no agent named 'ghost' (agents: chef)",
    ),
    # traced_run names
    (
        "traced_run with an empty name",
        lambda w: _traced_run(w, ""),
        ConfigurationError,
        "traced_run needs a non-empty workflow name, got ''",
    ),
    (
        "traced_run with a blank name",
        lambda w: _traced_run(w, " \t"),
        ConfigurationError,
        "non-empty workflow name",
    ),
    (
        "traced_run with a non-string name",
        lambda w: _traced_run(w, 42),
        ConfigurationError,
        "non-empty workflow name, got 42",
    ),
    ("traced_run with None", lambda w: _traced_run(w, None), ConfigurationError, "got None"),
    # names with control characters and the like
    (
        "agent name with a NUL",
        lambda w: w.flock.agent("che\x00f"),
        ConfigurationError,
        "agent name must be a non-empty printable string, got 'che\\x00f'",
    ),
    (
        "agent name with a newline",
        lambda w: w.flock.agent("chef\nrm -rf /"),
        ConfigurationError,
        "printable",
    ),
    (
        "agent name with an ANSI escape",
        lambda w: w.flock.agent("\x1b[31mred"),
        ConfigurationError,
        "printable",
    ),
    ("agent name that is blank", lambda w: w.flock.agent("   "), ConfigurationError, "non-empty"),
    ("agent name that is not a string", lambda w: w.flock.agent(7), ConfigurationError, "got 7"),
    (
        "agent name reserved for outside publishers",
        lambda w: w.flock.agent("external"),
        ConfigurationError,
        "'external' is reserved",
    ),
    (
        "duplicate agent name",
        lambda w: w.flock.agent("chef"),
        ConfigurationError,
        "an agent named 'chef' already exists",
    ),
    (
        "type name that is blank",
        lambda w: flock_type(name="  ")(type("Blank", (BaseModel,), {})),
        RegistryError,
        "type name must be a non-empty string",
    ),
    (
        "registering a non-model",
        lambda w: flock_type(dict),
        RegistryError,
        "needs a pydantic.BaseModel subclass",
    ),
    # builder misuse
    (
        "consumes() without types",
        lambda w: w.flock.agent("b").consumes(),
        ConfigurationError,
        "consumes() needs at least one type",
    ),
    (
        "consumes(dict)",
        lambda w: w.flock.agent("b").consumes(dict),
        ConfigurationError,
        "consumes() takes Pydantic model classes, got <class 'dict'>",
    ),
    (
        "publishes a string",
        lambda w: w.flock.agent("b").publishes("Pizza"),
        ConfigurationError,
        "publishes() takes Pydantic model classes, got 'Pizza'",
    ),
    (
        "from_agents as one string",
        lambda w: w.flock.agent("b").consumes(Idea, from_agents="chef"),
        ConfigurationError,
        "not a single string",
    ),
    (
        "max_concurrency(0)",
        lambda w: w.flock.agent("b").max_concurrency(0),
        ConfigurationError,
        "max_concurrency must be an int ≥ 1, got 0",
    ),
    (
        "max_concurrency(True)",
        lambda w: w.flock.agent("b").max_concurrency(True),
        ConfigurationError,
        "got True",
    ),
    (
        "retries(-1)",
        lambda w: w.flock.agent("b").retries(-1),
        ConfigurationError,
        "retries needs n ≥ 0",
    ),
    (
        "timeout(0)",
        lambda w: w.flock.agent("b").timeout(0),
        ConfigurationError,
        "timeout must be > 0 seconds or None, got 0",
    ),
    (
        "with_engines(42)",
        lambda w: w.flock.agent("b").with_engines(42),
        ConfigurationError,
        "with_engines() takes Engine instances or functions, got 42",
    ),
    (
        "with_engines() of a class",
        lambda w: w.flock.agent("b").with_engines(Pizza),
        ConfigurationError,
        "with_engines() takes Engine instances",
    ),
    (
        "with_engines() empty",
        lambda w: w.flock.agent("b").with_engines(),
        ConfigurationError,
        "with_engines() needs an engine",
    ),
    (
        "with_utilities(an engine)",
        lambda w: w.flock.agent("b").with_utilities(ScriptedEngine()),
        ConfigurationError,
        "engines go to with_engines()",
    ),
    (
        "FunctionEngine of a non-callable",
        lambda w: FunctionEngine(3),
        ConfigurationError,
        "FunctionEngine needs a callable, got 3",
    ),
    (
        "an agent that consumes nothing",
        lambda w: (w.flock.agent("lazy").publishes(Pizza), w.flock.publish(Idea(topic="x")))[1],
        ConfigurationError,
        "agent 'lazy' consumes nothing; call flock.agent('lazy').consumes(SomeType)",
    ),
    (
        "Flock(model=42)",
        lambda w: Flock(42),
        ConfigurationError,
        "model must be a string like 'openai/gpt-4o', got 42",
    ),
    (
        "Flock(max_agent_runs=0)",
        lambda w: Flock(max_agent_runs=0),
        ConfigurationError,
        "max_agent_runs must be an int ≥ 1",
    ),
    (
        "Flock(store=a dict)",
        lambda w: Flock(store={}),
        ConfigurationError,
        "store must be a flock.store.Store",
    ),
]


@pytest.mark.parametrize(
    ("action", "error", "fragment"),
    [pytest.param(a, e, f, id=i) for i, a, e, f in CASES],
)
async def test_bad_input(action: Action, error: type[Exception], fragment: str) -> None:
    flock = Flock()
    engine = ScriptedEngine(lambda idea: Pizza(name=idea.topic))
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(engine)
    with pytest.raises(Exception) as info:
        result = action(World(flock, engine))
        if isinstance(result, Awaitable):
            await result
    assert type(info.value) is error, repr(info.value)
    assert fragment in str(info.value)
    assert await flock.store.query() == []
    assert engine.calls == []
    assert [a.name for a in flock.agents] in (["chef"], ["chef", "b"], ["chef", "lazy"])


def test_there_are_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20


# Oversized and odd values: capped or stored, never a crash -------------------------------------


def _file_provider(db: Path) -> Any:
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    settings = configure(provider, trace_file=True, db_path=str(db))
    assert settings is not None and settings.file is not None
    return provider, settings.file


async def test_oversized_payload_is_stored_whole_and_capped_in_the_trace(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    provider, file = _file_provider(db)
    try:
        flock = Flock(tracer_provider=provider)
        flock.agent("echo").consumes(Note).with_engines(lambda n: None)
        huge = "x" * 5_000_000
        async with flock.traced_run("huge") as span:
            span.set_attribute("huge.attribute", huge)
            span.set_attribute("huge.list", [huge, "small"])
            artifact = await flock.publish(Note(text=huge))
            await flock.run_until_idle()
        assert artifact.payload.text == huge  # the blackboard keeps it whole
        assert file.force_flush()
        conn = duckdb.connect(str(db), read_only=True)
        try:
            rows = dict(conn.execute("SELECT name, attributes FROM spans").fetchall())
        finally:
            conn.close()
        root = json.loads(rows["huge"])
        assert root["huge"]["attribute"] == "x" * 4096 + "…[truncated 4995904 chars]"
        assert root["huge"]["list"] == ["x" * 4096 + "…[truncated 4995904 chars]", "small"]
        execute = json.loads(rows["Agent.execute"])
        assert execute["input"]["value"].endswith("chars]")
        assert len(execute["input"]["value"]) < 2100
        assert max(len(v) for v in rows.values()) < 20_000
    finally:
        provider.shutdown()


async def test_odd_attribute_values_and_names_are_stored_not_crashed_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "t.duckdb"
    provider, file = _file_provider(db)
    try:
        flock = Flock(tracer_provider=provider)
        name = "ünïcødé 🍕 \u202e workflow"
        flock.agent("шеф-🍕").consumes(Idea).publishes(Pizza).with_engines(
            lambda i: Pizza(name=i.topic)
        )
        async with flock.traced_run(name) as span:
            span.set_attribute("not.json", object())  # type: ignore[arg-type]
            span.set_attribute("control\x00chars", "a\x00b\x1b[31m")
            span.set_attribute("float.nan", float("nan"))
            span.set_attribute("bytes", b"\xff\xfe")
            await flock.publish(Idea(topic="ключ\u0000"))
            await flock.run_until_idle()
        assert file.force_flush()
        conn = duckdb.connect(str(db), read_only=True)
        try:
            root = conn.execute("SELECT attributes FROM spans WHERE parent_id IS NULL").fetchone()[
                0
            ]
            agents = conn.execute(
                "SELECT DISTINCT json_extract_string(attributes, '$.gen_ai.agent.name') "
                "FROM spans WHERE name = 'Agent.execute'"
            ).fetchall()
            workflows = conn.execute(
                "SELECT DISTINCT json_extract_string(attributes, '$.workflow.name') FROM spans"
            ).fetchall()
        finally:
            conn.close()
        attributes = json.loads(root)
        assert attributes["control\x00chars"] == "a\x00b\x1b[31m"
        assert attributes["float"]["nan"] == "NaN"  # JSON has no NaN: its OTLP/JSON string
        assert "not" in attributes  # the SDK stringifies or nulls it; the span is kept
        assert agents == [("шеф-🍕",)]
        assert workflows == [(name,)]
        assert "Invalid type" in caplog.text  # the OpenTelemetry SDK says so, once
    finally:
        provider.shutdown()


async def test_a_redact_hook_that_fails_loses_those_attributes_not_the_batch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    cyclic = _cyclic_list()

    def redact(key: str, value: Any) -> Any:
        if key == "secret":
            raise RuntimeError("redactor bug")
        if key == "cyclic":
            return cyclic
        return value

    db = tmp_path / "t.duckdb"
    provider = TracerProvider()
    settings = configure(provider, trace_file=True, db_path=str(db), redact=redact)
    assert settings is not None and settings.file is not None
    tracer = provider.get_tracer("t")
    try:
        with tracer.start_as_current_span("raises") as span:
            span.set_attribute("secret", "hunter2")
        with tracer.start_as_current_span("cyclic") as span:
            span.set_attribute("cyclic", "x")
        with tracer.start_as_current_span("fine") as span:
            span.set_attribute("ok", 1)
        assert settings.file.force_flush(10_000)
        assert settings.file.last_error is None
        conn = duckdb.connect(str(db), read_only=True)
        try:
            rows = dict(conn.execute("SELECT name, attributes FROM spans").fetchall())
        finally:
            conn.close()
        assert json.loads(rows["fine"]) == {"ok": 1}
        assert json.loads(rows["raises"]) == {
            "flock": {"encode_error": "RuntimeError: redactor bug"}
        }
        assert "hunter2" not in rows["raises"]  # never written unredacted
        assert json.loads(rows["cyclic"])["flock"]["encode_error"].startswith("RecursionError")
        assert "could not encode the attributes of span 'raises'" in caplog.text
    finally:
        provider.shutdown()


# clear_traces ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda p: p / "missing.duckdb", "trace file not found"),
        (lambda p: (p / "dir.duckdb").mkdir() or p / "dir.duckdb", "trace file not found"),
        (
            lambda p: (p / "text.duckdb").write_text("no") and p / "text.duckdb",
            "not a valid DuckDB database file",
        ),
        (
            lambda p: duckdb.connect(str(p / "other.duckdb")).close() or p / "other.duckdb",
            "is not a flock trace file (it has no spans table); nothing was deleted",
        ),
    ],
    ids=["missing", "a directory", "not duckdb", "no spans table"],
)
def test_clear_traces_reports_instead_of_raising(
    tmp_path: Path, make: Callable[[Path], Path], fragment: str
) -> None:
    path = make(tmp_path)
    result = Flock.clear_traces(str(path))
    assert result["success"] is False and result["deleted_count"] == 0
    assert fragment in result["error"]
    assert str(path.name) in result["error"] or fragment.startswith("not a valid")


def test_clear_traces_never_drops_a_spans_table_that_is_not_flocks(tmp_path: Path) -> None:
    path = tmp_path / "theirs.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE spans AS SELECT range AS x FROM range(5)")
    result = Flock.clear_traces(str(path))
    assert result["success"] is False and result["deleted_count"] == 0
    assert "is not a flock trace file (its spans table is not flock's" in result["error"]
    with duckdb.connect(str(path), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM spans").fetchone() == (5,)


def test_clear_traces_rejects_a_non_path() -> None:
    result = Flock.clear_traces(42)  # type: ignore[arg-type]
    assert result == {
        "success": False,
        "deleted_count": 0,
        "error": "db_path must be a path to a trace file, got 42",
    }


_ = (AgentComponent, Review, IDEA, Twin, Twin2)  # imported for the table's types
