"""The Database behind the stores (emulator/storage/database.py): SQLite opened without
SQLAlchemy, exactly as SQLAlchemy would open it, with the tables schema.py defines; one clear for
every table; and SQLAlchemy's engine, made on first use, on the same connection."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import create_engine, insert, select
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import make_url
from sqlalchemy.schema import CreateIndex, CreateTable

from emulator.domain.mapping import plan_batch
from emulator.domain.model import Map
from emulator.storage import Database, MappingStore, core, database, sqlite_schema
from emulator.storage.database import UnsupportedDatabase
from emulator.storage.schema import mappings, metadata, orgs
from tests.support import write_pre_org_id_database

ORGS = ("org-a", "org-b")


def compiled_ddl() -> str:
    """What sqlite_schema.DDL must be: schema.py compiled for SQLite, whitespace normalised."""
    dialect = sqlite_dialect.dialect()
    statements: list[Any] = []
    for table in metadata.sorted_tables:
        statements.append(CreateTable(table, if_not_exists=True))
        statements.extend(
            CreateIndex(index, if_not_exists=True)
            for index in sorted(table.indexes, key=lambda index: str(index.name))
        )
    texts = [
        "\n".join(
            line.rstrip().replace("\t", "    ")
            for line in str(statement.compile(dialect=dialect)).strip().splitlines()
        )
        for statement in statements
    ]
    return ";\n\n".join(texts) + ";\n"


def sqlalchemy_connect_arguments(url: str) -> tuple[list[Any], dict[str, Any]]:
    """What create_engine(url, connect_args={"check_same_thread": False}) passes to
    sqlite3.connect, computed by SQLAlchemy alone."""
    parsed = make_url(url)
    arguments, options = SQLiteDialect_pysqlite().create_connect_args(parsed)
    return list(arguments), {**options, "check_same_thread": False}


def schema_of(connection: sqlite3.Connection) -> dict[tuple[str, str], str]:
    """Every table and index: (type, name) -> its CREATE text with whitespace collapsed."""
    rows = connection.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
    return {(kind, name): " ".join((sql or "").split()) for kind, name, sql in rows}


def fill_every_table(opened: Database, names: tuple[str, ...]) -> None:
    """A row per org in every table, whatever its columns (so a new table is covered too)."""
    connection = opened.sqlite
    assert connection is not None
    org_ids = [opened.ensure_org_id(name) for name in names]  # each committed on its own
    for number, org in enumerate(org_ids, start=1):
        for table in sqlite_schema.TABLES:
            columns = connection.execute(f"PRAGMA table_info({table})").fetchall()
            values: list[Any] = []
            for _cid, name, kind, *_ in columns:
                if name == "org":
                    values.append(org)
                elif kind in ("INTEGER", "BIGINT"):
                    values.append(number)
                elif kind == "JSON":
                    values.append("{}")
                else:
                    values.append(f"{name}-{number}")
            marks = ", ".join("?" for _ in values)
            connection.execute(f"INSERT INTO {table} VALUES ({marks})", values)
    connection.commit()


def rows_per_table(opened: Database) -> dict[str, list[str]]:
    """The org names of each table's rows."""
    connection = opened.sqlite
    assert connection is not None
    names = opened.org_names()
    return {
        table: sorted(names[org] for (org,) in connection.execute(f"SELECT org FROM {table}"))
        for table in sqlite_schema.TABLES
    }


@pytest.fixture
def memory_database() -> Iterator[Database]:
    opened = Database("sqlite://")
    yield opened
    opened.close()


# --- opening SQLite without SQLAlchemy ------------------------------------------------------

PATHS = st.text(st.characters(codec="utf-8", exclude_characters="?%"))


@given(
    scheme=st.sampled_from(["sqlite", "sqlite+pysqlite"]),
    path=st.one_of(
        st.none(),
        st.sampled_from(["", ":memory:", "relative.db", "dir/file.db", "/abs/path.db"]),
        PATHS,
        PATHS.map(lambda text: "/" + text),
    ),
)
def test_plain_urls_open_what_sqlalchemy_would_open(scheme: str, path: str | None) -> None:
    url = f"{scheme}://" if path is None else f"{scheme}:///{path}"
    fallback = mock.Mock(side_effect=AssertionError("SQLAlchemy was asked about a plain URL"))
    with mock.patch.object(core, "sqlite_target", fallback):
        target = database.sqlite_target(url)
    assert target is not None
    arguments, options = sqlalchemy_connect_arguments(url)
    assert [target.database] == arguments
    assert target.options == options
    assert target.in_memory == core.is_in_memory(make_url(url))


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///file:shared-memory?mode=memory&cache=shared&uri=true",
        "sqlite:///with%20space.db",
        "sqlite:///timeout.db?timeout=2.5",
        "sqlite+pysqlite:///file:x.db?uri=true&mode=ro&cached_statements=7",
    ],
)
def test_other_sqlite_urls_open_what_sqlalchemy_would_open(url: str) -> None:
    target = database.sqlite_target(url)
    assert target is not None
    assert ([target.database], target.options) == sqlalchemy_connect_arguments(url)
    assert target.in_memory == core.is_in_memory(make_url(url))


