"""The one place with SQLite-only settings: engine options and connection pragmas."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL
from sqlalchemy.pool import StaticPool


def is_in_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or "mode=memory" in str(url.query.get("mode", ""))


def engine_options() -> dict[str, Any]:
    # One shared connection: the store serialises access itself, and an in-memory database
    # exists only inside the connection that made it.
    return {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}


def configure(engine: Engine) -> None:
    in_memory = is_in_memory(engine.url)

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if not in_memory:
            # WAL: readers never block the writer, and a killed process loses no committed
            # transaction. NORMAL sync is durable across process crashes (not power loss).
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()
