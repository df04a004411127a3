"""Helpers shared across the suite: servers in processes of their own, and raw HTTP.

- `serve_command`, `clean_environment`, `start_listening`: start `amplitude-emulator serve` as a
  subprocess and wait for its "amplitude-emulator listening on http://HOST:PORT" line.
- `FORM`, `HINT`, `MISSING_API_KEY`, ...: constants the API tests compare answers with.
- `reaches`: whether a user -> global graph leads from one id to another.
- `raw_exchange`, `read_response`, `http_request`: one HTTP request sent byte for byte over a
  socket, for inputs no client library would send, and the whole answer read back.
"""

from __future__ import annotations

import json
import os
import re
import select
import selectors
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import urlsplit

import pytest

ENV_PREFIX = "AMPLITUDE_EMULATOR_"
LISTENING = re.compile(r"amplitude-emulator listening on http://(?P<host>[^\s]+):(?P<port>\d+)")

# Amplitude's answers (spec section 3) and what requests carry.
FORM = "application/x-www-form-urlencoded"
HINT = "x-emulator-hint"
MISSING_API_KEY = {
    "code": 400,
    "error": "Request missing required field",
    "missing_field": "api_key",
}
MISSING_MAPPING = {
    "code": 400,
    "error": "Request missing required field",
    "missing_field": "mapping",
}
NOT_JSON = {"code": 400, "error": "Invalid JSON request body"}
TOO_LARGE = {"code": 413, "error": "Payload too large"}


# --- the mapping graph --------------------------------------------------------------------------


def reaches(graph: Mapping[str, str], start: str, target: str) -> bool:
    """Whether following user -> global edges from `start` arrives at `target` (an
    AssertionError if the graph has a cycle on the way)."""
    current: str | None = start
    for _ in range(len(graph) + 2):
        if current == target:
            return True
        if current is None:
            return False
        current = graph.get(current)
    raise AssertionError(f"the graph has a cycle: {graph}")


# --- a server process ---------------------------------------------------------------------------


def serve_command(*arguments: str) -> list[str]:
    """`amplitude-emulator serve --host 127.0.0.1 --port 0 ARGUMENTS` (the console script beside
    this interpreter, else `python -m emulator`)."""
    script = Path(sys.executable).with_name("amplitude-emulator")
    start = [str(script)] if script.exists() else [sys.executable, "-m", "emulator"]
    return [*start, "serve", "--host", "127.0.0.1", "--port", "0", *arguments]


def clean_environment(**variables: str) -> dict[str, str]:
    """This process's environment without AMPLITUDE_EMULATOR_* settings, plus `variables`
    (each name upper-cased and prefixed)."""
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)
    }
    environment.update({ENV_PREFIX + name.upper(): value for name, value in variables.items()})
    return environment


@dataclass(frozen=True)
class Emulator:
    """A running `amplitude-emulator serve` subprocess and the address it listens on."""

    process: subprocess.Popen[bytes]
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def memory_kb(self) -> dict[str, int]:
        """VmRSS, VmHWM (peak resident size) and RssAnon (resident memory that is not a file's:
        a file database's memory-mapped pages are not in it) of the server process, in kB."""
        values: dict[str, int] = {}
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon"):
                values[name] = int(value.split()[0])
        assert set(values) == {"VmRSS", "VmHWM", "RssAnon"}, values
        return values


def read_first_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    """The first line the process writes to its stdout pipe, without the newline.

    Raises TimeoutError if none comes within `timeout` seconds, RuntimeError if it exits first.
    """
    stdout: IO[bytes] | None = process.stdout
    assert stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no address printed in {timeout} s")
            if not selector.select(remaining):
                continue
            chunk = os.read(stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"the emulator exited with {process.wait()} before listening")
            buffer += chunk
    return buffer.split(b"\n", 1)[0].decode()


def start_listening(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    stderr_path: Path,
    timeout: float = 30.0,
) -> Emulator:
    """Start `command` (stdout piped, stderr to `stderr_path`) and wait for its first line,
    which must be exactly "amplitude-emulator listening on http://HOST:PORT".

    On a timeout, an early exit or another first line the process is killed and the test fails
    with its stderr. The caller stops the process it gets back.
    """
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            list(command),
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=dict(env),
        )
    try:
        line = read_first_line(process, timeout)
    except (TimeoutError, RuntimeError) as error:
        _kill(process)
        pytest.fail(f"{error}; stderr:\n{stderr_path.read_text(errors='replace')}")
    match = LISTENING.fullmatch(line)
    if match is None:
        _kill(process)
        pytest.fail(
            f"unexpected first line {line!r}; stderr:\n{stderr_path.read_text(errors='replace')}"
        )
    return Emulator(process, match["host"], int(match["port"]))


def _kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)
    if process.stdout is not None:
        process.stdout.close()


