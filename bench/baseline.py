"""The baseline: a bare FastAPI app on the emulator's uvicorn settings, without storage.

Its handlers parse the same requests as the emulator's two routes, the way a FastAPI app usually
does (Form fields, HTTPBasic, a returned dict), and answer JSON of the same size:

- POST /usermap: form body `api_key` + `mapping` (a JSON array), answers {"code": 200}.
- GET /api/2/usermap: Basic auth + form body `user_ids`, answers the emulator's document for
  ids mapped pairwise (the 1st into the 2nd, the 3rd into the 4th, ...).

`python -m bench.baseline --port 0` serves it the way `amplitude-emulator serve` serves the
emulator (same socket set-up, same uvicorn Config) and prints the address it listens on.
"""

from __future__ import annotations

import argparse
import json
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials

basic = HTTPBasic()


def create_app() -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, redirect_slashes=False)

    @app.post("/usermap")
    async def usermap(
        api_key: Annotated[str, Form()], mapping: Annotated[str, Form()]
    ) -> dict[str, int]:
        objects = json.loads(mapping)
        if not api_key or not isinstance(objects, list | dict):
            raise HTTPException(400)
        return {"code": 200}

    @app.get("/api/2/usermap")
    async def read(
        credentials: Annotated[HTTPBasicCredentials, Depends(basic)],
        user_ids: Annotated[list[str], Form()],
    ) -> dict[str, Any]:
        if not credentials.username:
            raise HTTPException(401)
        answer: dict[str, Any] = {}
        for index, user_id in enumerate(user_ids):
            is_user = index % 2 == 0 and index + 1 < len(user_ids)
            is_global = index % 2 == 1
            answer[user_id] = {
                "amplitude_id": index + 1,
                "mapped_from": (
                    [{"amplitude_id": index, "user_id": user_ids[index - 1]}] if is_global else []
                ),
                "mapped_to": (
                    [{"amplitude_id": index + 2, "user_id": user_ids[index + 1]}] if is_user else []
                ),
            }
        return answer

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log-level", default="warning")
    parser.add_argument(
        "--uvicorn-defaults",
        action="store_true",
        help="serve on uvicorn's default settings without importing the emulator (the start-up "
        "and memory comparison: a bare FastAPI app as its users start one)",
    )
    parser.add_argument(
        "--http",
        default="auto",
        help="with --uvicorn-defaults: uvicorn's HTTP protocol (auto, h11, httptools)",
    )
    arguments = parser.parse_args(argv)

    import socket

    import uvicorn

    app = create_app()
    if arguments.uvicorn_defaults:
        sock = socket.create_server((arguments.host, arguments.port))
        config = uvicorn.Config(
            app, log_level=arguments.log_level, lifespan="on", http=arguments.http
        )
        host, port = sock.getsockname()[:2]
        address = f"http://{host}:{port}"
    else:
        # The emulator's own socket set-up and uvicorn Config (protocol, loop, limits).
        from emulator.server import base_url, bind_socket, uvicorn_config
        from emulator.settings import Settings

        settings = Settings(host=arguments.host, port=arguments.port, log_level=arguments.log_level)
        sock = bind_socket(settings.host, settings.port)
        config = uvicorn_config(app, settings)
        address = base_url(sock)
    server = uvicorn.Server(config)
    print(f"baseline listening on {address}", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
