"""The Dashboard REST API where mappings show: User Search, User Activity, Active and New Users.

HTTP Basic auth first (as GET /api/2/usermap), then the parameters; refusals in the Dashboard
REST API's error shape. Persons are resolved at read time (domain/identity.py), so a mapping or
an unmapping changes what these answer for past events too.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from emulator.backend import Backend
from emulator.domain.activity import (
    MAX_ACTIVITY_LIMIT,
    Direction,
    Interval,
    Metric,
    StoredEvent,
    UserData,
    count_users,
    user_activity,
)
from emulator.domain.identity import resolve_all, stream_members
from emulator.wire.auth import authenticate, dashboard_params
from emulator.wire.params import RequestParams
from emulator.wire.responses import invalid_request, json_response

_MAX_AMPLITUDE_ID = 2**63 - 1
_MAX_PREFIX_MATCHES = 1000
# The widest date range /api/2/users answers: ten years of days keeps an answer small.
MAX_RANGE_DAYS = 3660
_EPOCH = dt.datetime(1970, 1, 1)


async def user_search(request: Request) -> Response:
    """GET /api/2/usersearch?user=: by user id or device id, amplitude id, then user id prefix."""
    backend, params, org = await _authenticated(request)
    text = params.first("user")
    if text is None:
        raise invalid_request("Missing user", "Send user: an amplitude id, device id or user id.")
    with backend.read_events(org) as reader:
        exact = reader.search_user_or_device(text)
        if exact:
            return _matches("match_user_or_device_id", exact)
        amplitude_id = _amplitude_id(text)
        owner = None if amplitude_id is None else reader.owner(amplitude_id)
        if amplitude_id is not None and owner is not None:
            kind, value = owner
            return _matches(
                "match_amplitude_id", [(value if kind == "user" else None, amplitude_id)]
            )
        prefixed = reader.search_user_prefix(text, _MAX_PREFIX_MATCHES)
    if prefixed:
        return _matches("match_user_prefix", list(prefixed))
    return json_response({"type": "nomatch", "matches": []})


async def user_activity_route(request: Request) -> Response:
    """GET /api/2/useractivity?user=<amplitude_id>&offset&limit&direction."""
    backend, params, org = await _authenticated(request)
    text = params.first("user")
    amplitude_id = None if text is None else _amplitude_id(text)
    if amplitude_id is None:
        raise invalid_request(
            "Invalid user", "Send user: the amplitude id (a whole number) of the user."
        )
    offset = _whole_number(params, "offset", default=0, low=0, high=None)
    limit = _whole_number(
        params, "limit", default=MAX_ACTIVITY_LIMIT, low=1, high=MAX_ACTIVITY_LIMIT
    )
    direction_text = params.first("direction") or "latest"
    if direction_text not in ("latest", "earliest"):
        raise invalid_request("Invalid direction", "direction is 'latest' or 'earliest'.")
    direction: Direction = "latest" if direction_text == "latest" else "earliest"
    with backend.read_events(org) as reader:
        owner = reader.owner(amplitude_id)
        user_id: str | None = None
        merged: list[int] = []
        events: list[StoredEvent] = []
        if owner is not None and owner[0] == "user":
            user_id = owner[1]
            members = stream_members(user_id, reader)
            events = reader.events_of_users(members)
            merged = list(reader.user_amplitude_ids(members).values())
        elif owner is not None:
            events = reader.events_of_device_profile(owner[1])
        properties = reader.properties(amplitude_id)
    data, page = user_activity(
        amplitude_id=amplitude_id,
        user_id=user_id,
        merged_amplitude_ids=merged,
        properties=properties,
        events=events,
        offset=offset,
        limit=limit,
        direction=direction,
    )
    return json_response(
        {"userData": _user_data_json(data), "events": [_event_json(e) for e in page]}
    )


async def users(request: Request) -> Response:
    """GET /api/2/users?start&end&m&i: active or new users per day, week or month."""
    backend, params, org = await _authenticated(request)
    start, end = _date(params, "start"), _date(params, "end")
    if end < start:
        raise invalid_request("Invalid date range", "end must not be before start.")
    if (end - start).days >= MAX_RANGE_DAYS:
        raise invalid_request(
            "Invalid date range", f"The emulator answers ranges of up to {MAX_RANGE_DAYS} days."
        )
    metric_text = params.first("m") or "active"
    if metric_text not in ("active", "new"):
        raise invalid_request("Invalid m", "m is 'active' or 'new'.")
    metric: Metric = "active" if metric_text == "active" else "new"
    interval_text = params.first("i") or "1"
    intervals: dict[str, Interval] = {"1": 1, "7": 7, "30": 30}
    if interval_text not in intervals:
        raise invalid_request("Invalid i", "i is 1, 7 or 30 (daily, weekly, monthly).")
    for name in ("s", "g"):
        if params.first(name) is not None:
            raise invalid_request(
                f"Unsupported {name}",
                "Segments (s) and group-bys (g) are not emulated; leave them out.",
            )
    with backend.read_events(org) as reader:
        persons = resolve_all(reader.mappings())
        activity = reader.activity()
    keyed = (
        (f"user:{persons.get(user_id, user_id)}" if user_id else f"device:{device_id}", time)
        for user_id, device_id, time in activity
    )
    labels, series = count_users(
        keyed, start=start, end=end, metric=metric, interval=intervals[interval_text]
    )
    return json_response(
        {
            "data": {
                "series": [series],
                "seriesMeta": ["All Users"],
                "xValues": [label.isoformat() for label in labels],
            }
        }
    )


# --- helpers --------------------------------------------------------------------------------


async def _authenticated(request: Request) -> tuple[Backend, RequestParams, str]:
    backend: Backend = request.app.state.backend
    params = await dashboard_params(request, backend)
    project = authenticate(request, params, backend)
    return backend, params, project.org


def _amplitude_id(text: str) -> int | None:
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    value = int(text)
    return value if value <= _MAX_AMPLITUDE_ID else None


def _whole_number(
    params: RequestParams, name: str, *, default: int, low: int, high: int | None
) -> int:
    text = params.first(name)
    if text is None:
        return default
    numeric = text.isascii() and text.isdigit() and len(text) <= 18
    value = int(text) if numeric else None
    if value is None or value < low or (high is not None and value > high):
        bounds = f"{low} to {high}" if high is not None else f"{low} or more"
        raise invalid_request(f"Invalid {name}", f"{name} must be a whole number, {bounds}.")
    return value


def _date(params: RequestParams, name: str) -> dt.date:
    text = params.first(name)
    try:
        if text is None or len(text) != 8 or not (text.isascii() and text.isdigit()):
            raise ValueError
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise invalid_request(
            f"Invalid {name}", f"{name} is required, a date formatted YYYYMMDD."
        ) from None


def _matches(kind: str, found: list[tuple[str | None, int]]) -> Response:
    return json_response(
        {
            "matches": [
                {"user_id": user_id, "amplitude_id": amplitude_id}
                for user_id, amplitude_id in found
            ],
            "type": kind,
        }
    )


def _time(ms: int) -> str:
    """Amplitude's event time format, UTC, exact to the millisecond."""
    return (_EPOCH + dt.timedelta(milliseconds=ms)).strftime("%Y-%m-%d %H:%M:%S.%f")


def _user_data_json(data: UserData) -> dict[str, Any]:
    return {
        "user_id": data.user_id,
        "canonical_amplitude_id": data.canonical_amplitude_id,
        "merged_amplitude_ids": data.merged_amplitude_ids,
        "num_events": data.num_events,
        "num_sessions": data.num_sessions,
        "first_used": None if data.first_used is None else data.first_used.isoformat(),
        "last_used": None if data.last_used is None else data.last_used.isoformat(),
        "device_ids": data.device_ids,
        "last_device_id": data.last_device_id,
        "properties": data.properties,
    }


def _event_json(event: StoredEvent) -> dict[str, Any]:
    return {
        **event.fields,
        "event_type": event.event_type,
        "event_time": _time(event.time),
        "client_event_time": _time(event.time),
        "server_upload_time": _time(event.server_upload_time),
        "user_id": event.user_id,
        "device_id": event.device_id,
        "amplitude_id": event.amplitude_id,
        "event_properties": event.event_properties,
        "user_properties": event.user_properties,
        "$insert_id": event.insert_id,
        "session_id": event.fields.get("session_id", -1),
    }
