"""Reads and writes of the mapping graph, one org at a time, one transaction per batch.

The hot paths (validating and applying a batch, reading mappings) run statements built once at
import. On SQLite they run as fixed SQL text straight on the one driver connection the engine
shares (StaticPool, see storage/sqlite.py), with BEGIN / COMMIT of their own: sqlite3 prepares
each text once and keeps it, a few microseconds per statement instead of SQLAlchemy's few dozen
plus its pool checkout and reset. Other databases take the same statements through SQLAlchemy
Core (`MappingStore(url, sqlite_driver=False)` does so on SQLite too; tests compare the two).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Executable,
    bindparam,
    create_engine,
    delete,
    func,
    insert,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.elements import BindParameter

from emulator.domain.model import BatchPlan, Edge, OrgGraph, UserMappings
from emulator.storage import sqlite
from emulator.storage.schema import amplitude_ids, device_amplitude_ids, mappings, metadata

# Bound parameters per IN (...) list: under every database's limit.
_CHUNK = 500
# SQLite's page cache for a file database, in KiB.
_FILE_CACHE_KIB = 32 * 1024


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


# --- statements, built once (SQLAlchemy Core) ------------------------------------------------

_ORG: BindParameter[str] = bindparam("org")
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
# No ORDER BY: a database may then walk the whole org in amplitude_id order to avoid a sort
# (SQLite does); each list of edges is sorted after reading instead.
_READ_FROM = (
    select(mappings.c.global_user_id, mappings.c.user_id, amplitude_ids.c.amplitude_id)
    .join(
        amplitude_ids,
        (amplitude_ids.c.org == mappings.c.org) & (amplitude_ids.c.user_id == mappings.c.user_id),
    )
    .where(mappings.c.org == _ORG, mappings.c.global_user_id.in_(_IDS))
)

# --- the same statements as SQLite text; ?1 is the org, ?2... the ids -------------------------

_SQLITE_HIGHEST = (
    "SELECT max(amplitude_id) FROM ("
    "SELECT max(amplitude_id) AS amplitude_id FROM amplitude_ids WHERE org = ?1 "
    "UNION ALL SELECT max(amplitude_id) FROM device_amplitude_ids WHERE org = ?1)"
)
_SQLITE_INSERT_IDS = "INSERT INTO amplitude_ids (org, user_id, amplitude_id) VALUES (?, ?, ?)"
_SQLITE_INSERT_MAPPINGS = (
    "INSERT INTO mappings (org, user_id, global_user_id) VALUES (?, ?, ?) "
    "ON CONFLICT (org, user_id) DO UPDATE SET global_user_id = excluded.global_user_id"
)


def _in_list(count: int) -> str:
    return ", ".join(f"?{number}" for number in range(2, count + 2))


@cache
def _sqlite_globals_of(count: int) -> str:
    return (
        "SELECT user_id, global_user_id FROM mappings "
        f"WHERE org = ?1 AND user_id IN ({_in_list(count)})"
    )


@cache
def _sqlite_known_ids(count: int) -> str:
    return f"SELECT user_id FROM amplitude_ids WHERE org = ?1 AND user_id IN ({_in_list(count)})"


@cache
def _sqlite_unmap(count: int) -> str:
    return f"DELETE FROM mappings WHERE org = ?1 AND user_id IN ({_in_list(count)})"


@cache
def _sqlite_read(count: int) -> str:
    """One round trip for a read: (0, user, amplitude_id) rows for the users' own ids, then
    (1, user, its global, the global's id) and (2, global, a user, the user's id) edges."""
    ids = _in_list(count)
    return (
        "SELECT 0, user_id, NULL, amplitude_id FROM amplitude_ids "
        f"WHERE org = ?1 AND user_id IN ({ids}) "
        "UNION ALL "
        "SELECT 1, m.user_id, m.global_user_id, a.amplitude_id FROM mappings AS m "
        "JOIN amplitude_ids AS a ON a.org = m.org AND a.user_id = m.global_user_id "
        f"WHERE m.org = ?1 AND m.user_id IN ({ids}) "
        "UNION ALL "
        "SELECT 2, m.global_user_id, m.user_id, a.amplitude_id FROM mappings AS m "
        "JOIN amplitude_ids AS a ON a.org = m.org AND a.user_id = m.user_id "
        f"WHERE m.org = ?1 AND m.global_user_id IN ({ids})"
    )


def _driver_sqlite(connection: Connection) -> sqlite3.Connection | None:
    """The sqlite3 connection under `connection`, or None on another database or driver."""
    if connection.dialect.name != "sqlite":
        return None
    driver = connection.connection.driver_connection
    return driver if isinstance(driver, sqlite3.Connection) else None


def highest_amplitude_id(connection: Connection, org: str) -> int | None:
    """The org's highest amplitude id so far: users' and device profiles' share one counter."""
    driver = _driver_sqlite(connection)
    if driver is not None:
        return _sqlite_highest(driver, org)
    found = [connection.execute(statement, {"org": org}).scalar_one() for statement in _HIGHEST]
    return max((value for value in found if value is not None), default=None)


