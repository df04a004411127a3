"""The load generator: wrk (Debian's package), with Lua scripts for form bodies and GET bodies.

wrk runs pinned to the client core (`taskset -c 1`). Each script's `done` prints one JSON line
(`WRKJSON {...}`) with the request count, errors and latency percentiles.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.http import API_KEY, READ, USERMAP, basic_auth
from bench.servers import CLIENT_CORE, pinned

THREADS = 2
_MARK = "WRKJSON "

# Shared by every script: a JSON summary line from wrk's `done` hook.
_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

# Thread numbering: each wrk thread gets a distinct id, so ids never collide across threads.
_THREAD_IDS = r"""
local next_thread = 0
function setup(thread)
  next_thread = next_thread + 1
  thread:set("tid", next_thread)
end
"""

# One new mapping per request: user <run>-<thread>-<n> into one of 1000 globals.
POST_SINGLE = (
    _THREAD_IDS
    + r"""
local n = 0
local run = "r"
function init(args)
  if args[1] then run = args[1] end
end
function request()
  n = n + 1
  local body = "api_key=__KEY__&mapping=%5B%7B%22user_id%22%3A%22u" .. run .. "-" .. tid .. "-" ..
    n .. "%22%2C%22global_user_id%22%3A%22g" .. (n % 1000) .. "%22%7D%5D"
  return wrk.format("POST", "__USERMAP__",
    {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end
"""
    + _DONE
)

# The same request every time: a GET with Basic auth and a form body of two user ids.
GET_TWO = (
    r"""
wrk.method = "GET"
wrk.path = "__READ__"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "__AUTH__"
wrk.body = "user_ids=__A__&user_ids=__B__"
"""
    + _DONE
)

# Map, unmap and read in turn. Users (u...) only ever map into globals (g...), so no request can
# close a cycle and every answer must be a 200.
MIXED = (
    _THREAD_IDS
    + r"""
local n = 0
local run = "r"
function init(args)
  if args[1] then run = args[1] end
end
function request()
  n = n + 1
  local user = "u" .. run .. "-" .. tid .. "-" .. (n % 200)
  local kind = n % 3
  if kind == 0 then
    local body = "api_key=__KEY__&mapping=%5B%7B%22user_id%22%3A%22" .. user ..
      "%22%2C%22global_user_id%22%3A%22g" .. (n % 50) .. "%22%7D%5D"
    return wrk.format("POST", "__USERMAP__",
      {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
  elseif kind == 1 then
    local body = "api_key=__KEY__&mapping=%5B%7B%22user_id%22%3A%22" .. user ..
      "%22%2C%22unmap%22%3Atrue%7D%5D"
    return wrk.format("POST", "__USERMAP__",
      {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
  else
    return wrk.format("GET", "__READ__",
      {["Content-Type"] = "application/x-www-form-urlencoded", ["Authorization"] = "__AUTH__"},
      "user_ids=" .. user .. "&user_ids=g" .. (n % 50))
  end
end
"""
    + _DONE
)


def script(template: str, **values: str) -> str:
    substitutions = {
        "__KEY__": API_KEY,
        "__USERMAP__": USERMAP,
        "__READ__": READ,
        "__AUTH__": basic_auth(),
        **{f"__{name.upper()}__": value for name, value in values.items()},
    }
    for placeholder, value in substitutions.items():
        template = template.replace(placeholder, value)
    return template


def find() -> str | None:
    return shutil.which("wrk")


def ensure_installed() -> str:
    """wrk's path; installs Debian's package (apt-get, as root) when it is missing."""
    found = find()
    if found is not None:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RuntimeError("wrk is not installed; install it (Debian: apt-get install -y wrk)")
    print("bench: installing wrk (apt-get update && apt-get install -y wrk)", flush=True)
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "wrk"]):
        done = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-2000:]}")
    found = find()
    if found is None:
        raise RuntimeError("apt-get installed wrk, but it is not on PATH")
    return found


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    errors: int  # connect, read, write and timeout errors, and answers >= 400
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def run(
    wrk: str,
    base_url: str,
    lua: str,
    *,
    connections: int,
    seconds: float,
    arguments: tuple[str, ...] = (),
) -> WrkResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as file:
        file.write(lua)
        path = Path(file.name)
    try:
        command = pinned(
            [
                wrk,
                f"-t{min(THREADS, connections)}",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                str(path),
                base_url,
                *(["--", *arguments] if arguments else []),
            ],
            CLIENT_CORE,
        )
        result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    finally:
        path.unlink(missing_ok=True)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith(_MARK)), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stdout}{result.stderr}")
    data = json.loads(line[len(_MARK) :])
    errors = sum(data[name] for name in ("connect", "read", "write", "status", "timeout"))
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=errors,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
    )
