"""pytest plugin: the emulator for a test session, reset before each test that asks for it.

Installing the package registers it (entry point `pytest11`, name `amplitude_emulator`); disable
it with `-p no:amplitude_emulator`. It starts nothing until a test uses one of its fixtures:

- `amplitude_emulator` (function scope): resets the emulator, then gives an EmulatorClient
  (`emulator.client`) with `base_url`, `api_key`, `secret_key`, `usermap_url`, `read_url`, ...
- `amplitude_emulator_server` (session scope): the running server (an EmulatorServer).
- `amplitude_emulator_settings` (session scope): its Settings; override it in a conftest.py to
  build them in code.

Each option is a command-line flag `--amplitude-emulator-<name>` and an ini key
`amplitude_emulator_<name>` (the flag wins): the options of `amplitude-emulator serve` plus
`start-timeout`. The port defaults to 0 (a free one); under pytest-xdist every worker runs a server
of its own, and a fixed port N becomes N + the worker's number. Environment variables
(AMPLITUDE_EMULATOR_*) are not read, so an emulator configured for something else does not leak
into tests.

The marker `@pytest.mark.amplitude_emulator(rate_limit=2, max_batch=1, ...)` sets run-time limits
(the fields of GET /_emulator/config) for one test.

Parity mode: `--amplitude-live --amplitude-api-key K --amplitude-secret-key S [--amplitude-region
eu]` points the `amplitude_emulator` handle at Amplitude's real hosts with those keys instead of
starting an emulator, so the same tests show where the emulator differs from the service. Only
tests marked `@pytest.mark.parity` run then (`pytest -m parity --amplitude-live ...`); whatever
needs the emulator itself (the server fixture, the control API: journal, clock, faults, state,
assertion helpers; limits set by the marker) skips with the reason.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

from emulator.client import EmulatorClient
from emulator.settings import OPTIONS, Limits, Option, Settings, build_settings
from emulator.tenancy import ConfigError, Region

if TYPE_CHECKING:
    from emulator.control.service import Control
    from emulator.server import ServerThread
    from emulator.tenancy import Tenancy

__all__ = [
    "AMPLITUDE_ENDPOINTS",
    "DEFAULT_API_KEY",
    "DEFAULT_SECRET_KEY",
    "EmulatorServer",
    "EmulatorStartError",
    "LiveAmplitude",
    "start_server",
]

# The keys the handle uses in permissive mode (where every key is accepted).
DEFAULT_API_KEY: Final = "test-api-key"
DEFAULT_SECRET_KEY: Final = "test-secret-key"
DEFAULT_START_TIMEOUT: Final = 10.0
MARKER: Final = "amplitude_emulator"
PARITY_MARKER: Final = "parity"
_PATH_OPTIONS: Final = frozenset({"config", "seed"})
# Amplitude's real endpoints per region: (usermap_url, read_url) [spec section 1].
AMPLITUDE_ENDPOINTS: Final = {
    Region.US: ("https://api.amplitude.com/usermap", "https://amplitude.com/api/2/usermap"),
    Region.EU: (
        "https://api.eu.amplitude.com/usermap",
        "https://analytics.eu.amplitude.com/api/2/usermap",
    ),
}
LIVE_API_KEY_ENV: Final = "AMPLITUDE_API_KEY"
LIVE_SECRET_KEY_ENV: Final = "AMPLITUDE_SECRET_KEY"
_LIMIT_NAMES: Final = tuple(field.name for field in dataclasses.fields(Limits))


class EmulatorStartError(Exception):
    """The plugin's server could not start; the message says why."""


@dataclasses.dataclass(frozen=True, slots=True)
class PluginOptions:
    settings: Settings
    start_timeout: float
    explicit_keys: tuple[str, str] | None  # --amplitude-emulator-api-key/--secret-key


_OPTIONS_KEY = pytest.StashKey[PluginOptions]()