def _sqlite_highest(driver: sqlite3.Connection, org: str) -> int | None:
    highest: int | None = driver.execute(_SQLITE_HIGHEST, (org,)).fetchone()[0]
    return highest


def _shared_sqlite_driver(engine: Engine) -> sqlite3.Connection | None:
    """The one driver connection of a SQLite engine on a StaticPool (see storage/sqlite.py)."""
    if engine.dialect.name != "sqlite" or not isinstance(engine.pool, StaticPool):
        return None
    with engine.connect() as connection:
        return _driver_sqlite(connection)


class OrgTransaction:
    """One org's graph inside an open transaction; the domain's MappingGraph.

    `connection` is a SQLAlchemy connection, or on SQLite the driver's own connection with a
    transaction open on it (see MappingStore.write).
    """

    def __init__(self, connection: Connection | sqlite3.Connection, org: str) -> None:
        self._org = org
        self._core: Connection | None = None
        self._driver: sqlite3.Connection | None = None
        if isinstance(connection, sqlite3.Connection):
            self._driver = connection
        else:
            self._core = connection

    def _rows(
        self, sqlite_text: Callable[[int], str], statement: Executable, ids: Sequence[str]
    ) -> Iterable[Any]:
        """Run a statement on the org and a list of ids: the SQLite text, or the Core one."""
        if self._driver is not None:
            return self._driver.execute(sqlite_text(len(ids)), (self._org, *ids))
        assert self._core is not None
        return self._core.execute(statement, {"org": self._org, "ids": ids})

    def _insert(
        self,
        sqlite_text: str,
        statement: Executable,
        keys: Sequence[str],
        rows: list[tuple[Any, ...]],
    ) -> None:
        if self._driver is not None:
            self._driver.executemany(sqlite_text, rows)
            return
        assert self._core is not None
        self._core.execute(statement, [dict(zip(keys, row, strict=True)) for row in rows])

    def globals_of(self, user_ids: Collection[str]) -> Mapping[str, str]:
        found: dict[str, str] = {}
        for chunk in _chunks(list(user_ids)):
            found.update(
                (user_id, global_user_id)
                for user_id, global_user_id in self._rows(_sqlite_globals_of, _GLOBALS_OF, chunk)
            )
        return found

    def apply(self, plan: BatchPlan, amplitude_id_base: int) -> None:
        self._allocate_amplitude_ids(plan.named_user_ids, amplitude_id_base)
        # SQLite upserts a new global over an old one; elsewhere every changed row is deleted
        # first and the new ones inserted.
        removed = [
            user_id
            for user_id, global_user_id in plan.mapping_changes.items()
            if global_user_id is None or self._driver is None
        ]
        for chunk in _chunks(removed):
            self._rows(_sqlite_unmap, _UNMAP, chunk)
        new_rows = [
            (self._org, user_id, global_user_id)
            for user_id, global_user_id in plan.mapping_changes.items()
            if global_user_id is not None
        ]
        if new_rows:
            keys = ("org", "user_id", "global_user_id")
            self._insert(_SQLITE_INSERT_MAPPINGS, _INSERT_MAPPINGS, keys, new_rows)

    def _allocate_amplitude_ids(self, user_ids: Sequence[str], base: int) -> None:
        known: set[str] = set()
        for chunk in _chunks(user_ids):
            known.update(user_id for (user_id,) in self._rows(_sqlite_known_ids, _KNOWN_IDS, chunk))
        new_ids = [user_id for user_id in user_ids if user_id not in known]
        if not new_ids:
            return
        if self._driver is not None:
            highest = _sqlite_highest(self._driver, self._org)
        else:
            assert self._core is not None
            highest = highest_amplitude_id(self._core, self._org)
        first = base if highest is None else highest + 1
        rows = [(self._org, user_id, first + offset) for offset, user_id in enumerate(new_ids)]
        self._insert(_SQLITE_INSERT_IDS, _INSERT_IDS, ("org", "user_id", "amplitude_id"), rows)


def _by_amplitude_id(edge: Edge) -> int:
    return edge.amplitude_id


