"""The systems under test, by name: ``ADAPTERS`` maps a name to a factory that takes
``AdapterOptions`` and returns an ``Adapter`` (see ``base.py`` for the interface).

To add a system, one line, here or in any module imported before ``benchmarks.cli.main``
runs::

    ADAPTERS["store"] = make_store_adapter   # def make_store_adapter(options) -> Adapter

The factory must be a module-level function or class (each system runs in its own child
process, which re-imports the factory by ``module:qualname``). It may raise
``UnsupportedBackend`` for a backend it does not run on. Factories import their system
lazily, so that a child process only loads the system it measures (and are named
``make_*``: a package attribute named like a submodule is replaced when that submodule is
imported).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .base import Adapter, AdapterOptions, UnsupportedBackend

AdapterFactory = Callable[[AdapterOptions], Adapter[Any]]


def make_raw(options: AdapterOptions) -> Adapter[Any]:
    if options.backend == "sqlite":
        from .raw_sqlite import RawSqliteAdapter

        return RawSqliteAdapter(options)
    from .raw import RawPgAdapter

    return RawPgAdapter(options)


def make_raw_locked(options: AdapterOptions) -> Adapter[Any]:
    if options.backend == "sqlite":
        from .raw_sqlite import RawLockedSqliteAdapter

        return RawLockedSqliteAdapter(options)
    from .raw_locked import RawLockedPgAdapter

    return RawLockedPgAdapter(options)


def make_naive(options: AdapterOptions) -> Adapter[Any]:
    from .naive import NaiveAdapter
    from .naive_logs import PgEventLog, SqliteEventLog

    log = SqliteEventLog() if options.backend == "sqlite" else PgEventLog()
    return NaiveAdapter(options, log)


def make_agents_sdk(options: AdapterOptions) -> Adapter[Any]:
    from .agents_sdk import AgentsSdkAdapter

    return AgentsSdkAdapter(options)


def make_agents_sdk_turnstore(options: AdapterOptions) -> Adapter[Any]:
    from .agents_turnstore import AgentsTurnstoreAdapter

    return AgentsTurnstoreAdapter(options)


def make_store(options: AdapterOptions) -> Adapter[Any]:
    from .store_adapter import StoreAdapter

    return StoreAdapter(options)


def make_store_end_apart(options: AdapterOptions) -> Adapter[Any]:
    from .store_adapter import StoreEndApartAdapter

    return StoreEndApartAdapter(options)


ADAPTERS: dict[str, AdapterFactory] = {
    "store": make_store,
    "store-end-apart": make_store_end_apart,
    "raw": make_raw,
    "raw-locked": make_raw_locked,
    "naive": make_naive,
    "agents-sdk": make_agents_sdk,
    "agents-sdk-turnstore": make_agents_sdk_turnstore,
}


def factory_ref(factory: AdapterFactory) -> str | None:
    """``module:qualname`` if a child process can import the factory back, else None."""
    module, qualname = getattr(factory, "__module__", None), getattr(factory, "__qualname__", "")
    if not module or "<" in qualname:
        return None
    try:
        return f"{module}:{qualname}" if load_factory(f"{module}:{qualname}") is factory else None
    except (ImportError, AttributeError):
        return None


def load_factory(ref: str) -> AdapterFactory:
    module, _, qualname = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


__all__ = ["ADAPTERS", "AdapterFactory", "UnsupportedBackend", "factory_ref", "load_factory"]
