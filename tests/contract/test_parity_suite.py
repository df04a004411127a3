"""The drift check: behaviour tests that make sense against the real Amplitude as well.

Every test here is marked `parity` and talks to Amplitude's endpoints only, through the plugin's
`amplitude_emulator` handle (`usermap_url`, `read_url`, `api_key`, `secret_key`). In the normal
run they test the emulator; with

    pytest -m parity --amplitude-live --amplitude-api-key K --amplitude-secret-key S

the same tests run against your own Amplitude project, and every failure is a place where the
emulator and the service differ (docs/contract-testing.md). Ids are unique per run, since a real
project keeps its state, and reads poll for a while in parity mode, since the real service may
apply a mapping a little later than it answers 200.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from emulator.client import EmulatorClient
from emulator.pytest_plugin import LiveAmplitude

pytestmark = pytest.mark.parity

HINT = "x-emulator-hint"
SEGMENT_CONTENT_TYPE = "application/x-www-form-urlencoded;charset=UTF-8"
LIVE_READ_TIMEOUT = 60.0


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


@pytest.fixture
def ids() -> Callable[[str], str]:
    """Unique user ids for this test: ids("a") -> "parity-<run>-a"."""
    run = uuid.uuid4().hex[:12]
    return lambda name: f"parity-{run}-{name}"


def mapping(*objects: dict[str, Any]) -> str:
    return json.dumps(list(objects), separators=(",", ":"))


def read(handle: EmulatorClient, *user_ids: str) -> dict[str, Any]:
    response = handle.read(user_ids)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    answer: dict[str, Any] = response.json()
    return answer


def read_until(
    handle: EmulatorClient, user_ids: tuple[str, ...], holds: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Read until `holds(answer)`: once against the emulator, polling against Amplitude."""
    deadline = time.monotonic() + (LIVE_READ_TIMEOUT if isinstance(handle, LiveAmplitude) else 0)
    while True:
        answer = read(handle, *user_ids)
        if holds(answer) or time.monotonic() >= deadline:
            return answer
        time.sleep(2)


def global_of(answer: dict[str, Any], user_id: str) -> str | None:
    mapped_to: list[dict[str, Any]] = answer[user_id]["mapped_to"]
    return str(mapped_to[0]["user_id"]) if mapped_to else None


def mapped_to_becomes(handle: EmulatorClient, user_id: str, expected: str | None) -> dict[str, Any]:
    answer = read_until(handle, (user_id,), lambda a: global_of(a, user_id) == expected)
    assert global_of(answer, user_id) == expected, answer
    return answer