@dataclasses.dataclass(frozen=True, slots=True)
class LiveOptions:
    """Parity mode: where Amplitude's endpoints are and the keys of the user's own project."""

    api_key: str
    secret_key: str
    region: Region
    usermap_url: str
    read_url: str


_LIVE_KEY = pytest.StashKey[LiveOptions | None]()


def _flag(name: str) -> str:
    return "--amplitude-emulator-" + name.replace("_", "-")


def _ini(name: str) -> str:
    return "amplitude_emulator_" + name


def _start_timeout(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError(f"{text} is not a positive number of seconds")
    return value


_PLUGIN_OPTIONS: Final = (
    *OPTIONS,
    Option(
        "start_timeout",
        _start_timeout,
        f"seconds the server may take to start (default {DEFAULT_START_TIMEOUT:g})",
        "SECONDS",
    ),
)
_DEFAULT_HELP: Final = {
    "port": "port to listen on (default 0: a free one; under xdist N + worker number)",
    "log_level": "uvicorn log level (default warning)",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("amplitude-emulator", "Amplitude User Mapping API emulator")
    for option in _PLUGIN_OPTIONS:
        help_text = _DEFAULT_HELP.get(option.name, option.help)
        group.addoption(
            _flag(option.name),
            dest=_ini(option.name),
            metavar=option.metavar,
            default=None,
            help=f"{help_text} [ini: {_ini(option.name)}]",
        )
        parser.addini(_ini(option.name), help=f"amplitude emulator: {help_text}", default=None)
    live = parser.getgroup(
        "amplitude-live", "parity mode: the amplitude_emulator fixture against the real Amplitude"
    )
    live.addoption(
        "--amplitude-live",
        action="store_true",
        default=False,
        help="run the tests marked parity against Amplitude's real hosts instead of the emulator",
    )
    live.addoption(
        "--amplitude-api-key",
        metavar="KEY",
        default=None,
        help=f"api_key of your own (sandbox) project [default: ${LIVE_API_KEY_ENV}]",
    )
    live.addoption(
        "--amplitude-secret-key",
        metavar="SECRET",
        default=None,
        help=f"secret_key of that project [default: ${LIVE_SECRET_KEY_ENV}]",
    )
    live.addoption(
        "--amplitude-region",
        metavar="REGION",
        default=None,
        help="us (default) or eu: which of Amplitude's hosts to use",
    )
    live.addoption(
        "--amplitude-live-url",
        metavar="URL",
        default=None,
        help="send parity mode's requests to URL (both paths) instead of Amplitude's hosts, "
        "e.g. a recording proxy",
    )


def _raw_values(config: pytest.Config) -> dict[str, tuple[str, str, Path | None]]:
    """name -> (text, where it came from, the folder relative paths are relative to)."""
    values: dict[str, tuple[str, str, Path | None]] = {}
    for option in _PLUGIN_OPTIONS:
        flag_value = config.getoption(_ini(option.name))
        if flag_value is not None:
            values[option.name] = (str(flag_value), _flag(option.name), None)
            continue
        ini_value = config.getini(_ini(option.name))
        if ini_value not in (None, ""):
            base = config.inipath.parent if config.inipath else config.rootpath
            values[option.name] = (str(ini_value), f"ini {_ini(option.name)}", base)
    return values


def _worker_number() -> int:
    match = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    return int(match.group(1)) if match else 0


def plugin_options(config: pytest.Config) -> PluginOptions:
    """The plugin's settings from flags and ini keys; pytest.UsageError on a bad value."""
    parsed: dict[str, Any] = {"port": 0, "log_level": "warning"}
    start_timeout = DEFAULT_START_TIMEOUT
    for name, (text, source, base) in _raw_values(config).items():
        option = next(option for option in _PLUGIN_OPTIONS if option.name == name)
        try:
            value = option.parse(text.strip())
        except ValueError as error:
            raise pytest.UsageError(f"amplitude-emulator: {source}={text!r}: {error}") from None
        if name in _PATH_OPTIONS and base is not None and not value.is_absolute():
            value = base / value
        if name == "start_timeout":
            start_timeout = value
        else:
            parsed[name] = value
    if parsed["port"]:
        parsed["port"] += _worker_number()
    if parsed.get("api_key") is not None and parsed.get("secret_key") is None:
        raise pytest.UsageError(
            f"amplitude-emulator: {_flag('api_key')} needs {_flag('secret_key')} "
            f"(or the ini keys {_ini('api_key')} and {_ini('secret_key')})"
        )
    try:
        settings = build_settings(parsed)
    except (ConfigError, OSError) as error:
        raise pytest.UsageError(f"amplitude-emulator: {error}") from None
    explicit = None
    if parsed.get("api_key") is not None:
        explicit = (parsed["api_key"], parsed["secret_key"])
    return PluginOptions(settings, start_timeout, explicit)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(**limits): run-time limits of the amplitude_emulator fixture for this test "
        "(max_batch, max_request_bytes, max_target_bytes, rate_limit, rate_window_seconds)",
    )
    config.addinivalue_line(
        "markers",
        f"{PARITY_MARKER}: the test makes sense against the real Amplitude too; with "
        "--amplitude-live only these tests run, against your own project",
    )
    config.stash[_OPTIONS_KEY] = plugin_options(config)
    config.stash[_LIVE_KEY] = live_options(config)


def live_options(config: pytest.Config) -> LiveOptions | None:
    """Parity mode's options (None without --amplitude-live); pytest.UsageError when unusable."""
    given = {
        name: config.getoption(name)
        for name in ("amplitude_api_key", "amplitude_secret_key", "amplitude_region")
    }
    live_url: str | None = config.getoption("amplitude_live_url")
    if not config.getoption("amplitude_live"):
        stray = [name for name, value in given.items() if value is not None]
        if live_url is not None:
            stray.append("amplitude_live_url")
        if stray:
            flags = ", ".join("--" + name.replace("_", "-") for name in stray)
            raise pytest.UsageError(f"amplitude-emulator: {flags} need --amplitude-live")
        return None
    api_key = given["amplitude_api_key"] or os.environ.get(LIVE_API_KEY_ENV)
    secret_key = given["amplitude_secret_key"] or os.environ.get(LIVE_SECRET_KEY_ENV)
    if not api_key or not secret_key:
        raise pytest.UsageError(
            "amplitude-emulator: --amplitude-live needs your project's keys: "
            f"--amplitude-api-key and --amplitude-secret-key (or ${LIVE_API_KEY_ENV} and "
            f"${LIVE_SECRET_KEY_ENV})"
        )
    try:
        region = Region((given["amplitude_region"] or "us").strip().lower())
    except ValueError:
        raise pytest.UsageError(
            f"amplitude-emulator: --amplitude-region={given['amplitude_region']!r}: us or eu"
        ) from None
    usermap_url, read_url = AMPLITUDE_ENDPOINTS[region]
    if live_url is not None:
        base = live_url.rstrip("/")
        usermap_url, read_url = base + "/usermap", base + "/api/2/usermap"
    return LiveOptions(api_key, secret_key, region, usermap_url, read_url)


_NEEDS_EMULATOR: Final = (
    "needs the emulator ({what}); with --amplitude-live the tests run against Amplitude"
)


class LiveAmplitude(EmulatorClient):
    """The `amplitude_emulator` handle in parity mode: Amplitude's real endpoints, your keys.

    `usermap`, `read`, `map`, `unmap` and `mappings` go to Amplitude; everything that needs the
    emulator's control API (journal, clock, faults, state, snapshots, config, the assertion
    helpers) skips the test, saying so.
    """

    def __init__(self, options: LiveOptions, *, timeout: float = 30.0) -> None:
        origin = "/".join(options.usermap_url.split("/", 3)[:3])
        super().__init__(
            origin,
            api_key=options.api_key,
            secret_key=options.secret_key,
            timeout=timeout,
            usermap_url=options.usermap_url,
            read_url=options.read_url,
        )
        self.region = options.region

    def __repr__(self) -> str:
        return f"LiveAmplitude({self.usermap_url!r}, {self.read_url!r})"

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int | float] | None = None,
    ) -> Any:
        del json, params  # nothing is sent
        pytest.skip(_NEEDS_EMULATOR.format(what=f"its control API: {method} /_emulator{path}"))

    def health(self) -> bool:
        pytest.skip(_NEEDS_EMULATOR.format(what="its control API: GET /_emulator/health"))

    def ready(self) -> bool:
        pytest.skip(_NEEDS_EMULATOR.format(what="its control API: GET /_emulator/ready"))


