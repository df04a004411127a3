"""The 1 MB request limit is enforced while reading (spec section 3): a huge body is refused
without being buffered. Run against `amplitude-emulator serve` in a process of its own, so its
memory can be measured from /proc.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import (
    TOO_LARGE,
    Emulator,
    RawResult,
    clean_environment,
    read_response,
    serve_command,
    start_listening,
)

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads memory use from /proc"
)

MIB = 1_048_576
BODY_SIZE = 50 * MIB
CHUNK = 64 * 1024
MAX_GROWTH_KB = 20 * 1024  # far less than the 50 MiB sent


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    emulator = start_listening(
        serve_command("--log-level", "warning"),
        env=clean_environment(),
        stderr_path=tmp_path_factory.mktemp("body-limit") / "stderr.log",
    )
    try:
        yield emulator
    finally:
        emulator.process.kill()
        emulator.process.wait(timeout=10)
        if emulator.process.stdout is not None:
            emulator.process.stdout.close()


def assert_too_large(response: RawResult) -> None:
    assert response.interim == [], "a 1xx answer before the 413"
    assert response.status == 413, response.body
    assert "content-length" in response.headers
    assert response.json() == TOO_LARGE
    assert response.headers["content-type"] == "application/json"
    assert response.headers.get("x-emulator-hint")


def stream_chunked(emulator: Emulator, content_type: str) -> tuple[RawResult, int]:
    """Stream up to 50 MiB in 64 KiB chunks, stopping once the server answers or closes."""
    frame = b"%x\r\n" % CHUNK + b"a" * CHUNK + b"\r\n"
    head = (
        f"POST /usermap?api_key=memory-key HTTP/1.1\r\nHost: {emulator.host}\r\n"
        f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    with socket.create_connection((emulator.host, emulator.port), timeout=10) as conn:
        conn.sendall(head)
        sent = 0
        try:
            while sent < BODY_SIZE:
                readable, _, _ = select.select([conn], [], [], 0)
                if readable:  # an answer (or a close) has arrived
                    break
                conn.sendall(frame)
                sent += CHUNK
            else:  # all of it went in unanswered: end the body, so a buffering server answers
                conn.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # reset or timed out while sending: read what the server answered
        return read_response(conn), sent


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/json"],
)
def test_chunked_50_mib_body_is_refused_without_buffering(
    emulator: Emulator, content_type: str
) -> None:
    before = emulator.memory_kb()
    response, sent = stream_chunked(emulator, content_type)
    after = emulator.memory_kb()
    assert_too_large(response)
    assert sent < BODY_SIZE // 2, f"the server read {sent} bytes before answering"
    assert after["VmHWM"] - before["VmHWM"] < MAX_GROWTH_KB, (before, after)
    assert after["VmRSS"] - before["VmRSS"] < MAX_GROWTH_KB, (before, after)


def test_declared_50_mib_is_refused_before_the_body_is_sent(emulator: Emulator) -> None:
    before = emulator.memory_kb()
    head = (
        f"POST /usermap HTTP/1.1\r\nHost: {emulator.host}\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {BODY_SIZE}\r\n\r\n"
    ).encode()
    with socket.create_connection((emulator.host, emulator.port), timeout=10) as conn:
        conn.sendall(head)  # and not one byte of the body
        started = time.monotonic()
        response = read_response(conn, timeout=10)
        assert time.monotonic() - started < 5
    assert_too_large(response)
    after = emulator.memory_kb()
    assert after["VmHWM"] - before["VmHWM"] < MAX_GROWTH_KB, (before, after)


def test_declared_50_mib_with_expect_100_continue_gets_no_continue(emulator: Emulator) -> None:
    # curl sends `Expect: 100-continue` for large bodies: the answer must be the 413, not a 100.
    head = (
        f"POST /usermap HTTP/1.1\r\nHost: {emulator.host}\r\nExpect: 100-continue\r\n"
        f"Content-Length: {BODY_SIZE}\r\n\r\n"
    ).encode()
    with socket.create_connection((emulator.host, emulator.port), timeout=10) as conn:
        conn.sendall(head)
        response = read_response(conn)
    assert_too_large(response)


def test_server_still_answers_afterwards(emulator: Emulator) -> None:
    response, _ = stream_chunked(emulator, "application/x-www-form-urlencoded")
    assert_too_large(response)
    mapping = json.dumps([{"user_id": "after", "global_user_id": "big-body"}])
    with httpx.Client(base_url=emulator.base_url, timeout=10) as http:
        posted = http.post("/usermap", data={"api_key": "memory-key", "mapping": mapping})
        assert posted.status_code == 200, posted.text
        assert posted.json() == {"code": 200}
        read = http.get(
            "/api/2/usermap", params={"user_ids": ["after"]}, auth=("memory-key", "secret")
        )
        assert read.status_code == 200, read.text
        assert read.json()["after"]["mapped_to"][0]["user_id"] == "big-body"
    assert emulator.process.poll() is None, "the emulator exited"
