"""A small, typed HTTP client of a running emulator: Amplitude's two endpoints and /_emulator.

It works against any emulator, the pytest plugin's, one started with `amplitude-emulator serve`
or a docker-compose service::

    from emulator.client import EmulatorClient

    with EmulatorClient("http://127.0.0.1:8000", api_key="KEY", secret_key="SECRET") as emulator:
        emulator.wait_until_ready()
        emulator.reset()
        emulator.map("user1", "user2")
        emulator.assert_mapped("user1", "user2")

Calls of the control API that the emulator refuses raise EmulatorError with the status and body;
so do `map`, `unmap` and `mappings` when Amplitude's endpoints answer anything but 200 (use
`usermap` or `read` for the raw answer). The assertion helpers raise AssertionError whose message
lists the journal's near misses: the requests that match some, but not all, of what was expected.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import unquote_plus, urlencode

import httpx

from emulator.control.journal import JournalEntry

__all__ = [
    "ClockControl",
    "EmulatorClient",
    "EmulatorError",
    "JournalEntry",
    "near_misses",
]

CONTROL: Final = "/_emulator"
USERMAP_PATH: Final = "/usermap"
READ_PATH: Final = "/api/2/usermap"
HINT_HEADER: Final = "x-emulator-hint"
# Segment's Content-Type for /usermap; what a form post from a real client looks like.
FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded;charset=UTF-8"
_NEAR_MISSES_SHOWN: Final = 10


class EmulatorError(Exception):
    """The emulator refused a call: `status`, `body` (JSON if it was JSON) and `hint`."""

    def __init__(
        self, method: str, url: str, status: int, body: Any, hint: str | None = None
    ) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.body = body
        self.hint = hint
        text = body if isinstance(body, str) else json.dumps(body)
        message = f"{method} {url} answered {status}: {text}"
        if hint:
            message += f" (hint: {hint})"
        super().__init__(message)

    @classmethod
    def from_response(cls, response: httpx.Response) -> EmulatorError:
        return cls(
            response.request.method,
            str(response.request.url),
            response.status_code,
            _body_of(response),
            response.headers.get(HINT_HEADER),
        )


def _body_of(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


class ClockControl:
    """The emulator's clock (GET/POST /_emulator/clock); every method returns the clock's time."""

    def __init__(self, client: EmulatorClient) -> None:
        self._client = client

    def _post(self, document: Mapping[str, Any]) -> float:
        answer = self._client._call("POST", "/clock", json=dict(document))
        return float(answer["now"])

    def now(self) -> float:
        """The emulator's time, epoch seconds."""
        return float(self._client._call("GET", "/clock")["now"])

    def frozen(self) -> bool:
        return bool(self._client._call("GET", "/clock")["frozen"])

    def freeze(self) -> float:
        """Stop the clock where it stands; rate windows then move only with set/advance."""
        return self._post({"freeze": True})

    def unfreeze(self) -> float:
        """Let time run again from where it stands (set and advanced time is kept)."""
        return self._post({"freeze": False})

    def set(self, epoch_seconds: float) -> float:
        return self._post({"set": epoch_seconds})

    def advance(self, seconds: float) -> float:
        return self._post({"advance": seconds})


