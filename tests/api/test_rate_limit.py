"""The alias rate limit over HTTP (spec section 5): per org, sliding window, on a frozen clock."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from emulator.clock import Clock
from emulator.server import ServerThread
from emulator.settings import Limits
from emulator.tenancy import Org, Project, Region

T0 = 1_700_000_000.0  # whole seconds; the halves and quarters added below stay exact
THROTTLED_BODY = {"code": 429, "error": "Too many requests", "eps_threshold": 50}
StartEmulator = Callable[..., ServerThread]


@dataclass
class Emulator:
    """A dedicated emulator with a frozen clock, and an HTTP client on it."""

    http: httpx.Client
    clock: Clock
    _serial: int = 0

    def batch(self, count: int) -> str:
        """`count` fresh mapping objects (distinct ids, so no cycles), as the `mapping` string."""
        self._serial += 1
        prefix = f"b{self._serial}-"
        return json.dumps(
            [{"user_id": f"{prefix}u{i}", "global_user_id": f"{prefix}g{i}"} for i in range(count)]
        )

    def post(self, api_key: str, mapping: str) -> httpx.Response:
        return self.http.post("/usermap", data={"api_key": api_key, "mapping": mapping})

    def send(self, api_key: str, count: int) -> httpx.Response:
        return self.post(api_key, self.batch(count))

    def read(self, api_key: str, user_ids: list[str]) -> dict[str, object]:
        response = self.http.get(
            "/api/2/usermap", params={"user_ids": user_ids}, auth=(api_key, "secret")
        )
        assert response.status_code == 200, response.text
        body: dict[str, object] = response.json()
        return body


def start_frozen(start_emulator: StartEmulator, **settings: object) -> Iterator[Emulator]:
    server = start_emulator(**settings)
    clock: Clock = server.app.state.backend.clock
    clock.freeze()
    clock.set(T0)
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        yield Emulator(http, clock)


@pytest.fixture
def emu(start_emulator: StartEmulator) -> Iterator[Emulator]:
    """Amplitude's defaults: 1500 mapping objects per org per 30 s."""
    yield from start_frozen(start_emulator)


