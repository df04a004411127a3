"""Events as Amplitude's HTTP V2, Batch and Identify APIs take them: which ones are valid.

The rules are the documented ones: `event_type` required; `user_id` or `device_id` required, each
at least `min_id_length` (default 5) characters and not one of the ids Amplitude refuses; strings
at most 1024 characters; `time` in milliseconds since the epoch; property objects at most 40
levels deep. Every defect of every event is collected, so a refusal names all the bad events by
index, and one bad event refuses the whole request (nothing is ingested).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from emulator.domain.model import is_text
from emulator.domain.properties import InvalidProperties, PropertyUpdate, parse_update

MAX_STRING_LENGTH = 1024
MAX_DEPTH = 40
DEFAULT_MIN_ID_LENGTH = 5
INSERT_ID_WINDOW_MS = 7 * 24 * 3600 * 1000  # "within the past 7 days"
IDENTIFY = "$identify"
GROUP_IDENTIFY = "$groupidentify"
# datetime cannot show a later time; no real client sends one.
MAX_TIME_MS = 253_402_300_799_999

# "Invalid IDs that result in a 400 error" (HTTP V2 docs), compared case-insensitively.
REFUSED_IDS = frozenset(
    {
        "anonymous",
        "nil",
        "none",
        "null",
        "n/a",
        "na",
        "undefined",
        "unknown",
        '""',
        "00000000-0000-0000-0000-000000000000",
        "{}",
        "lmy47d",
        "0",
        "-1",
    }
)

# The documented event keys besides ids, type, time, insert_id and the property objects; they
# are kept as sent and shown in user activity. Unknown keys are ignored.
_STRING_FIELDS = frozenset(
    {
        "app_version",
        "platform",
        "os_name",
        "os_version",
        "device_brand",
        "device_manufacturer",
        "device_model",
        "carrier",
        "country",
        "region",
        "city",
        "dma",
        "language",
        "productId",
        "revenueType",
        "currency",
        "ip",
        "idfa",
        "idfv",
        "adid",
        "android_id",
        "android_app_set_id",
        "library",
        "partner_id",
        "version_name",
        "user_agent",
    }
)
_INTEGER_FIELDS = frozenset({"event_id", "session_id", "quantity"})
_NUMBER_FIELDS = frozenset({"price", "revenue", "location_lat", "location_lng"})
_OBJECT_FIELDS = frozenset({"groups", "group_properties", "plan", "ingestion_metadata"})
_BOOLEAN_FIELDS = frozenset({"$skip_user_properties_sync"})


# --- Refusals, each one row of Amplitude's documented 400 / 413 answers ----------------------


class UploadRefused(ValueError):
    """The request cannot be ingested; `reason` says why in one sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotJson(UploadRefused):
    """The body (or `identification`) is not a JSON document of the right kind."""


class MissingRequestField(UploadRefused):
    """A request-level field (`api_key`, `events`) is absent, null or empty."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(reason)
        self.name = name


class InvalidEventJson(UploadRefused):
    """`events` is not an array of objects."""


class InvalidOptions(UploadRefused):
    """`options` is not an object, or its `min_id_length` is not a positive whole number."""


class TooManyEvents(UploadRefused):
    """More events (or identifications) than one request may carry."""


class InvalidEvents(UploadRefused):
    """Some events break a rule: field name -> indexes of those events, per kind of defect."""

    def __init__(self) -> None:
        super().__init__("")
        self.missing: dict[str, list[int]] = {}
        self.invalid: dict[str, list[int]] = {}
        self.id_lengths: dict[str, list[int]] = {}
        self.reasons: list[str] = []

    def add(self, kind: dict[str, list[int]], name: str, index: int, reason: str) -> None:
        indexes = kind.setdefault(name, [])
        if not indexes or indexes[-1] != index:
            indexes.append(index)
        self.reasons.append(f"event {index}: {reason}")
        self.reason = "; ".join(self.reasons[:3]) + ("; ..." if len(self.reasons) > 3 else "")

    def __bool__(self) -> bool:
        return bool(self.reasons)

    @property
    def error(self) -> str:
        """Amplitude's `error` text for the most basic defect found."""
        if self.missing:
            return "Request missing required field"
        if self.invalid:
            return "Invalid field values on some events"
        return "Invalid id length for user_id or device_id"


