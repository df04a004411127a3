"""Control API security (issue 6, item 5), beyond tests/control/test_admin_token.py.

- Every route the app serves is enumerated (included routers too) and is either a control route,
  which carries the admin-token check, or an Amplitude-facing one, which never needs the token;
  a route added later without the check is caught (shown on an app with one added).
- No spelling of a control path gets past the check (encoded, doubled slashes, case, suffixes).
- The token and the read API's secrets are compared with `hmac.compare_digest`, whose answer
  alone decides (shown by replacing it), never with `==`.
- Secrets never reach the journal (Basic credentials, `secret_key` in any encoding of its name
  or value, in the query, a form or a multipart body; admin tokens) nor the server's logs
  (uvicorn's access log prints the query string).
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import BaseRoute, Route

from emulator.app import create_app
from emulator.control.routes import require_admin_token
from emulator.server import ServerThread
from emulator.settings import Settings
from emulator.tenancy import Org, Project
from tests.control import CONTROL, client_for, served_routes
from tests.reliability import READ, USERMAP, emulator_process, record_figures

TOKEN = "reliability-admin-token-5f0c2a"
API_KEY = "security-key"
SECRET = f"Sx-{uuid.uuid4().hex}+/=&%ü é"  # characters that need encoding, on purpose
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def concrete(path: str) -> str:
    """A path template with each {parameter} filled in."""
    return re.sub(r"\{(\w+)(?::\w+)?\}", "1", path)


def is_control(path: str) -> bool:
    return path == CONTROL or path.startswith(CONTROL + "/")


@pytest.fixture(scope="module")
def guarded() -> Iterator[ServerThread]:
    """Configured (so the read secret matters) and with an admin token."""
    project = Project(name="web", org="sec", api_key=API_KEY, secret_key=SECRET, region=None)
    settings_ = Settings(
        port=0, log_level="warning", admin_token=TOKEN, orgs=(Org("sec", (project,)),)
    )
    with ServerThread(settings_) as running:
        yield running


# --- every route: guarded, or Amplitude-facing --------------------------------------------------


def route_objects(routes: Sequence[BaseRoute], prefix: str = "") -> list[tuple[str, Route]]:
    """(full path template, route) of every HTTP route, walking included routers as
    tests.control.served_routes does."""
    found: list[tuple[str, Route]] = []
    for route in routes:
        included: Any = getattr(route, "original_router", None)
        if included is not None:
            context: Any = getattr(route, "include_context", None)
            found.extend(route_objects(included.routes, prefix + getattr(context, "prefix", "")))
        elif isinstance(route, Route):
            found.append((prefix + route.path, route))
    return found


def calls_of(route: Route) -> set[Callable[..., Any]]:
    """Every dependency the route runs (its whole dependency tree; none for a plain Route)."""
    found: set[Callable[..., Any]] = set()
    if not isinstance(route, APIRoute):
        return found
    pending = list(route.dependant.dependencies)
    while pending:
        dependant = pending.pop()
        if dependant.call is not None:
            found.add(dependant.call)
        pending.extend(dependant.dependencies)
    return found


def unguarded_control_routes(app: FastAPI) -> list[str]:
    """Control routes that would answer without the admin token."""
    return sorted(
        path
        for path, route in route_objects(app.routes)
        if is_control(path) and require_admin_token not in calls_of(route)
    )


def test_every_control_route_carries_the_token_check(guarded: ServerThread) -> None:
    objects = route_objects(guarded.app.routes)
    # The walk finds every route the HTTP-level enumeration of the control tests finds.
    walked = {(method, path) for path, route in objects for method in route.methods or ()}
    served = {(m, p) for m, p in served_routes(guarded.app.routes) if m != "HEAD"}
    assert served <= walked, served - walked
    assert sum(1 for path, _ in objects if is_control(path)) >= 19
    assert unguarded_control_routes(guarded.app) == []


def test_a_control_route_added_without_the_check_is_caught() -> None:
    app = create_app(Settings(port=0, admin_token=TOKEN))
    assert unguarded_control_routes(app) == []

    async def sneaky() -> dict[str, str]:
        return {"leak": "yes"}

    router = APIRouter(prefix=CONTROL)
    router.add_api_route("/sneaky", sneaky, methods=["GET"])
    app.include_router(router)
    app.add_api_route(f"{CONTROL}/direct", sneaky, methods=["POST"])
    assert unguarded_control_routes(app) == [f"{CONTROL}/direct", f"{CONTROL}/sneaky"]


WRONG_AUTHORIZATION = [
    None,
    f"Bearer {'x' * len(TOKEN)}",  # same length
    f"Bearer {TOKEN[:-1]}",
    f"Bearer {TOKEN.upper()}",
    f"Bearer {TOKEN}{TOKEN}",
    f"Basic {base64.b64encode(f'admin:{TOKEN}'.encode()).decode()}",
    f"Token {TOKEN}",
]


def test_control_routes_refuse_every_wrong_credential_and_path_spelling(
    guarded: ServerThread,
) -> None:
    control = [(m, p) for m, p in served_routes(guarded.app.routes) if is_control(p)]
    assert len(control) >= 19
    tried = 0
    with client_for(guarded) as http:
        for method, template in control:
            path = concrete(template)
            spellings = [
                path,
                path.replace("/_emulator", "/%5Femulator", 1),
                path.replace("/_emulator", "/_%65mulator", 1),
                path.replace("/_emulator", "//_emulator", 1),
                path.replace("/_emulator", "/_EMULATOR", 1),
                path + "/",
                path + ";x",
                path + "%00",
            ]
            for spelling in spellings:
                for authorization in WRONG_AUTHORIZATION:
                    headers = {} if authorization is None else {"Authorization": authorization}
                    response = http.request(
                        method,
                        spelling,
                        headers=headers,
                        params={"token": TOKEN, "admin_token": TOKEN},
                    )
                    tried += 1
                    assert response.status_code in (401, 404, 405), (method, spelling)
                    if response.status_code == 401:
                        assert response.headers["www-authenticate"].startswith("Bearer")
                        assert list(response.json()) == ["error"]
    record_figures(
        "control-security",
        "Control API security",
        {
            "control routes enumerated": len(control),
            "requests without a valid token (8 path spellings x 7 credentials each)": tried,
            "answered without the token": 0,
        },
    )


def test_amplitude_paths_never_need_the_token(guarded: ServerThread) -> None:
    amplitude = [
        (m, p) for m, p in served_routes(guarded.app.routes) if not is_control(p) and m != "HEAD"
    ]
    assert {("POST", USERMAP), ("GET", USERMAP), ("GET", READ)} <= set(amplitude)
    with client_for(guarded) as http:
        for method, template in amplitude:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                response = http.request(method, concrete(template), headers=headers)
                challenge = response.headers.get("www-authenticate", "")
                assert not challenge.startswith("Bearer"), (method, template, response.text)
        mapping = json.dumps({"user_id": "u", "global_user_id": "g"})
        mapped = http.post(USERMAP, data={"api_key": API_KEY, "mapping": mapping})
        assert mapped.status_code == 200, mapped.text
        read = http.get(READ, params={"user_ids": "u"}, auth=(API_KEY, SECRET))
        assert read.status_code == 200, read.text


# --- constant-time comparison -------------------------------------------------------------------


class Spy:
    """Stands in for hmac.compare_digest: records its arguments, answers as told (or truly)."""

    def __init__(self, answer: bool | None = None) -> None:
        self.calls: list[tuple[bytes, bytes]] = []
        self.answer = answer
        self.real = hmac.compare_digest

    def __call__(self, a: Any, b: Any) -> bool:
        self.calls.append((bytes(a), bytes(b)))
        return self.real(a, b) if self.answer is None else self.answer


def test_the_admin_token_is_compared_in_constant_time(
    guarded: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy()
    monkeypatch.setattr(hmac, "compare_digest", spy)
    with client_for(guarded) as http:
        for wrong in ("y" * len(TOKEN), "short"):
            response = http.get(f"{CONTROL}/health", headers={"Authorization": f"Bearer {wrong}"})
            assert response.status_code == 401
            assert {wrong.encode(), TOKEN.encode()} in [set(call) for call in spy.calls]
        assert http.get(f"{CONTROL}/health", headers=BEARER).status_code == 200
        # Its answer alone decides: told "equal", it lets a wrong token in.
        monkeypatch.setattr(hmac, "compare_digest", Spy(answer=True))
        let_in = http.get(f"{CONTROL}/health", headers={"Authorization": "Bearer wrong"})
        assert let_in.status_code == 200
        monkeypatch.setattr(hmac, "compare_digest", Spy(answer=False))
        kept_out = http.get(f"{CONTROL}/health", headers=BEARER)
        assert kept_out.status_code == 401


def test_read_secrets_are_compared_in_constant_time(
    guarded: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy()
    monkeypatch.setattr(hmac, "compare_digest", spy)
    with client_for(guarded) as http:
        wrong = "z" * len(SECRET.encode())
        refused = http.get(READ, params={"user_ids": "u"}, auth=(API_KEY, wrong))
        assert refused.status_code == 401
        assert {wrong.encode(), SECRET.encode()} in [set(call) for call in spy.calls]
        monkeypatch.setattr(hmac, "compare_digest", Spy(answer=True))
        let_in = http.get(READ, params={"user_ids": "u"}, auth=(API_KEY, "wrong"))
        assert let_in.status_code == 200


# --- secrets in the journal ---------------------------------------------------------------------

# Spellings of the parameter name that the server decodes to `secret_key`.
NAME_SPELLINGS = ["secret_key", "secret%5Fkey", "secret%5fkey", "%73ecret_key", "secret_k%65y"]


def percent_all(text: str) -> str:
    return "".join(f"%{byte:02X}" for byte in text.encode())


VALUE_SPELLINGS: dict[str, Callable[[str], str]] = {
    "minimal": lambda secret: quote(secret, safe=""),
    "every-byte": percent_all,
    "plus-for-space": lambda secret: quote(secret, safe="").replace("%20", "+"),
}


def multipart(parts: list[tuple[str, str, str]]) -> tuple[bytes, str]:
    """A multipart body of (name, extra disposition parameters, value) parts."""
    boundary = f"sec{uuid.uuid4().hex}"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{extra}\r\n'.encode()
        + (b"Content-Type: text/plain\r\n" if extra else b"")
        + b"\r\n"
        + value.encode()
        + b"\r\n"
        for name, extra, value in parts
    )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    where=st.sampled_from(["basic", "query", "form", "form-without-type", "multipart", "file"]),
    name=st.sampled_from(NAME_SPELLINGS),
    spelling=st.sampled_from(list(VALUE_SPELLINGS)),
    repeated=st.booleans(),
)
def test_secrets_never_reach_the_journal(
    guarded: ServerThread, where: str, name: str, spelling: str, repeated: bool
) -> None:
    value = VALUE_SPELLINGS[spelling](SECRET)
    sent: list[str] = [SECRET, value]
    headers: dict[str, str] = {}
    target = f"{READ}?user_ids=u"
    body = b""
    pair = f"api_key={API_KEY}&{name}={value}"
    if repeated:
        pair += f"&{name}={value}"
    if where == "basic":
        credentials = base64.b64encode(f"{API_KEY}:{SECRET}".encode()).decode()
        headers["Authorization"] = f"Basic {credentials}"
        sent.append(credentials)
    elif where == "query":
        target += "&" + pair
    elif where.startswith("form"):
        body = pair.encode()
        if where == "form":
            headers["Content-Type"] = "application/x-www-form-urlencoded"
    else:
        extra = '; filename="secret.txt"' if where == "file" else ""
        parts = [("api_key", "", API_KEY), ("secret_key", extra, SECRET)]
        body, headers["Content-Type"] = multipart(parts + parts[1:] * repeated)
    with client_for(guarded, headers=BEARER) as admin, client_for(guarded) as http:
        assert admin.delete(f"{CONTROL}/requests").status_code == 200
        response = http.request("GET", target, headers=headers, content=body)
        assert response.status_code == 200, response.text  # the server read that secret
        entries = admin.get(f"{CONTROL}/requests").json()["requests"]
    assert len(entries) == 1
    recorded = json.dumps(entries[0], ensure_ascii=False)
    for text in sent:
        assert text not in recorded, (text, recorded)
    assert "[redacted]" in recorded


def test_admin_tokens_sent_to_amplitude_paths_never_reach_the_journal(
    guarded: ServerThread,
) -> None:
    with client_for(guarded, headers=BEARER) as http:
        assert http.delete(f"{CONTROL}/requests").status_code == 200
        http.post(USERMAP, data={"api_key": API_KEY, "mapping": "{}"})
        http.get(READ, params={"user_ids": "u", "api_key": API_KEY, "secret_key": SECRET})
        entries = http.get(f"{CONTROL}/requests").json()["requests"]
    assert len(entries) == 2
    for entry in entries:
        assert entry["headers"]["authorization"] == "Bearer [redacted]"
    recorded = json.dumps(entries, ensure_ascii=False)
    assert TOKEN not in recorded
    assert SECRET not in recorded
    assert quote(SECRET, safe="") not in recorded


# --- secrets in the logs ------------------------------------------------------------------------


def test_secrets_never_reach_the_server_logs(tmp_path: Path) -> None:
    secret = f"LogSecret{uuid.uuid4().hex}"
    with emulator_process(
        "--log-level", "info", "--admin-token", TOKEN, log_dir=tmp_path
    ) as process:
        with httpx.Client(base_url=process.base_url, timeout=10) as http:
            for name in NAME_SPELLINGS:
                target = f"{READ}?api_key=log-key&{name}={secret}&user_ids=u"
                assert http.get(target).status_code == 200
            assert http.get(READ, params={"user_ids": "u"}, auth=("log-key", secret)).is_success
            assert http.post(
                f"{USERMAP}?api_key=log-key&secret_key={secret}",
                data={"mapping": '{"user_id":"a","global_user_id":"b"}'},
            ).is_success
            assert http.get(f"{CONTROL}/health", headers=BEARER).is_success
            assert http.get(f"{CONTROL}/health?token={TOKEN}").status_code == 401
        assert process.terminate() in (0, -15)
    output = process.output()
    assert "GET /api/2/usermap?api_key=log-key&secret_key=[redacted]&user_ids=u" in output
    assert output.count("=[redacted]") == len(NAME_SPELLINGS) + 1, output
    assert secret not in output
    leaked = [line for line in output.splitlines() if TOKEN in line]
    # The one place the token travels in a URL is the refused ?token= request, which is logged
    # as sent; nothing the emulator accepts as a credential is.
    assert all("/_emulator/health?token=" in line and "401" in line for line in leaked), leaked
