"""Fixtures: the real emulator on a real socket, driven over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from emulator.server import ServerThread
from emulator.settings import Settings

StartEmulator = Callable[..., ServerThread]


@pytest.fixture(scope="session")
def server() -> Iterator[ServerThread]:
    """One permissive emulator for the session; tests stay apart by using their own api_key."""
    with ServerThread() as running:
        yield running


@pytest.fixture
def api_key() -> str:
    """A fresh key: in permissive mode each key is its own org, so no test sees another's state."""
    return f"key-{uuid.uuid4().hex}"


@pytest.fixture
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        yield http


@pytest.fixture
def start_emulator() -> Iterator[StartEmulator]:
    """Start an emulator of its own with these settings (port 0); stopped after the test."""
    started: list[ServerThread] = []

    def start(**setting_values: Any) -> ServerThread:
        settings = Settings(**{"port": 0, "log_level": "warning", **setting_values})
        running = ServerThread(settings).start()
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
