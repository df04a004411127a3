"""A keep-alive HTTP/1.1 client on the standard library, for latency samples and set-up."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

FORM = "application/x-www-form-urlencoded"
USERMAP = "/usermap"
READ = "/api/2/usermap"
API_KEY = "bench-key"
SECRET_KEY = "bench-secret"
IDLE_RECONNECT_SECONDS = 2.0


def basic_auth(api_key: str = API_KEY, secret_key: str = SECRET_KEY) -> str:
    return "Basic " + base64.b64encode(f"{api_key}:{secret_key}".encode()).decode("ascii")


def mapping_json(pairs: Iterable[tuple[str, str | None]]) -> str:
    """The `mapping` parameter: (user, global) maps, (user, None) unmaps."""
    objects: list[dict[str, Any]] = [
        {"user_id": user, "global_user_id": global_user}
        if global_user is not None
        else {"user_id": user, "unmap": True}
        for user, global_user in pairs
    ]
    return json.dumps(objects, separators=(",", ":"))


def map_body(pairs: Iterable[tuple[str, str | None]], api_key: str = API_KEY) -> bytes:
    return urlencode({"api_key": api_key, "mapping": mapping_json(pairs)}).encode()


def read_body(user_ids: Sequence[str]) -> bytes:
    return urlencode([("user_ids", user_id) for user_id in user_ids]).encode()


class HttpClient:
    """One connection, reused; every call returns (status, body, seconds)."""

    def __init__(self, base_url: str, timeout: float = 120.0) -> None:
        parts = urlsplit(base_url)
        assert parts.hostname is not None
        assert parts.port is not None
        self._address = (parts.hostname, parts.port)
        self._timeout = timeout
        self._connection = self._connect()
        self._last_used = time.monotonic()

    def _connect(self) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection(*self._address, timeout=self._timeout)
        connection.connect()
        assert connection.sock is not None
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, float]:
        if time.monotonic() - self._last_used > IDLE_RECONNECT_SECONDS:
            # uvicorn closes a keep-alive connection idle for 5 s: open a new one first.
            self._connection.close()
            self._connection = self._connect()
        started = time.perf_counter()
        self._connection.request(method, path, body=body, headers=headers or {})
        response = self._connection.getresponse()
        content = response.read()
        seconds = time.perf_counter() - started
        self._last_used = time.monotonic()
        return response.status, content, seconds

    def checked(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[bytes, float]:
        status, content, seconds = self.request(method, path, body, headers)
        if status >= 300:
            raise RuntimeError(f"{method} {path} answered {status}: {content[:300]!r}")
        return content, seconds

    def map(self, pairs: Iterable[tuple[str, str | None]]) -> float:
        return self.checked("POST", USERMAP, map_body(pairs), {"Content-Type": FORM})[1]

    def read(self, user_ids: Sequence[str]) -> tuple[dict[str, Any], float]:
        headers = {"Content-Type": FORM, "Authorization": basic_auth()}
        content, seconds = self.checked("GET", READ, read_body(user_ids), headers)
        document: dict[str, Any] = json.loads(content)
        return document, seconds

    def control(self, method: str, path: str, document: Any = None) -> tuple[Any, float]:
        body = None if document is None else json.dumps(document).encode()
        headers = {} if body is None else {"Content-Type": "application/json"}
        content, seconds = self.checked(method, "/_emulator" + path, body, headers)
        return (json.loads(content) if content else None), seconds

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
