"""Amplitude-shaped responses, and the refusals that carry an `X-Emulator-Hint`."""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.responses import Response

HINT_HEADER = "X-Emulator-Hint"
_HINT_MAX = 400
# json.dumps(body, ensure_ascii=False, separators=(",", ":")), without a new encoder per call.
_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def json_response(
    body: object, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    content = _encode_json(body).encode()
    return Response(content, status_code, headers, media_type="application/json")


def header_safe(text: str) -> str:
    """One printable-ASCII line: header values cannot carry what users may put in ids or keys."""
    line = " ".join(text.split())
    ascii_line = line.encode("ascii", "backslashreplace").decode("ascii")
    # Control characters (NUL, DEL, ...) are ASCII but illegal in a header value.
    safe = "".join(c if " " <= c <= "~" else f"\\x{ord(c):02x}" for c in ascii_line)
    # At most _HINT_MAX characters as sent, escapes included.
    return safe if len(safe) <= _HINT_MAX else safe[: _HINT_MAX - 3] + "..."


class Refusal(Exception):
    """A 4xx the wire layer answers with: status, JSON body, and a one-sentence hint why."""

    def __init__(
        self,
        status_code: int,
        body: Mapping[str, object],
        hint: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(hint)
        self.status_code = status_code
        self.body = body
        self.hint = hint
        self.headers = dict(headers or {})

    def response(self) -> Response:
        return json_response(
            self.body, self.status_code, {**self.headers, HINT_HEADER: header_safe(self.hint)}
        )


# --- Ingestion-style errors (POST /usermap), shaped like the HTTP V2 API's -----------------


def missing_field(name: str, hint: str) -> Refusal:
    return Refusal(
        400,
        {"code": 400, "error": "Request missing required field", "missing_field": name},
        hint,
    )


def invalid_api_key(api_key: str, hint: str) -> Refusal:
    return Refusal(400, {"code": 400, "error": f"Invalid API key: {api_key}"}, hint)


def payload_too_large(hint: str) -> Refusal:
    return Refusal(413, {"code": 413, "error": "Payload too large"}, hint)


def uri_too_long(hint: str) -> Refusal:
    return Refusal(414, {"code": 414, "error": "URI too long"}, hint)


# --- Dashboard REST API errors (GET /api/2/usermap) ------------------------------------------


def unauthorized(message: str) -> Refusal:
    return Refusal(
        401,
        {"error": {"http_code": 401, "type": "unauthorized", "message": message}},
        message,
        {"WWW-Authenticate": 'Basic realm="Amplitude"'},
    )


def invalid_request(message: str, details: str, status_code: int = 400) -> Refusal:
    return Refusal(
        status_code,
        {
            "error": {
                "http_code": status_code,
                "type": "invalid",
                "message": message,
                "metadata": {"details": details},
            }
        },
        details,
    )