@pytest.mark.parametrize(
    "url", ["postgresql://user@localhost/db", "mysql+pymysql://h/db", "sqlite+aiosqlite://"]
)
def test_other_databases_and_drivers_are_left_to_sqlalchemy(url: str) -> None:
    assert database.sqlite_target(url) is None


def test_a_uri_url_opens_a_shared_memory_database() -> None:
    url = "sqlite:///file:emulator-uri-test?mode=memory&cache=shared&uri=true"
    first, second = Database(url), Database(url)
    try:
        assert first.sqlite is not None
        assert second.sqlite is not None
        first.sqlite.execute("INSERT INTO mappings VALUES ('org', 'a', 'b')")
        first.sqlite.commit()
        # The same database through another connection: it was opened as a URI, not a file.
        assert second.sqlite.execute("SELECT user_id FROM mappings").fetchall() == [("a",)]
    finally:
        first.close()
        second.close()
    assert not any(Path().glob("file:emulator-uri-test*"))


@pytest.mark.parametrize("where", ["memory", "file"])
def test_pragmas(where: str, tmp_path: Path) -> None:
    url = "sqlite://" if where == "memory" else f"sqlite:///{tmp_path / 'p.db'}"
    opened = Database(url)
    try:
        assert opened.sqlite is not None
        pragma = {
            name: (opened.sqlite.execute(f"PRAGMA {name}").fetchone() or (None,))[0]
            for name in ("journal_mode", "synchronous", "busy_timeout", "cache_size", "mmap_size")
        }
    finally:
        opened.close()
    if where == "memory":
        assert pragma["journal_mode"] == "memory"
        assert pragma["cache_size"] == -2000  # SQLite's default
        assert pragma["mmap_size"] is None  # nothing to map
    else:
        assert pragma["journal_mode"] == "wal"
        assert pragma["synchronous"] == 1  # NORMAL
        assert pragma["cache_size"] == -8 * 1024
        assert pragma["mmap_size"] == 256 * 1024 * 1024
    assert pragma["busy_timeout"] == 5000


# --- the tables ------------------------------------------------------------------------------


def test_the_checked_in_ddl_is_schema_py_compiled() -> None:
    expected = compiled_ddl()
    assert expected == sqlite_schema.DDL, (
        "emulator/storage/schema.py changed: paste this as DDL in "
        f'emulator/storage/sqlite_schema.py:\n\nDDL = """\\\n{expected}"""\n'
    )
    data_tables = tuple(table.name for table in metadata.sorted_tables if table is not orgs)
    assert data_tables == sqlite_schema.TABLES


