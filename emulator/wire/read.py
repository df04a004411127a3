"""GET /api/2/usermap: read `mapped_from` / `mapped_to` (spec section 4)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from starlette.requests import Request
from starlette.responses import Response

from emulator.backend import Backend
from emulator.domain.model import Edge, UserMappings, is_text
from emulator.wire.auth import authenticate, dashboard_params
from emulator.wire.params import RequestParams
from emulator.wire.responses import invalid_request, json_response

MAX_USER_IDS = 100


async def read_usermap(request: Request) -> Response:
    backend: Backend = request.app.state.backend
    params = await dashboard_params(request, backend)
    project = authenticate(request, params, backend)
    user_ids = requested_user_ids(params)
    if not user_ids or len(user_ids) > MAX_USER_IDS:
        details = f"user_ids must name 1 to {MAX_USER_IDS} distinct user ids; got {len(user_ids)}."
        raise invalid_request(
            "Invalid user_ids", details + (f" {params.body_note}" if params.body_note else "")
        )
    found = backend.read(project.org, user_ids)
    return json_response({user_id: _user_json(found[user_id]) for user_id in user_ids})


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
