"""Random users, events, maps and unmaps (chains included) through the real HTTP server; every
User Activity read, and the day's active-user count, equal a reference model.

The model is the documented semantics in a few lines: amplitude ids allocated in order of first
naming; a user resolves to the end of its chain; a global's stream holds the events of everyone
that resolves to it, a mapped user's only its own; events keep their user_id and the
user_properties they were sent with; a user's properties are its own; users mapped together are
one person in counts. Mappings resolve at read time, so every read follows the latest maps.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from emulator.server import ServerThread
from tests.events import ACTIVITY, HTTPAPI, SECRET, USERS

USERS_POOL = [f"user-{name}" for name in ("ann", "bob", "cyd", "dee", "eve")]
T0 = 1_699_920_000_000  # 2023-11-14 00:00:00 UTC


@dataclass(frozen=True)
class SentEvent:
    seq: int
    user_id: str
    event_type: str
    time: int
    user_properties: dict[str, Any]

    def shown(self) -> tuple[str, str, str, dict[str, Any]]:
        seconds, ms = divmod(self.time - T0, 1000)
        return (
            self.user_id,
            self.event_type,
            f"2023-11-14 00:00:{seconds:02}.{ms:03}000",
            self.user_properties,
        )


class Model:
    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.mappings: dict[str, str] = {}
        self.events: list[SentEvent] = []
        self.properties: dict[str, dict[str, Any]] = {}

    def name(self, user: str) -> None:
        self.ids.setdefault(user, len(self.ids) + 1)

    def chain(self, user: str) -> list[str]:
        """`user`, its global, that one's global, ... to the end."""
        chain = [user]
        while chain[-1] in self.mappings:
            chain.append(self.mappings[chain[-1]])
        return chain

    def resolve(self, user: str) -> str:
        return self.chain(user)[-1]

    def members(self, user: str) -> list[str]:
        if user in self.mappings:
            return [user]
        return [u for u in self.ids if self.resolve(u) == user]

    def activity(self, user: str) -> dict[str, Any]:
        members = self.members(user)
        stream = sorted(
            (e for e in self.events if e.user_id in members), key=lambda e: (e.time, e.seq)
        )
        return {
            "user_id": user,
            "canonical_amplitude_id": self.ids[user],
            "merged_amplitude_ids": sorted(self.ids[m] for m in members if m != user),
            "num_events": len(stream),
            "properties": self.properties.get(user, {}),
            "events": [e.shown() for e in reversed(stream)],
        }

    def active_persons(self) -> int:
        return len({self.resolve(e.user_id) for e in self.events})


EVENT_TYPES = st.sampled_from(["Signed Up", "Viewed", "Bought"])
TIMES = st.integers(min_value=0, max_value=5).map(lambda k: T0 + k * 1000)
PROPERTIES = st.dictionaries(st.sampled_from(["plan", "seat"]), st.integers(0, 3), max_size=2)


class EventsAndMappings(RuleBasedStateMachine):
    base_url: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self.http = httpx.Client(base_url=self.base_url, timeout=10)
        self.api_key = f"key-model-{uuid.uuid4().hex}"
        self.model = Model()

    def teardown(self) -> None:
        self.http.close()

    @rule(
        sent=st.lists(
            st.tuples(st.sampled_from(USERS_POOL), EVENT_TYPES, TIMES, PROPERTIES),
            min_size=1,
            max_size=4,
        )
    )
    def send_events(self, sent: list[tuple[str, str, int, dict[str, Any]]]) -> None:
        body = [
            {"user_id": user, "event_type": kind, "time": time, "user_properties": props}
            for user, kind, time, props in sent
        ]
        response = self.http.post(HTTPAPI, json={"api_key": self.api_key, "events": body})
        assert response.status_code == 200, response.text
        for user, kind, time, props in sent:
            self.model.name(user)
            self.model.events.append(SentEvent(len(self.model.events), user, kind, time, props))
            self.model.properties.setdefault(user, {}).update(props)

    @rule(user=st.sampled_from(USERS_POOL), global_user=st.sampled_from(USERS_POOL))
    def map_user(self, user: str, global_user: str) -> None:
        target = global_user
        cycle = user != target and user in self.model.chain(target)
        response = self._usermap({"user_id": user, "global_user_id": target})
        assert response.status_code == (400 if cycle else 200), response.text
        if cycle:
            return
        self.model.name(user)
        self.model.name(target)
        if user != target:
            self.model.mappings[user] = target

    @rule(user=st.sampled_from(USERS_POOL))
    def unmap_user(self, user: str) -> None:
        assert self._usermap({"user_id": user, "unmap": True}).status_code == 200
        self.model.name(user)
        self.model.mappings.pop(user, None)

    @precondition(lambda self: bool(self.model.ids))
    @rule()
    def read_every_user(self) -> None:
        for user in self.model.ids:
            expected = self.model.activity(user)
            response = self.http.get(
                ACTIVITY, params={"user": self.model.ids[user]}, auth=(self.api_key, SECRET)
            )
            assert response.status_code == 200, response.text
            body = response.json()
            data = body["userData"]
            actual = {name: data[name] for name in expected if name != "events"}
            actual["events"] = [
                (e["user_id"], e["event_type"], e["event_time"], e["user_properties"])
                for e in body["events"]
            ]
            assert actual == expected, user
        counted = self.http.get(
            USERS, params={"start": "20231114", "end": "20231114"}, auth=(self.api_key, SECRET)
        ).json()
        assert counted["data"]["series"] == [[self.model.active_persons()]]

    def _usermap(self, mapping: dict[str, Any]) -> httpx.Response:
        return self.http.post(
            "/usermap", data={"api_key": self.api_key, "mapping": json.dumps(mapping)}
        )


def test_user_activity_matches_the_model(server: ServerThread) -> None:
    EventsAndMappings.base_url = server.base_url
    run_state_machine_as_test(
        EventsAndMappings,
        settings=settings(max_examples=40, stateful_step_count=20, deadline=None),
    )