# --- What a valid request holds ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One valid event, as sent (`time` None: the server upload time)."""

    index: int
    event_type: str
    user_id: str | None
    device_id: str | None
    time: int | None
    insert_id: str | None
    event_properties: dict[str, Any]
    user_properties: dict[str, Any]
    fields: dict[str, Any]
    update: PropertyUpdate | None  # what user_properties does to the user's properties

    @property
    def is_identify(self) -> bool:
        """Identify events update properties; they are not events of the user's stream."""
        return self.event_type in (IDENTIFY, GROUP_IDENTIFY)


@dataclass(frozen=True, slots=True)
class Identification:
    """One valid object of the Identify API's `identification`."""

    index: int
    user_id: str | None
    device_id: str | None
    update: PropertyUpdate | None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def decode_json(text: str | bytes) -> object:
    """Strict JSON (no NaN or Infinity); raises NotJson with the parser's reason."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise NotJson("the JSON is nested too deeply to read") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, a too-long integer
        raise NotJson(str(error)) from None


def decode_upload(body: bytes) -> dict[str, Any]:
    """The body of POST /2/httpapi or /batch: a JSON object."""
    if not body:
        raise NotJson("the request has no body")
    document = decode_json(body)
    if not isinstance(document, dict):
        raise NotJson("the body must be a JSON object with api_key and events")
    return document


def api_key_of(document: Mapping[str, Any]) -> str | None:
    """The body's api_key; None when absent, null, empty or not a string."""
    api_key = document.get("api_key")
    return api_key if isinstance(api_key, str) and api_key and is_text(api_key) else None


def min_id_length_of(document: Mapping[str, Any]) -> int:
    options = document.get("options")
    if options is None:
        return DEFAULT_MIN_ID_LENGTH
    if not isinstance(options, dict):
        raise InvalidOptions("options must be a JSON object")
    value = options.get("min_id_length")
    if value is None:
        return DEFAULT_MIN_ID_LENGTH
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOptions("options.min_id_length must be a positive whole number")
    return value


def parse_events(document: Mapping[str, Any], *, max_events: int | None) -> list[Event]:
    """The request's events, or the first refusal in the documented order.

    `options`, then `events` (present, an array, not empty, not over `max_events`, objects),
    then every field of every event.
    """
    min_id_length = min_id_length_of(document)
    raw = document.get("events")
    if raw is None or raw == []:
        raise MissingRequestField("events", "the request has no events (an array of at least one)")
    if not isinstance(raw, list):
        raise InvalidEventJson("events must be a JSON array of event objects")
    if max_events is not None and len(raw) > max_events:
        raise TooManyEvents(f"{len(raw)} events; at most {max_events} are allowed per request")
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InvalidEventJson(f"event {index} is not a JSON object")
    problems = InvalidEvents()
    events = [
        event
        for index, item in enumerate(raw)
        if (event := _parse_event(index, item, min_id_length, problems)) is not None
    ]
    if problems:
        raise problems
    return events


def parse_identifications(text: str, *, max_count: int | None) -> list[Identification]:
    """The Identify API's `identification`: one object or an array of them."""
    try:
        document = decode_json(text)
    except NotJson as error:
        raise NotJson(f"identification is not JSON ({error.reason})") from None
    if isinstance(document, dict):
        document = [document]
    if not isinstance(document, list) or not document:
        raise NotJson("identification must be a JSON object or a non-empty array of objects")
    items: list[object] = document
    if max_count is not None and len(items) > max_count:
        raise TooManyEvents(f"{len(items)} identifications; at most {max_count} per request")
    if not all(isinstance(item, dict) for item in items):
        raise NotJson("every identification must be a JSON object")
    problems = InvalidEvents()
    found: list[Identification] = []
    for index, item in enumerate(items):
        assert isinstance(item, dict)
        user_id, device_id = _ids(index, item, DEFAULT_MIN_ID_LENGTH, problems)
        update = _update(index, item.get("user_properties"), problems)
        found.append(Identification(index, user_id, device_id, update))
    if problems:
        raise problems
    return found


# --- One event ---------------------------------------------------------------------------------


