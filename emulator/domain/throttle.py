"""Amplitude's event throttling: events per second per user and per device, averaged over a
sliding window (30 s by default), per project.

The same reading as the alias limit (ratelimit.py): a user or device is admitted while its
window holds fewer events than `eps * window`, even if the request takes it over; then every
request naming it is refused (429) until enough of the window has aged out. A refused request
counts for nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from emulator.domain.ratelimit import SlidingWindowLimiter

Ids = tuple[str | None, str | None]  # (user_id, device_id) of one event


@dataclass(frozen=True, slots=True)
class Throttled:
    """Who is over the limit: current events per second by user and device, the indexes of
    the request's events they fired, and whole seconds until all are below it again."""

    eps_threshold: int
    users: dict[str, int]
    devices: dict[str, int]
    events: list[int]
    retry_after: int


def _key(project: str, kind: str, value: str) -> str:
    return f"{project}\x00{kind}\x00{value}"


class EventThrottle:
    """Per org, one sliding window per (project, user or device)."""

    def __init__(self) -> None:
        self._orgs: dict[str, SlidingWindowLimiter] = {}

    def check(
        self,
        org: str,
        project: str,
        ids: Iterable[Ids],
        now: float,
        *,
        eps: int | None,
        window_seconds: float,
    ) -> Throttled | None:
        """None when every user and device of the request may send now."""
        limiter = self._orgs.get(org)
        if eps is None or limiter is None:
            return None
        limit = max(1, round(eps * window_seconds))
        ids = list(ids)
        over: dict[tuple[str, str], int] = {}
        retry_after = 0
        for kind, value in _named(ids):
            key = _key(project, kind, value)
            wait = limiter.retry_after(key, now, limit=limit, window_seconds=window_seconds)
            if wait is not None:
                count = limiter.count(key, now, window_seconds=window_seconds)
                over[(kind, value)] = math.ceil(count / window_seconds)
                retry_after = max(retry_after, wait)
        if not over:
            return None
        return Throttled(
            eps_threshold=eps,
            users={value: rate for (kind, value), rate in over.items() if kind == "user"},
            devices={value: rate for (kind, value), rate in over.items() if kind == "device"},
            events=[
                index
                for index, (user_id, device_id) in enumerate(ids)
                if ("user", user_id) in over or ("device", device_id) in over
            ],
            retry_after=retry_after,
        )

    def record(self, org: str, project: str, ids: Iterable[Ids], now: float) -> None:
        """Count an accepted request's events for their users and devices."""
        limiter = self._orgs.setdefault(org, SlidingWindowLimiter())
        counts: dict[tuple[str, str], int] = {}
        for user_id, device_id in ids:
            for kind, value in (("user", user_id), ("device", device_id)):
                if value is not None:
                    counts[(kind, value)] = counts.get((kind, value), 0) + 1
        for (kind, value), count in counts.items():
            limiter.record(_key(project, kind, value), now, count)

    def clear(self, org: str | None = None) -> None:
        if org is None:
            self._orgs.clear()
        else:
            self._orgs.pop(org, None)


def _named(ids: Iterable[Ids]) -> list[tuple[str, str]]:
    named: dict[tuple[str, str], None] = {}
    for user_id, device_id in ids:
        if user_id is not None:
            named.setdefault(("user", user_id))
        if device_id is not None:
            named.setdefault(("device", device_id))
    return list(named)
