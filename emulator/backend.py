"""The emulator's state and the operations on it, per org: moto's "backend".

It ties the pure rules (domain), the database (storage), the rate window and the clock together,
and is the only thing the wire layer calls. Writes are serialised by one lock so that validating
a batch, checking the rate window and committing happen as one step.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING

from emulator.clock import Clock
from emulator.domain import ingest
from emulator.domain.events import MAX_TIME_MS, Event, Identification
from emulator.domain.mapping import InvalidMapping, plan_batch
from emulator.domain.model import MappingOp, OrgGraph, UserMappings
from emulator.domain.ratelimit import SlidingWindowLimiter
from emulator.domain.throttle import EventThrottle, Throttled
from emulator.group_commit import GroupCommit
from emulator.settings import Settings
from emulator.storage import Database, MappingStore
from emulator.tenancy import Tenancy

if TYPE_CHECKING:
    from emulator.storage.events import EventReader, EventStore


class RateLimited(Exception):
    """The org's rate window is full; `retry_after` whole seconds until it is not."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"rate limit reached; retry after {retry_after} s")
        self.retry_after = retry_after


class EventsThrottled(Exception):
    """Some users or devices of the request are over their events-per-second limit."""

    def __init__(self, throttled: Throttled) -> None:
        super().__init__(f"throttled; retry after {throttled.retry_after} s")
        self.throttled = throttled


class Backend:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.clock = clock or Clock()
        self.tenancy = Tenancy(settings.orgs)
        self.database = Database(settings.database_url)
        self.store = MappingStore(self.database)
        self.limiter = SlidingWindowLimiter()
        self.event_throttle = EventThrottle()
        self._lock = threading.Lock()
        self._group = GroupCommit(self.store.commit_open, self.store.rollback_open, self._lock)

    @cached_property
    def events(self) -> EventStore:
        """Events and identities: SQLAlchemy Core, loaded when the first event API call needs
        it (importing it costs a quarter of the start-up; see storage/database.py). Used under
        the lock only, so it is built once."""
        from emulator.storage.events import EventStore

        return EventStore(self.database)

    async def map_batch(
        self, org: str, ops: list[MappingOp], shape_error: InvalidMapping | None = None
    ) -> None:
        """Validate and apply one batch, all or nothing, checks in the order of spec section 3;
        return once it is committed, with the other batches of this turn of the event loop
        (emulator/group_commit.py).

        `ops` are the well-formed objects; `shape_error`, if given, is the malformed object after
        them. An object among `ops` that closes a cycle comes first (MappingCycle), then the
        malformed one, then the rate window (RateLimited: valid, but not now). Nothing is
        applied or counted in the window unless every check passes.
        """
        with self._lock:
            try:
                with self.store.write(org, commit=False) as transaction:
                    plan = plan_batch(ops, transaction)
                    if shape_error is not None:
                        raise shape_error
                    now = self.clock.now()
                    retry_after = self.limiter.retry_after(
                        org,
                        now,
                        limit=self.limits.rate_limit,
                        window_seconds=self.limits.rate_window_seconds,
                    )
                    if retry_after is not None:
                        raise RateLimited(retry_after)
                    transaction.apply(plan, self.settings.amplitude_id_base)
            except (InvalidMapping, RateLimited):
                raise  # refused before anything was written: the open batches stand
            except BaseException as error:
                self._group.fail(error)
                raise
            self.limiter.record(org, now, plan.object_count)
            if self.limits.rate_limit is None:
                # Nothing ages the window while the limit is off (`--rate-limit off`): age it
                # here, or it grows by one entry per request for as long as the server runs.
                self.limiter.count(org, now, window_seconds=self.limits.rate_window_seconds)
            committed = self._group.join()
        await committed

    @contextmanager
    def _committed(self) -> Iterator[None]:
        """The lock, with the open batches committed: what every use but map_batch holds."""
        with self._lock:
            self._group.flush()
            yield

    def ingest(self, org: str, project: str, events: Sequence[Event], *, eps: int | None) -> int:
        """Accept a valid request's events, all in one transaction, unless a user or device is
        over `eps` (EventsThrottled: nothing written or counted). Returns the server upload
        time in ms."""
        ids = [(event.user_id, event.device_id) for event in events]
        with self._committed():
            now = self.clock.now()
            self._check_throttle(org, project, ids, now, eps)
            # A clock set beyond what event times may be (year 9999) stamps the latest valid time.
            now_ms = min(max(round(now * 1000), 0), MAX_TIME_MS)
            with self.events.write(org) as transaction:
                ingest.ingest(
                    transaction,
                    project,
                    events,
                    now_ms=now_ms,
                    amplitude_id_base=self.settings.amplitude_id_base,
                )
            self.event_throttle.record(org, project, ids, now)
        return now_ms

    def identify(self, org: str, project: str, identifications: Sequence[Identification]) -> None:
        """The Identify API: throttled like HTTP V2, applied in one transaction."""
        ids = [(item.user_id, item.device_id) for item in identifications]
        with self._committed():
            now = self.clock.now()
            self._check_throttle(org, project, ids, now, self.limits.event_eps)
            with self.events.write(org) as transaction:
                ingest.identify(
                    transaction, identifications, amplitude_id_base=self.settings.amplitude_id_base
                )
            self.event_throttle.record(org, project, ids, now)

    def _check_throttle(
        self,
        org: str,
        project: str,
        ids: Sequence[tuple[str | None, str | None]],
        now: float,
        eps: int | None,
    ) -> None:
        throttled = self.event_throttle.check(
            org, project, ids, now, eps=eps, window_seconds=self.limits.event_rate_window_seconds
        )
        if throttled is not None:
            raise EventsThrottled(throttled)

    @contextmanager
    def read_events(self, org: str) -> Iterator[EventReader]:
        """Read one org's events and identities, consistent with the writes (under the lock)."""
        with self._committed(), self.events.read(org) as reader:
            yield reader

    def read(self, org: str, user_ids: Sequence[str]) -> dict[str, UserMappings]:
        with self._committed():
            return self.store.read(org, user_ids)

    def dump(self) -> dict[str, OrgGraph]:
        with self._committed():
            return self.store.dump()

    def counts(self) -> tuple[int, int, int]:
        with self._committed():
            return self.store.counts()

    def replace_all(self, graphs: dict[str, OrgGraph], tenancy: Tenancy | None = None) -> None:
        """Replace every org's graph (and the tenancy, if given); rate windows start empty.
        Events, device profiles and user properties are not in a graph: they are forgotten."""
        with self._committed():
            self.store.replace_all(graphs)  # every table, events too, in one transaction
            self.limiter.clear()
            self.event_throttle.clear()
            if tenancy is not None:
                self.tenancy = tenancy

    def reset(self, org: str | None = None) -> None:
        """Forget mappings, amplitude ids, events, user properties and rate windows (of one
        org, or all, with the clock)."""
        with self._committed():
            self.database.clear(org)
            self.limiter.clear(org)
            self.event_throttle.clear(org)
            if org is None:
                self.clock.reset()

    def close(self) -> None:
        with self._committed():
            self.database.close()
