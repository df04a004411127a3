"""Amplitude's paths, and Amplitude-shaped answers to everything else (unknown paths, errors)."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from emulator.wire.read import read_usermap
from emulator.wire.responses import Refusal, json_response
from emulator.wire.usermap import usermap

logger = logging.getLogger("emulator")

AMPLITUDE_PATHS = ("/usermap", "/api/2/usermap")


async def _refusal(_request: Request, error: Exception) -> Response:
    assert isinstance(error, Refusal)
    return error.response()


async def _http_error(request: Request, error: Exception) -> Response:
    # Unknown paths and methods: Amplitude-shaped, with a hint at what is served.
    assert isinstance(error, HTTPException)
    status = error.status_code
    message = {404: "Not found", 405: "Method not allowed"}.get(status, str(error.detail))
    hint = (
        f"{request.method} {request.url.path} is not served; the emulator serves "
        "POST/GET /usermap and GET /api/2/usermap."
    )
    return Refusal(status, {"code": status, "error": message}, hint, error.headers).response()


async def _internal_error(_request: Request, error: Exception) -> Response:
    logger.exception("unexpected error", exc_info=error)
    return json_response({"code": 500, "error": "Internal server error"}, 500)


def install(app: FastAPI) -> None:
    """Serve Amplitude's paths on `app`, and answer every refusal the Amplitude way."""
    app.add_api_route("/usermap", usermap, methods=["POST", "GET"], include_in_schema=False)
    app.add_api_route("/api/2/usermap", read_usermap, methods=["GET"], include_in_schema=False)
    app.add_exception_handler(Refusal, _refusal)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
