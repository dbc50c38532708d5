"""Checking what is stored: what publish() takes (a model instance or a ``{"type",
"payload"}`` dict, :func:`publishable`) and an agent's outputs (:func:`checked_output`).

A Pydantic instance was validated when it was built, but it may have been changed since (no
``validate_assignment``) or built with ``model_construct``; storing it as it is would keep a
value that does not fit its field (and the PostgreSQL store could not load it back). Validating
it again with its own model would run its validators a second time on values they already
produced: a validator that hashes, converts units or reshapes its input changes valid data,
or refuses it. So the check validates the instance's field values against a *check model*: the
same fields (types, constraints, defaults, aliases) and configuration, without the model's
validators (at the top of each field: one nested in ``list[Annotated[...]]`` still runs,
which only matters to the verdict), and the values are stored as they are: no check changes
data.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

from pydantic import BaseModel, ConfigDict, RootModel, ValidationError, create_model
from pydantic.functional_validators import (
    AfterValidator,
    BeforeValidator,
    PlainValidator,
    WrapValidator,
)

from flock._errors import safe_repr
from flock.exceptions import PayloadValidationError, RegistryError
from flock.registry import registry

__all__ = ["checked", "checked_output", "publishable"]

_VALIDATORS = (AfterValidator, BeforeValidator, PlainValidator, WrapValidator)
_CHECK_MODELS: weakref.WeakKeyDictionary[type[BaseModel], type[BaseModel] | None] = (
    weakref.WeakKeyDictionary()
)


def checked(obj: BaseModel, *, copy: bool = True) -> BaseModel:
    """``obj`` (a shallow copy of it with ``copy``, as ``model_copy`` makes) once its field
    values are found to fit their fields. Its values are stored as they are: a check never
    changes them.

    The values are validated against the check model. One it refuses is validated with the
    model itself before the instance is refused (the check model cannot stand in for every
    model: ``typing.Self`` names the check model there, say), so an instance is refused only
    when both refuse it; a model the check model cannot be built for is trusted as pydantic
    trusts an instance.

    Raises:
        pydantic.ValidationError: a value does not fit (the instance was changed after it
            was validated, or built with ``model_construct``).
    """
    cls = type(obj)
    check = _check_model(cls)
    if check is not None:
        values = obj.__dict__  # only read
        if obj.__pydantic_extra__:
            values = {**values, **obj.__pydantic_extra__}
        try:
            check.__pydantic_validator__.validate_python(values, by_name=True)
        except ValidationError as refused:
            try:
                cls.model_validate(values, by_name=True)
            except ValidationError:
                raise  # the model's own words
            except Exception:  # its validators cannot take their own output again
                raise refused from None
        except Exception:  # a check model that cannot run (a reference it cannot resolve)
            _CHECK_MODELS[cls] = None
    return _shallow_copy(obj) if copy else obj


def _shallow_copy(obj: BaseModel) -> BaseModel:
    """What ``obj.model_copy()`` returns, built as pydantic's ``__copy__`` builds it, in
    half the time (it is on the path of every publish)."""
    if isinstance(obj, RootModel):
        return obj.__copy__()  # its own: it has no extra or private slots to set
    cls = type(obj)
    copied = cls.__new__(cls)
    extra, private = obj.__pydantic_extra__, obj.__pydantic_private__
    object.__setattr__(copied, "__dict__", obj.__dict__.copy())
    object.__setattr__(copied, "__pydantic_fields_set__", obj.__pydantic_fields_set__.copy())
    object.__setattr__(copied, "__pydantic_extra__", None if extra is None else extra.copy())
    object.__setattr__(copied, "__pydantic_private__", None if private is None else private.copy())
    return copied


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
                f"a dict needs a 'type' key naming a registered type, got keys {safe_repr(list(obj))}; "
                "publish {'type': 'Idea', 'payload': {...}} or a model instance"
            )
        type_name = obj["type"]
        if not isinstance(type_name, str):
            raise PayloadValidationError(f"'type' must be a string, got {safe_repr(type_name)}")
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
        f"dict, got {type(obj).__name__}: {safe_repr(obj)}"
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


def _check_model(cls: type[BaseModel]) -> type[BaseModel] | None:
    """The check model of ``cls``: its fields (types, constraints, defaults, aliases) and
    config, without its validators; None if it cannot be built (then the instance is
    trusted: a type only a ``PlainValidator`` defines has no schema without it, say)."""
    try:
        return _CHECK_MODELS[cls]
    except KeyError:
        pass
    fields: dict[str, Any] = {}
    for name, info in cls.model_fields.items():
        info = copy.copy(info)
        info.metadata = [m for m in info.metadata if not isinstance(m, _VALIDATORS)]
        fields[name] = (info.annotation, info)
    config = ConfigDict(**{**cls.model_config, "title": cls.__name__})
    check: type[BaseModel] | None
    try:
        check = create_model(cls.__name__, __config__=config, __module__=cls.__module__, **fields)
    except Exception:
        check = None
    _CHECK_MODELS[cls] = check
    return check
