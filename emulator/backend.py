"""The emulator's state and the operations on it, per org: moto's "backend".

It ties the pure rules (domain), the database (storage), the rate window and the clock together,
and is the only thing the wire layer calls. Writes are serialised by one lock so that validating
a batch, checking the rate window and committing happen as one step.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from emulator.clock import Clock
from emulator.domain.mapping import InvalidMapping, plan_batch
from emulator.domain.model import MappingOp, OrgGraph, UserMappings
from emulator.domain.ratelimit import SlidingWindowLimiter
from emulator.settings import Settings
from emulator.storage import MappingStore
from emulator.tenancy import Tenancy


class RateLimited(Exception):
    """The org's rate window is full; `retry_after` whole seconds until it is not."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"rate limit reached; retry after {retry_after} s")
        self.retry_after = retry_after


class Backend:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.clock = clock or Clock()
        self.tenancy = Tenancy(settings.orgs)
        self.store = MappingStore(settings.database_url)
        self.limiter = SlidingWindowLimiter()
        self._lock = threading.Lock()

    def map_batch(
        self, org: str, ops: list[MappingOp], shape_error: InvalidMapping | None = None
    ) -> None:
        """Validate and apply one batch, all or nothing, checks in the order of spec section 3.

        `ops` are the well-formed objects; `shape_error`, if given, is the malformed object after
        them. An object among `ops` that closes a cycle comes first (MappingCycle), then the
        malformed one, then the rate window (RateLimited: valid, but not now). Nothing is
        applied or counted in the window unless every check passes.
        """
        with self._lock:
            with self.store.write(org) as transaction:
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
            self.limiter.record(org, now, plan.object_count)

    def read(self, org: str, user_ids: Sequence[str]) -> dict[str, UserMappings]:
        with self._lock:
            return self.store.read(org, user_ids)

    def dump(self) -> dict[str, OrgGraph]:
        with self._lock:
            return self.store.dump()

    def counts(self) -> tuple[int, int, int]:
        with self._lock:
            return self.store.counts()

    def replace_all(self, graphs: dict[str, OrgGraph], tenancy: Tenancy | None = None) -> None:
        """Replace every org's graph (and the tenancy, if given); rate windows start empty."""
        with self._lock:
            self.store.replace_all(graphs)
            self.limiter.clear()
            if tenancy is not None:
                self.tenancy = tenancy

    def reset(self, org: str | None = None) -> None:
        """Forget mappings, amplitude ids and rate windows (of one org, or all, with the clock)."""
        with self._lock:
            self.store.clear(org)
            self.limiter.clear(org)
            if org is None:
                self.clock.reset()

    def close(self) -> None:
        self.store.close()