def _parse_event(
    index: int, item: dict[str, Any], min_id_length: int, problems: InvalidEvents
) -> Event | None:
    before = len(problems.reasons)
    event_type = item.get("event_type")
    if event_type is None:
        problems.add(problems.missing, "event_type", index, "no event_type")
    elif not _is_short_text(event_type) or not event_type:
        problems.add(problems.invalid, "event_type", index, "event_type must be 1-1024 characters")
    user_id, device_id = _ids(index, item, min_id_length, problems)
    time = item.get("time")
    if time is not None and (
        isinstance(time, bool) or not isinstance(time, int) or not 0 <= time <= MAX_TIME_MS
    ):
        problems.add(problems.invalid, "time", index, "time must be milliseconds since the epoch")
    insert_id = item.get("insert_id")
    if insert_id is not None and not _is_short_text(insert_id):
        problems.add(problems.invalid, "insert_id", index, "insert_id must be a string")
    objects: dict[str, dict[str, Any]] = {}
    for name in ("event_properties", "user_properties", *sorted(_OBJECT_FIELDS)):
        value = item.get(name)
        if value is None:
            continue
        reason = _object_problem(value)
        if reason is not None:
            problems.add(problems.invalid, name, index, f"{name} {reason}")
        else:
            objects[name] = value
    update = None
    if event_type != GROUP_IDENTIFY and "user_properties" in objects:
        update = _update(index, objects["user_properties"], problems)
    fields = _documented_fields(index, item, problems)
    if len(problems.reasons) > before:
        return None
    assert isinstance(event_type, str)
    fields.update((name, objects[name]) for name in _OBJECT_FIELDS if name in objects)
    return Event(
        index=index,
        event_type=event_type,
        user_id=user_id,
        device_id=device_id,
        time=time,
        insert_id=insert_id or None,
        event_properties=objects.get("event_properties", {}),
        user_properties=objects.get("user_properties", {}),
        fields=fields,
        update=update,
    )


def _ids(
    index: int, item: Mapping[str, Any], min_id_length: int, problems: InvalidEvents
) -> tuple[str | None, str | None]:
    found: dict[str, str | None] = {}
    for name in ("user_id", "device_id"):
        value = item.get(name)
        found[name] = None
        if value is None:
            continue
        if not _is_short_text(value):
            problems.add(problems.invalid, name, index, f"{name} must be a string of 1024 or less")
        elif value.lower() in REFUSED_IDS:
            problems.add(
                problems.invalid, name, index, f"{name} {value!r} is an id Amplitude refuses"
            )
        elif len(value) < min_id_length:
            problems.add(
                problems.id_lengths,
                name,
                index,
                f"{name} {value!r} is shorter than min_id_length {min_id_length}",
            )
        else:
            found[name] = value
    if item.get("user_id") is None and item.get("device_id") is None:
        for name in ("user_id", "device_id"):
            problems.add(problems.missing, name, index, "neither user_id nor device_id")
    return found["user_id"], found["device_id"]


def _update(index: int, value: object, problems: InvalidEvents) -> PropertyUpdate | None:
    if value is not None:
        reason = _object_problem(value)
        if reason is not None:
            problems.add(problems.invalid, "user_properties", index, f"user_properties {reason}")
            return None
    try:
        return parse_update(value)
    except InvalidProperties as error:
        problems.add(problems.invalid, "user_properties", index, str(error))
        return None


def _documented_fields(
    index: int, item: Mapping[str, Any], problems: InvalidEvents
) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, value in item.items():
        if value is None:
            continue
        if name in _STRING_FIELDS:
            valid = _is_short_text(value)
        elif name in _INTEGER_FIELDS:
            valid = isinstance(value, int) and not isinstance(value, bool)
        elif name in _NUMBER_FIELDS:
            valid = isinstance(value, int | float) and not isinstance(value, bool)
        elif name in _BOOLEAN_FIELDS:
            valid = isinstance(value, bool)
        else:
            continue
        if valid:
            fields[name] = value
        else:
            problems.add(problems.invalid, name, index, f"{name} has the wrong type or length")
    return fields


def _is_short_text(value: object) -> bool:
    return isinstance(value, str) and len(value) <= MAX_STRING_LENGTH and is_text(value)


def _object_problem(value: object) -> str | None:
    """Why `value` is not a valid property object, or None: an object, at most 40 levels deep,
    every key and string at most 1024 characters. Iterative, so no input can exhaust the stack."""
    if not isinstance(value, dict):
        return "must be a JSON object"
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, dict | list) and depth > MAX_DEPTH:
            return f"is nested deeper than {MAX_DEPTH} levels"
        if isinstance(current, dict):
            for key, item in current.items():
                if not _is_short_text(key):
                    return "has a key over 1024 characters"
                stack.append((item, depth + 1))
        elif isinstance(current, list):
            stack.extend((item, depth + 1) for item in current)
        elif isinstance(current, str) and not _is_short_text(current):
            return "has a string over 1024 characters"
    return None
