"""Where the parameters travel (spec section 2): query string, urlencoded or multipart body.

A body field wins over a query field of the same name; inside one source the first occurrence
of a name wins; an empty value counts as missing. Request size limits are enforced here, while
reading, so a large body is never buffered whole.
"""

from __future__ import annotations

import asyncio
import codecs
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from emulator.settings import Limits
from emulator.wire.responses import Refusal, payload_too_large, uri_too_long

Pairs = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class RequestParams:
    query: Pairs
    body: Pairs
    body_note: str | None = None  # why the body gave no parameters, for hints

    def first(self, name: str) -> str | None:
        """The parameter's value: body before query, first occurrence, empty values skipped."""
        for source in (self.body, self.query):
            for key, value in source:
                if key == name and value:
                    return value
        return None

    def values(self, name: str) -> list[str]:
        """Every non-empty value of a repeated parameter, from the body if it has any."""
        from_body = [value for key, value in self.body if key == name and value]
        return from_body or [value for key, value in self.query if key == name and value]


def _decode_component(raw: bytes) -> str:
    raw = raw.replace(b"+", b" ")
    if b"%" in raw:
        raw = _unquote(raw)
    return raw.decode("utf-8", "replace")


def _unquote(raw: bytes) -> bytes:
    """urllib's unquote_to_bytes, in C: each %XX becomes \\xXX for codecs.escape_decode (with
    backslashes doubled first, so nothing else is an escape). A % without two hex digits after
    it makes escape_decode refuse; urllib then keeps it as it is. A 2000-object batch has some
    30,000 escapes, which urllib decodes one by one in Python (milliseconds per request)."""
    try:
        return codecs.escape_decode(raw.replace(b"\\", b"\\\\").replace(b"%", b"\\x"))[0]
    except ValueError:
        return unquote_to_bytes(raw)


def parse_urlencoded(raw: bytes) -> Pairs:
    """application/x-www-form-urlencoded, decoded as UTF-8 (bad bytes become U+FFFD)."""
    pairs: Pairs = []
    for field in raw.split(b"&"):
        if field:
            name, _, value = field.partition(b"=")
            pairs.append((_decode_component(name), _decode_component(value)))
    return pairs


def request_target_length(request: Request) -> int:
    scope = request.scope
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return len(raw_path) + (1 + len(query) if query else 0)


def check_target(request: Request, limits: Limits) -> None:
    length = request_target_length(request)
    if length > limits.max_target_bytes:
        raise uri_too_long(
            f"The request target is {length} bytes, over the {limits.max_target_bytes}-byte limit; "
            "send large batches as a form body instead of in the query string."
        )


async def read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    """The body, or a 413 as soon as it is known to exceed `limit` bytes (before reading it).

    A client that takes longer than `timeout` seconds (default: the app's body timeout) to send
    the body gets a 408 and the connection is closed, so a stalled client cannot hold it.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    if timeout is None:
        timeout = _app_body_timeout(request)
    # The ASGI messages themselves rather than Request.stream(): an async generator per request
    # costs more than the single message a small body comes in.
    receive = request.receive
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] != "http.request":  # http.disconnect
                    raise ClientDisconnect
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
    except ClientDisconnect:
        # Nobody is left to answer; refuse quietly rather than act on half a request.
        raise Refusal(
            400, {"code": 400, "error": "Client disconnected"}, "The client went away."
        ) from None
    except TimeoutError:
        raise Refusal(
            408,
            {"code": 408, "error": "Request timeout"},
            f"The request body did not arrive within {timeout:g} s ({size} bytes came); "
            "send it at once (the emulator's --body-timeout).",
            {"Connection": "close"},
        ) from None
    return b"".join(chunks)


def _app_body_timeout(request: Request) -> float | None:
    app = request.scope.get("app")
    limits = getattr(getattr(getattr(app, "state", None), "backend", None), "limits", None)
    timeout = getattr(limits, "body_timeout_seconds", None)
    return timeout if isinstance(timeout, int | float) else None


def _too_large(limit: int) -> Refusal:
    return payload_too_large(
        f"The request is over the {limit}-byte limit (query string plus body); "
        "Amplitude refuses requests over 1 MB, so split the batch."
    )


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_params(request: Request, limits: Limits) -> RequestParams:
    """Check the target and size limits, then gather the parameters from query and body."""
    check_target(request, limits)
    query_string: bytes = request.scope.get("query_string", b"")
    if len(query_string) > limits.max_request_bytes:
        raise _too_large(limits.max_request_bytes)
    body = await read_body(
        request, limits.max_request_bytes - len(query_string), limits.body_timeout_seconds
    )
    query = parse_urlencoded(query_string)
    media_type = _media_type(request)
    if not body:
        return RequestParams(query, [])
    if media_type == "application/json" or media_type.endswith("+json"):
        return RequestParams(
            query,
            [],
            "A JSON body is not read: send api_key and mapping as form fields "
            "(application/x-www-form-urlencoded) or in the query string, as Amplitude documents.",
        )
    if media_type == "multipart/form-data":
        try:
            return RequestParams(query, await _parse_multipart(request, body))
        except (MultiPartException, ValueError, UnicodeDecodeError) as error:
            return RequestParams(query, [], f"The multipart body could not be read: {error}")
    return RequestParams(query, parse_urlencoded(body))


async def _parse_multipart(request: Request, body: bytes) -> Pairs:
    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    # Without "app" in the scope Starlette raises MultiPartException (handled by the caller)
    # instead of turning a malformed body into a plain HTTPException 400.
    scope = {key: value for key, value in request.scope.items() if key != "app"}
    form = await Request(scope, replay).form()
    try:
        pairs: Pairs = []
        for name, value in form.multi_items():
            if isinstance(value, str):
                pairs.append((name, value))
            else:  # a file part, e.g. curl -F mapping=@batch.json
                pairs.append((name, (await value.read()).decode("utf-8", "replace")))
        return pairs
    finally:
        await form.close()