def assert_ok(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text


def assert_refused(response: httpx.Response, status: int, body: dict[str, Any]) -> None:
    assert response.status_code == status, response.text
    assert response.json() == body


# --- where the parameters travel (spec section 2) ------------------------------------------------


def test_the_docs_curl_call_with_everything_in_the_query_string(
    amplitude_emulator: EmulatorClient, http: httpx.Client, ids: Callable[[str], str]
) -> None:
    raw = mapping({"user_id": ids("a"), "global_user_id": ids("g")})
    url = f"{amplitude_emulator.usermap_url}?mapping={raw}&api_key={amplitude_emulator.api_key}"
    assert_ok(http.post(url))
    mapped_to_becomes(amplitude_emulator, ids("a"), ids("g"))


def test_a_form_body_as_segment_sends_it(
    amplitude_emulator: EmulatorClient, http: httpx.Client, ids: Callable[[str], str]
) -> None:
    response = http.post(
        amplitude_emulator.usermap_url,
        data={
            "api_key": amplitude_emulator.api_key,
            "mapping": mapping(
                {"user_id": ids("a"), "global_user_id": ids("g"), "min_id_length": 1}
            ),
            "options": json.dumps({"min_id_length": 1}),
        },
        headers={"Content-Type": SEGMENT_CONTENT_TYPE},
    )
    assert_ok(response)
    mapped_to_becomes(amplitude_emulator, ids("a"), ids("g"))


def test_a_form_body_without_content_type_as_rudderstack_sends_it(
    amplitude_emulator: EmulatorClient, http: httpx.Client, ids: Callable[[str], str]
) -> None:
    body = httpx.QueryParams(
        {
            "api_key": amplitude_emulator.api_key,
            "mapping": mapping(
                {"global_user_id": ids("g"), "user_id": ids("a"), "user_properties": {}}
            ),
        }
    )
    request = http.build_request("POST", amplitude_emulator.usermap_url, content=str(body))
    assert "content-type" not in request.headers
    assert_ok(http.send(request))
    mapped_to_becomes(amplitude_emulator, ids("a"), ids("g"))


def test_a_multipart_body(
    amplitude_emulator: EmulatorClient, http: httpx.Client, ids: Callable[[str], str]
) -> None:
    response = http.post(
        amplitude_emulator.usermap_url,
        files={
            "api_key": (None, amplitude_emulator.api_key),
            "mapping": (None, mapping({"user_id": ids("a"), "global_user_id": ids("g")})),
        },
    )
    assert_ok(response)
    mapped_to_becomes(amplitude_emulator, ids("a"), ids("g"))


def test_get_with_the_query_string_as_the_old_docs_show(
    amplitude_emulator: EmulatorClient, http: httpx.Client, ids: Callable[[str], str]
) -> None:
    response = http.get(
        amplitude_emulator.usermap_url,
        params={
            "api_key": amplitude_emulator.api_key,
            "mapping": mapping({"user_id": ids("a"), "global_user_id": ids("g")}),
        },
    )
    assert_ok(response)
    mapped_to_becomes(amplitude_emulator, ids("a"), ids("g"))


def test_the_docs_read_call_a_form_body_on_a_get(
    amplitude_emulator: EmulatorClient, http: httpx.Client, ids: Callable[[str], str]
) -> None:
    amplitude_emulator.map(ids("a"), ids("g"))
    mapped_to_becomes(amplitude_emulator, ids("a"), ids("g"))
    response = http.request(
        "GET",
        amplitude_emulator.read_url,
        data={"user_ids": [ids("a"), ids("g")]},
        auth=(amplitude_emulator.api_key, amplitude_emulator.secret_key),
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {ids("a"), ids("g")}
    assert [edge["user_id"] for edge in answer[ids("g")]["mapped_from"]] == [ids("a")]


# --- refusals (spec sections 3 and 4) ------------------------------------------------------------


def test_a_missing_api_key(amplitude_emulator: EmulatorClient, http: httpx.Client) -> None:
    response = http.post(amplitude_emulator.usermap_url, data={"mapping": mapping()})
    assert_refused(
        response,
        400,
        {"code": 400, "error": "Request missing required field", "missing_field": "api_key"},
    )


def test_the_api_key_of_an_unset_client_variable(
    amplitude_emulator: EmulatorClient, http: httpx.Client, ids: Callable[[str], str]
) -> None:
    response = http.post(
        amplitude_emulator.usermap_url,
        data={
            "api_key": "undefined",
            "mapping": mapping({"user_id": ids("a"), "global_user_id": ids("g")}),
        },
    )
    assert_refused(response, 400, {"code": 400, "error": "Invalid API key: undefined"})


def test_a_missing_mapping(amplitude_emulator: EmulatorClient, http: httpx.Client) -> None:
    response = http.post(
        amplitude_emulator.usermap_url, data={"api_key": amplitude_emulator.api_key}
    )
    assert_refused(
        response,
        400,
        {"code": 400, "error": "Request missing required field", "missing_field": "mapping"},
    )


def test_a_mapping_that_is_not_json(amplitude_emulator: EmulatorClient) -> None:
    response = amplitude_emulator.usermap("[{not json")
    assert_refused(response, 400, {"code": 400, "error": "Invalid JSON request body"})


def test_an_object_without_its_global_user_id(
    amplitude_emulator: EmulatorClient, ids: Callable[[str], str]
) -> None:
    response = amplitude_emulator.usermap([{"user_id": ids("a")}])
    assert_refused(
        response,
        400,
        {"code": 400, "error": "Invalid mapping", "index": 0, "missing_field": "global_user_id"},
    )


def test_an_unmap_that_names_a_global(
    amplitude_emulator: EmulatorClient, ids: Callable[[str], str]
) -> None:
    response = amplitude_emulator.usermap(
        [{"user_id": ids("a"), "global_user_id": ids("g"), "unmap": True}]
    )
    assert_refused(response, 400, {"code": 400, "error": "Invalid mapping", "index": 0})


def test_a_json_body_is_not_read_as_parameters(
    amplitude_emulator: EmulatorClient, http: httpx.Client, ids: Callable[[str], str]
) -> None:
    response = http.post(
        amplitude_emulator.usermap_url,
        json={
            "api_key": amplitude_emulator.api_key,
            "mapping": mapping({"user_id": ids("a"), "global_user_id": ids("g")}),
        },
    )
    assert_refused(
        response,
        400,
        {"code": 400, "error": "Request missing required field", "missing_field": "api_key"},
    )


def test_a_read_without_credentials(
    amplitude_emulator: EmulatorClient, http: httpx.Client, ids: Callable[[str], str]
) -> None:
    response = http.get(amplitude_emulator.read_url, params={"user_ids": [ids("a")]})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Basic realm="Amplitude"'
    assert response.json()["error"]["http_code"] == 401


@pytest.mark.parametrize("count", [0, 101])
def test_a_read_of_too_few_or_too_many_users(
    amplitude_emulator: EmulatorClient, ids: Callable[[str], str], count: int
) -> None:
    response = amplitude_emulator.read([ids(str(n)) for n in range(count)])
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["http_code"], error["type"]) == (400, "invalid")


# --- what mappings do (spec section 6) -----------------------------------------------------------


def test_a_mapping_is_read_back_from_both_sides(
    amplitude_emulator: EmulatorClient, ids: Callable[[str], str]
) -> None:
    amplitude_emulator.map(ids("a"), ids("g"))
    answer = read_until(
        amplitude_emulator,
        (ids("a"), ids("g")),
        lambda a: global_of(a, ids("a")) == ids("g"),
    )
    a, g = answer[ids("a")], answer[ids("g")]
    assert a["mapped_to"] == [{"amplitude_id": g["amplitude_id"], "user_id": ids("g")}]
    assert g["mapped_from"] == [{"amplitude_id": a["amplitude_id"], "user_id": ids("a")}]
    assert a["mapped_from"] == []
    assert g["mapped_to"] == []


def test_a_chain_is_reported_as_direct_edges(
    amplitude_emulator: EmulatorClient, ids: Callable[[str], str]
) -> None:
    amplitude_emulator.map(ids("user1"), ids("user2"))
    amplitude_emulator.map(ids("user3"), ids("user1"))
    answer = read_until(
        amplitude_emulator,
        (ids("user1"),),
        lambda a: (
            len(a[ids("user1")]["mapped_from"]) == 1 and global_of(a, ids("user1")) == ids("user2")
        ),
    )
    user1 = answer[ids("user1")]
    assert [edge["user_id"] for edge in user1["mapped_to"]] == [ids("user2")]
    assert [edge["user_id"] for edge in user1["mapped_from"]] == [ids("user3")]


def test_unmap_and_remap(amplitude_emulator: EmulatorClient, ids: Callable[[str], str]) -> None:
    amplitude_emulator.map(ids("a"), ids("g1"))
    mapped_to_becomes(amplitude_emulator, ids("a"), ids("g1"))
    amplitude_emulator.map(ids("a"), ids("g2"))  # one global per user: the new one replaces it
    mapped_to_becomes(amplitude_emulator, ids("a"), ids("g2"))
    amplitude_emulator.unmap(ids("a"))
    mapped_to_becomes(amplitude_emulator, ids("a"), None)


def test_a_self_map_and_the_unmap_of_an_unmapped_user_are_accepted(
    amplitude_emulator: EmulatorClient, ids: Callable[[str], str]
) -> None:
    assert_ok(amplitude_emulator.usermap([{"user_id": ids("a"), "global_user_id": ids("a")}]))
    assert_ok(amplitude_emulator.usermap([{"user_id": ids("b"), "unmap": True}]))
    answer = read(amplitude_emulator, ids("a"), ids("b"))
    assert global_of(answer, ids("a")) is None
    assert global_of(answer, ids("b")) is None


def test_an_unknown_user_has_empty_lists_and_no_amplitude_id(
    amplitude_emulator: EmulatorClient, ids: Callable[[str], str]
) -> None:
    answer = read(amplitude_emulator, ids("nobody"))
    assert answer == {ids("nobody"): {"mapped_from": [], "mapped_to": []}}


def test_a_batch_with_a_bad_object_changes_nothing(
    amplitude_emulator: EmulatorClient, ids: Callable[[str], str]
) -> None:
    response = amplitude_emulator.usermap(
        [{"user_id": ids("a"), "global_user_id": ids("g")}, {"user_id": ids("b")}]
    )
    assert_refused(
        response,
        400,
        {"code": 400, "error": "Invalid mapping", "index": 1, "missing_field": "global_user_id"},
    )
    if isinstance(amplitude_emulator, LiveAmplitude):
        time.sleep(5)  # give a (wrongly) applied object time to show
    assert global_of(read(amplitude_emulator, ids("a")), ids("a")) is None


def test_a_mapping_that_closes_a_cycle_is_refused(
    amplitude_emulator: EmulatorClient, ids: Callable[[str], str]
) -> None:
    amplitude_emulator.map(ids("a"), ids("b"))
    mapped_to_becomes(amplitude_emulator, ids("a"), ids("b"))
    response = amplitude_emulator.usermap([{"user_id": ids("b"), "global_user_id": ids("a")}])
    assert_refused(response, 400, {"code": 400, "error": "Invalid mapping", "index": 0})
