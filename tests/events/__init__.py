"""Events and identities: ingestion, Identify and the Dashboard reads over HTTP on real
sockets, plus unit tests of the domain rules they rest on. Shared helpers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

HTTPAPI = "/2/httpapi"
BATCH = "/batch"
IDENTIFY = "/identify"
SEARCH = "/api/2/usersearch"
ACTIVITY = "/api/2/useractivity"
USERS = "/api/2/users"
CONTROL = "/_emulator"
SECRET = "any-secret"  # permissive mode accepts any secret


def event(
    user_id: str | None = None,
    device_id: str | None = None,
    event_type: str = "Clicked Button",
    **fields: Any,
) -> dict[str, Any]:
    """An event as a client sends it; None ids are left out."""
    body: dict[str, Any] = {"event_type": event_type, **fields}
    if user_id is not None:
        body["user_id"] = user_id
    if device_id is not None:
        body["device_id"] = device_id
    return body


def upload(
    client: httpx.Client, api_key: str, *events: Mapping[str, Any], path: str = HTTPAPI
) -> httpx.Response:
    return client.post(path, json={"api_key": api_key, "events": list(events)})


def ingested(
    client: httpx.Client, api_key: str, *events: Mapping[str, Any], path: str = HTTPAPI
) -> dict[str, Any]:
    response = upload(client, api_key, *events, path=path)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == 200
    assert body["events_ingested"] == len(events)
    return body


def refused(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    """The body of a refusal, after checking its status, JSON type and hint header."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers.get("x-emulator-hint"), "every refusal carries a hint"
    body: dict[str, Any] = response.json()
    return body


def map_users(client: httpx.Client, api_key: str, pairs: Mapping[str, str | None]) -> None:
    """POST /usermap: user -> global maps, None unmaps."""
    mapping = [
        {"user_id": user, "unmap": True}
        if target is None
        else {"user_id": user, "global_user_id": target}
        for user, target in pairs.items()
    ]
    response = client.post("/usermap", data={"api_key": api_key, "mapping": json.dumps(mapping)})
    assert response.status_code == 200, response.text


def dashboard(client: httpx.Client, api_key: str, path: str, **params: Any) -> dict[str, Any]:
    response = client.get(path, params=params, auth=(api_key, SECRET))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def amplitude_id(client: httpx.Client, api_key: str, user_id: str) -> int:
    """The user's amplitude id, found the documented way (User Search)."""
    found = dashboard(client, api_key, SEARCH, user=user_id)
    assert found["type"] == "match_user_or_device_id", found
    ids = [match["amplitude_id"] for match in found["matches"] if match["user_id"] == user_id]
    assert len(ids) == 1, found
    return int(ids[0])


def activity(client: httpx.Client, api_key: str, user_id: str, **params: Any) -> dict[str, Any]:
    """GET /api/2/useractivity of a user id."""
    return dashboard(
        client, api_key, ACTIVITY, user=amplitude_id(client, api_key, user_id), **params
    )


def stream(client: httpx.Client, api_key: str, user_id: str) -> list[tuple[str | None, str]]:
    """(user_id, event_type) of a user's stream, earliest first."""
    body = activity(client, api_key, user_id, direction="earliest")
    return [(e["user_id"], e["event_type"]) for e in body["events"]]


def set_clock(client: httpx.Client, **change: Any) -> None:
    response = client.post(f"{CONTROL}/clock", json=change)
    assert response.status_code == 200, response.text