def test_the_ddl_makes_what_create_all_makes(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    metadata.create_all(engine)
    engine.dispose()
    old = sqlite3.connect(tmp_path / "old.db")
    new = Database(f"sqlite:///{tmp_path / 'new.db'}")
    try:
        assert new.sqlite is not None
        assert schema_of(new.sqlite) == schema_of(old)
    finally:
        old.close()
        new.close()


def test_a_database_file_made_by_create_all_opens_unchanged(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(insert(orgs), [{"id": 1, "name": "o"}])
        connection.execute(insert(mappings), [{"org": 1, "user_id": "a", "global_user_id": "b"}])
        connection.exec_driver_sql("INSERT INTO amplitude_ids VALUES (1, 'a', 1), (1, 'b', 2)")
    engine.dispose()
    with sqlite3.connect(tmp_path / "old.db") as before:
        schema = schema_of(before)
    reopened = Database(url)
    try:
        assert reopened.sqlite is not None
        assert schema_of(reopened.sqlite) == schema
        store = MappingStore(reopened)
        assert store.dump()["o"].mappings == {"a": "b"}
        with store.write("o") as transaction:
            transaction.apply(plan_batch([Map("c", "b")], transaction), amplitude_id_base=1)
        assert store.dump()["o"].amplitude_ids == {"a": 1, "b": 2, "c": 3}
    finally:
        reopened.close()


def test_a_database_of_an_earlier_version_is_refused_and_left_alone(tmp_path: Path) -> None:
    """Earlier versions keyed every row by the org's name; such a file is not read as ids."""
    path = write_pre_org_id_database(tmp_path / "old.db")
    with pytest.raises(UnsupportedDatabase, match="earlier version of the emulator"):
        Database(f"sqlite:///{path}")
    with sqlite3.connect(path) as old:
        assert old.execute("SELECT * FROM amplitude_ids").fetchall() == [("org-a", "u", 1)]
        tables = {name for (name,) in old.execute("SELECT name FROM sqlite_master")}
    old.close()
    assert "orgs" not in tables


def test_rows_name_orgs_by_id_and_ids_are_never_reused(memory_database: Database) -> None:
    store = MappingStore(memory_database)
    for org in ("0123456789abcdef0123456789abcdef", "org-b"):
        with store.write(org) as transaction:
            transaction.apply(plan_batch([Map("u", "g")], transaction), amplitude_id_base=1)
    connection = memory_database.sqlite
    assert connection is not None
    assert connection.execute("SELECT DISTINCT org FROM mappings ORDER BY org").fetchall() == [
        (1,),
        (2,),
    ]
    memory_database.clear()
    with store.write("org-c") as transaction:
        transaction.apply(plan_batch([Map("u", "g")], transaction), amplitude_id_base=1)
    assert memory_database.org_names() == {
        1: "0123456789abcdef0123456789abcdef",
        2: "org-b",
        3: "org-c",
    }
    assert set(store.dump()) == {"org-c"}


# --- clearing --------------------------------------------------------------------------------


def clear_with_sqlalchemy(opened: Database, org: str | None) -> None:
    # What Database.clear runs on other databases.
    core.clear(opened.engine, None if org is None else opened.org_id(org))


@pytest.mark.parametrize("clear", [Database.clear, clear_with_sqlalchemy])
def test_clear_one_org_then_all(clear: Any, memory_database: Database) -> None:
    fill_every_table(memory_database, ORGS)
    assert rows_per_table(memory_database) == {table: list(ORGS) for table in sqlite_schema.TABLES}
    clear(memory_database, "org-a")
    assert rows_per_table(memory_database) == {table: ["org-b"] for table in sqlite_schema.TABLES}
    clear(memory_database, None)
    assert rows_per_table(memory_database) == {table: [] for table in sqlite_schema.TABLES}
    # The orgs keep their ids: an id is never given to another org.
    assert memory_database.org_names() == {1: "org-a", 2: "org-b"}


@pytest.mark.parametrize("org", ["org-a", None])
def test_clear_is_one_transaction(org: str | None, memory_database: Database) -> None:
    connection = memory_database.sqlite
    assert connection is not None
    fill_every_table(memory_database, ORGS)
    last = sqlite_schema.TABLES[-1]
    connection.execute(
        f"CREATE TRIGGER refuse BEFORE DELETE ON {last} BEGIN SELECT RAISE(ABORT, 'no'); END"
    )
    with pytest.raises(sqlite3.IntegrityError):
        memory_database.clear(org)
    # The tables emptied before the refusal are whole again.
    assert rows_per_table(memory_database) == {table: list(ORGS) for table in sqlite_schema.TABLES}
    assert not connection.in_transaction


# --- SQLAlchemy on the same connection -------------------------------------------------------


def test_the_engine_runs_on_the_one_connection(tmp_path: Path) -> None:
    opened = Database(f"sqlite:///{tmp_path / 'shared.db'}")
    shared = opened.sqlite
    assert shared is not None
    try:
        engine = opened.engine
        assert opened.engine is engine  # made once
        row = {"org": "o", "user_id": "a", "global_user_id": "b"}

        # A Core transaction is the connection's: its writes are seen there before the commit,
        # and a rollback undoes them there.
        def write_then_fail(sqlite_connection: sqlite3.Connection) -> None:
            with engine.begin() as connection:
                connection.execute(insert(mappings), [row])
                assert sqlite_connection.in_transaction
                assert sqlite_connection.execute("SELECT count(*) FROM mappings").fetchone() == (1,)
                raise RuntimeError("roll back")

        with pytest.raises(RuntimeError, match="roll back"):
            write_then_fail(shared)
        assert shared.execute("SELECT count(*) FROM mappings").fetchone() == (0,)
        # And the connection's own statements run inside the same transaction.
        with engine.begin() as connection:
            connection.execute(insert(mappings), [row])
            shared.execute("INSERT INTO mappings VALUES ('o', 'c', 'b')")
            users = connection.execute(select(mappings.c.user_id)).scalars().all()
            assert sorted(users) == ["a", "c"]
        with engine.connect() as connection:
            driver: object = connection.connection.driver_connection
        assert driver is shared
    finally:
        opened.close()
    with pytest.raises(sqlite3.ProgrammingError):
        shared.execute("SELECT 1")  # closed
    # Both writes are in the file, committed together.
    with sqlite3.connect(tmp_path / "shared.db") as reader:
        users = reader.execute("SELECT user_id FROM mappings ORDER BY user_id").fetchall()
    assert users == [("a",), ("c",)]


def test_an_in_memory_database_is_one_database_for_both(memory_database: Database) -> None:
    assert memory_database.sqlite is not None
    memory_database.sqlite.execute("INSERT INTO mappings VALUES ('o', 'a', 'b')")
    memory_database.sqlite.commit()
    with memory_database.engine.connect() as connection:
        assert connection.execute(select(mappings.c.user_id)).scalars().all() == ["a"]


def test_relative_file_urls_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    target = database.sqlite_target("sqlite:///relative.db")
    assert target is not None
    assert target.database == os.path.join(os.getcwd(), "relative.db")
    Database("sqlite:///relative.db").close()
    assert (tmp_path / "relative.db").exists()
