"""emulator/domain/identity.py, activity.py, ingest.py and throttle.py: pure rules, with an
in-memory ledger and graph standing in for storage."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from emulator.domain.activity import StoredEvent, count_users, user_activity
from emulator.domain.events import INSERT_ID_WINDOW_MS, Event, Identification, parse_events
from emulator.domain.identity import resolve, resolve_all, stream_members
from emulator.domain.ingest import InsertKey, Named, identify, ingest
from emulator.domain.properties import parse_update
from emulator.domain.throttle import EventThrottle


class Graph:
    def __init__(self, mappings: Mapping[str, str]) -> None:
        self.mappings = dict(mappings)

    def globals_of(self, user_ids: Collection[str]) -> Mapping[str, str]:
        return {u: self.mappings[u] for u in user_ids if u in self.mappings}

    def mapped_into(self, global_user_ids: Collection[str]) -> Mapping[str, list[str]]:
        found: dict[str, list[str]] = {}
        for user, global_user in sorted(self.mappings.items()):
            if global_user in global_user_ids:
                found.setdefault(global_user, []).append(user)
        return found


def test_resolution_follows_chains() -> None:
    mappings = {"c": "a", "a": "b", "x": "y"}
    assert resolve("c", mappings) == "b"
    assert resolve("b", mappings) == "b"
    assert resolve("z", mappings) == "z"
    assert resolve_all(mappings) == {"c": "b", "a": "b", "b": "b", "x": "y", "y": "y"}
    assert stream_members("b", Graph(mappings)) == ["b", "a", "c"]
    assert stream_members("a", Graph(mappings)) == ["a"]  # mapped: only itself


@given(st.dictionaries(st.sampled_from("abcdef"), st.sampled_from("abcdef")))
def test_members_are_everyone_resolving_to_a_global(raw: dict[str, str]) -> None:
    mappings: dict[str, str] = {}
    for user, global_user in raw.items():  # keep it acyclic, as the API does
        if user != global_user and resolve(global_user, mappings) != user:
            chain = {global_user}
            current = global_user
            while current in mappings:
                current = mappings[current]
                chain.add(current)
            if user not in chain:
                mappings[user] = global_user
    persons = resolve_all(mappings)
    for user in "abcdef":
        assert persons.get(user, user) == resolve(user, mappings)
        if user not in mappings:
            expected = {u for u in "abcdef" if resolve(u, mappings) == user}
            assert set(stream_members(user, Graph(mappings))) == expected


def stored(seq: int, time: int, user_id: str = "u", **fields: Any) -> StoredEvent:
    return StoredEvent(
        seq, 1, user_id, fields.pop("device_id", None), "e", time, 0, None, fields=fields
    )


def test_user_activity_orders_pages_and_summarises() -> None:
    events = [stored(2, 10), stored(1, 10, device_id="d1", session_id=4), stored(3, 5)]
    data, page = user_activity(
        amplitude_id=7,
        user_id="u",
        merged_amplitude_ids=[7, 9, 8],
        properties={"p": 1},
        events=events,
        offset=1,
        limit=5,
        direction="latest",
    )
    assert [e.seq for e in page] == [1, 3]
    assert data.merged_amplitude_ids == [8, 9]
    assert (data.num_events, data.num_sessions, data.device_ids) == (3, 1, ["d1"])
    assert data.first_used == data.last_used == dt.date(1970, 1, 1)


def test_counts_by_day_week_and_month() -> None:
    day = 86_400_000
    start = dt.date(1970, 1, 1)  # a Thursday
    activity = [("p1", 0), ("p2", day), ("p1", 5 * day), ("p3", 40 * day)]
    assert count_users(
        activity, start=start, end=start + dt.timedelta(days=2), metric="active", interval=1
    ) == (
        [start, start + dt.timedelta(days=1), start + dt.timedelta(days=2)],
        [1, 1, 0],
    )
    labels, series = count_users(
        activity, start=start, end=start + dt.timedelta(days=11), metric="active", interval=7
    )
    assert labels == [start, dt.date(1970, 1, 5), dt.date(1970, 1, 12)]
    assert series == [2, 1, 0]
    assert count_users(
        activity, start=start, end=dt.date(1970, 2, 28), metric="new", interval=30
    ) == ([start, dt.date(1970, 2, 1)], [2, 1])


class Ledger:
    """EventLedger in memory."""

    def __init__(self) -> None:
        self.ids: dict[Named, int] = {}
        self.seen: dict[InsertKey, int] = {}
        self.events: list[StoredEvent] = []
        self.props: dict[int, dict[str, Any]] = {}

    def amplitude_ids(self, named: Sequence[Named], base: int) -> dict[Named, int]:
        for name in named:
            self.ids.setdefault(name, base + len(self.ids))
        return {name: self.ids[name] for name in named}

    def seen_insert_ids(
        self,
        project: str,  # noqa: ARG002
        keys: Collection[InsertKey],
        since_ms: int,
    ) -> set[InsertKey]:
        return {key for key in keys if self.seen.get(key, since_ms) > since_ms}

    def remember_insert_ids(
        self,
        project: str,  # noqa: ARG002
        keys: Collection[InsertKey],
        now_ms: int,
    ) -> None:
        self.seen.update((key, now_ms) for key in keys)

    def add_events(self, project: str, rows: Sequence[StoredEvent]) -> None:  # noqa: ARG002
        self.events.extend(rows)

    def properties(self, ids: Collection[int]) -> dict[int, dict[str, Any]]:
        return {i: self.props[i] for i in ids if i in self.props}

    def save_properties(self, changed: dict[int, dict[str, Any]]) -> None:
        self.props.update(changed)


def valid(*events: dict[str, Any]) -> list[Event]:
    return parse_events({"events": list(events)}, max_events=None)


def test_ingest_deduplicates_allocates_and_updates() -> None:
    ledger = Ledger()
    accepted = ingest(
        ledger,
        "p",
        valid(
            {"event_type": "a", "device_id": "dev-1", "insert_id": "i"},
            {"event_type": "b", "user_id": "user-1", "device_id": "dev-1", "insert_id": "i"},
            {"event_type": "$identify", "user_id": "user-1", "user_properties": {"x": 1}},
            {"event_type": "c", "user_id": "user-2", "insert_id": "i", "time": 5},
        ),
        now_ms=1000,
        amplitude_id_base=10,
    )
    assert [e.event_type for e in accepted] == ["a", "$identify", "c"]
    assert ledger.ids == {("device", "dev-1"): 10, ("user", "user-1"): 11, ("user", "user-2"): 12}
    assert [(e.event_type, e.amplitude_id, e.time) for e in ledger.events] == [
        ("a", 10, 1000),
        ("c", 12, 5),
    ]
    assert ledger.props == {11: {"x": 1}}
    again = valid({"event_type": "a", "device_id": "dev-1", "insert_id": "i"})
    assert (
        ingest(ledger, "p", again, now_ms=1000 + INSERT_ID_WINDOW_MS - 1, amplitude_id_base=10)
        == []
    )
    assert (
        ingest(ledger, "p", again, now_ms=1000 + INSERT_ID_WINDOW_MS, amplitude_id_base=10) == again
    )


def test_identify_updates_each_its_own_user() -> None:
    ledger = Ledger()
    identify(
        ledger,
        [
            Identification(0, "user-1", None, parse_update({"$add": {"n": 1}})),
            Identification(1, "user-1", None, parse_update({"$add": {"n": 1}})),
            Identification(2, None, "dev-1", None),
        ],
        amplitude_id_base=1,
    )
    assert ledger.props == {1: {"n": 2}}
    assert ledger.ids == {("user", "user-1"): 1, ("device", "dev-1"): 2}


def test_throttle_per_user_and_device() -> None:
    throttle = EventThrottle()
    ids = [("user-1", "dev-1")] * 4
    assert throttle.check("o", "p", ids, 0, eps=2, window_seconds=2) is None
    throttle.record("o", "p", ids, 0)
    found = throttle.check(
        "o", "p", [("user-2", None), (None, "dev-1")], 1, eps=2, window_seconds=2
    )
    assert found is not None
    assert (found.users, found.devices, found.events, found.retry_after) == (
        {},
        {"dev-1": 2},
        [1],
        1,
    )
    assert throttle.check("o", "p", ids, 2, eps=2, window_seconds=2) is None
    assert throttle.check("o", "p", ids, 1, eps=None, window_seconds=2) is None
    assert throttle.check("o", "other", ids, 1, eps=2, window_seconds=2) is None
    throttle.clear("o")
    assert throttle.check("o", "p", ids, 1, eps=2, window_seconds=2) is None
