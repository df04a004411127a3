"""The load generator's ceiling: a minimal HTTP responder that answers every request at once.

`python -m bench.ceiling --port 0` prints its address like the other servers. It parses nothing
but the end of each request (head plus Content-Length body) and answers a fixed 200, so wrk
against it shows how many requests per second wrk itself can send from its core.
"""

from __future__ import annotations

import argparse
import asyncio
import re

_ANSWER = (
    b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{"code":200}'
)
_LENGTH = re.compile(rb"(?im)^content-length:\s*(\d+)\s*$")


class Responder(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        answers = 0
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            found = _LENGTH.search(self.buffer, 0, end)
            total = end + 4 + (int(found.group(1)) if found else 0)
            if len(self.buffer) < total:
                break
            self.buffer = self.buffer[total:]
            answers += 1
        if answers and self.transport is not None:
            self.transport.write(_ANSWER * answers)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Responder, host, port)
    address = server.sockets[0].getsockname()
    print(f"ceiling listening on http://{address[0]}:{address[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    arguments = parser.parse_args(argv)
    asyncio.run(serve(arguments.host, arguments.port))


if __name__ == "__main__":
    main()
