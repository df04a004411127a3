"""GET/POST /_emulator/clock: freeze, set, advance; timestamps and the rate window follow it."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.control import (
    CONTROL,
    journal,
    map_ok,
    map_users,
    ok_json,
    patch_config,
    refused,
    set_clock,
)


def clock(http: httpx.Client) -> dict[str, Any]:
    body: dict[str, Any] = ok_json(http.get(f"{CONTROL}/clock"))
    return body


def test_clock_runs_in_real_time_by_default(http: httpx.Client) -> None:
    now = clock(http)
    assert set(now) == {"now", "frozen"}
    assert now["frozen"] is False
    assert abs(now["now"] - time.time()) < 60


def test_freeze_set_advance_unfreeze(http: httpx.Client) -> None:
    frozen = set_clock(http, freeze=True)
    assert frozen["frozen"] is True
    time.sleep(0.02)
    assert clock(http) == frozen

    assert set_clock(http, set=1_000_000) == {"now": 1_000_000.0, "frozen": True}
    assert set_clock(http, advance=2.5) == {"now": 1_000_002.5, "frozen": True}
    assert set_clock(http, advance=-0.5) == {"now": 1_000_002.0, "frozen": True}
    assert clock(http) == {"now": 1_000_002.0, "frozen": True}

    running = set_clock(http, freeze=False)
    assert running["frozen"] is False
    # Time runs on from where it stood.
    assert 1_000_002.0 <= running["now"] < 1_000_062.0
    time.sleep(0.02)
    assert clock(http)["now"] > running["now"]


def test_set_and_advance_while_running(http: httpx.Client) -> None:
    running = set_clock(http, set=2_000_000_000)
    assert running["frozen"] is False
    assert 2_000_000_000 <= running["now"] < 2_000_000_060

    advanced = set_clock(http, advance=3600)
    assert advanced["frozen"] is False
    assert 2_000_003_600 <= advanced["now"] < 2_000_003_660


def test_one_body_may_freeze_set_and_advance(http: httpx.Client) -> None:
    assert set_clock(http, freeze=True, set=5000, advance=10) == {"now": 5010.0, "frozen": True}


def test_empty_body_changes_nothing(http: httpx.Client) -> None:
    set_clock(http, freeze=True, set=42)
    assert ok_json(http.post(f"{CONTROL}/clock")) == {"now": 42.0, "frozen": True}
    assert ok_json(http.post(f"{CONTROL}/clock", json={})) == {"now": 42.0, "frozen": True}


@pytest.mark.parametrize(
    "body",
    [
        b'{"freeze": "yes"}',
        b'{"freeze": 1}',
        b'{"set": "now"}',
        b'{"set": true}',
        b'{"set": NaN}',
        b'{"advance": Infinity}',
        b'{"advance": [1]}',
        b'{"speed": 2}',
        b'{"freeze": true, "rewind": 1}',
        b"[]",
        b'"freeze"',
        b"freeze",
    ],
)
def test_invalid_bodies_are_refused_and_change_nothing(http: httpx.Client, body: bytes) -> None:
    set_clock(http, freeze=True, set=777)
    refused(http.post(f"{CONTROL}/clock", content=body))
    assert clock(http) == {"now": 777.0, "frozen": True}


def test_journal_timestamps_follow_the_clock(http: httpx.Client, api_key: str) -> None:
    set_clock(http, freeze=True, set=1_500_000_000)
    map_ok(http, api_key, {"a": "b"})
    set_clock(http, advance=90)
    map_ok(http, api_key, {"c": "d"})

    assert [entry["started_at"] for entry in journal(http)] == [1_500_000_000.0, 1_500_000_090.0]
    assert [entry["started_at"] for entry in journal(http, since=1_500_000_001)] == [
        1_500_000_090.0
    ]


def test_rate_window_follows_the_clock(http: httpx.Client, api_key: str) -> None:
    set_clock(http, freeze=True, set=1_000_000)
    patch_config(http, rate_limit=2)
    map_ok(http, api_key, {"a": "b", "c": "d"})

    throttled = map_users(http, api_key, {"e": "f"})
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "30"
    set_clock(http, advance=29)
    throttled = map_users(http, api_key, {"e": "f"})
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "1"

    set_clock(http, advance=1)
    map_ok(http, api_key, {"e": "f"})
