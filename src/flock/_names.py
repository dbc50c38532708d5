"""The one rule for the names the API takes: tags, correlation ids, agent names in
subscriptions and visibility, tenants. A name is a string with something besides whitespace
and without NUL (which PostgreSQL's text cannot hold, and no terminal shows). Also the rule
for the counts it takes (:func:`checked_count`): an int, never a bool."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeGuard

from flock.exceptions import ConfigurationError

__all__ = ["checked_correlation_id", "checked_count", "checked_tags", "is_name", "name_set"]


def is_name(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a name: a string, not blank, without NUL."""
    return isinstance(value, str) and bool(value.strip()) and "\x00" not in value


def checked_correlation_id(value: object) -> str | None:
    """``correlation_id=`` of publish and invoke (``None``: a new one per call)."""
    if value is None or is_name(value):
        return value
    raise ConfigurationError(
        f"correlation_id must be a non-blank string without NUL, got {value!r}"
    )


def checked_count(value: object, name: str, minimum: int = 1) -> int:
    """``value`` if it is an int ≥ ``minimum``, else a :class:`ConfigurationError` naming
    ``name``; a bool is refused (``True`` is not a count of 1)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return value
    raise ConfigurationError(f"{name} must be an int ≥ {minimum}, got {value!r}")


def checked_tags(tags: Iterable[str] | None) -> frozenset[str]:
    """``tags=`` of publish, as a set."""
    return frozenset() if tags is None else name_set(tags, "tags", "[{!r}]")


def name_set(values: object, where: str, example: str = "{{{!r}}}") -> frozenset[str]:
    """``values`` as a set of names, or a :class:`ConfigurationError` about ``where``;
    ``example`` shows a single string given instead, as a collection."""
    if isinstance(values, bytes):
        raise ConfigurationError(f"{where} takes a collection of names (strings), got {values!r}")
    if isinstance(values, str):
        raise ConfigurationError(
            f"{where} takes a collection of names, not a single string: write "
            + example.format(values)
        )
    if not isinstance(values, Iterable):
        raise ConfigurationError(f"{where} takes a collection of names, got {values!r}")
    try:
        names = frozenset(values)
    except TypeError:  # unhashable items
        raise ConfigurationError(f"{where}: every name must be a string, got {values!r}") from None
    for name in names:
        if not is_name(name):
            raise ConfigurationError(
                f"{where}: every name must be a non-blank string without NUL, got {name!r}"
            )
    return names
