"""The public surface is deliberate (a change here is an API change), and the examples in
docstrings run."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from collections.abc import Iterator
from types import ModuleType

import pytest

import flock
from flock.registry import registry

PUBLIC = [
    "Agent",
    "AgentBuilder",
    "AgentComponent",
    "AgentFailures",
    "AgentRunError",
    "Artifact",
    "ConfigurationError",
    "DSPyEngine",
    "Engine",
    "Flock",
    "FlockError",
    "FunctionEngine",
    "LabelledVisibility",
    "MemoryStore",
    "MissingAPIKeyError",
    "OutputUtilityComponent",
    "PayloadValidationError",
    "PrivateVisibility",
    "PublicVisibility",
    "RegistryError",
    "RunContext",
    "RunawayLoopError",
    "Store",
    "TenantVisibility",
    "TracingError",
    "Visibility",
    "__version__",
    "flock_type",
    "only_for",
]


def modules() -> list[ModuleType]:
    found = [flock]
    for info in pkgutil.walk_packages(flock.__path__, "flock."):
        if info.name == "flock.__main__":
            continue
        found.append(importlib.import_module(info.name))
    return found


def test_the_public_names_are_pinned() -> None:
    assert sorted(flock.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(flock, name) is not None
    assert flock.DSPyEngine.__name__ == "DSPyEngine"  # lazily imported


def test_the_seed_imports_work() -> None:
    from flock.orchestrator import Flock
    from flock.registry import flock_type

    assert Flock is flock.Flock and flock_type is flock.flock_type


MODULES = modules()


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_module_declares_all(module: ModuleType) -> None:
    assert isinstance(getattr(module, "__all__", None), list | tuple), module.__name__
    for name in module.__all__:
        assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name!r}"


# Entry points whose docstrings must carry an example (which the test below runs).
MUST_HAVE_EXAMPLES = {
    "flock",
    "flock.agent",
    "flock.orchestrator",
    "flock.registry",
    "flock.testing",
    "flock.dashboard",
    "flock.dashboard.app",
    "flock.dashboard.server",
    "flock.dashboard._security",
    "flock.tracing._waterfall",
    "flock.tracing.otlp_receiver",
}


@pytest.fixture
def isolated_registry() -> Iterator[None]:
    """Types that docstring examples register are forgotten afterwards, so later tests that
    resolve short names (``"Idea"``) do not see them."""
    saved = (
        dict(registry._by_type),
        dict(registry._by_name),
        {short: list(models) for short, models in registry._by_short.items()},
    )
    yield
    registry._by_type, registry._by_name, registry._by_short = saved


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_run(module: ModuleType, isolated_registry: None) -> None:
    result = doctest.testmod(module, verbose=False)
    assert result.failed == 0
    if module.__name__ in MUST_HAVE_EXAMPLES:
        assert result.attempted > 0
