"""The JSON shapes of the dashboard API (Pydantic, so they appear in the OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from flock.dashboard._text import scrub

__all__ = [
    "AgentOut",
    "ArtifactOut",
    "ArtifactPage",
    "BlackboardOut",
    "ClearRequest",
    "ClearResult",
    "CorrelationDetail",
    "CorrelationOut",
    "CorrelationPage",
    "InfoOut",
    "NameCount",
    "PublishRequest",
    "SpanDetailOut",
    "StatsOut",
    "StatsPointOut",
    "StatsRow",
    "TimelineOut",
    "TimelineSpanOut",
    "TraceOut",
    "TracePageOut",
    "TypeOut",
]


class _Scrubbed(BaseModel):
    """A model of data from the live blackboard (artifacts, agents, types), which Python code
    may have filled with strings UTF-8 cannot encode: lone surrogates are replaced by U+FFFD
    as it is built, so the response (and a live message) always serializes."""

    @model_validator(mode="before")
    @classmethod
    def _scrub(cls, data: Any) -> Any:
        return scrub(data)


class InfoOut(BaseModel):
    """What this dashboard serves."""

    db_path: str
    read_only: bool = Field(description="clearing traces and publishing are disabled")
    flock: bool = Field(description="a live Flock is attached (blackboard view, publishing)")
    spans: int = Field(description="spans in the trace file")
    version: str


class WriterOut(BaseModel):
    """A trace writer of this process (spans finished here, or received over OTLP)."""

    pending: int = Field(description="spans queued or being written, not yet in the file")
    written: int
    dropped: int = Field(description="spans lost: over the queue bound, or unencodable")
    last_error: str | None = Field(description="why the last write failed, if it did")


class HealthOut(BaseModel):
    """``ok`` (HTTP 200), or ``degraded`` (HTTP 503) with the reasons in ``problems``."""

    status: Literal["ok", "degraded"]
    problems: list[str]
    writers: list[WriterOut]


class TraceOut(BaseModel):
    trace_id: str
    name: str = Field(description="the root span's name (the workflow name of a traced_run)")
    span_count: int
    start_time: int = Field(description="ns since the epoch")
    end_time: int
    duration_ms: float
    errors: int = Field(description="spans with ERROR status")
    in_progress: bool = Field(description="the root span is not written yet")
    stale: bool = Field(
        default=False,
        description="in progress, but no span ended for a long time (its writer may have died)",
    )


class TracePageOut(BaseModel):
    items: list[TraceOut]
    total: int = Field(description="traces matching the filters, over all pages")
    limit: int
    offset: int


class NameCount(BaseModel):
    name: str
    count: int


class TimelineSpanOut(BaseModel):
    span_id: str
    parent_id: str | None
    name: str
    start_time: int
    end_time: int
    duration_ms: float
    status_code: str
    depth: int = Field(description="0 for roots")
    children: int
    critical: bool = Field(description="on the critical path")


class TimelineOut(BaseModel):
    trace_id: str
    name: str
    in_progress: bool = Field(description="the root span is not written yet")
    stale: bool = Field(description="in progress, but no span ended for a long time")
    start_time: int
    end_time: int
    span_count: int = Field(description="spans in the whole trace (pages hold `limit`)")
    errors: int
    offset: int
    limit: int
    spans: list[TimelineSpanOut] = Field(description="depth-first order, siblings by start")


class SpanDetailOut(BaseModel):
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    service: str | None
    kind: str | None
    start_time: int
    end_time: int
    duration_ms: float
    status_code: str
    status_description: str | None
    attributes: dict[str, Any]
    events: list[Any] = Field(description="e.g. exceptions with their stack trace")
    links: list[Any] = Field(description="span links (e.g. to the span that published an input)")
    resource: dict[str, Any]


class StatsPointOut(BaseModel):
    start_time: int
    count: int
    errors: int
    p50_ms: float
    p95_ms: float


class StatsRow(BaseModel):
    name: str
    count: int
    errors: int
    error_rate: float
    mean_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    total_ms: float
    last_start_time: int
    series: list[StatsPointOut]


class StatsOut(BaseModel):
    by: Literal["workflow", "span"]
    bucket_ns: int | None = Field(description="width of the series buckets")
    rows: list[StatsRow]


class ArtifactOut(_Scrubbed):
    id: str
    type: str
    payload: dict[str, Any]
    produced_by: str
    correlation_id: str
    tags: list[str]
    created_at: str
    traceparent: str | None
    visibility: dict[str, Any] = Field(
        default_factory=lambda: {"kind": "Public"},
        description="which agents may see it: {'kind': 'Public'|'Private'|'Labelled'|'Tenant', ...}",
    )


class ArtifactPage(BaseModel):
    items: list[ArtifactOut]
    total: int
    limit: int
    offset: int


class CorrelationOut(BaseModel):
    correlation_id: str
    runs: int = Field(description="agent runs (Agent.execute spans)")
    errors: int
    agents: list[str]
    trace_ids: list[str]
    start_time: int
    end_time: int
    artifacts: int | None = Field(description="artifacts on the live blackboard, if attached")


class CorrelationPage(BaseModel):
    items: list[CorrelationOut]
    total: int
    limit: int
    offset: int


class CorrelationDetail(BaseModel):
    correlation: CorrelationOut | None
    traces: list[TraceOut]
    artifacts: list[ArtifactOut]


class AgentOut(_Scrubbed):
    name: str
    description: str | None
    consumes: list[str]
    publishes: list[str]


class TypeOut(_Scrubbed):
    name: str
    json_schema: dict[str, Any] = Field(description="the Pydantic JSON schema of the type")


class BlackboardOut(_Scrubbed):
    agents: list[AgentOut]
    types: list[str]


class PublishRequest(BaseModel):
    """Publish one artifact of a registered type onto the live blackboard."""

    type: str = Field(min_length=1, examples=["PizzaIdea"])
    payload: dict[str, Any] = Field(examples=[{"topic": "four cheeses"}])
    correlation_id: str | None = Field(default=None, min_length=1, max_length=200)
    tags: list[str] = Field(default_factory=list, max_length=50)


class ClearRequest(BaseModel):
    """Deleting spans needs an explicit confirmation."""

    confirm: Literal[True]
    older_than: str | None = Field(
        default=None,
        max_length=64,
        description="only whole traces that ended before: `7d`, `12h` (that long ago) or an "
        "ISO time; every span without it",
    )


class ClearResult(BaseModel):
    success: bool
    deleted_count: int
    error: str | None
