"""GET /api/2/usermap: read `mapped_from` / `mapped_to` (spec section 4)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator

from starlette.requests import Request
from starlette.responses import Response

from emulator.backend import Backend
from emulator.domain.model import Edge, UserMappings, is_text
from emulator.tenancy import Project, region_of_host
from emulator.wire.params import RequestParams, read_params
from emulator.wire.responses import Refusal, invalid_request, json_response, unauthorized

MAX_USER_IDS = 100


async def read_usermap(request: Request) -> Response:
    backend: Backend = request.app.state.backend
    try:
        params = await read_params(request, backend.limits)
    except Refusal as refusal:  # 413 / 414, in this API's error shape
        raise invalid_request(
            str(refusal.body.get("error")), refusal.hint, refusal.status_code
        ) from None
    project = _authenticate(request, params, backend)
    user_ids = requested_user_ids(params)
    if not user_ids or len(user_ids) > MAX_USER_IDS:
        details = f"user_ids must name 1 to {MAX_USER_IDS} distinct user ids; got {len(user_ids)}."
        raise invalid_request(
            "Invalid user_ids", details + (f" {params.body_note}" if params.body_note else "")
        )
    found = backend.read(project.org, user_ids)
    return json_response({user_id: _user_json(found[user_id]) for user_id in user_ids})


def _authenticate(request: Request, params: RequestParams, backend: Backend) -> Project:
    authorization = request.headers.get("authorization")
    if authorization is not None:
        credentials = _basic_credentials(authorization)
        if credentials is None:
            raise unauthorized("The Authorization header is not valid HTTP Basic credentials.")
        api_key, secret_key = credentials
    else:
        api_key_param = params.first("api_key")
        secret_key_param = params.first("secret_key")
        if api_key_param is None or secret_key_param is None:
            raise unauthorized(
                "Send the project's api_key and secret_key as HTTP Basic credentials."
            )
        api_key, secret_key = api_key_param, secret_key_param
    request.state.api_key = api_key  # for the request journal
    project = backend.tenancy.authenticate(
        api_key, secret_key, region_of_host(request.headers.get("host"))
    )
    if project is None:
        raise unauthorized("Invalid api_key / secret_key pair for this host's region.")
    request.state.org = project.org
    return project


def _basic_credentials(authorization: str) -> tuple[str, str] | None:
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, or a non-ASCII header value
        return None
    api_key, colon, secret_key = decoded.partition(":")
    if not colon or not api_key:
        return None
    return api_key, secret_key


def requested_user_ids(params: RequestParams) -> list[str]:
    """Repeated `user_ids` keys or JSON arrays, body before query, de-duplicated in order."""
    return list(dict.fromkeys(_expand_json_arrays(params.values("user_ids"))))


def _expand_json_arrays(values: Iterable[str]) -> Iterator[str]:
    # A value that is a JSON array of strings stands for its items; anything else is an id.
    for value in values:
        if value.startswith("["):
            try:
                decoded = json.loads(value)
            except (ValueError, RecursionError):
                decoded = None
            if isinstance(decoded, list) and all(is_text(item) for item in decoded):
                yield from (item for item in decoded if item)
                continue
        yield value


def _edges_json(edges: list[Edge]) -> list[dict[str, object]]:
    return [{"amplitude_id": edge.amplitude_id, "user_id": edge.user_id} for edge in edges]


def _user_json(mappings: UserMappings) -> dict[str, object]:
    body: dict[str, object] = {}
    if mappings.amplitude_id is not None:
        body["amplitude_id"] = mappings.amplitude_id
    body["mapped_from"] = _edges_json(mappings.mapped_from)
    body["mapped_to"] = _edges_json(mappings.mapped_to)
    return body
