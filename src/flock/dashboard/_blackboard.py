"""The blackboard routes (only with a live Flock): agents, types, artifacts, publishing."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import ValidationError

from flock.dashboard._schemas import (
    AgentOut,
    ArtifactOut,
    ArtifactPage,
    BlackboardOut,
    PublishRequest,
    TypeOut,
)
from flock.dashboard._state import DashboardState, get_state
from flock.dashboard._text import SafeJSONResponse, find_surrogate
from flock.exceptions import ConfigurationError, FlockError, RegistryError
from flock.registry import registry

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["blackboard"])
State = Annotated[DashboardState, Depends(get_state)]


@router.get("/blackboard", response_model=BlackboardOut, summary="Agents and their types")
async def blackboard(state: State) -> BlackboardOut:
    """Each agent with the types it consumes and publishes (the edges of the graph)."""
    flock = state.require_flock()
    agents = [
        AgentOut(
            name=a.name,
            description=a.description,
            consumes=sorted(a.consumed_types),
            publishes=list(a.published_types),
        )
        for a in flock.agents
    ]
    types = sorted({t for a in agents for t in (*a.consumes, *a.publishes)})
    return BlackboardOut(agents=agents, types=types)


@router.get("/types", response_model=list[TypeOut], summary="Registered artifact types")
async def types(state: State) -> list[TypeOut]:
    """Every registered type with its JSON schema (the publish form is built from it)."""
    state.require_flock()
    return [
        TypeOut(name=name, json_schema=model.model_json_schema())
        for name, model in sorted(registry.types().items())
    ]


@router.get("/artifacts", response_model=ArtifactPage, summary="Artifacts, newest first")
async def artifacts(
    state: State,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    type: Annotated[str | None, Query(max_length=500)] = None,
    correlation_id: Annotated[str | None, Query(max_length=200)] = None,
) -> ArtifactPage:
    flock = state.require_flock()
    try:
        found = await flock.store.query(type=type or None, correlation_id=correlation_id or None)
    except ConfigurationError as exc:  # an unknown type name, say
        raise HTTPException(422, str(exc)) from None
    newest = found[::-1][offset : offset + limit]
    return ArtifactPage(
        items=[ArtifactOut(**a.to_dict()) for a in newest],
        total=len(found),
        limit=limit,
        offset=offset,
    )


def _surrogate_error(body: PublishRequest) -> dict[str, Any] | None:
    """The error for the first field of the request holding a lone surrogate (a ``\\ud800``
    escape in the JSON): UTF-8 cannot encode it, so no one could read the artifact back."""
    loc = find_surrogate(
        {
            "type": body.type,
            "payload": body.payload,
            "correlation_id": body.correlation_id,
            "tags": body.tags,
        }
    )
    if loc is None:
        return None
    return {
        "loc": ["body", *loc],
        "msg": "Input should be a valid string: it holds a lone surrogate (an unpaired "
        "\\ud800-\\udfff escape), which is not Unicode text",
        "type": "string_unicode",
    }


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": ["body", "payload", *e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]


@router.post(
    "/artifacts",
    response_model=ArtifactOut,
    status_code=201,
    summary="Publish an artifact",
    responses={
        403: {"description": "read-only dashboard"},
        422: {
            "description": "invalid payload (or a string holding a lone surrogate): `detail` "
            "lists errors with their field (`loc`)"
        },
    },
)
async def publish(state: State, body: PublishRequest) -> Any:
    """Validate ``payload`` against the registered type and publish it: agents that
    subscribe to it run. Validation errors name the field (``loc``) they belong to."""
    state.require_writable()
    flock = state.require_flock()
    surrogate = _surrogate_error(body)
    if surrogate is not None:
        return SafeJSONResponse(status_code=422, content={"detail": [surrogate]})
    try:
        model = registry.resolve(body.type)
    except RegistryError as exc:
        return SafeJSONResponse(
            status_code=422,
            content={"detail": [{"loc": ["body", "type"], "msg": str(exc), "type": "unknown"}]},
        )
    try:
        payload = model.model_validate(body.payload)
    except ValidationError as exc:
        return SafeJSONResponse(status_code=422, content={"detail": _errors(exc)})
    try:
        artifact = await flock.publish(
            payload, correlation_id=body.correlation_id, tags=body.tags or None
        )
    except FlockError as exc:
        raise HTTPException(422, str(exc)) from None
    data = artifact.to_dict()
    state.hub.mark_seen(artifact.id)
    await state.hub.broadcast({"type": "artifact", "artifact": data})
    return ArtifactOut(**data)
