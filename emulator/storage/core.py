"""SQLAlchemy's part of the storage, imported on first use: engines, URL parsing beyond the plain
SQLite forms, and the graph's statements as SQLAlchemy Core (every database but SQLite, and SQLite
with `MappingStore(database, sqlite_driver=False)`). Statements are built once, at import.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.elements import BindParameter

from emulator.storage.database import SqliteTarget, apply_pragmas, connect_options
from emulator.storage.schema import amplitude_ids, device_amplitude_ids, mappings, metadata, orgs
from emulator.storage.store import (
    IdRow,
    MappingRow,
    ReadRow,
    sqlite_highest_amplitude_id,
)

# --- opening a database -----------------------------------------------------------------------


def is_in_memory(url: URL) -> bool:
    # The `mode` test is kept as the emulator always had it (it looks for "mode=memory" inside
    # the value of `mode`): it only decides the pragmas below, which a memory database ignores.
    database = url.database or ""
    return database in ("", ":memory:") or "mode=memory" in str(url.query.get("mode", ""))


def sqlite_target(url: str) -> SqliteTarget | None:
    """What SQLAlchemy's pysqlite dialect passes to sqlite3.connect for `url` (with the engine
    options the emulator always gave it); None for another database or SQLite driver."""
    parsed = make_url(url)
    if (
        parsed.get_backend_name() != "sqlite"
        or parsed.get_driver_name() != "pysqlite"
        or "plugin" in parsed.query  # engine plugins: only an engine runs them
    ):
        return None
    dialect = parsed.get_dialect()()
    arguments, options = dialect.create_connect_args(parsed)
    (database,) = arguments
    return SqliteTarget(
        str(database), {**options, **connect_options()}, in_memory=is_in_memory(parsed)
    )


def open_engine(url: str) -> Engine:
    """An engine on a database that is not opened with sqlite3 directly, its tables created."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        engine = create_engine(parsed)
    else:
        # Another SQLite driver: one shared connection (an in-memory database exists only inside
        # the connection that made it), with the pragmas of storage/database.py.
        engine = create_engine(parsed, poolclass=StaticPool, connect_args=connect_options())
        in_memory = is_in_memory(parsed)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            apply_pragmas(dbapi_connection, in_memory=in_memory)

    metadata.create_all(engine)
    return engine


def shared_engine(connection: sqlite3.Connection) -> Engine:
    """An engine whose only connection is `connection`: Core statements share its transactions
    (and, in memory, its database). The URL is only the dialect's; the creator opens nothing."""
    return create_engine("sqlite://", creator=lambda: connection, poolclass=StaticPool)


def delete_rows(connection: Connection, org: int | None) -> None:
    """Delete every table's rows of the org with id `org`, or all rows, inside the caller's
    transaction. The orgs themselves stay (storage/database.py)."""
    for table in metadata.sorted_tables:
        if table is orgs:
            continue
        statement = delete(table)
        if org is not None:
            statement = statement.where(table.c.org == org)
        connection.execute(statement)


def clear(engine: Engine, org: int | None) -> None:
    with engine.begin() as connection:
        delete_rows(connection, org)


def org_id(engine: Engine, name: str) -> int | None:
    with engine.connect() as connection:
        found: int | None = connection.execute(
            select(orgs.c.id).where(orgs.c.name == name)
        ).scalar_one_or_none()
    return found


def add_org(engine: Engine, name: str) -> None:
    """Give the org an id; another process may have done so first (its id stands)."""
    try:
        with engine.begin() as connection:
            connection.execute(insert(orgs), {"name": name})
    except IntegrityError:
        pass


def org_names(engine: Engine) -> dict[int, str]:
    with engine.connect() as connection:
        return {row.id: row.name for row in connection.execute(select(orgs.c.id, orgs.c.name))}


# --- the graph's statements ---------------------------------------------------------------------

