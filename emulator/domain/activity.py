"""What the Dashboard REST API reports from stored events: a user's activity, and user counts.

Pure functions over events already chosen by identity (see identity.py): the User Activity
summary and page of events, and the active / new users of the Active and New User Counts API,
where users mapped together count as one person.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Direction = Literal["latest", "earliest"]
Metric = Literal["active", "new"]
Interval = Literal[1, 7, 30]

MAX_ACTIVITY_LIMIT = 1000  # "Number of events to return (up to 1000)"
_DAY_MS = 86_400_000
_EPOCH = dt.date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An accepted event as the store keeps it; `seq` is the ingestion order."""

    seq: int
    amplitude_id: int  # of the user (or device profile) that fired it
    user_id: str | None
    device_id: str | None
    event_type: str
    time: int  # ms since the epoch, UTC
    server_upload_time: int
    insert_id: str | None
    event_properties: dict[str, Any] = field(default_factory=dict)
    user_properties: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UserData:
    """The `userData` of a User Activity answer."""

    user_id: str | None
    canonical_amplitude_id: int
    merged_amplitude_ids: list[int]
    num_events: int
    num_sessions: int
    first_used: dt.date | None
    last_used: dt.date | None
    device_ids: list[str]
    last_device_id: str | None
    properties: dict[str, Any]


def day_of(time_ms: int) -> dt.date:
    """The UTC date of a time in ms (the emulated project's time zone is UTC)."""
    return _EPOCH + dt.timedelta(days=time_ms // _DAY_MS)


def chronological(events: Iterable[StoredEvent]) -> list[StoredEvent]:
    """By event time; events of the same time in the order they were ingested."""
    return sorted(events, key=lambda event: (event.time, event.seq))


def user_activity(
    *,
    amplitude_id: int,
    user_id: str | None,
    merged_amplitude_ids: Iterable[int],
    properties: Mapping[str, Any],
    events: Iterable[StoredEvent],
    offset: int,
    limit: int,
    direction: Direction,
) -> tuple[UserData, list[StoredEvent]]:
    """The summary of a stream and one page of it.

    `direction` "latest" pages from the most recent event backwards, "earliest" from the first
    forwards; `offset` counts from that end. Properties are the user's own, never merged.
    """
    ordered = chronological(events)
    device_ids = list(dict.fromkeys(e.device_id for e in ordered if e.device_id is not None))
    sessions = {
        session
        for e in ordered
        if isinstance(session := e.fields.get("session_id"), int) and session >= 0
    }
    last_device = next((e.device_id for e in reversed(ordered) if e.device_id), None)
    data = UserData(
        user_id=user_id,
        canonical_amplitude_id=amplitude_id,
        merged_amplitude_ids=sorted(set(merged_amplitude_ids) - {amplitude_id}),
        num_events=len(ordered),
        num_sessions=len(sessions),
        first_used=day_of(ordered[0].time) if ordered else None,
        last_used=day_of(ordered[-1].time) if ordered else None,
        device_ids=device_ids,
        last_device_id=last_device,
        properties=dict(properties),
    )
    paged = ordered if direction == "earliest" else ordered[::-1]
    return data, paged[offset : offset + limit]


def count_users(
    activity: Iterable[tuple[str, int]],
    *,
    start: dt.date,
    end: dt.date,
    metric: Metric,
    interval: Interval,
) -> tuple[list[dt.date], list[int]]:
    """Active or new persons per interval of [start, end]: `activity` holds (person, time ms)
    for every event, of all time. A person is new in the interval of its first event ever.

    Intervals: days; weeks from Monday; calendar months. Each is labelled with its first day
    inside the range and counts only days inside the range.
    """
    buckets = _buckets(start, end, interval)
    firsts: dict[str, dt.date] = {}
    active: list[set[str]] = [set() for _ in buckets]
    for person, time_ms in activity:
        day = day_of(time_ms)
        if person not in firsts or day < firsts[person]:
            firsts[person] = day
        if metric == "active" and start <= day <= end:
            active[_bucket_index(buckets, day)].add(person)
    if metric == "new":
        for person, day in firsts.items():
            if start <= day <= end:
                active[_bucket_index(buckets, day)].add(person)
    return buckets, [len(persons) for persons in active]


def _buckets(start: dt.date, end: dt.date, interval: Interval) -> list[dt.date]:
    labels = [start]
    day = start
    while True:
        if interval == 1:
            day += dt.timedelta(days=1)
        elif interval == 7:
            day += dt.timedelta(days=7 - day.weekday())
        else:
            day = (day.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
        if day > end:
            return labels
        labels.append(day)


def _bucket_index(labels: Sequence[dt.date], day: dt.date) -> int:
    """The last label on or before `day` (labels are sorted, day is inside the range)."""
    low, high = 0, len(labels) - 1
    while low < high:
        middle = (low + high + 1) // 2
        if labels[middle] <= day:
            low = middle
        else:
            high = middle - 1
    return low
