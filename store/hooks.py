"""Hooks into a store's internals, for tests, benchmarks and tools.

An application never needs these: they reach the parts of a ``Store`` that are not its API
(the database backend, the process's identity as a turn owner, its local wake-ups), to
inspect them or to inject faults. They are kept working for the repository's own tests and
benchmarks, not promised to stay as they are.

- ``backend(store)``: the store's ``Backend``. Its reads (``read()``, ``applied_versions()``,
  ``store.checker.check``), its lock keys, and its write methods, which a test may replace
  on the object (``monkeypatch.setattr``) to lose a reply or a request.
- ``claim_decisions(store)``: how many claim decisions the store asked of the database.
- ``owner(store)``, ``pending_wakeups(store)``: its turns' owner name, its wake-ups kept.
- ``use_python_claims(store)``: PostgreSQL's claims by the Python rules, as SQLite's.
- ``core(store)``: what the store hands to ``claim`` and ``turn``.
- ``group_commit(store)``: the backend's batches of writes (``GroupCommit``): its counts,
  ``lingering()``, and ``intercept(wrap)`` to hold batches up or answer them without a
  database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .backends.base import Backend
    from .core import Core
    from .group_commit import GroupCommit
    from .store import Store


def core(store: Store) -> Core:
    """What ``store`` hands to beginning and running turns (``store.core``): a test may
    call the claim's steps (``store.claim``) with it directly."""
    return store._core


def backend(store: Store) -> Backend:
    """The database backend of ``store``."""
    return store._backend


def group_commit(store: Store) -> GroupCommit[Any, Any]:
    """The group commit of ``store``'s backend (every backend batches its writes)."""
    writes = store._backend.group_commit()
    if writes is None:
        raise TypeError(f"the {store._backend.dialect} backend does not batch its writes")
    return writes


def use_python_claims(store: Store) -> None:
    """Take ``store``'s claims and hand-overs by the Python rules of ``store.claim`` on
    PostgreSQL too (``PostgresBackend.python_claims``), as on SQLite. The tests run the claim
    suites so, to hold the PL/pgSQL and the Python implementation of the rules together."""
    from .backends.postgres import PostgresBackend

    if not isinstance(store._backend, PostgresBackend):
        raise TypeError("only the PostgreSQL backend has another claim path")
    store._backend.python_claims = True


def owner(store: Store) -> str:
    """The owner name that ``store``'s turns carry (host, process id, a random suffix)."""
    return store._core.owner


def claim_decisions(store: Store) -> tuple[int, int]:
    """How many claim decisions ``store`` has asked of the database: for first submits,
    and for polls of queued ones (a submit that learns its outcome in the process asks none)."""
    first, polls = store._core.claim_decisions
    return first, polls


def pending_wakeups(store: Store) -> int:
    """How many wake-up events of ended turns ``store`` still keeps for local waiters."""
    return store._core.wakeups.pending_events()
