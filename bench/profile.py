"""Profile a server in-process under load: `python -m bench.profile post|get|batch|mixed`.

The server (emulator or baseline) runs in this process's main thread under pyinstrument (the
`bench` extra); wrk, or a client thread for batches, drives it; the profile is printed as text.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import wrk
from bench.http import HttpClient


def _app(target: str, database_url: str) -> tuple[Any, Any]:
    from emulator.settings import Settings, build_settings

    if target == "baseline":
        from bench.baseline import create_app

        return create_app(), Settings(port=0, log_level="warning")
    from emulator.app import create_app as create_emulator

    settings = build_settings(
        {"port": 0, "log_level": "warning", "rate_limit": None, "database_url": database_url}
    )
    return create_emulator(settings), settings


def _drive(scenario: str, base_url: str, seconds: float) -> None:
    client = HttpClient(base_url)
    client.map([("ua", "ub")])
    if scenario == "batch":
        deadline = time.monotonic() + seconds
        batch = 0
        while time.monotonic() < deadline:
            batch += 1
            client.map([(f"b{batch}-{i}", f"g{batch}-{i // 2}") for i in range(2000)])
        client.close()
        return
    client.close()
    wrk_path = wrk.ensure_installed()
    lua = {
        "post": wrk.script(wrk.POST_SINGLE),
        "get": wrk.script(wrk.GET_TWO, a="ua", b="ub"),
        "mixed": wrk.script(wrk.MIXED),
    }[scenario]
    connections = 32 if scenario == "mixed" else 16
    result = wrk.run(wrk_path, base_url, lua, connections=connections, seconds=seconds)
    print(f"{scenario}: {result.rps:.0f} requests/s under the profiler, {result.errors} errors")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("scenario", choices=("post", "get", "batch", "mixed"))
    parser.add_argument("--target", choices=("emulator", "baseline"), default="emulator")
    parser.add_argument("--database", choices=("memory", "file"), default="file")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=0.0002, help="sampling interval (s)")
    parser.add_argument("--output", type=Path, help="also write the text profile here")
    arguments = parser.parse_args(argv)

    import uvicorn
    from pyinstrument import Profiler

    from emulator.server import base_url, bind_socket, uvicorn_config

    directory = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    database_url = (
        "sqlite://" if arguments.database == "memory" else f"sqlite:///{directory / 'p.db'}"
    )
    app, settings = _app(arguments.target, database_url)
    sock = bind_socket(settings.host, 0)
    server = uvicorn.Server(uvicorn_config(app, settings))
    url = base_url(sock)

    def load() -> None:
        try:
            while not server.started:
                time.sleep(0.01)
            _drive(arguments.scenario, url, arguments.seconds)
        finally:
            server.should_exit = True

    threading.Thread(target=load, daemon=True).start()
    profiler = Profiler(interval=arguments.interval)
    profiler.start()
    server.run(sockets=[sock])
    profiler.stop()
    sock.close()
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    print(text)
    if arguments.output is not None:
        arguments.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
