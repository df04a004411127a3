"""The control API under /_emulator, driven over HTTP on real sockets, and shared helpers."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from starlette.routing import BaseRoute, Route

from emulator.server import ServerThread

CONTROL = "/_emulator"
READ = "/api/2/usermap"

# The runtime limits and journal size of an emulator started with default Settings.
DEFAULT_CONFIG: dict[str, Any] = {
    "max_batch": 2000,
    "max_request_bytes": 1_048_576,
    "max_target_bytes": 8192,
    "rate_limit": 1500,
    "rate_window_seconds": 30.0,
    "max_events": 2000,
    "batch_max_request_bytes": 20_971_520,
    "event_eps": 30,
    "batch_event_eps": 1000,
    "event_rate_window_seconds": 30.0,
    "journal_size": 1000,
}


def client_for(server: ServerThread, **options: Any) -> httpx.Client:
    """An HTTP client on `server`.

    Plain HTTP on loopback, so no TLS context is built (building one loads the CA bundle, about
    50 ms a client).
    """
    return httpx.Client(base_url=server.base_url, timeout=10, verify=False, **options)


def mapping_of(pairs: Mapping[str, str | None]) -> str:
    """The `mapping` parameter: user -> global maps, None unmaps."""
    return json.dumps(
        [
            {"user_id": user, "unmap": True}
            if target is None
            else {"user_id": user, "global_user_id": target}
            for user, target in pairs.items()
        ]
    )


def map_users(
    http: httpx.Client, api_key: str, pairs: Mapping[str, str | None], **request: Any
) -> httpx.Response:
    """POST /usermap with a form body, as Segment and RudderStack send it."""
    return http.post("/usermap", data={"api_key": api_key, "mapping": mapping_of(pairs)}, **request)


def map_ok(http: httpx.Client, api_key: str, pairs: Mapping[str, str | None]) -> None:
    response = map_users(http, api_key, pairs)
    assert response.status_code == 200, response.text


def read_users(
    http: httpx.Client, api_key: str, user_ids: Sequence[str], secret: str = "secret"
) -> dict[str, Any]:
    """GET /api/2/usermap with Basic auth; asserts it succeeded."""
    response = http.get(READ, params={"user_ids": list(user_ids)}, auth=(api_key, secret))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ok_json(response: httpx.Response, status: int = 200) -> Any:
    """The JSON body of a control answer, after checking its status and content type."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def refused(response: httpx.Response, status: int = 400) -> str:
    """The message of a control API refusal: `{"error": "..."}`."""
    body = ok_json(response, status)
    assert isinstance(body, dict)
    assert list(body) == ["error"]
    message = body["error"]
    assert isinstance(message, str)
    assert message
    return message


def export_state(http: httpx.Client) -> dict[str, Any]:
    state: dict[str, Any] = ok_json(http.get(f"{CONTROL}/state"))
    return state


def journal(http: httpx.Client, **filters: str | int | float) -> list[dict[str, Any]]:
    body = ok_json(http.get(f"{CONTROL}/requests", params=filters))
    assert list(body) == ["requests"]
    entries: list[dict[str, Any]] = body["requests"]
    return entries


def add_fault(http: httpx.Client, rule: Mapping[str, Any]) -> dict[str, Any]:
    created: dict[str, Any] = ok_json(http.post(f"{CONTROL}/faults", json=rule), 201)
    return created


def faults(http: httpx.Client) -> list[dict[str, Any]]:
    body = ok_json(http.get(f"{CONTROL}/faults"))
    rules: list[dict[str, Any]] = body["faults"]
    return rules


def set_clock(http: httpx.Client, **body: Any) -> dict[str, Any]:
    clock: dict[str, Any] = ok_json(http.post(f"{CONTROL}/clock", json=body))
    return clock


def patch_config(http: httpx.Client, **body: Any) -> dict[str, Any]:
    config: dict[str, Any] = ok_json(http.patch(f"{CONTROL}/config", json=body))
    return config


def reset(http: httpx.Client, api_key: str | None = None) -> Any:
    params = {} if api_key is None else {"api_key": api_key}
    return ok_json(http.post(f"{CONTROL}/reset", params=params))


def served_routes(routes: Sequence[BaseRoute], prefix: str = "") -> list[tuple[str, str]]:
    """(method, path template) of every HTTP route an app serves, included routers too.

    Recent FastAPI keeps an included router as one entry of `app.routes` (holding the router as
    `original_router`) instead of copying its routes in, so both shapes are walked.
    """
    found: list[tuple[str, str]] = []
    for route in routes:
        included: Any = getattr(route, "original_router", None)
        if included is not None:
            context: Any = getattr(route, "include_context", None)
            found.extend(served_routes(included.routes, prefix + getattr(context, "prefix", "")))
        elif isinstance(route, Route):
            found.extend((method, prefix + route.path) for method in sorted(route.methods or ()))
    return found


def control_routes(routes: Sequence[BaseRoute]) -> list[tuple[str, str]]:
    """The served routes under /_emulator (HEAD, which answers as GET, left out)."""
    return [
        (method, path)
        for method, path in served_routes(routes)
        if path.startswith(CONTROL) and method != "HEAD"
    ]
