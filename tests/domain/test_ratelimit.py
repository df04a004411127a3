"""SlidingWindowLimiter (spec section 5): unit tests and a property test against a naive model."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.domain.ratelimit import SlidingWindowLimiter

T0 = 1_700_000_000.0  # a realistic epoch time; multiples of 1/8 s added to it stay exact
W = 30.0
LIMIT = 1500


def retry_after(
    limiter: SlidingWindowLimiter, now: float, *, key: str = "org", limit: int | None = LIMIT
) -> int | None:
    return limiter.retry_after(key, now, limit=limit, window_seconds=W)


def test_nothing_recorded_is_admitted() -> None:
    assert retry_after(SlidingWindowLimiter(), T0) is None


def test_admitted_while_below_the_limit() -> None:
    limiter = SlidingWindowLimiter()
    limiter.record("org", T0, LIMIT - 1)
    assert retry_after(limiter, T0) is None
    assert limiter.count("org", T0, window_seconds=W) == LIMIT - 1


def test_refused_at_the_limit() -> None:
    limiter = SlidingWindowLimiter()
    limiter.record("org", T0, LIMIT - 1)
    limiter.record("org", T0, 1)
    assert retry_after(limiter, T0) == 30


def test_one_big_batch_over_the_limit_then_refused() -> None:
    limiter = SlidingWindowLimiter()
    assert retry_after(limiter, T0) is None
    limiter.record("org", T0, 2000)
    assert retry_after(limiter, T0) == 30
    assert retry_after(limiter, T0 + 29.5) == 1
    assert retry_after(limiter, T0 + 30) is None


def test_entry_counts_during_half_open_window() -> None:
    # Accepted at t: counts during [t, t + 30).
    limiter = SlidingWindowLimiter()
    limiter.record("org", T0, 5)
    assert limiter.count("org", T0, window_seconds=W) == 5
    assert limiter.count("org", T0 + W - 0.125, window_seconds=W) == 5
    assert limiter.count("org", T0 + W, window_seconds=W) == 0


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    limiter = SlidingWindowLimiter()
    limiter.record("org", T0, LIMIT)
    assert retry_after(limiter, T0 + 0.25) == 30  # 29.75 s left
    assert retry_after(limiter, T0 + 1) == 29
    assert retry_after(limiter, T0 + 29.875) == 1


def test_retry_after_waits_for_enough_entries_to_age() -> None:
    limiter = SlidingWindowLimiter()
    limiter.record("org", T0, 100)
    limiter.record("org", T0 + 5, 100)
    limiter.record("org", T0 + 10, 1200)  # 1400 before this one: admitted
    limiter.record("org", T0 + 12, 200)  # 1400 again before: admitted, now 1600
    # At T0 + 30 the count is 1500, still not below; at T0 + 35 it is 1400.
    assert retry_after(limiter, T0 + 15) == 20
    assert retry_after(limiter, T0 + 34) == 1
    assert retry_after(limiter, T0 + 35) is None


def test_keys_are_independent() -> None:
    limiter = SlidingWindowLimiter()
    limiter.record("org-a", T0, 2000)
    assert retry_after(limiter, T0, key="org-a") == 30
    assert retry_after(limiter, T0, key="org-b") is None
    assert limiter.count("org-b", T0, window_seconds=W) == 0


def test_no_limit_admits_everything() -> None:
    limiter = SlidingWindowLimiter()
    limiter.record("org", T0, 1_000_000)
    assert retry_after(limiter, T0, limit=None) is None


def test_limit_and_window_are_read_on_each_call() -> None:
    limiter = SlidingWindowLimiter()
    limiter.record("org", T0, 10)
    assert limiter.retry_after("org", T0 + 1, limit=10, window_seconds=2) == 1
    assert limiter.retry_after("org", T0 + 1, limit=11, window_seconds=2) is None
    assert limiter.retry_after("org", T0 + 1, limit=5, window_seconds=4) == 3


def test_clear_one_key() -> None:
    limiter = SlidingWindowLimiter()
    limiter.record("org-a", T0, 2000)
    limiter.record("org-b", T0, 2000)
    limiter.clear("org-a")
    assert retry_after(limiter, T0, key="org-a") is None
    assert retry_after(limiter, T0, key="org-b") == 30
    limiter.clear("unknown")  # no error
    assert retry_after(limiter, T0, key="org-b") == 30


def test_clear_all() -> None:
    limiter = SlidingWindowLimiter()
    limiter.record("org-a", T0, 2000)
    limiter.record("org-b", T0, 2000)
    limiter.clear()
    assert retry_after(limiter, T0, key="org-a") is None
    assert retry_after(limiter, T0, key="org-b") is None


# --- property test against a naive model ------------------------------------------------------


@dataclass
class NaiveWindow:
    """Every accepted (t, count); an entry counts during [t, t + window)."""

    window: float
    entries: list[tuple[float, int]] = field(default_factory=list)

    def count(self, now: float) -> int:
        return sum(n for t, n in self.entries if t <= now < t + self.window)

    def admitted(self, now: float, limit: int) -> bool:
        return self.count(now) < limit


@dataclass(frozen=True)
class Attempt:
    key: str
    wait: float  # seconds since the previous attempt
    count: int


ATTEMPTS = st.builds(
    Attempt,
    key=st.sampled_from(["org-a", "org-b"]),
    # Multiples of 1/8 s (exact in binary), with long pauses now and then.
    wait=st.integers(0, 48).map(lambda eighths: eighths / 8) | st.sampled_from([0.0, 10.0, 31.0]),
    count=st.integers(1, 12),
)


@settings(max_examples=400, deadline=None)
@given(
    limit=st.integers(1, 25),
    window=st.sampled_from([0.5, 1.0, 2.0, 2.5, 7.0, 30.0]),
    attempts=st.lists(ATTEMPTS, min_size=1, max_size=60),
)
def test_limiter_agrees_with_naive_model(
    limit: int, window: float, attempts: list[Attempt]
) -> None:
    limiter = SlidingWindowLimiter()
    models = {"org-a": NaiveWindow(window), "org-b": NaiveWindow(window)}
    now = T0
    for attempt in attempts:
        now += attempt.wait
        model = models[attempt.key]
        answer = limiter.retry_after(attempt.key, now, limit=limit, window_seconds=window)
        assert (answer is None) == model.admitted(now, limit)
        if answer is None:
            limiter.record(attempt.key, now, attempt.count)
            model.entries.append((now, attempt.count))
        else:
            # The smallest whole number of seconds after which the count is below the limit.
            assert answer >= 1
            assert model.admitted(now + answer, limit)
            assert not model.admitted(now + answer - 1, limit)
            later = copy.deepcopy(limiter)
            assert (
                later.retry_after(attempt.key, now + answer - 1, limit=limit, window_seconds=window)
                is not None
            )
            assert (
                later.retry_after(attempt.key, now + answer, limit=limit, window_seconds=window)
                is None
            )
        for key, other in models.items():
            assert limiter.count(key, now, window_seconds=window) == other.count(now)


@pytest.mark.parametrize("limit", [1, 2])
def test_tiny_limits(limit: int) -> None:
    limiter = SlidingWindowLimiter()
    limiter.record("org", T0, 1)
    expected = None if limit == 2 else 30
    assert retry_after(limiter, T0, limit=limit) == expected
