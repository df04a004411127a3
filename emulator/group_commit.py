"""One commit for the mapping batches of one turn of the event loop.

On a file database the commit (writing the WAL, taking its locks, the checkpoints) costs more
than applying a single-mapping batch. Under concurrent load several requests are handled in one
turn of the event loop: their batches are applied one after another in one open transaction,
committed once at the start of the next turn, and only then answered. Nothing is acknowledged
before it is committed. Every other use of the database flushes first (commits what is open), so
reads, resets, state and events only ever see committed batches.

The owner (Backend) calls `join`, `flush` and `fail` under its lock; `join` from the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable


class GroupCommit:
    def __init__(
        self, commit: Callable[[], None], rollback: Callable[[], None], lock: threading.Lock
    ) -> None:
        self._commit = commit
        self._rollback = rollback
        self._lock = lock
        self._waiting: list[asyncio.Future[None]] = []
        self._scheduled = False

    def join(self) -> asyncio.Future[None]:
        """After a batch was applied: a future settled when the batch is committed (or the
        commit failed). The first batch of a turn schedules the commit for the next one."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.append(future)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._commit_scheduled)
        return future

    def _commit_scheduled(self) -> None:
        with self._lock:
            self._scheduled = False
            self.flush()

    def flush(self) -> None:
        """Commit the open batches and let their requests answer. A failed commit is rolled back
        and fails those requests, not the caller: its own work starts from what is committed."""
        if not self._waiting:
            return
        waiting, self._waiting = self._waiting, []
        try:
            self._commit()
        except Exception as error:  # handed to each waiting request
            self._rollback()
            _settle(waiting, error)
            return
        _settle(waiting, None)

    def fail(self, error: BaseException) -> None:
        """A batch failed part-way (not a refusal: the database did): roll back the open
        transaction, and with it the batches waiting for their commit, which fail too."""
        waiting, self._waiting = self._waiting, []
        self._rollback()
        _settle(waiting, error)


def _settle(waiting: list[asyncio.Future[None]], error: BaseException | None) -> None:
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:  # a flush from another thread: a test's in-process reset
        running = None
    for future in waiting:
        loop = future.get_loop()
        if loop is running:
            _resolve(future, error)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, future, error)


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # cancelled: its request went away
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
