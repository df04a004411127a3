"""Concurrency: many clients at once on overlapping users (issue 6, item 2).

In memory and on a file: no 5xx and no "database is locked" ever reaches a client; every read is
a consistent snapshot; the final state is what some serial order of the acknowledged writes
leaves (per user, the value of a write no acknowledged write followed; no cycle; amplitude ids
exactly for the ids acknowledged batches named, 1..n with none skipped or given twice); and the
rate limiter admits exactly what the window allows however many requests race for it.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.server import ServerThread
from emulator.settings import Limits, Settings
from tests.conftest import StartEmulator
from tests.reliability import (
    READ,
    USERMAP,
    WriteOp,
    cycles,
    org_state,
    record_figures,
    unexplained_users,
)

API_KEYS = ("concurrency-a", "concurrency-b")  # two orgs, written at the same time
USERS = [f"u{i}" for i in range(6)]
GLOBALS = ["g0", "g1"]
CYCLE_REFUSAL = {"code": 400, "error": "Invalid mapping"}
TOO_MANY = {"code": 429, "error": "Too many requests"}


@dataclass(frozen=True)
class Plan:
    writers: int
    readers: int
    batches_per_writer: int
    time_limit: float


FAST = Plan(writers=12, readers=3, batches_per_writer=40, time_limit=60)
SOAK = Plan(writers=24, readers=6, batches_per_writer=1500, time_limit=900)


@dataclass
class Run:
    ops: dict[str, list[WriteOp]]
    reads: int = 0
    control_reads: int = 0
    statuses: Counter[int] = field(default_factory=Counter)


def random_batch(rng: random.Random) -> tuple[tuple[str, str | None], ...]:
    objects: list[tuple[str, str | None]] = []
    for user in rng.sample(USERS, rng.randint(1, 3)):
        roll = rng.random()
        if roll < 0.25:
            objects.append((user, None))
        elif roll < 0.75:
            objects.append((user, rng.choice([u for u in USERS if u != user])))
        else:
            objects.append((user, rng.choice(GLOBALS)))
    return tuple(objects)


def check_snapshot(body: dict[str, Any], requested: list[str]) -> list[str]:
    """What is wrong with one read: each side of an edge must mirror the other."""
    problems: list[str] = []
    if set(body) != set(requested):
        return [f"answered {sorted(body)} for {sorted(requested)}"]
    for user, entry in body.items():
        mapped_to = entry["mapped_to"]
        if len(mapped_to) > 1:
            problems.append(f"{user} has {len(mapped_to)} globals")
        for edge in mapped_to:
            target = body.get(edge["user_id"])
            if target is not None:
                if user not in [e["user_id"] for e in target["mapped_from"]]:
                    problems.append(f"{user} -> {edge['user_id']} not mirrored")
                if target.get("amplitude_id") != edge["amplitude_id"]:
                    problems.append(f"{edge['user_id']} has two amplitude_ids in one answer")
        for edge in entry["mapped_from"]:
            source = body.get(edge["user_id"])
            if source is not None and [e["user_id"] for e in source["mapped_to"]] != [user]:
                problems.append(f"{edge['user_id']} in {user}'s mapped_from, not mapped to it")
    return problems


class Clients:
    """Writer, reader and control threads against one server; every problem is collected."""

    def __init__(self, server: ServerThread, plan: Plan, seed: int) -> None:
        self.base_url = server.base_url
        self.plan = plan
        self.seed = seed
        self.lock = threading.Lock()
        self.writers_done = threading.Event()
        self.problems: list[str] = []
        self.run = Run(ops={key: [] for key in API_KEYS})
        self.deadline = time.monotonic() + plan.time_limit
        self.start = threading.Barrier(plan.writers + plan.readers + 1)

    def note(self, response: httpx.Response) -> None:
        with self.lock:
            self.run.statuses[response.status_code] += 1
            if response.status_code >= 500 or "locked" in response.text.lower():
                self.problems.append(
                    f"{response.request.method} {response.request.url.path} -> "
                    f"{response.status_code} {response.text[:200]}"
                )

    def guarded(self, work: Callable[[httpx.Client, random.Random], None], index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        try:
            with httpx.Client(base_url=self.base_url, timeout=30) as http:
                self.start.wait(timeout=30)
                work(http, rng)
        except Exception as error:  # collected, reported by the test
            with self.lock:
                self.problems.append(f"thread {index}: {error!r}")

    def write(self, http: httpx.Client, rng: random.Random) -> None:
        for _ in range(self.plan.batches_per_writer):
            if time.monotonic() > self.deadline:
                return
            key = rng.choice(API_KEYS)
            op = WriteOp(random_batch(rng), started=time.monotonic())
            transport = rng.choice(["form", "query"])
            if transport == "form":
                response = http.post(USERMAP, data={"api_key": key, "mapping": op.mapping()})
            else:
                response = http.post(USERMAP, params={"api_key": key, "mapping": op.mapping()})
            op.ended = time.monotonic()
            self.note(response)
            body = response.json()
            if response.status_code == 200 and body == {"code": 200}:
                op.outcome = "ok"
            elif (
                response.status_code == 400
                and {k: body.get(k) for k in ("code", "error")} == CYCLE_REFUSAL
            ):
                op.outcome = "refused"
            else:
                with self.lock:
                    self.problems.append(f"write: {response.status_code} {response.text[:200]}")
                continue
            with self.lock:
                self.run.ops[key].append(op)

    def read(self, http: httpx.Client, rng: random.Random) -> None:
        while not self.writers_done.is_set() and time.monotonic() < self.deadline:
            key = rng.choice(API_KEYS)
            if rng.random() < 0.1:
                response = http.get("/_emulator/state")
                self.note(response)
                with self.lock:
                    self.run.control_reads += 1
                continue
            requested = rng.sample(USERS + GLOBALS, rng.randint(1, len(USERS) + len(GLOBALS)))
            response = http.get(READ, params={"user_ids": requested}, auth=(key, "secret"))
            self.note(response)
            problems = (
                check_snapshot(response.json(), requested)
                if response.status_code == 200
                else [f"read: {response.status_code} {response.text[:200]}"]
            )
            with self.lock:
                self.run.reads += 1
                self.problems.extend(problems)


def run_clients(server: ServerThread, plan: Plan, seed: int) -> tuple[Run, list[str], float]:
    clients = Clients(server, plan, seed)
    writers = [
        threading.Thread(target=clients.guarded, args=(clients.write, index))
        for index in range(plan.writers)
    ]
    readers = [
        threading.Thread(target=clients.guarded, args=(clients.read, plan.writers + index))
        for index in range(plan.readers)
    ]
    for thread in writers + readers:
        thread.start()
    clients.start.wait(timeout=30)
    started = time.monotonic()
    for thread in writers:
        thread.join(timeout=plan.time_limit + 30)
    clients.writers_done.set()
    for thread in readers:
        thread.join(timeout=60)
    elapsed = time.monotonic() - started
    assert not any(thread.is_alive() for thread in writers + readers), "a client hung"
    return clients.run, clients.problems, elapsed


@pytest.mark.parametrize("database", ["memory", "file"])
def test_concurrent_clients_leave_a_serial_state(tmp_path: Path, soak: bool, database: str) -> None:
    plan = SOAK if soak else FAST
    seed = random.randrange(1 << 32)
    url = "sqlite://" if database == "memory" else f"sqlite:///{tmp_path / 'concurrency.db'}"
    settings = Settings(
        port=0, log_level="warning", database_url=url, limits=Limits(rate_limit=None)
    )
    with ServerThread(settings) as server:
        run, problems, elapsed = run_clients(server, plan, seed)
        states = {key: org_state(server.base_url, key) for key in API_KEYS}

    assert not problems, problems[:10]
    total = 0
    acknowledged = 0
    for key in API_KEYS:
        ops, state = run.ops[key], states[key]
        total += len(ops)
        acknowledged += sum(1 for op in ops if op.outcome == "ok")
        verdict = unexplained_users(ops, state["mappings"])
        assert not verdict.unexplained, (key, verdict.unexplained)
        assert not cycles(state["mappings"]), key
        named = {
            user
            for op in ops
            if op.outcome == "ok"
            for pair in op.objects
            for user in pair
            if user is not None
        }
        ids: dict[str, int] = state["amplitude_ids"]
        assert set(ids) == named, (key, set(ids) ^ named)
        assert sorted(ids.values()) == list(range(1, len(ids) + 1)), key
    assert acknowledged > 0
    assert run.reads > 0
    record_figures(
        f"concurrency-{database}-{'soak' if soak else 'fast'}",
        f"Concurrency, {database} database ({'soak' if soak else 'default'} run, seed {seed})",
        {
            "concurrent clients": f"{plan.writers} writers, {plan.readers} readers, 2 orgs",
            "write batches": f"{total} ({acknowledged} acknowledged, the rest refused cycles)",
            "reads": f"{run.reads} (each a consistent snapshot) + {run.control_reads} state",
            "load held": f"{(total + run.reads + run.control_reads) / elapsed:.0f} requests/s",
            "5xx or 'database is locked'": 0,
            "statuses": dict(sorted(run.statuses.items())),
        },
    )


def race(
    server: ServerThread, api_keys: tuple[str, ...], threads: int, per_thread: int, batch: int
) -> dict[str, Counter[int]]:
    """`threads` clients per key released at once, each sending `per_thread` batches of `batch`
    maps; the statuses each key got."""
    statuses: dict[str, Counter[int]] = {key: Counter() for key in api_keys}
    problems: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads * len(api_keys))

    def client(api_key: str, index: int) -> None:
        try:
            with httpx.Client(base_url=server.base_url, timeout=30) as http:
                barrier.wait(timeout=30)
                for round_ in range(per_thread):
                    mapping = json.dumps(
                        [
                            {"user_id": f"t{index}-r{round_}-o{o}", "global_user_id": "g"}
                            for o in range(batch)
                        ]
                    )
                    response = http.post(USERMAP, data={"api_key": api_key, "mapping": mapping})
                    with lock:
                        statuses[api_key][response.status_code] += 1
                        if response.status_code == 429:
                            retry_after = response.headers.get("retry-after", "")
                            body = response.json()
                            if {k: body.get(k) for k in TOO_MANY} != TOO_MANY or not (
                                retry_after.isdigit() and int(retry_after) >= 1
                            ):
                                problems.append(f"429 {response.headers} {response.text}")
                        elif response.status_code != 200:
                            problems.append(f"{response.status_code} {response.text}")
        except Exception as error:  # collected, reported below
            with lock:
                problems.append(repr(error))

    workers = [
        threading.Thread(target=client, args=(key, index))
        for key in api_keys
        for index in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not any(worker.is_alive() for worker in workers)
    assert not problems, problems[:5]
    return statuses


@pytest.mark.parametrize("batch", [1, 7])
def test_rate_limiter_admits_exactly_the_window(start_emulator: StartEmulator, batch: int) -> None:
    limit, window, threads, per_thread = 40, 30.0, 16, 8
    server = start_emulator(limits=Limits(rate_limit=limit, rate_window_seconds=window))
    clock = server.app.state.backend.clock
    clock.freeze()  # no object ages out of the window while the requests race
    # "Admitted while the count is below the limit": with batches of k, ceil(limit / k) of them.
    expected = math.ceil(limit / batch)
    sent = threads * per_thread
    results = race(server, API_KEYS, threads, per_thread, batch)
    assert results == {key: Counter({200: expected, 429: sent - expected}) for key in API_KEYS}
    # A window later each org is admitted again, exactly as much.
    clock.advance(window)
    again = race(server, API_KEYS, threads, per_thread, batch)
    assert again == results
    record_figures(
        f"rate-limit-batch-{batch}",
        f"Rate limiter under concurrency, batches of {batch}",
        {
            "racing clients": f"{threads} threads per org, 2 orgs at once, {per_thread} "
            "requests each, clock frozen",
            "admitted per org and window": f"{expected} requests ({expected * batch} objects, "
            f"limit {limit}), in two consecutive windows",
            "over-admissions": 0,
        },
    )
