"""The blackboard routes (only with a live Flock): agents, types, artifacts, publishing."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.types import Message

from flock.dashboard._schemas import (
    AgentOut,
    ArtifactOut,
    ArtifactPage,
    BlackboardOut,
    PublishRequest,
    TypeOut,
)
from flock.dashboard._state import BodyTooLargeError, DashboardState, get_state, read_body
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


class _CappedBodyRoute(APIRoute):
    """A route that reads its body itself, at most the dashboard's ``max_publish_body``
    bytes (:func:`~flock.dashboard._state.read_body`), before FastAPI parses and validates
    it: FastAPI would read a body of any size into memory first. Over the cap: 413, and the
    endpoint does not run."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def capped(request: Request) -> Response:
            limit = get_state(request).max_publish_body
            try:
                body = await read_body(request, limit)
            except BodyTooLargeError:
                raise HTTPException(
                    413,
                    f"the request body is larger than {limit} bytes, the most this dashboard "
                    "takes for publishing an artifact (create_app(max_publish_body=...))",
                ) from None
            replayed = False

            async def receive() -> Message:  # the body read, then the client's messages
                nonlocal replayed
                if replayed:
                    return await request.receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            return await handler(Request(request.scope, receive))

        return capped


router.add_api_route(
    "/artifacts",
    publish,
    methods=["POST"],
    response_model=ArtifactOut,
    status_code=201,
    summary="Publish an artifact",
    responses={
        403: {"description": "read-only dashboard"},
        413: {
            "description": "the body is larger than the dashboard's limit "
            "(`create_app(max_publish_body=...)`, 1 MiB by default): nothing is published"
        },
        422: {
            "description": "invalid payload (or a string holding a lone surrogate): `detail` "
            "lists errors with their field (`loc`)"
        },
    },
    route_class_override=_CappedBodyRoute,
)
