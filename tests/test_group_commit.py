"""Group commit (emulator/group_commit.py): the batches of one turn of the event loop share one
commit, none is answered before it, a refused batch leaves the others standing, and a batch the
database fails takes its whole turn down, never half of it. Then the same over real sockets: a
client that shuts its sending side still gets its answer."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.backend import Backend
from emulator.domain.mapping import MappingCycle
from emulator.domain.model import Map, MappingOp
from emulator.group_commit import GroupCommit
from emulator.settings import Settings
from tests.conftest import StartEmulator
from tests.support import address_of, http_request, read_response

ORG = "0123456789abcdef0123456789abcdef"


# --- GroupCommit itself ------------------------------------------------------------------------


class Database:
    """What a GroupCommit drives: a commit and a rollback, recorded (and made to fail)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.commit_error: Exception | None = None

    def commit(self) -> None:
        self.calls.append("commit")
        if self.commit_error is not None:
            raise self.commit_error

    def rollback(self) -> None:
        self.calls.append("rollback")


@pytest.fixture
def database() -> Database:
    return Database()


@pytest.fixture
def group(database: Database) -> GroupCommit:
    return GroupCommit(database.commit, database.rollback, threading.Lock())


def test_the_joins_of_one_turn_share_one_commit(database: Database, group: GroupCommit) -> None:
    async def run() -> None:
        waiting = [group.join() for _ in range(5)]
        assert database.calls == []
        assert not any(future.done() for future in waiting)
        await asyncio.gather(*waiting)
        assert database.calls == ["commit"]
        # The next turn commits on its own.
        await group.join()
        assert database.calls == ["commit", "commit"]

    asyncio.run(run())


def test_a_failed_commit_rolls_back_and_fails_each_waiting_request(
    database: Database, group: GroupCommit
) -> None:
    database.commit_error = sqlite3.OperationalError("disk I/O error")

    async def run() -> list[BaseException | None]:
        waiting = [group.join() for _ in range(3)]
        return await asyncio.gather(*waiting, return_exceptions=True)

    outcomes = asyncio.run(run())
    assert outcomes == [database.commit_error] * 3
    assert database.calls == ["commit", "rollback"]


def test_fail_rolls_back_the_turn_and_a_flush_then_has_nothing_to_do(
    database: Database, group: GroupCommit
) -> None:
    error = sqlite3.IntegrityError("a trigger refused")

    async def run() -> list[BaseException | None]:
        waiting = [group.join() for _ in range(2)]
        group.fail(error)
        group.flush()
        return await asyncio.gather(*waiting, return_exceptions=True)

    assert asyncio.run(run()) == [error, error]
    assert database.calls == ["rollback"]


def test_a_flush_from_another_thread_releases_the_waiting_requests(
    database: Database, group: GroupCommit
) -> None:
    async def run() -> None:
        future = group.join()
        flusher = threading.Thread(target=group.flush)  # as a test's in-process reset does
        flusher.start()
        flusher.join()
        assert database.calls == ["commit"]
        await asyncio.wait_for(future, timeout=5)

    asyncio.run(run())


def test_a_cancelled_request_is_left_alone(database: Database, group: GroupCommit) -> None:
    async def run() -> None:
        gone, staying = group.join(), group.join()
        gone.cancel()
        await staying
        assert gone.cancelled()

    asyncio.run(run())
    assert database.calls == ["commit"]


# --- the Backend's batches on a file database ---------------------------------------------------


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Backend]:
    opened = Backend(Settings(database_url=f"sqlite:///{tmp_path / 'graph.db'}"))
    yield opened
    opened.close()


def committed_mappings(backend: Backend) -> dict[str, str]:
    """The mappings another connection sees in the file: only what is committed."""
    assert backend.database.sqlite is not None
    (path,) = [row[2] for row in backend.database.sqlite.execute("PRAGMA database_list")]
    with sqlite3.connect(path) as reader:
        rows = reader.execute("SELECT user_id, global_user_id FROM mappings").fetchall()
    reader.close()
    return dict(rows)


def traced_statements(backend: Backend) -> list[str]:
    statements: list[str] = []
    assert backend.database.sqlite is not None
    backend.database.sqlite.set_trace_callback(statements.append)
    return statements


