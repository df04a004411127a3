"""The request journal: what Amplitude-facing requests came in and what they were answered.

Bounded twice over: at most `capacity` exchanges, and at most `body_limit` bytes of each body.
An exchange is kept as the middleware saw it and formatted only when read: recording costs a
request next to nothing, and every entry given out has its secrets redacted (Basic-auth
credentials, admin tokens, `secret_key` parameters).
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypedDict
from urllib.parse import unquote_plus

REDACTED = "[redacted]"
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


class JournalEntry(TypedDict):
    """One Amplitude-facing request and its answer, as GET /_emulator/requests returns it."""

    id: int
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: str
    body_truncated: bool
    status: int
    response_body: Any
    hint: str | None
    api_key: str | None
    org: str | None
    fault: int | None  # id of the fault rule that answered, if one did
    started_at: float  # emulator clock, epoch seconds
    duration_ms: float


_SECRET_PARAMETER = "secret_key"
# A multipart part named secret_key: its header lines, then its value, up to the next boundary
# line or the end of what was kept.
_SECRET_PART = re.compile(
    r'(?im)(^content-disposition:[^\r\n]*;[ \t]*name[ \t]*=[ \t]*"?secret_key"?[ \t]*(?:;[^\r\n]*)?'
    r"\r?\n"
    r"(?:[^\r\n]+\r?\n)*?\r?\n)(?s:.*?)(?=\r?\n--|\Z)"
)


def redact_parameters(text: str) -> str:
    """Hide `secret_key` values (the read API's credentials as parameters) in a query string or
    a body: urlencoded fields whose name decodes to it (`secret%5Fkey` too), multipart parts."""
    fields = text.split("&")
    for index, text_field in enumerate(fields):
        name, equals, _ = text_field.partition("=")
        if equals and unquote_plus(name).strip().lower() == _SECRET_PARAMETER:
            fields[index] = f"{name}={REDACTED}"
    return _SECRET_PART.sub(rf"\g<1>{REDACTED}", "&".join(fields))


def redact_headers(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    result: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name in _SECRET_HEADERS:
            scheme = value.split(" ", 1)[0] if " " in value else ""
            value = f"{scheme} {REDACTED}".strip()
        result[name] = value if name not in result else f"{result[name]}, {value}"
    return result


def decode_body(body: bytes) -> Any:
    """JSON bodies as JSON, anything else as text."""
    text = body.decode("utf-8", "replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass(slots=True)
class Exchange:
    """One Amplitude-facing request and its answer, raw, as the middleware recorded them.

    Not frozen: a frozen dataclass sets each of its fields through object.__setattr__, about
    1.3 us of every request; nothing changes an exchange once recorded."""

    id: int
    method: str
    path: str
    query_string: bytes
    headers: list[tuple[bytes, bytes]]  # the request's, as received
    body: bytes  # at most the journal's body_limit
    body_truncated: bool
    status: int
    response_body: bytes  # at most the journal's body_limit
    hint: str | None  # the answer's X-Emulator-Hint
    api_key: str | None
    org: str | None
    fault: int | None
    started_at: float
    duration_seconds: float

    def entry(self) -> JournalEntry:
        """The exchange as GET /_emulator/requests shows it: decoded, secrets redacted."""
        query = self.query_string.decode("latin-1")
        return JournalEntry(
            id=self.id,
            method=self.method,
            path=self.path,
            query=redact_parameters(query) if query else "",
            headers=redact_headers(self.headers),
            body=redact_parameters(self.body.decode("utf-8", "replace")),
            body_truncated=self.body_truncated,
            status=self.status,
            response_body=decode_body(self.response_body),
            hint=self.hint,
            api_key=self.api_key,
            org=self.org,
            fault=self.fault,
            started_at=self.started_at,
            duration_ms=round(self.duration_seconds * 1000, 3),
        )


@dataclass(slots=True)
class JournalFilter:
    path: str | None = None
    method: str | None = None
    status: int | None = None
    api_key: str | None = None
    org: str | None = None
    since: float | None = None  # entries that started at or after this clock time
    limit: int | None = None  # the most recent N of the matching entries

    def matches(self, exchange: Exchange) -> bool:
        return (
            (self.path is None or exchange.path == self.path)
            and (self.method is None or exchange.method == self.method.upper())
            and (self.status is None or exchange.status == self.status)
            and (self.api_key is None or exchange.api_key == self.api_key)
            and (self.org is None or exchange.org == self.org)
            and (self.since is None or exchange.started_at >= self.since)
        )


@dataclass
class Journal:
    capacity: int = 1000
    body_limit: int = 4096
    _entries: deque[Exchange] = field(default_factory=deque)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next_id(self) -> int:
        return next(self._ids)

    def add(self, exchange: Exchange) -> None:
        with self._lock:
            self._entries.append(exchange)
            while len(self._entries) > max(self.capacity, 0):
                self._entries.popleft()

    def resize(self, capacity: int) -> None:
        """Keep at most `capacity` entries from now on, dropping the oldest at once."""
        with self._lock:
            self.capacity = capacity
            while len(self._entries) > max(capacity, 0):
                self._entries.popleft()

    def entries(self, query: JournalFilter | None = None) -> list[JournalEntry]:
        query = query or JournalFilter()
        with self._lock:
            found = [exchange for exchange in self._entries if query.matches(exchange)]
        if query.limit is not None:
            found = found[-query.limit :] if query.limit > 0 else []
        return [exchange.entry() for exchange in found]

    def clear(self, org: str | None = None) -> None:
        with self._lock:
            if org is None:
                self._entries.clear()
            else:
                self._entries = deque(exchange for exchange in self._entries if exchange.org != org)

    def __len__(self) -> int:
        return len(self._entries)