def address_of(base_url: str) -> tuple[str, int]:
    """(host, port) of `http://host:port`."""
    parts = urlsplit(base_url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


# --- raw HTTP -----------------------------------------------------------------------------------


@dataclass(slots=True)
class RawResult:
    """What came back: a response (status, headers, body) or none; `closed` if the server
    closed the connection; `interim` the statuses of 1xx responses before the final one."""

    status: int | None
    headers: dict[str, str]
    body: bytes
    closed: bool
    interim: list[int] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)


def _parse(data: bytes) -> tuple[list[int], int | None, dict[str, str], bytes]:
    interim: list[int] = []
    while True:
        head, separator, rest = data.partition(b"\r\n\r\n")
        if not separator:
            return interim, None, {}, b""
        status_line, *lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ")
        if len(parts) < 2 or not parts[1].isdigit():
            raise AssertionError(f"not an HTTP response: {data[:200]!r}")
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(parts[1])
        if 100 <= status < 200:
            interim.append(status)
            data = rest
            continue
        if headers.get("transfer-encoding", "").lower() == "chunked":
            return interim, status, headers, _dechunk(rest)
        length = int(headers.get("content-length", len(rest)))
        return interim, status, headers, rest[:length]


def parse_response(data: bytes) -> tuple[int | None, dict[str, str], bytes]:
    """The first response in `data` (interim 1xx responses skipped)."""
    _, status, headers, body = _parse(data)
    return status, headers, body


def _dechunk(data: bytes) -> bytes:
    body = b""
    while True:
        size_line, separator, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16) if separator else 0
        if size == 0:
            return body
        body, data = body + data[:size], data[size + 2 :]


def _response_complete(data: bytes) -> bool:
    try:
        status, headers, body = parse_response(data)
    except (AssertionError, ValueError):
        return False
    if status is None:
        return False
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return data.endswith(b"0\r\n\r\n")
    if "content-length" not in headers:
        return False
    return len(body) >= int(headers["content-length"])


def read_response(conn: socket.socket, timeout: float = 10.0) -> RawResult:
    """Read one response from `conn`: until it is complete (by Content-Length or chunked
    framing) or the server closes; never waits more than `timeout` seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    closed = False
    while not _response_complete(data):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        readable, _, _ = select.select([conn], [], [], remaining)
        if not readable:
            break
        try:
            chunk = conn.recv(1 << 20)
        except OSError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        data += chunk
    interim, status, headers, body = _parse(data)
    return RawResult(status, headers, body, closed, interim)


def raw_exchange(
    address: tuple[str, int],
    request: bytes | Sequence[bytes],
    *,
    pause: float = 0.0,
    half_close: bool = False,
    timeout: float = 10.0,
) -> RawResult:
    """Send `request` (or its pieces, `pause` seconds apart) and read one response.

    Reads until the response is complete or the server closes; never waits more than
    `timeout` seconds. `half_close` shuts the sending side once everything is sent.
    """
    pieces = [request] if isinstance(request, bytes) else list(request)
    deadline = time.monotonic() + timeout
    with socket.create_connection(address, timeout=timeout) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for index, piece in enumerate(pieces):
                if index and pause:
                    readable, _, _ = select.select([conn], [], [], pause)
                    if readable:  # the server answered (or closed) before all was sent
                        break
                conn.sendall(piece)
            if half_close:
                conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close early (413, 408); read what it answered
        return read_response(conn, timeout=max(deadline - time.monotonic(), 0.0))


def http_request(
    method: str,
    target: str | bytes,
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    content_length: int | Literal["auto"] | None = "auto",
    close: bool = True,
) -> bytes:
    """A raw HTTP/1.1 request; Content-Length is the body's unless given (None: no header)."""
    raw_target = target.encode("latin-1") if isinstance(target, str) else target
    lines = [method.encode() + b" " + raw_target + b" HTTP/1.1", b"Host: 127.0.0.1"]
    lines += [f"{name}: {value}".encode("latin-1") for name, value in headers]
    if content_length == "auto":
        if body:
            lines.append(f"Content-Length: {len(body)}".encode())
    elif content_length is not None:
        lines.append(f"Content-Length: {content_length}".encode())
    if close:
        lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def write_pre_org_id_database(path: Path) -> Path:
    """A SQLite file as emulators before org ids left it: the graph's table with the org's name
    in every row (one row: org-a's user u, amplitude id 1)."""
    with sqlite3.connect(path) as old:
        old.execute(
            "CREATE TABLE amplitude_ids (org VARCHAR NOT NULL, user_id VARCHAR NOT NULL, "
            "amplitude_id BIGINT NOT NULL, PRIMARY KEY (org, user_id))"
        )
        old.execute("INSERT INTO amplitude_ids VALUES ('org-a', 'u', 1)")
    old.close()
    return path
