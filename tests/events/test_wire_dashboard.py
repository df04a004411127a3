"""User Search, User Activity and Active / New Users over HTTP: what mappings do to them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from emulator.server import ServerThread
from emulator.tenancy import Org, Project, Region
from tests.conftest import StartEmulator
from tests.events import (
    ACTIVITY,
    SEARCH,
    USERS,
    activity,
    amplitude_id,
    dashboard,
    event,
    ingested,
    map_users,
    refused,
    stream,
)

DAY = 86_400_000
T0 = 1_699_920_000_000  # 2023-11-14 00:00:00 UTC, a Tuesday


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        yield http


def counts(client: httpx.Client, api_key: str, **params: Any) -> tuple[list[str], list[int]]:
    data = dashboard(client, api_key, USERS, **params)["data"]
    assert data["seriesMeta"] == ["All Users"]
    (series,) = data["series"]
    return data["xValues"], series


# --- authentication ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", [SEARCH, ACTIVITY, USERS])
def test_authentication_comes_first(start_emulator: StartEmulator, path: str) -> None:
    project = Project(name="p", org="o", api_key="key-1", secret_key="secret-1", region=Region.US)
    running = start_emulator(orgs=(Org(name="o", projects=(project,)),))
    with httpx.Client(base_url=running.base_url) as http:
        for auth in (None, ("key-1", "wrong"), ("other", "secret-1")):
            response = http.get(path, params={"user": "x"}, auth=auth)
            assert refused(response, 401)["error"]["type"] == "unauthorized"
            assert response.headers["www-authenticate"] == 'Basic realm="Amplitude"'
        response = http.get(path, params={"api_key": "key-1", "secret_key": "secret-1"})
        assert response.status_code != 401  # credentials as parameters, as for /api/2/usermap


# --- User Search --------------------------------------------------------------------------------


def test_user_search(client: httpx.Client, api_key: str) -> None:
    ingested(
        client,
        api_key,
        event("hank@globex.net", "device-00001"),
        event("hank.scorpio", "device-00001"),
        event(device_id="device-00001"),
        event("homer@globex.net"),
    )
    hank, scorpio, device, homer = 1, 2, 3, 4
    assert dashboard(client, api_key, SEARCH, user="hank@globex.net") == {
        "matches": [{"user_id": "hank@globex.net", "amplitude_id": hank}],
        "type": "match_user_or_device_id",
    }
    assert dashboard(client, api_key, SEARCH, user="device-00001") == {
        "matches": [
            {"user_id": "hank@globex.net", "amplitude_id": hank},
            {"user_id": "hank.scorpio", "amplitude_id": scorpio},
            {"user_id": None, "amplitude_id": device},
        ],
        "type": "match_user_or_device_id",
    }
    assert dashboard(client, api_key, SEARCH, user=str(homer)) == {
        "matches": [{"user_id": "homer@globex.net", "amplitude_id": homer}],
        "type": "match_amplitude_id",
    }
    assert dashboard(client, api_key, SEARCH, user="h")["type"] == "match_user_prefix"
    assert [m["user_id"] for m in dashboard(client, api_key, SEARCH, user="h")["matches"]] == [
        "hank@globex.net",
        "hank.scorpio",
        "homer@globex.net",
    ]
    assert dashboard(client, api_key, SEARCH, user="%") == {"type": "nomatch", "matches": []}
    assert dashboard(client, api_key, SEARCH, user="99") == {"type": "nomatch", "matches": []}
    assert refused(client.get(SEARCH, auth=(api_key, "s")))["error"]["message"] == "Missing user"


def test_mapped_users_are_found_as_themselves(client: httpx.Client, api_key: str) -> None:
    map_users(client, api_key, {"user-00001": "global-user"})
    assert dashboard(client, api_key, SEARCH, user="user-00001")["matches"] == [
        {"user_id": "user-00001", "amplitude_id": 1}
    ]


# --- User Activity: the documented mapping semantics ------------------------------------------


def test_the_global_stream_holds_every_mapped_users_events(
    client: httpx.Client, api_key: str
) -> None:
    ingested(
        client,
        api_key,
        event("user-00001", event_type="One", time=T0, user_properties={"plan": "free"}),
        event("user-00002", event_type="Two", time=T0 + 1, user_properties={"plan": "pro"}),
    )
    map_users(client, api_key, {"user-00001": "user-00002"})  # after the events: retroactive
    assert stream(client, api_key, "user-00002") == [("user-00001", "One"), ("user-00002", "Two")]
    assert stream(client, api_key, "user-00001") == [("user-00001", "One")]
    body = activity(client, api_key, "user-00002")
    assert body["userData"]["num_events"] == 2
    assert body["userData"]["merged_amplitude_ids"] == [amplitude_id(client, api_key, "user-00001")]
    assert body["userData"]["properties"] == {"plan": "pro"}  # its own, not merged
    assert [e["user_properties"] for e in body["events"]] == [{"plan": "pro"}, {"plan": "free"}]
    assert [e["amplitude_id"] for e in body["events"]] == [
        amplitude_id(client, api_key, "user-00002"),
        amplitude_id(client, api_key, "user-00001"),
    ]
    map_users(client, api_key, {"user-00001": None})  # unmapping separates the streams again
    assert stream(client, api_key, "user-00002") == [("user-00002", "Two")]
    assert activity(client, api_key, "user-00002")["userData"]["merged_amplitude_ids"] == []


def test_chains_are_followed_to_their_end(client: httpx.Client, api_key: str) -> None:
    ingested(
        client,
        api_key,
        *[event(f"user-0000{n}", event_type=str(n), time=T0 + n) for n in range(1, 5)],
    )
    map_users(client, api_key, {"user-00003": "user-00001", "user-00001": "user-00002"})
    assert stream(client, api_key, "user-00002") == [
        ("user-00001", "1"),
        ("user-00002", "2"),
        ("user-00003", "3"),
    ]
    assert stream(client, api_key, "user-00001") == [("user-00001", "1")]  # mapped: its own
    assert stream(client, api_key, "user-00004") == [("user-00004", "4")]
    assert counts(client, api_key, start="20231114", end="20231114") == (["2023-11-14"], [2])


def test_summary_fields(client: httpx.Client, api_key: str) -> None:
    ingested(
        client,
        api_key,
        event("user-00001", "device-00002", time=T0 + 2 * DAY, session_id=5),
        event("user-00001", "device-00001", time=T0, session_id=7),
        event("user-00001", time=T0 + DAY, session_id=-1),
    )
    data = activity(client, api_key, "user-00001")["userData"]
    assert data == {
        "user_id": "user-00001",
        "canonical_amplitude_id": 1,
        "merged_amplitude_ids": [],
        "num_events": 3,
        "num_sessions": 2,
        "first_used": "2023-11-14",
        "last_used": "2023-11-16",
        "device_ids": ["device-00001", "device-00002"],
        "last_device_id": "device-00002",
        "properties": {},
    }


def test_pages_and_directions(client: httpx.Client, api_key: str) -> None:
    ingested(
        client, api_key, *[event("user-00001", event_type=str(n), time=T0 + n) for n in range(5)]
    )
    user = amplitude_id(client, api_key, "user-00001")

    def types(**params: Any) -> list[str]:
        body = dashboard(client, api_key, ACTIVITY, user=user, **params)
        assert body["userData"]["num_events"] == 5
        return [e["event_type"] for e in body["events"]]

    assert types() == ["4", "3", "2", "1", "0"]
    assert types(limit=2) == ["4", "3"]
    assert types(offset=1, limit=2) == ["3", "2"]
    assert types(direction="earliest", offset=3) == ["3", "4"]
    assert types(offset=9) == []


def test_equal_times_keep_the_order_sent(client: httpx.Client, api_key: str) -> None:
    ingested(client, api_key, *[event("user-00001", event_type=str(n), time=T0) for n in range(3)])
    assert [t for _, t in stream(client, api_key, "user-00001")] == ["0", "1", "2"]


def test_device_only_profiles(client: httpx.Client, api_key: str) -> None:
    ingested(
        client,
        api_key,
        event(device_id="device-00001", time=T0),
        event("user-00001", "device-00001"),
    )
    found = dashboard(client, api_key, SEARCH, user="device-00001")["matches"]
    device = next(m["amplitude_id"] for m in found if m["user_id"] is None)
    body = dashboard(client, api_key, ACTIVITY, user=device)
    assert body["userData"]["user_id"] is None
    assert [(e["user_id"], e["device_id"]) for e in body["events"]] == [(None, "device-00001")]


def test_an_unknown_amplitude_id_has_an_empty_summary(client: httpx.Client, api_key: str) -> None:
    assert dashboard(client, api_key, ACTIVITY, user=42) == {
        "userData": {
            "user_id": None,
            "canonical_amplitude_id": 42,
            "merged_amplitude_ids": [],
            "num_events": 0,
            "num_sessions": 0,
            "first_used": None,
            "last_used": None,
            "device_ids": [],
            "last_device_id": None,
            "properties": {},
        },
        "events": [],
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "Invalid user"),
        ({"user": "hank"}, "Invalid user"),
        ({"user": "-1"}, "Invalid user"),
        ({"user": "9" * 30}, "Invalid user"),
        ({"user": "1", "limit": "0"}, "Invalid limit"),
        ({"user": "1", "limit": "1001"}, "Invalid limit"),
        ({"user": "1", "offset": "-1"}, "Invalid offset"),
        ({"user": "1", "offset": "x"}, "Invalid offset"),
        ({"user": "1", "direction": "up"}, "Invalid direction"),
    ],
)
def test_invalid_activity_parameters(
    client: httpx.Client, api_key: str, params: dict[str, str], message: str
) -> None:
    body = refused(client.get(ACTIVITY, params=params, auth=(api_key, "s")))
    assert body["error"]["http_code"] == 400
    assert body["error"]["message"] == message


# --- Active and new users ---------------------------------------------------------------------


def test_mapped_users_count_as_one(client: httpx.Client, api_key: str) -> None:
    ingested(
        client,
        api_key,
        event("user-00001", time=T0),
        event("user-00002", time=T0 + DAY),
        event("user-00003", time=T0 + DAY),
        event(device_id="device-00001", time=T0 + DAY),
    )
    assert counts(client, api_key, start="20231113", end="20231115") == (
        ["2023-11-13", "2023-11-14", "2023-11-15"],
        [0, 1, 3],
    )
    assert counts(client, api_key, start="20231113", end="20231115", m="new")[1] == [0, 1, 3]
    map_users(client, api_key, {"user-00002": "user-00001", "user-00003": "user-00002"})
    assert counts(client, api_key, start="20231113", end="20231115")[1] == [0, 1, 2]
    assert counts(client, api_key, start="20231113", end="20231115", m="new")[1] == [0, 1, 1]
    map_users(client, api_key, {"user-00003": None})
    assert counts(client, api_key, start="20231115", end="20231115")[1] == [3]


def test_weeks_and_months(client: httpx.Client, api_key: str) -> None:
    ingested(
        client,
        api_key,
        event("user-00001", time=T0),  # Tue 14 Nov
        event("user-00002", time=T0 + 6 * DAY),  # Mon 20 Nov
        event("user-00001", time=T0 + 20 * DAY),  # Mon 4 Dec
    )
    assert counts(client, api_key, start="20231114", end="20231205", i="7") == (
        ["2023-11-14", "2023-11-20", "2023-11-27", "2023-12-04"],
        [1, 1, 0, 1],
    )
    assert counts(client, api_key, start="20231101", end="20231231", i="30") == (
        ["2023-11-01", "2023-12-01"],
        [2, 1],
    )
    assert counts(client, api_key, start="20231101", end="20231231", i="30", m="new")[1] == [2, 0]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"end": "20231114"}, "Invalid start"),
        ({"start": "20231114"}, "Invalid end"),
        ({"start": "2023-11-14", "end": "20231114"}, "Invalid start"),
        ({"start": "20231314", "end": "20231114"}, "Invalid start"),
        ({"start": "20231115", "end": "20231114"}, "Invalid date range"),
        ({"start": "20000101", "end": "20231114"}, "Invalid date range"),
        ({"start": "20231114", "end": "20231114", "m": "all"}, "Invalid m"),
        ({"start": "20231114", "end": "20231114", "i": "2"}, "Invalid i"),
        ({"start": "20231114", "end": "20231114", "s": "[]"}, "Unsupported s"),
        ({"start": "20231114", "end": "20231114", "g": "country"}, "Unsupported g"),
    ],
)
def test_invalid_count_parameters(
    client: httpx.Client, api_key: str, params: dict[str, str], message: str
) -> None:
    body = refused(client.get(USERS, params=params, auth=(api_key, "s")))
    assert body["error"]["message"] == message