class EmulatorClient:
    """A running emulator at `base_url`; `api_key`/`secret_key` are used unless a call names others.

    `admin_token` is needed when the emulator was started with --admin-token. `usermap_url` and
    `read_url` default to Amplitude's two paths under `base_url`; other (absolute) URLs send those
    calls elsewhere, e.g. to Amplitude's own hosts (the pytest plugin's parity mode).
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str,
        secret_key: str,
        admin_token: str | None = None,
        timeout: float = 10.0,
        usermap_url: str | None = None,
        read_url: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.secret_key = secret_key
        self.admin_token = admin_token
        self.usermap_url = usermap_url or self.base_url + USERMAP_PATH
        self.read_url = read_url or self.base_url + READ_PATH
        self.clock = ClockControl(self)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self._control_headers = (
            {} if admin_token is None else {"Authorization": f"Bearer {admin_token}"}
        )

    def __repr__(self) -> str:
        return f"EmulatorClient({self.base_url!r}, api_key={self.api_key!r})"

    # --- lifetime ------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EmulatorClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- the control API -----------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int | float] | None = None,
    ) -> Any:
        response = self._http.request(
            method,
            CONTROL + path,
            json=json,
            params=params,
            headers=self._control_headers,
        )
        if response.status_code >= 400:
            raise EmulatorError.from_response(response)
        return _body_of(response)

    def health(self) -> bool:
        """Whether the emulator answers at all (GET /_emulator/health)."""
        try:
            return self._http.get(CONTROL + "/health", headers=self._control_headers).is_success
        except httpx.TransportError:
            return False

    def ready(self) -> bool:
        """Whether storage and seed data are loaded (GET /_emulator/ready)."""
        try:
            response = self._http.get(CONTROL + "/ready", headers=self._control_headers)
        except httpx.TransportError:
            return False
        body = _body_of(response)
        failed = isinstance(body, dict) and body.get("status") == "failed"  # a seed did not load
        if failed or response.status_code not in (200, 503):
            raise EmulatorError.from_response(response)
        return response.status_code == 200

    def wait_until_ready(self, timeout: float = 10.0, interval: float = 0.05) -> None:
        """Poll /_emulator/ready; TimeoutError after `timeout` s, EmulatorError if loading fails."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the emulator at {self.base_url} was not ready in {timeout} s")
            time.sleep(interval)

    def reset(self, api_key: str | None = None) -> None:
        """Wipe mappings, amplitude ids, rate windows, journal, fault rules and clock changes.

        With `api_key`: only that key's org (its mappings, ids, rate window and journal entries).
        Projects, snapshots and limits (see `set_config`) are kept.
        """
        self._call("POST", "/reset", params={} if api_key is None else {"api_key": api_key})

    def state(self) -> dict[str, Any]:
        """The state document: orgs, projects, mappings and amplitude ids."""
        document: dict[str, Any] = self._call("GET", "/state")
        return document

    def load_state(self, document: Mapping[str, Any]) -> dict[str, Any]:
        """Replace the state with `document` (as `state()` returns it); returns a summary."""
        summary: dict[str, Any] = self._call("PUT", "/state", json=dict(document))
        return summary

    def snapshot(self, name: str) -> None:
        self._call("POST", f"/snapshots/{name}")

    def restore(self, name: str) -> None:
        self._call("POST", f"/snapshots/{name}/restore")

    def snapshots(self) -> list[str]:
        names: list[str] = self._call("GET", "/snapshots")["snapshots"]
        return names

    def requests(
        self,
        *,
        path: str | None = None,
        method: str | None = None,
        status: int | None = None,
        api_key: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[JournalEntry]:
        """The journal of Amplitude-facing requests, oldest first, filtered on the emulator."""
        filters = {
            "path": path,
            "method": method,
            "status": status,
            "api_key": api_key,
            "since": since,
            "limit": limit,
        }
        params = {name: value for name, value in filters.items() if value is not None}
        entries: list[JournalEntry] = self._call("GET", "/requests", params=params)["requests"]
        return entries

    def clear_requests(self) -> None:
        self._call("DELETE", "/requests")

    def fault(
        self,
        *,
        status: int | None = None,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        latency_ms: float | None = None,
        drop: bool = False,
        times: int | None = None,
        probability: float | None = None,
        method: str | None = None,
        path: str | None = None,
        api_key: str | None = None,
    ) -> int:
        """Add a fault rule for Amplitude's paths; returns its id.

        The effect is an answer (`status`, optional `body` and `headers`), a `latency_ms` before
        the real answer, or `drop` (the connection is closed). It fires for the next `times`
        matching requests (default 1), or with `probability` for each. It matches requests by
        `method`, `path` and `api_key`; an absent one matches any.
        """
        effect: dict[str, Any] = {}
        if status is not None:
            effect["status"] = status
        if body is not None:
            effect["body"] = body
        if headers is not None:
            effect["headers"] = dict(headers)
        if latency_ms is not None:
            effect["latency_ms"] = latency_ms
        if drop:
            effect["drop"] = True
        match = {"method": method, "path": path, "api_key": api_key}
        rule: dict[str, Any] = {
            "match": {name: value for name, value in match.items() if value is not None},
            "effect": effect,
        }
        if times is not None:
            rule["times"] = times
        if probability is not None:
            rule["probability"] = probability
        return int(self._call("POST", "/faults", json=rule)["id"])

    def faults(self) -> list[dict[str, Any]]:
        rules: list[dict[str, Any]] = self._call("GET", "/faults")["faults"]
        return rules

    def delete_fault(self, rule_id: int) -> None:
        self._call("DELETE", f"/faults/{rule_id}")

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def config(self) -> dict[str, Any]:
        """The run-time limits: max_batch, max_request_bytes, max_target_bytes, rate_limit, ..."""
        limits: dict[str, Any] = self._call("GET", "/config")
        return limits

    def set_config(self, **limits: int | float | None) -> dict[str, Any]:
        """Change run-time limits, e.g. `set_config(rate_limit=2, max_batch=1)`; None: no limit."""
        changed: dict[str, Any] = self._call("PATCH", "/config", json=limits)
        return changed

    # --- Amplitude's endpoints -----------------------------------------------------------

    def usermap(self, mapping: Any, *, api_key: str | None = None) -> httpx.Response:
        """POST /usermap with a form body as Segment sends it; the raw answer, never raises."""
        return self._http.post(
            self.usermap_url,
            content=urlencode(
                {
                    "api_key": self.api_key if api_key is None else api_key,
                    "mapping": mapping if isinstance(mapping, str) else json.dumps(mapping),
                }
            ),
            headers={"Content-Type": FORM_CONTENT_TYPE},
        )

    def read(
        self, user_ids: Iterable[str], *, api_key: str | None = None, secret_key: str | None = None
    ) -> httpx.Response:
        """GET /api/2/usermap with HTTP Basic auth; the raw answer, never raises."""
        return self._http.get(
            self.read_url,
            params={"user_ids": list(user_ids)},
            auth=(
                self.api_key if api_key is None else api_key,
                self.secret_key if secret_key is None else secret_key,
            ),
        )

    def _usermap_ok(self, mapping: Any, api_key: str | None) -> None:
        response = self.usermap(mapping, api_key=api_key)
        if response.status_code != 200:
            raise EmulatorError.from_response(response)

    def map(self, user_id: str, global_user_id: str, *, api_key: str | None = None) -> None:
        """Map `user_id` to `global_user_id`; EmulatorError unless Amplitude's answer is 200."""
        self._usermap_ok([{"user_id": user_id, "global_user_id": global_user_id}], api_key)

    def unmap(self, user_id: str, *, api_key: str | None = None) -> None:
        self._usermap_ok([{"user_id": user_id, "unmap": True}], api_key)

    def mappings(
        self, *user_ids: str, api_key: str | None = None, secret_key: str | None = None
    ) -> dict[str, Any]:
        """Each user's `amplitude_id`, `mapped_to` and `mapped_from`, as Amplitude answers."""
        response = self.read(user_ids, api_key=api_key, secret_key=secret_key)
        if response.status_code != 200:
            raise EmulatorError.from_response(response)
        answer: dict[str, Any] = response.json()
        return answer

    # --- assertions ----------------------------------------------------------------------

    def _global_of(self, user_id: str, api_key: str | None) -> str | None:
        """The user's direct mapping, from the state document (so the journal is not touched)."""
        key = self.api_key if api_key is None else api_key
        state = self.state()
        for org in state.get("orgs", []):
            if (state.get("permissive") and org["name"] == key) or any(
                project["api_key"] == key for project in org.get("projects", [])
            ):
                mappings: dict[str, str] = org.get("mappings", {})
                return mappings.get(user_id)
        if not state.get("permissive"):
            raise AssertionError(f"no project of the emulator has the api_key {key!r}")
        return None

    def assert_mapped(
        self, user_id: str, global_user_id: str, *, api_key: str | None = None
    ) -> None:
        """Assert that `user_id` is mapped to `global_user_id` (in the org of `api_key`).

        Reads through the control API, so it adds nothing to the journal.
        """
        __tracebackhide__ = True  # pytest shows the failing line of the test, not ours
        found = self._global_of(user_id, api_key)
        if found == global_user_id:
            return
        now = f"mapped to {found!r}" if found else "not mapped to anyone"
        raise AssertionError(
            f"expected {user_id!r} to be mapped to {global_user_id!r}, but it is {now}.\n"
            + self._requests_mentioning(user_id)
        )

    def assert_not_mapped(self, user_id: str, *, api_key: str | None = None) -> None:
        """Assert that `user_id` is mapped to no one (in the org of `api_key`)."""
        __tracebackhide__ = True  # pytest shows the failing line of the test, not ours
        found = self._global_of(user_id, api_key)
        if found is None:
            return
        raise AssertionError(
            f"expected {user_id!r} not to be mapped, but it is mapped to {found!r}.\n"
            + self._requests_mentioning(user_id)
        )

    def _requests_mentioning(self, user_id: str) -> str:
        entries = [
            entry
            for entry in self.requests(path=USERMAP_PATH)
            if user_id in unquote_plus(entry["query"]) or user_id in unquote_plus(entry["body"])
        ]
        if not entries:
            return f"The journal has no /usermap request that mentions {user_id!r}."
        lines = [f"/usermap requests that mention {user_id!r}:"]
        lines.extend(f"  {describe_entry(entry)}" for entry in entries[-_NEAR_MISSES_SHOWN:])
        return "\n".join(lines)

    def assert_request(
        self,
        *,
        path: str | None = None,
        method: str | None = None,
        status: int | None = None,
        api_key: str | None = None,
        org: str | None = None,
        fault: int | None = None,
        body_contains: str | None = None,
        count: int | None = None,
    ) -> list[JournalEntry]:
        """Assert the journal holds a request with all of these (exactly `count` of them if given).

        Returns the matching entries. On failure the message lists the near misses: requests
        that match some of the expectations, with the fields that differ.
        """
        __tracebackhide__ = True  # pytest shows the failing line of the test, not ours
        expected: dict[str, Any] = {
            "path": path,
            "method": None if method is None else method.upper(),
            "status": status,
            "api_key": api_key,
            "org": org,
            "fault": fault,
            "body_contains": body_contains,
        }
        expected = {name: value for name, value in expected.items() if value is not None}
        entries = self.requests()
        matching = [entry for entry in entries if not _differences(entry, expected)]
        if (count is None and matching) or (count is not None and len(matching) == count):
            return matching
        wanted = ", ".join(f"{name}={value!r}" for name, value in expected.items()) or "anything"
        if count is None:
            headline = f"no request in the journal has {wanted}"
        else:
            headline = f"expected {count} request(s) with {wanted}, found {len(matching)}"
        raise AssertionError(
            headline + f" ({len(entries)} in the journal).\n" + near_misses(entries, expected)
        )


def _field(entry: JournalEntry, name: str) -> Any:
    if name == "body_contains":
        return unquote_plus(entry["query"]) + "\n" + unquote_plus(entry["body"])
    return entry[name]  # type: ignore[literal-required]


def _differences(entry: JournalEntry, expected: Mapping[str, Any]) -> list[str]:
    """The expectations `entry` does not meet, each as 'name: expected X, got Y'."""
    differences: list[str] = []
    for name, want in expected.items():
        got = _field(entry, name)
        if name == "body_contains":
            if want not in got:
                differences.append(f"body does not contain {want!r}")
        elif got != want:
            differences.append(f"{name}: expected {want!r}, got {got!r}")
    return differences


def describe_entry(entry: JournalEntry) -> str:
    """One line: '#3 POST /usermap -> 400 {...} (hint: ...)'."""
    response = entry["response_body"]
    text = response if isinstance(response, str) else json.dumps(response)
    if len(text) > 120:
        text = text[:117] + "..."
    line = f"#{entry['id']} {entry['method']} {entry['path']} -> {entry['status']} {text}"
    if entry["api_key"] is not None:
        line += f" [api_key={entry['api_key']!r}]"
    if entry["fault"] is not None:
        line += f" [fault rule {entry['fault']}]"
    if entry["hint"]:
        line += f" (hint: {entry['hint']})"
    return line


def near_misses(
    entries: Sequence[JournalEntry],
    expected: Mapping[str, Any],
    *,
    shown: int = _NEAR_MISSES_SHOWN,
) -> str:
    """The entries that meet some but not all of `expected`, closest first, as readable text."""
    if not entries:
        return "The journal is empty: no request reached the emulator's Amplitude paths."
    scored: list[tuple[int, int, JournalEntry, list[str]]] = []
    for entry in entries:
        differences = _differences(entry, expected)
        met = len(expected) - len(differences)
        if differences and (met > 0 or len(expected) == 1):
            scored.append((met, entry["id"], entry, differences))
    if not scored:
        kinds: Literal["request", "requests"] = "request" if len(entries) == 1 else "requests"
        return f"Near misses: none; the journal's {kinds} match none of that:\n" + "\n".join(
            f"  {describe_entry(entry)}" for entry in entries[-shown:]
        )
    scored.sort(key=lambda item: (-item[0], -item[1]))
    lines = ["Near misses (closest first):"]
    for _met, _id, entry, differences in scored[:shown]:
        lines.append(f"  {describe_entry(entry)}")
        lines.extend(f"      {difference}" for difference in differences)
    if len(scored) > shown:
        lines.append(f"  ... and {len(scored) - shown} more")
    return "\n".join(lines)
