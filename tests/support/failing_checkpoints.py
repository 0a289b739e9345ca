"""A commit-log connection whose WAL checkpoints fail, as a failed fsync of the database file
does (``disk I/O error``): for the writer's own checkpoints (ADR-0029), which must be counted and
must not stop the writer."""

from __future__ import annotations

import sqlite3
from typing import Any


class FailingCheckpoints:
    """Wraps a store's connection: every statement naming ``wal_checkpoint`` raises."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, *args: Any) -> Any:
        if "wal_checkpoint" in sql:
            raise sqlite3.OperationalError("disk I/O error")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)