def assert_ok(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.json() == {"code": 200}


def assert_throttled(response: httpx.Response) -> int:
    """A 429 in Amplitude's shape; returns its Retry-After."""
    assert response.status_code == 429, response.text
    assert response.json() == THROTTLED_BODY
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers.get("x-emulator-hint")
    retry_after = response.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    return int(retry_after)


# --- where the boundary falls -------------------------------------------------------------------


def test_1499_then_one_more_reaches_1500_and_the_next_is_refused(
    emu: Emulator, api_key: str
) -> None:
    assert_ok(emu.send(api_key, 1499))
    assert_ok(emu.send(api_key, 1))  # 1499 < 1500: admitted, count now 1500
    assert assert_throttled(emu.send(api_key, 1)) == 30


def test_request_taking_1499_to_1999_is_admitted(emu: Emulator, api_key: str) -> None:
    assert_ok(emu.send(api_key, 1499))
    assert_ok(emu.send(api_key, 500))
    assert_throttled(emu.send(api_key, 1))


def test_exactly_1500_in_one_request_then_refused(emu: Emulator, api_key: str) -> None:
    assert_ok(emu.send(api_key, 1500))
    assert assert_throttled(emu.send(api_key, 1)) == 30


def test_many_small_requests_below_the_limit_are_all_admitted(emu: Emulator, api_key: str) -> None:
    for _ in range(14):
        assert_ok(emu.send(api_key, 107))  # 1498 after 14 requests
    assert_ok(emu.send(api_key, 1))  # 1499
    assert_ok(emu.send(api_key, 1))  # 1500
    assert_throttled(emu.send(api_key, 1))


def test_single_2000_batch_accepted_then_next_refused(emu: Emulator, api_key: str) -> None:
    mapping = emu.batch(2000)
    assert_ok(emu.post(api_key, mapping))
    emu.clock.advance(29.5)
    refused = emu.send(api_key, 1)
    assert assert_throttled(refused) == 1
    # The accepted batch was applied; the refused one was not.
    first = json.loads(mapping)[0]
    body = emu.read(api_key, [first["user_id"]])
    assert body[first["user_id"]] == {
        "amplitude_id": 1,
        "mapped_from": [],
        "mapped_to": [{"amplitude_id": 2, "user_id": first["global_user_id"]}],
    }


def test_throttled_batch_is_not_applied_and_allocates_nothing(emu: Emulator, api_key: str) -> None:
    assert_ok(emu.send(api_key, 2000))
    assert_throttled(
        emu.post(api_key, json.dumps([{"user_id": "late", "global_user_id": "late-g"}]))
    )
    assert emu.read(api_key, ["late", "late-g"]) == {
        "late": {"mapped_from": [], "mapped_to": []},
        "late-g": {"mapped_from": [], "mapped_to": []},
    }
    emu.clock.advance(30)
    assert_ok(emu.post(api_key, json.dumps([{"user_id": "late", "global_user_id": "late-g"}])))
    # 2000 objects named 4000 ids before: the accepted retry allocates the next two.
    assert emu.read(api_key, ["late"])["late"] == {
        "amplitude_id": 4001,
        "mapped_from": [],
        "mapped_to": [{"amplitude_id": 4002, "user_id": "late-g"}],
    }


# --- Retry-After is exact -----------------------------------------------------------------------


def test_retry_after_after_one_big_batch_is_exact(emu: Emulator, api_key: str) -> None:
    assert_ok(emu.send(api_key, 2000))
    retry_after = assert_throttled(emu.send(api_key, 1))
    assert retry_after == 30
    emu.clock.advance(retry_after - 1)
    assert assert_throttled(emu.send(api_key, 1)) == 1
    emu.clock.advance(1)
    assert_ok(emu.send(api_key, 1))


@pytest.mark.parametrize("probe_at", [15.0, 15.5, 12.25, 34.0, 34.75])
def test_retry_after_with_entries_at_several_times(
    emu: Emulator, api_key: str, probe_at: float
) -> None:
    # 100 at 0 s, 100 at 5 s, 1200 at 10 s, 200 at 12 s: 1600 in the window. At 30 s the first
    # 100 age out (1500: still not below); at 35 s the second 100 do (1400). So the window
    # opens at 35 s after T0.
    for at, count in [(0.0, 100), (5.0, 100), (10.0, 1200), (12.0, 200)]:
        emu.clock.set(T0 + at)
        assert_ok(emu.send(api_key, count))
    emu.clock.set(T0 + probe_at)
    retry_after = assert_throttled(emu.send(api_key, 1))
    assert retry_after == math.ceil(35 - probe_at)
    if retry_after > 1:
        emu.clock.set(T0 + probe_at + retry_after - 1)
        assert assert_throttled(emu.send(api_key, 1)) == 1
    emu.clock.set(T0 + probe_at + retry_after)
    assert_ok(emu.send(api_key, 1))


def test_retry_after_counts_down_as_time_passes(emu: Emulator, api_key: str) -> None:
    assert_ok(emu.send(api_key, 1600))
    seen = []
    for _ in range(6):
        seen.append(assert_throttled(emu.send(api_key, 1)))
        emu.clock.advance(4.5)
    assert seen == [30, 26, 21, 17, 12, 8]


def test_recovery_when_the_window_ages_out(emu: Emulator, api_key: str) -> None:
    assert_ok(emu.send(api_key, 2000))
    emu.clock.advance(29.875)
    assert assert_throttled(emu.send(api_key, 1)) == 1
    emu.clock.advance(0.125)  # exactly 30 s after the batch: it no longer counts
    assert_ok(emu.send(api_key, 1))
    # A fresh window: 1499 more make 1500, and then the limit holds again.
    assert_ok(emu.send(api_key, 1499))
    assert assert_throttled(emu.send(api_key, 1)) == 30


# --- what counts --------------------------------------------------------------------------------


def test_rejected_requests_do_not_count(emu: Emulator, api_key: str) -> None:
    assert_ok(emu.send(api_key, 1499))
    fresh = json.loads(emu.batch(1500))
    # 400: the last object closes a cycle.
    cycle = [*fresh[:998], {"user_id": "x", "global_user_id": "y"}]
    cycle.append({"user_id": "y", "global_user_id": "x"})
    response = emu.post(api_key, json.dumps(cycle))
    assert response.status_code == 400, response.text
    assert response.json() == {"code": 400, "error": "Invalid mapping", "index": 999}
    # 400: the last object has no global_user_id.
    response = emu.post(api_key, json.dumps([*fresh[:1499], {"user_id": "z"}]))
    assert response.status_code == 400, response.text
    assert response.json()["index"] == 1499
    # 400: not JSON; 400: no mapping.
    assert emu.post(api_key, "[{").status_code == 400
    assert emu.http.post("/usermap", data={"api_key": api_key}).status_code == 400
    # 413: more than 2000 objects.
    assert emu.send(api_key, 2001).status_code == 413
    # 413: over 1 MB.
    big = [{"user_id": f"{i}-" + "x" * 700, "global_user_id": f"g{i}"} for i in range(1500)]
    assert emu.post(api_key, json.dumps(big)).status_code == 413
    # 414: a target over 8 KiB.
    long_query = {"api_key": api_key, "mapping": emu.batch(300)}
    assert emu.http.post("/usermap", params=long_query).status_code == 414
    # None of those counted: the window holds 1499, so one more object is admitted...
    assert_ok(emu.send(api_key, 1))
    # ...and now it is full.
    assert assert_throttled(emu.send(api_key, 1)) == 30


def test_refused_429_requests_do_not_count(emu: Emulator, api_key: str) -> None:
    assert_ok(emu.send(api_key, 1500))
    emu.clock.advance(10)
    for _ in range(3):
        assert assert_throttled(emu.send(api_key, 2000)) == 20
    emu.clock.advance(20)  # 30 s after the accepted batch; the refused ones were 20 s ago
    assert_ok(emu.send(api_key, 1))


def test_self_maps_count(emu: Emulator, api_key: str) -> None:
    self_maps = [{"user_id": f"s{i}", "global_user_id": f"s{i}"} for i in range(1500)]
    assert_ok(emu.post(api_key, json.dumps(self_maps)))
    assert assert_throttled(emu.send(api_key, 1)) == 30


def test_unmaps_of_unmapped_users_count(emu: Emulator, api_key: str) -> None:
    unmaps = [{"user_id": f"n{i}", "unmap": True} for i in range(1500)]
    assert_ok(emu.post(api_key, json.dumps(unmaps)))
    assert assert_throttled(emu.send(api_key, 1)) == 30


def test_objects_count_not_requests(emu: Emulator, api_key: str) -> None:
    # 1499 no-op objects in one request: one short of the limit, so the next is admitted.
    same = [{"user_id": "same", "global_user_id": "same"}] * 1499
    assert_ok(emu.post(api_key, json.dumps(same)))
    assert_ok(emu.post(api_key, json.dumps({"user_id": "solo", "unmap": True})))
    assert_throttled(emu.send(api_key, 1))


def test_get_usermap_is_limited_and_counts(start_emulator: StartEmulator, api_key: str) -> None:
    for emu in start_frozen(start_emulator, limits=Limits(rate_limit=5, rate_window_seconds=2)):
        mapping = json.dumps([{"user_id": f"q{i}", "global_user_id": "r"} for i in range(5)])
        response = emu.http.get("/usermap", params={"api_key": api_key, "mapping": mapping})
        assert_ok(response)
        assert emu.send(api_key, 1).status_code == 429
        response = emu.http.get("/usermap", params={"api_key": api_key, "mapping": mapping})
        assert response.status_code == 429
        assert response.headers["retry-after"] == "2"


def test_reads_are_not_limited(emu: Emulator, api_key: str) -> None:
    assert_ok(emu.post(api_key, json.dumps({"user_id": "u", "global_user_id": "g"})))
    assert_ok(emu.send(api_key, 2000))
    assert_throttled(emu.send(api_key, 1))
    for _ in range(20):
        body = emu.read(api_key, ["u"])
        assert body["u"] == {
            "amplitude_id": 1,
            "mapped_from": [],
            "mapped_to": [{"amplitude_id": 2, "user_id": "g"}],
        }


# --- per org ------------------------------------------------------------------------------------


def test_limit_is_per_org_in_permissive_mode(emu: Emulator, api_key: str) -> None:
    other = api_key + "-other"
    assert_ok(emu.send(api_key, 2000))
    assert_throttled(emu.send(api_key, 1))
    assert_ok(emu.post(other, json.dumps({"user_id": "o", "global_user_id": "p"})))
    assert emu.read(other, ["o"])["o"] == {
        "amplitude_id": 1,
        "mapped_from": [],
        "mapped_to": [{"amplitude_id": 2, "user_id": "p"}],
    }
    assert_ok(emu.send(other, 1499))
    assert_throttled(emu.send(other, 1))
    assert_throttled(emu.send(api_key, 1))


def _project(org: str, name: str) -> Project:
    return Project(
        name=name, org=org, api_key=f"{org}-{name}-key", secret_key="s", region=Region.US
    )


def test_projects_of_one_org_share_the_window(start_emulator: StartEmulator) -> None:
    orgs = (
        Org(name="acme", projects=(_project("acme", "web"), _project("acme", "app"))),
        Org(name="other", projects=(_project("other", "site"),)),
    )
    for emu in start_frozen(start_emulator, orgs=orgs):
        assert_ok(emu.send("acme-web-key", 1000))
        assert_ok(emu.send("acme-app-key", 499))  # 1499 for acme
        assert_ok(emu.send("acme-web-key", 1))  # 1500
        assert assert_throttled(emu.send("acme-app-key", 1)) == 30
        assert_throttled(emu.send("acme-web-key", 1))
        assert_ok(emu.send("other-site-key", 1499))  # another org: its own window
        assert_ok(emu.send("other-site-key", 1))
        assert_throttled(emu.send("other-site-key", 1))
        emu.clock.advance(30)
        assert_ok(emu.send("acme-app-key", 1))


# --- a 429 never hides a 400 ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mapping", "status", "body"),
    [
        (
            '[{"user_id":"a","global_user_id":"b"},{"user_id":"c"}]',
            400,
            {
                "code": 400,
                "error": "Invalid mapping",
                "index": 1,
                "missing_field": "global_user_id",
            },
        ),
        (
            '[{"user_id":"a","global_user_id":""}]',
            400,
            {"code": 400, "error": "Invalid mapping", "index": 0},
        ),
        (
            '[{"user_id":"a","global_user_id":"b"},{"user_id":"b","global_user_id":"a"}]',
            400,
            {"code": 400, "error": "Invalid mapping", "index": 1},
        ),
        ("[]", 400, {"code": 400, "error": "Invalid mapping"}),
        ("{not json", 400, {"code": 400, "error": "Invalid JSON request body"}),
        ('"a string"', 400, {"code": 400, "error": "Invalid mapping"}),
    ],
    ids=["missing-field", "empty-id", "cycle", "empty-array", "not-json", "not-an-object"],
)
def test_invalid_batch_while_throttled_gets_its_400(
    emu: Emulator, api_key: str, mapping: str, status: int, body: dict[str, object]
) -> None:
    assert_ok(emu.send(api_key, 2000))
    assert_throttled(emu.send(api_key, 1))
    response = emu.post(api_key, mapping)
    assert response.status_code == status, response.text
    assert response.json() == body
    assert "retry-after" not in response.headers


