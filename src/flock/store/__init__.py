"""Blackboard stores: the :class:`Store` interface and its implementations."""

from flock.store.base import Store
from flock.store.memory import MemoryStore

__all__ = ["MemoryStore", "Store"]
