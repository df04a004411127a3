"""openapi/openapi.yaml (emulator/openapi.py): a valid OpenAPI 3.1 document that covers exactly the
routes the app serves, served as written, and the behaviour contract's rules are in it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openapi_spec_validator import validate

from emulator import __version__, openapi
from emulator.app import create_app
from emulator.server import ServerThread
from emulator.wire.routes import served_routes

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT_FILE = ROOT / "openapi" / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT_FILE.read_text(encoding="utf-8"))
    return loaded


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for token in node["$ref"].removeprefix("#/").split("/"):
            target = target[token.replace("~1", "/").replace("~0", "~")]
        node = target
    return node


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document)
    assert document["info"]["version"] == __version__


def test_the_document_covers_exactly_the_routes_the_app_serves(document: dict[str, Any]) -> None:
    """Both directions: no route the document does not describe, no operation the app lacks.
    Included routers (the control API) count with their routes."""
    served = {
        (method, route.path)
        for route in served_routes(create_app())
        for method in (getattr(route, "methods", None) or ())
    }
    documented = {(method, path) for method, path, _ in operations(document)}
    assert served - documented == set(), "served but not in openapi/openapi.yaml"
    assert documented - served == set(), "in openapi/openapi.yaml but not served"
    assert ("GET", "/_emulator/health") in served  # an included router's route is seen


def test_fastapis_own_schema_generation_is_off() -> None:
    app = create_app()
    assert app.openapi_url is None
    assert app.docs_url is None
    assert app.redoc_url is None


def test_every_operation_has_an_id_a_tag_and_documented_refusals(
    document: dict[str, Any],
) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids))
    tags = {tag["name"] for tag in document["tags"]}
    for method, path, operation in operations(document):
        assert set(operation["tags"]) <= tags, (method, path)
        for status, raw in operation["responses"].items():
            response = resolve(document, raw)
            headers = {name.lower() for name in response.get("headers", {})}
            if status.startswith("4"):
                assert "x-emulator-hint" in headers, f"{method} {path} {status}: no hint"
            if status.startswith("2"):
                assert "x-emulator-hint" not in headers, f"{method} {path} {status}"
            if status == "429":
                assert "retry-after" in headers
            if status == "401":
                assert "www-authenticate" in headers


def test_the_control_api_is_its_own_tag(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        is_control = path.startswith("/_emulator")
        assert ("Emulator control" in operation["tags"]) == is_control, (method, path)


def test_the_usermap_calls_have_the_real_wire_format(document: dict[str, Any]) -> None:
    for method in ("post", "get"):
        operation = document["paths"]["/usermap"][method]
        names = {resolve(document, p)["name"] for p in operation["parameters"]}
        assert names == {"api_key", "mapping", "options"}
        body = resolve(document, operation["requestBody"])["content"]
        assert {"application/x-www-form-urlencoded", "multipart/form-data"} <= set(body)
    mapping = resolve(document, document["components"]["schemas"]["MappingParameter"])
    assert mapping["type"] == "string"
    assert mapping["contentMediaType"] == "application/json"
    read = document["paths"]["/api/2/usermap"]["get"]
    assert "application/x-www-form-urlencoded" in read["requestBody"]["content"]  # GET + body
    user_ids = next(p for p in read["parameters"] if p["name"] == "user_ids")
    assert (user_ids["style"], user_ids["explode"]) == ("form", True)  # repeated keys
    assert {"basicAuth": []} in read["security"]
    assert document["components"]["securitySchemes"]["basicAuth"]["scheme"] == "basic"
    assert {p["name"] for p in read["parameters"]} >= {"api_key", "secret_key"}


def test_unknown_paths_and_methods_are_described(document: dict[str, Any]) -> None:
    unknown = document["x-unknown-routes"]["responses"]
    assert set(unknown) == {"404", "405", "503"}
    assert "allow" in {name.lower() for name in resolve(document, unknown["405"])["headers"]}


def fidelity_rules() -> list[str]:
    """The first column of every table in docs/fidelity.md."""
    text = (ROOT / "docs" / "fidelity.md").read_text(encoding="utf-8")
    rules = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if (
            line.startswith("|")
            and len(cells) >= 3
            and cells[0] not in ("Rule", "Input")
            and not set(cells[0]) <= {"-", " "}
        ):
            rules.append(cells[0])
    return rules


def test_chosen_behaviours_are_tagged(document: dict[str, Any]) -> None:
    text = DOCUMENT_FILE.read_text(encoding="utf-8")
    assert len(re.findall(r"\[C\] chosen", text)) >= 25
    for method, path, operation in operations(document):
        if "User Mapping" in operation["tags"]:
            assert "[C]" in json.dumps(operation), (method, path)
    assert len(fidelity_rules()) >= 30  # the page this document's [C] tags stand for


# --- served by the app -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        yield http


def test_the_yaml_is_served_as_written(client: httpx.Client) -> None:
    response = client.get("/openapi.yaml")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/yaml"
    assert response.text == DOCUMENT_FILE.read_text(encoding="utf-8")


def test_the_json_is_the_same_document(client: httpx.Client, document: dict[str, Any]) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == document


def test_the_docs_page_points_at_the_json(client: httpx.Client) -> None:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text
    assert "swagger-ui" in response.text.lower()


def test_the_documents_are_not_journaled(client: httpx.Client) -> None:
    client.get("/openapi.json")
    journal = client.get("/_emulator/requests", params={"path": "/openapi.json"}).json()
    assert journal == {"requests": []}


def test_the_document_is_found_in_the_source_tree_and_in_a_wheel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert openapi.document_text() == DOCUMENT_FILE.read_text(encoding="utf-8")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    # The wheel carries the one file inside the package (tests/docker serves it from a wheel).
    assert '"openapi/openapi.yaml" = "emulator/openapi.yaml"' in pyproject
    monkeypatch.setattr(openapi, "_SOURCE_TREE_PATH", tmp_path / "missing.yaml")
    openapi._document_text.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="neither packaged"):
            openapi.document_text()
    finally:
        monkeypatch.undo()
        openapi._document_text.cache_clear()
    assert openapi.document()["openapi"].startswith("3.1")
