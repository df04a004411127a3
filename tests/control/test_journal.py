"""GET/DELETE /_emulator/requests: what Amplitude-facing requests came in, and their answers."""

from __future__ import annotations

import base64
import json
from urllib.parse import urlencode

import httpx
import pytest

from emulator.control.service import Control
from emulator.server import ServerThread
from tests.conftest import StartEmulator
from tests.control import (
    CONTROL,
    READ,
    add_fault,
    client_for,
    journal,
    map_ok,
    mapping_of,
    ok_json,
    patch_config,
    read_users,
    refused,
    set_clock,
)

BODY_LIMIT = 4096


def test_entry_of_an_accepted_map(http: httpx.Client, api_key: str) -> None:
    set_clock(http, freeze=True, set=1_700_000_000)
    body = urlencode({"api_key": api_key, "mapping": mapping_of({"u": "g"})})
    response = http.post(
        "/usermap?trace=1",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Test": "yes"},
    )
    assert response.status_code == 200

    [entry] = journal(http)
    assert set(entry) == {
        "id",
        "method",
        "path",
        "query",
        "headers",
        "body",
        "body_truncated",
        "status",
        "response_body",
        "hint",
        "api_key",
        "org",
        "fault",
        "started_at",
        "duration_ms",
    }
    assert isinstance(entry["id"], int)
    assert entry["method"] == "POST"
    assert entry["path"] == "/usermap"
    assert entry["query"] == "trace=1"
    assert entry["headers"]["x-test"] == "yes"
    assert entry["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert entry["body"] == body
    assert entry["body_truncated"] is False
    assert entry["status"] == 200
    assert entry["response_body"] == {"code": 200}
    assert entry["hint"] is None
    assert entry["api_key"] == api_key
    assert entry["org"] == api_key  # permissive: each key is its own org
    assert entry["fault"] is None
    assert entry["started_at"] == 1_700_000_000.0  # the emulator clock, frozen
    assert entry["duration_ms"] >= 0


def test_entry_is_recorded_before_the_answer_arrives(
    emulator: ServerThread, http: httpx.Client, api_key: str
) -> None:
    """Code holding the answer (a test thread, say) finds the entry already in the journal."""
    control: Control = emulator.app.state.control
    for number in range(50):
        map_ok(http, api_key, {f"u{number}": "g"})
        assert len(control.journal) == 1
        control.journal.clear()  # in-process, as a pytest plugin resetting between tests would


def test_entry_of_a_refusal_has_its_hint_and_body(http: httpx.Client, api_key: str) -> None:
    response = http.post("/usermap", data={"api_key": api_key, "mapping": "[not json"})
    assert response.status_code == 400

    [entry] = journal(http)
    assert entry["status"] == 400
    assert entry["response_body"] == response.json()
    assert entry["hint"] == response.headers["x-emulator-hint"]
    assert entry["hint"]


def test_entry_of_a_read_redacts_basic_credentials(http: httpx.Client, api_key: str) -> None:
    secret = "very-secret-value"
    read_users(http, api_key, ["u"], secret)

    [entry] = journal(http)
    assert entry["method"] == "GET"
    assert entry["path"] == READ
    assert entry["query"] == "user_ids=u"
    assert entry["api_key"] == api_key
    assert entry["response_body"] == {"u": {"mapped_from": [], "mapped_to": []}}
    assert entry["headers"]["authorization"] == "Basic [redacted]"
    credentials = base64.b64encode(f"{api_key}:{secret}".encode()).decode()
    text = json.dumps(entry)
    assert credentials not in text
    assert secret not in text


@pytest.mark.parametrize("where", ["query", "body"])
def test_entry_of_a_read_redacts_the_secret_key_parameter(
    http: httpx.Client, api_key: str, where: str
) -> None:
    secret = "secret-as-a-parameter"
    parameters = {"api_key": api_key, "secret_key": secret, "user_ids": "u"}
    if where == "query":
        response = http.get(READ, params=parameters)
    else:
        response = http.request("GET", READ, content=urlencode(parameters).encode())
    assert response.status_code == 200, response.text

    [entry] = journal(http)
    assert "secret_key=[redacted]" in entry[where]
    assert secret not in json.dumps(entry)


def test_unknown_amplitude_side_paths_are_journaled(http: httpx.Client) -> None:
    assert http.get("/nowhere").status_code == 404
    [entry] = journal(http)
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", "/nowhere", 404)


def test_control_requests_are_not_journaled(http: httpx.Client, api_key: str) -> None:
    map_ok(http, api_key, {"a": "b"})
    for path in ("", "/health", "/ready", "/state", "/clock", "/faults", "/config", "/snapshots"):
        assert http.get(f"{CONTROL}{path}").status_code == 200
    assert http.get(f"{CONTROL}/no-such-control-path").status_code == 404
    http.post(f"{CONTROL}/clock", json={})
    http.patch(f"{CONTROL}/config", json={})
    for _ in range(3):
        journal(http)  # reading the journal is a control request too

    assert [entry["path"] for entry in journal(http)] == ["/usermap"]


def populate(http: httpx.Client) -> None:
    """Four requests at clock times 1000..1003: two keys, three paths and methods, 200 and 400."""
    set_clock(http, freeze=True, set=1000)
    map_ok(http, "key-1", {"a": "b"})
    set_clock(http, advance=1)
    assert http.post("/usermap", data={"api_key": "key-1", "mapping": "{"}).status_code == 400
    set_clock(http, advance=1)
    get_map = http.get("/usermap", params={"api_key": "key-2", "mapping": mapping_of({"c": "d"})})
    assert get_map.status_code == 200
    set_clock(http, advance=1)
    read_users(http, "key-2", ["c"])


def summary(entries: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [
        (entry["method"], entry["path"], entry["status"], entry["api_key"], entry["started_at"])
        for entry in entries
    ]


ALL = [
    ("POST", "/usermap", 200, "key-1", 1000.0),
    ("POST", "/usermap", 400, "key-1", 1001.0),
    ("GET", "/usermap", 200, "key-2", 1002.0),
    ("GET", READ, 200, "key-2", 1003.0),
]


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ALL),
        ({"path": "/usermap"}, ALL[:3]),
        ({"path": READ}, ALL[3:]),
        ({"path": "/user"}, []),
        ({"method": "GET"}, ALL[2:]),
        ({"method": "post"}, ALL[:2]),
        ({"status": 400}, ALL[1:2]),
        ({"status": 200}, [ALL[0], *ALL[2:]]),
        ({"api_key": "key-2"}, ALL[2:]),
        ({"api_key": "key-3"}, []),
        ({"since": 1001}, ALL[1:]),
        ({"since": 1001.5}, ALL[2:]),
        ({"since": 5000}, []),
        ({"limit": 2}, ALL[2:]),
        ({"limit": 10}, ALL),
        ({"limit": 0}, []),
        ({"path": "/usermap", "method": "POST", "status": 200}, ALL[:1]),
        ({"api_key": "key-1", "limit": 1}, ALL[1:2]),
    ],
)
def test_filters(
    http: httpx.Client, filters: dict[str, str | int | float], expected: list[tuple[object, ...]]
) -> None:
    populate(http)
    entries = journal(http, **filters)
    assert summary(entries) == expected
    ids = [entry["id"] for entry in entries]
    assert ids == sorted(ids)


