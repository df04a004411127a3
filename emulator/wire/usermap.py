"""POST (and GET) /usermap: map and unmap, checked in the order of spec section 3."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from emulator.backend import Backend, RateLimited
from emulator.domain.mapping import (
    InvalidMapping,
    MappingCycle,
    MappingNotJson,
    TooManyMappings,
    parse_mapping,
)
from emulator.wire.auth import ingestion_project
from emulator.wire.params import read_params
from emulator.wire.responses import (
    Refusal,
    json_response,
    missing_field,
    payload_too_large,
)

_MISSING_HINT = "Send {name} as a form field or query-string parameter; it was absent or empty."


async def usermap(request: Request) -> Response:
    backend: Backend = request.app.state.backend
    params = await read_params(request, backend.limits)

    api_key = params.first("api_key")
    if api_key is None:
        raise missing_field("api_key", params.body_note or _MISSING_HINT.format(name="api_key"))
    project = ingestion_project(request, backend, api_key)
    mapping = params.first("mapping")
    if mapping is None:
        raise missing_field("mapping", params.body_note or _MISSING_HINT.format(name="mapping"))
    try:
        try:
            ops, shape_error = parse_mapping(mapping, max_batch=backend.limits.max_batch), None
        except InvalidMapping as error:
            if error.index is None:  # not an array of objects at all
                raise
            ops, shape_error = error.ops_before, error
        await backend.map_batch(project.org, ops, shape_error)
    except MappingNotJson as error:
        raise Refusal(
            400,
            {"code": 400, "error": "Invalid JSON request body"},
            f"The mapping parameter is not valid JSON ({error.reason}).",
        ) from None
    except InvalidMapping as error:
        raise _invalid_mapping(error) from None
    except TooManyMappings as error:
        raise payload_too_large(f"{error}; Amplitude's limit cannot be raised.") from None
    except RateLimited as error:
        eps = backend.limits.eps_threshold
        raise Refusal(
            429,
            {"code": 429, "error": "Too many requests", "eps_threshold": eps},
            f"This org sent {backend.limits.rate_limit} or more mapping objects in the last "
            f"{backend.limits.rate_window_seconds:g} s; the batch is valid, retry after "
            f"{error.retry_after} s.",
            {"Retry-After": str(error.retry_after)},
        ) from None
    return json_response({"code": 200})


def _invalid_mapping(error: InvalidMapping) -> Refusal:
    body: dict[str, object] = {"code": 400, "error": "Invalid mapping"}
    if error.index is not None:
        body["index"] = error.index
    if error.missing_field is not None:
        body["missing_field"] = error.missing_field
    hint = error.reason
    if isinstance(error, MappingCycle):
        hint += "; cycles are refused and the whole batch is rejected."
    return Refusal(400, body, hint[:1].upper() + hint[1:] + ("" if hint.endswith(".") else "."))
