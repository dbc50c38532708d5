"""Checking what is stored: what publish() takes (a model instance or a ``{"type",
"payload"}`` dict, :func:`publishable`) and an agent's outputs (:func:`checked_output`).

A Pydantic instance was validated when it was built, but it may have been changed since (no
``validate_assignment``) or built with ``model_construct``; storing it as it is would keep a
value that does not fit its field (and the PostgreSQL store could not load it back). Validating
it again with its own model would run its validators a second time on values they already
produced: a validator that hashes, converts units or reshapes its input changes valid data,
or refuses it. So the check validates the instance's field values against a *check model*: the
same fields (types, constraints, defaults, aliases) and configuration, without the model's
validators, and the stored instance is built from the checked values, so that no validator of
the user's runs twice.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.functional_validators import (
    AfterValidator,
    BeforeValidator,
    PlainValidator,
    WrapValidator,
)

from flock.exceptions import PayloadValidationError, RegistryError
from flock.registry import registry

__all__ = ["checked", "checked_output", "publishable"]

_VALIDATORS = (AfterValidator, BeforeValidator, PlainValidator, WrapValidator)
_CHECK_MODELS: weakref.WeakKeyDictionary[type[BaseModel], type[BaseModel]] = (
    weakref.WeakKeyDictionary()
)


def checked(obj: BaseModel, *, copy: bool = True) -> BaseModel:
    """A copy of ``obj`` whose field values fit their declared types and constraints
    (``copy=False``: ``obj`` itself when the check changed no value).

    Raises:
        pydantic.ValidationError: a value does not (the instance was changed after it was
            validated, or built with ``model_construct``).
    """
    cls = type(obj)
    values = obj.__dict__  # only read
    if obj.__pydantic_extra__:
        values = {**values, **obj.__pydantic_extra__}
    validator = _check_model(cls).__pydantic_validator__
    validated = validator.validate_python(values, strict=False, by_name=True)
    unchanged = validated.__dict__ == obj.__dict__
    if not copy and unchanged and validated.__pydantic_extra__ == obj.__pydantic_extra__:
        return obj
    # As BaseModel.model_copy builds its copy (model_construct would cost twice the check).
    payload = cls.__new__(cls)
    extra, private = validated.__pydantic_extra__, obj.__pydantic_private__
    object.__setattr__(payload, "__dict__", validated.__dict__)
    object.__setattr__(payload, "__pydantic_fields_set__", set(obj.__pydantic_fields_set__))
    object.__setattr__(payload, "__pydantic_extra__", None if extra is None else dict(extra))
    object.__setattr__(payload, "__pydantic_private__", None if private is None else dict(private))
    return payload


def publishable(obj: Any) -> tuple[str, BaseModel]:
    """(type name, validated model) for a publishable object, or a clear error."""
    if isinstance(obj, BaseModel):
        model_cls = type(obj)
        if not registry.is_registered(model_cls):
            raise RegistryError(
                f"{model_cls.__qualname__} is not a registered flock type; decorate it with "
                "@flock_type or declare it in an agent's consumes()/publishes()"
            )
        try:
            payload = checked(obj)
        except ValidationError as exc:
            raise PayloadValidationError(
                f"{model_cls.__qualname__} payload is invalid; nothing was stored:\n{exc}"
            ) from exc
        return registry.name_of(model_cls), payload
    if isinstance(obj, dict):
        if "type" not in obj:
            raise PayloadValidationError(
                f"a dict needs a 'type' key naming a registered type, got keys {sorted(obj)!r}; "
                "publish {'type': 'Idea', 'payload': {...}} or a model instance"
            )
        type_name = obj["type"]
        if not isinstance(type_name, str):
            raise PayloadValidationError(f"'type' must be a string, got {type_name!r}")
        model_cls = registry.resolve(type_name)
        data = obj.get("payload", {k: v for k, v in obj.items() if k != "type"})
        if isinstance(data, BaseModel):  # validated as an instance: its type, checked
            if type(data) is not model_cls:
                raise PayloadValidationError(
                    f"the payload of a {type_name!r} dict is a {type(data).__name__} "
                    f"instance; pass an instance of {model_cls.__name__} or a dict of its "
                    "fields"
                )
            return publishable(data)
        try:
            return registry.name_of(model_cls), model_cls.model_validate(data)
        except ValidationError as exc:
            raise PayloadValidationError(
                f"{type_name} payload is invalid; nothing was stored:\n{exc}"
            ) from exc
    raise PayloadValidationError(
        f"publish() takes a registered Pydantic model instance or a {{'type', 'payload'}} "
        f"dict, got {type(obj).__name__}: {obj!r:.200}"
    )


def checked_output(agent: str, output: BaseModel) -> BaseModel:
    """:func:`checked` for an agent's output (not copied: the run made it and lets it go),
    or a :class:`PayloadValidationError` naming the agent."""
    try:
        return checked(output, copy=False)
    except ValidationError as exc:
        raise PayloadValidationError(
            f"agent {agent!r} returned an invalid {type(output).__qualname__} "
            f"(changed after it was validated, or built with model_construct); nothing "
            f"was published:\n{exc}"
        ) from exc


def _check_model(cls: type[BaseModel]) -> type[BaseModel]:
    check = _CHECK_MODELS.get(cls)
    if check is None:
        fields: dict[str, Any] = {}
        for name, info in cls.model_fields.items():
            info = copy.copy(info)
            info.metadata = [m for m in info.metadata if not isinstance(m, _VALIDATORS)]
            fields[name] = (info.annotation, info)
        config = ConfigDict(**{**cls.model_config, "title": cls.__name__})
        check = create_model(cls.__name__, __config__=config, __module__=cls.__module__, **fields)
        _CHECK_MODELS[cls] = check
    return check
