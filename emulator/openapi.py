"""The published contract, openapi/openapi.yaml: found, parsed once, and served.

The YAML file is the one source of truth: `/openapi.yaml` serves it byte for byte, `/openapi.json`
is the same document converted at first use, and `/docs` is Swagger UI pointing at that JSON.
FastAPI's own schema generation stays off.

Where the file is: in an installed wheel it is `emulator/openapi.yaml` (pyproject.toml's
`force-include` copies the top-level file there); in a source tree or an editable install it is
`openapi/openapi.yaml` next to the package.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response

DOCUMENT_PATHS: Final = frozenset({"/openapi.yaml", "/openapi.json", "/docs"})
_PACKAGED_NAME: Final = "openapi.yaml"
_SOURCE_TREE_PATH: Final = Path(__file__).resolve().parent.parent / "openapi" / "openapi.yaml"


def document_text() -> str:
    """The document as written (YAML)."""
    return _document_text()


@functools.cache
def _document_text() -> str:
    packaged = resources.files("emulator").joinpath(_PACKAGED_NAME)
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    if _SOURCE_TREE_PATH.is_file():
        return _SOURCE_TREE_PATH.read_text(encoding="utf-8")
    raise FileNotFoundError(
        f"the OpenAPI document is neither packaged (emulator/{_PACKAGED_NAME}) "
        f"nor in the source tree ({_SOURCE_TREE_PATH})"
    )


@functools.cache
def document() -> dict[str, Any]:
    """The document, parsed (shared: do not change it)."""
    import yaml  # only when the document is first needed

    parsed = yaml.safe_load(_document_text())
    if not isinstance(parsed, dict):
        raise ValueError("the OpenAPI document is not a mapping")
    return parsed


@functools.cache
def _document_json() -> bytes:
    return json.dumps(document(), ensure_ascii=False, separators=(",", ":")).encode()


async def _yaml(_request: Request) -> Response:
    return Response(document_text(), media_type="application/yaml")


async def _json(_request: Request) -> Response:
    return Response(_document_json(), media_type="application/json")


async def _docs(_request: Request) -> Response:
    from fastapi.openapi.docs import get_swagger_ui_html

    title = str(document().get("info", {}).get("title", "API"))
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{title}: docs")


def install(app: FastAPI) -> None:
    """Serve the document and the docs page on `app` (GET only, as the document says)."""
    app.add_api_route("/openapi.yaml", _yaml, methods=["GET"], include_in_schema=False)
    app.add_api_route("/openapi.json", _json, methods=["GET"], include_in_schema=False)
    app.add_api_route("/docs", _docs, methods=["GET"], include_in_schema=False)
