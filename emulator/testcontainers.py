"""The emulator's Docker image in a test, with testcontainers-python (an optional extra).

    pip install 'amplitude-usermap-emulator[testcontainers]'
    docker build -t amplitude-usermap-emulator .

    from emulator.testcontainers import AmplitudeEmulatorContainer

    with AmplitudeEmulatorContainer().with_setting("rate_limit", "off") as amplitude:
        base_url = amplitude.get_base_url()  # returns once GET /_emulator/ready answers 200

Only this module imports testcontainers; the rest of the package never needs it.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any, Self

from testcontainers.core.container import DockerContainer

from emulator.settings import OPTIONS

#: The tag `docker compose -f docker/compose.yaml build` gives the image.
DEFAULT_IMAGE = "amplitude-usermap-emulator:latest"
#: The port the image listens on (its EXPOSE and AMPLITUDE_EMULATOR_PORT).
CONTAINER_PORT = 8000
READY_PATH = "/_emulator/ready"

_SETTING_ENV = {option.name: option.env for option in OPTIONS}
# The image's own: the emulator must listen on 0.0.0.0:8000 inside the container.
_FIXED_SETTINGS = frozenset({"host", "port"})


class EmulatorNotReady(TimeoutError):
    """The emulator did not answer GET /_emulator/ready with 200 in time, or never will."""


def format_base_url(host: str, port: int | str) -> str:
    """`http://host:port`, with brackets around an IPv6 address."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def wait_until_ready(
    base_url: str,
    *,
    timeout: float = 30.0,
    interval: float = 0.1,
    admin_token: str | None = None,
) -> None:
    """Poll GET /_emulator/ready until it answers 200.

    Raises EmulatorNotReady after `timeout` seconds, or at once when the emulator says its seed
    failed to load or refuses the admin token: waiting longer would not help.
    """
    headers = {} if admin_token is None else {"Authorization": f"Bearer {admin_token}"}
    request = urllib.request.Request(base_url.rstrip("/") + READY_PATH, headers=headers)
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        remaining = deadline - time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=max(0.1, min(2.0, remaining))):
                return
        except urllib.error.HTTPError as error:
            body = error.read().decode("utf-8", "replace")
            last = f"HTTP {error.code}: {body}"
            if error.code == 401 or _load_failed(body):
                raise EmulatorNotReady(f"{request.full_url} answered {last}") from None
        except OSError as error:  # refused, reset, timed out: still starting
            last = str(error)
        if time.monotonic() >= deadline:
            raise EmulatorNotReady(f"{request.full_url} not ready after {timeout} s: {last}")
        time.sleep(interval)


def _load_failed(body: str) -> bool:
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("status") == "failed"


class AmplitudeEmulatorContainer(DockerContainer):
    """The emulator image with port 8000 exposed; `get_base_url()` waits until it is ready.

    Settings are environment variables of the container: `with_setting("rate_limit", "off")`
    sets AMPLITUDE_EMULATOR_RATE_LIMIT, and refuses names the emulator does not have.
    """

    def __init__(
        self,
        image: str = DEFAULT_IMAGE,
        *,
        api_key: str | None = None,
        secret_key: str | None = None,
        admin_token: str | None = None,
        ready_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(image, **kwargs)
        self.admin_token = admin_token
        self.ready_timeout = ready_timeout
        self._ready_url: str | None = None
        self.with_exposed_ports(CONTAINER_PORT)
        for name, value in (
            ("api_key", api_key),
            ("secret_key", secret_key),
            ("admin_token", admin_token),
        ):
            if value is not None:
                self.with_setting(name, value)

    def with_setting(self, name: str, value: object) -> Self:
        """Set an emulator option (a name of emulator.settings.OPTIONS, e.g. "max_batch")."""
        if name not in _SETTING_ENV:
            raise ValueError(f"the emulator has no setting {name!r}; see emulator.settings")
        if name in _FIXED_SETTINGS:
            raise ValueError(f"{name} is fixed by the image (0.0.0.0:{CONTAINER_PORT})")
        if name == "admin_token":
            self.admin_token = str(value)
        self.with_env(_SETTING_ENV[name], str(value))
        return self

    def get_base_url(self) -> str:
        """The emulator's URL from the host, e.g. http://localhost:32768, once it is ready."""
        host: str = self.get_container_host_ip()
        port = int(self.get_exposed_port(CONTAINER_PORT))
        url = format_base_url(host, port)
        if url != self._ready_url:
            wait_until_ready(url, timeout=self.ready_timeout, admin_token=self.admin_token)
            self._ready_url = url
        return url

    def stop(self, *args: Any, **kwargs: Any) -> None:
        self._ready_url = None
        super().stop(*args, **kwargs)
