"""Amplitude's paths, and Amplitude-shaped answers to everything else (unknown paths, errors)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from emulator.wire import dashboard, events
from emulator.wire.read import read_usermap
from emulator.wire.responses import Refusal, json_response
from emulator.wire.usermap import usermap

logger = logging.getLogger("emulator")

AMPLITUDE_PATHS = (
    "/usermap",
    "/api/2/usermap",
    "/2/httpapi",
    "/batch",
    "/identify",
    "/api/2/usersearch",
    "/api/2/useractivity",
    "/api/2/users",
)


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
        "POST/GET /usermap, GET /api/2/usermap, POST /2/httpapi, POST /batch, GET/POST "
        "/identify, GET /api/2/usersearch, /api/2/useractivity and /api/2/users."
    )
    headers = dict(error.headers or {})
    if status == 405:  # every method the path serves, not only those of the first route found
        headers["Allow"] = ", ".join(_methods_of_path(request))
    return Refusal(status, {"code": status, "error": message}, hint, headers).response()


def _methods_of_path(request: Request) -> list[str]:
    methods: list[str] = []
    for route in served_routes(request.app):
        match, _ = route.matches({**request.scope, "method": "\0"})
        if match is not Match.NONE:
            methods.extend(m for m in getattr(route, "methods", None) or () if m not in methods)
    return sorted(methods)


def served_routes(app: FastAPI) -> Iterator[Any]:
    """Every route `app` serves, those of included routers too (each has `path`, `methods` and
    `matches(scope)`). Newer FastAPI keeps an included router as one entry of `app.routes`."""
    for route in app.router.routes:
        nested = getattr(route, "effective_route_contexts", None)
        if callable(nested):
            yield from nested()
        else:
            yield route


async def _internal_error(_request: Request, error: Exception) -> Response:
    logger.exception("unexpected error", exc_info=error)
    return json_response({"code": 500, "error": "Internal server error"}, 500)


def _lean_route(
    path: str, endpoint: Callable[[Request], Awaitable[Response]], methods: list[str]
) -> Route:
    """A plain Starlette route: the endpoint takes the Request and returns a Response, so the
    request skips FastAPI's dependency solving and response handling (measured: about a third
    of the app's time per request, see docs/performance.md)."""
    route = Route(path, endpoint, methods=methods, include_in_schema=False)
    route.methods = set(methods)  # no implicit HEAD, as with add_api_route
    return route


def install(app: FastAPI) -> None:
    """Serve Amplitude's paths on `app`, and answer every refusal the Amplitude way."""
    # The user mapping paths, first in the routing table (the hottest paths match first).
    app.router.routes[:0] = [
        _lean_route("/usermap", usermap, ["POST", "GET"]),
        _lean_route("/api/2/usermap", read_usermap, ["GET"]),
    ]
    app.add_api_route("/2/httpapi", events.http_api, methods=["POST"], include_in_schema=False)
    app.add_api_route("/batch", events.batch, methods=["POST"], include_in_schema=False)
    app.add_api_route(
        "/identify", events.identify, methods=["POST", "GET"], include_in_schema=False
    )
    for path, endpoint in (
        ("/api/2/usersearch", dashboard.user_search),
        ("/api/2/useractivity", dashboard.user_activity_route),
        ("/api/2/users", dashboard.users),
    ):
        app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False)
    app.add_exception_handler(Refusal, _refusal)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
