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
from emulator.tenancy import region_of_host
from emulator.wire.params import read_params
from emulator.wire.responses import (
    Refusal,
    invalid_api_key,
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
    request.state.api_key = api_key  # for the request journal
    host_region = region_of_host(request.headers.get("host"))
    project = backend.tenancy.project_for_key(api_key, host_region)
    if project is None:
        raise invalid_api_key(api_key, invalid_key_hint(backend, api_key, host_region))

    request.state.org = project.org
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
        backend.map_batch(project.org, ops, shape_error)
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


def invalid_key_hint(backend: Backend, api_key: str, host_region: object) -> str:
    if api_key in ("undefined", "null"):
        return f"The api_key is the literal string {api_key!r}: the client's key is not set."
    known = backend.tenancy.project_for_key(api_key, None)
    if known is not None and known.region is not None:
        return (
            f"This key belongs to a project in the {known.region.value.upper()} region, "
            f"but the request was sent to a {str(host_region).upper()} host."
        )
    return "No configured project has this api_key (see the emulator's --config)."
