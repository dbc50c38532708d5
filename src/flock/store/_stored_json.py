"""A payload as the PostgreSQL store keeps it: JSON text by field name that loads back equal.

Fields a dump leaves out (``Field(exclude=True)``, ``exclude_if``) are stored too, as the
memory store keeps them; computed fields are not (they are computed again). A payload that
would not load back equal is refused with the fields named.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError, SchemaSerializer, core_schema, to_json

from flock.artifacts import Artifact
from flock.exceptions import PayloadValidationError

__all__ = ["stored_json"]


def stored_json(a: Artifact) -> str:
    """The payload as stored (JSON text, by field name), refused unless it loads back equal.

    Fields a dump leaves out (``Field(exclude=True)``, ``exclude_if``) are stored too, as the
    memory store keeps them; computed fields are not (they are computed again). Refused, with
    the fields named: NaN and infinity (JSON has no such numbers: they would come back as
    null), a custom serializer whose output does not validate back to the same value, a value
    of a subclass of its field's type, or one JSON turns into another type; and NUL
    characters, which PostgreSQL's JSON cannot hold. Private attributes are not stored.
    """
    payload = a.payload
    problem = ""
    differs: BaseModel | None = None  # what came back different (fields named at the end)
    for dump in (_dump, _dump_keeping_excluded):
        try:
            text = dump(payload)
        except PydanticSerializationError as exc:
            if dump is _dump:
                raise PayloadValidationError(
                    f"{a.type} payload cannot be written as JSON; nothing was stored: {exc}"
                ) from exc
            problem = f"the fields its dump leaves out could not be written on their own: {exc}"
            differs = None
            break
        if text is None:  # nothing was left out: the same text again
            break
        if "\\u0000" in text:
            raise PayloadValidationError(
                f"{a.type} payload contains a NUL character (\\u0000), which PostgreSQL "
                "cannot store; nothing was stored"
            )
        try:
            loaded = type(payload).model_validate_json(text, by_name=True)
        except ValidationError as exc:
            problem = _invalid(payload, exc)
            continue
        if _same_values(payload, loaded):
            return text
        differs = loaded
    if differs is not None:
        problem = _changed(payload, _changed_fields(payload, differs))
    raise PayloadValidationError(
        f"{a.type} payload would not load back from JSON as it is; nothing was stored: {problem}"
    )


def _dump(payload: BaseModel) -> str:
    """The payload as JSON the way its model dumps it (by field name, no computed fields)."""
    return payload.model_dump_json(by_alias=False, exclude_computed_fields=True)


def _dump_keeping_excluded(payload: BaseModel) -> str | None:
    """The payload as JSON with the fields its model's dump leaves out put back (at any
    depth); ``None`` if there were none. Pydantic has no option that overrides
    ``Field(exclude=True)``, and a model's serializer is reused for the models nested in it,
    so the missing fields are dumped one by one, each with its own field's serializer."""
    data = type(payload).__pydantic_serializer__.to_python(
        payload, mode="json", by_alias=False, exclude_computed_fields=True
    )
    kept: list[str] = []
    data = _put_back_excluded(payload, data, kept)
    if not kept:
        return None
    return to_json(data, inf_nan_mode="null").decode()


def _put_back_excluded(value: Any, data: Any, kept: list[str]) -> Any:
    """``data`` (``value`` dumped in JSON mode) with the fields the dump left out of the
    models in it put back; their names are appended to ``kept``."""
    if isinstance(value, BaseModel) or _is_pydantic_dataclass(value):
        cls: Any = type(value)
        if not isinstance(data, dict) or cls.__pydantic_decorators__.model_serializers:
            return data  # a custom model serializer decides the shape: left as it is
        fields = cls.model_fields if isinstance(value, BaseModel) else cls.__pydantic_fields__
        for name in fields:
            if not hasattr(value, name):
                continue
            field_value = getattr(value, name)
            if name in data:
                data[name] = _put_back_excluded(field_value, data[name], kept)
            else:
                dumped = _field_serializer(cls, name).to_python(
                    field_value, mode="json", by_alias=False, exclude_computed_fields=True
                )
                data[name] = _put_back_excluded(field_value, dumped, kept)
                kept.append(name)
        extra = getattr(value, "__pydantic_extra__", None) or {}
        for key, item in extra.items():
            if key in data:
                data[key] = _put_back_excluded(item, data[key], kept)
        return data
    if isinstance(value, (list, tuple)) and isinstance(data, list) and len(value) == len(data):
        return [_put_back_excluded(v, d, kept) for v, d in zip(value, data, strict=True)]
    if isinstance(value, dict) and isinstance(data, dict):
        for key, item in value.items():
            if isinstance(key, str) and key in data:
                data[key] = _put_back_excluded(item, data[key], kept)
    return data


def _is_pydantic_dataclass(value: Any) -> bool:
    return (
        dataclasses.is_dataclass(value)
        and not isinstance(value, type)
        and hasattr(type(value), "__pydantic_fields__")
    )


