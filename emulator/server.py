"""Running the app under uvicorn: in the foreground (the CLI) or in a thread (tests, fixtures)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from emulator import log_redaction
from emulator.app import create_app
from emulator.control.middleware import uvicorn_connection_dropper
from emulator.h11_protocol import protocol_for
from emulator.settings import Settings

# Spec section 3: request targets up to 64 KiB must reach the app (which answers 414 as JSON);
# h11's default of 16 KiB for the whole request head would cut them off first.
MAX_TARGET_REACHING_APP = 64 * 1024
_MAX_REQUEST_HEAD = MAX_TARGET_REACHING_APP + 32 * 1024
# The standard asyncio loop, even where uvloop is installed (uvicorn's "auto" would take it):
# measured here, uvloop adds 5-10% throughput but, with 32 connections mixing writes and reads,
# puts the p99 latency at 60-110 ms instead of 30 and single answers past 250 ms
# (docs/performance.md).
_LOOP = "asyncio"


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket; binding here (not in uvicorn) lets port 0 report the port it got."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the proto
    # says TCP, and without it every keep-alive response waits ~40 ms on Nagle's algorithm.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    options: dict[str, Any] = {
        "http": protocol_for(settings.limits),  # h11, closing stalled connections
        "h11_max_incomplete_event_size": _MAX_REQUEST_HEAD,
        "loop": _LOOP,
        "ws": "none",  # no WebSocket routes: do not look for (or load) a WebSocket library
        "log_level": settings.log_level,
        "lifespan": "on",
        "timeout_graceful_shutdown": 10,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


def _server(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Server:
    server = uvicorn.Server(uvicorn_config(app, settings, **overrides))
    log_redaction.install()  # after uvicorn.Config has configured logging
    # Fault rules that drop a connection abort the TCP connection itself.
    app.state.control.drop_connection = uvicorn_connection_dropper(server.server_state)
    return server


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(settings: Settings) -> None:
    """Serve until interrupted; prints the address it listens on (useful with port 0)."""
    sock = bind_socket(settings.host, settings.port)
    app = create_app(settings)
    server = _server(app, settings)
    print(f"amplitude-emulator listening on {base_url(sock)}", flush=True)
    server.run(sockets=[sock])


class ServerThread:
    """The emulator on a real socket in a background thread; `start()` returns once it answers."""

    def __init__(self, settings: Settings | None = None, **uvicorn_overrides: Any) -> None:
        self.settings = settings or Settings(port=0, log_level="warning")
        self.app = create_app(self.settings)
        self._sock = bind_socket(self.settings.host, self.settings.port)
        self.base_url = base_url(self._sock)
        self._server = _server(self.app, self.settings, **uvicorn_overrides)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._sock]},
            daemon=True,
            name=f"amplitude-emulator {self.base_url}",
        )

    def start(self, timeout: float = 10.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the emulator at {self.base_url} stopped while starting")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the emulator at {self.base_url} did not start in {timeout} s")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
