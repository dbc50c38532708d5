"""Blackboard stores: the :class:`Store` interface and its implementations."""

from flock.store.base import Store
from flock.store.memory import MemoryStore

__all__ = ["MemoryStore", "Store", "store_from_env"]


def store_from_env() -> Store:
    """``FLOCK_STORE_URL=postgresql://…`` gives a :class:`PostgresStore`, else a MemoryStore."""
    import os

    url = os.environ.get("FLOCK_STORE_URL", "").strip()
    if not url:
        return MemoryStore()
    if url.startswith(("postgresql://", "postgres://")):
        from flock.store.postgres import PostgresStore

        return PostgresStore.from_url(url)
    from flock.exceptions import ConfigurationError

    raise ConfigurationError(
        f"FLOCK_STORE_URL={url!r} is not supported; use postgresql://user@host:port/database"
    )
