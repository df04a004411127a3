"""The real command line, run as a subprocess: flags, environment, config files, exits, storage."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator import __version__
from tests.conftest import contract_environment
from tests.support import start_listening, write_pre_org_id_database

ENV_PREFIX = "AMPLITUDE_EMULATOR_"
START_TIMEOUT = 30.0

MODULE = [sys.executable, "-m", "emulator"]

CONFIG_TOML = """
[[orgs]]
name = "acme"
  [[orgs.projects]]
  name = "web"
  api_key = "file-key"
  secret_key = "file-secret"
  region = "us"
"""


def console_script() -> list[str]:
    beside = Path(sys.executable).parent / "amplitude-emulator"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("amplitude-emulator")
    if found is None:
        pytest.fail("the amplitude-emulator console script is not installed")
    return [found]


def environment(**variables: str) -> dict[str, str]:
    """This process's environment without any AMPLITUDE_EMULATOR_* setting, plus `variables`
    (and response validation, as for every emulator of this suite)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}
    env.update(contract_environment())
    env.update({ENV_PREFIX + name: value for name, value in variables.items()})
    return env


def mapping_body(api_key: str, pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    objects = [{"user_id": user, "global_user_id": global_} for user, global_ in pairs]
    return {"api_key": api_key, "mapping": json.dumps(objects)}


def many_pairs(count: int, prefix: str) -> list[tuple[str, str]]:
    return [(f"{prefix}-{i}", f"{prefix}-global") for i in range(count)]


@dataclass
class Emulator:
    process: subprocess.Popen[bytes]
    base_url: str
    port: int
    launched_at: float  # time.perf_counter() just before the process was started
    listening_at: float
    stderr_path: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10)

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")


# uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: either status is clean.
CLEAN_EXIT = (0, -signal.SIGTERM)


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Signal the process and wait for it; killed if it does not stop in time."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
    return process.returncode


Launch = Callable[..., Emulator]


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Launch]:
    """Start `command serve --port 0 args...`; every process started is stopped afterwards."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(
        args: Sequence[str] = (),
        *,
        command: Sequence[str] = MODULE,
        env: dict[str, str] | None = None,
    ) -> Emulator:
        stderr_path = tmp_path / f"stderr-{len(processes)}.log"
        launched_at = time.perf_counter()
        started = start_listening(
            [*command, "serve", "--port", "0", *args],
            env=env if env is not None else environment(),
            stderr_path=stderr_path,
            timeout=START_TIMEOUT,
        )
        listening_at = time.perf_counter()
        processes.append(started.process)
        assert started.host == "127.0.0.1", f"unexpected address: {started.base_url}"
        return Emulator(
            process=started.process,
            base_url=started.base_url,
            port=started.port,
            launched_at=launched_at,
            listening_at=listening_at,
            stderr_path=stderr_path,
        )

    try:
        yield start
    finally:
        for process in processes:
            stop(process, signal.SIGKILL)


def run_cli(
    args: Sequence[str], *, env: dict[str, str] | None = None, command: Sequence[str] = MODULE
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion (for commands that must exit on their own)."""
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=env if env is not None else environment(),
        timeout=60,
        check=False,
    )


# --- starting ----------------------------------------------------------------------------


def test_port_0_prints_the_address_and_serves_it_and_start_up_time(launch: Launch) -> None:
    """`--port 0` prints where it listens, that port answers; prints the start-up time."""
    times: list[float] = []
    for run in range(5):
        emulator = launch()
        assert 0 < emulator.port < 65536
        with emulator.client() as client:
            response = client.post("/usermap", data=mapping_body("k", [("u", "g")]))
            answered_at = time.perf_counter()
            assert response.status_code == 200, response.text
            assert response.json() == {"code": 200}
        times.append(answered_at - emulator.launched_at)
        # The default database is in memory: every run starts empty, so ids start at 1 again.
        assert _read(emulator, ["u"])["u"]["amplitude_id"] == 1
        print(
            f"start-up run {run + 1}: {emulator.listening_at - emulator.launched_at:.3f} s to the "
            f"address line, {times[-1]:.3f} s to the first answered request"
        )
        assert stop(emulator.process) in CLEAN_EXIT
        assert "Traceback" not in emulator.stderr()
    print(f"start-up to first answered request, median of 5: {statistics.median(times):.3f} s")


def test_console_script_with_a_config_file(launch: Launch, tmp_path: Path) -> None:
    config = tmp_path / "emulator.toml"
    config.write_text(CONFIG_TOML, encoding="utf-8")
    emulator = launch(["--config", str(config)], command=console_script())
    with emulator.client() as client:
        unknown = client.post("/usermap", data=mapping_body("some-other-key", [("u", "g")]))
        assert unknown.status_code == 400
        assert unknown.json() == {"code": 400, "error": "Invalid API key: some-other-key"}
        assert unknown.headers.get("x-emulator-hint")
        known = client.post("/usermap", data=mapping_body("file-key", [("u", "g")]))
        assert known.status_code == 200, known.text
        read = client.request(
            "GET", "/api/2/usermap", data={"user_ids": ["u"]}, auth=("file-key", "file-secret")
        )
        assert read.status_code == 200, read.text
        assert read.json()["u"]["mapped_to"] == [{"amplitude_id": 2, "user_id": "g"}]
        wrong = client.get(
            "/api/2/usermap", params={"user_ids": "u"}, auth=("file-key", "not-the-secret")
        )
        assert wrong.status_code == 401
        # The file's project is US: on an EU host its key is invalid.
        eu = client.post(
            "/usermap",
            data=mapping_body("file-key", [("u", "g")]),
            headers={"Host": "api.eu.amplitude.com"},
        )
        assert eu.status_code == 400


