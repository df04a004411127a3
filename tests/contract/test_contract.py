"""Response validation (emulator/contract.py): the check itself, on a small document of its own and
on the published one, and the middleware that applies it to every response of an app."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from starlette.responses import Response

from emulator import contract
from emulator.server import ServerThread
from emulator.settings import (
    Settings,
    ValidationMode,
    build_settings,
    environment_values,
)
from emulator.tenancy import ConfigError
from emulator.wire import responses

HINT = {"x-emulator-hint": "Why."}
TOO_LARGE = b'{"code":413,"error":"Payload too large"}'
JSON = {"content-type": "application/json"}

SMALL: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "t", "version": "1"},
    "x-unknown-routes": {
        "responses": {
            "404": {"$ref": "#/components/responses/NotFound"},
            "405": {"description": "wrong method", "headers": {"Allow": {"required": True}}},
        }
    },
    "paths": {
        "/items": {
            "get": {
                "responses": {
                    "200": {
                        "description": "ok",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Item"}}
                        },
                    },
                    "4XX": {
                        "description": "refused",
                        "headers": {"X-Emulator-Hint": {"$ref": "#/components/headers/Hint"}},
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    "429": {
                        "description": "slow down",
                        "headers": {
                            "Retry-After": {
                                "required": True,
                                "schema": {"type": "string", "pattern": "^[0-9]+$"},
                            },
                            "X-Emulator-Hint": {"$ref": "#/components/headers/Hint"},
                        },
                    },
                }
            }
        },
        "/items/{name}": {
            "delete": {"responses": {"default": {"description": "anything, no body"}}}
        },
        "/items/special": {
            "get": {
                "responses": {"200": {"description": "html", "content": {"text/*": {"schema": {}}}}}
            }
        },
    },
    "components": {
        "headers": {"Hint": {"required": True, "schema": {"type": "string", "minLength": 1}}},
        "responses": {
            "NotFound": {
                "description": "unknown",
                "content": {"application/json": {"schema": {"const": {"code": 404}}}},
            }
        },
        "schemas": {
            "Item": {
                "type": "object",
                "required": ["id"],
                "additionalProperties": False,
                "properties": {"id": {"type": "integer"}},
            }
        },
    },
}


@pytest.fixture(scope="module")
def small() -> contract.ResponseContract:
    return contract.ResponseContract(SMALL)


def check(
    small: contract.ResponseContract,
    method: str,
    path: str,
    status: int,
    headers: dict[str, str],
    body: object = None,
) -> list[str]:
    raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    return small.check(method, path, status, headers, raw)


def test_a_response_that_keeps_the_contract(small: contract.ResponseContract) -> None:
    assert check(small, "GET", "/items", 200, JSON, {"id": 1}) == []
    assert check(small, "GET", "/items", 404, {**JSON, **HINT}, {"any": "object"}) == []
    assert check(small, "DELETE", "/items/x", 204, {}) == []
    assert check(small, "GET", "/items/special", 200, {"content-type": "text/html"}, b"<p>") == []


def test_an_undocumented_status(small: contract.ResponseContract) -> None:
    (problem,) = check(small, "GET", "/items", 500, JSON, {"id": 1})
    assert problem.startswith("status 500 is not documented for GET /items")


def test_headers(small: contract.ResponseContract) -> None:
    assert check(small, "GET", "/items", 429, HINT) == ["header Retry-After is missing"]
    (problem,) = check(small, "GET", "/items", 429, {**HINT, "retry-after": "soon"})
    assert problem.startswith("header Retry-After $: 'soon' does not match")
    (problem,) = check(small, "GET", "/items", 400, {**JSON, "x-emulator-hint": ""}, {})
    assert problem.startswith("header X-Emulator-Hint $:")
    (problem,) = check(small, "GET", "/items", 200, {**JSON, **HINT}, {"id": 1})
    assert problem.startswith("header X-Emulator-Hint is not documented for this response")


def test_content(small: contract.ResponseContract) -> None:
    assert check(small, "GET", "/items", 200, {}, {"id": 1}) == ["no Content-Type header"]
    (problem,) = check(small, "GET", "/items", 200, {"content-type": "text/plain"}, b"x")
    assert problem == "Content-Type 'text/plain' is not one of application/json"
    labelled = {"content-type": "application/json; charset=utf-8"}
    (problem,) = check(small, "GET", "/items", 200, labelled, {"id": 1})
    assert problem.endswith("JSON is labelled application/json")
    (problem,) = check(small, "GET", "/items", 200, JSON, b"{nope")
    assert problem.startswith("the body is not JSON")
    problems = check(small, "GET", "/items", 200, JSON, {"id": "1", "extra": True})
    assert problems == [
        "body $: Additional properties are not allowed ('extra' was unexpected)",
        "body $.id: '1' is not of type 'integer'",
    ]
    (problem,) = check(small, "DELETE", "/items/x", 200, JSON, {"id": 1})
    assert problem == "a body of 9 bytes where none is documented"


def test_head_answers_are_checked_without_their_body(small: contract.ResponseContract) -> None:
    assert check(small, "HEAD", "/items", 405, {"allow": "GET"}, b"whatever") == []


def test_routes_the_document_does_not_serve(small: contract.ResponseContract) -> None:
    assert check(small, "GET", "/nowhere", 404, JSON, {"code": 404}) == []
    (problem,) = check(small, "GET", "/nowhere", 404, JSON, {"code": 405})
    assert problem.startswith("body $: {'code': 404} was expected")
    (problem,) = check(small, "GET", "/nowhere", 200, JSON, {"id": 1})
    assert "(no operation: x-unknown-routes) (documented: 404, 405)" in problem
    assert check(small, "POST", "/items", 405, {"allow": "GET"}) == []
    assert check(small, "POST", "/items", 405, {}) == ["header Allow is missing"]
    # A literal path wins over a template that also matches it.
    assert small.operation("GET", "/items/special") == (
        "/paths/~1items~1special/get/responses",
        "GET /items/special",
    )
    assert small.operation("DELETE", "/items/a%2Fb")[1] == "DELETE /items/{name}"
    assert small.operation("DELETE", "/items/a/b")[1] is None


def test_the_published_document() -> None:
    published = contract.response_contract()
    assert published is contract.response_contract()  # compiled once
    assert published.check("POST", "/usermap", 200, JSON, b'{"code":200}') == []
    (problem,) = published.check("POST", "/usermap", 200, JSON, b'{"code":201}')
    assert problem == "body $.code: 200 was expected"
    refusal = b'{"code":400,"error":"Invalid mapping","index":0,"missing_field":"global_user_id"}'
    assert published.check("POST", "/usermap", 400, {**JSON, **HINT}, refusal) == []
    assert published.check("POST", "/usermap", 400, JSON, refusal) == [
        "header X-Emulator-Hint is missing"
    ]


# --- the middleware ------------------------------------------------------------------------------


def add_broken_routes(app: FastAPI) -> None:
    """Two routes the document does not have, so their answers break it."""

    async def undocumented() -> Response:
        return Response('{"ok":true}', media_type="application/json")

    async def crash() -> Response:
        raise RuntimeError("boom")

    app.add_api_route("/_emulator/undocumented", undocumented, methods=["GET"])
    app.add_api_route("/_emulator/crash", crash, methods=["GET"])


@pytest.fixture
def broken_emulator() -> Iterator[Callable[[ValidationMode], httpx.Client]]:
    """Start an emulator in this mode, with the broken routes; a client of it."""
    started: list[tuple[ServerThread, httpx.Client]] = []

    def start(mode: ValidationMode) -> httpx.Client:
        thread = ServerThread(Settings(port=0, log_level="critical", validate_responses=mode))
        add_broken_routes(thread.app)
        thread.start()
        client = httpx.Client(base_url=thread.base_url, timeout=10)
        started.append((thread, client))
        return client

    yield start
    for thread, client in started:
        client.close()
        thread.stop()


@pytest.fixture
def log_mode(broken_emulator: Callable[[ValidationMode], httpx.Client]) -> httpx.Client:
    return broken_emulator(ValidationMode.LOG)


def test_log_mode_records_logs_and_lets_the_answer_through(
    log_mode: httpx.Client,
    contract_violations: list[contract.Violation],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="emulator"):
        response = log_mode.get("/_emulator/undocumented")
    assert (response.status_code, response.json()) == (200, {"ok": True})
    assert "GET /_emulator/undocumented -> 200: status 200 is not documented" in caplog.text
    (heard,) = contract_violations
    contract_violations.clear()
    recorded = log_mode.get("/_emulator/violations").json()
    assert recorded == {"mode": "log", "violations": [heard.to_json()]}
    assert heard.status == 200
    assert log_mode.delete("/_emulator/violations").json() == {"mode": "log", "violations": []}


def test_strict_mode_answers_500_instead(
    broken_emulator: Callable[[ValidationMode], httpx.Client],
    contract_violations: list[contract.Violation],
) -> None:
    client = broken_emulator(ValidationMode.STRICT)
    response = client.get("/_emulator/undocumented")
    assert response.status_code == 500
    assert response.json()["error"] == "Response violates the OpenAPI document"
    assert response.json()["violation"]["path"] == "/_emulator/undocumented"
    assert "broke its contract" in response.headers["x-emulator-hint"]
    assert client.get("/_emulator/violations").json()["mode"] == "strict"
    assert len(contract_violations) == 1
    contract_violations.clear()


def test_an_exception_is_a_violation(
    log_mode: httpx.Client, contract_violations: list[contract.Violation]
) -> None:
    response = log_mode.get("/_emulator/crash")
    assert response.status_code == 500
    (violation,) = contract_violations
    contract_violations.clear()
    assert violation.problems == ("the app raised RuntimeError: boom",)


def test_fault_answers_are_the_rules_not_the_emulators(log_mode: httpx.Client) -> None:
    rule = {"effect": {"status": 599, "body": "not JSON at all"}, "times": 1}
    assert log_mode.post("/_emulator/faults", json=rule).status_code == 201
    assert log_mode.post("/usermap").status_code == 599
    dropped = {"effect": {"drop": True}, "times": 1}
    assert log_mode.post("/_emulator/faults", json=dropped).status_code == 201
    with pytest.raises(httpx.TransportError):
        log_mode.post("/usermap")
    assert log_mode.get("/_emulator/violations").json()["violations"] == []


def test_the_emulators_own_answers_keep_it(log_mode: httpx.Client) -> None:
    form = {"api_key": "k", "mapping": '[{"user_id":"a","global_user_id":"b"}]'}
    assert log_mode.post("/usermap", data=form).status_code == 200
    assert log_mode.post("/usermap", data={"api_key": "k"}).status_code == 400
    assert log_mode.get("/api/2/usermap", params={"user_ids": "a"}).status_code == 401
    assert log_mode.delete("/usermap").status_code == 405
    assert log_mode.get("/nowhere").status_code == 404
    assert log_mode.get("/_emulator/violations").json()["violations"] == []


def test_off_is_off_unless_the_process_validates_every_app() -> None:
    # This suite called validate_all_apps() (tests/conftest.py): every app validates.
    assert contract.effective_mode(ValidationMode.OFF) is ValidationMode.LOG
    assert contract.effective_mode(ValidationMode.STRICT) is ValidationMode.STRICT
    heard: list[contract.Violation] = []
    undo = contract.validate_all_apps(heard.append)
    undo()
    undo()  # twice is harmless
    assert contract.effective_mode(ValidationMode.OFF) is ValidationMode.LOG


def test_the_setting() -> None:
    assert Settings().validate_responses is ValidationMode.OFF
    values = environment_values({"AMPLITUDE_EMULATOR_VALIDATE_RESPONSES": " Strict "})
    assert build_settings(values).validate_responses is ValidationMode.STRICT
    with pytest.raises(ConfigError, match="AMPLITUDE_EMULATOR_VALIDATE_RESPONSES='loud'"):
        environment_values({"AMPLITUDE_EMULATOR_VALIDATE_RESPONSES": "loud"})


@given(st.text(min_size=1).filter(str.strip))
def test_any_hint_fits_the_documented_header(text: str) -> None:
    """header_safe keeps every hint within the document's X-Emulator-Hint schema, whatever
    users put in ids or keys (escapes count towards the 400 characters)."""
    hint = responses.header_safe(text)
    published = contract.response_contract()
    headers = {**JSON, "x-emulator-hint": hint}
    assert published.check("POST", "/usermap", 413, headers, TOO_LARGE) == []


def test_a_long_non_ascii_hint_is_cut_after_escaping() -> None:
    hint = responses.header_safe("\U0001d413" * 100)
    assert len(hint) == 400
    assert hint.endswith("...")