_ORG: BindParameter[int] = bindparam("org")
_IDS: BindParameter[list[str]] = bindparam("ids", expanding=True)
_GLOBALS_OF = select(mappings.c.user_id, mappings.c.global_user_id).where(
    mappings.c.org == _ORG, mappings.c.user_id.in_(_IDS)
)
_KNOWN_IDS = select(amplitude_ids.c.user_id).where(
    amplitude_ids.c.org == _ORG, amplitude_ids.c.user_id.in_(_IDS)
)
_HIGHEST = tuple(
    select(func.max(table.c.amplitude_id)).where(table.c.org == _ORG)
    for table in (amplitude_ids, device_amplitude_ids)
)
_UNMAP = delete(mappings).where(mappings.c.org == _ORG, mappings.c.user_id.in_(_IDS))
_INSERT_IDS = insert(amplitude_ids)
_INSERT_MAPPINGS = insert(mappings)
_READ_IDS = select(amplitude_ids.c.user_id, amplitude_ids.c.amplitude_id).where(
    amplitude_ids.c.org == _ORG, amplitude_ids.c.user_id.in_(_IDS)
)
_READ_TO = (
    select(mappings.c.user_id, mappings.c.global_user_id, amplitude_ids.c.amplitude_id)
    .join(
        amplitude_ids,
        (amplitude_ids.c.org == mappings.c.org)
        & (amplitude_ids.c.user_id == mappings.c.global_user_id),
    )
    .where(mappings.c.org == _ORG, mappings.c.user_id.in_(_IDS))
)
_READ_FROM = (
    select(mappings.c.global_user_id, mappings.c.user_id, amplitude_ids.c.amplitude_id)
    .join(
        amplitude_ids,
        (amplitude_ids.c.org == mappings.c.org) & (amplitude_ids.c.user_id == mappings.c.user_id),
    )
    .where(mappings.c.org == _ORG, mappings.c.global_user_id.in_(_IDS))
)
_AMPLITUDE_IDS = select(amplitude_ids).order_by(amplitude_ids.c.org, amplitude_ids.c.amplitude_id)
_MAPPINGS = select(mappings).order_by(mappings.c.org, mappings.c.user_id)
_COUNT_IDS = select(func.count(func.distinct(amplitude_ids.c.org)), func.count())
_COUNT_MAPPINGS = select(func.count()).select_from(mappings)


def _driver_sqlite(connection: Connection) -> sqlite3.Connection | None:
    """The sqlite3 connection under `connection`, or None on another database or driver."""
    if connection.dialect.name != "sqlite":
        return None
    driver = connection.connection.driver_connection
    return driver if isinstance(driver, sqlite3.Connection) else None


def highest_amplitude_id(connection: Connection, org: int) -> int | None:
    """The org's highest amplitude id so far: users' and device profiles' share one counter."""
    driver = _driver_sqlite(connection)
    if driver is not None:
        return sqlite_highest_amplitude_id(driver, org)
    found = [connection.execute(statement, {"org": org}).scalar_one() for statement in _HIGHEST]
    return max((value for value in found if value is not None), default=None)


class CoreStatements:
    """GraphStatements as SQLAlchemy Core on a connection (storage/store.py)."""

    upserts = False  # no portable upsert: changed rows are deleted, then inserted

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def _ids(self, statement: Any, org: int, user_ids: Sequence[str]) -> Any:
        return self._connection.execute(statement, {"org": org, "ids": user_ids})

    def globals_of(self, org: int, user_ids: Sequence[str]) -> Iterable[tuple[str, str]]:
        rows: Iterable[tuple[str, str]] = self._ids(_GLOBALS_OF, org, user_ids)
        return rows

    def known_ids(self, org: int, user_ids: Sequence[str]) -> Iterable[tuple[str]]:
        rows: Iterable[tuple[str]] = self._ids(_KNOWN_IDS, org, user_ids)
        return rows

    def unmap(self, org: int, user_ids: Sequence[str]) -> None:
        self._ids(_UNMAP, org, user_ids)

    def highest_amplitude_id(self, org: int) -> int | None:
        return highest_amplitude_id(self._connection, org)

    def insert_ids(self, rows: Sequence[IdRow]) -> None:
        keys = ("org", "user_id", "amplitude_id")
        self._connection.execute(_INSERT_IDS, [dict(zip(keys, row, strict=True)) for row in rows])

    def upsert_mappings(self, rows: Sequence[MappingRow]) -> None:
        keys = ("org", "user_id", "global_user_id")
        self._connection.execute(
            _INSERT_MAPPINGS, [dict(zip(keys, row, strict=True)) for row in rows]
        )

    def read_rows(self, org: int, user_ids: Sequence[str]) -> Iterator[ReadRow]:
        for user_id, amplitude_id in self._ids(_READ_IDS, org, user_ids):
            yield 0, user_id, None, amplitude_id
        for user_id, global_user_id, amplitude_id in self._ids(_READ_TO, org, user_ids):
            yield 1, user_id, global_user_id, amplitude_id
        for global_user_id, user_id, amplitude_id in self._ids(_READ_FROM, org, user_ids):
            yield 2, global_user_id, user_id, amplitude_id

    def amplitude_id_rows(self) -> Iterable[IdRow]:
        return self._connection.execute(_AMPLITUDE_IDS)

    def mapping_rows(self) -> Iterable[MappingRow]:
        return self._connection.execute(_MAPPINGS)

    def counts(self) -> tuple[int, int, int]:
        orgs, users = self._connection.execute(_COUNT_IDS).one()
        mapped: int = self._connection.execute(_COUNT_MAPPINGS).scalar_one()
        return orgs, users, mapped

    def clear(self) -> None:
        delete_rows(self._connection, None)
