"""What the command line says when something is wrong: one line saying what and what to
do, exit status 2, never a traceback. Also the checks a read-only command makes before it
touches anything (it must create no file)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from .backends.retry import causes
from .errors import SchemaError, StoreError

USAGE_ERROR = 2


class CommandError(Exception):
    """A mistake on the command line or in its target: printed as one line, exit 2."""


def require_existing_sqlite(url: str) -> None:
    """A read-only command on SQLite: the file must exist (it creates none)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # explained by describe()
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or not Path(database).expanduser().is_file():
            raise CommandError(
                f"no SQLite database at {database or '(none)'!r}; check the path "
                "(this command reads a database, it creates none)"
            )


def describe(exc: BaseException, url: str | None) -> str | None:
    """One line for an error a user can fix, or None for a bug (let it show)."""
    where = f" at {_safe(url)}" if url else ""
    if isinstance(exc, CommandError):
        return str(exc)
    for cause in causes(exc):
        name = type(cause).__name__
        text = _first_line(cause)
        if name == "InvalidCatalogNameError":
            return f"{text}{where}: create it (createdb) or fix the URL"
        if name == "InvalidPasswordError" or name == "InvalidAuthorizationSpecificationError":
            return f"the server refused the login{where}: {text}"
        if name == "UndefinedTableError" or "no such table" in text:
            return (
                f"the database{where} has no turnstore schema: run "
                "`python -m store migrate --db URL` first"
            )
    if isinstance(exc, SchemaError):
        return str(exc)
    if isinstance(exc, StoreError):
        return _first_line(exc)
    if isinstance(exc, ArgumentError | ValueError):
        return _first_line(exc)
    if isinstance(exc, OSError | SQLAlchemyError):
        return f"cannot reach the database{where} ({_first_line(exc)}); is the server running?"
    return None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _safe(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url)
