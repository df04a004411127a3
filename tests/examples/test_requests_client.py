"""Testing code that sends aliases with `requests`, the way Segment's Amplitude destination does.

`send_alias` below stands for your application: it posts one mapping object (previous id ->
user id) as a form body with Segment's `Content-Type`. The tests point it at the emulator through
the `amplitude_emulator` fixture, which the package's pytest plugin provides once it is installed
(nothing to import, nothing to start). Every test gets a freshly reset emulator, so the tests
can use the same user ids without seeing each other's mappings.

Run it: `python -m pytest tests/examples/test_requests_client.py`.
"""

from __future__ import annotations

import json

import requests

from emulator.client import EmulatorClient

SEGMENT_CONTENT_TYPE = "application/x-www-form-urlencoded;charset=UTF-8"


def send_alias(usermap_url: str, api_key: str, previous_id: str, user_id: str) -> requests.Response:
    """The application: map `previous_id` to `user_id`, as Segment's `mapUser` action does."""
    mapping = [{"user_id": previous_id, "global_user_id": user_id}]
    return requests.post(
        usermap_url,
        data={"api_key": api_key, "mapping": json.dumps(mapping), "options": "{}"},
        headers={"Content-Type": SEGMENT_CONTENT_TYPE},
        timeout=10,
    )


def test_alias_is_mapped(amplitude_emulator: EmulatorClient) -> None:
    response = send_alias(
        amplitude_emulator.usermap_url, amplitude_emulator.api_key, "anonymous-42", "user-42"
    )

    assert response.status_code == 200
    assert response.json() == {"code": 200}
    amplitude_emulator.assert_mapped("anonymous-42", "user-42")
    # The read endpoint (HTTP Basic auth) shows both sides of the mapping.
    read = amplitude_emulator.mappings("anonymous-42", "user-42")
    assert read["user-42"]["mapped_from"][0]["user_id"] == "anonymous-42"


def test_request_is_what_segment_sends(amplitude_emulator: EmulatorClient) -> None:
    send_alias(amplitude_emulator.usermap_url, amplitude_emulator.api_key, "anonymous-1", "user-1")

    # The journal records each request to Amplitude's paths, with headers and body.
    [entry] = amplitude_emulator.assert_request(method="POST", path="/usermap", status=200)
    assert entry["headers"]["content-type"] == SEGMENT_CONTENT_TYPE
    assert entry["api_key"] == amplitude_emulator.api_key


def test_each_test_starts_empty(amplitude_emulator: EmulatorClient) -> None:
    # Mappings made by the tests above are gone: the fixture reset the emulator.
    amplitude_emulator.assert_not_mapped("anonymous-42")
    assert amplitude_emulator.requests() == []


def test_a_bad_mapping_is_refused_with_a_hint(amplitude_emulator: EmulatorClient) -> None:
    response = requests.post(
        amplitude_emulator.usermap_url,
        data={"api_key": amplitude_emulator.api_key, "mapping": '[{"user_id": "a"}]'},
        headers={"Content-Type": SEGMENT_CONTENT_TYPE},
        timeout=10,
    )

    assert response.status_code == 400
    assert response.json()["missing_field"] == "global_user_id"
    # Every refusal says why in one sentence.
    assert response.headers["X-Emulator-Hint"]
