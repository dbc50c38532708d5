"""Checking a model instance before it is stored (published, or returned by an agent).

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

from pydantic import BaseModel, ConfigDict, create_model
from pydantic.functional_validators import (
    AfterValidator,
    BeforeValidator,
    PlainValidator,
    WrapValidator,
)

__all__ = ["checked"]

_VALIDATORS = (AfterValidator, BeforeValidator, PlainValidator, WrapValidator)
_CHECK_MODELS: weakref.WeakKeyDictionary[type[BaseModel], type[BaseModel]] = (
    weakref.WeakKeyDictionary()
)


def checked(obj: BaseModel) -> BaseModel:
    """A copy of ``obj`` whose field values fit their declared types and constraints.

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
    # As BaseModel.model_copy builds its copy (model_construct would cost twice the check).
    payload = cls.__new__(cls)
    extra, private = validated.__pydantic_extra__, obj.__pydantic_private__
    object.__setattr__(payload, "__dict__", validated.__dict__)
    object.__setattr__(payload, "__pydantic_fields_set__", set(obj.__pydantic_fields_set__))
    object.__setattr__(payload, "__pydantic_extra__", None if extra is None else dict(extra))
    object.__setattr__(payload, "__pydantic_private__", None if private is None else dict(private))
    return payload


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
