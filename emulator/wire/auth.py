"""Who a request is from.

The ingestion APIs (/usermap, /2/httpapi, /batch, /identify) name a project by its `api_key`
parameter, valid on hosts of its region. The Dashboard REST API takes HTTP Basic credentials (or
api_key / secret_key parameters), checked before anything else, and answers size limits in its
own error shape."""

from __future__ import annotations

import base64

from starlette.requests import Request

from emulator.backend import Backend
from emulator.tenancy import Project, Region, region_of_host
from emulator.wire.params import RequestParams, read_params
from emulator.wire.responses import Refusal, invalid_api_key, invalid_request, unauthorized


def ingestion_project(request: Request, backend: Backend, api_key: str) -> Project:
    """The project `api_key` names on this request's host, or the invalid-key 400."""
    request.state.api_key = api_key  # for the request journal
    host_region = region_of_host(request.headers.get("host"))
    project = backend.tenancy.project_for_key(api_key, host_region)
    if project is None:
        raise invalid_api_key(api_key, _invalid_key_hint(backend, api_key, host_region))
    request.state.org = project.org
    return project


def _invalid_key_hint(backend: Backend, api_key: str, host_region: Region | None) -> str:
    if api_key in ("undefined", "null"):
        return f"The api_key is the literal string {api_key!r}: the client's key is not set."
    known = backend.tenancy.project_for_key(api_key, None)
    if known is not None and known.region is not None:
        return (
            f"This key belongs to a project in the {known.region.value.upper()} region, "
            f"but the request was sent to a {str(host_region).upper()} host."
        )
    return "No configured project has this api_key (see the emulator's --config)."


async def dashboard_params(request: Request, backend: Backend) -> RequestParams:
    """The request's parameters; 408 / 413 / 414 in the Dashboard REST API's error shape."""
    try:
        return await read_params(request, backend.limits)
    except Refusal as refusal:
        shaped = invalid_request(str(refusal.body.get("error")), refusal.hint, refusal.status_code)
        shaped.headers.update(refusal.headers)  # a 408's Connection: close
        raise shaped from None


def authenticate(request: Request, params: RequestParams, backend: Backend) -> Project:
    """The project whose api_key / secret_key pair the request carries on this host, or 401."""
    authorization = request.headers.get("authorization")
    if authorization is not None:
        credentials = basic_credentials(authorization)
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


def basic_credentials(authorization: str) -> tuple[str, str] | None:
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
