"""TraceStore.stats and parse_since: the statistics the CLI and the dashboard share."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from flock.tracing.query import StatsPoint, TraceStore, parse_since
from tests.tracing.stored import new_span_id, new_trace_id, span, write_spans

MS = 1_000_000
MINUTE = 60 * 10**9
T0 = 28_333_333 * MINUTE  # Nov 2023, on a whole minute


def workflow(name: str, start: int, ms: int, *, fail: bool = False) -> list[ReadableSpan]:
    """A root span with one child; the child fails when ``fail``."""
    trace_id, root_id = new_trace_id(), new_span_id()
    return [
        span(name, trace_id=trace_id, span_id=root_id, start_ns=start, duration_ns=ms * MS),
        span(
            "Agent.execute",
            trace_id=trace_id,
            parent_id=root_id,
            start_ns=start + MS,
            duration_ns=(ms - 2) * MS,
            error="boom" if fail else None,
        ),
    ]


def quantile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (DuckDB's quantile_cont)."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@pytest.fixture
def store(tmp_path: Path) -> TraceStore:
    spans: list[ReadableSpan] = []
    # 20 pizza runs in minute 0 and 1: 10, 20, ..., 200 ms; runs 3 and 7 fail
    for i in range(20):
        spans += workflow(
            "pizza_workflow", T0 + (i // 10) * MINUTE + i * MS, 10 * (i + 1), fail=i in (3, 7)
        )
    # 2 batch runs in minute 5
    for i in range(2):
        spans += workflow("batch_job", T0 + 5 * MINUTE + i * MS, 1000)
    write_spans(tmp_path / "t.duckdb", spans)
    return TraceStore(tmp_path / "t.duckdb")


def test_stats_per_workflow(store: TraceStore) -> None:
    pizza, batch = store.stats(by="workflow")  # largest total time first
    durations = [10.0 * (i + 1) for i in range(20)]
    assert (pizza.name, pizza.count, pizza.errors, pizza.error_rate) == (
        "pizza_workflow",
        20,
        2,
        0.1,
    )
    assert pizza.p50_ms == pytest.approx(quantile(durations, 0.5))
    assert pizza.p95_ms == pytest.approx(quantile(durations, 0.95))
    assert pizza.p99_ms == pytest.approx(quantile(durations, 0.99))
    assert pizza.mean_ms == pytest.approx(105.0)
    assert pizza.max_ms == pytest.approx(200.0)
    assert pizza.total_ms == pytest.approx(2100.0)
    assert pizza.last_start_time == T0 + MINUTE + 19 * MS
    assert (batch.name, batch.count, batch.errors, batch.p50_ms) == ("batch_job", 2, 0, 1000.0)
    assert pizza.series == ()


def test_stats_per_span_name(store: TraceStore) -> None:
    rows = {r.name: r for r in store.stats(by="span")}
    assert set(rows) == {"pizza_workflow", "batch_job", "Agent.execute"}
    agent = rows["Agent.execute"]
    assert (agent.count, agent.errors) == (22, 2)
    assert agent.error_rate == pytest.approx(2 / 22)
    assert agent.max_ms == pytest.approx(998.0)
    # a workflow's root span is one run, without its children's errors
    assert rows["pizza_workflow"].errors == 0


def test_stats_filters(store: TraceStore) -> None:
    assert [r.name for r in store.stats(name="PIZZA")] == ["pizza_workflow"]
    late = store.stats(since_ns=T0 + MINUTE)
    assert [(r.name, r.count) for r in late] == [("batch_job", 2), ("pizza_workflow", 10)]
    rows = store.stats(since_ns=T0 + MINUTE, until_ns=T0 + 2 * MINUTE)
    assert [(r.name, r.count, r.errors) for r in rows] == [("pizza_workflow", 10, 0)]
    assert len(store.stats(by="span", limit=1)) == 1


def test_stats_series_buckets(store: TraceStore) -> None:
    pizza, batch = store.stats(bucket_ns=MINUTE)
    first, second = pizza.series
    assert isinstance(first, StatsPoint)
    assert (first.start_time, first.count, first.errors) == (T0, 10, 2)
    assert first.p50_ms == pytest.approx(quantile([10.0 * (i + 1) for i in range(10)], 0.5))
    assert (second.start_time, second.count, second.errors) == (T0 + MINUTE, 10, 0)
    assert [(p.start_time, p.count) for p in batch.series] == [(T0 + 5 * MINUTE, 2)]


def test_stats_rejects_bad_arguments(store: TraceStore) -> None:
    with pytest.raises(ValueError, match="by must be"):
        store.stats(by="agent")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bucket_ns"):
        store.stats(bucket_ns=0)


def test_parse_since() -> None:
    now = T0
    assert parse_since("10m", now_ns=now) == now - 10 * MINUTE
    assert parse_since("2h", now_ns=now) == now - 120 * MINUTE
    assert parse_since("1d", now_ns=now) == now - 24 * 60 * MINUTE
    assert parse_since("1w", now_ns=now) == now - 7 * 24 * 60 * MINUTE
    assert parse_since("1.5 s", now_ns=now) == now - 1_500_000_000
    assert parse_since("2023-11-14T22:13:20Z") == 1_700_000_000 * 10**9
    assert parse_since("2023-11-14T23:13:20.5+01:00") == 1_700_000_000_500_000_000
    naive = datetime(2024, 1, 2, 3, 4, 5)
    assert parse_since("2024-01-02T03:04:05") == int(naive.astimezone().timestamp()) * 10**9
    assert parse_since("2024-01-02") == int(datetime(2024, 1, 2).astimezone().timestamp()) * 10**9
    assert datetime.fromtimestamp(parse_since("1d") / 1e9, UTC) < datetime.now(UTC)
    with pytest.raises(ValueError, match="not a time: use a duration like 10m"):
        parse_since("yesterday")


def test_a_running_trace_is_named_alike_in_the_list_and_the_stats(tmp_path: Path) -> None:
    # No root span yet (it ends last): both name the trace after its earliest span.
    trace_id, missing_root = new_trace_id(), new_span_id()
    spans = [
        span(name, trace_id=trace_id, parent_id=missing_root, start_ns=T0 + i * MS, duration_ns=MS)
        for i, name in enumerate(["Flock.publish", "Agent.execute"])
    ]
    write_spans(tmp_path / "t.duckdb", spans)
    store = TraceStore(tmp_path / "t.duckdb")
    (listed,) = store.search_traces().items
    (stat,) = store.stats(by="workflow")
    assert listed.name == stat.name == "Flock.publish"
