"""Reliability and security tests (issue 6): shared helpers.

- `EmulatorProcess`: `amplitude-emulator serve` in a process of its own, restartable on the same
  database file, its output kept in files (so a full pipe can never block it).
- `WriteOp` and `unexplained_users`: the check that a final state is what the acknowledged
  writes left, for writes that ran concurrently and across crashes.
- `record_figures`: print the figures a test measured and keep them in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from tests.support import LISTENING, Emulator, clean_environment, serve_command

REPO = Path(__file__).resolve().parents[2]
FIGURES_DOC = REPO / "docs" / "reliability.md"
RECORD_FIGURES_ENV = "RELIABILITY_FIGURES"  # "write": keep the figures in FIGURES_DOC
USERMAP = "/usermap"
READ = "/api/2/usermap"
HEALTH = "/_emulator/health"


# --- a server process ---------------------------------------------------------------------------


class EmulatorProcess:
    """`amplitude-emulator serve ARGUMENTS` as a subprocess; start, kill and start it again.

    Each run's stdout and stderr go to files in `log_dir` (uvicorn's access log is on stdout).
    Always call `stop()` in a `finally`: it kills a running process.
    """

    def __init__(
        self, *arguments: str, log_dir: Path, environment: Mapping[str, str] | None = None
    ) -> None:
        self.arguments = arguments
        self.log_dir = log_dir
        self.environment = dict(environment) if environment is not None else clean_environment()
        self.runs = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.emulator: Emulator | None = None

    @property
    def base_url(self) -> str:
        assert self.emulator is not None, "the emulator is not running"
        return self.emulator.base_url

    @property
    def address(self) -> tuple[str, int]:
        assert self.emulator is not None, "the emulator is not running"
        return self.emulator.host, self.emulator.port

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 30.0) -> Emulator:
        """Start a run and return once it answers GET /_emulator/health."""
        assert not self.running(), "already running"
        self.runs += 1
        out = self.log_dir / f"run-{self.runs}.out"
        err = self.log_dir / f"run-{self.runs}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            self.process = subprocess.Popen(
                serve_command(*self.arguments),
                stdout=stdout,
                stderr=stderr,
                env=self.environment,
            )
        deadline = time.monotonic() + timeout
        while True:
            match = LISTENING.search(out.read_text("utf-8", "replace"))
            if match is not None:
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(
                    f"the emulator did not start (exit {self.process.returncode}): "
                    f"{err.read_text('utf-8', 'replace')[-2000:]}"
                )
            time.sleep(0.01)
        self.emulator = Emulator(self.process, match["host"], int(match["port"]))
        wait_healthy(self.emulator.base_url, deadline - time.monotonic(), self.admin_headers())
        return self.emulator

    def admin_headers(self) -> dict[str, str]:
        """The Authorization header the control API needs, if started with --admin-token."""
        if "--admin-token" not in self.arguments:
            return {}
        token = self.arguments[self.arguments.index("--admin-token") + 1]
        return {"Authorization": f"Bearer {token}"}

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.emulator = None

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, and wait for the process to exit; returns its exit status."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.emulator = None

    def stop(self) -> None:
        """Kill the process if it still runs (for `finally` blocks)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.emulator = None

    def output(self) -> str:
        """Everything every run wrote to stdout and stderr so far."""
        return "".join(
            path.read_text("utf-8", "replace") for path in sorted(self.log_dir.glob("run-*.*"))
        )

    def memory_kb(self) -> dict[str, int]:
        assert self.emulator is not None, "the emulator is not running"
        return self.emulator.memory_kb()


def sqlite_process(database: Path, *, log_dir: Path) -> EmulatorProcess:
    """An EmulatorProcess (not started) on the SQLite file `database`, rate limit off and
    warnings only in its log."""
    return EmulatorProcess(
        "--database-url",
        f"sqlite:///{database}",
        "--rate-limit",
        "off",
        "--log-level",
        "warning",
        log_dir=log_dir,
    )


@contextlib.contextmanager
def emulator_process(
    *arguments: str, log_dir: Path, environment: Mapping[str, str] | None = None
) -> Iterator[EmulatorProcess]:
    """A started EmulatorProcess, killed when the block ends however it ends."""
    process = EmulatorProcess(*arguments, log_dir=log_dir, environment=environment)
    try:
        process.start()
        yield process
    finally:
        process.stop()


def wait_healthy(
    base_url: str, timeout: float = 10.0, headers: Mapping[str, str] | None = None
) -> None:
    deadline = time.monotonic() + max(timeout, 0.1)
    last: object = None
    with httpx.Client(base_url=base_url, timeout=2, headers=headers) as http:
        while time.monotonic() < deadline:
            try:
                response = http.get(HEALTH)
                if response.status_code == 200 and response.json() == {"status": "ok"}:
                    return
                assert response.status_code >= 500, f"{HEALTH}: {response.status_code}"
                last = response.status_code
            except httpx.TransportError as error:
                last = error
            time.sleep(0.01)
    raise AssertionError(f"{base_url} is not healthy after {timeout:.1f} s: {last!r}")


def integrity_check(database: Path) -> list[str]:
    """`PRAGMA integrity_check` of a SQLite file: ["ok"] when it is sound."""
    connection = sqlite3.connect(database, timeout=10)
    try:
        return [row[0] for row in connection.execute("PRAGMA integrity_check")]
    finally:
        connection.close()


