from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import context as otel_context

from flock.testing import SpanCapture


@pytest.fixture(autouse=True)
def _hygiene(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Each test starts with no FLOCK_*/OTEL_* settings, tracing off unless it opts in,
    its own working directory (so .flock/ lands in tmp) and a clean OTel context."""
    for key in list(os.environ):
        if key.startswith(("FLOCK_", "OTEL_")):
            monkeypatch.delenv(key)
    monkeypatch.delenv("DEFAULT_MODEL", raising=False)  # flock-core's, read as a fallback
    monkeypatch.setenv("FLOCK_AUTO_TRACE", "false")
    monkeypatch.setenv("FLOCK_OUTPUT", "off")
    monkeypatch.chdir(tmp_path)
    token = otel_context.attach(otel_context.Context())
    yield
    otel_context.detach(token)


@pytest.fixture
def capture() -> SpanCapture:
    return SpanCapture()
