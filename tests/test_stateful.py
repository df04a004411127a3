"""Random map / unmap / read sequences through the real HTTP server, checked against a model.

The model is spec section 6 in a few lines: a dict user -> global, amplitude ids allocated on
first naming by an accepted request, and every status code and read body predicted exactly.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import httpx
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from emulator.server import ServerThread
from tests.support import reaches

ALPHABET = ["a", "b", "c", "d", "e"]
UNKNOWN = ["nobody", "ghost"]
Transport = Literal["form", "query", "multipart", "get"]


@dataclass(frozen=True)
class MappingObject:
    """One object as sent, and what the spec says it is."""

    wire: object
    kind: Literal["map", "unmap", "invalid"]
    user_id: str = ""
    global_user_id: str = ""
    missing_field: str | None = None


IDS = st.sampled_from(ALPHABET)
_EXTRA_KEYS: list[dict[str, object]] = [{}, {"user_properties": {"plan": "pro"}}, {"event_id": 3}]
EXTRAS = st.sampled_from(_EXTRA_KEYS)


@st.composite
def valid_maps(draw: st.DrawFn) -> MappingObject:
    user, global_user = draw(IDS), draw(IDS)
    wire: dict[str, object] = {"user_id": user, "global_user_id": global_user}
    unmap = draw(st.sampled_from(["absent", False, None]))
    if unmap != "absent":
        wire["unmap"] = unmap
    wire.update(draw(EXTRAS))
    return MappingObject(wire, "map", user, global_user)


@st.composite
def valid_unmaps(draw: st.DrawFn) -> MappingObject:
    user = draw(IDS)
    wire: dict[str, object] = {"user_id": user, "unmap": True}
    if draw(st.booleans()):
        wire["global_user_id"] = None  # null counts as absent
    wire.update(draw(EXTRAS))
    return MappingObject(wire, "unmap", user)


@st.composite
def invalid_objects(draw: st.DrawFn) -> MappingObject:
    """An object with exactly one defect, so the expected answer does not depend on which
    of two defects is checked first."""
    user, global_user = draw(IDS), draw(IDS)
    wire, missing = draw(
        st.sampled_from(
            [
                ({"global_user_id": global_user}, "user_id"),
                ({"user_id": None, "global_user_id": global_user}, "user_id"),
                ({"user_id": user}, "global_user_id"),
                ({"user_id": user, "global_user_id": None}, "global_user_id"),
                ({"user_id": user, "unmap": False}, "global_user_id"),
                ({"user_id": "", "global_user_id": global_user}, None),
                ({"user_id": user, "global_user_id": ""}, None),
                ({"user_id": 7, "global_user_id": global_user}, None),
                ({"user_id": user, "global_user_id": [global_user]}, None),
                ({"user_id": user, "unmap": True, "global_user_id": global_user}, None),
                ({"user_id": user, "global_user_id": global_user, "unmap": "true"}, None),
                ({"user_id": user, "unmap": 1}, None),
                ("junk", None),
                (None, None),
                ([{"user_id": user, "global_user_id": global_user}], None),
            ]
        )
    )
    return MappingObject(wire, "invalid", missing_field=missing)


# Mostly valid objects: maps twice as often as unmaps, an invalid one now and then.
OBJECTS = st.integers(0, 11).flatmap(
    lambda n: invalid_objects() if n == 0 else valid_unmaps() if n <= 3 else valid_maps()
)


def assert_acyclic(graph: Mapping[str, str]) -> None:
    for user in graph:
        seen = {user}
        current = graph.get(user)
        while current is not None:
            assert current not in seen, f"cycle through {current!r} in {graph}"
            seen.add(current)
            current = graph.get(current)


class UsermapMachine(RuleBasedStateMachine):
    base_url: ClassVar[str]  # set by the test on a subclass: the server to drive

    def __init__(self) -> None:
        super().__init__()
        self.http = httpx.Client(base_url=self.base_url, timeout=10)
        self.api_key = f"stateful-{uuid.uuid4().hex}"  # a fresh org per run
        self.graph: dict[str, str] = {}
        self.amplitude_ids: dict[str, int] = {}
        self.sent_since_check = True  # the invariant reads the server after every batch

    def teardown(self) -> None:
        self.http.close()

    # --- the model ----------------------------------------------------------------------

    def predict(self, objects: list[MappingObject]) -> tuple[int, dict[str, object]]:
        """Spec sections 3 and 6: each object in order, shape then cycle; all or nothing."""
        pending = dict(self.graph)
        for index, obj in enumerate(objects):
            if obj.kind == "invalid":
                body: dict[str, object] = {"code": 400, "error": "Invalid mapping", "index": index}
                if obj.missing_field is not None:
                    body["missing_field"] = obj.missing_field
                return 400, body
            if obj.kind == "unmap":
                pending.pop(obj.user_id, None)
            elif obj.user_id == obj.global_user_id:
                continue  # a self-map changes nothing
            elif reaches(pending, obj.global_user_id, obj.user_id):
                return 400, {"code": 400, "error": "Invalid mapping", "index": index}
            else:
                pending[obj.user_id] = obj.global_user_id
        self.graph = pending
        for obj in objects:
            named = [obj.user_id] + ([obj.global_user_id] if obj.kind == "map" else [])
            for user in named:
                self.amplitude_ids.setdefault(user, len(self.amplitude_ids) + 1)
        return 200, {"code": 200}

    def expected_read(self, user: str) -> dict[str, object]:
        entry: dict[str, object] = {}
        if user in self.amplitude_ids:
            entry["amplitude_id"] = self.amplitude_ids[user]
        mapped_from = sorted(
            (self.amplitude_ids[source], source)
            for source, target in self.graph.items()
            if target == user
        )
        entry["mapped_from"] = [{"amplitude_id": aid, "user_id": u} for aid, u in mapped_from]
        target = self.graph.get(user)
        entry["mapped_to"] = (
            []
            if target is None
            else [{"amplitude_id": self.amplitude_ids[target], "user_id": target}]
        )
        return entry

    # --- HTTP ---------------------------------------------------------------------------

    def send(self, mapping: str, transport: Transport) -> httpx.Response:
        fields = {"api_key": self.api_key, "mapping": mapping}
        if transport == "form":
            return self.http.post("/usermap", data=fields)
        if transport == "query":
            return self.http.post("/usermap", params=fields)
        if transport == "get":
            return self.http.get("/usermap", params=fields)
        return self.http.post(
            "/usermap", files={name: (None, value) for name, value in fields.items()}
        )

    def read(self, user_ids: list[str], as_json_array: bool) -> httpx.Response:
        params: dict[str, str | list[str]] = (
            {"user_ids": json.dumps(user_ids)} if as_json_array else {"user_ids": user_ids}
        )
        return self.http.get("/api/2/usermap", params=params, auth=(self.api_key, "secret"))

    # --- rules --------------------------------------------------------------------------

    @rule(
        objects=st.lists(OBJECTS, min_size=1, max_size=5),
        single_as_object=st.booleans(),
        transport=st.sampled_from(["form", "form", "form", "query", "multipart", "get"]),
    )
    def send_batch(
        self, objects: list[MappingObject], single_as_object: bool, transport: Transport
    ) -> None:
        document: object = [obj.wire for obj in objects]
        if len(objects) == 1 and single_as_object and objects[0].kind != "invalid":
            document = objects[0].wire
        response = self.send(json.dumps(document), transport)
        self.sent_since_check = True
        status, body = self.predict(objects)
        assert (response.status_code, response.json()) == (status, body), (
            f"sent {document}; model graph {self.graph}"
        )
        if status == 200:
            assert "x-emulator-hint" not in response.headers
        else:
            assert response.headers.get("x-emulator-hint")

    @rule(
        user_ids=st.lists(st.sampled_from(ALPHABET + UNKNOWN), min_size=1, max_size=4),
        as_json_array=st.booleans(),
    )
    def read_users(self, user_ids: list[str], as_json_array: bool) -> None:
        response = self.read(user_ids, as_json_array)
        assert response.status_code == 200, response.text
        distinct = list(dict.fromkeys(user_ids))
        assert response.json() == {user: self.expected_read(user) for user in distinct}

    # --- invariants ---------------------------------------------------------------------

    @invariant()
    def server_graph_matches_model_and_has_no_cycle(self) -> None:
        assert_acyclic(self.graph)
        if not self.sent_since_check:
            return  # only reads since the last check: nothing could have changed
        self.sent_since_check = False
        response = self.read(ALPHABET, as_json_array=False)
        assert response.status_code == 200, response.text
        body = response.json()
        server_graph: dict[str, str] = {}
        for user, entry in body.items():
            assert len(entry["mapped_to"]) <= 1
            for edge in entry["mapped_to"]:
                server_graph[user] = edge["user_id"]
        assert_acyclic(server_graph)
        assert server_graph == self.graph


def test_usermap_state_machine(server: ServerThread) -> None:
    class OnSessionServer(UsermapMachine):
        base_url = server.base_url

    run_state_machine_as_test(
        OnSessionServer,
        settings=settings(max_examples=60, stateful_step_count=25, deadline=None),
    )


def test_cycle_before_a_malformed_object_is_the_first_failure(
    client: httpx.Client, api_key: str
) -> None:
    # Spec section 3: each object in order, shape then cycle; the first bad object is named.
    assert client.post(
        "/usermap", data={"api_key": api_key, "mapping": '{"user_id":"b","global_user_id":"a"}'}
    ).json() == {"code": 200}
    response = client.post(
        "/usermap",
        data={
            "api_key": api_key,
            "mapping": '[{"user_id":"x","global_user_id":"y"},'
            '{"user_id":"a","global_user_id":"b"},{"global_user_id":"a"}]',
        },
    )
    assert response.status_code == 400
    assert response.json() == {"code": 400, "error": "Invalid mapping", "index": 1}
    read = client.get("/api/2/usermap", params={"user_ids": ["x", "a"]}, auth=(api_key, "s"))
    assert read.json() == {
        "x": {"mapped_from": [], "mapped_to": []},
        "a": {
            "amplitude_id": 2,
            "mapped_from": [{"amplitude_id": 1, "user_id": "b"}],
            "mapped_to": [],
        },
    }
