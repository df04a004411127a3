"""POST /2/httpapi and POST /batch over HTTP: every documented success and refusal row."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from emulator.server import ServerThread
from emulator.settings import Limits
from emulator.tenancy import Org, Project, Region
from tests.conftest import StartEmulator
from tests.events import (
    BATCH,
    CONTROL,
    HTTPAPI,
    activity,
    event,
    ingested,
    refused,
    set_clock,
    stream,
    upload,
)

T0 = 1_700_000_000_000  # ms; 2023-11-14 22:13:20 UTC


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        yield http


@pytest.fixture(scope="module")
def clocked() -> Iterator[httpx.Client]:
    """An emulator of this module's own, whose clock the tests set (the session's is shared)."""
    with ServerThread() as own, httpx.Client(base_url=own.base_url, timeout=10) as http:
        yield http


# --- success -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [HTTPAPI, BATCH])
def test_success_body_is_exact(clocked: httpx.Client, api_key: str, path: str) -> None:
    set_clock(clocked, freeze=True, set=1_800_000_000.25)
    body = json.dumps({"api_key": api_key, "events": [event("user-00001"), event("user-00002")]})
    response = clocked.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "x-emulator-hint" not in response.headers
    assert response.json() == {
        "code": 200,
        "events_ingested": 2,
        "payload_size_bytes": len(body.encode()),
        "server_upload_time": 1_800_000_000_250,
    }
    set_clock(clocked, freeze=False)


@pytest.mark.parametrize(
    "content_type", ["text/plain", "text/plain;charset=UTF-8", None, "application/vnd.x+json"]
)
def test_json_in_other_content_types(
    client: httpx.Client, api_key: str, content_type: str | None
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    body = json.dumps({"api_key": api_key, "events": [event("user-00001")]}).encode()
    request = client.build_request("POST", HTTPAPI, content=body, headers=headers)
    if content_type is None:
        request.headers.pop("content-type", None)
    assert client.send(request).status_code == 200


def test_a_form_content_type_is_refused(client: httpx.Client, api_key: str) -> None:
    body = json.dumps({"api_key": api_key, "events": [event("user-00001")]})
    response = client.post(
        HTTPAPI, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert refused(response) == {"code": 400, "error": "Invalid JSON request body"}
    assert "application/json" in response.headers["x-emulator-hint"]


def test_gzip_bodies(client: httpx.Client, api_key: str) -> None:
    body = json.dumps({"api_key": api_key, "events": [event("user-00001")]}).encode()
    packed = gzip.compress(body)
    response = client.post(
        HTTPAPI,
        content=packed,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status_code == 200
    assert response.json()["payload_size_bytes"] == len(packed)
    for content, encoding in ((packed[:-9], "gzip"), (b"not gzip", "gzip"), (body, "br")):
        response = client.post(HTTPAPI, content=content, headers={"Content-Encoding": encoding})
        assert refused(response) == {"code": 400, "error": "Invalid JSON request body"}


def test_time_defaults_to_the_server_upload_time(clocked: httpx.Client, api_key: str) -> None:
    set_clock(clocked, freeze=True, set=1_750_000_000)
    ingested(clocked, api_key, event("user-00001", event_type="No time"))
    ingested(clocked, api_key, event("user-00001", event_type="Timed", time=T0))
    events = activity(clocked, api_key, "user-00001", direction="earliest")["events"]
    assert [(e["event_type"], e["event_time"]) for e in events] == [
        ("Timed", "2023-11-14 22:13:20.000000"),
        ("No time", "2025-06-15 15:06:40.000000"),
    ]
    assert {e["server_upload_time"] for e in events} == {"2025-06-15 15:06:40.000000"}
    set_clock(clocked, freeze=False)


# --- request-level refusals ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"", "Missing request body"),
        (b"{", "Invalid JSON request body"),
        (b"[]", "Invalid JSON request body"),
        (b'"text"', "Invalid JSON request body"),
        (b'{"api_key": NaN}', "Invalid JSON request body"),
        (b"\xff\xfe", "Invalid JSON request body"),
        (b"[" * 100_000, "Invalid JSON request body"),
    ],
)
def test_bodies_that_are_not_a_json_object(
    client: httpx.Client, content: bytes, error: str
) -> None:
    response = client.post(HTTPAPI, content=content, headers={"Content-Type": "application/json"})
    assert refused(response) == {"code": 400, "error": error}


@pytest.mark.parametrize("api_key_value", ["absent", None, "", 7, ["k"]])
def test_missing_api_key(client: httpx.Client, api_key_value: object) -> None:
    body: dict[str, Any] = {"events": [event("user-00001")]}
    if api_key_value != "absent":
        body["api_key"] = api_key_value
    assert refused(client.post(HTTPAPI, json=body)) == {
        "code": 400,
        "error": "Request missing required field",
        "missing_field": "api_key",
    }


def test_unset_client_keys_are_invalid(client: httpx.Client) -> None:
    for key in ("undefined", "null"):
        assert refused(upload(client, key, event("user-00001"))) == {
            "code": 400,
            "error": f"Invalid API key: {key}",
        }


def test_configured_keys_and_regions(start_emulator: StartEmulator) -> None:
    eu = Project(name="eu", org="acme", api_key="eu-key", secret_key="s", region=Region.EU)
    running = start_emulator(orgs=(Org(name="acme", projects=(eu,)),))
    with httpx.Client(base_url=running.base_url) as http:
        assert refused(upload(http, "other-key", event("user-00001")))["error"] == (
            "Invalid API key: other-key"
        )
        us_host = {"Host": "api2.amplitude.com"}
        response = http.post(
            HTTPAPI, json={"api_key": "eu-key", "events": [event("user-00001")]}, headers=us_host
        )
        assert refused(response)["error"] == "Invalid API key: eu-key"
        eu_host = {"Host": "api.eu.amplitude.com"}
        response = http.post(
            HTTPAPI, json={"api_key": "eu-key", "events": [event("user-00001")]}, headers=eu_host
        )
        assert response.status_code == 200


@pytest.mark.parametrize("events", ["absent", None, []])
def test_missing_events(client: httpx.Client, api_key: str, events: object) -> None:
    body: dict[str, Any] = {"api_key": api_key}
    if events != "absent":
        body["events"] = events
    assert refused(client.post(HTTPAPI, json=body)) == {
        "code": 400,
        "error": "Request missing required field",
        "missing_field": "events",
    }


@pytest.mark.parametrize("events", [{"event_type": "x"}, "events", [event("user-00001"), 3]])
def test_events_that_are_not_objects(client: httpx.Client, api_key: str, events: object) -> None:
    response = client.post(HTTPAPI, json={"api_key": api_key, "events": events})
    assert refused(response) == {"code": 400, "error": "Invalid event JSON"}


@pytest.mark.parametrize(
    "options", ["min_id_length=3", {"min_id_length": 0}, {"min_id_length": "3"}]
)
def test_invalid_options(client: httpx.Client, api_key: str, options: object) -> None:
    body = {"api_key": api_key, "events": [event("user-00001")], "options": options}
    assert refused(client.post(HTTPAPI, json=body)) == {"code": 400, "error": "Invalid options"}


def test_more_than_2000_events_on_httpapi(client: httpx.Client, api_key: str) -> None:
    events = [event(f"user-{n:05}") for n in range(2001)]
    response = upload(client, api_key, *events)
    assert refused(response, 413) == {"code": 413, "error": "Payload too large"}
    assert upload(client, api_key, *events[:2000]).status_code == 200
    assert upload(client, api_key, *events, path=BATCH).json()["events_ingested"] == 2001


def test_over_one_megabyte_on_httpapi_but_not_on_batch(client: httpx.Client, api_key: str) -> None:
    big = {"blob": "x" * 1000}
    events = [event("user-00001", event_properties=big) for _ in range(1100)]
    response = upload(client, api_key, *events)
    assert refused(response, 413) == {"code": 413, "error": "Payload too large"}
    assert "/2/httpapi" in response.headers["x-emulator-hint"]
    assert upload(client, api_key, *events, path=BATCH).status_code == 200


def test_the_batch_limit_is_a_setting(start_emulator: StartEmulator) -> None:
    running = start_emulator(limits=Limits(batch_max_request_bytes=2000))
    with httpx.Client(base_url=running.base_url) as http:
        events = [event("user-00001", event_properties={"blob": "x" * 500}) for _ in range(4)]
        response = upload(http, "key-batch-limit", *events, path=BATCH)
        assert refused(response, 413) == {"code": 413, "error": "Payload too large"}
        assert "2000-byte limit of /batch" in response.headers["x-emulator-hint"]
        packed = gzip.compress(json.dumps({"api_key": "k", "events": events}).encode())
        response = http.post(BATCH, content=packed, headers={"Content-Encoding": "gzip"})
        assert refused(response, 413)["error"] == "Payload too large"  # inflated size counts


def test_long_request_targets(client: httpx.Client, api_key: str) -> None:
    response = client.post(HTTPAPI + "?pad=" + "x" * 9000, json={"api_key": api_key})
    assert refused(response, 414) == {"code": 414, "error": "URI too long"}


# --- event-level refusals: all bad events named, nothing ingested ------------------------------


def _refused_events(client: httpx.Client, api_key: str, *events: dict[str, Any]) -> dict[str, Any]:
    body = refused(upload(client, api_key, event("good-user-1"), *events))
    # All or nothing: the valid first event was not ingested either.
    assert client.get(
        "/api/2/usersearch", params={"user": "good-user-1"}, auth=(api_key, "s")
    ).json() == {
        "type": "nomatch",
        "matches": [],
    }
    return body


def test_missing_event_type_and_ids(client: httpx.Client, api_key: str) -> None:
    body = _refused_events(
        client,
        api_key,
        {"user_id": "user-00001"},
        {"event_type": "No ids"},
        {"event_type": None, "device_id": "device-1", "user_id": None},
    )
    assert body == {
        "code": 400,
        "error": "Request missing required field",
        "events_with_missing_fields": {"event_type": [1, 3], "user_id": [2], "device_id": [2]},
    }


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"event_type": ""}, "event_type"),
        ({"event_type": 3}, "event_type"),
        ({"event_type": "x" * 1025}, "event_type"),
        ({"user_id": 12345}, "user_id"),
        ({"user_id": "u" * 1025}, "user_id"),
        ({"device_id": ["device-1"]}, "device_id"),
        ({"time": "2023-11-14T22:13:20Z"}, "time"),
        ({"time": 1.7e12}, "time"),
        ({"time": -1}, "time"),
        ({"time": True}, "time"),
        ({"insert_id": 5}, "insert_id"),
        ({"event_properties": "x"}, "event_properties"),
        ({"event_properties": {"k": "v" * 1025}}, "event_properties"),
        ({"event_properties": {"k" * 1025: "v"}}, "event_properties"),
        ({"user_properties": [1]}, "user_properties"),
        ({"user_properties": {"$set": {"a": 1}, "plan": "pro"}}, "user_properties"),
        ({"user_properties": {"$add": {"n": "1"}}}, "user_properties"),
        ({"user_properties": {"$set": "plan"}}, "user_properties"),
        ({"groups": ["g"]}, "groups"),
        ({"session_id": "s"}, "session_id"),
        ({"price": "4.99"}, "price"),
        ({"platform": 7}, "platform"),
    ],
)
def test_invalid_fields(
    client: httpx.Client, api_key: str, bad: dict[str, Any], field: str
) -> None:
    body = _refused_events(client, api_key, {**event("user-00001"), **bad})
    assert body == {
        "code": 400,
        "error": "Invalid field values on some events",
        "events_with_invalid_fields": {field: [1]},
    }


def test_properties_nested_over_40_levels(client: httpx.Client, api_key: str) -> None:
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(39):
        deep = {"k": deep}  # 40 levels: accepted
    ingested(client, api_key, event("user-00001", event_properties=deep))
    body = _refused_events(client, api_key, event("user-00001", event_properties={"k": deep}))
    assert body["events_with_invalid_fields"] == {"event_properties": [1]}


@pytest.mark.parametrize(
    "bad_id", ["anonymous", "NULL", "n/a", "00000000-0000-0000-0000-000000000000", "-1", '""']
)
def test_ids_amplitude_refuses(client: httpx.Client, api_key: str, bad_id: str) -> None:
    body = _refused_events(client, api_key, event(device_id=bad_id))
    assert body["events_with_invalid_fields"] == {"device_id": [1]}


def test_short_ids_and_min_id_length(client: httpx.Client, api_key: str) -> None:
    body = _refused_events(client, api_key, event("abcd"), event("user-00001", "dev"))
    assert body == {
        "code": 400,
        "error": "Invalid id length for user_id or device_id",
        "events_with_invalid_id_lengths": {"user_id": [1], "device_id": [2]},
    }
    response = client.post(
        HTTPAPI,
        json={"api_key": api_key, "events": [event("abc", "dev")], "options": {"min_id_length": 3}},
    )
    assert response.status_code == 200
    assert stream(client, api_key, "abc") == [("abc", "Clicked Button")]


def test_every_defect_of_every_event_is_named(client: httpx.Client, api_key: str) -> None:
    body = _refused_events(
        client,
        api_key,
        {"user_id": "abc", "event_type": "", "time": "now"},
        {"device_id": "device-00001"},
    )
    assert body == {
        "code": 400,
        "error": "Request missing required field",
        "events_with_missing_fields": {"event_type": [2]},
        "events_with_invalid_fields": {"event_type": [1], "time": [1]},
        "events_with_invalid_id_lengths": {"user_id": [1]},
    }


def test_unknown_keys_are_ignored(client: httpx.Client, api_key: str) -> None:
    ingested(client, api_key, event("user-00001", whatever={"x": 1}, library="sdk/1.0"))
    (shown,) = activity(client, api_key, "user-00001")["events"]
    assert "whatever" not in shown
    assert shown["library"] == "sdk/1.0"


# --- insert_id de-duplication -------------------------------------------------------------------


def test_insert_id_deduplication_per_device_over_seven_days(
    clocked: httpx.Client, api_key: str
) -> None:
    set_clock(clocked, freeze=True, set=1_750_000_000)
    first = event("user-00001", "device-00001", "First", insert_id="i-1")
    again = event("user-00001", "device-00001", "Again", insert_id="i-1")
    other_device = event("user-00001", "device-00002", "Other device", insert_id="i-1")
    body = ingested(clocked, api_key, first, again, other_device)
    assert body["events_ingested"] == 3  # acknowledged; the duplicate is dropped
    set_clock(clocked, advance=7 * 24 * 3600 - 0.001)
    ingested(clocked, api_key, again)
    set_clock(clocked, advance=0.001)
    ingested(clocked, api_key, event("user-00001", "device-00001", "After 7 days", insert_id="i-1"))
    assert [t for _, t in stream(clocked, api_key, "user-00001")] == [
        "First",
        "Other device",
        "After 7 days",
    ]
    set_clock(clocked, freeze=False)


def test_insert_id_without_a_device_is_per_user(client: httpx.Client, api_key: str) -> None:
    ingested(
        client,
        api_key,
        event("user-00001", event_type="A", insert_id="same"),
        event("user-00002", event_type="B", insert_id="same"),
        event("user-00001", event_type="C", insert_id="same"),
    )
    assert stream(client, api_key, "user-00001") == [("user-00001", "A")]
    assert stream(client, api_key, "user-00002") == [("user-00002", "B")]


def test_a_duplicate_changes_no_properties(client: httpx.Client, api_key: str) -> None:
    add = event("user-00001", event_type="$identify", insert_id="add-1")
    add["user_properties"] = {"$add": {"logins": 1}}
    ingested(client, api_key, add)
    ingested(client, api_key, add)
    assert activity(client, api_key, "user-00001")["userData"]["properties"] == {"logins": 1}


# --- throttling: events per second per user / device over the window ------------------------


@pytest.fixture
def throttled(start_emulator: StartEmulator) -> Iterator[httpx.Client]:
    """10 events per 10 s per user or device on /2/httpapi, 20 on /batch; clock frozen."""
    running = start_emulator(
        limits=Limits(event_eps=1, batch_event_eps=2, event_rate_window_seconds=10)
    )
    with httpx.Client(base_url=running.base_url) as http:
        set_clock(http, freeze=True, set=1_750_000_000)
        yield http


def test_429_when_a_user_or_device_is_over_its_rate(throttled: httpx.Client) -> None:
    key = "key-throttle"
    ingested(throttled, key, *[event("user-00001", "device-00001") for _ in range(10)])
    response = upload(
        throttled,
        key,
        event("user-00002"),
        event("user-00001"),
        event(device_id="device-00001"),
        event("user-00003", "device-00003"),
    )
    assert refused(response, 429) == {
        "code": 429,
        "error": "Too many requests for some devices and users",
        "eps_threshold": 1,
        "throttled_devices": {"device-00001": 1},
        "throttled_users": {"user-00001": 1},
        "throttled_events": [1, 2],
    }
    assert response.headers["retry-after"] == "10"
    ingested(throttled, key, event("user-00002"))  # others are not throttled
    set_clock(throttled, advance=9.999)
    assert upload(throttled, key, event("user-00001")).status_code == 429
    set_clock(throttled, advance=0.001)
    ingested(throttled, key, event("user-00001"))


def test_batch_has_its_own_rate_and_the_window_is_shared(throttled: httpx.Client) -> None:
    key = "key-throttle-batch"
    ingested(throttled, key, *[event("user-00001") for _ in range(10)])
    assert upload(throttled, key, event("user-00001")).status_code == 429
    ingested(throttled, key, *[event("user-00001") for _ in range(10)], path=BATCH)
    response = upload(throttled, key, event("user-00001"), path=BATCH)
    assert refused(response, 429)["eps_threshold"] == 2


def test_a_refused_request_counts_for_nothing(throttled: httpx.Client) -> None:
    key = "key-throttle-refused"
    ingested(throttled, key, *[event("user-00001") for _ in range(9)])
    assert upload(throttled, key, event("user-00001", time="bad")).status_code == 400
    ingested(throttled, key, event("user-00001"))  # the 10th event: still admitted
    assert upload(throttled, key, event("user-00001")).status_code == 429


def test_rates_are_per_project(throttled: httpx.Client) -> None:
    ingested(throttled, "key-a", *[event("user-00001") for _ in range(10)])
    assert upload(throttled, "key-a", event("user-00001")).status_code == 429
    ingested(throttled, "key-b", event("user-00001"))


def test_rates_can_be_turned_off_at_run_time(throttled: httpx.Client) -> None:
    ingested(throttled, "key-off", *[event("user-00001") for _ in range(10)])
    response = throttled.patch(f"{CONTROL}/config", json={"event_eps": None})
    assert response.status_code == 200
    assert response.json()["event_eps"] is None
    ingested(throttled, "key-off", *[event("user-00001") for _ in range(50)])


def test_reset_forgets_events_and_rate_windows(throttled: httpx.Client) -> None:
    for key in ("key-reset-1", "key-reset-2"):
        ingested(throttled, key, *[event("user-00001") for _ in range(10)])
    assert throttled.post(f"{CONTROL}/reset", params={"api_key": "key-reset-1"}).status_code == 200
    ingested(throttled, "key-reset-1", event("user-00001"))
    assert stream(throttled, "key-reset-1", "user-00001") == [("user-00001", "Clicked Button")]
    assert upload(throttled, "key-reset-2", event("user-00001")).status_code == 429
    assert throttled.post(f"{CONTROL}/reset").status_code == 200
    response = throttled.get(
        "/api/2/usersearch", params={"user": "user-00001"}, auth=("key-reset-2", "s")
    )
    assert response.json() == {"type": "nomatch", "matches": []}
    ingested(throttled, "key-reset-2", event("user-00001"))


def test_a_clock_beyond_year_9999_stamps_the_latest_valid_time(
    start_emulator: StartEmulator,
) -> None:
    running = start_emulator()
    with httpx.Client(base_url=running.base_url) as http:
        set_clock(http, freeze=True, set=1e17)
        body = ingested(http, "key-far-future", event("user-00001"))
        assert body["server_upload_time"] == 253_402_300_799_999
        (shown,) = activity(http, "key-far-future", "user-00001")["events"]
        assert shown["event_time"] == "9999-12-31 23:59:59.999000"
