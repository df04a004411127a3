"""GET/POST /identify, and what events' user_properties do to a user, over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from emulator.server import ServerThread
from emulator.settings import Limits
from tests.conftest import StartEmulator
from tests.events import IDENTIFY, activity, event, ingested, map_users, refused, set_clock


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        yield http


def identify(client: httpx.Client, api_key: str, identification: object) -> httpx.Response:
    text = identification if isinstance(identification, str) else json.dumps(identification)
    return client.post(IDENTIFY, data={"api_key": api_key, "identification": text})


def identified(client: httpx.Client, api_key: str, identification: object) -> None:
    response = identify(client, api_key, identification)
    assert response.status_code == 200, response.text
    assert response.text == "success"
    assert response.headers["content-type"].startswith("text/plain")


def properties(client: httpx.Client, api_key: str, user_id: str) -> dict[str, Any]:
    found: dict[str, Any] = activity(client, api_key, user_id)["userData"]["properties"]
    return found


def test_every_operation(client: httpx.Client, api_key: str) -> None:
    user = "user-00001"
    identified(client, api_key, {"user_id": user, "user_properties": {"plan": "free", "n": 1}})
    identified(
        client,
        api_key,
        [
            {
                "user_id": user,
                "user_properties": {
                    "$set": {"plan": "pro"},
                    "$setOnce": {"plan": "ignored", "first": "2024-01-01"},
                    "$add": {"n": 2, "fresh": 1.5},
                    "$append": {"tags": ["a", "b"], "n_list": 1},
                    "$prepend": {"tags": "z"},
                    "$unset": {"gone": "-"},
                },
            },
            {
                "user_id": user,
                "user_properties": {
                    "$preInsert": {"tags": ["a", "y"]},
                    "$postInsert": {"tags": ["b", "c", "c"]},
                    "$remove": {"tags": "z"},
                },
            },
        ],
    )
    assert properties(client, api_key, user) == {
        "plan": "pro",
        "n": 3,
        "first": "2024-01-01",
        "fresh": 1.5,
        "tags": ["y", "a", "b", "c"],
        "n_list": [1],
    }
    identified(client, api_key, {"user_id": user, "user_properties": {"$clearAll": "-"}})
    assert properties(client, api_key, user) == {}


def test_get_query_and_multipart(client: httpx.Client, api_key: str) -> None:
    text = json.dumps({"user_id": "user-00001", "user_properties": {"$set": {"via": "get"}}})
    response = client.get(IDENTIFY, params={"api_key": api_key, "identification": text})
    assert response.text == "success"
    text = json.dumps({"user_id": "user-00001", "user_properties": {"$set": {"via": "multipart"}}})
    response = client.post(
        IDENTIFY, files={"api_key": (None, api_key), "identification": (None, text)}
    )
    assert response.text == "success"
    assert properties(client, api_key, "user-00001") == {"via": "multipart"}


def test_identify_applies_to_that_user_only(client: httpx.Client, api_key: str) -> None:
    map_users(client, api_key, {"user-00001": "global-user"})
    identified(client, api_key, {"user_id": "user-00001", "user_properties": {"plan": "pro"}})
    identified(client, api_key, {"device_id": "device-00001", "user_properties": {"os": "ios"}})
    assert properties(client, api_key, "user-00001") == {"plan": "pro"}
    assert properties(client, api_key, "global-user") == {}
    assert activity(client, api_key, "user-00001")["userData"]["num_events"] == 0  # not events


def test_event_user_properties_update_the_user(client: httpx.Client, api_key: str) -> None:
    ingested(
        client,
        api_key,
        event("user-00001", user_properties={"plan": "free", "visits": 1}),
        event("user-00001", user_properties={"$add": {"visits": 1}, "$set": {"plan": "pro"}}),
        event("user-00001", event_type="$identify", user_properties={"$append": {"l": 1}}),
        event("user-00002", user_properties={"plan": "team"}),
    )
    assert properties(client, api_key, "user-00001") == {"plan": "pro", "visits": 2, "l": [1]}
    body = activity(client, api_key, "user-00001", direction="earliest")
    # $identify events update properties but are not events of the stream.
    assert [e["user_properties"] for e in body["events"]] == [
        {"plan": "free", "visits": 1},
        {"$add": {"visits": 1}, "$set": {"plan": "pro"}},
    ]


@pytest.mark.parametrize(
    "identification",
    [None, "", "{", "[]", "3", '"text"', "[1]", '[{"user_id": "user-00001"}, "x"]'],
)
def test_missing_or_malformed_identification(
    client: httpx.Client, api_key: str, identification: str | None
) -> None:
    data = {"api_key": api_key}
    if identification is not None:
        data["identification"] = identification
    assert refused(client.post(IDENTIFY, data=data)) == {"code": 400, "error": "missing_event"}


def test_missing_and_invalid_api_keys(client: httpx.Client) -> None:
    text = json.dumps({"user_id": "user-00001"})
    assert refused(client.post(IDENTIFY, data={"identification": text})) == {
        "code": 400,
        "error": "Request missing required field",
        "missing_field": "api_key",
    }
    assert refused(identify(client, "undefined", {"user_id": "user-00001"}))["error"] == (
        "Invalid API key: undefined"
    )


def test_invalid_identifications_are_named(client: httpx.Client, api_key: str) -> None:
    body = refused(
        identify(
            client,
            api_key,
            [
                {"user_id": "user-00001"},
                {"user_properties": {"a": 1}},
                {"user_id": "abc"},
                {"device_id": "unknown"},
                {"user_id": "user-00002", "user_properties": {"$set": {"a": 1}, "b": 2}},
            ],
        )
    )
    assert body == {
        "code": 400,
        "error": "Request missing required field",
        "events_with_missing_fields": {"user_id": [1], "device_id": [1]},
        "events_with_invalid_fields": {"device_id": [3], "user_properties": [4]},
        "events_with_invalid_id_lengths": {"user_id": [2]},
    }
    # All or nothing: the valid first identification changed nothing.
    found = client.get("/api/2/usersearch", params={"user": "user-00001"}, auth=(api_key, "s"))
    assert found.json()["type"] == "nomatch"


def test_too_many_identifications(start_emulator: StartEmulator) -> None:
    running = start_emulator(limits=Limits(max_events=2))
    with httpx.Client(base_url=running.base_url) as http:
        items = [{"user_id": f"user-{n:05}"} for n in range(3)]
        assert refused(identify(http, "key-many", items), 413)["error"] == "Payload too large"
        identified(http, "key-many", items[:2])


def test_identify_is_throttled_like_httpapi(start_emulator: StartEmulator) -> None:
    running = start_emulator(limits=Limits(event_eps=1, event_rate_window_seconds=2))
    with httpx.Client(base_url=running.base_url) as http:
        set_clock(http, freeze=True, set=1_750_000_000)
        identified(http, "key-throttle", [{"user_id": "user-00001"}] * 2)
        body = refused(identify(http, "key-throttle", {"user_id": "user-00001"}), 429)
        assert body["throttled_users"] == {"user-00001": 1}
        assert body["throttled_events"] == [0]
        set_clock(http, advance=2)
        identified(http, "key-throttle", {"user_id": "user-00001"})
