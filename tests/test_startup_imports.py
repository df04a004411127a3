"""On SQLite the User Mapping API never imports SQLAlchemy (a quarter of the start-up time):
starting the server, mapping, reading, resetting (over HTTP and in-process, as the pytest plugin
does), health, readiness and the state counts. The first event loads it, and works.

Each case runs in a fresh interpreter, started as a user starts the emulator, so nothing this
test process imported hides an import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import clean_environment

# Runs in the subprocess; prints one JSON document of what it saw. Argument: the database URL,
# or "default" for ServerThread's own settings.
SCRIPT = r"""
import json
import re
import sys

import httpx

from emulator.pytest_plugin import EmulatorServer
from emulator.server import ServerThread
from emulator.settings import Settings


def sqlalchemy_modules():
    return sorted(name for name in sys.modules if name.partition(".")[0] == "sqlalchemy")


seen = {"at_start": sqlalchemy_modules()}
url = sys.argv[1]
thread = ServerThread() if url == "default" else ServerThread(
    Settings(port=0, log_level="warning", database_url=url)
)
seen["database_url"] = thread.settings.database_url
server = EmulatorServer(thread.start(), api_key="key", secret_key="secret", startup_seconds=0.0)
client = server.client
try:
    client.map("user-1", "global-1")
    seen["read"] = client.mappings("user-1", "global-1")
    page = httpx.get(server.base_url + "/_emulator").text
    seen["counts"] = dict(re.findall(r"<li>(orgs|users|mappings): (\d+)</li>", page))
    seen["health"] = client.health()
    seen["ready"] = client.ready()
    server.reset()  # the pytest plugin's reset between tests: in-process
    seen["after_plugin_reset"] = client.mappings("user-1")
    client.map("user-2", "global-2")
    client.reset()  # POST /_emulator/reset
    seen["after_http_reset"] = client.mappings("user-2")
    seen["before_events"] = sqlalchemy_modules()
    response = httpx.post(
        server.base_url + "/2/httpapi",
        json={"api_key": "key", "events": [{"user_id": "user-3", "event_type": "Signed Up"}]},
    )
    seen["event"] = [response.status_code, response.json()]
    client.map("user-3", "global-3")  # the mapping API after SQLAlchemy, on the same database
    seen["read_after_events"] = client.mappings("user-3")
    seen["sqlalchemy_after_events"] = "sqlalchemy" in sys.modules
finally:
    server.stop()
print(json.dumps(seen))
"""


def run_emulator_script(database_url: str, cwd: Path) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT, database_url],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_environment(),
        cwd=cwd,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    seen: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return seen


@pytest.mark.parametrize("database", ["default", "file"])
def test_the_mapping_api_on_sqlite_never_imports_sqlalchemy(database: str, tmp_path: Path) -> None:
    url = "default" if database == "default" else f"sqlite:///{tmp_path / 'emulator.db'}"
    # From the repository root, as the rest of the suite imports the emulator.
    seen = run_emulator_script(url, Path(__file__).resolve().parents[1])

    assert seen["database_url"] == ("sqlite://" if database == "default" else url)
    assert seen["at_start"] == []
    assert seen["read"]["user-1"]["mapped_to"][0]["user_id"] == "global-1"
    assert [edge["user_id"] for edge in seen["read"]["global-1"]["mapped_from"]] == ["user-1"]
    assert seen["counts"] == {"orgs": "1", "users": "2", "mappings": "1"}
    assert seen["health"] is True
    assert seen["ready"] is True
    assert seen["after_plugin_reset"]["user-1"]["mapped_to"] == []
    assert seen["after_http_reset"]["user-2"]["mapped_to"] == []
    assert seen["before_events"] == [], "the mapping API imported SQLAlchemy"

    # The first event loads SQLAlchemy, and the user gets the next amplitude id of the org's one
    # counter (the mapping API's ids were reset).
    status, body = seen["event"]
    assert status == 200, body
    assert body["events_ingested"] == 1
    assert seen["sqlalchemy_after_events"] is True
    user_3 = seen["read_after_events"]["user-3"]
    assert user_3["mapped_to"][0]["user_id"] == "global-3"
    assert user_3["amplitude_id"] == 1
    if database == "file":
        assert (tmp_path / "emulator.db").exists()
