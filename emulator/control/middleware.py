"""ASGI middleware around Amplitude's paths: apply fault rules, then record the exchange.

Control paths (/_emulator) pass straight through: they are neither faulted nor journaled.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emulator.control import CONTROL_PREFIX
from emulator.control.journal import Exchange
from emulator.openapi import DOCUMENT_PATHS
from emulator.wire.params import parse_urlencoded
from emulator.wire.responses import HINT_HEADER, header_safe

if TYPE_CHECKING:
    from emulator.control.faults import FaultRule
    from emulator.control.service import Control

DropConnection = Callable[[Scope], bool]
# Set in the scope of a request a fault rule answers (or drops): its answer is the rule's, not
# the emulator's, so response validation (emulator.contract) leaves it alone.
FAULT_SCOPE_KEY = "emulator.fault"
_HINT_NAME = HINT_HEADER.lower().encode("latin-1")


class ConnectionDropped(Exception):
    """Raised after a response was started, so the server closes the connection mid-answer."""


class ControlMiddleware:
    def __init__(self, app: ASGIApp, control: Control) -> None:
        self.app = app
        self.control = control

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"].startswith(CONTROL_PREFIX)
            or scope["path"] in DOCUMENT_PATHS
        ):
            await self.app(scope, receive, send)
            return
        control = self.control
        if not control.ready:
            await _not_ready(control, send)
            return
        started_at = control.backend.clock.now()
        started = time.perf_counter()
        body_limit = control.journal.body_limit
        request_body = bytearray()
        request_truncated = False
        status = 0
        response_headers: list[tuple[bytes, bytes]] = []
        response_body = bytearray()
        fault: FaultRule | None = None
        peeked_api_key: str | None = None

        if control.faults:
            if control.faults.needs_api_key:
                receive, peeked_api_key = await _peek_api_key(scope, receive, control)
            fault = control.faults.take(scope["method"], scope["path"], peeked_api_key)

        async def recording_receive() -> Message:
            nonlocal request_truncated
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                room = body_limit - len(request_body)
                request_body.extend(chunk[: max(room, 0)])
                request_truncated = request_truncated or len(chunk) > room
            return message

        recorded = False

        def record() -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            if control.journal.capacity <= 0:
                # A journal of size 0 keeps nothing: skip the formatting, keep the numbering.
                control.journal.next_id()
                return
            state = scope.get("state") or {}
            api_key = state.get("api_key", peeked_api_key)
            if api_key is None and fault is not None:
                # The app never saw a faulted request: name its key from what the journal read.
                api_key = _api_key_of(scope, bytes(request_body))
            hint = None
            for name, value in response_headers:
                if name.lower() == _HINT_NAME:
                    hint = value.decode("latin-1")
            # Kept raw: the journal formats (and redacts) an exchange only when it is read.
            control.journal.add(
                Exchange(
                    id=control.journal.next_id(),
                    method=scope["method"],
                    path=scope["path"],
                    query_string=scope.get("query_string", b""),
                    headers=scope.get("headers", []),
                    body=bytes(request_body),
                    body_truncated=request_truncated,
                    status=status,
                    response_body=bytes(response_body),
                    hint=hint,
                    api_key=api_key,
                    org=state.get("org"),
                    fault=None if fault is None else fault.id,
                    started_at=started_at,
                    duration_seconds=time.perf_counter() - started,
                )
            )

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                response_headers.extend(message.get("headers", []))
            elif message["type"] == "http.response.body":
                room = body_limit - len(response_body)
                response_body.extend(message.get("body", b"")[: max(room, 0)])
                if not message.get("more_body", False):
                    # Before the client can have the whole answer: whoever it tells (a test
                    # thread resetting in-process, too) finds the entry already there.
                    record()
            await send(message)

        try:
            if fault is None:
                await self.app(scope, recording_receive, recording_send)
            else:
                await self._apply(fault, scope, recording_receive, recording_send)
        finally:
            record()  # an answer broken off or never given

    async def _apply(self, fault: FaultRule, scope: Scope, receive: Receive, send: Send) -> None:
        if fault.latency_ms:
            await asyncio.sleep(fault.latency_ms / 1000)
        if fault.drop or fault.status is not None:
            scope[FAULT_SCOPE_KEY] = fault.id
            # The app never reads this request: read its body (up to the journal's bound) so
            # the journal shows what the client sent.
            await _read_body(receive, self.control.journal.body_limit)
        if fault.drop:
            await self._drop(scope, send)
        elif fault.status is not None:
            body = json.dumps(fault.body, separators=(",", ":")).encode()
            headers = [
                (b"content-type", b"application/json"),
                *(
                    (name.lower().encode("latin-1"), value.encode("latin-1"))
                    for name, value in fault.headers.items()
                ),
                (HINT_HEADER.lower().encode(), f"Injected by fault rule {fault.id}.".encode()),
            ]
            await send({"type": "http.response.start", "status": fault.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        else:  # latency only: then the real answer
            await self.app(scope, receive, send)

    async def _drop(self, scope: Scope, send: Send) -> None:
        drop_connection: DropConnection | None = self.control.drop_connection
        if drop_connection is not None and drop_connection(scope):
            # Let the server notice the closed transport, so it does not answer for us.
            for _ in range(3):
                await asyncio.sleep(0)
            return
        # Without access to the transport: start an answer and break it off.
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"1000")],
            }
        )
        raise ConnectionDropped("fault rule dropped the connection")


async def _read_body(receive: Receive, limit: int) -> None:
    """Receive the request body until it ends or more than `limit` bytes have come."""
    received = 0
    while received <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        received += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _not_ready(control: Control, send: Send) -> None:
    reason = control.load_error or "the seed data is still loading"
    body = json.dumps({"code": 503, "error": "Service unavailable"}).encode()
    hint = header_safe(f"Not ready: {reason}; retry, or wait for GET /_emulator/ready.")
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"retry-after", b"1"),
                (HINT_HEADER.lower().encode(), hint.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _peek_api_key(
    scope: Scope, receive: Receive, control: Control
) -> tuple[Receive, str | None]:
    """Read the body (within the size limit) to find api_key, and replay it to the app."""
    messages: list[Message] = []
    size = 0
    limit = control.backend.limits.max_request_bytes
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        size += len(message.get("body", b""))
        if size > limit or not message.get("more_body", False):
            break
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
    api_key = _api_key_of(scope, body if size <= limit else b"")

    async def replay() -> Message:
        if messages:
            return messages.pop(0)
        return await receive()

    return replay, api_key


def _api_key_of(scope: Scope, body: bytes) -> str | None:
    """The api_key a request names: Basic auth user, else body (JSON or form), else query
    parameter."""
    import base64

    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization" and value[:6].lower() == b"basic ":
            try:
                return base64.b64decode(value[6:].strip()).decode("utf-8").split(":", 1)[0]
            except ValueError:
                return None
    if body.lstrip()[:1] == b"{":  # the JSON bodies of /2/httpapi and /batch
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            document = None
        if isinstance(document, dict):
            api_key = document.get("api_key")
            return api_key if isinstance(api_key, str) and api_key else None
    pairs: list[tuple[str, str]] = [
        *parse_urlencoded(body),
        *parse_urlencoded(scope.get("query_string", b"")),
    ]
    return next((value for name, value in pairs if name == "api_key" and value), None)


def uvicorn_connection_dropper(server_state: Any) -> DropConnection:
    """Abort the TCP connection serving `scope`, found among uvicorn's live connections."""

    def drop(scope: Scope) -> bool:
        for connection in list(server_state.connections):
            if getattr(connection, "scope", None) is scope:
                connection.transport.abort()
                return True
        return False

    return drop
