"""Running a plain function off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["run_sync"]

T = TypeVar("T")


async def run_sync(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a worker thread (``asyncio.to_thread``: the context is
    copied, so spans nest), with a ``StopIteration`` it raises turned into a
    ``RuntimeError``: asyncio cannot set ``StopIteration`` on a future (``TypeError`` in a
    callback), so the await would never return and the run would hang."""

    def call() -> T:
        try:
            return fn(*args, **kwargs)
        except StopIteration as exc:
            name = getattr(fn, "__name__", repr(fn))
            raise RuntimeError(f"{name} raised StopIteration") from exc

    return await asyncio.to_thread(call)
