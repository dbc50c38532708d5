"""The examples in the dashboard's docstrings run."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "flock.dashboard",
        "flock.dashboard.app",
        "flock.dashboard.server",
        "flock.dashboard._security",
        "flock.tracing._waterfall",
        "flock.tracing.otlp_receiver",
    ],
)
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
