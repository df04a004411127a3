"""Fixtures of the reliability tests: the --soak switch (registered in tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def soak(request: pytest.FixtureRequest) -> bool:
    """True under `pytest --soak`: crash-safety and concurrency tests run for much longer."""
    return bool(request.config.getoption("--soak"))
