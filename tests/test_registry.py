from __future__ import annotations

import types

import pytest
from pydantic import BaseModel

from flock.exceptions import RegistryError
from flock.registry import TypeRegistry, flock_type, registry


def make_module_class(module: str, name: str = "Idea") -> type[BaseModel]:
    cls = types.new_class(
        name, (BaseModel,), exec_body=lambda ns: ns.update({"__annotations__": {"x": int}})
    )
    cls.__module__ = module
    cls.__qualname__ = name
    return cls


def test_same_class_name_in_two_modules_does_not_collide() -> None:
    reg = TypeRegistry()
    a = make_module_class("app.one")
    b = make_module_class("app.two")
    assert reg.register(a) == "app.one.Idea"
    assert reg.register(b) == "app.two.Idea"
    assert reg.resolve("app.one.Idea") is a
    assert reg.resolve("app.two.Idea") is b
    with pytest.raises(RegistryError, match="ambiguous"):
        reg.resolve("Idea")


def test_subclass_does_not_steal_parent_name() -> None:
    reg = TypeRegistry()
    parent = make_module_class("app.models", "Base")
    reg.register(parent)

    class Child(parent):  # type: ignore[misc, valid-type]
        pass

    assert not reg.is_registered(Child)
    with pytest.raises(RegistryError, match="not a registered flock type"):
        reg.name_of(Child)
    name = reg.register(Child)
    assert name != reg.name_of(parent)
    assert reg.resolve(reg.name_of(parent)) is parent


def test_explicit_name_and_conflicts() -> None:
    reg = TypeRegistry()
    a = make_module_class("m1")
    b = make_module_class("m2")
    assert reg.register(a, name="Thing") == "Thing"
    with pytest.raises(RegistryError, match="already taken"):
        reg.register(b, name="Thing")
    with pytest.raises(RegistryError, match="cannot rename"):
        reg.register(a, name="Other")
    assert reg.register(a) == "Thing"  # idempotent


def test_non_model_is_rejected() -> None:
    with pytest.raises(RegistryError, match="BaseModel subclass"):
        flock_type(int)  # type: ignore[type-var]


def test_unknown_name_lists_known() -> None:
    reg = TypeRegistry()
    with pytest.raises(RegistryError, match="unknown type 'Nope'"):
        reg.resolve("Nope")


def test_decorator_forms() -> None:
    @flock_type
    class Plain(BaseModel):
        v: int

    @flock_type(name="tests.NamedThing")
    class Named(BaseModel):
        v: int

    assert registry.name_of(Plain).endswith("test_decorator_forms.<locals>.Plain")
    assert registry.resolve("tests.NamedThing") is Named
    assert registry.resolve("NamedThing") is Named


def test_redefinition_in_same_module_replaces() -> None:
    reg = TypeRegistry()
    first = make_module_class("__main__", "Again")
    second = make_module_class("__main__", "Again")
    reg.register(first)
    reg.register(second)
    assert reg.resolve("Again") is second