def handle_keys(settings: Settings, explicit: tuple[str, str] | None = None) -> tuple[str, str]:
    """The api_key and secret_key the handle uses: the explicit project's, else the first
    configured project's, else (permissive mode) DEFAULT_API_KEY and DEFAULT_SECRET_KEY."""
    if explicit is not None:
        return explicit
    for org in settings.orgs or ():
        for project in org.projects:
            return project.api_key, project.secret_key or DEFAULT_SECRET_KEY
    return DEFAULT_API_KEY, DEFAULT_SECRET_KEY


class EmulatorServer:
    """The session's emulator: a ServerThread, its handle, and an in-process reset."""

    def __init__(
        self,
        thread: ServerThread,
        *,
        api_key: str,
        secret_key: str,
        startup_seconds: float,
        import_seconds: float = 0.0,
    ) -> None:
        self.thread = thread
        self.settings = thread.settings
        self.base_url = thread.base_url
        self.api_key = api_key
        self.secret_key = secret_key
        self.startup_seconds = startup_seconds  # from binding the socket to answering
        # Importing FastAPI and uvicorn on first use (0 if they were loaded already); SQLAlchemy
        # only loads with another database or the first event API call (storage/database.py).
        self.import_seconds = import_seconds
        self.reset_seconds: list[float] = []  # how long each reset() took
        self.client = EmulatorClient(
            self.base_url,
            api_key=api_key,
            secret_key=secret_key,
            admin_token=self.settings.admin_token,
        )
        control = self.control
        # What every test starts from: the limits, projects and (with a seed) data at start.
        self._limits = dataclasses.replace(control.backend.limits)
        self._tenancy: Tenancy = control.backend.tenancy
        self._baseline = control.export_state() if self.settings.seed is not None else None

    @property
    def control(self) -> Control:
        control: Control = self.thread.app.state.control
        return control

    def reset(self, **limits: Any) -> None:
        """Back to the state at start: no mappings, ids, journal, faults, snapshots or clock
        changes; the session's limits (with `limits` changed) and projects; the seed, if any."""
        started = time.perf_counter()
        unknown = set(limits) - set(_LIMIT_NAMES)
        if unknown:
            raise TypeError(f"unknown limits {sorted(unknown)}; limits are {list(_LIMIT_NAMES)}")
        control = self.control
        backend = control.backend
        control.reset()
        control.snapshots.clear()
        control.journal.resize(self.settings.journal_size)
        if backend.tenancy is not self._tenancy:
            backend.tenancy = self._tenancy
        for name in _LIMIT_NAMES:
            setattr(backend.limits, name, limits.get(name, getattr(self._limits, name)))
        if self._baseline is not None:
            control.import_state(copy.deepcopy(self._baseline))
        self.reset_seconds.append(time.perf_counter() - started)

    def stop(self) -> None:
        self.client.close()
        self.thread.stop()


