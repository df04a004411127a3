"""The event limits are settings like the others: flags, environment variables, defaults."""

from __future__ import annotations

import pytest

from emulator.settings import Limits, build_settings, environment_values
from emulator.tenancy import ConfigError


def test_defaults_are_amplitudes() -> None:
    limits = Limits()
    assert (limits.max_events, limits.batch_max_request_bytes) == (2000, 20 * 1024 * 1024)
    assert (limits.event_eps, limits.batch_event_eps, limits.event_rate_window_seconds) == (
        30,
        1000,
        30.0,
    )


def test_environment_variables() -> None:
    values = environment_values(
        {
            "AMPLITUDE_EMULATOR_MAX_EVENTS": "10",
            "AMPLITUDE_EMULATOR_BATCH_MAX_REQUEST_BYTES": "4096",
            "AMPLITUDE_EMULATOR_EVENT_EPS": "off",
            "AMPLITUDE_EMULATOR_BATCH_EVENT_EPS": "5",
            "AMPLITUDE_EMULATOR_EVENT_RATE_WINDOW": "2.5",
        }
    )
    limits = build_settings(values).limits
    assert (limits.max_events, limits.batch_max_request_bytes) == (10, 4096)
    assert (limits.event_eps, limits.batch_event_eps, limits.event_rate_window_seconds) == (
        None,
        5,
        2.5,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EVENT_EPS", "0"),
        ("BATCH_EVENT_EPS", "-1"),
        ("EVENT_RATE_WINDOW", "0"),
        ("MAX_EVENTS", "x"),
    ],
)
def test_bad_values(name: str, value: str) -> None:
    with pytest.raises(ConfigError):
        environment_values({f"AMPLITUDE_EMULATOR_{name}": value})
