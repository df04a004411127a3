"""emulator.testcontainers.AmplitudeEmulatorContainer, mostly without Docker.

testcontainers is an optional extra, and its DockerContainer talks to a Docker engine as soon as
it is constructed. So the helper is loaded here on top of a stand-in base class whose container
host and mapped port point at an emulator running in this process: URL building, settings and
the wait on /_emulator/ready run for real. That the stand-in matches testcontainers' API is
checked when testcontainers is installed; the image itself is only started where `docker info`
succeeds.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import shutil
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import pytest
import yaml

from emulator.server import ServerThread
from emulator.settings import Settings
from tests.conftest import StartEmulator

ROOT = Path(__file__).resolve().parents[2]
MODULE_PATH = ROOT / "emulator" / "testcontainers.py"


class StandInContainer:
    """The part of testcontainers' DockerContainer the helper uses. `target` is where the
    "container" is: (host, port) of an emulator started by the test."""

    def __init__(self, image: str, **kwargs: Any) -> None:
        self.image = image
        self.kwargs = kwargs
        self.env: dict[str, str] = {}
        self.ports: dict[str, int | None] = {}
        self.target: tuple[str, int] | None = None
        self.stopped = False

    def with_env(self, key: str, value: str) -> Self:
        self.env[key] = value
        return self

    def with_exposed_ports(self, *ports: str | int) -> Self:
        for port in ports:
            self.ports[str(port)] = None
        return self

    def get_container_host_ip(self) -> str:
        assert self.target is not None, "the test sets target"
        return self.target[0]

    def get_exposed_port(self, port: int) -> int:
        assert str(port) in self.ports, f"port {port} was not exposed"
        assert self.target is not None
        return self.target[1]

    def start(self) -> Self:
        return self

    def stop(self, force: bool = True, delete_volume: bool = True) -> None:
        del force, delete_volume
        self.stopped = True

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def load_helper(base: type) -> types.ModuleType:
    """emulator/testcontainers.py executed with `base` as testcontainers' DockerContainer; it is
    loaded under a name of its own, so `emulator.testcontainers` in sys.modules is untouched."""
    fakes = {
        "testcontainers": types.ModuleType("testcontainers"),
        "testcontainers.core": types.ModuleType("testcontainers.core"),
        "testcontainers.core.container": types.ModuleType("testcontainers.core.container"),
    }
    fakes["testcontainers.core.container"].DockerContainer = base  # type: ignore[attr-defined]
    saved = {name: sys.modules.get(name) for name in fakes}
    sys.modules.update(fakes)
    try:
        spec = importlib.util.spec_from_file_location("_emulator_testcontainers", MODULE_PATH)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, previous in saved.items():
            if previous is None:
                del sys.modules[name]
            else:
                sys.modules[name] = previous
    return module


@pytest.fixture(scope="module")
def helper() -> types.ModuleType:
    return load_helper(StandInContainer)


def aimed_at(container: Any, server: ServerThread) -> Any:
    host, port = httpx.URL(server.base_url).host, httpx.URL(server.base_url).port
    assert port is not None
    container.target = (host, port)
    return container


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_get_base_url_of_a_ready_emulator(
    helper: types.ModuleType, start_emulator: StartEmulator
) -> None:
    server = start_emulator()
    container = aimed_at(helper.AmplitudeEmulatorContainer(), server)
    assert container.image == helper.DEFAULT_IMAGE
    assert container.ports == {"8000": None}
    assert container.get_base_url() == server.base_url
    with urllib.request.urlopen(server.base_url + "/_emulator/ready", timeout=5) as answer:
        assert answer.status == 200


def test_get_base_url_waits_while_the_emulator_is_loading(
    helper: types.ModuleType, start_emulator: StartEmulator
) -> None:
    server = start_emulator()
    control = server.app.state.control
    control.ready = False  # /_emulator/ready answers 503 "loading", as while a seed loads
    threading.Timer(0.6, lambda: setattr(control, "ready", True)).start()
    container = aimed_at(helper.AmplitudeEmulatorContainer(), server)
    started = time.monotonic()
    assert container.get_base_url() == server.base_url
    assert time.monotonic() - started >= 0.5


def test_get_base_url_waits_for_the_port_to_open(helper: types.ModuleType) -> None:
    port = free_port()
    servers: list[ServerThread] = []
    settings = Settings(port=port, log_level="warning")
    opener = threading.Timer(0.6, lambda: servers.append(ServerThread(settings).start()))
    opener.start()
    try:
        container = helper.AmplitudeEmulatorContainer()
        container.target = ("127.0.0.1", port)
        assert container.get_base_url() == f"http://127.0.0.1:{port}"
    finally:
        opener.join()
        for server in servers:
            server.stop()


def test_get_base_url_gives_up_after_the_timeout(helper: types.ModuleType) -> None:
    container = helper.AmplitudeEmulatorContainer(ready_timeout=0.5)
    container.target = ("127.0.0.1", free_port())
    started = time.monotonic()
    with pytest.raises(helper.EmulatorNotReady, match=r"not ready after 0\.5 s"):
        container.get_base_url()
    assert time.monotonic() - started < 3


def test_a_failed_seed_is_reported_at_once(
    helper: types.ModuleType, start_emulator: StartEmulator, tmp_path: Path
) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text("[not json", encoding="utf-8")
    server = start_emulator(seed=seed)
    container = aimed_at(helper.AmplitudeEmulatorContainer(ready_timeout=30), server)
    started = time.monotonic()
    with pytest.raises(helper.EmulatorNotReady, match="failed"):
        container.get_base_url()
    assert time.monotonic() - started < 5, "a failed load never heals: no waiting"


def test_the_admin_token_is_set_and_sent(
    helper: types.ModuleType, start_emulator: StartEmulator
) -> None:
    server = start_emulator(admin_token="t0ken")
    container = aimed_at(helper.AmplitudeEmulatorContainer(admin_token="t0ken"), server)
    assert container.env["AMPLITUDE_EMULATOR_ADMIN_TOKEN"] == "t0ken"
    assert container.get_base_url() == server.base_url
    without = aimed_at(helper.AmplitudeEmulatorContainer(ready_timeout=30), server)
    with pytest.raises(helper.EmulatorNotReady, match="401"):
        without.get_base_url()


def test_readiness_is_remembered_until_stop(
    helper: types.ModuleType, start_emulator: StartEmulator
) -> None:
    server = start_emulator()
    container = aimed_at(helper.AmplitudeEmulatorContainer(ready_timeout=0.3), server)
    container.get_base_url()
    server.app.state.control.ready = False
    assert container.get_base_url() == server.base_url, "no second wait"
    container.stop()
    assert container.stopped
    with pytest.raises(helper.EmulatorNotReady):
        container.get_base_url()


def test_settings_become_environment_variables(helper: types.ModuleType) -> None:
    container = helper.AmplitudeEmulatorContainer(
        "registry.example/amplitude:1", api_key="k", secret_key="s", network_mode="bridge"
    )
    assert container.image == "registry.example/amplitude:1"
    assert container.kwargs == {"network_mode": "bridge"}
    assert container.with_setting("rate_limit", "off") is container
    container.with_setting("max_batch", 10)
    assert container.env == {
        "AMPLITUDE_EMULATOR_API_KEY": "k",
        "AMPLITUDE_EMULATOR_SECRET_KEY": "s",
        "AMPLITUDE_EMULATOR_RATE_LIMIT": "off",
        "AMPLITUDE_EMULATOR_MAX_BATCH": "10",
    }
    with pytest.raises(ValueError, match="no setting 'rate_limt'"):
        container.with_setting("rate_limt", "off")
    for fixed in ("host", "port"):
        with pytest.raises(ValueError, match="fixed by the image"):
            container.with_setting(fixed, "1")


def test_base_urls(helper: types.ModuleType) -> None:
    assert helper.format_base_url("localhost", 32768) == "http://localhost:32768"
    assert helper.format_base_url("::1", "8000") == "http://[::1]:8000"
    assert helper.format_base_url("[::1]", 8000) == "http://[::1]:8000"


def test_defaults_match_the_image_and_compose(helper: types.ModuleType) -> None:
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text(encoding="utf-8"))
    assert compose["services"]["amplitude"]["image"] == helper.DEFAULT_IMAGE
    assert f"EXPOSE {helper.CONTAINER_PORT}\n" in (ROOT / "Dockerfile").read_text()


def base_class_methods_used() -> set[str]:
    """Methods the helper calls on self or super() without defining them itself."""
    tree = ast.parse(MODULE_PATH.read_text(encoding="utf-8"))
    (helper_class,) = [
        node
        for node in tree.body
        if isinstance(node, ast.ClassDef) and node.name == "AmplitudeEmulatorContainer"
    ]
    defined = {node.name for node in helper_class.body if isinstance(node, ast.FunctionDef)}
    called: set[str] = set()
    for node in ast.walk(helper_class):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            on_self = isinstance(owner, ast.Name) and owner.id == "self"
            on_super = (
                isinstance(owner, ast.Call)
                and isinstance(owner.func, ast.Name)
                and owner.func.id == "super"
            )
            if on_self or on_super:
                called.add(node.func.attr)
    return (called - defined) | {"__init__", "stop"}


def test_the_stand_in_has_what_the_helper_uses() -> None:
    used = base_class_methods_used()
    assert {"with_env", "with_exposed_ports", "get_container_host_ip", "get_exposed_port"} <= used
    for name in used:
        assert callable(getattr(StandInContainer, name, None)), name


def test_the_real_base_class_has_what_the_helper_uses() -> None:
    container_module = pytest.importorskip(
        "testcontainers.core.container",
        reason="testcontainers is not installed (pip install -e '.[testcontainers]')",
    )
    real = container_module.DockerContainer
    for name in base_class_methods_used():
        real_method = getattr(real, name, None)
        assert callable(real_method), f"testcontainers' DockerContainer has no {name}"
        stand_in = inspect.signature(getattr(StandInContainer, name))
        real_signature = inspect.signature(real_method)
        for parameter in stand_in.parameters.values():
            if parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL):
                continue
            assert parameter.name in real_signature.parameters, (name, parameter.name)
    assert issubclass(load_helper(real).AmplitudeEmulatorContainer, real)


def docker_engine_problem() -> str | None:
    """Why the image cannot be started here, or None when it can."""
    if importlib.util.find_spec("testcontainers") is None:
        return "testcontainers is not installed (pip install -e '.[testcontainers]')"
    if shutil.which("docker") is None:
        return "no docker command"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer in 30 s"
    if info.returncode != 0:
        first = (info.stderr.strip().splitlines() or ["no output"])[-1]
        return f"no Docker engine: `docker info` failed ({first})"
    return None


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    problem = docker_engine_problem()
    if problem is not None:
        pytest.skip(problem)
    tag = f"amplitude-usermap-emulator:test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "build", "-t", tag, str(ROOT)], check=True, timeout=600)
    yield tag
    subprocess.run(["docker", "image", "rm", "-f", tag], check=False, timeout=60)


@pytest.mark.slow
def test_the_image_in_docker(image: str) -> None:
    from emulator.testcontainers import AmplitudeEmulatorContainer

    with AmplitudeEmulatorContainer(image, api_key="key", secret_key="secret") as container:
        base_url = container.get_base_url()
        mapping = '[{"user_id": "anon", "global_user_id": "known"}]'
        answer = httpx.post(f"{base_url}/usermap", data={"api_key": "key", "mapping": mapping})
        assert answer.json() == {"code": 200}
        read = httpx.get(
            f"{base_url}/api/2/usermap", params={"user_ids": "anon"}, auth=("key", "secret")
        )
        assert read.json()["anon"]["mapped_to"][0]["user_id"] == "known"
        container_id = container.get_wrapped_container().id
        deadline = time.monotonic() + 60
        status = ""
        while time.monotonic() < deadline:
            status = subprocess.run(
                ["docker", "inspect", "--format", "{{.State.Health.Status}}", container_id],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            if status == "healthy":
                break
            time.sleep(1)
        assert status == "healthy", "the image's HEALTHCHECK passes in Docker"
