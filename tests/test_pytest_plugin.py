"""The pytest plugin (emulator/pytest_plugin.py) and the client library (emulator/client.py).

The plugin is tested the way its users meet it: pytester writes a small test suite into a
temporary folder and runs pytest on it in a subprocess, where nothing but the installed package's
entry point brings the plugin in. The client is tested in this process, against the plugin's own
session server (this suite has the plugin loaded like any other).
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import uvicorn

from emulator import pytest_plugin
from emulator.client import EmulatorClient, EmulatorError, JournalEntry, near_misses
from emulator.pytest_plugin import (
    DEFAULT_API_KEY,
    DEFAULT_SECRET_KEY,
    EmulatorServer,
    EmulatorStartError,
    start_server,
)
from emulator.server import ServerThread
from emulator.settings import Settings
from tests.conftest import StartEmulator

pytest_plugins = ["pytester"]

# Inner runs leave out Hypothesis' plugin: it is not needed there and takes a second to import.
INNER = ("-p", "no:hypothesispytest", "-p", "no:cacheprovider")
SUBPROCESS_TIMEOUT = 120


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytester, with the environment of an outer xdist worker (if any) kept out of inner runs."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(*INNER, *args, timeout=SUBPROCESS_TIMEOUT)


# --- the plugin, from the outside ---------------------------------------------------------------


def test_fixture_works_out_of_the_box_and_resets_between_tests(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_inner="""
        import threading

        def test_0_no_server_before_a_fixture_asks():
            names = [thread.name for thread in threading.enumerate()]
            assert not any(name.startswith("amplitude-emulator") for name in names), names

        def test_1_map(amplitude_emulator):
            assert amplitude_emulator.api_key == "test-api-key"
            assert amplitude_emulator.secret_key == "test-secret-key"
            assert amplitude_emulator.usermap_url == amplitude_emulator.base_url + "/usermap"
            assert amplitude_emulator.read_url == amplitude_emulator.base_url + "/api/2/usermap"
            amplitude_emulator.map("u1", "g1")
            amplitude_emulator.fault(path="/usermap", status=503, times=5)
            amplitude_emulator.clock.freeze()
            amplitude_emulator.clock.advance(3600)
            amplitude_emulator.set_config(max_batch=1)
            amplitude_emulator.snapshot("one")
            amplitude_emulator.assert_mapped("u1", "g1")

        def test_2_state_is_gone(amplitude_emulator):
            amplitude_emulator.assert_not_mapped("u1")
            assert amplitude_emulator.requests() == []
            assert amplitude_emulator.faults() == []
            assert amplitude_emulator.snapshots() == []
            assert not amplitude_emulator.clock.frozen()
            assert amplitude_emulator.config()["max_batch"] == 2000
            amplitude_emulator.map("u1", "g2")  # no fault rule left to answer 503
            read = amplitude_emulator.mappings("u1")
            assert read["u1"]["amplitude_id"] == 1  # the ids start again, too
        """
    )
    result = run(inner, "-v")
    result.assert_outcomes(passed=3)


def test_no_server_and_no_server_imports_when_no_fixture_is_used(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_inner="""
        import sys

        def test_plugin_is_loaded_but_idle(pytestconfig):
            assert pytestconfig.pluginmanager.has_plugin("amplitude_emulator")
            assert "emulator.server" not in sys.modules
            assert "uvicorn" not in sys.modules
        """
    )
    result = run(inner)
    result.assert_outcomes(passed=1)


def test_flags_set_the_limits(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_inner="""
        import pytest
        from emulator.client import EmulatorError

        def test_rate_limit_of_2(amplitude_emulator):
            assert amplitude_emulator.config()["rate_limit"] == 2
            amplitude_emulator.map("a", "g")
            amplitude_emulator.map("b", "g")
            with pytest.raises(EmulatorError) as refused:
                amplitude_emulator.map("c", "g")
            assert refused.value.status == 429
            assert refused.value.body["error"] == "Too many requests"

        def test_max_batch_of_1(amplitude_emulator):
            response = amplitude_emulator.usermap(
                [{"user_id": "a", "global_user_id": "g"}, {"user_id": "b", "global_user_id": "g"}]
            )
            assert response.status_code == 413, response.text

        def test_limits_come_back_after_a_test_changed_them(amplitude_emulator):
            assert amplitude_emulator.config()["max_batch"] == 1
            amplitude_emulator.set_config(max_batch=50, rate_limit=None)

        def test_limits_are_the_flags_again(amplitude_emulator):
            config = amplitude_emulator.config()
            assert (config["max_batch"], config["rate_limit"]) == (1, 2)

        @pytest.mark.amplitude_emulator(rate_limit=1)
        def test_marker_overrides_for_one_test(amplitude_emulator):
            assert amplitude_emulator.config()["rate_limit"] == 1
        """
    )
    result = run(
        inner,
        "--amplitude-emulator-rate-limit=2",
        "--amplitude-emulator-max-batch",
        "1",
    )
    result.assert_outcomes(passed=5)


ORGS_TOML = """
[[orgs]]
name = "acme"
  [[orgs.projects]]
  name = "web"
  api_key = "acme-web-key"
  secret_key = "acme-web-secret"
  region = "us"

  [[orgs.projects]]
  name = "app"
  api_key = "acme-app-key"
  secret_key = "acme-app-secret"
