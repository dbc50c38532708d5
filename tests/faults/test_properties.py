"""Property-based tests: artifact validation and the nested-attribute JSON encoding."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from flock import Flock, PayloadValidationError
from flock.registry import registry
from flock.tracing._attributes import attributes_json, flatten, nest
from flock.tracing.processor import DuckDBSpanProcessor
from tests.models import Pizza, Review

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Artifact validation -------------------------------------------------------------------------

texts = st.text(max_size=50)


async def _publish(obj: Any) -> Flock:
    flock = Flock()
    await flock.publish(obj)
    return flock


@FAST
@given(name=texts, toppings=st.lists(texts, max_size=5), as_dict=st.booleans())
def test_valid_payloads_round_trip(name: str, toppings: list[str], as_dict: bool) -> None:
    obj: Any = (
        {"type": registry.name_of(Pizza), "payload": {"name": name, "toppings": toppings}}
        if as_dict
        else Pizza(name=name, toppings=toppings)
    )
    flock = asyncio.run(_publish(obj))
    (stored,) = asyncio.run(flock.store.query())
    assert stored.payload == Pizza(name=name, toppings=toppings)
    assert Pizza.model_validate_json(stored.payload.model_dump_json()) == stored.payload
    assert json.loads(json.dumps(stored.to_dict()))["payload"] == {
        "name": name,
        "toppings": toppings,
    }


not_a_string = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    st.lists(st.integers(), min_size=1),
    st.dictionaries(texts, texts),
)
not_a_score = st.one_of(
    st.integers().filter(lambda n: not 0 <= n <= 10),
    st.none(),
    texts.filter(lambda s: not s.strip().lstrip("+-").isdigit()),
    st.floats().filter(lambda f: not (math.isfinite(f) and f.is_integer() and 0 <= f <= 10)),
)


@FAST
@given(
    case=st.one_of(
        not_a_string.map(lambda v: ("Pizza", {"name": v})),
        st.lists(not_a_string.filter(lambda v: not isinstance(v, str)), min_size=1).map(
            lambda v: ("Pizza", {"name": "ok", "toppings": v})
        ),
        not_a_score.map(lambda v: ("Review", {"score": v})),
        st.just(("Review", {})),
    )
)
def test_invalid_payloads_are_rejected_and_nothing_is_stored(case: tuple[str, Any]) -> None:
    type_name, payload = case
    model = {"Pizza": Pizza, "Review": Review}[type_name]

    async def attempt() -> Flock:
        flock = Flock()
        with pytest.raises(PayloadValidationError, match="payload is invalid; nothing was stored"):
            await flock.publish({"type": registry.name_of(model), "payload": payload})
        assert await flock.store.query() == []
        return flock

    asyncio.run(attempt())


# Nested attributes ---------------------------------------------------------------------------

# Key parts include the empty string, so keys like "a.", ".a" and "a..b" occur.
parts = st.text(alphabet="abc_é", max_size=3)
keys = st.lists(parts, min_size=1, max_size=4).map(".".join)
scalars = st.one_of(
    st.text(max_size=20),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
)
values = st.one_of(scalars, st.lists(st.text(max_size=5), max_size=3))
attribute_maps = st.dictionaries(keys, values, max_size=8)


@FAST
@given(attributes=attribute_maps)
def test_nest_round_trips_every_key(attributes: dict[str, Any]) -> None:
    assert flatten(nest(attributes, max_chars=10_000)) == attributes


@FAST
@given(attributes=attribute_maps)
def test_attribute_json_round_trips_every_key(attributes: dict[str, Any]) -> None:
    encoded = attributes_json(attributes, max_chars=10_000)
    assert flatten(orjson.loads(encoded)) == attributes


@FAST
@given(attributes=attribute_maps, order=st.randoms())
def test_nesting_does_not_depend_on_key_order(attributes: dict[str, Any], order: Any) -> None:
    items = list(attributes.items())
    order.shuffle(items)
    assert orjson.loads(attributes_json(dict(items), max_chars=10_000)) == orjson.loads(
        attributes_json(attributes, max_chars=10_000)
    )


@FAST
@given(attributes=st.dictionaries(keys, st.text(min_size=0, max_size=60), max_size=6))
def test_capping_keeps_every_key_and_marks_the_cut(attributes: dict[str, Any]) -> None:
    flat = flatten(orjson.loads(attributes_json(attributes, max_chars=10)))
    assert set(flat) == set(attributes)
    for key, value in attributes.items():
        if len(value) > 10:
            assert flat[key] == value[:10] + f"…[truncated {len(value) - 10} chars]"
        else:
            assert flat[key] == value


def test_leaf_and_prefix_are_both_stored_and_queryable(tmp_path: Path) -> None:
    db = tmp_path / "t.duckdb"
    processor = DuckDBSpanProcessor(db)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    with provider.get_tracer("t").start_as_current_span("s") as span:
        span.set_attribute("a.b", 2)
        span.set_attribute("a", 1)
        span.set_attribute("a.b.c", "deep")
        span.set_attribute("x.", "trailing dot")
        span.set_attribute("x", "plain")
    assert processor.force_flush()
    provider.shutdown()
    conn = duckdb.connect(str(db), read_only=True)
    try:
        (raw,) = conn.execute("SELECT attributes FROM spans").fetchone()
        assert flatten(json.loads(raw)) == {
            "a": 1,
            "a.b": 2,
            "a.b.c": "deep",
            "x.": "trailing dot",
            "x": "plain",
        }
        deep = conn.execute("SELECT json_extract_string(attributes, '$.a.b.c') FROM spans")
        assert deep.fetchone() == ("deep",)
    finally:
        conn.close()