def start_server(
    settings: Settings,
    *,
    timeout: float = DEFAULT_START_TIMEOUT,
    explicit_keys: tuple[str, str] | None = None,
) -> EmulatorServer:
    """Start the emulator in a background thread; EmulatorStartError (never a hang) on failure."""
    importing = time.perf_counter()
    from emulator.server import ServerThread  # the server stack loads only when it is used

    started = time.perf_counter()
    where = f"{settings.host}:{settings.port}"
    try:
        thread = ServerThread(settings)
    except OSError as error:
        raise EmulatorStartError(f"cannot listen on {where}: {error}") from None
    except Exception as error:
        raise EmulatorStartError(f"cannot create the emulator: {error!r}") from None
    try:
        thread.start(timeout=timeout)
    except (TimeoutError, RuntimeError) as error:
        thread.stop()
        raise EmulatorStartError(str(error)) from None
    control: Control = thread.app.state.control
    deadline = started + timeout
    while not control.ready:  # only a seed loads after start
        if control.load_error is not None or time.perf_counter() > deadline:
            thread.stop()
            reason = control.load_error or f"the seed did not load in {timeout} s"
            raise EmulatorStartError(reason)
        time.sleep(0.005)
    api_key, secret_key = handle_keys(settings, explicit_keys)
    return EmulatorServer(
        thread,
        api_key=api_key,
        secret_key=secret_key,
        startup_seconds=time.perf_counter() - started,
        import_seconds=started - importing,
    )