def test_other_refusals_while_throttled(emu: Emulator, api_key: str) -> None:
    assert_ok(emu.send(api_key, 2000))
    assert_throttled(emu.send(api_key, 1))
    too_many = emu.send(api_key, 2001)
    assert too_many.status_code == 413
    assert too_many.json() == {"code": 413, "error": "Payload too large"}
    missing = emu.http.post("/usermap", data={"api_key": api_key})
    assert missing.status_code == 400
    assert missing.json()["missing_field"] == "mapping"
    no_key = emu.http.post("/usermap", data={"mapping": emu.batch(1)})
    assert no_key.status_code == 400
    assert no_key.json()["missing_field"] == "api_key"
    # A cycle against the committed graph (mapped by the accepted 2000-object batch).
    committed = json.loads(emu.batch(1))[0]
    emu.clock.advance(30)
    assert_ok(emu.post(api_key, json.dumps([committed])))
    assert_ok(emu.send(api_key, 2000))
    assert_throttled(emu.send(api_key, 1))
    reverse = {"user_id": committed["global_user_id"], "global_user_id": committed["user_id"]}
    cycle = emu.post(api_key, json.dumps([reverse]))
    assert cycle.status_code == 400
    assert cycle.json() == {"code": 400, "error": "Invalid mapping", "index": 0}