def test_batches_of_one_turn_are_committed_once_and_answered_after(backend: Backend) -> None:
    async def run() -> None:
        await backend.map_batch(ORG, [Map("first", "g")])  # the org's id, committed on its own
        statements = traced_statements(backend)
        answered: list[str] = []

        async def post(user: str) -> None:
            await backend.map_batch(ORG, [Map(user, "g")])
            answered.append(user)
            assert user in committed_mappings(backend)  # committed before it is answered

        tasks = [asyncio.create_task(post(f"u{n}")) for n in range(8)]
        await asyncio.sleep(0)  # each task applies its batch and waits
        assert answered == []
        assert set(committed_mappings(backend)) == {"first"}
        await asyncio.gather(*tasks)
        assert statements.count("COMMIT") == 1
        assert statements.count("BEGIN") == 1

    asyncio.run(run())


def test_a_refused_batch_leaves_the_others_of_its_turn_standing(backend: Backend) -> None:
    async def run() -> list[BaseException | None]:
        await backend.map_batch(ORG, [Map("a", "b")])
        batches: list[list[MappingOp]] = [[Map("x", "y")], [Map("b", "a")], [Map("z", "y")]]
        return await asyncio.gather(
            *(backend.map_batch(ORG, ops) for ops in batches), return_exceptions=True
        )

    first, refused, third = asyncio.run(run())
    assert first is None
    assert third is None
    assert isinstance(refused, MappingCycle)
    assert committed_mappings(backend) == {"a": "b", "x": "y", "z": "y"}


def test_a_batch_the_database_fails_takes_its_turn_down_and_the_next_turn_works(
    backend: Backend,
) -> None:
    assert backend.database.sqlite is not None
    backend.database.sqlite.execute(
        "CREATE TRIGGER refuse_boom BEFORE INSERT ON mappings WHEN NEW.user_id = 'boom' "
        "BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
    )

    async def run() -> list[BaseException | None]:
        await backend.map_batch(ORG, [Map("before", "g")])
        batches: list[list[MappingOp]] = [
            [Map("same-turn-1", "g")],
            [Map("boom", "g")],
            [Map("same-turn-2", "g")],
        ]
        return await asyncio.gather(
            *(backend.map_batch(ORG, ops) for ops in batches), return_exceptions=True
        )

    outcomes = asyncio.run(run())
    # The batch before the failure shared its transaction: it is rolled back and fails too.
    # The one after it started a new transaction and is committed.
    assert isinstance(outcomes[0], sqlite3.IntegrityError)
    assert isinstance(outcomes[1], sqlite3.IntegrityError)
    assert outcomes[2] is None
    assert committed_mappings(backend) == {"before": "g", "same-turn-2": "g"}

    async def next_turn() -> None:
        await backend.map_batch(ORG, [Map("after", "g")])

    asyncio.run(next_turn())
    assert committed_mappings(backend) == {"before": "g", "same-turn-2": "g", "after": "g"}


def test_reads_and_resets_commit_the_open_batches_first(backend: Backend) -> None:
    async def run() -> None:
        await backend.map_batch(ORG, [Map("first", "g")])
        task = asyncio.create_task(backend.map_batch(ORG, [Map("open", "g")]))
        await asyncio.sleep(0)  # applied, waiting for its turn's commit
        assert "open" not in committed_mappings(backend)
        assert backend.read(ORG, ["open"])["open"].mapped_to  # the read commits it first
        assert "open" in committed_mappings(backend)
        await task
        task = asyncio.create_task(backend.map_batch(ORG, [Map("then-reset", "g")]))
        await asyncio.sleep(0)
        backend.reset()
        await task  # answered: it was committed before the reset forgot it
        assert committed_mappings(backend) == {}

    asyncio.run(run())


# --- over a socket ------------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite://", "file"])
def test_a_client_that_shuts_its_sending_side_still_gets_the_answer(
    start_emulator: StartEmulator, tmp_path: Path, database_url: str
) -> None:
    if database_url == "file":
        database_url = f"sqlite:///{tmp_path / 'half-close.db'}"
    server = start_emulator(database_url=database_url)
    body = (
        b"api_key=half-close&mapping=%7B%22user_id%22%3A%22u%22%2C%22global_user_id%22%3A%22g%22%7D"
    )
    # Keep-alive: the server closes once it has answered, as the client sends no more.
    request = http_request(
        "POST",
        "/usermap",
        [("Content-Type", "application/x-www-form-urlencoded")],
        body,
        close=False,
    )
    with socket.create_connection(address_of(server.base_url), timeout=10) as conn:
        conn.sendall(request)
        conn.shutdown(socket.SHUT_WR)
        result = read_response(conn)
        assert (result.status, result.json()) == (200, {"code": 200})
        assert conn.recv(1) == b""  # closed, not held open for a request that cannot come
