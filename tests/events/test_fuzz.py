"""No input gives a 500: random bodies and parameters to every new endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.server import ServerThread
from tests.events import ACTIVITY, BATCH, HTTPAPI, IDENTIFY, SEARCH, USERS

FIELDS = [
    "api_key",
    "events",
    "options",
    "event_type",
    "user_id",
    "device_id",
    "time",
    "insert_id",
    "event_properties",
    "user_properties",
    "$set",
    "$add",
    "$append",
    "$clearAll",
    "min_id_length",
    "session_id",
]
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), children, max_size=5)
    ),
    max_leaves=25,
)
PARAMS = st.dictionaries(
    st.sampled_from(["user", "offset", "limit", "direction", "start", "end", "m", "i", "s"]),
    st.text(max_size=12) | st.integers(-5, 99_999_999).map(str),
    max_size=5,
)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        yield http


def never_500(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.headers.get("content-type") == "application/json":
        json.loads(response.content)


@FUZZ
@given(
    path=st.sampled_from([HTTPAPI, BATCH]),
    events=st.lists(st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6), max_size=4),
    extra=st.dictionaries(st.sampled_from(["options", "api_key"]), JSON, max_size=2),
)
def test_uploads(client: httpx.Client, path: str, events: list[Any], extra: dict[str, Any]) -> None:
    never_500(client.post(path, json={"api_key": "key-fuzz", "events": events, **extra}))


@FUZZ
@given(body=st.binary(max_size=64) | JSON.map(lambda value: json.dumps(value).encode()))
def test_raw_bodies(client: httpx.Client, body: bytes) -> None:
    never_500(client.post(HTTPAPI, content=body))


@FUZZ
@given(identification=JSON.map(json.dumps) | st.text(max_size=20), get=st.booleans())
def test_identify(client: httpx.Client, identification: str, get: bool) -> None:
    params = {"api_key": "key-fuzz", "identification": identification}
    response = client.get(IDENTIFY, params=params) if get else client.post(IDENTIFY, data=params)
    never_500(response)


@FUZZ
@given(path=st.sampled_from([SEARCH, ACTIVITY, USERS]), params=PARAMS)
def test_dashboard_reads(client: httpx.Client, path: str, params: dict[str, str]) -> None:
    never_500(client.get(path, params=params, auth=("key-fuzz", "secret")))
