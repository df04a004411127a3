"""Tenant isolation: no org's credentials reach another org's data (issue 6, item 4).

A property test over three configured orgs with five projects: random maps, unmaps, reads and
resets, sent with random credentials (each project's key, unknown keys, right, wrong and other
projects' secrets, two keys in one request). A model holds each org's mappings, amplitude ids,
rate window and journal; every answer and, after every step, the whole stored state and the
whole journal must match it exactly. So a request with one org's key that read or changed
another org's mappings or ids, consumed its rate window or was journaled under it would be
caught, and a wrong secret must never read anything (401, no data).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from emulator.server import ServerThread
from emulator.settings import Limits, Settings
from emulator.tenancy import Org, Project
from tests.reliability import READ, USERMAP, record_figures

PROJECTS: dict[str, list[tuple[str, str]]] = {  # org -> (api_key, secret_key) of its projects
    "acme": [("acme-web", "acme-web-secret"), ("acme-ios", "acme-ios-secret")],
    "globex": [("globex", "globex-secret")],
    "initech": [("initech-a", "initech-a-secret"), ("initech-ab", "initech-ab-secret")],
}
ORG_OF = {key: org for org, projects in PROJECTS.items() for key, _ in projects}
SECRET_OF = {key: secret for projects in PROJECTS.values() for key, secret in projects}
UNKNOWN_KEYS = ["nobody", "acme", "initech", "undefined"]
KEYS = st.sampled_from([*ORG_OF, *UNKNOWN_KEYS])
SECRETS = st.sampled_from([*SECRET_OF.values(), "wrong", "ACME-WEB-SECRET", ""])
USERS = ["a", "b", "c", "d", "e"]  # the same ids in every org
RATE_LIMIT = 12  # mapping objects per org per window; the clock is frozen
STEPS = {"count": 0}

OBJECTS = st.lists(
    st.tuples(st.sampled_from(USERS), st.one_of(st.none(), st.sampled_from(USERS))),
    min_size=1,
    max_size=3,
)


def orgs() -> tuple[Org, ...]:
    return tuple(
        Org(
            name=org,
            projects=tuple(
                Project(name=key, org=org, api_key=key, secret_key=secret, region=None)
                for key, secret in projects
            ),
        )
        for org, projects in PROJECTS.items()
    )


@dataclass
class OrgModel:
    mappings: dict[str, str] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)
    window: int = 0  # mapping objects accepted in the (frozen) rate window
    journaled: int = 0  # journal entries that carry this org

    def resolves_to(self, view: dict[str, str], start: str, target: str) -> bool:
        current: str | None = start
        while current is not None:
            if current == target:
                return True
            current = view.get(current)
        return False

    def apply(self, objects: list[tuple[str, str | None]]) -> tuple[int, dict[str, Any]]:
        """Spec sections 3, 5 and 6: cycles refused (index named), then the rate window."""
        view = dict(self.mappings)
        for index, (user, target) in enumerate(objects):
            if target is None:
                view.pop(user, None)
            elif target != user:
                if self.resolves_to(view, target, user):
                    return 400, {"code": 400, "error": "Invalid mapping", "index": index}
                view[user] = target
        if self.window >= RATE_LIMIT:
            return 429, {"code": 429, "error": "Too many requests", "eps_threshold": 0}
        self.window += len(objects)
        self.mappings = view
        for user, target in objects:
            for named in (user, target):
                if named is not None and named not in self.ids:
                    self.ids[named] = len(self.ids) + 1
        return 200, {"code": 200}

    def read(self, user: str) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if user in self.ids:
            body["amplitude_id"] = self.ids[user]
        body["mapped_from"] = sorted(
            (
                {"amplitude_id": self.ids[source], "user_id": source}
                for source, target in self.mappings.items()
                if target == user
            ),
            key=lambda edge: edge["amplitude_id"],
        )
        body["mapped_to"] = (
            [{"amplitude_id": self.ids[self.mappings[user]], "user_id": self.mappings[user]}]
            if user in self.mappings
            else []
        )
        return body


class Tenants(RuleBasedStateMachine):
    server: ServerThread  # set by the test

    def __init__(self) -> None:
        super().__init__()
        self.http = httpx.Client(base_url=self.server.base_url, timeout=10)
        self.model = {org: OrgModel() for org in PROJECTS}

    def teardown(self) -> None:
        self.http.close()

    @initialize()
    def start_empty(self) -> None:
        response = self.http.post("/_emulator/reset")
        assert response.status_code == 200, response.text
        self.server.app.state.backend.clock.freeze()  # reset unfroze it

    def step(self) -> None:
        STEPS["count"] += 1

    def check(self, response: httpx.Response, status: int, body: dict[str, Any]) -> None:
        got = response.json()
        if status == 429:
            got["eps_threshold"] = 0
        assert (response.status_code, got) == (status, body), response.headers.get(
            "x-emulator-hint"
        )

    # --- writes ---------------------------------------------------------------------------

    def expect_write(
        self, api_key: str, objects: list[tuple[str, str | None]]
    ) -> tuple[int, dict[str, Any]]:
        org = ORG_OF.get(api_key)
        if org is None:
            return 400, {"code": 400, "error": f"Invalid API key: {api_key}"}
        self.model[org].journaled += 1
        return self.model[org].apply(objects)

    @staticmethod
    def mapping(objects: list[tuple[str, str | None]]) -> str:
        return json.dumps(
            [
                {"user_id": user, "unmap": True}
                if target is None
                else {"user_id": user, "global_user_id": target}
                for user, target in objects
            ]
        )

    @rule(api_key=KEYS, objects=OBJECTS, in_query=st.booleans())
    def write(self, api_key: str, objects: list[tuple[str, str | None]], in_query: bool) -> None:
        self.step()
        parameters = {"api_key": api_key, "mapping": self.mapping(objects)}
        if in_query:
            response = self.http.post(USERMAP, params=parameters)
        else:
            response = self.http.post(USERMAP, data=parameters)
        self.check(response, *self.expect_write(api_key, objects))

    @rule(body_key=KEYS, query_key=KEYS, objects=OBJECTS)
    def write_with_two_keys(
        self, body_key: str, query_key: str, objects: list[tuple[str, str | None]]
    ) -> None:
        """The body's api_key wins: the query's org must be untouched."""
        self.step()
        response = self.http.post(
            USERMAP,
            params={"api_key": query_key, "mapping": self.mapping([("a", "b")])},
            data={"api_key": body_key, "mapping": self.mapping(objects)},
        )
        self.check(response, *self.expect_write(body_key, objects))

    # --- reads ----------------------------------------------------------------------------

    def expect_read(
        self, api_key: str, secret: str, users: list[str]
    ) -> tuple[int, dict[str, Any] | None]:
        org = ORG_OF.get(api_key)
        if org is None or SECRET_OF[api_key] != secret:
            return 401, None
        self.model[org].journaled += 1
        return 200, {user: self.model[org].read(user) for user in users}

    def check_read(self, response: httpx.Response, status: int, body: Any) -> None:
        assert response.status_code == status, response.text
        if status == 401:
            answer = response.json()
            assert list(answer) == ["error"]
            assert answer["error"]["type"] == "unauthorized"
            assert not set(USERS) & set(json.dumps(answer).split('"')), answer
        else:
            assert response.json() == body

    @rule(
        api_key=KEYS,
        secret=SECRETS,
        own_secret=st.booleans(),
        users=st.lists(st.sampled_from([*USERS, "ghost"]), min_size=1, max_size=4, unique=True),
        as_parameters=st.booleans(),
    )
    def read(
        self, api_key: str, secret: str, own_secret: bool, users: list[str], as_parameters: bool
    ) -> None:
        self.step()
        if own_secret and api_key in SECRET_OF:
            secret = SECRET_OF[api_key]
        if as_parameters:
            response = self.http.get(
                READ, params={"api_key": api_key, "secret_key": secret, "user_ids": users}
            )
        else:
            response = self.http.get(READ, params={"user_ids": users}, auth=(api_key, secret))
        self.check_read(response, *self.expect_read(api_key, secret, users))

    @rule(api_key=st.sampled_from(list(ORG_OF)), wrong=SECRETS)
    def read_with_a_wrong_header_and_right_parameters(self, api_key: str, wrong: str) -> None:
        """The Authorization header is what counts: right parameters do not rescue it."""
        self.step()
        response = self.http.get(
            READ,
            params={"api_key": api_key, "secret_key": SECRET_OF[api_key], "user_ids": USERS},
            auth=(api_key, wrong),
        )
        self.check_read(response, *self.expect_read(api_key, wrong, USERS))

    # --- control --------------------------------------------------------------------------

    @rule(api_key=st.sampled_from(list(ORG_OF)))
    def reset_one_org(self, api_key: str) -> None:
        self.step()
        response = self.http.post("/_emulator/reset", params={"api_key": api_key})
        org = ORG_OF[api_key]
        assert response.json() == {"reset": org}
        self.model[org] = OrgModel()

    @rule(api_key=KEYS)
    def journal_of_one_key(self, api_key: str) -> None:
        """GET /_emulator/requests?api_key= lists that key's requests and no other's."""
        self.step()
        everything = self.http.get("/_emulator/requests").json()["requests"]
        mine = self.http.get("/_emulator/requests", params={"api_key": api_key}).json()
        assert [entry["id"] for entry in mine["requests"]] == [
            entry["id"] for entry in everything if entry["api_key"] == api_key
        ]
        assert {entry["org"] for entry in mine["requests"]} <= {ORG_OF.get(api_key), None}

    @invariant()
    def stored_state_is_the_model(self) -> None:
        state = self.http.get("/_emulator/state").json()
        stored = {entry["name"]: entry for entry in state["orgs"]}
        assert set(stored) == set(PROJECTS), "an org appeared that no project has"
        for org, model in self.model.items():
            assert stored[org]["mappings"] == model.mappings, org
            assert stored[org]["amplitude_ids"] == model.ids, org

    @invariant()
    def journal_entries_carry_the_right_org(self) -> None:
        entries = self.http.get("/_emulator/requests").json()["requests"]
        per_org: dict[str, int] = dict.fromkeys(PROJECTS, 0)
        for entry in entries:
            if entry["org"] is not None:
                assert entry["org"] == ORG_OF.get(entry["api_key"]), entry
                per_org[entry["org"]] += 1
            else:
                assert entry["status"] in (400, 401), entry
        assert per_org == {org: model.journaled for org, model in self.model.items()}


@pytest.fixture(scope="module")
def tenants_server() -> Iterator[ServerThread]:
    settings_ = Settings(
        port=0,
        log_level="warning",
        orgs=orgs(),
        limits=Limits(rate_limit=RATE_LIMIT, rate_window_seconds=30),
    )
    with ServerThread(settings_) as running:
        yield running


def test_no_org_reads_or_changes_another(tenants_server: ServerThread, soak: bool) -> None:
    Tenants.server = tenants_server
    STEPS["count"] = 0
    run_state_machine_as_test(
        Tenants,
        settings=settings(
            max_examples=200 if soak else 25,
            stateful_step_count=40 if soak else 25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    assert STEPS["count"] > 0
    record_figures(
        f"tenant-isolation-{'soak' if soak else 'fast'}",
        f"Tenant isolation ({'soak' if soak else 'default'} run)",
        {
            "orgs / projects": f"{len(PROJECTS)} / {len(ORG_OF)}, plus {len(UNKNOWN_KEYS)} "
            "unknown keys",
            "random steps (maps, reads, resets with random credentials)": STEPS["count"],
            "cross-org reads, writes, rate-window or journal leaks": 0,
        },
    )
