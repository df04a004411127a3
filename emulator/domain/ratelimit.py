"""Amplitude's alias rate limit: mapping objects per sliding window, per org (spec section 5).

A request is admitted while the window's count is below the limit, even if it takes the count
over; once over, every request waits until enough of the window has aged out. The limit and the
window are passed on each call, so they can be changed at run time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Window:
    entries: deque[tuple[float, int]] = field(default_factory=deque)
    total: int = 0

    def age(self, now: float, window_seconds: float) -> None:
        """Drop what was accepted at t, now that now >= t + window (it counted in [t, t+w))."""
        entries = self.entries
        while entries and entries[0][0] + window_seconds <= now:
            self.total -= entries.popleft()[1]


class SlidingWindowLimiter:
    """Counts accepted mapping objects per key (an org) over a sliding window."""

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}

    def retry_after(
        self, key: str, now: float, *, limit: int | None, window_seconds: float
    ) -> int | None:
        """None when a request may go ahead now; else whole seconds (rounded up) until it may."""
        window = self._windows.get(key)
        if limit is None or window is None:
            return None
        window.age(now, window_seconds)
        remaining = window.total
        if remaining < limit:
            return None
        for accepted_at, count in window.entries:
            remaining -= count
            if remaining < limit:
                return max(1, math.ceil(accepted_at + window_seconds - now))
        raise ValueError(f"limit must be positive, not {limit}")

    def record(self, key: str, now: float, count: int) -> None:
        """Count `count` accepted mapping objects at `now`."""
        window = self._windows.setdefault(key, _Window())
        window.entries.append((now, count))
        window.total += count

    def count(self, key: str, now: float, *, window_seconds: float) -> int:
        window = self._windows.get(key)
        if window is None:
            return 0
        window.age(now, window_seconds)
        return window.total

    def clear(self, key: str | None = None) -> None:
        if key is None:
            self._windows.clear()
        else:
            self._windows.pop(key, None)
