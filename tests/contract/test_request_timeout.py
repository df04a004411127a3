"""The 408 for a body that never arrives is part of the contract on every operation that reads one.

The autouse fixture in tests/conftest.py validates every answer of these in-process servers
against openapi/openapi.yaml, so a 408 the document does not describe fails here.
"""

from __future__ import annotations

import pytest

from emulator.settings import Limits
from tests.conftest import StartEmulator
from tests.support import address_of, raw_exchange

# (method, path, headers beyond Host/Content-Length, expected body)
INGESTION_TIMEOUT = {"code": 408, "error": "Request timeout"}
CASES = [
    ("POST", "/usermap", "Content-Type: application/x-www-form-urlencoded\r\n", INGESTION_TIMEOUT),
    ("POST", "/2/httpapi", "Content-Type: application/json\r\n", INGESTION_TIMEOUT),
    ("POST", "/batch", "Content-Type: application/json\r\n", INGESTION_TIMEOUT),
    ("GET", "/api/2/usermap", "Authorization: Basic a2V5OnNlY3JldA==\r\n", None),
]


def _stalled_request(
    base_url: str, method: str, path: str, headers: str
) -> tuple[int, dict[str, object]]:
    """Declare a 100-byte body, send 10 bytes, then wait for the answer."""
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: 100\r\n\r\n"
    answer = raw_exchange(address_of(base_url), head.encode() + b"api_key=k&")
    assert answer.status is not None, f"no answer: {answer!r}"
    body: dict[str, object] = answer.json()
    return answer.status, body


@pytest.mark.parametrize(("method", "path", "headers", "expected"), CASES)
def test_a_stalled_body_gets_the_documented_408(
    start_emulator: StartEmulator,
    method: str,
    path: str,
    headers: str,
    expected: dict[str, object] | None,
) -> None:
    server = start_emulator(limits=Limits(body_timeout_seconds=0.3))
    status, body = _stalled_request(server.base_url, method, path, headers)
    assert status == 408
    if expected is not None:
        assert body == expected
    else:  # the Dashboard REST API's shape
        assert body["error"]["http_code"] == 408  # type: ignore[index]
