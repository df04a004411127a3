"""One emulator for the control tests, brought back to a known state before each test.

The control API changes global state (reset, clock, faults, limits, tenancy), so these tests
never use the session-wide `server` that other test packages share.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from emulator.server import ServerThread
from tests.control import CONTROL, DEFAULT_CONFIG, client_for, ok_json


@pytest.fixture(scope="package")
def emulator() -> Iterator[ServerThread]:
    with ServerThread() as running:
        yield running


@pytest.fixture
def http(emulator: ServerThread) -> Iterator[httpx.Client]:
    """A client on the package's emulator: permissive, empty, real-time clock, default limits."""
    with client_for(emulator) as client:
        ok_json(client.put(f"{CONTROL}/state", json={"permissive": True, "orgs": []}))
        ok_json(client.post(f"{CONTROL}/reset"))
        assert ok_json(client.patch(f"{CONTROL}/config", json=DEFAULT_CONFIG)) == DEFAULT_CONFIG
        yield client
