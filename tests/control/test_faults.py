"""GET/POST/DELETE /_emulator/faults: make Amplitude-facing requests fail, for retry tests."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from emulator.server import ServerThread
from tests.control import (
    CONTROL,
    READ,
    add_fault,
    client_for,
    faults,
    journal,
    map_ok,
    map_users,
    mapping_of,
    ok_json,
    read_users,
    refused,
)

MAPPING = mapping_of({"u": "g"})


def retrying_session(total: int = 3) -> requests.Session:
    """A real client's retry logic: urllib3's Retry on 429 and 503, without waiting."""
    retry = Retry(
        total=total,
        status_forcelist=[429, 503],
        backoff_factor=0,
        allowed_methods=None,
        respect_retry_after_header=False,
    )
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry))
    return session


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with retrying_session() as client:
        yield client


def test_status_body_and_headers(http: httpx.Client, api_key: str) -> None:
    rule = add_fault(
        http,
        {
            "match": {"method": "POST", "path": "/usermap"},
            "effect": {
                "status": 429,
                "body": {"code": 429, "error": "Too many requests", "eps_threshold": 50},
                "headers": {"Retry-After": "7"},
            },
        },
    )
    assert rule == {
        "id": rule["id"],
        "match": {"method": "POST", "path": "/usermap", "api_key": None},
        "effect": {
            "status": 429,
            "body": {"code": 429, "error": "Too many requests", "eps_threshold": 50},
            "headers": {"Retry-After": "7"},
        },
        "times": 1,  # neither times nor probability: the next matching request only
        "probability": 1.0,
        "hits": 0,
    }
    assert faults(http) == [rule]

    response = map_users(http, api_key, {"u": "g"})
    assert response.status_code == 429
    assert response.json() == {"code": 429, "error": "Too many requests", "eps_threshold": 50}
    assert response.headers["retry-after"] == "7"
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-emulator-hint"] == f"Injected by fault rule {rule['id']}."
    # The faulted request did not reach the emulator: nothing was mapped.
    assert read_users(http, api_key, ["u"]) == {"u": {"mapped_from": [], "mapped_to": []}}
    assert faults(http) == []  # spent
    map_ok(http, api_key, {"u": "g"})


def test_default_body_is_amplitude_shaped(http: httpx.Client, api_key: str) -> None:
    add_fault(http, {"effect": {"status": 503}})
    response = map_users(http, api_key, {"u": "g"})
    assert response.status_code == 503
    assert response.json() == {"code": 503, "error": "Injected fault"}


def test_times_n_then_normal_answers(http: httpx.Client, api_key: str) -> None:
    rule = add_fault(http, {"match": {"path": "/usermap"}, "effect": {"status": 500}, "times": 3})
    statuses = [map_users(http, api_key, {"u": "g"}).status_code for _ in range(3)]
    assert statuses == [500, 500, 500]
    assert faults(http) == []
    assert [map_users(http, api_key, {"u": "g"}).status_code for _ in range(2)] == [200, 200]
    assert [entry["fault"] for entry in journal(http)] == [rule["id"]] * 3 + [None, None]


def test_times_counts_down_in_the_listing(http: httpx.Client, api_key: str) -> None:
    add_fault(http, {"effect": {"status": 500}, "times": 3})
    map_users(http, api_key, {"u": "g"})
    [rule] = faults(http)
    assert (rule["times"], rule["hits"]) == (2, 1)


def test_probability_zero_never_fires(http: httpx.Client, api_key: str) -> None:
    add_fault(http, {"effect": {"status": 503}, "probability": 0})
    assert {map_users(http, api_key, {"u": "g"}).status_code for _ in range(20)} == {200}
    [rule] = faults(http)
    assert (rule["times"], rule["hits"], rule["probability"]) == (None, 0, 0.0)


def test_probability_one_always_fires(http: httpx.Client, api_key: str) -> None:
    add_fault(http, {"effect": {"status": 503}, "probability": 1})
    assert {map_users(http, api_key, {"u": "g"}).status_code for _ in range(20)} == {503}
    [rule] = faults(http)
    assert (rule["times"], rule["hits"]) == (None, 20)


def test_probability_with_times_fires_at_most_times(http: httpx.Client, api_key: str) -> None:
    add_fault(http, {"effect": {"status": 503}, "probability": 1, "times": 2})
    statuses = [map_users(http, api_key, {"u": "g"}).status_code for _ in range(4)]
    assert statuses == [503, 503, 200, 200]


def test_probability_half_fires_sometimes(http: httpx.Client, api_key: str) -> None:
    add_fault(http, {"match": {"api_key": api_key}, "effect": {"status": 503}, "probability": 0.5})
    statuses = [
        http.get("/usermap", params={"api_key": api_key, "mapping": MAPPING}).status_code
        for _ in range(100)
    ]
    # Binomial(100, 0.5) lies outside [20, 80] with probability below 1e-9.
    assert 20 <= statuses.count(503) <= 80
    assert statuses.count(503) + statuses.count(200) == 100


def test_match_by_method(http: httpx.Client, api_key: str) -> None:
    add_fault(http, {"match": {"method": "get"}, "effect": {"status": 503}, "probability": 1})
    assert map_users(http, api_key, {"u": "g"}).status_code == 200
    get = http.get("/usermap", params={"api_key": api_key, "mapping": MAPPING})
    assert get.status_code == 503
    assert http.get(READ, params={"user_ids": "u"}, auth=(api_key, "s")).status_code == 503
    assert faults(http)[0]["match"]["method"] == "GET"


def test_match_by_path(http: httpx.Client, api_key: str) -> None:
    add_fault(http, {"match": {"path": READ}, "effect": {"status": 502}, "probability": 1})
    map_ok(http, api_key, {"u": "g"})
    assert http.get(READ, params={"user_ids": "u"}, auth=(api_key, "s")).status_code == 502


def test_match_by_api_key_in_a_form_body(http: httpx.Client, api_key: str) -> None:
    add_fault(http, {"match": {"api_key": api_key}, "effect": {"status": 503}, "probability": 1})
    assert map_users(http, api_key, {"u": "g"}).status_code == 503
    # Another key's body is read to match, then handed on to the emulator intact.
    map_ok(http, "another-key", {"u": "g"})
    assert read_users(http, "another-key", ["u"])["u"]["mapped_to"] == [
        {"amplitude_id": 2, "user_id": "g"}
    ]


def test_match_by_api_key_in_the_query_string(http: httpx.Client, api_key: str) -> None:
    add_fault(http, {"match": {"api_key": api_key}, "effect": {"status": 503}, "probability": 1})
    assert http.post("/usermap", params={"api_key": api_key, "mapping": MAPPING}).status_code == 503
    other = http.post("/usermap", params={"api_key": "another-key", "mapping": MAPPING})
    assert other.status_code == 200


def test_match_by_api_key_in_basic_auth(http: httpx.Client, api_key: str) -> None:
    add_fault(http, {"match": {"api_key": api_key}, "effect": {"status": 503}, "probability": 1})
    assert http.get(READ, params={"user_ids": "u"}, auth=(api_key, "s")).status_code == 503
    read_users(http, "another-key", ["u"])
    # The entry names the key even though the emulator never saw the request.
    assert journal(http, status=503)[0]["api_key"] == api_key


def test_match_needs_all_given_fields(http: httpx.Client, api_key: str) -> None:
    add_fault(
        http,
        {
            "match": {"method": "POST", "path": "/usermap", "api_key": api_key},
            "effect": {"status": 503},
            "probability": 1,
        },
    )
    assert http.get("/usermap", params={"api_key": api_key, "mapping": MAPPING}).status_code == 200
    map_ok(http, "another-key", {"u": "g"})
    assert http.get(READ, params={"user_ids": "u"}, auth=(api_key, "s")).status_code == 200
    assert map_users(http, api_key, {"u": "g"}).status_code == 503


def test_latency_then_the_real_answer(http: httpx.Client, api_key: str) -> None:
    rule = add_fault(http, {"match": {"api_key": api_key}, "effect": {"latency_ms": 300}})
    started = time.perf_counter()
    response = map_users(http, api_key, {"u": "g"})
    elapsed = time.perf_counter() - started

    assert elapsed >= 0.3
    assert response.status_code == 200
    assert read_users(http, api_key, ["u"])["u"]["mapped_to"] == [
        {"amplitude_id": 2, "user_id": "g"}
    ]
    entry = journal(http)[0]
    assert (entry["fault"], entry["status"]) == (rule["id"], 200)
    assert entry["duration_ms"] >= 300
    assert faults(http) == []


def test_latency_with_a_status(http: httpx.Client, api_key: str) -> None:
    add_fault(http, {"effect": {"latency_ms": 200, "status": 504}})
    started = time.perf_counter()
    response = map_users(http, api_key, {"u": "g"})
    assert time.perf_counter() - started >= 0.2
    assert response.status_code == 504


def test_drop_breaks_the_connection_and_the_server_stays_healthy(
    emulator: ServerThread, http: httpx.Client, api_key: str
) -> None:
    rule = add_fault(http, {"match": {"path": "/usermap"}, "effect": {"drop": True}})
    with client_for(emulator) as victim:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            map_users(victim, api_key, {"u": "g"})
        # The same client, on a new connection, gets normal answers again.
        map_ok(victim, api_key, {"u": "g"})

    assert ok_json(http.get(f"{CONTROL}/health")) == {"status": "ok"}
    dropped, normal = journal(http)
    assert dropped["fault"] == rule["id"]
    assert dropped["status"] == 0  # no answer was sent
    assert normal["status"] == 200
    assert read_users(http, api_key, ["u"])["u"]["amplitude_id"] == 1


def test_drop_after_latency(emulator: ServerThread, http: httpx.Client, api_key: str) -> None:
    add_fault(http, {"effect": {"drop": True, "latency_ms": 100}})
    with client_for(emulator) as victim:
        started = time.perf_counter()
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            map_users(victim, api_key, {"u": "g"})
        assert time.perf_counter() - started >= 0.1
    map_ok(http, api_key, {"u": "g"})


def test_control_paths_are_never_faulted(http: httpx.Client, api_key: str) -> None:
    add_fault(http, {"effect": {"status": 503}, "probability": 1})
    add_fault(http, {"match": {"path": f"{CONTROL}/health"}, "effect": {"drop": True}})
    assert ok_json(http.get(f"{CONTROL}/health")) == {"status": "ok"}
    assert len(faults(http)) == 2
    assert map_users(http, api_key, {"u": "g"}).status_code == 503


def test_first_matching_rule_wins(http: httpx.Client, api_key: str) -> None:
    first = add_fault(http, {"match": {"path": "/usermap"}, "effect": {"status": 429}})
    add_fault(http, {"effect": {"status": 503}})
    assert map_users(http, api_key, {"u": "g"}).status_code == 429
    assert map_users(http, api_key, {"u": "g"}).status_code == 503
    assert map_users(http, api_key, {"u": "g"}).status_code == 200
    assert journal(http)[0]["fault"] == first["id"]


def test_delete_one_rule(http: httpx.Client, api_key: str) -> None:
    kept = add_fault(http, {"match": {"path": READ}, "effect": {"status": 503}})
    gone = add_fault(http, {"match": {"path": "/usermap"}, "effect": {"status": 503}})
    assert kept["id"] != gone["id"]

    assert ok_json(http.delete(f"{CONTROL}/faults/{gone['id']}")) == {"deleted": gone["id"]}

    assert faults(http) == [kept]
    map_ok(http, api_key, {"u": "g"})
    assert str(gone["id"]) in refused(http.delete(f"{CONTROL}/faults/{gone['id']}"), 404)
    assert "not-a-number" in refused(http.delete(f"{CONTROL}/faults/not-a-number"), 404)
    assert faults(http) == [kept]


def test_delete_all_rules(http: httpx.Client, api_key: str) -> None:
    for _ in range(3):
        add_fault(http, {"effect": {"status": 503}, "probability": 1})
    assert ok_json(http.delete(f"{CONTROL}/faults")) == {"faults": []}
    assert faults(http) == []
    map_ok(http, api_key, {"u": "g"})


INVALID_RULES: list[Any] = [
    [],
    "503",
    {},
    {"match": {"path": "/usermap"}},
    {"effect": {}},
    {"effect": 503},
    {"effect": {"body": {"code": 503}}},
    {"effect": {"status": 600}},
    {"effect": {"status": 99}},
    {"effect": {"status": "503"}},
    {"effect": {"status": True}},
    {"effect": {"status": 503.0}},
    {"effect": {"status": 503, "headers": {"Retry-After": 7}}},
    {"effect": {"status": 503, "headers": ["Retry-After"]}},
    {"effect": {"drop": "yes"}},
    {"effect": {"drop": False}},
    {"effect": {"status": 503, "drop": True}},
    {"effect": {"latency_ms": -1}},
    {"effect": {"latency_ms": 60_001}},
    {"effect": {"latency_ms": "100"}},
    {"effect": {"latency_ms": 0}},
    {"effect": {"status": 503}, "times": 0},
    {"effect": {"status": 503}, "times": -1},
    {"effect": {"status": 503}, "times": 1.5},
    {"effect": {"status": 503}, "times": True},
    {"effect": {"status": 503}, "probability": 1.5},
    {"effect": {"status": 503}, "probability": -0.1},
    {"effect": {"status": 503}, "probability": "always"},
    {"match": [], "effect": {"status": 503}},
    {"match": {"path": ""}, "effect": {"status": 503}},
    {"match": {"method": 5}, "effect": {"status": 503}},
    {"match": {"api_key": ["k"]}, "effect": {"status": 503}},
]


@pytest.mark.parametrize("rule", INVALID_RULES)
def test_invalid_rules_are_refused(http: httpx.Client, rule: Any) -> None:
    refused(http.post(f"{CONTROL}/faults", json=rule))
    assert faults(http) == []


def test_rule_that_is_not_json_is_refused(http: httpx.Client) -> None:
    refused(http.post(f"{CONTROL}/faults", content=b"{effect"))
    assert faults(http) == []


# --- a real client's retry logic ---------------------------------------------------------------


def test_retrying_client_gets_through_after_two_faults(
    emulator: ServerThread, http: httpx.Client, api_key: str, session: requests.Session
) -> None:
    # The rule does not match on api_key; the journal still names the key of each attempt.
    rule = add_fault(
        http,
        {"match": {"method": "POST", "path": "/usermap"}, "effect": {"status": 503}, "times": 2},
    )
    response = session.post(
        f"{emulator.base_url}/usermap",
        data={"api_key": api_key, "mapping": MAPPING},
        timeout=10,
    )

    assert response.status_code == 200
    attempts = journal(http, api_key=api_key)
    assert [(entry["status"], entry["fault"]) for entry in attempts] == [
        (503, rule["id"]),
        (503, rule["id"]),
        (200, None),
    ]
    assert len({entry["body"] for entry in attempts}) == 1  # the same request, three times


def test_retrying_client_honours_429(
    emulator: ServerThread, http: httpx.Client, api_key: str, session: requests.Session
) -> None:
    add_fault(
        http,
        {
            "match": {"path": READ},
            "effect": {"status": 429, "headers": {"Retry-After": "1"}},
            "times": 3,
        },
    )
    credentials = base64.b64encode(f"{api_key}:s".encode()).decode()
    response = session.get(
        f"{emulator.base_url}{READ}",
        data={"user_ids": ["u"]},
        headers={"Authorization": f"Basic {credentials}"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.json() == {"u": {"mapped_from": [], "mapped_to": []}}
    assert [entry["status"] for entry in journal(http)] == [429, 429, 429, 200]


def test_retrying_client_gives_up_after_its_budget(
    emulator: ServerThread, http: httpx.Client, api_key: str, session: requests.Session
) -> None:
    add_fault(http, {"match": {"api_key": api_key}, "effect": {"status": 503}, "times": 10})
    with pytest.raises(requests.exceptions.RetryError):
        session.post(
            f"{emulator.base_url}/usermap",
            data={"api_key": api_key, "mapping": MAPPING},
            timeout=10,
        )
    assert [entry["status"] for entry in journal(http)] == [503] * 4  # one try, three retries
    assert faults(http)[0]["times"] == 6


def test_retrying_client_survives_a_dropped_connection(
    emulator: ServerThread, http: httpx.Client, api_key: str, session: requests.Session
) -> None:
    rule = add_fault(http, {"match": {"api_key": api_key}, "effect": {"drop": True}})
    response = session.post(
        f"{emulator.base_url}/usermap", data={"api_key": api_key, "mapping": MAPPING}, timeout=10
    )
    assert response.status_code == 200
    assert [(entry["status"], entry["fault"]) for entry in journal(http)] == [
        (0, rule["id"]),
        (200, None),
    ]
