"""Count the SQL statements an engine sends: the regression guard against per-row queries."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine


class StatementCounter:
    """Records every statement sent through ``engine`` while active (``before_cursor_execute``).

    An executemany is one statement (one round trip); BEGIN and COMMIT are not statements here
    (they do not go through the cursor).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine.sync_engine
        self.statements: list[str] = []
        self.calls: list[tuple[str, Any]] = []  # (statement as sent, its parameters)

    def _record(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        self.statements.append(" ".join(statement.split()))
        self.calls.append((statement, parameters))

    def __enter__(self) -> StatementCounter:
        event.listen(self._engine, "before_cursor_execute", self._record)
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        event.remove(self._engine, "before_cursor_execute", self._record)


class TransactionLog:
    """The statements of every transaction sent through ``engine`` while active, in commit order.

    Statements are grouped by connection between its ``begin`` and its ``commit``/``rollback``
    (SQLite's own ``BEGIN IMMEDIATE`` is left out); concurrent transactions are kept apart.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine.sync_engine
        self._open: dict[int, list[str]] = {}
        self.transactions: list[list[str]] = []

    def _begin(self, conn: Any) -> None:
        self._open[id(conn)] = []

    def _statement(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        text = " ".join(statement.split())
        if id(conn) in self._open and not text.upper().startswith("BEGIN"):
            self._open[id(conn)].append(text)

    def _end(self, conn: Any) -> None:
        statements = self._open.pop(id(conn), None)
        if statements is not None:
            self.transactions.append(statements)

    _EVENTS = (
        ("begin", "_begin"),
        ("before_cursor_execute", "_statement"),
        ("commit", "_end"),
        ("rollback", "_end"),
    )

    def __enter__(self) -> TransactionLog:
        for name, method in self._EVENTS:
            event.listen(self._engine, name, getattr(self, method))
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        for name, method in self._EVENTS:
            event.remove(self._engine, name, getattr(self, method))