@pytest.mark.parametrize(
    "filters", [{"status": "ok"}, {"limit": "many"}, {"since": "yesterday"}, {"status": "2.5"}]
)
def test_invalid_filters_are_refused(http: httpx.Client, filters: dict[str, str]) -> None:
    refused(http.get(f"{CONTROL}/requests", params=filters))


def test_delete_clears_the_journal(http: httpx.Client, api_key: str) -> None:
    map_ok(http, api_key, {"a": "b"})
    assert ok_json(http.delete(f"{CONTROL}/requests")) == {"requests": []}
    assert journal(http) == []
    map_ok(http, api_key, {"c": "d"})
    assert len(journal(http)) == 1


def test_bodies_are_cut_at_the_bound(http: httpx.Client, api_key: str) -> None:
    long_id = "x" * 10_000
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    body = urlencode({"api_key": api_key, "mapping": mapping_of({long_id: "g"})})
    response = http.post("/usermap", content=body, headers=form)
    assert response.status_code == 200  # the request itself is not cut
    # The documented read: ids as a form body on a GET.
    read_body = urlencode({"user_ids": long_id})
    read = http.request("GET", READ, content=read_body, headers=form, auth=(api_key, "s"))
    assert read.status_code == 200
    assert read.json()[long_id]["mapped_to"] == [{"amplitude_id": 2, "user_id": "g"}]

    posted, reading = journal(http)
    assert posted["body"] == body[:BODY_LIMIT]
    assert posted["body_truncated"] is True
    assert posted["response_body"] == {"code": 200}
    assert reading["body"] == read_body[:BODY_LIMIT]
    assert reading["body_truncated"] is True
    # An answer larger than the bound is kept as its first bytes, as text.
    assert len(read.content) > BODY_LIMIT
    assert reading["response_body"] == read.text[:BODY_LIMIT]


