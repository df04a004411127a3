"""Graceful shutdown: SIGTERM lets in-flight requests finish (issue 6, item 6).

Five POST /usermap requests are held in flight by a latency fault rule (500 ms each); SIGTERM
arrives while all five are held. The server stops accepting connections at once, answers all five
with 200, and exits; started again on the same file it has all five mappings, and the database
passes `PRAGMA integrity_check`.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path

import httpx

from tests.reliability import (
    READ,
    USERMAP,
    integrity_check,
    record_figures,
    sqlite_process,
)

API_KEY = "shutdown-key"
IN_FLIGHT = 5
LATENCY_MS = 500


def test_sigterm_lets_in_flight_requests_finish(tmp_path: Path) -> None:
    database = tmp_path / "shutdown.db"
    process = sqlite_process(database, log_dir=tmp_path)
    answers: dict[int, tuple[int, object, float]] = {}
    errors: list[str] = []

    def send(index: int, base_url: str) -> None:
        mapping = json.dumps({"user_id": f"in-flight-{index}", "global_user_id": "g"})
        try:
            with httpx.Client(base_url=base_url, timeout=20) as http:
                response = http.post(USERMAP, data={"api_key": API_KEY, "mapping": mapping})
            answers[index] = (response.status_code, response.json(), time.monotonic())
        except httpx.HTTPError as error:
            errors.append(f"{index}: {error!r}")

    try:
        process.start()
        base_url = process.base_url
        address = process.address
        with httpx.Client(base_url=base_url, timeout=10) as http:
            rule = http.post(
                "/_emulator/faults",
                json={
                    "match": {"path": USERMAP},
                    "effect": {"latency_ms": LATENCY_MS},
                    "times": IN_FLIGHT,
                },
            )
            assert rule.status_code == 201, rule.text
            senders = [
                threading.Thread(target=send, args=(index, base_url)) for index in range(IN_FLIGHT)
            ]
            for sender in senders:
                sender.start()
            # The rule is spent (removed) once all five requests are held by it.
            deadline = time.monotonic() + 5
            while http.get("/_emulator/faults").json()["faults"]:
                assert time.monotonic() < deadline, "the requests never reached the server"
                time.sleep(0.005)
        assert process.process is not None
        terminated_at = time.monotonic()
        process.process.send_signal(signal.SIGTERM)

        refused_at: float | None = None
        while process.running() and time.monotonic() - terminated_at < 15:
            try:
                socket.create_connection(address, timeout=1).close()
            except OSError:
                refused_at = time.monotonic()
                break
            time.sleep(0.01)
        for sender in senders:
            sender.join(timeout=20)
        exit_status = process.process.wait(timeout=20)
        exited_at = time.monotonic()

        assert not errors, errors
        assert sorted(answers) == list(range(IN_FLIGHT))
        for status, body, answered_at in answers.values():
            assert (status, body) == (200, {"code": 200})
            assert answered_at > terminated_at  # still in flight when SIGTERM came
        assert refused_at is not None, "the server kept accepting connections after SIGTERM"
        assert refused_at < min(answered_at for _, _, answered_at in answers.values())
        assert exit_status in (0, -signal.SIGTERM), exit_status

        assert integrity_check(database) == ["ok"]
        process.start()
        users = [f"in-flight-{index}" for index in range(IN_FLIGHT)]
        with httpx.Client(base_url=process.base_url, timeout=10) as http:
            read = http.get(READ, params={"user_ids": users}, auth=(API_KEY, "s"))
        assert read.status_code == 200, read.text
        for user in users:
            assert [edge["user_id"] for edge in read.json()[user]["mapped_to"]] == ["g"], user
        assert process.terminate() in (0, -signal.SIGTERM)
        assert integrity_check(database) == ["ok"]
    finally:
        process.stop()
    record_figures(
        "graceful-shutdown",
        "Graceful shutdown",
        {
            "requests in flight at SIGTERM": f"{IN_FLIGHT} (held {LATENCY_MS} ms by a fault rule)",
            "answered 200 and on disk after restart": len(answers),
            "new connections refused after": f"{(refused_at - terminated_at) * 1000:.0f} ms",
            "process exited after": f"{exited_at - terminated_at:.2f} s",
        },
    )
