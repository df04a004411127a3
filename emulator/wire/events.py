"""Event ingestion: POST /2/httpapi and POST /batch (a JSON body), GET/POST /identify (form).

Checks in order, the first failure answers: request target (414), body size (413), body
encoding and JSON (400), api_key (missing, invalid), events or identification (missing, not
objects, too many: 413), every field of every event (400 naming them all), then the events per
second of each user and device (429). So a 429 always means "valid; retry later".
"""

from __future__ import annotations

import zlib

from starlette.requests import Request
from starlette.responses import Response

from emulator.backend import Backend, EventsThrottled
from emulator.domain.events import (
    InvalidEventJson,
    InvalidEvents,
    InvalidOptions,
    MissingRequestField,
    NotJson,
    TooManyEvents,
    UploadRefused,
    api_key_of,
    decode_upload,
    parse_events,
    parse_identifications,
)
from emulator.wire.auth import ingestion_project
from emulator.wire.params import check_target, read_body, read_params
from emulator.wire.responses import (
    Refusal,
    json_response,
    missing_field,
    payload_too_large,
)

# Content-Types read as JSON: Amplitude documents application/json; one real client sends its
# JSON as text/plain, and a request without a Content-Type has nothing to contradict.
_JSON_MEDIA_TYPES = frozenset({"application/json", "text/plain", ""})


async def http_api(request: Request) -> Response:
    """POST /2/httpapi: at most 1 MB and 2000 events; 30 events per second per user/device."""
    return await _upload(request, batch=False)


async def batch(request: Request) -> Response:
    """POST /batch: at most 20 MB; 1000 events per second per user/device."""
    return await _upload(request, batch=True)


async def _upload(request: Request, *, batch: bool) -> Response:
    backend: Backend = request.app.state.backend
    limits = backend.limits
    check_target(request, limits)
    limit = limits.batch_max_request_bytes if batch else limits.max_request_bytes
    raw = await _body(request, limit, "/batch" if batch else "/2/httpapi")
    try:
        document = decode_upload(_decoded(request, raw, limit))
        api_key = api_key_of(document)
        if api_key is None:
            raise missing_field("api_key", "Put api_key (a non-empty string) in the JSON body.")
        project = ingestion_project(request, backend, api_key)
        events = parse_events(document, max_events=None if batch else limits.max_events)
        now_ms = backend.ingest(
            project.org,
            project.api_key,
            events,
            eps=limits.batch_event_eps if batch else limits.event_eps,
        )
    except UploadRefused as refused:
        raise _refusal(refused, raw) from None
    except EventsThrottled as error:
        raise _throttled(error, backend) from None
    return json_response(
        {
            "code": 200,
            "events_ingested": len(events),
            "payload_size_bytes": len(raw),
            "server_upload_time": now_ms,
        }
    )


async def identify(request: Request) -> Response:
    """GET or POST /identify: `api_key` and `identification` as form or query parameters."""
    backend: Backend = request.app.state.backend
    params = await read_params(request, backend.limits)
    api_key = params.first("api_key")
    if api_key is None:
        raise missing_field(
            "api_key",
            params.body_note or "Send api_key as a form field or query-string parameter.",
        )
    project = ingestion_project(request, backend, api_key)
    identification = params.first("identification")
    try:
        if identification is None:
            raise NotJson(
                params.body_note
                or "identification (a JSON object or array of them) is absent or empty"
            )
        identifications = parse_identifications(identification, max_count=backend.limits.max_events)
        backend.identify(project.org, project.api_key, identifications)
    except NotJson as error:
        # The Identify API's documented answer for a missing or malformed identification.
        raise Refusal(
            400, {"code": 400, "error": "missing_event"}, _sentence(error.reason)
        ) from None
    except UploadRefused as refused:
        raise _refusal(refused, b"") from None
    except EventsThrottled as error:
        raise _throttled(error, backend) from None
    return Response("success", media_type="text/plain")


async def _body(request: Request, limit: int, path: str) -> bytes:
    try:
        return await read_body(request, limit)
    except Refusal as refusal:
        if refusal.status_code != 413:
            raise
        raise payload_too_large(
            f"The body is over the {limit}-byte limit of {path}; split the events into "
            "smaller requests."
        ) from None


def _decoded(request: Request, raw: bytes, limit: int) -> bytes:
    """The JSON text: checks the Content-Type, and inflates a gzip body (up to `limit`)."""
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type not in _JSON_MEDIA_TYPES and not media_type.endswith("+json"):
        raise NotJson(f"the Content-Type is {media_type!r}; send application/json")
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding != "gzip":
        raise NotJson(f"the Content-Encoding {encoding!r} is not supported; send gzip or none")
    inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
    try:
        text = inflater.decompress(raw, limit + 1)
    except zlib.error as error:
        raise NotJson(f"the gzip body cannot be inflated: {error}") from None
    if len(text) > limit or inflater.unconsumed_tail:
        raise TooManyEvents(f"the inflated body is over the {limit}-byte limit")
    if not inflater.eof:
        raise NotJson("the gzip body is cut short")
    return text


def _refusal(refused: UploadRefused, raw: bytes) -> Refusal:
    hint = _sentence(refused.reason)
    if isinstance(refused, NotJson):
        error = "Missing request body" if not raw and refused.reason.endswith("no body") else None
        return Refusal(400, {"code": 400, "error": error or "Invalid JSON request body"}, hint)
    if isinstance(refused, MissingRequestField):
        return missing_field(refused.name, hint)
    if isinstance(refused, InvalidEventJson):
        return Refusal(400, {"code": 400, "error": "Invalid event JSON"}, hint)
    if isinstance(refused, InvalidOptions):
        return Refusal(400, {"code": 400, "error": "Invalid options"}, hint)
    if isinstance(refused, TooManyEvents):
        return payload_too_large(hint[:-1] + "; split them into smaller requests.")
    assert isinstance(refused, InvalidEvents)
    body: dict[str, object] = {"code": 400, "error": refused.error}
    for name, found in (
        ("events_with_missing_fields", refused.missing),
        ("events_with_invalid_fields", refused.invalid),
        ("events_with_invalid_id_lengths", refused.id_lengths),
    ):
        if found:
            body[name] = found
    return Refusal(400, body, hint + " Nothing was ingested; fix or drop those events.")


def _throttled(error: EventsThrottled, backend: Backend) -> Refusal:
    throttled = error.throttled
    window = backend.limits.event_rate_window_seconds
    return Refusal(
        429,
        {
            "code": 429,
            "error": "Too many requests for some devices and users",
            "eps_threshold": throttled.eps_threshold,
            "throttled_devices": throttled.devices,
            "throttled_users": throttled.users,
            "throttled_events": throttled.events,
        },
        f"These users or devices sent over {throttled.eps_threshold} events per second "
        f"averaged over {window:g} s; nothing was ingested, retry after "
        f"{throttled.retry_after} s.",
        {"Retry-After": str(throttled.retry_after)},
    )


def _sentence(reason: str) -> str:
    text = reason[:1].upper() + reason[1:]
    return text if text.endswith(".") else text + "."