def test_environment_variables_take_effect(launch: Launch) -> None:
    env = environment(API_KEY="env-key", SECRET_KEY="env-secret", REGION="eu", RATE_LIMIT="off")
    emulator = launch(env=env)
    with emulator.client() as client:
        other = client.post("/usermap", data=mapping_body("other-key", [("u", "g")]))
        assert other.status_code == 400
        assert other.json()["error"] == "Invalid API key: other-key"
        # REGION=eu: the key is invalid on a US host, valid on an EU one.
        us = client.post(
            "/usermap",
            data=mapping_body("env-key", [("u", "g")]),
            headers={"Host": "api.amplitude.com"},
        )
        assert us.status_code == 400
        assert us.json()["error"] == "Invalid API key: env-key"
        eu = client.post(
            "/usermap",
            data=mapping_body("env-key", [("u", "g")]),
            headers={"Host": "api.eu.amplitude.com"},
        )
        assert eu.status_code == 200, eu.text
        # SECRET_KEY is the password of reads.
        good = client.get(
            "/api/2/usermap",
            params={"user_ids": "u"},
            auth=("env-key", "env-secret"),
            headers={"Host": "analytics.eu.amplitude.com"},
        )
        assert good.status_code == 200, good.text
        assert good.json()["u"]["mapped_to"] == [{"amplitude_id": 2, "user_id": "g"}]
        bad = client.get("/api/2/usermap", params={"user_ids": "u"}, auth=("env-key", "x"))
        assert bad.status_code == 401
        # RATE_LIMIT=off: 6000 objects at once pass, where 1500 per 30 s is the default.
        for batch in range(3):
            big = client.post(
                "/usermap", data=mapping_body("env-key", many_pairs(2000, f"b{batch}"))
            )
            assert big.status_code == 200, big.text


def test_max_batch_from_the_environment_and_flags_beat_the_environment(launch: Launch) -> None:
    env = environment(MAX_BATCH="2", RATE_LIMIT="1", API_KEY="env-key", SECRET_KEY="env-secret")
    emulator = launch(["--api-key", "flag-key", "--rate-limit", "off"], env=env)
    with emulator.client() as client:
        # The flag's key replaced the environment's.
        replaced = client.post("/usermap", data=mapping_body("env-key", [("u", "g")]))
        assert replaced.status_code == 400
        assert replaced.json()["error"] == "Invalid API key: env-key"
        # MAX_BATCH=2 from the environment (no flag for it).
        three = client.post("/usermap", data=mapping_body("flag-key", many_pairs(3, "three")))
        assert three.status_code == 413, three.text
        assert three.json() == {"code": 413, "error": "Payload too large"}
        # --rate-limit off beat RATE_LIMIT=1: with a limit of 1 the second request would be 429.
        for attempt in range(3):
            two = client.post(
                "/usermap", data=mapping_body("flag-key", many_pairs(2, f"t{attempt}"))
            )
            assert two.status_code == 200, two.text
        # The environment's secret still belongs to the flag's key (no flag for it).
        read = client.get(
            "/api/2/usermap", params={"user_ids": "t0-0"}, auth=("flag-key", "env-secret")
        )
        assert read.status_code == 200, read.text
        assert read.json()["t0-0"]["mapped_to"][0]["user_id"] == "t0-global"


# --- refusing to start -------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


BAD_CONFIGS: dict[str, str] = {
    "malformed.toml": '[[orgs]\nname = "acme"\n',
    "bad-region.toml": CONFIG_TOML.replace('region = "us"', 'region = "mars"'),
    "no-api-key.toml": CONFIG_TOML.replace('api_key = "file-key"', ""),
    "duplicate-key.toml": CONFIG_TOML + CONFIG_TOML.replace('name = "acme"', 'name = "other"'),
    "malformed.json": '{"orgs": [',
}


