"""The database behind the stores: on SQLite one sqlite3 connection, opened without SQLAlchemy.

SQLAlchemy takes a quarter of the emulator's start-up (about 120-165 ms of the ~470 ms it takes
to import the server), and the default database, SQLite, needs none of it on the hot paths:
mapping, reading, resetting and counting run as SQL text on the connection opened here
(storage/store.py). SQLAlchemy stays the way to every other database and to SQLite's cold paths
(events, storage/events.py): `Database.engine`, loaded on first use, runs on that same connection
and so shares its transactions, as the StaticPool engine the stores used before did.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from emulator.storage.sqlite_schema import DDL, TABLES

if TYPE_CHECKING:
    from sqlalchemy import Engine

# SQLite's page cache for a file database, in KiB.
_FILE_CACHE_KIB = 32 * 1024

# The plain SQLite URLs, parsed here as SQLAlchemy parses them (tests compare the two): no query
# string, no %-escapes, no user, host or port; `path` absent for `sqlite://`.
_PLAIN_SQLITE_URL = re.compile(r"sqlite(?:\+pysqlite)?://(?:/(?P<path>[^?%]*))?")


class SqliteTarget:
    """What `sqlite3.connect` gets for a URL, and whether the database lives in memory.
    (A plain class: a dataclass costs most of this module's import time.)"""

    __slots__ = ("database", "in_memory", "options")

    def __init__(self, database: str, options: dict[str, Any], *, in_memory: bool = False) -> None:
        self.database = database
        self.options = options
        self.in_memory = in_memory


def sqlite_target(url: str) -> SqliteTarget | None:
    """How to open `url` with the standard library's sqlite3, exactly as SQLAlchemy's pysqlite
    dialect would; None for another database or another SQLite driver."""
    match = _PLAIN_SQLITE_URL.fullmatch(url)
    if match is None:
        # Query strings (`?mode=memory&cache=shared&uri=true`), escapes, other drivers and other
        # databases: SQLAlchemy itself decides (storage/core.py).
        from emulator.storage import core

        return core.sqlite_target(url)
    path = match["path"]
    if path in (None, "", ":memory:"):
        return SqliteTarget(":memory:", connect_options(), in_memory=True)
    return SqliteTarget(os.path.abspath(path), connect_options())


def connect_options() -> dict[str, Any]:
    # One shared connection, used from the server's threads: the Backend serialises access.
    return {"check_same_thread": False}


def apply_pragmas(connection: Any, *, in_memory: bool) -> None:
    """The settings every new SQLite connection gets (a DB-API connection of any driver)."""
    cursor = connection.cursor()
    if not in_memory:
        # WAL: readers never block the writer, and a killed process loses no committed
        # transaction. NORMAL sync is durable across process crashes (not power loss).
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _open_sqlite(target: SqliteTarget) -> sqlite3.Connection:
    # sqlite3's default isolation: it opens a transaction before a write, as under SQLAlchemy.
    connection: sqlite3.Connection = sqlite3.connect(target.database, **target.options)
    try:
        apply_pragmas(connection, in_memory=target.in_memory)
        connection.executescript(DDL)
        if not target.in_memory:
            # A file database reads its pages through SQLite's own cache (2 MiB by default):
            # 32 MiB keeps the hot part of a large graph in it, so batches of new rows and reads
            # on a graph of a million mappings do not go back to the operating system for
            # every index page. The one shared connection keeps the setting.
            connection.execute(f"PRAGMA cache_size = -{_FILE_CACHE_KIB}")
    except BaseException:
        connection.close()
        raise
    return connection


def delete_rows(connection: sqlite3.Connection, org: str | None) -> None:
    """Delete every table's rows of `org`, or all rows, inside the caller's transaction."""
    for table in TABLES:
        if org is None:
            # No WHERE: SQLite empties the table without visiting its rows (the truncate
            # optimisation), so resetting a large graph stays fast.
            connection.execute(f"DELETE FROM {table}")
        else:
            connection.execute(f"DELETE FROM {table} WHERE org = ?", (org,))


class Database:
    """The database behind the stores: `sqlite` is the one connection to a SQLite database
    (None elsewhere), `engine` SQLAlchemy's way in (on SQLite made on first use, sharing it)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        target = sqlite_target(url)
        self.sqlite: sqlite3.Connection | None = None
        if target is None:
            from emulator.storage import core

            self._engine = core.open_engine(url)
        else:
            self.sqlite = _open_sqlite(target)

    @property
    def engine(self) -> Engine:
        """A SQLAlchemy engine on this database; on SQLite on the same connection (its
        transactions are shared), created on first use."""
        engine = self._engine
        if engine is None:
            with self._engine_lock:
                if self._engine is None:
                    from emulator.storage import core

                    assert self.sqlite is not None
                    self._engine = core.shared_engine(self.sqlite)
                engine = self._engine
        return engine

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A transaction on the SQLite connection: committed when the block ends, rolled back
        on error. Only on SQLite (`sqlite` is not None)."""
        connection = self.sqlite
        assert connection is not None, "a SQLite transaction on another database"
        if not connection.in_transaction:
            connection.execute("BEGIN")
        try:
            yield connection
            connection.commit()
        except BaseException:
            connection.rollback()
            raise

    def clear(self, org: str | None = None) -> None:
        """Forget everything of one org (mappings, amplitude ids, events, device profiles,
        insert ids, properties), or of all orgs, in one transaction."""
        if self.sqlite is None:
            from emulator.storage import core

            core.clear(self.engine, org)
            return
        with self.transaction() as connection:
            delete_rows(connection, org)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        if self.sqlite is not None:
            self.sqlite.close()
