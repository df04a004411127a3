"""The measurements, one function per target of issue 7; each returns Figures.

Servers run as subprocesses pinned to core 0; this process (the client) and wrk run on core 1.
Every figure is the median over `runs` repetitions; throughput figures are ratios to the
baseline (bench/baseline.py) measured in the same run, interleaved with the emulator's.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import servers, wrk
from bench.config import Config
from bench.http import API_KEY, HttpClient
from bench.results import Figure, ms, ratio, secs
from bench.servers import Server
from bench.stats import median, percentile


@dataclass(slots=True)
class Context:
    config: Config
    workdir: Path  # database files and scratch
    wrk: str | None  # None: the wrk measurements are skipped

    def file_db(self, name: str) -> str:
        return servers.file_database(self.workdir, name)


@contextmanager
def running(server: Server) -> Iterator[Server]:
    try:
        yield server
    finally:
        server.stop()


def _load_graph(client: HttpClient, mappings: int, batch_size: int, prefix: str = "") -> None:
    """`mappings` users u{i} mapped into globals g{i // 2}, sent in batches over HTTP."""
    for start in range(0, mappings, batch_size):
        end = min(start + batch_size, mappings)
        client.map((f"{prefix}u{i}", f"{prefix}g{i // 2}") for i in range(start, end))


def _graph_document(mappings: int) -> dict[str, Any]:
    """A state document (PUT /_emulator/state) of the same graph in the org of API_KEY."""
    return {
        "orgs": [
            {
                "name": API_KEY,
                "projects": [],
                "amplitude_ids": {},
                "mappings": {f"u{i}": f"g{i // 2}" for i in range(mappings)},
            }
        ]
    }


# --- start-up ----------------------------------------------------------------------------------


def _first_answer(server: Server) -> float:
    """Seconds from starting the process to the answer of its first POST /usermap."""
    with HttpClient(server.base_url) as client:
        client.map([("first-user", "first-global")])
    return time.perf_counter() - server.launched_at


def measure_start(context: Context) -> list[Figure]:
    servers.warm_bytecode()
    runs = context.config.start_runs
    emulator_times: list[float] = []
    baseline_times: list[float] = []
    idle_rss: list[float] = []
    baseline_rss: list[float] = []
    for _ in range(runs):
        # `amplitude-emulator serve` as a user starts it: in-memory database, default limits.
        with running(servers.launch("emulator", servers.emulator_command())) as server:
            emulator_times.append(_first_answer(server))
            idle_rss.append(server.rss_mb())
        with running(servers.baseline("--uvicorn-defaults")) as server:
            baseline_times.append(_first_answer(server))
            baseline_rss.append(server.rss_mb())
    start, base = median(emulator_times), median(baseline_times)
    rss, base_rss = median(idle_rss), median(baseline_rss)
    return [
        Figure(
            "`amplitude-emulator serve` to first answered request",
            "median < 0.8 s",
            secs(start),
            f"bare FastAPI app {secs(base)} ({ratio(start / base)})",
            start < 0.8,
            f"{runs} starts each; from starting the process to the answer of its first POST "
            "/usermap; the bare FastAPI app is bench/baseline.py on uvicorn's defaults",
            {"emulator_s": emulator_times, "baseline_s": baseline_times},
        ),
        Figure(
            "memory: idle RSS",
            "< 80 MB",
            f"{rss:.1f} MB",
            f"bare FastAPI app {base_rss:.1f} MB",
            rss < 80,
            "`serve` (in-memory database) right after its first answer",
            {"emulator_mb": idle_rss, "baseline_mb": baseline_rss},
        ),
    ]


_FIXTURE_CONFTEST = """
import json
import os
import time

import pytest

SETUP = []
SERVER = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    started = time.perf_counter()
    yield
    SETUP.append(time.perf_counter() - started)


@pytest.fixture(autouse=True)
def _record(amplitude_emulator_server):
    yield
    SERVER["import_s"] = amplitude_emulator_server.import_seconds
    SERVER["startup_s"] = amplitude_emulator_server.startup_seconds
    SERVER["reset_s"] = list(amplitude_emulator_server.reset_seconds)


def pytest_sessionfinish(session):
    with open(os.environ["BENCH_FIXTURE_OUT"], "w") as out:
        json.dump({"setup_s": SETUP, **SERVER}, out)
"""

_FIXTURE_TEST = """
import pytest


@pytest.mark.parametrize("number", range({tests}))
def test_maps(amplitude_emulator, number):
    for user in range(5):
        amplitude_emulator.map(f"user-{{number}}-{{user}}", f"global-{{number}}")
    amplitude_emulator.assert_mapped(f"user-{{number}}-0", f"global-{{number}}")
"""


def measure_fixture(context: Context) -> list[Figure]:
    servers.warm_bytecode()
    config = context.config
    ready: list[float] = []
    own: list[float] = []
    resets: list[float] = []
    for run in range(config.fixture_runs):
        directory = context.workdir / f"fixture-{run}"
        directory.mkdir()
        (directory / "conftest.py").write_text(_FIXTURE_CONFTEST, encoding="utf-8")
        (directory / "test_fixture.py").write_text(
            _FIXTURE_TEST.format(tests=config.fixture_tests), encoding="utf-8"
        )
        out = directory / "out.json"
        environment = {**servers.clean_environment(), "BENCH_FIXTURE_OUT": str(out)}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        done = subprocess.run(
            servers.pinned([*command, "--rootdir", str(directory), str(directory)], 0),
            cwd=directory,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the fixture run failed:\n{done.stdout[-3000:]}{done.stderr}")
        data = json.loads(out.read_text(encoding="utf-8"))
        ready.append(data["setup_s"][0])
        own.append(data["import_s"] + data["startup_s"])
        resets.extend(data["reset_s"][1:])  # after the first test there is state to wipe
    first = median(ready)
    reset = median(resets)
    return [
        Figure(
            "session fixture ready (pytest plugin)",
            "< 0.5 s",
            secs(first),
            f"{secs(median(own))} of it: importing and starting the server",
            first < 0.5,
            f"pytest runs: {config.fixture_runs}; setup of the first test (session fixture "
            "start + first reset)",
            {"first_setup_s": ready, "server_import_and_start_s": own},
        ),
        Figure(
            "reset between tests (plugin, in-process)",
            "",
            ms(reset),
            "",
            None,
            f"{len(resets)} resets, each after a test that mapped 5 users",
            {"reset_s": resets},
        ),
    ]


# --- reset --------------------------------------------------------------------------------------


def measure_reset(context: Context) -> list[Figure]:
    config = context.config
    small: list[float] = []
    big: list[float] = []
    loads: list[float] = []
    document = _graph_document(config.reset_big_mappings)
    with (
        running(servers.emulator(context.file_db("reset"))) as server,
        HttpClient(server.base_url) as client,
    ):
        for run in range(config.reset_runs):
            client.map((f"r{run}-u{i}", f"r{run}-g") for i in range(10))
            small.append(client.control("POST", "/reset")[1])
        for _ in range(config.reset_big_runs):
            summary, seconds = client.control("PUT", "/state", document)
            assert summary["mappings"] == config.reset_big_mappings, summary
            loads.append(seconds)
            big.append(client.control("POST", "/reset")[1])
    size = f"{config.reset_big_mappings // 1000}k"
    return [
        Figure(
            "reset with a small state",
            "< 5 ms",
            ms(median(small)),
            "",
            median(small) < 0.005,
            f"POST /_emulator/reset over HTTP, file database, 10 mappings; runs: {len(small)}",
            {"reset_s": small},
        ),
        Figure(
            f"reset with {size} mappings",
            "< 200 ms",
            ms(median(big)),
            f"loading them (PUT /_emulator/state): {secs(median(loads))}",
            median(big) < 0.2,
            f"POST /_emulator/reset over HTTP, file database; runs: {len(big)}",
            {"reset_s": big, "load_s": loads},
        ),
    ]


# --- throughput (wrk) ----------------------------------------------------------------------------


def _wrk(context: Context, server: Server, lua: str, connections: int, label: str) -> wrk.WrkResult:
    assert context.wrk is not None
    result = wrk.run(
        context.wrk,
        server.base_url,
        lua,
        connections=connections,
        seconds=context.config.wrk_seconds,
        arguments=(label,),
    )
    if result.errors:
        raise RuntimeError(f"{server.name}: {result.errors} errors under wrk ({label})")
    return result


def _warm_up(context: Context, server: Server, lua: str) -> None:
    if context.config.wrk_warmup_seconds > 0 and context.wrk is not None:
        wrk.run(
            context.wrk,
            server.base_url,
            lua,
            connections=16,
            seconds=context.config.wrk_warmup_seconds,
            arguments=("warm",),
        )


def measure_throughput(context: Context) -> list[Figure]:
    config = context.config
    post = wrk.script(wrk.POST_SINGLE)
    get = wrk.script(wrk.GET_TWO, a="ua", b="ub")
    rps: dict[str, list[float]] = {
        name: [] for name in ("base_post", "mem_post", "file_post", "base_get", "file_get")
    }
    rps["mem_get"] = []
    ceiling: list[float] = []
    ratios: dict[str, list[float]] = {"mem_post": [], "file_post": [], "file_get": []}
    with (
        running(servers.baseline()) as base,
        running(servers.emulator("sqlite://")) as memory,
        running(servers.emulator(context.file_db("throughput"))) as file,
        running(servers.launch("ceiling", [sys.executable, "-m", "bench.ceiling"])) as nothing,
    ):
        for server in (memory, file):
            with HttpClient(server.base_url) as client:
                client.map([("ua", "ub")])
        for server in (base, memory, file):
            _warm_up(context, server, post)
            _warm_up(context, server, get)
        for run in range(config.wrk_runs):
            label = f"run{run}"
            base_post = _wrk(context, base, post, 16, label).rps
            mem_post = _wrk(context, memory, post, 16, label).rps
            file_post = _wrk(context, file, post, 16, label).rps
            base_get = _wrk(context, base, get, 16, label).rps
            file_get = _wrk(context, file, get, 16, label).rps
            mem_get = _wrk(context, memory, get, 16, label).rps
            ceiling.append(_wrk(context, nothing, post, 16, label).rps)
            for name, value in (
                ("base_post", base_post),
                ("mem_post", mem_post),
                ("file_post", file_post),
                ("base_get", base_get),
                ("file_get", file_get),
                ("mem_get", mem_get),
            ):
                rps[name].append(value)
            ratios["mem_post"].append(mem_post / base_post)
            ratios["file_post"].append(file_post / base_post)
            ratios["file_get"].append(file_get / base_get)
    note = f"wrk -t2 -c16, {config.wrk_runs} x {config.wrk_seconds:g} s, ratio per run"
    mem_ratio = median(ratios["mem_post"])
    file_ratio = median(ratios["file_post"])
    get_ratio = median(ratios["file_get"])
    return [
        Figure(
            "baseline (bare FastAPI): single-mapping POST, 16 connections",
            "",
            f"{median(rps['base_post']):.0f} req/s",
            f"wrk's ceiling with the same script: {median(ceiling):.0f} req/s",
            None,
            note,
            {"rps": rps["base_post"], "generator_ceiling_rps": ceiling},
        ),
        Figure(
            "single-mapping POST, 16 connections, in-memory database",
            ">= 0.75x baseline (stretch 0.95x)",
            f"{median(rps['mem_post']):.0f} req/s",
            ratio(mem_ratio),
            mem_ratio >= 0.75,
            note,
            {"rps": rps["mem_post"], "ratio": ratios["mem_post"]},
        ),
        Figure(
            "single-mapping POST, 16 connections, file database",
            ">= 0.75x baseline (stretch 0.95x)",
            f"{median(rps['file_post']):.0f} req/s",
            ratio(file_ratio),
            file_ratio >= 0.75,
            note,
            {"rps": rps["file_post"], "ratio": ratios["file_post"]},
        ),
        Figure(
            "baseline (bare FastAPI): GET of 2 ids, 16 connections",
            "",
            f"{median(rps['base_get']):.0f} req/s",
            "",
            None,
            note,
            {"rps": rps["base_get"]},
        ),
        Figure(
            "GET /api/2/usermap of 2 ids, 16 connections",
            ">= 1.00x baseline",
            f"{median(rps['file_get']):.0f} req/s",
            ratio(get_ratio) + f" (in-memory: {median(rps['mem_get']):.0f} req/s)",
            get_ratio >= 1.0,
            note,
            {"rps": rps["file_get"], "ratio": ratios["file_get"], "mem_rps": rps["mem_get"]},
        ),
    ]


# --- mixed load ----------------------------------------------------------------------------------


def measure_mixed(context: Context) -> list[Figure]:
    """The mixed load on the emulator, and the same requests on the baseline in the same run
    (its p99 shows how much of the tail is the machine's: 32 connections on one core)."""
    config = context.config
    lua = wrk.script(wrk.MIXED)
    results: list[wrk.WrkResult] = []
    base_results: list[wrk.WrkResult] = []
    assert context.wrk is not None
    wrk_path = context.wrk

    def load(server: Server, label: str) -> wrk.WrkResult:
        return wrk.run(
            wrk_path,
            server.base_url,
            lua,
            connections=32,
            seconds=config.wrk_seconds,
            arguments=(label,),
        )

    with (
        running(servers.emulator(context.file_db("mixed"))) as server,
        running(servers.baseline()) as base,
    ):
        _warm_up(context, server, lua)
        _warm_up(context, base, lua)
        for run in range(config.wrk_runs):
            results.append(load(server, f"run{run}"))
            base_results.append(load(base, f"run{run}"))
    errors = sum(result.errors for result in results)
    p99 = median([result.p99_ms for result in results])
    base_p99 = median([result.p99_ms for result in base_results])
    return [
        Figure(
            "32 concurrent connections mixing map, unmap, read",
            "zero errors; single-mapping p99 < 50 ms",
            f"{errors} errors; p99 {p99:.1f} ms",
            f"{median([result.rps for result in results]):.0f} req/s, "
            f"p50 {median([result.p50_ms for result in results]):.1f} ms; baseline p99 "
            f"{base_p99:.1f} ms at {median([result.rps for result in base_results]):.0f} req/s",
            errors == 0 and p99 < 50,
            f"wrk -t2 -c32, {config.wrk_runs} x {config.wrk_seconds:g} s, file database; "
            "a third each: map one object, unmap one object, read two ids; the baseline "
            "answers the same requests",
            {
                "errors": [result.errors for result in results],
                "p99_ms": [result.p99_ms for result in results],
                "rps": [result.rps for result in results],
                "baseline_p99_ms": [result.p99_ms for result in base_results],
                "baseline_rps": [result.rps for result in base_results],
                "baseline_errors": [result.errors for result in base_results],
            },
        )
    ]


# --- batches --------------------------------------------------------------------------------------


def measure_batch(context: Context) -> list[Figure]:
    config = context.config
    p50s: list[float] = []
    p99s: list[float] = []
    size = config.batch_size
    with (
        running(servers.emulator(context.file_db("batch"))) as server,
        HttpClient(server.base_url) as client,
    ):
        for warm in range(2):
            client.map((f"w{warm}-u{i}", f"w{warm}-g{i // 2}") for i in range(size))
        for run in range(config.batch_runs):
            samples = [
                client.map((f"b{run}-{k}-u{i}", f"b{run}-{k}-g{i // 2}") for i in range(size))
                for k in range(config.batches_per_run)
            ]
            p50s.append(percentile(samples, 50))
            p99s.append(percentile(samples, 99))
    p50, p99 = median(p50s), median(p99s)
    return [
        Figure(
            f"{size}-object batch POST",
            "p50 < 40 ms, p99 < 80 ms",
            f"p50 {ms(p50)}, p99 {ms(p99)}",
            "",
            p50 < 0.040 and p99 < 0.080,
            f"file database, new users into new globals; runs x batches: {config.batch_runs} x "
            f"{config.batches_per_run}, one connection",
            {"p50_s": p50s, "p99_s": p99s},
        )
    ]


# --- reads on a large graph -----------------------------------------------------------------------


def measure_read_scale(context: Context) -> list[Figure]:
    config = context.config
    rng = random.Random(7)
    small_p50: list[float] = []
    large_p50: list[float] = []
    with (
        running(servers.emulator(context.file_db("graph-small"))) as small,
        running(servers.emulator(context.file_db("graph-large"))) as large,
        HttpClient(small.base_url) as small_client,
        HttpClient(large.base_url) as large_client,
    ):
        _load_graph(small_client, config.graph_small, config.batch_size)
        _load_graph(large_client, config.graph_large, config.batch_size)
        loaded_rss = large.rss_mb()

        def ids(mappings: int) -> list[str]:
            users = [f"u{rng.randrange(mappings)}" for _ in range(50)]
            globals_ = [f"g{rng.randrange(mappings // 2)}" for _ in range(50)]
            return list(dict.fromkeys(users + globals_))[:100]

        for _ in range(3):  # warm both
            small_client.read(ids(config.graph_small))
            large_client.read(ids(config.graph_large))
        for _ in range(config.read_runs):
            small_samples: list[float] = []
            large_samples: list[float] = []
            for _ in range(config.reads_per_run):  # interleaved, so noise hits both alike
                document, seconds = small_client.read(ids(config.graph_small))
                small_samples.append(seconds)
                document, seconds = large_client.read(ids(config.graph_large))
                large_samples.append(seconds)
                assert len(document) >= 50
            small_p50.append(percentile(small_samples, 50))
            large_p50.append(percentile(large_samples, 50))
        after_rss = large.rss_mb()
    p50_small, p50_large = median(small_p50), median(large_p50)
    scale = p50_large / p50_small
    size = _count(config.graph_large)
    return [
        Figure(
            f"GET of 100 ids on a graph of {size} mappings",
            "p50 < 10 ms; within 1.5x of p50 at 1k",
            f"p50 {ms(p50_large)}",
            f"p50 at {_count(config.graph_small)}: {ms(p50_small)} ({ratio(scale)})",
            p50_large < 0.010 and scale <= 1.5,
            f"file database; users u{{i}} mapped into g{{i/2}}; 50 random users + 50 random "
            f"globals per GET; runs x GETs: {config.read_runs} x {config.reads_per_run}",
            {"p50_large_s": large_p50, "p50_small_s": small_p50},
        ),
        Figure(
            f"memory: RSS after loading {size} mappings",
            "< 200 MB",
            f"{max(loaded_rss, after_rss):.1f} MB",
            "",
            max(loaded_rss, after_rss) < 200,
            f"file database, loaded as {config.batch_size}-object POSTs; after the reads",
            {"loaded_mb": loaded_rss, "after_reads_mb": after_rss},
        ),
    ]


def _count(mappings: int) -> str:
    if mappings >= 1_000_000 and mappings % 1_000_000 == 0:
        return f"{mappings // 1_000_000:,}M"
    if mappings >= 1000 and mappings % 1000 == 0:
        return f"{mappings // 1000}k"
    return str(mappings)


# --- the journal ----------------------------------------------------------------------------------


def measure_journal(context: Context) -> list[Figure]:
    config = context.config
    capacity = config.journal_size
    padding = "x" * 8192  # over the journal's 4 KiB per body, so bodies are cut
    with (
        running(servers.emulator("sqlite://", "--journal-size", str(capacity))) as server,
        HttpClient(server.base_url) as client,
    ):

        def send(count: int, offset: int) -> None:
            for number in range(offset, offset + count):
                body = json.dumps([{"user_id": f"j{number}", "global_user_id": "jg"}])
                form = f"api_key={API_KEY}&pad={padding}&mapping={_quote(body)}".encode()
                client.checked(
                    "POST",
                    "/usermap",
                    form,
                    {"Content-Type": "application/x-www-form-urlencoded"},
                )

        first = max(capacity * 3 // 2, config.journal_requests // 3)
        send(first, 0)
        full_rss = server.rss_mb()
        send(config.journal_requests - first, first)
        end_rss = server.rss_mb()
        entries = client.control("GET", "/requests")[0]["requests"]
    growth = end_rss - full_rss
    bounded = len(entries) == capacity and growth < 5
    return [
        Figure(
            "memory: a full request journal",
            "bounded",
            f"{len(entries)} entries kept of {config.journal_requests} requests",
            f"RSS {full_rss:.1f} MB once full, {end_rss:.1f} MB after "
            f"{config.journal_requests - first} more ({growth:+.1f} MB)",
            bounded,
            f"--journal-size {capacity}, 8 KiB request bodies (the journal keeps 4 KiB of each)",
            {"full_mb": full_rss, "end_mb": end_rss, "entries": len(entries)},
        )
    ]


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


@dataclass(frozen=True, slots=True)
class Measurement:
    name: str
    needs_wrk: bool
    run: Callable[[Context], list[Figure]]


MEASUREMENTS: tuple[Measurement, ...] = (
    Measurement("start", False, measure_start),
    Measurement("fixture", False, measure_fixture),
    Measurement("reset", False, measure_reset),
    Measurement("throughput", True, measure_throughput),
    Measurement("batch", False, measure_batch),
    Measurement("read-scale", False, measure_read_scale),
    Measurement("mixed", True, measure_mixed),
    Measurement("journal", False, measure_journal),
)


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="amplitude-bench-"))