class MappingStore:
    """The database behind every org. Callers serialise writes (see Backend)."""

    def __init__(self, database_url: str, *, sqlite_driver: bool = True) -> None:
        """`sqlite_driver=False` runs SQLite through SQLAlchemy Core like any other database
        (tests compare the two paths)."""
        url = make_url(database_url)
        options: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            options = sqlite.engine_options()
        self.engine = create_engine(url, **options)
        if url.get_backend_name() == "sqlite":
            sqlite.configure(self.engine)
        metadata.create_all(self.engine)
        # SQLite: the hot paths use the shared driver connection directly; checking it out of
        # SQLAlchemy's pool and resetting it costs more than their statements.
        self._driver = _shared_sqlite_driver(self.engine) if sqlite_driver else None
        if self._driver is not None and not sqlite.is_in_memory(self.engine.url):
            # A file database reads its pages through SQLite's own cache (2 MiB by default):
            # 32 MiB keeps the hot part of a large graph in it, so batches of new rows and reads
            # on a graph of a million mappings do not go back to the operating system for
            # every index page. The one shared connection (StaticPool) keeps the setting.
            self._driver.execute(f"PRAGMA cache_size = -{_FILE_CACHE_KIB}")

    @contextmanager
    def write(self, org: str) -> Iterator[OrgTransaction]:
        """A transaction on `org`'s graph: committed when the block ends, rolled back on error."""
        driver = self._driver
        if driver is None:
            with self.engine.begin() as connection:
                yield OrgTransaction(connection, org)
            return
        if not driver.in_transaction:
            driver.execute("BEGIN")
        try:
            yield OrgTransaction(driver, org)
            driver.commit()
        except BaseException:
            driver.rollback()
            raise

    def read(self, org: str, user_ids: Sequence[str]) -> dict[str, UserMappings]:
        """Direct edges of each requested user, in request order (spec section 4)."""
        result = {user_id: UserMappings() for user_id in user_ids}
        if self._driver is not None:
            for chunk in _chunks(user_ids):
                for kind, user_id, other, amplitude_id in self._driver.execute(
                    _sqlite_read(len(chunk)), (org, *chunk)
                ):
                    if kind == 0:
                        result[user_id].amplitude_id = amplitude_id
                    elif kind == 1:
                        result[user_id].mapped_to.append(Edge(other, amplitude_id))
                    else:
                        result[user_id].mapped_from.append(Edge(other, amplitude_id))
        else:
            with self.engine.connect() as connection:
                for chunk in _chunks(user_ids):
                    parameters = {"org": org, "ids": chunk}
                    for user_id, amplitude_id in connection.execute(_READ_IDS, parameters):
                        result[user_id].amplitude_id = amplitude_id
                    for user_id, global_user_id, amplitude_id in connection.execute(
                        _READ_TO, parameters
                    ):
                        result[user_id].mapped_to.append(Edge(global_user_id, amplitude_id))
                    for global_user_id, user_id, amplitude_id in connection.execute(
                        _READ_FROM, parameters
                    ):
                        result[global_user_id].mapped_from.append(Edge(user_id, amplitude_id))
        for mappings_of_user in result.values():
            if len(mappings_of_user.mapped_from) > 1:
                mappings_of_user.mapped_from.sort(key=_by_amplitude_id)
        return result

    def dump(self) -> dict[str, OrgGraph]:
        """Every org's whole graph."""
        graphs: dict[str, OrgGraph] = {}
        with self.engine.connect() as connection:
            for org, user_id, amplitude_id in connection.execute(
                select(amplitude_ids).order_by(amplitude_ids.c.org, amplitude_ids.c.amplitude_id)
            ):
                graphs.setdefault(org, OrgGraph()).amplitude_ids[user_id] = amplitude_id
            for org, user_id, global_user_id in connection.execute(
                select(mappings).order_by(mappings.c.org, mappings.c.user_id)
            ):
                graphs.setdefault(org, OrgGraph()).mappings[user_id] = global_user_id
        return graphs

    def counts(self) -> tuple[int, int, int]:
        """How many orgs, users (amplitude ids) and mappings the database holds."""
        with self.engine.connect() as connection:
            orgs, users = connection.execute(
                select(func.count(func.distinct(amplitude_ids.c.org)), func.count())
            ).one()
            mapped = connection.execute(select(func.count()).select_from(mappings)).scalar_one()
        return orgs, users, mapped

    def replace_all(self, graphs: Mapping[str, OrgGraph]) -> None:
        """Make the database hold exactly `graphs`, in one transaction."""
        with self.engine.begin() as connection:
            connection.execute(delete(mappings))
            connection.execute(delete(amplitude_ids))
            id_rows = [
                {"org": org, "user_id": user_id, "amplitude_id": amplitude_id}
                for org, graph in graphs.items()
                for user_id, amplitude_id in graph.amplitude_ids.items()
            ]
            mapping_rows = [
                {"org": org, "user_id": user_id, "global_user_id": global_user_id}
                for org, graph in graphs.items()
                for user_id, global_user_id in graph.mappings.items()
            ]
            if id_rows:
                connection.execute(insert(amplitude_ids), id_rows)
            if mapping_rows:
                connection.execute(insert(mappings), mapping_rows)

    def clear(self, org: str | None = None) -> None:
        """Forget mappings and amplitude ids: of one org, or of all."""
        with self.engine.begin() as connection:
            for table in (mappings, amplitude_ids):
                statement = delete(table)
                if org is not None:
                    statement = statement.where(table.c.org == org)
                connection.execute(statement)

    def close(self) -> None:
        self.engine.dispose()
