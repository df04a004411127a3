"""Response validation: every response checked against the published contract (openapi.yaml).

`--validate-responses log` (or `strict`) puts ContractMiddleware around the whole app. It finds
the operation a request was for (or, for paths and methods the document does not serve, the
document's `x-unknown-routes` answers), then checks what the app answered:

- the status is documented for it;
- every required header is there and fits its schema, and `X-Emulator-Hint` appears only where
  the document names it (so never on a success);
- the Content-Type is one the response documents (a JSON one exactly `application/json`) and a
  JSON body fits its schema (jsonschema, Draft 2020-12, against the document's own schemas).

Each violation is logged and kept (`GET /_emulator/violations`); in strict mode the client gets a
500 naming the violations instead of the response. Answers that fault rules inject are outside
the contract (the rule chose them) and are not checked; neither are requests that never reach
the app (malformed HTTP, answered by uvicorn itself).

A test suite can have every app of its process validated, and hear of every violation, with
`validate_all_apps(listener)`; the emulator's own suite fails a test whose responses broke the
contract that way.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emulator.control.middleware import FAULT_SCOPE_KEY
from emulator.settings import ValidationMode

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

logger = logging.getLogger("emulator")

HINT_HEADER: Final = "x-emulator-hint"
JSON_MEDIA_TYPE: Final = "application/json"
_DOCUMENT_URI: Final = "urn:amplitude-emulator:openapi"
_METHODS: Final = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
_PROBLEMS_PER_BODY: Final = 3
KEPT_VIOLATIONS: Final = 1000


@dataclass(frozen=True, slots=True)
class Violation:
    """A response that broke the contract: what was asked, what was answered, and what is wrong."""

    method: str
    path: str
    status: int
    problems: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "problems": list(self.problems),
        }

    def __str__(self) -> str:
        return f"{self.method} {self.path} -> {self.status}: " + "; ".join(self.problems)


Listener = Callable[[Violation], None]


# --- the document, compiled ---------------------------------------------------------------------


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}/]+\})", template)
    return re.compile(
        "".join("[^/]+" if part.startswith("{") else re.escape(part) for part in parts)
    )


class ResponseContract:
    """The responses the document allows, and a check of one response against them."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        self.document = document
        self._validator_class = Draft202012Validator
        self._registry: Registry[Any] = Registry().with_resource(
            _DOCUMENT_URI, Resource.from_contents(document, default_specification=DRAFT202012)
        )
        self._validators: dict[str, Validator] = {}
        self._lock = threading.Lock()
        paths: Mapping[str, Any] = document.get("paths", {})
        # Literal paths before templates, so /a/b wins over /a/{name} where both match.
        self._routes = sorted(
            ((_template_regex(path), path) for path in paths),
            key=lambda route: "{" in route[1],
        )

    # --- lookups -----------------------------------------------------------------------------

    def _at(self, pointer: str) -> Any:
        node: Any = self.document
        for token in pointer.lstrip("/").split("/"):
            node = node[_unescape(token)] if isinstance(node, Mapping) else node[int(token)]
        return node

    def _resolve(self, node: Any, pointer: str) -> tuple[Any, str]:
        """Follow `$ref`s (to this document) from the node at `pointer`."""
        seen: set[str] = set()
        while isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
            reference: str = node["$ref"]
            if not reference.startswith("#/") or reference in seen:
                raise ValueError(f"unsupported or circular $ref {reference!r} at {pointer}")
            seen.add(reference)
            pointer = reference[1:]
            node = self._at(pointer)
        return node, pointer

    def operation(self, method: str, path: str) -> tuple[str, str | None]:
        """(pointer to the responses to check against, the operation's label or None)."""
        for regex, template in self._routes:
            if regex.fullmatch(path):
                item = self.document["paths"][template]
                if method.lower() in item and method.lower() in _METHODS:
                    pointer = f"/paths/{_escape(template)}/{method.lower()}/responses"
                    return pointer, f"{method.upper()} {template}"
                return "/x-unknown-routes/responses", None  # a method the path does not serve
        return "/x-unknown-routes/responses", None

    def _validator(self, pointer: str) -> Validator:
        validator = self._validators.get(pointer)
        if validator is None:
            schema = {"$ref": f"{_DOCUMENT_URI}#{pointer}"}
            validator = self._validator_class(schema, registry=self._registry)
            with self._lock:
                self._validators[pointer] = validator
        return validator

    def _schema_problems(self, pointer: str, instance: Any, what: str) -> list[str]:
        errors = sorted(
            self._validator(pointer).iter_errors(instance), key=lambda error: error.json_path
        )
        problems = [
            f"{what} {error.json_path}: {_short(error.message)}"
            for error in errors[:_PROBLEMS_PER_BODY]
        ]
        if len(errors) > _PROBLEMS_PER_BODY:
            problems.append(f"... and {len(errors) - _PROBLEMS_PER_BODY} more")
        return problems

    # --- the check ---------------------------------------------------------------------------

    def check(
        self, method: str, path: str, status: int, headers: Mapping[str, str], body: bytes
    ) -> list[str]:
        """What is wrong with this response (empty: it keeps the contract).

        `headers` has lower-case names.
        """
        responses_pointer, label = self.operation(method, path)
        where = label or f"{method.upper()} {path} (no operation: x-unknown-routes)"
        responses = self._at(responses_pointer)
        key = next(
            (
                candidate
                for candidate in (str(status), f"{str(status)[0]}XX", "default")
                if candidate in responses
            ),
            None,
        )
        if key is None:
            documented = ", ".join(sorted(responses))
            return [f"status {status} is not documented for {where} (documented: {documented})"]
        response, response_pointer = self._resolve(
            responses[key], f"{responses_pointer}/{_escape(key)}"
        )
        problems = self._header_problems(response, response_pointer, headers)
        if method.upper() != "HEAD":
            problems.extend(self._content_problems(response, response_pointer, headers, body))
        return problems

    def _header_problems(
        self, response: Mapping[str, Any], pointer: str, headers: Mapping[str, str]
    ) -> list[str]:
        problems: list[str] = []
        documented: Mapping[str, Any] = response.get("headers", {})
        for name, raw in documented.items():
            header, header_pointer = self._resolve(raw, f"{pointer}/headers/{_escape(name)}")
            value = headers.get(name.lower())
            if value is None:
                if header.get("required", False):
                    problems.append(f"header {name} is missing")
                continue
            if "schema" in header:
                problems.extend(
                    self._schema_problems(f"{header_pointer}/schema", value, f"header {name}")
                )
        if HINT_HEADER in headers and not any(n.lower() == HINT_HEADER for n in documented):
            problems.append(
                f"header X-Emulator-Hint is not documented for this response "
                f"(it says: {headers[HINT_HEADER]!r})"
            )
        return problems

    def _content_problems(
        self,
        response: Mapping[str, Any],
        pointer: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> list[str]:
        content: Mapping[str, Any] = response.get("content", {})
        if not content:
            return [f"a body of {len(body)} bytes where none is documented"] if body else []
        content_type = headers.get("content-type")
        if content_type is None:
            return ["no Content-Type header"]
        media_type = content_type.split(";", 1)[0].strip().lower()
        key = _media_key(media_type, content)
        if key is None:
            return [f"Content-Type {content_type!r} is not one of {', '.join(content)}"]
        if media_type != JSON_MEDIA_TYPE and not media_type.endswith("+json"):
            return []
        problems: list[str] = []
        if content_type != JSON_MEDIA_TYPE:
            problems.append(f"Content-Type {content_type!r}: JSON is labelled {JSON_MEDIA_TYPE}")
        try:
            instance = json.loads(body)
        except ValueError as error:
            return [*problems, f"the body is not JSON ({error}): {_short(repr(body))}"]
        if "schema" in content[key]:
            schema_pointer = f"{pointer}/content/{_escape(key)}/schema"
            problems.extend(self._schema_problems(schema_pointer, instance, "body"))
        return problems


def _media_key(media_type: str, content: Iterable[str]) -> str | None:
    keys = list(content)
    for key in keys:
        if key.lower() == media_type:
            return key
    for key in keys:
        main, _, sub = key.lower().partition("/")
        if key == "*/*" or (sub == "*" and media_type.startswith(main + "/")):
            return key
    return None


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


_contract: ResponseContract | None = None
_contract_lock = threading.Lock()


def response_contract() -> ResponseContract:
    """The contract of the published document (compiled once per process)."""
    global _contract
    with _contract_lock:
        if _contract is None:
            from emulator.openapi import document

            _contract = ResponseContract(document())
        return _contract


# --- violations: kept, logged, and told to listeners ---------------------------------------------

_listeners: list[Listener] = []
_process_mode = ValidationMode.OFF


def validate_all_apps(listener: Listener) -> Callable[[], None]:
    """Validate the responses of every app created from now on in this process (at least as
    `--validate-responses log` does), and tell `listener` of each violation. For test suites;
    returns the function that undoes it."""
    global _process_mode
    _listeners.append(listener)
    _process_mode = ValidationMode.LOG

    def undo() -> None:
        global _process_mode
        if listener in _listeners:
            _listeners.remove(listener)
        if not _listeners:
            _process_mode = ValidationMode.OFF

    return undo


def effective_mode(configured: ValidationMode) -> ValidationMode:
    """The mode an app runs in: its setting, raised to `log` under validate_all_apps()."""
    if configured is ValidationMode.OFF:
        return _process_mode
    return configured


class ViolationLog:
    """The last KEPT_VIOLATIONS violations of one app, for GET /_emulator/violations."""

    def __init__(self, mode: ValidationMode, capacity: int = KEPT_VIOLATIONS) -> None:
        self.mode = mode
        self._entries: deque[Violation] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def report(self, violation: Violation) -> None:
        with self._lock:
            self._entries.append(violation)
        logger.error("amplitude-emulator: response violates the OpenAPI document: %s", violation)
        for listener in list(_listeners):
            listener(violation)

    def entries(self) -> list[Violation]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "violations": [violation.to_json() for violation in self.entries()],
        }