@functools.lru_cache(maxsize=1024)
def _field_serializer(cls: Any, name: str) -> SchemaSerializer:
    """The serializer of field ``name`` of the model (or Pydantic dataclass) ``cls``, from its
    core schema (the field's own type, serializers and the model's config); by inference if
    the schema is not one this understands."""
    schema: Any = cls.__pydantic_core_schema__
    definitions: list[Any] = []
    if schema.get("type") == "definitions":
        definitions = schema["definitions"]
        schema = schema["schema"]
    refs = {d.get("ref"): d for d in definitions}
    config = None
    for _ in range(100):  # down through validators and references to the fields
        kind = schema.get("type")
        if kind == "definition-ref":
            schema = refs.get(schema.get("schema_ref"), {})
            continue
        if kind in ("model", "dataclass") and schema.get("cls") is cls:
            config = schema.get("config")
        if kind == "model-fields":
            field = schema["fields"].get(name)
            break
        if kind == "dataclass-args":
            field = next((f for f in schema["fields"] if f.get("name") == name), None)
            break
        if not isinstance(schema.get("schema"), dict):
            field = None
            break
        schema = schema["schema"]
    else:  # pragma: no cover - no core schema is this deep
        field = None
    if field is None:
        return SchemaSerializer(core_schema.any_schema())
    field_schema = field["schema"]
    if definitions:
        field_schema = core_schema.definitions_schema(field_schema, definitions)
    return SchemaSerializer(field_schema, config)


def _same_values(payload: BaseModel, loaded: BaseModel) -> bool:
    """Whether ``loaded`` has every field and extra field as ``payload`` has it (private
    attributes do not count): at once in the usual case, else compared value by value."""
    if (
        payload.__dict__ == loaded.__dict__
        and payload.__pydantic_extra__ == loaded.__pydantic_extra__
    ):
        return True  # (a nested model compares its private attributes too: then the long way)
    return not _changed_fields(payload, loaded)


def _changed_fields(payload: BaseModel, loaded: BaseModel) -> list[str]:
    """The fields (and extra fields) whose value ``loaded`` does not have as ``payload`` has
    it; private attributes do not count."""
    names = [
        name
        for name in type(payload).model_fields
        if not _same(payload.__dict__.get(name), loaded.__dict__.get(name))
    ]
    extra, loaded_extra = payload.__pydantic_extra__ or {}, loaded.__pydantic_extra__ or {}
    names += [
        key
        for key in {**extra, **loaded_extra}
        if key not in extra or key not in loaded_extra or not _same(extra[key], loaded_extra[key])
    ]
    return names


def _same(a: Any, b: Any) -> bool:
    """``a`` and ``b`` are the same value of the same types, at any depth (NaN never is)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, BaseModel) or _is_pydantic_dataclass(a):
        fields = type(a).model_fields if isinstance(a, BaseModel) else type(a).__pydantic_fields__
        return all(_same(getattr(a, n, None), getattr(b, n, None)) for n in fields) and _same(
            getattr(a, "__pydantic_extra__", None) or {},
            getattr(b, "__pydantic_extra__", None) or {},
        )
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(_same, a, b))
    try:
        return bool(a == b)
    except Exception:
        return False


def _non_finite(value: Any) -> bool:
    """``value`` is or holds a NaN or infinite float."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, BaseModel):
        return any(map(_non_finite, value.__dict__.values())) or _non_finite(
            value.__pydantic_extra__ or {}
        )
    if isinstance(value, dict):
        return any(map(_non_finite, value.values()))
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(map(_non_finite, value))
    return False


def _field_value(payload: BaseModel, name: str) -> Any:
    if name in payload.__dict__:
        return payload.__dict__[name]
    return (payload.__pydantic_extra__ or {}).get(name)


def _problem(payload: BaseModel, names: Sequence[str], what: str) -> str:
    """Which fields ``what`` (e.g. "would come back different"), and the likely cause."""
    names = list(dict.fromkeys(names))
    nan = [n for n in names if _non_finite(_field_value(payload, n))]
    others = [n for n in names if n not in nan]
    text = f"field(s) {', '.join(repr(n) for n in names)} {what}"
    if nan:
        text += (
            f" ({', '.join(repr(n) for n in nan)}: NaN and infinity, which JSON has no"
            " number for, become null)"
        )
    if others:
        text += (
            f" ({', '.join(repr(n) for n in others)}: a custom serializer whose output does"
            " not validate back to the same value? an instance of a subclass of the field's"
            " type? a value JSON turns into another type, such as a tuple in an Any field?)"
        )
    return text


def _invalid(payload: BaseModel, exc: ValidationError) -> str:
    names = [str(e["loc"][0]) for e in exc.errors() if e["loc"]]
    return f"{_problem(payload, names, 'would not validate')}:\n{exc}"


def _changed(payload: BaseModel, names: Sequence[str]) -> str:
    return _problem(payload, names, "would come back different")
