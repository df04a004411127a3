"""Amplitude's official Python SDK (`amplitude-analytics`) against the emulator, as users run it:
to /2/httpapi and, with use_batch, to /batch; its callback reports success; a 429 makes it
retry and still deliver."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from amplitude import Amplitude, BaseEvent, Config, EventOptions, Identify

from emulator.server import ServerThread
from tests.events import CONTROL, HTTPAPI, activity, stream


class Deliveries:
    """What the SDK's callback reported, per insert_id (the SDK gives every event one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.codes: dict[str, list[int]] = {}

    def __call__(self, event: Any, code: int, _message: str | None = None) -> None:
        with self._lock:
            self.codes.setdefault(event.insert_id, []).append(code)

    def wait(self, count: int, timeout: float = 10) -> dict[str, list[int]]:
        """Until `count` events were reported (a retried event only once it was settled)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.codes) >= count:
                    return dict(self.codes)
            time.sleep(0.01)
        raise AssertionError(f"only {len(self.codes)} of {count} events were reported")


@pytest.fixture(scope="module")
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        yield client


def sdk(server: ServerThread, api_key: str, deliveries: Deliveries, **config: Any) -> Amplitude:
    options: dict[str, Any] = {"server_url": f"{server.base_url}{HTTPAPI}", **config}
    return Amplitude(api_key, Config(callback=deliveries, **options))


@pytest.mark.parametrize("use_batch", [False, True])
def test_the_sdk_delivers_and_reports_success(
    server: ServerThread, http: httpx.Client, api_key: str, use_batch: bool
) -> None:
    deliveries = Deliveries()
    config: dict[str, Any] = {}
    if use_batch:
        config = {"use_batch": True, "server_url": f"{server.base_url}/batch"}
    client = sdk(server, api_key, deliveries, **config)
    for n in range(3):
        client.track(BaseEvent(f"Step {n}", user_id="sdk-user-1", event_properties={"n": n}))
    client.identify(
        Identify().set("plan", "pro").add("logins", 1), EventOptions(user_id="sdk-user-1")
    )
    for future in client.flush():
        if future is not None:
            future.result(timeout=10)
    codes = deliveries.wait(4)
    assert sorted(code for reported in codes.values() for code in reported) == [200] * 4
    client.shutdown()
    assert stream(http, api_key, "sdk-user-1") == [
        ("sdk-user-1", "Step 0"),
        ("sdk-user-1", "Step 1"),
        ("sdk-user-1", "Step 2"),
    ]
    user_data = activity(http, api_key, "sdk-user-1")["userData"]
    assert user_data["properties"] == {"plan": "pro", "logins": 1}
    path = "/batch" if use_batch else HTTPAPI
    journal = http.get(f"{CONTROL}/requests", params={"path": path, "api_key": api_key}).json()
    assert [entry["status"] for entry in journal["requests"]] == [200]


def test_a_429_makes_the_sdk_retry_and_still_deliver(
    server: ServerThread, http: httpx.Client, api_key: str
) -> None:
    rule = http.post(
        f"{CONTROL}/faults",
        json={
            "match": {"path": HTTPAPI, "api_key": api_key},
            "effect": {
                "status": 429,
                "body": {
                    "code": 429,
                    "error": "Too many requests for some devices and users",
                    "eps_threshold": 30,
                },
            },
            "times": 1,
        },
    )
    assert rule.status_code == 201, rule.text
    deliveries = Deliveries()
    # A short flush interval: the SDK resends retried events on its next flush tick.
    client = sdk(server, api_key, deliveries, flush_interval_millis=50)
    client.track(BaseEvent("Retried", user_id="sdk-user-2"))
    for future in client.flush():
        if future is not None:
            future.result(timeout=10)
    assert deliveries.wait(1) == {next(iter(deliveries.codes)): [200]}
    client.shutdown()
    assert stream(http, api_key, "sdk-user-2") == [("sdk-user-2", "Retried")]
    statuses = [
        entry["status"]
        for entry in http.get(
            f"{CONTROL}/requests", params={"path": HTTPAPI, "api_key": api_key}
        ).json()["requests"]
    ]
    assert statuses == [429, 200]
