"""POST /usermap answers (spec section 3): every row of the table, the order of the checks,
all-or-nothing batches, the size limits over real sockets, unknown paths, and no 500s.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.server import ServerThread
from emulator.settings import Limits, Settings
from emulator.tenancy import Org, Project, Region
from tests.conftest import StartEmulator
from tests.support import (
    FORM,
    HINT,
    MISSING_API_KEY,
    MISSING_MAPPING,
    NOT_JSON,
    TOO_LARGE,
    RawResult,
    address_of,
    raw_exchange,
)

USERMAP = "/usermap"
READ = "/api/2/usermap"
MIB = 1_048_576
TARGET_LIMIT = 8192

OK = {"code": 200}
INVALID_MAPPING = {"code": 400, "error": "Invalid mapping"}
URI_TOO_LONG = {"code": 414, "error": "URI too long"}
TOO_MANY = {"code": 429, "error": "Too many requests", "eps_threshold": 50}

US_KEY, US_SECRET = "errors-us-key", "errors-us-secret"
EU_KEY, EU_SECRET = "errors-eu-key", "errors-eu-secret"
CONFIGURED_ORGS = (
    Org(
        name="errors-org",
        projects=(
            Project(
                name="web", org="errors-org", api_key=US_KEY, secret_key=US_SECRET, region=Region.US
            ),
            Project(
                name="eu", org="errors-org", api_key=EU_KEY, secret_key=EU_SECRET, region=Region.EU
            ),
        ),
    ),
)


def invalid_key(key: str) -> dict[str, Any]:
    return {"code": 400, "error": f"Invalid API key: {key}"}


def invalid_mapping(index: int | None = None, missing: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = dict(INVALID_MAPPING)
    if index is not None:
        body["index"] = index
    if missing is not None:
        body["missing_field"] = missing
    return body


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[httpx.Client]:
    """One client for the module (each httpx.Client builds a TLS context, ~80 ms)."""
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        yield http


def objects_json(*pairs: tuple[str, str]) -> str:
    return json.dumps([{"user_id": user, "global_user_id": target} for user, target in pairs])


def post(
    client: httpx.Client, api_key: str | None, mapping: str | None, **extra: str
) -> httpx.Response:
    data = {"api_key": api_key, "mapping": mapping, **extra}
    return client.post(USERMAP, data={k: v for k, v in data.items() if v is not None})


def check(response: httpx.Response, status: int, body: dict[str, Any]) -> None:
    """Status, exact JSON body, JSON content type; a hint on every 4xx and never on a 200."""
    assert (response.status_code, response.json()) == (status, body), response.headers.get(HINT)
    assert response.headers["content-type"] == "application/json"
    if status >= 400:
        assert response.headers.get(HINT), "a refusal without X-Emulator-Hint"
        assert response.headers[HINT].isascii()
    else:
        assert HINT not in response.headers


def read(client: httpx.Client, api_key: str, *user_ids: str) -> dict[str, Any]:
    response = client.get(READ, params={"user_ids": list(user_ids)}, auth=(api_key, "secret"))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def unseen() -> dict[str, Any]:
    return {"mapped_from": [], "mapped_to": []}


def raw(server: ServerThread, request: bytes) -> RawResult:
    """Send `request` byte for byte on a fresh socket and read one response (no 1xx first)."""
    response = raw_exchange(address_of(server.base_url), request)
    assert response.status is not None, f"no response head: {response!r}"
    assert response.interim == [], response.interim
    return response


def check_raw(response: RawResult, status: int, body: dict[str, Any]) -> None:
    assert (response.status, response.json()) == (status, body), response.headers
    assert response.headers["content-type"] == "application/json"
    assert response.headers.get(HINT)


def target_of_length(length: int, api_key: str, mapping: str) -> str:
    """`/usermap?api_key=..&mapping=..&pad=xxx` exactly `length` bytes long."""
    start = f"{USERMAP}?api_key={api_key}&mapping={quote(mapping, safe='')}&pad="
    assert len(start) <= length
    return start + "x" * (length - len(start))


# --- the table, row by row -------------------------------------------------------------------


def test_success(client: httpx.Client, api_key: str) -> None:
    check(post(client, api_key, objects_json(("u", "g"))), 200, OK)


@pytest.mark.parametrize(
    "params",
    [
        {"mapping": objects_json(("u", "g"))},
        {"api_key": "", "mapping": objects_json(("u", "g"))},
        {},
    ],
    ids=["absent", "empty", "nothing-at-all"],
)
def test_api_key_missing(client: httpx.Client, params: dict[str, str]) -> None:
    check(client.post(USERMAP, data=params), 400, MISSING_API_KEY)


def test_api_key_missing_in_a_bodiless_post(client: httpx.Client) -> None:
    check(client.post(USERMAP), 400, MISSING_API_KEY)
    check(client.get(USERMAP), 400, MISSING_API_KEY)


@pytest.mark.parametrize("key", ["undefined", "null"])
def test_literal_undefined_and_null_keys_are_invalid_even_when_permissive(
    client: httpx.Client, key: str
) -> None:
    check(post(client, key, objects_json(("u", "g"))), 400, invalid_key(key))
    check(client.post(USERMAP, params={"api_key": key, "mapping": "{}"}), 400, invalid_key(key))


def test_keys_that_merely_resemble_undefined_are_valid_when_permissive(
    client: httpx.Client,
) -> None:
    # Only the exact literals are refused; permissive mode accepts every other key.
    for key in ("Undefined", "NULL", "undefined-" + uuid.uuid4().hex):
        check(post(client, key, objects_json(("u", "g"))), 200, OK)


@pytest.fixture(scope="module")
def configured() -> Iterator[httpx.Client]:
    """An emulator with one org: a US and an EU project."""
    with (
        ServerThread(Settings(port=0, log_level="warning", orgs=CONFIGURED_ORGS)) as running,
        httpx.Client(base_url=running.base_url, timeout=10) as http,
    ):
        yield http


@pytest.mark.parametrize(
    ("key", "host"),
    [
        ("not-a-configured-key", "localhost"),
        ("undefined", "localhost"),
        ("null", "api.amplitude.com"),
        (US_SECRET, "localhost"),  # a secret key is not an api_key
        (US_KEY, "api.eu.amplitude.com"),
        (US_KEY, "API.EU.AMPLITUDE.COM:443"),
        (EU_KEY, "api.amplitude.com"),
        (EU_KEY, "api2.amplitude.com"),
        ("ключ-🔑", "localhost"),
    ],
)
def test_invalid_api_key_in_configured_mode(configured: httpx.Client, key: str, host: str) -> None:
    response = configured.post(
        USERMAP, data={"api_key": key, "mapping": objects_json(("u", "g"))}, headers={"Host": host}
    )
    check(response, 400, invalid_key(key))


@pytest.mark.parametrize(
    ("key", "host"),
    [
        (US_KEY, "api.amplitude.com"),
        (US_KEY, "localhost"),
        (EU_KEY, "api.eu.amplitude.com"),
        (EU_KEY, "emulator:8000"),
    ],
)
def test_configured_key_on_its_own_or_a_neutral_host(
    configured: httpx.Client, key: str, host: str
) -> None:
    response = configured.post(
        USERMAP, data={"api_key": key, "mapping": objects_json(("u", "g"))}, headers={"Host": host}
    )
    check(response, 200, OK)


@pytest.mark.parametrize("params", [{}, {"mapping": ""}], ids=["absent", "empty"])
def test_mapping_missing(client: httpx.Client, api_key: str, params: dict[str, str]) -> None:
    check(client.post(USERMAP, data={"api_key": api_key, **params}), 400, MISSING_MAPPING)


@pytest.mark.parametrize(
    "mapping",
    [
        "not json",
        "{",
        '[{"user_id":"a","global_user_id":"g"}',
        '{"user_id":"a","global_user_id":"g",}',
        "{'user_id':'a','global_user_id':'g'}",
        "NaN",
        "Infinity",
        '{"user_id":"a","global_user_id":"g","event_id":NaN}',
        "[1,]",
        '[{"user_id":"a","global_user_id":"g"}] trailing',
        "\ufeff[]",
        "[" * 100_000 + "]" * 100_000,
        "\x00",
    ],
)
def test_mapping_not_json(client: httpx.Client, api_key: str, mapping: str) -> None:
    check(post(client, api_key, mapping), 400, NOT_JSON)


@pytest.mark.parametrize(
    ("mapping", "expected"),
    [
        # not an object or an array of objects, or empty: no index
        ('"a string"', invalid_mapping()),
        ("5", invalid_mapping()),
        ("-1.5e3", invalid_mapping()),
        ("true", invalid_mapping()),
        ("null", invalid_mapping()),
        ("[]", invalid_mapping()),
        # an element that is not an object
        ("[1]", invalid_mapping(0)),
        ("[null]", invalid_mapping(0)),
        ('["user"]', invalid_mapping(0)),
        ('[[{"user_id":"a","global_user_id":"g"}]]', invalid_mapping(0)),
        ('[{"user_id":"a","global_user_id":"g"},"b"]', invalid_mapping(1)),
        # user_id
        ("{}", invalid_mapping(0, "user_id")),
        ('{"global_user_id":"g"}', invalid_mapping(0, "user_id")),
        ('{"user_id":null,"global_user_id":"g"}', invalid_mapping(0, "user_id")),
        ('{"user_id":"","global_user_id":"g"}', invalid_mapping(0)),
        ('{"user_id":5,"global_user_id":"g"}', invalid_mapping(0)),
        ('{"user_id":true,"global_user_id":"g"}', invalid_mapping(0)),
        ('{"user_id":["a"],"global_user_id":"g"}', invalid_mapping(0)),
        ('{"user_id":{"id":"a"},"global_user_id":"g"}', invalid_mapping(0)),
        ('{"user_id":null,"unmap":true}', invalid_mapping(0, "user_id")),
        ('{"unmap":true}', invalid_mapping(0, "user_id")),
        ('{"user_id":"","unmap":true}', invalid_mapping(0)),
        ('{"user_id":"\\ud800","global_user_id":"g"}', invalid_mapping(0)),
        # global_user_id
        ('{"user_id":"a"}', invalid_mapping(0, "global_user_id")),
        ('{"user_id":"a","global_user_id":null}', invalid_mapping(0, "global_user_id")),
        ('{"user_id":"a","global_user_id":""}', invalid_mapping(0)),
        ('{"user_id":"a","global_user_id":42}', invalid_mapping(0)),
        ('{"user_id":"a","global_user_id":["g"]}', invalid_mapping(0)),
        ('{"user_id":"a","unmap":false}', invalid_mapping(0, "global_user_id")),
        ('{"user_id":"a","unmap":null}', invalid_mapping(0, "global_user_id")),
        ('{"user_id":"a","global_user_id":"\\udfff"}', invalid_mapping(0)),
        # unmap
        ('{"user_id":"a","unmap":true,"global_user_id":"g"}', invalid_mapping(0)),
        ('{"user_id":"a","unmap":true,"global_user_id":""}', invalid_mapping(0)),
        ('{"user_id":"a","unmap":true,"global_user_id":1}', invalid_mapping(0)),
        ('{"user_id":"a","global_user_id":"g","unmap":"true"}', invalid_mapping(0)),
        ('{"user_id":"a","unmap":"true"}', invalid_mapping(0)),
        ('{"user_id":"a","global_user_id":"g","unmap":0}', invalid_mapping(0)),
        ('{"user_id":"a","unmap":1}', invalid_mapping(0)),
        ('{"user_id":"a","global_user_id":"g","unmap":[]}', invalid_mapping(0)),
        # the first bad object of a batch is named
        (
            '[{"user_id":"a","global_user_id":"g"},{"user_id":"b","global_user_id":"g"},'
            '{"user_id":"c"},{"user_id":5}]',
            invalid_mapping(2, "global_user_id"),
        ),
        ('[{"user_id":"a","unmap":true},{"user_id":"b","unmap":"yes"}]', invalid_mapping(1)),
    ],
)
def test_invalid_mapping(
    client: httpx.Client, api_key: str, mapping: str, expected: dict[str, Any]
) -> None:
    check(post(client, api_key, mapping), 400, expected)


@pytest.mark.parametrize(
    "mapping",
    [
        '{"user_id":"a","unmap":true,"global_user_id":null}',  # a null id counts as missing
        '{"user_id":"a","global_user_id":"g","unmap":false}',
        '{"user_id":"a","global_user_id":"g","unmap":null}',
        '{"user_id":" ","global_user_id":"\\u0000"}',  # any non-empty string is an id
        '{"user_id":"a","global_user_id":"g","user_id":"b"}',  # duplicate key: JSON's last wins
    ],
)
def test_edge_shapes_that_are_valid(client: httpx.Client, api_key: str, mapping: str) -> None:
    check(post(client, api_key, mapping), 200, OK)


def test_cycle(client: httpx.Client, api_key: str) -> None:
    check(post(client, api_key, objects_json(("a", "b"))), 200, OK)
    check(post(client, api_key, objects_json(("x", "y"), ("b", "a"))), 400, invalid_mapping(1))


def test_more_than_2000_objects(client: httpx.Client, api_key: str) -> None:
    pairs = [(f"u{i}", "g") for i in range(2001)]
    check(post(client, api_key, objects_json(*pairs)), 413, TOO_LARGE)
    assert read(client, api_key, "u0", "g") == {"u0": unseen(), "g": unseen()}


def test_exactly_2000_objects_are_accepted(client: httpx.Client, api_key: str) -> None:
    pairs = [(f"u{i}", "g") for i in range(2000)]
    check(post(client, api_key, objects_json(*pairs)), 200, OK)
    assert read(client, api_key, "u1999")["u1999"]["mapped_to"][0]["user_id"] == "g"


def test_429_row(start_emulator: StartEmulator) -> None:
    running = start_emulator()
    running.app.state.backend.clock.freeze()
    with httpx.Client(base_url=running.base_url, timeout=30) as http:
        key = "rate-key"
        batch = objects_json(*[(f"u{i}", "g") for i in range(1500)])
        check(post(http, key, batch), 200, OK)
        response = post(http, key, objects_json(("late", "g")))
        check(response, 429, TOO_MANY)
        assert response.headers["retry-after"] == "30"
        # Another org is not throttled.
        check(post(http, "other-key", objects_json(("u", "g"))), 200, OK)


# --- the request target: 414 -----------------------------------------------------------------


def test_target_of_exactly_the_limit_is_served(client: httpx.Client, api_key: str) -> None:
    target = target_of_length(TARGET_LIMIT, api_key, objects_json(("u", "g")))
    assert len(target) == TARGET_LIMIT
    check(client.post(target), 200, OK)
    assert read(client, api_key, "u")["u"]["mapped_to"] == [{"amplitude_id": 2, "user_id": "g"}]


def test_target_one_byte_over_the_limit(client: httpx.Client, api_key: str) -> None:
    target = target_of_length(TARGET_LIMIT + 1, api_key, objects_json(("u", "g")))
    check(client.post(target), 414, URI_TOO_LONG)
    check(client.get(target), 414, URI_TOO_LONG)
    assert "form body" in client.post(target).headers[HINT]
    assert read(client, api_key, "u") == {"u": unseen()}


@pytest.mark.parametrize("length", [60 * 1024, 64 * 1024])
def test_very_long_target_reaches_the_app(server: ServerThread, api_key: str, length: int) -> None:
    target = target_of_length(length, api_key, objects_json(("u", "g")))
    for method in ("POST", "GET"):
        request = f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"
        check_raw(raw(server, request.encode()), 414, URI_TOO_LONG)


def test_raw_json_target_over_the_limit(server: ServerThread, api_key: str) -> None:
    # A large batch in the query string exactly as curl -g sends it.
    objects = ",".join(f'{{"user_id":"u{i}","global_user_id":"g"}}' for i in range(300))
    target = f"/usermap?api_key={api_key}&mapping=[{objects}]"
    assert TARGET_LIMIT < len(target) < 64 * 1024
    response = raw(server, f"POST {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    check_raw(response, 414, URI_TOO_LONG)


# --- the request size: 413 -------------------------------------------------------------------


def padded_form(api_key: str, size: int) -> bytes:
    """A valid form body of exactly `size` bytes (an ignored `pad` field fills it up)."""
    start = urlencode({"api_key": api_key, "mapping": objects_json(("u", "g"))}) + "&pad="
    assert len(start) <= size
    return (start + "x" * (size - len(start))).encode()


def test_body_of_exactly_1_mib_is_accepted(client: httpx.Client, api_key: str) -> None:
    body = padded_form(api_key, MIB)
    check(client.post(USERMAP, content=body, headers={"Content-Type": FORM}), 200, OK)


def test_body_over_1_mib_with_content_length(client: httpx.Client, api_key: str) -> None:
    body = padded_form(api_key, MIB + 1)
    response = client.post(USERMAP, content=body, headers={"Content-Type": FORM})
    assert response.request.headers["content-length"] == str(MIB + 1)
    check(response, 413, TOO_LARGE)
    assert read(client, api_key, "u") == {"u": unseen()}


def chunks_of(body: bytes, size: int = 65536) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_chunked_body_of_exactly_1_mib_is_accepted(client: httpx.Client, api_key: str) -> None:
    body = padded_form(api_key, MIB)
    response = client.post(USERMAP, content=chunks_of(body), headers={"Content-Type": FORM})
    assert "content-length" not in response.request.headers
    check(response, 200, OK)


def test_chunked_body_over_1_mib_without_content_length(client: httpx.Client, api_key: str) -> None:
    body = padded_form(api_key, MIB + 1)
    response = client.post(USERMAP, content=chunks_of(body), headers={"Content-Type": FORM})
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.request.headers
    check(response, 413, TOO_LARGE)
    assert read(client, api_key, "u") == {"u": unseen()}


def test_declared_length_over_the_limit_is_refused_before_the_body(server: ServerThread) -> None:
    # Only the head is sent: the answer must not wait for 5 MiB that never come.
    request = (
        f"POST /usermap HTTP/1.1\r\nHost: localhost\r\nContent-Type: {FORM}\r\n"
        f"Content-Length: {5 * MIB}\r\n\r\napi_key=k"
    ).encode()
    check_raw(raw(server, request), 413, TOO_LARGE)


def test_query_plus_body_at_the_limit_is_accepted(client: httpx.Client, api_key: str) -> None:
    query = (
        urlencode({"api_key": api_key, "mapping": objects_json(("u", "g"))}) + "&q=" + "q" * 4000
    )
    body = b"pad=" + b"x" * (MIB - len(query) - 4)
    assert len(query) + len(body) == MIB
    response = client.post(f"{USERMAP}?{query}", content=body, headers={"Content-Type": FORM})
    check(response, 200, OK)


def test_query_plus_body_over_the_limit(client: httpx.Client, api_key: str) -> None:
    # Each part alone is under its limit; together they are one byte over 1 MiB.
    query = (
        urlencode({"api_key": api_key, "mapping": objects_json(("u", "g"))}) + "&q=" + "q" * 4000
    )
    body = b"pad=" + b"x" * (MIB - len(query) - 4 + 1)
    assert len(query) + len(body) == MIB + 1
    assert len(body) < MIB
    response = client.post(f"{USERMAP}?{query}", content=body, headers={"Content-Type": FORM})
    check(response, 413, TOO_LARGE)
    response = client.post(
        f"{USERMAP}?{query}", content=chunks_of(body), headers={"Content-Type": FORM}
    )
    check(response, 413, TOO_LARGE)
    assert read(client, api_key, "u") == {"u": unseen()}


def test_limits_are_configurable(start_emulator: StartEmulator) -> None:
    running = start_emulator(limits=Limits(max_batch=2, max_request_bytes=300, max_target_bytes=80))
    with httpx.Client(base_url=running.base_url, timeout=10) as http:
        check(post(http, "k", objects_json(("a", "g"), ("b", "g"), ("c", "g"))), 413, TOO_LARGE)
        check(post(http, "k", objects_json(("a", "g"), ("b", "g"))), 200, OK)
        check(post(http, "k", objects_json(("a", "g")), pad="x" * 300), 413, TOO_LARGE)
        check(http.post(target_of_length(81, "k", "{}")), 414, URI_TOO_LONG)


# --- the order of the checks -----------------------------------------------------------------


def test_414_beats_413(server: ServerThread, api_key: str) -> None:
    target = target_of_length(TARGET_LIMIT + 1, api_key, objects_json(("u", "g")))
    request = f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {2 * MIB}\r\n\r\n".encode()
    check_raw(raw(server, request), 414, URI_TOO_LONG)


def test_414_beats_missing_api_key(client: httpx.Client) -> None:
    check(client.post(f"{USERMAP}?pad={'x' * TARGET_LIMIT}"), 414, URI_TOO_LONG)


def test_413_beats_missing_and_invalid_api_key(client: httpx.Client) -> None:
    check(client.post(USERMAP, content=b"pad=" + b"x" * MIB), 413, TOO_LARGE)
    body = b"api_key=undefined&mapping=not-json&pad=" + b"x" * MIB
    check(client.post(USERMAP, content=body), 413, TOO_LARGE)


def test_missing_api_key_beats_bad_mapping(client: httpx.Client) -> None:
    check(client.post(USERMAP, data={"mapping": "not json"}), 400, MISSING_API_KEY)
    check(client.post(USERMAP, data={"mapping": "[]"}), 400, MISSING_API_KEY)
    many = objects_json(*[(f"u{i}", "g") for i in range(2001)])
    check(client.post(USERMAP, data={"mapping": many}), 400, MISSING_API_KEY)


def test_invalid_api_key_beats_mapping_errors(client: httpx.Client) -> None:
    check(post(client, "undefined", None), 400, invalid_key("undefined"))
    check(post(client, "null", "not json"), 400, invalid_key("null"))
    check(post(client, "undefined", '{"user_id":"a"}'), 400, invalid_key("undefined"))


def test_invalid_region_key_beats_missing_mapping(configured: httpx.Client) -> None:
    response = configured.post(
        USERMAP, data={"api_key": US_KEY}, headers={"Host": "api.eu.amplitude.com"}
    )
    check(response, 400, invalid_key(US_KEY))


def test_not_json_beats_count(client: httpx.Client, api_key: str) -> None:
    many = objects_json(*[(f"u{i}", "g") for i in range(2001)])
    check(post(client, api_key, many[:-1]), 400, NOT_JSON)


def test_count_beats_bad_objects(client: httpx.Client, api_key: str) -> None:
    objects: list[Any] = [{"user_id": f"u{i}", "global_user_id": "g"} for i in range(2001)]
    objects[3] = {"user_id": "bad"}
    objects[7] = 17
    check(post(client, api_key, json.dumps(objects)), 413, TOO_LARGE)
    check(post(client, api_key, json.dumps([1] * 2001)), 413, TOO_LARGE)


def test_count_beats_a_cycle(client: httpx.Client, api_key: str) -> None:
    objects = [{"user_id": "a", "global_user_id": "b"}, {"user_id": "b", "global_user_id": "a"}]
    objects += [{"user_id": f"u{i}", "global_user_id": "g"} for i in range(1999)]
    check(post(client, api_key, json.dumps(objects)), 413, TOO_LARGE)


def test_first_bad_object_in_batch_order_is_named(client: httpx.Client, api_key: str) -> None:
    objects: list[Any] = [
        {"user_id": "a", "global_user_id": "g"},
        {"user_id": "b", "global_user_id": 5},
        {"user_id": "c"},
    ]
    check(post(client, api_key, json.dumps(objects)), 400, invalid_mapping(1))


def test_cycle_before_a_malformed_object_is_named(client: httpx.Client, api_key: str) -> None:
    # Each object in order, shape then cycle: object 1 closes a cycle before object 2 is seen.
    objects: list[Any] = [
        {"user_id": "a", "global_user_id": "b"},
        {"user_id": "b", "global_user_id": "a"},
        {"user_id": "c"},
    ]
    check(post(client, api_key, json.dumps(objects)), 400, invalid_mapping(1))


def test_malformed_object_before_a_cycle_is_named(client: httpx.Client, api_key: str) -> None:
    check(post(client, api_key, objects_json(("a", "b"))), 200, OK)
    objects: list[Any] = [{"user_id": "c", "unmap": "no"}, {"user_id": "b", "global_user_id": "a"}]
    check(post(client, api_key, json.dumps(objects)), 400, invalid_mapping(0))


@pytest.fixture
def throttled(start_emulator: StartEmulator) -> Iterator[httpx.Client]:
    """A client of an emulator whose org `k` is over its rate limit (clock frozen)."""
    running = start_emulator(limits=Limits(rate_limit=2))
    running.app.state.backend.clock.freeze()
    with httpx.Client(base_url=running.base_url, timeout=10) as http:
        check(post(http, "k", objects_json(("a", "b"), ("x", "y"))), 200, OK)
        response = post(http, "k", objects_json(("p", "q")))
        assert response.status_code == 429
        yield http


def test_400_and_413_beat_the_rate_limit(throttled: httpx.Client) -> None:
    check(post(throttled, "k", objects_json(("b", "a"))), 400, invalid_mapping(0))  # cycle
    check(post(throttled, "k", '{"user_id":"c"}'), 400, invalid_mapping(0, "global_user_id"))
    check(post(throttled, "k", "nope"), 400, NOT_JSON)
    check(post(throttled, "k", "[]"), 400, invalid_mapping())
    check(post(throttled, "k", None), 400, MISSING_MAPPING)
    check(post(throttled, None, objects_json(("c", "d"))), 400, MISSING_API_KEY)
    check(post(throttled, "undefined", objects_json(("c", "d"))), 400, invalid_key("undefined"))
    many = objects_json(*[(f"u{i}", "g") for i in range(2001)])
    check(post(throttled, "k", many), 413, TOO_LARGE)
    response = post(throttled, "k", objects_json(("c", "d")))
    assert response.status_code == 429
    assert response.json()["code"] == 429
    assert response.headers.get(HINT)


def test_a_self_map_in_a_throttled_org_is_still_429(throttled: httpx.Client) -> None:
    # A valid no-op is valid: only the rate limit refuses it.
    assert post(throttled, "k", objects_json(("a", "a"))).status_code == 429


# --- all or nothing --------------------------------------------------------------------------


def test_batch_with_a_bad_third_object_changes_nothing(client: httpx.Client, api_key: str) -> None:
    check(post(client, api_key, objects_json(("a", "old"))), 200, OK)
    before = read(client, api_key, "a", "old", "new", "b", "g")
    objects: list[Any] = [
        {"user_id": "a", "global_user_id": "new"},
        {"user_id": "b", "global_user_id": "g"},
        {"user_id": "c", "global_user_id": ""},
        {"user_id": "d", "global_user_id": "g"},
    ]
    check(post(client, api_key, json.dumps(objects)), 400, invalid_mapping(2))
    assert read(client, api_key, "a", "old", "new", "b", "g") == before
    assert before["a"]["mapped_to"] == [{"amplitude_id": 2, "user_id": "old"}]
    assert before["new"] == unseen()  # no amplitude_id was handed out either
    assert before["b"] == unseen()


def test_batch_with_an_unmap_and_a_cycle_changes_nothing(
    client: httpx.Client, api_key: str
) -> None:
    check(post(client, api_key, objects_json(("a", "b"), ("c", "d"))), 200, OK)
    before = read(client, api_key, "a", "b", "c", "d", "e")
    objects: list[Any] = [
        {"user_id": "c", "unmap": True},
        {"user_id": "e", "global_user_id": "a"},
        {"user_id": "b", "global_user_id": "e"},  # b -> e -> a -> b
    ]
    check(post(client, api_key, json.dumps(objects)), 400, invalid_mapping(2))
    assert read(client, api_key, "a", "b", "c", "d", "e") == before
    assert before["c"]["mapped_to"] == [{"amplitude_id": 4, "user_id": "d"}]


# --- unknown paths and methods ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 404),
        ("POST", "/httpapi", 404),  # Amplitude's is /2/httpapi (tests/events)
        ("GET", "/batch", 405),
        ("POST", "/usermap/", 404),
        ("POST", "/USERMAP", 404),
        ("POST", "/usermap/extra", 404),
        ("GET", "/api/2/usermaps", 404),
        ("GET", "/api/2/usermap/", 404),
        ("DELETE", "/usermap", 405),
        ("PUT", "/usermap", 405),
        ("PATCH", "/usermap", 405),
        ("POST", "/api/2/usermap", 405),
        ("DELETE", "/api/2/usermap", 405),
    ],
)
def test_unknown_paths_and_methods(
    client: httpx.Client, api_key: str, method: str, path: str, status: int
) -> None:
    response = client.request(
        method, path, data={"api_key": api_key, "mapping": objects_json(("u", "g"))}
    )
    message = {404: "Not found", 405: "Method not allowed"}[status]
    check(response, status, {"code": status, "error": message})
    assert read(client, api_key, "u") == {"u": unseen()}


def test_unknown_path_with_control_characters(server: ServerThread) -> None:
    # The hint names the path: control characters in it must not break the header.
    response = raw(server, http("POST /usermap%00%7F%0D%0A HTTP/1.1", HOST))
    check_raw(response, 404, {"code": 404, "error": "Not found"})
    assert response.headers[HINT].isprintable()


# --- no input yields a 500 -------------------------------------------------------------------


def http(head: str, *headers: str, body: bytes = b"", length: bool = True) -> bytes:
    """One raw HTTP/1.1 request; Content-Length counted unless `length` is False."""
    lines = [head, *headers]
    if length and body:
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


POST_HEAD = "POST /usermap HTTP/1.1"
HOST = "Host: localhost"
MULTIPART_FILE = (
    b'--b\r\nContent-Disposition: form-data; name="mapping"; filename="m.json"\r\n\r\n'
    b"\xff\xfe\x00\r\n--b--\r\n"
)
WEIRD_REQUESTS: dict[str, bytes] = {
    # invalid UTF-8 and broken percent escapes, in the query and in the body
    "bad-utf8-query": http("POST /usermap?api_key=\xff\xfe&mapping=%E0%A4 HTTP/1.1", HOST),
    "bad-escapes-query": http("POST /usermap?api_key=%&mapping=%G1%%% HTTP/1.1", HOST),
    "separators-query": http("POST /usermap?;;;&&&===&= HTTP/1.1", HOST),
    "bad-utf8-body": http(POST_HEAD, HOST, body=b"api_key=\xc3&mapping=\xff\x00{"),
    "latin1-charset": http(
        POST_HEAD,
        HOST,
        "Content-Type: application/x-www-form-urlencoded; charset=latin-1",
        body=b"api_key=k\xe9y&mapping=%7B%7D%20x",
    ),
    # multipart without a boundary, with a broken body, with no parts, with a bad file part
    "multipart-no-boundary": http(
        POST_HEAD, HOST, "Content-Type: multipart/form-data", body=b"--x\r\nbroken"
    ),
    "multipart-broken": http(
        POST_HEAD, HOST, "Content-Type: multipart/form-data; boundary=x", body=b"--y\r\nbroken"
    ),
    "multipart-no-parts": http(
        POST_HEAD, HOST, "Content-Type: multipart/form-data; boundary=x", body=b"--x--"
    ),
    "multipart-empty-boundary": http(
        POST_HEAD, HOST, "Content-Type: multipart/form-data; boundary=", body=b"api_key=k"
    ),
    "multipart-binary-file": http(
        POST_HEAD, HOST, "Content-Type: multipart/form-data; boundary=b", body=MULTIPART_FILE
    ),
    # odd content types
    "content-type-garbage": http(POST_HEAD, HOST, "Content-Type: ;;;", body=b"api_key=k"),
    "broken-json-body": http(POST_HEAD, HOST, "Content-Type: application/json", body=b"{bad "),
    "json-suffix-type": http(POST_HEAD, HOST, "Content-Type: application/vnd.api+json", body=b"{}"),
    # odd hosts, no host, HTTP/1.0
    "host-broken-ipv6": http("POST /usermap?api_key=k&mapping={} HTTP/1.1", "Host: [::1"),
    "host-empty": http("POST /usermap?api_key=k&mapping={} HTTP/1.1", "Host: "),
    "http-1.0-no-host": http("POST /usermap?api_key=k&mapping={} HTTP/1.0"),
    "host-bad-port": http(
        "POST /usermap?api_key=k&mapping={} HTTP/1.1", "Host: api.eu.amplitude.com:notaport"
    ),
    # malformed HTTP itself (answered by the HTTP layer, still never a 500)
    "content-length-not-a-number": http(POST_HEAD, HOST, "Content-Length: abc"),
    "bad-chunk-size": http(POST_HEAD, HOST, "Transfer-Encoding: chunked") + b"zz\r\n",
    "two-content-lengths": http(
        POST_HEAD, HOST, "Content-Length: 1", "Content-Length: 2", body=b"ab", length=False
    ),
    "head": http("HEAD /usermap HTTP/1.1", HOST),
    "options-star": http("OPTIONS * HTTP/1.1", HOST),
    "bad-bytes-in-path": http("GET /usermap%FF%00?api_key=k HTTP/1.1", HOST),
}


@pytest.mark.parametrize("name", list(WEIRD_REQUESTS))
def test_weird_requests_never_get_a_500(
    server: ServerThread, client: httpx.Client, name: str
) -> None:
    response = raw(server, WEIRD_REQUESTS[name])
    assert response.status is not None
    assert 400 <= response.status < 500, response.body
    if response.headers.get("content-type") == "application/json":
        assert response.headers.get(HINT)
    # and the server is still fine
    check(post(client, "still-" + uuid.uuid4().hex, objects_json(("u", "g"))), 200, OK)


@pytest.mark.parametrize(
    "params",
    [
        {"api_key": "k\r\nX-Injected: 1", "mapping": "{}"},
        {"api_key": "ключ 🔑", "mapping": '{"user_id":"a"}'},
        {"api_key": "\x00", "mapping": "[]"},
        {"api_key": "k" * 5000, "mapping": "nope"},
        {"api_key": "k", "mapping": "9" * 5000},
        {"api_key": "k", "mapping": '{"user_id":"a","global_user_id":"g","n":' + "9" * 5000 + "}"},
        {"api_key": "k", "mapping": "1e99999"},
        {"api_key": "k", "mapping": '{"user_id":"\\ud83d","global_user_id":"\\ude00"}'},
        {"api_key": "k", "mapping": '{"user_id":"a","global_user_id":{"nested":' * 500},
    ],
)
def test_odd_parameters_never_get_a_500(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.post(USERMAP, data=params)
    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers[HINT].isascii()
    assert "\r" not in response.headers[HINT]


def test_many_parameters_never_get_a_500(client: httpx.Client, api_key: str) -> None:
    body = "&".join(f"p{i}=v" for i in range(20_000)) + f"&api_key={api_key}&mapping=%7B%7D"
    response = client.post(USERMAP, content=body.encode(), headers={"Content-Type": FORM})
    check(response, 400, invalid_mapping(0, "user_id"))
    many_parts = [(f"p{i}", (None, "v")) for i in range(1500)]
    response = client.post(USERMAP, files=[("api_key", (None, api_key)), *many_parts])
    assert 400 <= response.status_code < 500, response.text


def test_long_unicode_ids_are_served(client: httpx.Client, api_key: str) -> None:
    long_id = "ü🙂\u0000\u202e" * 2000
    check(post(client, api_key, objects_json((long_id, "g"))), 200, OK)
    assert read(client, api_key, "g")["g"]["mapped_from"][0]["user_id"] == long_id


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["user_id", "global_user_id", "unmap", "user_properties", "x"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mapping=JSON_VALUES)
def test_any_json_mapping_is_answered_without_a_500(client: httpx.Client, mapping: Any) -> None:
    response = post(client, "fuzz-" + uuid.uuid4().hex, json.dumps(mapping))
    assert response.status_code in (200, 400), response.text
    assert response.headers["content-type"] == "application/json"
    assert (HINT in response.headers) == (response.status_code == 400)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=200), content_type=st.sampled_from(["", FORM, "text/plain"]))
def test_any_body_is_answered_without_a_500(
    client: httpx.Client, body: bytes, content_type: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    key = f"fuzz-{uuid.uuid4().hex}".encode()
    response = client.post(USERMAP, content=b"api_key=" + key + b"&" + body, headers=headers)
    assert response.status_code in (200, 400), response.text
    assert response.headers["content-type"] == "application/json"