"""


def test_ini_options_and_a_config_file(inner: pytest.Pytester) -> None:
    (inner.path / "emulator").mkdir()
    (inner.path / "emulator" / "orgs.toml").write_text(ORGS_TOML, encoding="utf-8")
    inner.makeini(
        """
        [pytest]
        amplitude_emulator_config = emulator/orgs.toml
        amplitude_emulator_rate_limit = off
        amplitude_emulator_max_batch = 5
        """
    )
    inner.makepyfile(
        test_inner="""
        import pytest
        from emulator.client import EmulatorError

        def test_the_first_projects_keys(amplitude_emulator):
            assert amplitude_emulator.api_key == "acme-web-key"
            assert amplitude_emulator.secret_key == "acme-web-secret"
            amplitude_emulator.map("u", "g")
            # Another project of the same org sees the org's mappings.
            amplitude_emulator.assert_mapped("u", "g", api_key="acme-app-key")
            read = amplitude_emulator.mappings(
                "u", api_key="acme-app-key", secret_key="acme-app-secret"
            )
            assert read["u"]["mapped_to"][0]["user_id"] == "g"

        def test_unknown_keys_are_refused(amplitude_emulator):
            with pytest.raises(EmulatorError) as refused:
                amplitude_emulator.map("u", "g", api_key="someone-else")
            assert refused.value.status == 400
            with pytest.raises(EmulatorError) as wrong_secret:
                amplitude_emulator.mappings("u", secret_key="wrong")
            assert wrong_secret.value.status == 401

        def test_ini_limits_and_the_flag_that_wins(amplitude_emulator):
            config = amplitude_emulator.config()
            assert config["rate_limit"] is None
            assert config["max_batch"] == 7
        """
    )
    result = run(inner, "--amplitude-emulator-max-batch=7")
    result.assert_outcomes(passed=3)


def test_a_bad_option_value_is_a_usage_error(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_inner="def test_nothing(): pass")
    result = run(inner, "--amplitude-emulator-rate-limit=lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--amplitude-emulator-rate-limit='lots'*"])


def test_a_missing_config_file_is_a_usage_error(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_inner="def test_nothing(): pass")
    result = run(inner, "--amplitude-emulator-config=nowhere.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*amplitude-emulator: cannot read nowhere.toml*"])


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        yield taken.getsockname()[1]


def test_a_fixed_port_that_is_taken_fails_loudly_and_fast(
    inner: pytest.Pytester, taken_port: int
) -> None:
    inner.makepyfile(
        test_inner="""
        def test_a(amplitude_emulator):
            pass

        def test_b(amplitude_emulator):
            pass

        def test_without_the_emulator():
            pass
        """
    )
    started = time.monotonic()
    result = run(inner, f"--amplitude-emulator-port={taken_port}")
    took = time.monotonic() - started

    assert took < 15, f"the run took {took:.1f} s"
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines(
        [f"*amplitude-emulator could not start: cannot listen on 127.0.0.1:{taken_port}: *"]
    )
    assert "Address already in use" in result.stdout.str()


def test_assertion_helpers_print_near_misses(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        test_inner="""
        def test_expects_a_429(amplitude_emulator):
            amplitude_emulator.map("u1", "g1")
            amplitude_emulator.usermap('[{"user_id": "u1"}]')
            amplitude_emulator.assert_request(path="/usermap", status=429)

        def test_expects_a_mapping(amplitude_emulator):
            amplitude_emulator.usermap('[{"user_id": "u1"}]')
            amplitude_emulator.assert_mapped("u1", "g1")
        """
    )
    result = run(inner)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: no request in the journal has path='/usermap', status=429*",
            "*Near misses (closest first):*",
            "*#2 POST /usermap -> 400 *Invalid mapping* (hint: *",
            "*status: expected 429, got 400*",
            "*#1 POST /usermap -> 200 *",
            "*status: expected 429, got 200*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: expected 'u1' to be mapped to 'g1', but it is not mapped to anyone.*",
            "*/usermap requests that mention 'u1':*",
            "*POST /usermap -> 400 *missing_field*global_user_id*",
        ]
    )


def test_xdist_gives_each_worker_a_server_of_its_own(inner: pytest.Pytester) -> None:
    seen = inner.path / "seen"
    seen.mkdir()
    tests = "\n".join(
        textwrap.dedent(
            f"""
            def test_{number}(amplitude_emulator, worker_id):
                amplitude_emulator.map("shared-user", "global-{number}")
                amplitude_emulator.assert_mapped("shared-user", "global-{number}")
                assert len(amplitude_emulator.requests()) == 1  # no other test's requests
                record = {{"worker": worker_id, "base_url": amplitude_emulator.base_url}}
                (SEEN / "{number}.json").write_text(json.dumps(record))
            """
        )
        for number in range(16)
    )
    inner.makepyfile(
        test_inner=f"import json\nimport pathlib\nSEEN = pathlib.Path({str(seen)!r})\n{tests}"
    )
    result = run(inner, "-n", "4")

    result.assert_outcomes(passed=16)
    records = [json.loads(path.read_text()) for path in seen.iterdir()]
    assert len(records) == 16
    workers = {record["worker"] for record in records}
    urls_by_worker = {record["worker"]: record["base_url"] for record in records}
    assert workers == {"gw0", "gw1", "gw2", "gw3"}
    for record in records:  # each worker always saw the same server
        assert record["base_url"] == urls_by_worker[record["worker"]]
    ports = {httpx.URL(url).port for url in urls_by_worker.values()}
    assert len(ports) == 4, urls_by_worker


def test_start_up_and_reset_times(
    inner: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    """Measures the plugin's costs: the session server's start, and the reset before each test."""
    out = inner.path / "times.jsonl"
    inner.makepyfile(
        test_inner=f"""
        import json
        import pytest

        @pytest.mark.parametrize("number", range(40))
        def test_one(amplitude_emulator, amplitude_emulator_server, number):
            amplitude_emulator.map(f"u{{number}}", "g")
            server = amplitude_emulator_server
            with open({str(out)!r}, "a") as times:
                row = [server.import_seconds, server.startup_seconds, server.reset_seconds[-1]]
                times.write(json.dumps(row) + "\\n")
        """
    )
    result = run(inner)
    result.assert_outcomes(passed=40)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    session_import, session_startup = rows[0][0], rows[0][1]
    reset_median = statistics.median(row[2] for row in rows)

    startups = []
    for _ in range(5):
        server = start_server(Settings(port=0, log_level="warning"))
        startups.append(server.startup_seconds)
        server.stop()
    startup_median = statistics.median(startups)

    with capsys.disabled():
        print(
            f"\namplitude-emulator plugin: in a fresh session {session_import * 1000:.0f} ms to "
            f"import the server stack, then {session_startup * 1000:.1f} ms to start; start-up "
            f"median {startup_median * 1000:.1f} ms over {len(startups)} starts; "
            f"reset median {reset_median * 1000:.2f} ms over {len(rows)} tests"
        )
    assert startup_median < 1.0
    assert reset_median < 0.05


# --- the plugin, from the inside ----------------------------------------------------------------


def test_start_timeout_fails_instead_of_hanging(monkeypatch: pytest.MonkeyPatch) -> None:
    async def startup_that_hangs(self: uvicorn.Server, **_sockets: Any) -> None:
        while not self.should_exit:  # until the start timeout gives up on it
            await asyncio.sleep(0.01)

    monkeypatch.setattr(uvicorn.Server, "startup", startup_that_hangs)
    started = time.monotonic()
    with pytest.raises(EmulatorStartError, match=r"did not start in 0\.2 s"):
        start_server(Settings(port=0, log_level="warning"), timeout=0.2)
    assert time.monotonic() - started < 5


def test_a_taken_port_raises_at_once(taken_port: int) -> None:
    with pytest.raises(EmulatorStartError, match=f"cannot listen on 127.0.0.1:{taken_port}"):
        start_server(Settings(port=taken_port, log_level="warning"))


def test_fixed_port_under_xdist_adds_the_worker_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw3")
    assert pytest_plugin._worker_number() == 3
    monkeypatch.delenv("PYTEST_XDIST_WORKER")
    assert pytest_plugin._worker_number() == 0


def test_options_in_process(inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    options = pytest_plugin.plugin_options(inner.parseconfig())
    assert (options.settings.port, options.settings.log_level) == (0, "warning")
    assert options.settings.orgs is None
    assert options.start_timeout == pytest_plugin.DEFAULT_START_TIMEOUT

    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw2")
    config = inner.parseconfig("--amplitude-emulator-port=18000", "--amplitude-emulator-api-key=k")
    with pytest.raises(pytest.UsageError, match="needs --amplitude-emulator-secret-key"):
        pytest_plugin.plugin_options(config)
    config = inner.parseconfig(
        "--amplitude-emulator-port=18000",
        "--amplitude-emulator-api-key=k",
        "--amplitude-emulator-secret-key=s",
        "--amplitude-emulator-start-timeout=2.5",
    )
    options = pytest_plugin.plugin_options(config)
    assert options.settings.port == 18002  # worker gw2
    assert options.explicit_keys == ("k", "s")
    assert options.start_timeout == 2.5
    assert pytest_plugin.handle_keys(options.settings, options.explicit_keys) == ("k", "s")


def test_handle_keys() -> None:
    assert pytest_plugin.handle_keys(Settings()) == (DEFAULT_API_KEY, DEFAULT_SECRET_KEY)
    assert pytest_plugin.handle_keys(Settings(), ("k", "s")) == ("k", "s")


def test_the_handle(amplitude_emulator: EmulatorClient) -> None:
    assert amplitude_emulator.api_key == DEFAULT_API_KEY
    assert amplitude_emulator.secret_key == DEFAULT_SECRET_KEY
    assert amplitude_emulator.base_url.startswith("http://127.0.0.1:")
    assert amplitude_emulator.health()
    assert amplitude_emulator.ready()
    amplitude_emulator.wait_until_ready(timeout=1)


def test_reset_restores_what_a_test_changed(
    amplitude_emulator: EmulatorClient, amplitude_emulator_server: EmulatorServer
) -> None:
    amplitude_emulator.set_config(max_batch=3, rate_limit=None, journal_size=5)
    amplitude_emulator.load_state(
        {
            "permissive": False,
            "orgs": [{"name": "o", "projects": [{"name": "p", "api_key": "k", "secret_key": "s"}]}],
        }
    )
    amplitude_emulator_server.reset()
    config = amplitude_emulator.config()
    assert (config["max_batch"], config["rate_limit"], config["journal_size"]) == (2000, 1500, 1000)
    assert amplitude_emulator.state()["permissive"] is True


def test_seed_and_admin_token(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(
        json.dumps({"orgs": [{"name": "seeded", "mappings": {"old-user": "person"}}]}),
        encoding="utf-8",
    )
    server = start_server(Settings(port=0, log_level="warning", seed=seed, admin_token="sesame"))
    try:
        client = server.client
        assert client.admin_token == "sesame"
        client.assert_mapped("old-user", "person", api_key="seeded")
        client.map("new-user", "person", api_key="seeded")
        client.unmap("old-user", api_key="seeded")
        server.reset()  # each test starts from the seed's data
        client.assert_mapped("old-user", "person", api_key="seeded")
        client.assert_not_mapped("new-user", api_key="seeded")
        assert client.requests() == []
    finally:
        server.stop()


@pytest.mark.amplitude_emulator(max_batch=2, rate_window_seconds=5)
def test_the_marker_sets_limits_for_one_test(amplitude_emulator: EmulatorClient) -> None:
    config = amplitude_emulator.config()
    assert (config["max_batch"], config["rate_window_seconds"]) == (2, 5)


# --- the client ---------------------------------------------------------------------------------


def test_map_unmap_and_mappings(amplitude_emulator: EmulatorClient) -> None:
    amplitude_emulator.map("u1", "g1")
    amplitude_emulator.map("u2", "g1")
    read = amplitude_emulator.mappings("u1", "g1")
    assert read["u1"]["mapped_to"] == [{"amplitude_id": 2, "user_id": "g1"}]
    assert [entry["user_id"] for entry in read["g1"]["mapped_from"]] == ["u1", "u2"]
    amplitude_emulator.unmap("u1")
    amplitude_emulator.assert_not_mapped("u1")
    amplitude_emulator.assert_mapped("u2", "g1")
    with pytest.raises(AssertionError, match="mapped to 'g1'"):
        amplitude_emulator.assert_not_mapped("u2")


def test_amplitude_refusals_raise_emulator_error(amplitude_emulator: EmulatorClient) -> None:
    with pytest.raises(EmulatorError) as refused:
        amplitude_emulator.map("u1", "u1", api_key="undefined")
    assert refused.value.status == 400
    assert refused.value.body == {"code": 400, "error": "Invalid API key: undefined"}
    assert refused.value.hint
    assert "answered 400" in str(refused.value)


def test_control_refusals_raise_emulator_error(amplitude_emulator: EmulatorClient) -> None:
    with pytest.raises(EmulatorError) as refused:
        amplitude_emulator.restore("never-taken")
    assert refused.value.status == 404
    assert refused.value.body == {"error": "No snapshot is named 'never-taken'."}
    assert "/_emulator/snapshots/never-taken/restore answered 404" in str(refused.value)
    with pytest.raises(EmulatorError, match="max_batch must be positive"):
        amplitude_emulator.set_config(max_batch=0)


def test_state_snapshots_and_restore(amplitude_emulator: EmulatorClient) -> None:
    amplitude_emulator.map("u1", "g1")
    amplitude_emulator.snapshot("one mapping")
    amplitude_emulator.map("u2", "g1")
    assert amplitude_emulator.snapshots() == ["one mapping"]
    amplitude_emulator.restore("one mapping")
    amplitude_emulator.assert_not_mapped("u2")
    document = amplitude_emulator.state()
    [org] = document["orgs"]
    assert org["name"] == DEFAULT_API_KEY
    assert org["mappings"] == {"u1": "g1"}
    amplitude_emulator.reset()
    amplitude_emulator.assert_not_mapped("u1")
    summary = amplitude_emulator.load_state(document)
    assert summary["mappings"] == 1
    amplitude_emulator.assert_mapped("u1", "g1")


def test_reset_of_one_org(amplitude_emulator: EmulatorClient) -> None:
    amplitude_emulator.map("u1", "g1")
    amplitude_emulator.map("u1", "g1", api_key="other")
    amplitude_emulator.reset(api_key="other")
    amplitude_emulator.assert_mapped("u1", "g1")
    amplitude_emulator.assert_not_mapped("u1", api_key="other")


def test_journal_filters_and_clear(amplitude_emulator: EmulatorClient) -> None:
    amplitude_emulator.map("u1", "g1")
    amplitude_emulator.usermap("not json")
    amplitude_emulator.mappings("u1")
    assert len(amplitude_emulator.requests()) == 3
    assert [e["status"] for e in amplitude_emulator.requests(path="/usermap")] == [200, 400]
    assert len(amplitude_emulator.requests(method="get")) == 1
    assert len(amplitude_emulator.requests(status=400, api_key=DEFAULT_API_KEY)) == 1
    assert len(amplitude_emulator.requests(limit=1)) == 1
    assert amplitude_emulator.requests(since=time.time() + 3600) == []
    amplitude_emulator.assert_request(path="/usermap", count=2)
    amplitude_emulator.assert_request(body_contains='"global_user_id": "g1"', status=200)
    amplitude_emulator.clear_requests()
    assert amplitude_emulator.requests() == []


def test_clock(amplitude_emulator: EmulatorClient) -> None:
    clock = amplitude_emulator.clock
    assert abs(clock.now() - time.time()) < 5
    frozen_at = clock.freeze()
    assert clock.frozen()
    assert clock.now() == frozen_at
    assert clock.advance(30) == frozen_at + 30
    assert clock.set(1_700_000_000) == 1_700_000_000
    clock.unfreeze()
    assert not clock.frozen()
    assert 1_700_000_000 <= clock.now() < 1_700_000_060


def test_faults(amplitude_emulator: EmulatorClient) -> None:
    rule = amplitude_emulator.fault(
        status=503, body={"code": 503}, headers={"Retry-After": "1"}, path="/usermap", times=2
    )
    latency = amplitude_emulator.fault(latency_ms=1, method="GET", probability=1.0)
    assert [found["id"] for found in amplitude_emulator.faults()] == [rule, latency]
    response = amplitude_emulator.usermap([{"user_id": "u", "global_user_id": "g"}])
    assert (response.status_code, response.headers["retry-after"]) == (503, "1")
    amplitude_emulator.delete_fault(rule)
    amplitude_emulator.map("u", "g")
    amplitude_emulator.clear_faults()
    assert amplitude_emulator.faults() == []
    with pytest.raises(EmulatorError) as refused:
        amplitude_emulator.fault(status=200, drop=True)
    assert refused.value.status == 400


def test_config(amplitude_emulator: EmulatorClient) -> None:
    assert amplitude_emulator.config()["max_batch"] == 2000
    changed = amplitude_emulator.set_config(max_batch=1, rate_limit=None)
    assert (changed["max_batch"], changed["rate_limit"]) == (1, None)
    response = amplitude_emulator.usermap(
        [{"user_id": "a", "global_user_id": "g"}, {"user_id": "b", "global_user_id": "g"}]
    )
    assert response.status_code == 413


def test_admin_token(start_emulator: StartEmulator) -> None:
    server = start_emulator(admin_token="sesame")
    with EmulatorClient(server.base_url, api_key="k", secret_key="s") as anonymous:
        with pytest.raises(EmulatorError) as refused:
            anonymous.reset()
        assert refused.value.status == 401
        anonymous.map("u", "g")  # Amplitude's paths need no token
    with EmulatorClient(
        server.base_url, api_key="k", secret_key="s", admin_token="sesame"
    ) as admin:
        admin.reset()
        admin.assert_not_mapped("u")


def test_wait_until_ready_gives_up(taken_port: int) -> None:
    # A port that listens but never answers HTTP stands for an emulator that is not up.
    with EmulatorClient(
        f"http://127.0.0.1:{taken_port}", api_key="k", secret_key="s", timeout=0.2
    ) as client:
        assert not client.health()
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"was not ready in 0\.3 s"):
            client.wait_until_ready(timeout=0.3)
        assert time.monotonic() - started < 3


def _entry(number: int, **fields: Any) -> JournalEntry:
    entry: dict[str, Any] = {
        "id": number,
        "method": "POST",
        "path": "/usermap",
        "query": "",
        "headers": {},
        "body": "",
        "body_truncated": False,
        "status": 200,
        "response_body": {"code": 200},
        "hint": None,
        "api_key": "k",
        "org": "k",
        "fault": None,
        "started_at": 0.0,
        "duration_ms": 1.0,
    }
    entry.update(fields)
    return cast(JournalEntry, entry)


def test_near_misses_closest_first() -> None:
    entries = [
        _entry(1, method="GET", path="/api/2/usermap"),
        _entry(2, status=400, hint="Mapping object 0 has no global_user_id."),
        _entry(3, path="/usermap/"),
    ]
    text = near_misses(entries, {"method": "POST", "path": "/usermap", "status": 429})
    lines = text.splitlines()
    assert lines[0] == "Near misses (closest first):"
    assert lines[1].startswith("  #2 POST /usermap -> 400")
    assert "(hint: Mapping object 0 has no global_user_id.)" in lines[1]
    assert lines[2].strip() == "status: expected 429, got 400"
    assert "#3" in text
    assert "#1 " not in text  # it meets none of the expectations
    assert near_misses([], {"path": "/usermap"}).startswith("The journal is empty")
    assert "none" in near_misses(entries, {"path": "/x", "status": 500})


def test_a_client_for_any_running_emulator(server: ServerThread) -> None:
    """The client needs no plugin: here it drives tests/conftest.py's own server."""
    with EmulatorClient(server.base_url, api_key="any-running", secret_key="s") as client:
        client.reset(api_key="any-running")
        client.map("u", "g")
        client.assert_mapped("u", "g")
        client.assert_request(api_key="any-running", status=200, count=1)


def test_examples_have_docstrings() -> None:
    examples = sorted((Path(__file__).parent / "examples").glob("test_*.py"))
    assert len(examples) >= 3
    for example in examples:
        assert example.read_text(encoding="utf-8").startswith('"""'), example.name