@pytest.fixture(scope="session")
def amplitude_emulator_settings(pytestconfig: pytest.Config) -> Settings:
    """The session server's Settings, from --amplitude-emulator-* flags and ini keys."""
    return pytestconfig.stash[_OPTIONS_KEY].settings


@pytest.fixture(scope="session")
def amplitude_emulator_server(
    pytestconfig: pytest.Config, amplitude_emulator_settings: Settings
) -> Iterator[EmulatorServer]:
    """One emulator for the session (per xdist worker), on a free port unless told otherwise."""
    if pytestconfig.stash[_LIVE_KEY] is not None:
        pytest.skip(_NEEDS_EMULATOR.format(what="the amplitude_emulator_server fixture"))
    options = pytestconfig.stash[_OPTIONS_KEY]
    failure: EmulatorStartError | None = None
    try:
        server = start_server(
            amplitude_emulator_settings,
            timeout=options.start_timeout,
            explicit_keys=options.explicit_keys,
        )
    except EmulatorStartError as error:
        failure = error
    if failure is not None:  # outside the except block, so pytest shows no exception chain
        pytest.fail(f"amplitude-emulator could not start: {failure}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _amplitude_live(pytestconfig: pytest.Config) -> Iterator[LiveAmplitude | None]:
    """Parity mode's handle for the session (None when the emulator is used)."""
    options = pytestconfig.stash[_LIVE_KEY]
    if options is None:
        yield None
        return
    live = LiveAmplitude(options)
    try:
        yield live
    finally:
        live.close()


@pytest.fixture
def amplitude_emulator(
    request: pytest.FixtureRequest, _amplitude_live: LiveAmplitude | None
) -> EmulatorClient:
    """The session's emulator, reset for this test: an EmulatorClient of it (in parity mode,
    a LiveAmplitude handle on Amplitude's real endpoints)."""
    marker = request.node.get_closest_marker(MARKER)
    limits = {} if marker is None else dict(marker.kwargs)
    if marker is not None and marker.args:
        pytest.fail(f"@pytest.mark.{MARKER} takes keyword arguments only", pytrace=False)
    if _amplitude_live is not None:
        if request.node.get_closest_marker(PARITY_MARKER) is None:
            pytest.skip(
                f"not marked @pytest.mark.{PARITY_MARKER}: with --amplitude-live only parity "
                "tests run, against Amplitude"
            )
        if limits:
            pytest.skip(_NEEDS_EMULATOR.format(what=f"@pytest.mark.{MARKER} sets its limits"))
        return _amplitude_live
    amplitude_emulator_server: EmulatorServer = request.getfixturevalue("amplitude_emulator_server")
    try:
        amplitude_emulator_server.reset(**limits)
    except TypeError as error:
        pytest.fail(f"@pytest.mark.{MARKER}: {error}", pytrace=False)
    return amplitude_emulator_server.client