def refusal_line(result: subprocess.CompletedProcess[str], returncode: int) -> str:
    """The one line a refused start prints: exit `returncode`, no traceback, nothing claimed on
    stdout (it never listened), one line on stderr naming the command."""
    assert result.returncode == returncode, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("amplitude-emulator: "), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("case", "args", "variables", "message"),
    [
        ("malformed toml", ["--config", "{malformed.toml}"], {}, "not valid"),
        ("bad region", ["--config", "{bad-region.toml}"], {}, "region must be 'us' or 'eu'"),
        ("no api_key", ["--config", "{no-api-key.toml}"], {}, "api_key"),
        ("duplicate api_key", ["--config", "{duplicate-key.toml}"], {}, "same api_key"),
        ("malformed json", ["--config", "{malformed.json}"], {}, "not valid"),
        ("missing file", ["--config", "{missing.toml}"], {}, "cannot read"),
        ("config from env", [], {"CONFIG": "{malformed.toml}"}, "not valid"),
        ("bad rate limit", [], {"RATE_LIMIT": "lots"}, "AMPLITUDE_EMULATOR_RATE_LIMIT"),
        ("bad region env", [], {"REGION": "mars"}, "AMPLITUDE_EMULATOR_REGION"),
        ("negative port", [], {"PORT": "-1"}, "AMPLITUDE_EMULATOR_PORT"),
        ("zero max batch", [], {"MAX_BATCH": "0"}, "AMPLITUDE_EMULATOR_MAX_BATCH"),
        ("bad window", [], {"RATE_WINDOW": "nan"}, "AMPLITUDE_EMULATOR_RATE_WINDOW"),
        ("key without secret", [], {"API_KEY": "k"}, "secret"),
        (
            "env key duplicates the file",
            ["--config", "{good.toml}"],
            {"API_KEY": "file-key", "SECRET_KEY": "s"},
            "same api_key",
        ),
    ],
)
def test_bad_configuration_exits_2_with_one_line(
    tmp_path: Path, case: str, args: list[str], variables: dict[str, str], message: str
) -> None:
    files = {name: _write(tmp_path / name, text) for name, text in BAD_CONFIGS.items()}
    files["good.toml"] = _write(tmp_path / "good.toml", CONFIG_TOML)
    files["missing.toml"] = tmp_path / "missing.toml"

    def fill(text: str) -> str:
        for name, path in files.items():
            text = text.replace("{" + name + "}", str(path))
        return text

    result = run_cli(
        ["serve", "--port", "0", *(fill(arg) for arg in args)],
        env=environment(**{name: fill(value) for name, value in variables.items()}),
    )
    line = refusal_line(result, 2)
    assert message in line, (case, line)


def test_a_database_of_an_earlier_version_exits_2_with_one_line(tmp_path: Path) -> None:
    path = write_pre_org_id_database(tmp_path / "old.db")
    result = run_cli(["serve", "--port", "0", "--database-url", f"sqlite:///{path}"])
    line = refusal_line(result, 2)
    assert line.startswith(f"amplitude-emulator: the database {path} was written by an "), line


def test_port_in_use_exits_1() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli(["serve", "--port", str(port)], command=console_script())
    line = refusal_line(result, 1)
    assert line.startswith(f"amplitude-emulator: cannot listen on 127.0.0.1:{port}"), line
    assert "in use" in line.lower()


# --- storage -----------------------------------------------------------------------------


def _read(emulator: Emulator, user_ids: list[str]) -> dict[str, Any]:
    with emulator.client() as client:
        response = client.request(
            "GET", "/api/2/usermap", data={"user_ids": user_ids}, auth=("k", "s")
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _map(emulator: Emulator, pairs: Sequence[tuple[str, str]]) -> None:
    with emulator.client() as client:
        response = client.post("/usermap", data=mapping_body("k", pairs))
    assert response.status_code == 200, response.text


def test_database_file_persists_across_restarts(launch: Launch, tmp_path: Path) -> None:
    database = tmp_path / "state" / "emulator.db"
    database.parent.mkdir()
    args = ["--database-url", f"sqlite:///{database}"]
    users = ["u1", "u2", "g"]

    first = launch(args)
    _map(first, [("u1", "g"), ("u2", "g")])
    before = _read(first, users)
    assert before["g"]["mapped_from"] == [
        {"amplitude_id": 1, "user_id": "u1"},
        {"amplitude_id": 3, "user_id": "u2"},
    ]
    assert stop(first.process, signal.SIGTERM) in CLEAN_EXIT
    assert "Traceback" not in first.stderr()
    assert database.is_file()
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    second = launch(args)
    assert _read(second, users) == before
    # The counter goes on where it stopped: ids are never reused.
    _map(second, [("u3", "g")])
    after = _read(second, ["u3"])
    assert after["u3"]["amplitude_id"] == 4
    # Killed outright, it still keeps what it acknowledged (WAL).
    stop(second.process, signal.SIGKILL)

    third = launch(args)
    assert _read(third, [*users, "u3"]) == {
        "u1": before["u1"],
        "u2": before["u2"],
        "g": {
            "amplitude_id": 2,
            "mapped_from": [
                {"amplitude_id": 1, "user_id": "u1"},
                {"amplitude_id": 3, "user_id": "u2"},
                {"amplitude_id": 4, "user_id": "u3"},
            ],
            "mapped_to": [],
        },
        "u3": {
            "amplitude_id": 4,
            "mapped_from": [],
            "mapped_to": [{"amplitude_id": 2, "user_id": "g"}],
        },
    }


# --- version -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["console script", "module"])
def test_version(command: str) -> None:
    result = run_cli(
        ["--version"], command=console_script() if command == "console script" else MODULE
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"amplitude-emulator {__version__}"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", __version__)