# --- what a set of concurrent writes may leave --------------------------------------------------


@dataclass(slots=True)
class WriteOp:
    """One POST /usermap batch: `(user_id, global_user_id or None for unmap)` per object.

    `outcome` is "ok" (200: acknowledged), "refused" (a 4xx: applied nothing) or "unknown" (no
    answer, as when the server was killed mid-request: it may or may not have landed).
    `started` and `ended` are time.monotonic() when it was sent and when its outcome was known.
    """

    objects: tuple[tuple[str, str | None], ...]
    started: float
    ended: float = math.inf
    outcome: Literal["pending", "ok", "refused", "unknown"] = "pending"

    def mapping(self) -> str:
        return json.dumps(
            [
                {"user_id": user, "unmap": True}
                if target is None
                else {"user_id": user, "global_user_id": target}
                for user, target in self.objects
            ]
        )


@dataclass(slots=True)
class Verdict:
    """Per user: what final value is allowed, and whether the state had it."""

    users_checked: int = 0
    unexplained: dict[str, str] = field(default_factory=dict)  # user -> why
    lost_acknowledged: int = 0  # acknowledged writes a wrong final value lost


def unexplained_users(ops: Iterable[WriteOp], final: Mapping[str, str]) -> Verdict:
    """Check each user's final global against the writes on that user.

    Each user is a register: only objects naming it as `user_id` write it (map: the global,
    unmap: None). Writes that may have landed are the acknowledged ones and the unknown ones. The
    final value must be that of a write W that may have landed and that no acknowledged write
    follows in real time (none was sent after W ended), or, if there is no acknowledged write
    on the user at all, the initial None. That is the value of the last write in some serial
    order consistent with real time: so an acknowledged write that a later state forgot is
    caught, and one that was overtaken by a concurrent write is not mistaken for a loss.
    """
    writes: dict[str, list[tuple[WriteOp, str | None]]] = {}
    for op in ops:
        if op.outcome in ("ok", "unknown"):
            for user, target in op.objects:
                writes.setdefault(user, []).append((op, target))
    verdict = Verdict()
    for user in sorted(set(writes) | set(final)):
        verdict.users_checked += 1
        on_user = writes.get(user, [])
        acknowledged = [op for op, _ in on_user if op.outcome == "ok"]
        latest_start = max((op.started for op in acknowledged), default=-math.inf)
        allowed = {target for op, target in on_user if not latest_start > op.ended}
        if not acknowledged:
            allowed.add(None)
        value = final.get(user)
        if value not in allowed:
            verdict.unexplained[user] = (
                f"final {value!r}, allowed {sorted(map(repr, allowed))} "
                f"({len(acknowledged)} acknowledged writes)"
            )
            verdict.lost_acknowledged += max(
                1, sum(1 for op in acknowledged if not latest_start > op.ended)
            )
    return verdict


def cycles(mappings: Mapping[str, str]) -> list[list[str]]:
    """The cycles of a user -> global graph (there must be none)."""
    found: list[list[str]] = []
    done: set[str] = set()
    for start in mappings:
        path: list[str] = []
        seen: set[str] = set()
        user: str | None = start
        while user is not None and user not in done:
            if user in seen:
                found.append(path[path.index(user) :])
                break
            seen.add(user)
            path.append(user)
            user = mappings.get(user)
        done.update(path)
    return found


def org_state(base_url: str, org: str, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One org's `mappings` and `amplitude_ids` from GET /_emulator/state (empty if unseen)."""
    with httpx.Client(base_url=base_url, timeout=30, headers=headers) as http:
        response = http.get("/_emulator/state")
        assert response.status_code == 200, response.text
        for entry in response.json()["orgs"]:
            if entry["name"] == org:
                return {"mappings": entry["mappings"], "amplitude_ids": entry["amplitude_ids"]}
    return {"mappings": {}, "amplitude_ids": {}}


# --- figures ------------------------------------------------------------------------------------


def record_figures(key: str, title: str, figures: Mapping[str, object]) -> None:
    """Print the figures; with RELIABILITY_FIGURES=write, also keep them in
    docs/reliability.md, in the block marked `key`.

    The block is replaced on each such run (each run's own block for a soak), so the document
    shows the last recorded run. Without the variable a test run leaves the checkout untouched.
    """
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"**{title}** (last run {stamp}):", ""]
    lines += [f"- {name}: {value}" for name, value in figures.items()]
    text = "\n".join(lines)
    print(f"\n{text}\n", flush=True)
    if os.environ.get(RECORD_FIGURES_ENV) != "write":
        return
    start, end = f"<!-- figures:{key} -->", f"<!-- /figures:{key} -->"
    try:
        with FIGURES_DOC.open("a+", encoding="utf-8") as doc:
            fcntl.flock(doc, fcntl.LOCK_EX)  # pytest-xdist workers may finish together
            doc.seek(0)
            document = doc.read()
            block = f"{start}\n{text}\n{end}"
            before, found, after = document.partition(start)
            if found and end in after:
                document = before + block + after.split(end, 1)[1]
            else:
                document = document.rstrip("\n") + f"\n\n{block}\n"
            doc.seek(0)
            doc.truncate()
            doc.write(document)
    except OSError as error:
        print(f"(docs/reliability.md not updated: {error})", flush=True)