# --- the middleware ------------------------------------------------------------------------------


def _header_map(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in raw:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = value if name not in headers else f"{headers[name]}, {value}"
    return headers


class ContractMiddleware:
    """Check each response before the client gets it (the whole app, outermost)."""

    def __init__(self, app: ASGIApp, *, violations: ViolationLog) -> None:
        self.app = app
        self.violations = violations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []
        passthrough = False

        async def checking_send(message: Message) -> None:
            nonlocal start, passthrough
            if passthrough:
                await send(message)
            elif message["type"] == "http.response.start":
                if scope.get(FAULT_SCOPE_KEY) is not None:
                    passthrough = True  # a fault rule's answer: the rule chose it
                    await send(message)
                else:
                    start = message
            elif message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    await self._answer(scope, receive, send, start, b"".join(chunks))
            else:
                await send(message)

        try:
            await self.app(scope, receive, checking_send)
        except Exception as error:
            if not passthrough:
                self.violations.report(
                    Violation(
                        scope["method"],
                        scope["path"],
                        500,
                        (f"the app raised {type(error).__name__}: {_short(str(error))}",),
                    )
                )
            raise

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, start: Message, body: bytes
    ) -> None:
        status: int = start["status"]
        try:
            problems = response_contract().check(
                scope["method"], scope["path"], status, _header_map(start.get("headers", [])), body
            )
        except Exception as error:  # a broken document must not take the emulator down
            logger.exception("amplitude-emulator: cannot validate a response")
            problems = [f"the response could not be validated: {type(error).__name__}: {error}"]
        if problems:
            violation = Violation(scope["method"], scope["path"], status, tuple(problems))
            self.violations.report(violation)
            if self.violations.mode is ValidationMode.STRICT:
                await _strict_answer(violation)(scope, receive, send)
                return
        await send(start)
        await send({"type": "http.response.body", "body": body})


def _strict_answer(violation: Violation) -> ASGIApp:
    from emulator.wire import responses

    body = {
        "code": 500,
        "error": "Response violates the OpenAPI document",
        "violation": violation.to_json(),
    }
    hint = responses.header_safe(f"The emulator's answer broke its contract: {violation}")
    return responses.json_response(body, 500, {responses.HINT_HEADER: hint})