# --- configured limits --------------------------------------------------------------------------


def test_tiny_configured_window(start_emulator: StartEmulator, api_key: str) -> None:
    for emu in start_frozen(start_emulator, limits=Limits(rate_limit=5, rate_window_seconds=2)):
        assert_ok(emu.send(api_key, 4))
        assert_ok(emu.send(api_key, 1))  # 4 < 5: admitted, count now 5
        refused = emu.send(api_key, 1)
        assert refused.status_code == 429
        body = refused.json()
        assert (body["code"], body["error"]) == (429, "Too many requests")
        assert isinstance(body["eps_threshold"], int)
        assert refused.headers["retry-after"] == "2"
        emu.clock.advance(1.5)
        assert emu.send(api_key, 1).headers["retry-after"] == "1"
        emu.clock.advance(0.5)
        assert_ok(emu.send(api_key, 3))  # exactly 2 s later: the window is empty
        emu.clock.advance(0.75)
        assert_ok(emu.send(api_key, 3))  # 3 < 5: admitted, count now 6
        # 6 in the window; below 5 once the first 3 age out, 1.25 s from now: Retry-After 2.
        assert emu.send(api_key, 1).headers["retry-after"] == "2"
        emu.clock.advance(1)
        assert emu.send(api_key, 1).status_code == 429
        emu.clock.advance(0.25)
        assert_ok(emu.send(api_key, 1))


def test_no_rate_limit(start_emulator: StartEmulator, api_key: str) -> None:
    for emu in start_frozen(start_emulator, limits=Limits(rate_limit=None)):
        last = ""
        for _ in range(6):
            last = emu.batch(2000)
            assert_ok(emu.post(api_key, last))
        final = json.loads(last)[-1]
        mapped_to = emu.read(api_key, [final["user_id"]])[final["user_id"]]
        assert isinstance(mapped_to, dict)
        assert mapped_to["mapped_to"] == [
            {"amplitude_id": 6 * 4000, "user_id": final["global_user_id"]}
        ]
