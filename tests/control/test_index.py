"""GET /_emulator: an HTML page listing the control endpoints and a summary of the state."""

from __future__ import annotations

import html
import re

import httpx

from emulator.server import ServerThread
from tests.control import CONTROL, add_fault, control_routes, map_ok, set_clock

ROW = re.compile(r"<tr><td>([A-Z]+)</td><td><code>([^<]*)</code></td>")


def test_index_lists_every_control_endpoint(emulator: ServerThread, http: httpx.Client) -> None:
    response = http.get(CONTROL)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")

    listed = {(method, html.unescape(path)) for method, path in ROW.findall(response.text)}
    served = set(control_routes(emulator.app.routes))
    assert len(served) >= 19
    assert served == listed
    assert "/usermap" in response.text
    assert "/api/2/usermap" in response.text


def test_index_summarises_the_state(http: httpx.Client, api_key: str) -> None:
    set_clock(http, freeze=True, set=1_234_567)
    map_ok(http, api_key, {"a": "g", "b": "g"})
    add_fault(http, {"match": {"api_key": "nobody"}, "effect": {"status": 503}})
    http.post(f"{CONTROL}/snapshots/index-summary")

    page = http.get(CONTROL).text

    for fact in (
        "ready: true",
        "permissive: true",
        "orgs: 1",
        "users: 3",
        "mappings: 2",
        "journal_entries: 1",
        "fault_rules: 1",
        "index-summary",
        "1234567",
    ):
        assert fact in html.unescape(page), fact
