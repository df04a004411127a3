"""The control API under /_emulator: health, state, snapshots, journal, clock, faults, config.

Its answers are plain JSON of our own (`{"error": ...}` on refusal); it is never rate limited,
faulted or journaled, and with an admin token it requires `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
import html
import json
import math
from typing import Any

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from emulator.contract import ViolationLog
from emulator.control import CONTROL_PREFIX
from emulator.control.faults import InvalidFaultRule
from emulator.control.journal import JournalFilter
from emulator.control.service import Control, InvalidState
from emulator.wire.responses import Refusal, json_response
from emulator.wire.routes import AMPLITUDE_PATHS


def _control(request: Request) -> Control:
    control: Control = request.app.state.control
    return control


def _refuse(status: int, message: str) -> Refusal:
    return Refusal(status, {"error": message}, message)


async def require_admin_token(request: Request) -> None:
    token = _control(request).admin_token
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        raise Refusal(
            401,
            {"error": "The control API needs 'Authorization: Bearer <admin token>'."},
            "This emulator was started with --admin-token.",
            {"WWW-Authenticate": 'Bearer realm="amplitude-emulator"'},
        )


router = APIRouter(prefix=CONTROL_PREFIX, dependencies=[Depends(require_admin_token)])


async def _json_body(request: Request) -> Any:
    body = await request.body()
    if not body:
        return {}
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise _refuse(400, "The body must be JSON.") from None


def _org_of_api_key(control: Control, api_key: str | None) -> str | None:
    if api_key is None:
        return None
    project = control.backend.tenancy.project_for_key(api_key, None)
    if project is None:
        raise _refuse(400, f"No project has the api_key {api_key!r}.")
    return project.org


ENDPOINTS: tuple[tuple[str, str, str], ...] = (
    ("GET", "/_emulator", "this page"),
    ("GET", "/_emulator/health", "alive"),
    ("GET", "/_emulator/ready", "200 once storage and seed data are loaded, 503 before"),
    ("POST", "/_emulator/reset", "wipe mappings, ids, rate windows, journal, faults (?api_key=)"),
    ("GET", "/_emulator/state", "export orgs, projects, mappings and amplitude ids"),
    ("PUT", "/_emulator/state", "replace the state from such a document"),
    ("GET", "/_emulator/snapshots", "names of the snapshots"),
    ("POST", "/_emulator/snapshots/{name}", "snapshot the state"),
    ("POST", "/_emulator/snapshots/{name}/restore", "restore a snapshot"),
    (
        "GET",
        "/_emulator/requests",
        "the request journal (path, method, status, api_key, since, limit)",
    ),
    ("DELETE", "/_emulator/requests", "clear the journal"),
    ("GET", "/_emulator/clock", "the emulator clock"),
    ("POST", "/_emulator/clock", '{"freeze": bool}, {"set": epoch_s}, {"advance": s}'),
    ("GET", "/_emulator/faults", "fault rules"),
    ("POST", "/_emulator/faults", "add a fault rule"),
    ("DELETE", "/_emulator/faults", "remove all fault rules"),
    ("DELETE", "/_emulator/faults/{rule_id}", "remove one fault rule"),
    ("GET", "/_emulator/config", "runtime limits"),
    ("PATCH", "/_emulator/config", "change runtime limits"),
    ("GET", "/_emulator/violations", "responses that broke the OpenAPI document"),
    ("DELETE", "/_emulator/violations", "forget them"),
)


@router.get("", include_in_schema=False)
async def index(request: Request) -> Response:
    summary = _control(request).summary()
    rows = "".join(
        f"<tr><td>{method}</td><td><code>{html.escape(path)}</code></td>"
        f"<td>{html.escape(what)}</td></tr>"
        for method, path, what in ENDPOINTS
    )
    facts = "".join(
        f"<li>{html.escape(name)}: {html.escape(json.dumps(value))}</li>"
        for name, value in summary.items()
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>amplitude-emulator</title>"
        "</head><body><h1>Amplitude User Mapping API emulator</h1>"
        f"<h2>State</h2><ul>{facts}</ul>"
        "<h2>Control API</h2><table><tr><th>method</th><th>path</th><th>what</th></tr>"
        f"{rows}</table>"
        "<p>Amplitude's paths: "
        + ", ".join(f"<code>{path}</code>" for path in AMPLITUDE_PATHS)
        + ". The contract: <a href='/openapi.yaml'>/openapi.yaml</a>"
        " (<a href='/docs'>interactive docs</a>).</p></body></html>"
    )
    return HTMLResponse(page)


@router.get("/health")
async def health() -> Response:
    return json_response({"status": "ok"})


@router.get("/ready")
async def ready(request: Request) -> Response:
    control = _control(request)
    if control.ready:
        return json_response({"status": "ready"})
    body = {"status": "loading" if control.load_error is None else "failed"}
    if control.load_error is not None:
        body["error"] = control.load_error
    return json_response(body, 503)


@router.post("/reset")
async def reset(request: Request) -> Response:
    control = _control(request)
    org = _org_of_api_key(control, request.query_params.get("api_key") or None)
    control.reset(org)
    return json_response({"reset": "all" if org is None else org})


@router.get("/state")
async def get_state(request: Request) -> Response:
    return json_response(_control(request).export_state())


@router.put("/state")
async def put_state(request: Request) -> Response:
    control = _control(request)
    try:
        control.import_state(await _json_body(request))
    except InvalidState as error:
        raise _refuse(400, str(error)) from None
    return json_response(control.summary())


@router.get("/snapshots")
async def list_snapshots(request: Request) -> Response:
    return json_response({"snapshots": sorted(_control(request).snapshots)})


@router.post("/snapshots/{name}")
async def take_snapshot(request: Request, name: str) -> Response:
    _control(request).snapshot(name)
    return json_response({"snapshot": name}, 201)


@router.post("/snapshots/{name}/restore")
async def restore_snapshot(request: Request, name: str) -> Response:
    control = _control(request)
    if name not in control.snapshots:
        raise _refuse(404, f"No snapshot is named {name!r}.")
    control.restore(name)
    return json_response({"restored": name})


def _journal_filter(request: Request) -> JournalFilter:
    query = request.query_params
    try:
        return JournalFilter(
            path=query.get("path") or None,
            method=query.get("method") or None,
            status=int(query["status"]) if query.get("status") else None,
            api_key=query.get("api_key") or None,
            since=float(query["since"]) if query.get("since") else None,
            limit=int(query["limit"]) if query.get("limit") else None,
        )
    except ValueError:
        raise _refuse(400, "status and limit are whole numbers; since is epoch seconds.") from None


@router.get("/requests")
async def list_requests(request: Request) -> Response:
    entries = _control(request).journal.entries(_journal_filter(request))
    return json_response({"requests": entries})


@router.delete("/requests")
async def clear_requests(request: Request) -> Response:
    _control(request).journal.clear()
    return json_response({"requests": []})


def _clock_json(control: Control) -> dict[str, Any]:
    clock = control.backend.clock
    return {"now": clock.now(), "frozen": clock.frozen}


@router.get("/clock")
async def get_clock(request: Request) -> Response:
    return json_response(_clock_json(_control(request)))


@router.post("/clock")
async def set_clock(request: Request) -> Response:
    control = _control(request)
    document = await _json_body(request)
    if not isinstance(document, dict) or not document.keys() <= {"freeze", "set", "advance"}:
        raise _refuse(400, 'The body is {"freeze": bool}, {"set": epoch_s} or {"advance": s}.')
    freeze, set_to, advance = document.get("freeze"), document.get("set"), document.get("advance")
    if freeze is not None and not isinstance(freeze, bool):
        raise _refuse(400, "freeze must be true or false.")
    for name, value in (("set", set_to), ("advance", advance)):
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise _refuse(400, f"{name} must be a number of seconds.")
    clock = control.backend.clock
    if freeze is True:
        clock.freeze()
    if set_to is not None:
        clock.set(float(set_to))
    if advance is not None:
        clock.advance(float(advance))
    if freeze is False:
        clock.unfreeze()
    return json_response(_clock_json(control))


@router.get("/faults")
async def list_faults(request: Request) -> Response:
    return json_response({"faults": [rule.to_json() for rule in _control(request).faults.rules()]})


@router.post("/faults")
async def add_fault(request: Request) -> Response:
    try:
        rule = _control(request).faults.add(await _json_body(request))
    except InvalidFaultRule as error:
        raise _refuse(400, str(error)) from None
    return json_response(rule.to_json(), 201)


@router.delete("/faults")
async def clear_faults(request: Request) -> Response:
    _control(request).faults.clear()
    return json_response({"faults": []})


@router.delete("/faults/{rule_id}")
async def delete_fault(request: Request, rule_id: str) -> Response:
    # A str, not an int parameter: a non-number is "no such rule", in our own error shape.
    if not (rule_id.isascii() and rule_id.isdigit()) or not _control(request).faults.clear(
        int(rule_id)
    ):
        raise _refuse(404, f"No fault rule has the id {rule_id}.")
    return json_response({"deleted": int(rule_id)})


_LIMIT_FIELDS = {
    "max_batch": "positive",
    "max_request_bytes": "positive",
    "max_target_bytes": "positive",
    "rate_limit": "positive or null",
    "rate_window_seconds": "positive number",
    "max_events": "positive",
    "batch_max_request_bytes": "positive",
    "event_eps": "positive or null",
    "batch_event_eps": "positive or null",
    "event_rate_window_seconds": "positive number",
}


def _config_json(control: Control) -> dict[str, Any]:
    limits = control.backend.limits
    return {
        **{name: getattr(limits, name) for name in _LIMIT_FIELDS},
        "journal_size": control.journal.capacity,
    }


@router.get("/config")
async def get_config(request: Request) -> Response:
    return json_response(_config_json(_control(request)))


@router.patch("/config")
async def patch_config(request: Request) -> Response:
    control = _control(request)
    document = await _json_body(request)
    allowed = {*_LIMIT_FIELDS, "journal_size"}
    if not isinstance(document, dict) or not document.keys() <= allowed:
        raise _refuse(400, f"The body is an object with some of: {', '.join(sorted(allowed))}.")
    for name, value in document.items():
        number_ok = isinstance(value, int | float) and not isinstance(value, bool)
        if _LIMIT_FIELDS.get(name) == "positive or null" and value is None:
            continue
        if _LIMIT_FIELDS.get(name) == "positive number":
            valid = number_ok and math.isfinite(value) and value > 0
        elif name == "journal_size":
            valid = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        else:
            valid = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        if not valid:
            raise _refuse(400, f"{name} must be {_LIMIT_FIELDS.get(name, 'a whole number >= 0')}.")
    for name, value in document.items():
        if name == "journal_size":
            control.journal.resize(value)
        else:
            setattr(
                control.backend.limits, name, float(value) if name.endswith("seconds") else value
            )
    return json_response(_config_json(control))


def _violations(request: Request) -> ViolationLog:
    violations: ViolationLog = request.app.state.violations
    return violations


@router.get("/violations")
async def list_violations(request: Request) -> Response:
    return json_response(_violations(request).to_json())


@router.delete("/violations")
async def clear_violations(request: Request) -> Response:
    violations = _violations(request)
    violations.clear()
    return json_response(violations.to_json())