def test_body_at_exactly_the_bound_is_not_truncated(http: httpx.Client, api_key: str) -> None:
    prefix = urlencode({"api_key": api_key, "mapping": ""})
    mapping = mapping_of({"u": "g"})
    padding = BODY_LIMIT - len(prefix) - len(mapping) - len("&pad=")
    body = f"{prefix}{mapping}&pad={'p' * padding}"
    assert len(body) == BODY_LIMIT
    response = http.post(
        "/usermap", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 200, response.text

    [entry] = journal(http)
    assert entry["body"] == body
    assert entry["body_truncated"] is False


def test_capacity_keeps_only_the_newest_entries(http: httpx.Client, api_key: str) -> None:
    assert patch_config(http, journal_size=3)["journal_size"] == 3
    for number in range(5):
        map_ok(http, api_key, {f"user-{number}": "g"})

    entries = journal(http)
    assert len(entries) == 3
    for number, entry in zip(range(2, 5), entries, strict=True):
        assert f"user-{number}" in entry["body"]
    assert ok_json(http.get(f"{CONTROL}/config"))["journal_size"] == 3


def test_shrinking_the_capacity_drops_the_oldest_entries_at_once(
    http: httpx.Client, api_key: str
) -> None:
    for number in range(5):
        map_ok(http, api_key, {f"u{number}": "g"})
    ids = [entry["id"] for entry in journal(http)]
    assert len(ids) == 5

    patch_config(http, journal_size=3)

    assert [entry["id"] for entry in journal(http)] == ids[2:]


def test_capacity_from_the_settings(start_emulator: StartEmulator, api_key: str) -> None:
    server = start_emulator(journal_size=5)
    with client_for(server) as http:
        for number in range(8):
            map_ok(http, api_key, {f"user-{number}": "g"})
        entries = journal(http)
    assert [entry["id"] for entry in entries] == [4, 5, 6, 7, 8]


def test_capacity_zero_keeps_nothing(http: httpx.Client, api_key: str) -> None:
    patch_config(http, journal_size=0)
    map_ok(http, api_key, {"a": "b"})
    assert journal(http) == []


def test_faulted_requests_name_their_rule(http: httpx.Client, api_key: str) -> None:
    rule = add_fault(http, {"match": {"path": "/usermap"}, "effect": {"status": 503}})
    body = urlencode({"api_key": api_key, "mapping": mapping_of({"a": "b"})})
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert http.post("/usermap", content=body, headers=form).status_code == 503
    map_ok(http, api_key, {"a": "b"})

    faulted, normal = journal(http)
    assert faulted["body"] == body  # read for the journal, though no app saw it
    assert faulted["body_truncated"] is False
    assert faulted["fault"] == rule["id"]
    assert faulted["api_key"] == api_key  # named from the body, as the rule did not need it
    assert faulted["status"] == 503
    assert faulted["response_body"] == {"code": 503, "error": "Injected fault"}
    assert faulted["hint"] == f"Injected by fault rule {rule['id']}."
    assert normal["fault"] is None
    assert normal["status"] == 200


def test_faulted_request_bodies_are_cut_at_the_bound(http: httpx.Client, api_key: str) -> None:
    rule = add_fault(http, {"match": {"api_key": api_key}, "effect": {"drop": True}})
    body = urlencode({"api_key": api_key, "mapping": mapping_of({"x" * 10_000: "g"})})
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        http.post("/usermap", content=body, headers=form)

    [entry] = journal(http)
    assert entry["fault"] == rule["id"]
    assert entry["api_key"] == api_key
    assert entry["body"] == body[:BODY_LIMIT]
    assert entry["body_truncated"] is True
