"""GET/PATCH /_emulator/config: the runtime limits (batch, size, rate) and the journal size."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from emulator.settings import Limits
from tests.conftest import StartEmulator
from tests.control import (
    CONTROL,
    DEFAULT_CONFIG,
    client_for,
    map_ok,
    map_users,
    ok_json,
    patch_config,
    refused,
    set_clock,
)


def config(http: httpx.Client) -> dict[str, Any]:
    body: dict[str, Any] = ok_json(http.get(f"{CONTROL}/config"))
    return body


def test_defaults_are_amplitudes_limits(start_emulator: StartEmulator) -> None:
    server = start_emulator()
    with client_for(server) as http:
        assert config(http) == DEFAULT_CONFIG


def test_config_reflects_the_settings(start_emulator: StartEmulator) -> None:
    limits = Limits(max_batch=10, max_request_bytes=5000, rate_limit=None, rate_window_seconds=5)
    server = start_emulator(limits=limits, journal_size=7)
    with client_for(server) as http:
        assert config(http) == {
            **DEFAULT_CONFIG,
            "max_batch": 10,
            "max_request_bytes": 5000,
            "rate_limit": None,
            "rate_window_seconds": 5.0,
            "journal_size": 7,
        }


def test_patch_changes_only_what_it_names(http: httpx.Client) -> None:
    changed = patch_config(http, max_batch=5, rate_window_seconds=10)
    assert changed == {**DEFAULT_CONFIG, "max_batch": 5, "rate_window_seconds": 10.0}
    assert config(http) == changed
    assert patch_config(http) == changed  # an empty patch changes nothing
    assert ok_json(http.patch(f"{CONTROL}/config")) == changed  # nor does no body


def test_max_batch_takes_effect(http: httpx.Client, api_key: str) -> None:
    patch_config(http, max_batch=2)
    too_many = map_users(http, api_key, {"a": "x", "b": "x", "c": "x"})
    assert too_many.status_code == 413
    assert too_many.json() == {"code": 413, "error": "Payload too large"}
    map_ok(http, api_key, {"a": "x", "b": "x"})


def test_max_request_bytes_takes_effect(http: httpx.Client, api_key: str) -> None:
    patch_config(http, max_request_bytes=200)
    assert map_users(http, api_key, {"u" * 200: "g"}).status_code == 413
    map_ok(http, api_key, {"u": "g"})


def test_max_target_bytes_takes_effect(http: httpx.Client, api_key: str) -> None:
    patch_config(http, max_target_bytes=100)
    mapping = json.dumps({"user_id": "u" * 100, "global_user_id": "g"})
    long_target = http.post("/usermap", params={"api_key": api_key, "mapping": mapping})
    assert long_target.status_code == 414
    map_ok(http, api_key, {"u" * 100: "g"})  # the same in a body is fine


def test_rate_limit_and_window_take_effect(http: httpx.Client, api_key: str) -> None:
    set_clock(http, freeze=True, set=1_000_000)
    patch_config(http, rate_limit=1, rate_window_seconds=10)
    map_ok(http, api_key, {"a": "b"})
    throttled = map_users(http, api_key, {"c": "d"})
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "10"

    # Off: no limit at all.
    assert patch_config(http, rate_limit=None)["rate_limit"] is None
    for number in range(5):
        map_ok(http, api_key, {f"u{number}": "g"})


INVALID_PATCHES: list[Any] = [
    [],
    "max_batch",
    {"max_batches": 5},
    {"max_batch": 0},
    {"max_batch": -3},
    {"max_batch": 2.5},
    {"max_batch": "5"},
    {"max_batch": True},
    {"max_batch": None},
    {"max_request_bytes": 0},
    {"max_target_bytes": 0},
    {"rate_limit": 0},
    {"rate_limit": 1.5},
    {"rate_limit": "off"},
    {"rate_window_seconds": 0},
    {"rate_window_seconds": -1},
    {"rate_window_seconds": "30"},
    {"rate_window_seconds": None},
    {"journal_size": -1},
    {"journal_size": 2.0},
    {"journal_size": None},
    {"max_batch": 5, "rate_limit": 0},  # all or nothing: max_batch is not changed either
]


@pytest.mark.parametrize("patch", INVALID_PATCHES)
def test_invalid_patches_are_refused_and_change_nothing(http: httpx.Client, patch: Any) -> None:
    refused(http.patch(f"{CONTROL}/config", json=patch))
    assert config(http) == DEFAULT_CONFIG


@pytest.mark.parametrize(
    "body", [b"{", b'{"rate_window_seconds": NaN}', b'{"rate_window_seconds": Infinity}']
)
def test_patches_that_are_not_finite_json_are_refused(http: httpx.Client, body: bytes) -> None:
    refused(http.patch(f"{CONTROL}/config", content=body))
    assert config(http) == DEFAULT_CONFIG
