"""Testing a client's retry on 429 with a fault rule, without waiting out a real rate limit.

`send_with_retry` stands for your application's sender: on 429 (and 5xx) it waits what the
`Retry-After` header says and tries again. A fault rule (`amplitude_emulator.fault(...)`) makes the
emulator answer the next two POSTs to /usermap with Amplitude's 429 body and `Retry-After: 0`;
the third reaches the emulator. The journal then shows the three attempts. The sleep function is
injected, so the test also checks the waits without spending them.

The second test gets a real 429 from the emulator's rate limit instead: the marker
`@pytest.mark.amplitude_emulator(rate_limit=2)` lowers the limit for that test only, and freezing
and advancing the emulator's clock stands in for the 30-second wait.

Run it: `python -m pytest tests/examples/test_retry_on_429.py`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
import requests

from emulator.client import EmulatorClient

RETRIED = frozenset({408, 423, 429, 500, 502, 503, 504})


def send_with_retry(
    usermap_url: str,
    api_key: str,
    mapping: list[dict[str, str]],
    *,
    attempts: int = 5,
    sleep: Callable[[float], None] = time.sleep,
) -> requests.Response:
    """The application: POST /usermap, retrying 429 and 5xx after `Retry-After` seconds."""
    data = {"api_key": api_key, "mapping": json.dumps(mapping)}
    for _attempt in range(attempts - 1):
        response = requests.post(usermap_url, data=data, timeout=10)
        if response.status_code not in RETRIED:
            return response
        sleep(float(response.headers.get("Retry-After", "1")))
    return requests.post(usermap_url, data=data, timeout=10)


def test_retries_twice_on_429_then_succeeds(amplitude_emulator: EmulatorClient) -> None:
    rule = amplitude_emulator.fault(
        method="POST",
        path="/usermap",
        status=429,
        body={"code": 429, "error": "Too many requests", "eps_threshold": 50},
        headers={"Retry-After": "0"},
        times=2,
    )
    waits: list[float] = []

    response = send_with_retry(
        amplitude_emulator.usermap_url,
        amplitude_emulator.api_key,
        [{"user_id": "device-1", "global_user_id": "user-1"}],
        sleep=waits.append,
    )

    assert response.status_code == 200
    assert waits == [0.0, 0.0]
    attempts = amplitude_emulator.requests(path="/usermap")
    assert [entry["status"] for entry in attempts] == [429, 429, 200]
    assert [entry["fault"] for entry in attempts] == [rule, rule, None]
    amplitude_emulator.assert_mapped("device-1", "user-1")


@pytest.mark.amplitude_emulator(rate_limit=2)
def test_real_rate_limit_with_a_frozen_clock(amplitude_emulator: EmulatorClient) -> None:
    amplitude_emulator.clock.freeze()
    amplitude_emulator.map("a", "g")
    amplitude_emulator.map("b", "g")  # the window (2 objects per 30 s) is now full
    waits: list[float] = []

    def wait_on_the_emulator_clock(seconds: float) -> None:
        waits.append(seconds)
        amplitude_emulator.clock.advance(seconds)

    response = send_with_retry(
        amplitude_emulator.usermap_url,
        amplitude_emulator.api_key,
        [{"user_id": "c", "global_user_id": "g"}],
        sleep=wait_on_the_emulator_clock,
    )

    assert response.status_code == 200
    assert waits == [30.0]  # Retry-After: the window had to age out entirely
    amplitude_emulator.assert_request(path="/usermap", status=429, count=1)
    amplitude_emulator.assert_mapped("c", "g")
