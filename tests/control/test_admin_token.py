"""--admin-token: every control route needs `Authorization: Bearer <token>`; Amplitude's never."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from emulator.server import ServerThread
from emulator.settings import Settings
from tests.control import CONTROL, READ, client_for, control_routes, map_ok, ok_json, read_users

TOKEN = "admin-secret-token"
PATH_PARAMS = {"name": "snap", "rule_id": "1"}


def concrete_routes(server: ServerThread) -> list[tuple[str, str]]:
    """(method, path with its parameters filled in) of every control route the app serves."""
    return [
        (method, re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: PATH_PARAMS[m.group(1)], path))
        for method, path in control_routes(server.app.routes)
    ]


@pytest.fixture(scope="module")
def guarded() -> Iterator[ServerThread]:
    with ServerThread(Settings(port=0, log_level="warning", admin_token=TOKEN)) as running:
        yield running


def test_routes_are_enumerated(guarded: ServerThread) -> None:
    routes = set(concrete_routes(guarded))
    # A sanity check of the enumeration itself, not a list to keep in step.
    assert {
        ("GET", CONTROL),
        ("POST", f"{CONTROL}/reset"),
        ("PUT", f"{CONTROL}/state"),
        ("POST", f"{CONTROL}/snapshots/snap/restore"),
        ("DELETE", f"{CONTROL}/faults/1"),
        ("PATCH", f"{CONTROL}/config"),
    } <= routes
    assert len(routes) >= 19


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        f"Basic {TOKEN}",
        "Bearer",
        "Bearer wrong-token",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        TOKEN,
    ],
)
def test_every_control_route_refuses_without_the_token(
    guarded: ServerThread, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    with client_for(guarded, headers=headers) as http:
        for method, path in concrete_routes(guarded):
            response = http.request(method, path)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert set(response.json()) == {"error"}


def test_every_control_route_answers_with_the_token(guarded: ServerThread) -> None:
    with client_for(guarded, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        map_ok(http, "some-key", {"a": "b"})
        for method, path in concrete_routes(guarded):
            response = http.request(method, path)
            assert response.status_code != 401, (method, path, response.text)
            assert response.status_code < 500, (method, path, response.text)
        # The scheme is case-insensitive, as HTTP says.
        lower = http.get(f"{CONTROL}/health", headers={"Authorization": f"bearer {TOKEN}"})
        assert ok_json(lower) == {"status": "ok"}


def test_amplitude_paths_never_need_the_token(guarded: ServerThread) -> None:
    with client_for(guarded) as http:
        map_ok(http, "some-key", {"a": "b"})
        get_map = http.get(
            "/usermap",
            params={"api_key": "some-key", "mapping": '{"user_id":"c","global_user_id":"d"}'},
        )
        assert get_map.status_code == 200
        assert read_users(http, "some-key", ["a"])["a"]["mapped_to"] == [
            {"amplitude_id": 2, "user_id": "b"}
        ]
        unknown = http.get("/nowhere")
        assert unknown.status_code == 404
        assert unknown.json() == {"code": 404, "error": "Not found"}
        assert http.get(READ, params={"user_ids": "a"}).status_code == 401  # Basic, not Bearer
