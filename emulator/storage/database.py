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

# A file database: how much of it SQLite memory-maps, and its page cache (in KiB).
_FILE_MAP_BYTES = 256 * 1024 * 1024
_FILE_CACHE_KIB = 8 * 1024

_ORG_ID = "SELECT id FROM orgs WHERE name = ?"
# OR IGNORE: another process sharing the file may have added it since we looked.
_ADD_ORG = "INSERT OR IGNORE INTO orgs (name) VALUES (?)"
_ORG_NAMES = "SELECT id, name FROM orgs"

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


class UnsupportedDatabase(Exception):
    """The database holds the emulator's tables in a layout this version cannot use."""


_HAS_TABLE = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?"


def _check_layout(connection: sqlite3.Connection, where: str) -> None:
    """Refuse a database of an earlier emulator, whose tables held org names instead of ids."""
    has_graph = connection.execute(_HAS_TABLE, ("amplitude_ids",)).fetchone()[0]
    has_orgs = connection.execute(_HAS_TABLE, ("orgs",)).fetchone()[0]
    if has_graph and not has_orgs:
        raise UnsupportedDatabase(
            f"{where} was written by an earlier version of the emulator (its tables hold org "
            "names, not org ids): remove the file, or export its state with that version "
            "(GET /_emulator/state) and import it into this one (PUT /_emulator/state)"
        )


def _open_sqlite(target: SqliteTarget) -> sqlite3.Connection:
    # sqlite3's default isolation: it opens a transaction before a write, as under SQLAlchemy.
    connection: sqlite3.Connection = sqlite3.connect(target.database, **target.options)
    try:
        apply_pragmas(connection, in_memory=target.in_memory)
        _check_layout(connection, f"the database {target.database}")
        connection.executescript(DDL)
        if not target.in_memory:
            # A file database is read through a memory map of its first _FILE_MAP_BYTES: a page
            # is then a pointer, not a read() into SQLite's cache, and a read on a graph of a
            # million mappings (about 92 MB) costs 1.4x one on a thousand, not 1.6x with the
            # whole file in a page cache (docs/performance.md). The mapped pages are the
            # operating system's file cache, which it can reclaim. SQLite's own cache then
            # holds the pages a write changes and what lies past the map.
            connection.execute(f"PRAGMA mmap_size = {_FILE_MAP_BYTES}")
            connection.execute(f"PRAGMA cache_size = -{_FILE_CACHE_KIB}")
    except BaseException:
        connection.close()
        raise
    return connection


def delete_rows(connection: sqlite3.Connection, org: int | None) -> None:
    """Delete every table's rows of the org with id `org`, or all rows, inside the caller's
    transaction. The orgs themselves stay: their ids are never given to another org."""
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
        self._org_ids: dict[str, int] = {}  # never stale: an org keeps its id for good
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

    # --- orgs: a name in the API, an id in the tables (storage/schema.py) -------------------

    def org_id(self, name: str) -> int | None:
        """The id of the org called `name`, or None if nothing was ever stored for it."""
        found = self._org_ids.get(name)
        if found is None:
            if self.sqlite is not None:
                row = self.sqlite.execute(_ORG_ID, (name,)).fetchone()
                found = None if row is None else int(row[0])
            else:
                from emulator.storage import core

                found = core.org_id(self.engine, name)
            if found is not None:
                self._org_ids[name] = found
        return found

    def ensure_org_id(self, name: str) -> int:
        """The id of the org called `name`, given it (and committed) if it has none yet.
        Outside any transaction: a rolled-back batch must not take an id with it."""
        found = self.org_id(name)
        if found is not None:
            return found
        if self.sqlite is not None:
            assert not self.sqlite.in_transaction, "an org id given inside a transaction"
            with self.transaction() as connection:
                connection.execute(_ADD_ORG, (name,))
        else:
            from emulator.storage import core

            core.add_org(self.engine, name)
        found = self.org_id(name)
        assert found is not None
        return found

    def org_names(self) -> dict[int, str]:
        """Every org's name, by id."""
        if self.sqlite is not None:
            return dict(self.sqlite.execute(_ORG_NAMES))
        from emulator.storage import core

        return core.org_names(self.engine)

    def clear(self, org: str | None = None) -> None:
        """Forget everything of one org (mappings, amplitude ids, events, device profiles,
        insert ids, properties), or of all orgs, in one transaction."""
        org_id = None
        if org is not None:
            org_id = self.org_id(org)
            if org_id is None:
                return  # nothing was ever stored for it
        if self.sqlite is None:
            from emulator.storage import core

            core.clear(self.engine, org_id)
            return
        with self.transaction() as connection:
            delete_rows(connection, org_id)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        if self.sqlite is not None:
            self.sqlite.close()
