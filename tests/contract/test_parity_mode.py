"""Parity mode of the pytest plugin (`--amplitude-live`), tested without the internet.

The real hosts cannot be reached here, so `--amplitude-live-url` sends parity mode's requests to a
local emulator configured with one project, which stands for "your Amplitude project": only its
keys are accepted, so a passing map-and-read proves the handle sent the keys given on the command
line. pytester runs the inner suites in subprocesses, as a user's `pytest` would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.control.service import Control
from emulator.pytest_plugin import AMPLITUDE_ENDPOINTS
from emulator.server import ServerThread
from emulator.settings import build_settings
from emulator.tenancy import Region

pytest_plugins = ["pytester"]

INNER = ("-p", "no:hypothesispytest", "-p", "no:cacheprovider", "-p", "no:schemathesis")
TIMEOUT = 120
API_KEY = "sandbox-key"
SECRET_KEY = "sandbox-secret"
PARITY_SUITE = Path(__file__).with_name("test_parity_suite.py")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[ServerThread]:
    """Stands for the user's own Amplitude project: one configured project, its keys only."""
    settings = build_settings(
        {"api_key": API_KEY, "secret_key": SECRET_KEY, "port": 0, "log_level": "warning"}
    )
    with ServerThread(settings) as running:
        yield running


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AMPLITUDE_API_KEY", raising=False)
    monkeypatch.delenv("AMPLITUDE_SECRET_KEY", raising=False)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*INNER, *args, timeout=TIMEOUT)


def live_flags(sandbox: ServerThread, *, keys: bool = True) -> list[str]:
    flags = ["--amplitude-live", "--amplitude-live-url", sandbox.base_url]
    if keys:
        flags += ["--amplitude-api-key", API_KEY, "--amplitude-secret-key", SECRET_KEY]
    return flags


INNER_SUITE = """
import threading

import pytest

pytestmark = pytest.mark.parity


def test_map_and_read(amplitude_emulator):
    assert type(amplitude_emulator).__name__ == "LiveAmplitude"
    assert amplitude_emulator.api_key == "sandbox-key"
    amplitude_emulator.map("parity-anon", "parity-user")
    read = amplitude_emulator.mappings("parity-anon")
    assert read["parity-anon"]["mapped_to"][0]["user_id"] == "parity-user"
    names = [thread.name for thread in threading.enumerate()]
    assert not any(name.startswith("amplitude-emulator") for name in names), names


def test_the_journal_skips(amplitude_emulator):
    amplitude_emulator.assert_request(path="/usermap", count=1)


def test_the_clock_skips(amplitude_emulator):
    amplitude_emulator.clock.freeze()


def test_the_server_fixture_skips(amplitude_emulator_server):
    raise AssertionError("never reached")


@pytest.mark.amplitude_emulator(rate_limit=1)
def test_limits_skip(amplitude_emulator):
    raise AssertionError("never reached")


@pytest.mark.parity
def test_health_skips(amplitude_emulator):
    amplitude_emulator.health()
"""


def test_parity_mode_sends_the_handles_calls_to_amplitude_with_the_given_keys(
    inner: pytest.Pytester, sandbox: ServerThread
) -> None:
    inner.makepyfile(test_inner=INNER_SUITE)
    inner.makepyfile(
        test_unmarked="""
        def test_not_marked_parity(amplitude_emulator):
            raise AssertionError("never reached")
        """
    )
    result = run(inner, "-rs", *live_flags(sandbox))
    result.assert_outcomes(passed=1, skipped=6)
    output = result.stdout.str()
    assert "needs the emulator (its control API: GET /_emulator/state)" not in output
    for reason in (
        "needs the emulator (its control API: GET /_emulator/requests); with --amplitude-live",
        "needs the emulator (its control API: POST /_emulator/clock)",
        "needs the emulator (the amplitude_emulator_server fixture)",
        "needs the emulator (@pytest.mark.amplitude_emulator sets its limits)",
        "needs the emulator (its control API: GET /_emulator/health)",
        "not marked @pytest.mark.parity: with --amplitude-live only parity tests run",
    ):
        assert reason in output, output

    # What reached "Amplitude": the handle's two calls, with the keys given on the command line.
    control: Control = sandbox.app.state.control
    entries = [
        entry
        for entry in control.journal.entries()
        if "parity-anon" in entry["body"] + entry["query"]
    ]
    assert [(e["method"], e["path"], e["status"], e["api_key"]) for e in entries] == [
        ("POST", "/usermap", 200, API_KEY),
        ("GET", "/api/2/usermap", 200, API_KEY),
    ]
    assert entries[1]["headers"]["authorization"] == "Basic [redacted]"


@pytest.mark.parametrize("region", ["us", "eu"])
def test_the_region_picks_amplitudes_hosts(inner: pytest.Pytester, region: str) -> None:
    usermap_url, read_url = AMPLITUDE_ENDPOINTS[Region(region)]
    inner.makepyfile(
        test_hosts=f"""
        import pytest

        @pytest.mark.parity
        def test_hosts(amplitude_emulator):
            assert amplitude_emulator.usermap_url == {usermap_url!r}
            assert amplitude_emulator.read_url == {read_url!r}
            assert amplitude_emulator.region == {region!r}
            assert (amplitude_emulator.api_key, amplitude_emulator.secret_key) == ("K", "S")
        """
    )
    args = ["--amplitude-live", "--amplitude-api-key", "K", "--amplitude-secret-key", "S"]
    if region != "us":
        args += ["--amplitude-region", region.upper()]
    run(inner, *args).assert_outcomes(passed=1)


def test_the_keys_can_come_from_the_environment(
    inner: pytest.Pytester, sandbox: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMPLITUDE_API_KEY", API_KEY)
    monkeypatch.setenv("AMPLITUDE_SECRET_KEY", SECRET_KEY)
    inner.makepyfile(
        test_env="""
        import pytest

        @pytest.mark.parity
        def test_map(amplitude_emulator):
            amplitude_emulator.map("parity-env", "parity-env-user")
        """
    )
    run(inner, *live_flags(sandbox, keys=False)).assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--amplitude-live"], "--amplitude-live needs your project's keys"),
        (["--amplitude-api-key", "K"], "--amplitude-api-key need --amplitude-live"),
        (
            [
                "--amplitude-live",
                "--amplitude-api-key",
                "K",
                "--amplitude-secret-key",
                "S",
                "--amplitude-region",
                "mars",
            ],
            "--amplitude-region='mars': us or eu",
        ),
    ],
)
def test_unusable_options_are_usage_errors(
    inner: pytest.Pytester, args: list[str], message: str
) -> None:
    inner.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = run(inner, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_the_projects_parity_suite_is_the_drift_check(
    inner: pytest.Pytester, sandbox: ServerThread
) -> None:
    """`pytest -m parity --amplitude-live ...` on this project's own parity suite: against a
    project that behaves as the emulator does, every test passes, and none is skipped."""
    result = run(inner, str(PARITY_SUITE), "-m", "parity", *live_flags(sandbox))
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 20, result.stdout.str()
    assert set(outcomes) == {"passed"}, result.stdout.str()


def test_parity_suite_is_marked_and_uses_only_amplitudes_endpoints() -> None:
    source = PARITY_SUITE.read_text(encoding="utf-8")
    assert "pytestmark = pytest.mark.parity" in source
    for control_call in ("/_emulator", ".requests(", ".clock", ".fault(", ".state(", "assert_"):
        assert control_call not in source.replace("assert_ok", "").replace("assert_refused", ""), (
            control_call
        )
