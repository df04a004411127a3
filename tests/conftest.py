"""Fixtures: the real emulator on a real socket, driven over HTTP.

Every response of every emulator this suite starts is checked against openapi/openapi.yaml: the
ones in this process through `emulator.contract.validate_all_apps` (a test whose responses broke
the contract fails at teardown), subprocess servers through AMPLITUDE_EMULATOR_VALIDATE_RESPONSES
(strict: they answer 500 instead; see `contract_environment`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from emulator import contract
from emulator.server import ServerThread
from emulator.settings import Settings

StartEmulator = Callable[..., ServerThread]

VALIDATE_RESPONSES_ENV = "AMPLITUDE_EMULATOR_VALIDATE_RESPONSES"
_violations: list[contract.Violation] = []


def contract_environment() -> dict[str, str]:
    """What a subprocess emulator needs in its environment to validate its responses too."""
    return {VALIDATE_RESPONSES_ENV: "strict"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the crash-safety and concurrency tests of tests/reliability for longer",
    )


def pytest_configure() -> None:
    contract.validate_all_apps(_violations.append)
    os.environ.setdefault(VALIDATE_RESPONSES_ENV, contract_environment()[VALIDATE_RESPONSES_ENV])


@pytest.fixture
def contract_violations() -> list[contract.Violation]:
    """The violations heard so far in this test. A test that breaks the contract on purpose
    checks them and empties the list, or it fails at teardown."""
    return _violations


@pytest.fixture(autouse=True)
def responses_keep_the_contract() -> Iterator[None]:
    """Fail the test if an emulator answered it with a response openapi/openapi.yaml forbids."""
    _violations.clear()
    yield
    found = list(_violations)
    _violations.clear()
    if found:
        listed = "\n".join(f"  {violation}" for violation in found[:20])
        pytest.fail(
            f"{len(found)} response(s) broke openapi/openapi.yaml:\n{listed}", pytrace=False
        )


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
