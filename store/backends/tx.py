"""A transaction as the store's code sees it: the dialect's named queries, run."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import TextClause


class Tx(ABC):
    """A transaction (or an autocommit read) that runs the dialect's named queries. Rows
    have attribute access by column name."""

    @abstractmethod
    async def all(self, name: str, **params: Any) -> Sequence[Any]: ...

    @abstractmethod
    async def one(self, name: str, **params: Any) -> Any: ...

    @abstractmethod
    async def scalar(self, name: str, **params: Any) -> Any: ...

    @abstractmethod
    async def run(self, name: str, **params: Any) -> int:
        """Run a write; return the number of rows it touched."""

    @abstractmethod
    async def run_many(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None: ...


class EngineTx(Tx):
    """Tx on a SQLAlchemy connection."""

    def __init__(self, conn: AsyncConnection, statements: Mapping[str, TextClause]) -> None:
        self.conn = conn
        self._statements = statements

    async def all(self, name: str, **params: Any) -> Sequence[Row[Any]]:
        return (await self.conn.execute(self._statements[name], params)).all()

    async def one(self, name: str, **params: Any) -> Row[Any] | None:
        return (await self.conn.execute(self._statements[name], params)).first()

    async def scalar(self, name: str, **params: Any) -> Any:
        return (await self.conn.execute(self._statements[name], params)).scalar()

    async def run(self, name: str, **params: Any) -> int:
        return (await self.conn.execute(self._statements[name], params)).rowcount

    async def run_many(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            await self.conn.execute(self._statements[name], list(rows))
