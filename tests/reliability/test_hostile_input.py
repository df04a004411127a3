"""Hostile input: generated raw HTTP never breaks the server (issue 6, item 3).

Random bytes as bodies, invalid UTF-8 and NUL bytes, huge and malformed query strings, JSON nested
100,000 levels deep, enormous numbers, 1 MiB ids, duplicate parameters, lying Content-Length,
chunked bodies and clients that stall. Every answer is a clear one: an Amplitude-shaped 4xx
with a hint (or a 200 where the request was valid after all), uvicorn's own 400 for malformed
HTTP framing, or a closed connection for a client that stalled or went away; never a 500. After
every test the server is healthy, and its memory stays bounded over repeated bursts.

The server is `amplitude-emulator serve` in a process of its own (so its memory can be read
from /proc), with a file database and a 1 s body timeout.
"""

from __future__ import annotations

import itertools
import json
import random
import select
import socket
import string
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_from_bytes

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from emulator.wire.params import parse_urlencoded
from tests.reliability import (
    HEALTH,
    READ,
    USERMAP,
    EmulatorProcess,
    emulator_process,
    record_figures,
)
from tests.support import (
    FORM,
    MISSING_API_KEY,
    NOT_JSON,
    TOO_LARGE,
    RawResult,
    http_request,
    parse_response,
    raw_exchange,
)

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads memory use from /proc"
)

BODY_TIMEOUT = 1.0
MIB = 1_048_576
TIMEOUT = {"code": 408, "error": "Request timeout"}
UVICORN_400 = b"Invalid HTTP request received."
EXAMPLES = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Hostile:
    """The server under attack, and a count of every input sent to it."""

    def __init__(self, process: EmulatorProcess) -> None:
        self.process = process
        self.inputs = 0
        self.five_hundreds = 0
        self.health_checks = 0  # passed, one after each test

    def send(self, request: bytes | list[bytes], **options: Any) -> RawResult:
        self.inputs += 1
        result = raw_exchange(self.process.address, request, **options)
        if result.status is not None and result.status >= 500:
            self.five_hundreds += 1
        assert self.process.running(), "the server died"
        return result


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    directory = tmp_path_factory.mktemp("hostile")
    with emulator_process(
        "--database-url",
        f"sqlite:///{directory / 'hostile.db'}",
        "--rate-limit",
        "off",
        "--body-timeout",
        str(BODY_TIMEOUT),
        "--journal-size",
        "50",  # full after the first burst, so memory is measured at steady state
        "--log-level",
        "warning",
        log_dir=directory,
    ) as process:
        target = Hostile(process)
        yield target
        memory = process.memory_kb()
    record_figures(
        "hostile-input",
        "Hostile input",
        {
            "raw HTTP inputs tried": target.inputs,
            "answered 5xx": target.five_hundreds,
            "health checks passed (one after each test)": target.health_checks,
            "server peak resident memory": f"{memory['VmHWM'] // 1024} MiB",
        },
    )


@pytest.fixture(autouse=True)
def stays_healthy(hostile: Hostile) -> Iterator[None]:
    """After each test (each burst of inputs): alive, healthy, answering a normal request."""
    yield
    assert hostile.process.running(), "the server died"
    with httpx.Client(base_url=hostile.process.base_url, timeout=10) as http:
        assert http.get(HEALTH).json() == {"status": "ok"}
        key = f"healthy-{uuid.uuid4().hex}"
        mapping = json.dumps({"user_id": "a", "global_user_id": "b"})
        response = http.post(USERMAP, data={"api_key": key, "mapping": mapping})
        assert response.status_code == 200, response.text
    hostile.health_checks += 1


def assert_clear(
    result: RawResult, *, ok: bool = False, closed: bool = False, framing: bool = False
) -> None:
    """A clear answer: never a 5xx. A JSON 4xx of Amplitude's shapes with a hint; a 200 only
    where `ok`; uvicorn's 400 only where `framing`; no answer at all only where `closed`."""
    if result.status is None:
        assert closed, "no answer"
        assert result.closed, "no answer, and the connection was left open"
        return
    assert result.status < 500, (result.status, result.body[:300])
    if result.headers.get("content-type", "").startswith("text/plain"):
        assert framing, (result.status, result.body[:300])
        assert (result.status, result.body) == (400, UVICORN_400)
        return
    assert result.headers.get("content-type") == "application/json", result.headers
    body = result.json()
    if result.status == 200:
        assert ok, body
        return
    assert 400 <= result.status < 500, result.status
    assert result.headers.get("x-emulator-hint"), result.headers
    if isinstance(body.get("error"), dict):  # the Dashboard REST API's shape (reads)
        assert body["error"]["http_code"] == result.status, body
        assert isinstance(body["error"]["message"], str), body
    else:  # the ingestion APIs' shape
        assert body["code"] == result.status, body
        assert isinstance(body["error"], str), body
        assert body["error"], body


# Left as they are in form fields: JSON's punctuation travels raw, as the docs' curl examples send
# it; only what separates or escapes fields (%, &, =, +, #), spaces and non-ASCII are escaped.
RAW_SAFE = "{}[]\":,!$'()*;/?@~^|`<>\\-_."


def form(*pairs: tuple[str, str | bytes]) -> bytes:
    """An urlencoded form (or query string) of these fields."""
    return "&".join(
        quote(name, safe="")
        + "="
        + (
            quote_from_bytes(value, safe=RAW_SAFE)
            if isinstance(value, bytes)
            else quote(value, safe=RAW_SAFE)
        )
        for name, value in pairs
    ).encode()


# --- random bytes, invalid UTF-8, NUL bytes -------------------------------------------------

CONTENT_TYPES = [
    None,
    FORM,
    f"{FORM}; charset=UTF-8",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "application/json",
    "text/plain",
    "application/octet-stream",
    ";;=",
]


def names_in(body: bytes) -> set[str]:
    return {name for name, _ in parse_urlencoded(body)}


@EXAMPLES
@given(
    path=st.sampled_from([USERMAP, READ]),
    content_type=st.sampled_from(CONTENT_TYPES),
    body=st.binary(max_size=4096),
)
def test_random_bytes_as_bodies(
    hostile: Hostile, path: str, content_type: str | None, body: bytes
) -> None:
    assume(not names_in(body) & {"api_key", "secret_key"})
    headers = [] if content_type is None else [("Content-Type", content_type)]
    method = "POST" if path == USERMAP else "GET"
    result = hostile.send(http_request(method, path, headers, body))
    assert_clear(result)
    if path == USERMAP:
        assert (result.status, result.json()) == (400, MISSING_API_KEY)
    else:
        assert result.status == 401
        assert result.json()["error"]["type"] == "unauthorized"


# Values as raw bytes: invalid UTF-8, NULs, control characters, JSON-ish fragments.
RAW_VALUES = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64).map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.sampled_from(
        [
            b"\x00",
            b"\xff\xfe\xfd",
            b"\xc3",
            b"\xed\xa0\x80",  # an encoded surrogate
            b'{"user_id":"\x00","global_user_id":"\x00\x00"}',
            b'[{"user_id":"a\\u0000","global_user_id":"b\\ud800"}]',
            b'[{"user_id":"\xff","global_user_id":"\xfe"}]',
            b"null",
            b"[]",
            b"{}",
            b"[[[[[[[[[[",
        ]
    ),
)


@EXAMPLES
@given(
    where=st.sampled_from(["query", "body", "body-without-content-type"]),
    api_key=RAW_VALUES,
    mapping=RAW_VALUES,
)
def test_invalid_utf8_and_nul_bytes_in_parameters(
    hostile: Hostile, where: str, api_key: bytes, mapping: bytes
) -> None:
    encoded = form(("api_key", api_key), ("mapping", mapping))
    if where == "query":
        request = http_request("POST", b"/usermap?" + encoded)
    else:
        headers = [("Content-Type", FORM)] if where == "body" else []
        request = http_request("POST", USERMAP, headers, encoded)
    result = hostile.send(request)
    assert_clear(result, ok=True)
    if result.status == 200:
        decoded = json.loads(mapping.decode("utf-8", "replace"))
        assert isinstance(decoded, dict | list), "200 for a mapping that is no batch"
        assert decoded, "200 for an empty batch"


# --- huge and malformed query strings -------------------------------------------------------

QUERY_PIECES = st.sampled_from(
    [
        "%",
        "%%",
        "%zz",
        "%0",
        "%00",
        "%ff",
        "%FF%FE",
        "&",
        "&&",
        "=",
        "==",
        "+",
        ";",
        "api_key=",
        "mapping=",
        "api_key=k",
        "mapping=[",
        "%5B%7B",
        "a",
        "user_ids=",
        "secret_key=",
        "\\",
        "'",
        "%22",
        "?",
        "#",
        "|",
        "^",
    ]
)


@EXAMPLES
@given(
    path=st.sampled_from([USERMAP, READ, "/nowhere", "/_emulator/health"]),
    pieces=st.lists(QUERY_PIECES, max_size=40),
    repeat=st.sampled_from([1, 1, 2, 50, 500, 3000, 20000]),
)
def test_huge_and_malformed_query_strings(
    hostile: Hostile, path: str, pieces: list[str], repeat: int
) -> None:
    query = ("".join(pieces) * repeat)[:200_000]
    target = f"{path}?{query}".encode()
    method = "GET" if path != USERMAP else "POST"
    result = hostile.send(http_request(method, target), timeout=20)
    # Beyond 96 KiB of request head the HTTP layer refuses it before the app sees it (and may
    # close before all of it was read).
    huge = len(target) > 64 * 1024
    assert_clear(result, ok=True, framing=huge, closed=huge)
    parameters: dict[str, str] = {}
    for name, value in parse_urlencoded(query.encode()):
        if value:
            parameters.setdefault(name, value)  # the first non-empty occurrence, as served
    if result.status == 200:
        if path == USERMAP:
            assert parameters.get("api_key"), query[:200]
            assert parameters.get("mapping"), query[:200]
        elif path == READ:
            assert parameters.get("api_key"), query[:200]
            assert parameters.get("secret_key"), query[:200]
        else:
            assert path == HEALTH
    if path in (USERMAP, READ) and len(target) > 8192 and not huge:
        assert result.status == 414, result.status


# --- JSON nested 100,000 levels deep, enormous numbers, 1 MiB ids ---------------------------

DEEP = 100_000
OK = {"code": 200}
DEEP_MAPPINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "arrays": ("[" * DEEP + "]" * DEEP, NOT_JSON),
    "unclosed-arrays": ("[" * DEEP, NOT_JSON),
    "objects": ('{"a":' * DEEP, NOT_JSON),
    "inside-an-extra-key": (
        '[{"user_id":"a","global_user_id":"b","x":' + "[" * DEEP + "]" * DEEP + "}]",
        NOT_JSON,
    ),
    "huge-integer": ('[{"user_id":"a","global_user_id":"b","n":' + "9" * 100_000 + "}]", NOT_JSON),
    "nan": ('[{"user_id":"a","global_user_id":"b","n":NaN}]', NOT_JSON),
    # 1e999999 is valid JSON (Python reads it as infinity), in a key the emulator ignores.
    "huge-exponent-elsewhere": ('[{"user_id":"a","global_user_id":"b","n":1e999999}]', OK),
}


@pytest.mark.parametrize("name", list(DEEP_MAPPINGS))
def test_deep_json_and_enormous_numbers(hostile: Hostile, name: str) -> None:
    mapping, expected = DEEP_MAPPINGS[name]
    body = form(("api_key", f"deep-{uuid.uuid4().hex}"), ("mapping", mapping))
    result = hostile.send(http_request("POST", USERMAP, [("Content-Type", FORM)], body))
    assert_clear(result, ok=expected == OK)
    assert (result.status, result.json()) == (expected["code"], expected)


@pytest.mark.parametrize(
    ("mapping", "index"),
    [
        ('[{"user_id":1e999999,"global_user_id":"b"}]', 0),
        ('[{"user_id":"a","global_user_id":' + "1" * 4000 + "}]", 0),
        ('[{"user_id":"a","global_user_id":"b","unmap":1e-999999}]', 0),
        ('[{"user_id":"a","global_user_id":"b"},{"user_id":-0.0,"global_user_id":"c"}]', 1),
    ],
)
def test_numbers_as_ids_are_invalid_mappings(hostile: Hostile, mapping: str, index: int) -> None:
    body = form(("api_key", f"numbers-{uuid.uuid4().hex}"), ("mapping", mapping))
    result = hostile.send(http_request("POST", USERMAP, [("Content-Type", FORM)], body))
    assert_clear(result)
    assert result.status == 400
    assert result.json() == {"code": 400, "error": "Invalid mapping", "index": index}


def test_deep_json_in_user_ids_and_in_the_control_api(hostile: Hostile) -> None:
    deep = "[" * DEEP
    result = hostile.send(
        http_request(
            "GET",
            READ,
            [("Content-Type", FORM), ("Authorization", "Basic a2V5OnNlY3JldA==")],
            form(("user_ids", deep)),
        )
    )
    assert_clear(result, ok=True)
    assert result.status == 200  # not a JSON array: an id of its own, never seen
    assert result.json() == {deep: {"mapped_from": [], "mapped_to": []}}
    for path in ("/_emulator/faults", "/_emulator/clock"):
        control = hostile.send(http_request("POST", path, [], ("[" * DEEP).encode()))
        assert control.status == 400, control.body[:200]
        assert set(control.json()) == {"error"}


def one_mib_id_body(api_key: str, extra: int) -> tuple[bytes, str]:
    """A form body of exactly 1 MiB + `extra` bytes that maps one huge id to `g`."""
    prefix = form(("api_key", api_key)) + b"&mapping="
    shell = quote('{"user_id":"', safe="") + "{}" + quote('","global_user_id":"g"}', safe="")
    room = MIB + extra - len(prefix) - len(shell) + 2
    huge = "i" * room
    return prefix + shell.replace("{}", huge).encode(), huge


def test_a_1_mib_id_within_the_limit_is_served(hostile: Hostile) -> None:
    api_key = f"big-{uuid.uuid4().hex}"
    body, huge = one_mib_id_body(api_key, 0)
    assert len(body) == MIB
    result = hostile.send(http_request("POST", USERMAP, [("Content-Type", FORM)], body))
    assert (result.status, result.json()) == (200, {"code": 200})
    read = hostile.send(
        http_request(
            "GET",
            READ,
            [("Content-Type", FORM), ("Authorization", basic(api_key, "s"))],
            form(("user_ids", huge)),
        )
    )
    assert read.status == 200
    assert read.json()[huge]["mapped_to"] == [{"amplitude_id": 2, "user_id": "g"}]
    over, _ = one_mib_id_body(api_key, 1)
    refused = hostile.send(http_request("POST", USERMAP, [("Content-Type", FORM)], over))
    assert_clear(refused)
    assert (refused.status, refused.json()) == (413, TOO_LARGE)


def basic(api_key: str, secret: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{api_key}:{secret}".encode()).decode()


# --- duplicate parameters -------------------------------------------------------------------


@EXAMPLES
@given(
    query=st.lists(
        st.tuples(st.sampled_from(["api_key", "mapping", "options"]), st.integers(0, 3)),
        max_size=6,
    ),
    body=st.lists(
        st.tuples(st.sampled_from(["api_key", "mapping", "options"]), st.integers(0, 3)),
        max_size=6,
    ),
    content_type=st.sampled_from([FORM, None, "multipart"]),
)
def test_duplicate_parameters_resolve_as_documented(
    hostile: Hostile,
    query: list[tuple[str, int]],
    body: list[tuple[str, int]],
    content_type: str | None,
) -> None:
    """Body before query, first non-empty occurrence wins; exactly that key's org changes."""
    run = uuid.uuid4().hex
    keys = [f"dup-a-{run}", f"dup-b-{run}", "", f"dup-c-{run}"]
    mappings = [
        json.dumps({"user_id": "x", "global_user_id": "y0"}),
        json.dumps({"user_id": "x", "global_user_id": "y1"}),
        "",
        "not json",
    ]

    def value(name: str, choice: int) -> str:
        return keys[choice] if name == "api_key" else mappings[choice] if name == "mapping" else "{"

    query_pairs = [(name, value(name, choice)) for name, choice in query]
    body_pairs = [(name, value(name, choice)) for name, choice in body]

    def first(name: str) -> str | None:
        for pairs in (body_pairs, query_pairs):
            for key, text in pairs:
                if key == name and text:
                    return text
        return None

    target = USERMAP + ("?" + form(*query_pairs).decode() if query_pairs else "")
    if content_type == "multipart":
        boundary = "b0undary"
        payload = (
            b"".join(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{text}\r\n".encode()
                for name, text in body_pairs
            )
            + f"--{boundary}--\r\n".encode()
        )
        headers = [("Content-Type", f"multipart/form-data; boundary={boundary}")]
        if not body_pairs:
            payload = b""
    else:
        payload = form(*body_pairs)
        headers = [] if content_type is None else [("Content-Type", content_type)]
    result = hostile.send(http_request("POST", target, headers, payload))
    assert_clear(result, ok=True)
    api_key, mapping = first("api_key"), first("mapping")
    if api_key is None:
        assert (result.status, result.json()) == (400, MISSING_API_KEY)
        return
    if mapping is None:
        assert result.status == 400
        assert result.json()["missing_field"] == "mapping"
        return
    if mapping == "not json":
        assert (result.status, result.json()) == (400, NOT_JSON)
        return
    assert (result.status, result.json()) == (200, {"code": 200})
    expected_global = json.loads(mapping)["global_user_id"]
    with httpx.Client(base_url=hostile.process.base_url, timeout=10) as http:
        for key in keys:
            if not key:
                continue
            read = http.get(READ, params={"user_ids": "x"}, auth=(key, "s")).json()["x"]
            landed = [edge["user_id"] for edge in read["mapped_to"]]
            assert landed == ([expected_global] if key == api_key else []), key


# --- lying Content-Length, chunked bodies ---------------------------------------------------


@EXAMPLES
@given(
    declared_delta=st.integers(-60, 400),
    half_close=st.booleans(),
    body=st.sampled_from(
        [
            b"api_key=lying&mapping=%7B%22user_id%22%3A%22a%22%2C%22global_user_id%22%3A%22b%22%7D",
            b"api_key=lying&mapping=",
            b"\x00\xff" * 40,
        ]
    ),
)
def test_lying_content_length(
    hostile: Hostile, declared_delta: int, half_close: bool, body: bytes
) -> None:
    declared = max(len(body) + declared_delta, 0)
    request = http_request("POST", USERMAP, [("Content-Type", FORM)], body, content_length=declared)
    # A longer declaration from a client that then waits is a stalled client: see the slow
    # client tests below (each costs a body timeout).
    assume(half_close or declared <= len(body))
    started = time.monotonic()
    result = hostile.send(request, half_close=half_close, timeout=10)
    assert time.monotonic() - started < 5, "the server hung on a lying Content-Length"
    # Shorter: the server reads what was declared, answers it, and what follows is a malformed
    # next request or ignored. Longer and the client gives up: no one is left to answer.
    assert_clear(result, ok=True, closed=declared > len(body), framing=True)


CHUNK_GARBAGE = st.sampled_from(
    [
        b"zz\r\n",
        b"-1\r\n",
        b"5\r\nabc\r\n",
        b"5\r\nabcdefgh\r\n0\r\n\r\n",
        b"ffffffffffffffffffff\r\n",
        b"3\nabc\n0\n\n",
        b"0\r\nTrailer: x\r\n\r\n",
        b'2;ext="quoted"\r\nab\r\n0\r\n\r\n',
        b"1" * 200 + b"\r\n",
    ]
)


@EXAMPLES
@given(
    cuts=st.lists(st.integers(0, 200), max_size=8),
    extensions=st.booleans(),
    garbage=st.one_of(st.none(), CHUNK_GARBAGE),
)
def test_chunked_bodies(
    hostile: Hostile, cuts: list[int], extensions: bool, garbage: bytes | None
) -> None:
    api_key = f"chunked-{uuid.uuid4().hex}"
    body = form(("api_key", api_key), ("mapping", '{"user_id":"c","global_user_id":"d"}'))
    if garbage is not None:
        framed = garbage
    else:
        points = sorted({min(cut, len(body)) for cut in cuts} | {0, len(body)})
        framed = b""
        for low, high in itertools.pairwise(points):
            if high > low:
                size = b"%x" % (high - low) + (b";a=b" if extensions else b"")
                framed += size + b"\r\n" + body[low:high] + b"\r\n"
        framed += b"0\r\n\r\n"
    request = http_request(
        "POST",
        USERMAP,
        [("Content-Type", FORM), ("Transfer-Encoding", "chunked")],
        framed,
        content_length=None,
    )
    result = hostile.send(request, half_close=True, timeout=10)
    if garbage is None:
        assert (result.status, result.json()) == (200, {"code": 200})
        return
    assert_clear(result, ok=True, closed=True, framing=True)


# --- clients that stall ---------------------------------------------------------------------


def trickle(hostile: Hostile, head: bytes, byte: bytes = b"a") -> tuple[RawResult, float]:
    """Send `head`, then a byte every 50 ms (answer or not) until the server closes, for up
    to 20 s; what it answered, and how long until it closed."""
    hostile.inputs += 1
    started = time.monotonic()
    data = b""
    closed = False
    with socket.create_connection(hostile.process.address, timeout=20) as conn:
        conn.sendall(head)
        while time.monotonic() - started < 20:
            readable, _, _ = select.select([conn], [], [], 0.05)
            try:
                if readable:
                    chunk = conn.recv(65536)
                    if not chunk:
                        closed = True
                        break
                    data += chunk
                else:
                    conn.sendall(byte)
            except OSError:
                closed = True
                break
    status, headers, body = parse_response(data)
    return RawResult(status, headers, body, closed), time.monotonic() - started


@pytest.mark.parametrize("path", [USERMAP, READ])
def test_a_body_sent_too_slowly_gets_408_and_the_connection_closes(
    hostile: Hostile, path: str
) -> None:
    head = http_request(
        "POST" if path == USERMAP else "GET",
        path,
        [("Content-Type", FORM)],
        close=False,
        content_length=5000,
    )
    result, elapsed = trickle(hostile, head)
    assert BODY_TIMEOUT <= elapsed < BODY_TIMEOUT + 3, elapsed
    assert result.status == 408
    assert result.closed, "the stalled connection was left open"
    assert result.headers.get("connection") == "close"
    assert_clear(result)
    if path == USERMAP:
        assert result.json() == TIMEOUT
    else:
        assert result.json()["error"]["message"] == "Request timeout"


def test_a_chunked_body_sent_too_slowly_gets_408(hostile: Hostile) -> None:
    head = http_request(
        "POST", USERMAP, [("Transfer-Encoding", "chunked")], close=False, content_length=None
    )
    result, elapsed = trickle(hostile, head + b"1\r\na\r\n", b"1\r\na\r\n")
    assert BODY_TIMEOUT <= elapsed < BODY_TIMEOUT + 3, elapsed
    assert (result.status, result.json(), result.closed) == (408, TIMEOUT, True)


@pytest.mark.parametrize(
    "head",
    [
        b"POST /usermap HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",  # a head never finished
        http_request("POST", "/nowhere", [], content_length=5000, close=False),  # answered 404
        http_request("POST", READ, [], content_length=5000, close=False),  # answered 405
        http_request("POST", USERMAP, [], content_length=50 * MIB, close=False),  # answered 413
    ],
    ids=["unfinished-head", "404", "405", "413"],
)
def test_a_stalled_client_is_disconnected(hostile: Hostile, head: bytes) -> None:
    result, elapsed = trickle(hostile, head)
    assert result.closed, "the stalled connection was left open"
    assert elapsed < 2 * BODY_TIMEOUT + 3, elapsed
    assert_clear(result, closed=True)


def test_a_slow_body_within_the_timeout_is_served(hostile: Hostile) -> None:
    api_key = f"slow-{uuid.uuid4().hex}"
    body = form(("api_key", api_key), ("mapping", '{"user_id":"s","global_user_id":"t"}'))
    head = http_request("POST", USERMAP, [("Content-Type", FORM)], content_length=len(body))
    pieces = [head, body[:10], body[10:30], body[30:]]
    result = hostile.send(pieces, pause=BODY_TIMEOUT / 8)
    assert (result.status, result.json()) == (200, {"code": 200})


# --- memory -----------------------------------------------------------------------------------


def burst(hostile: Hostile, rng: random.Random, size: int = 60) -> None:
    """`size` hostile requests of every kind above, big ones included."""
    for index in range(size):
        kind = index % 6
        key = f"burst-{rng.randrange(50)}"
        if kind == 0:
            query = "".join(rng.choices(string.printable[:94], k=60_000)).replace("#", "%")
            request = http_request("GET", f"/usermap?{quote(query, safe='=&%')}")
        elif kind == 1:
            deep, _ = DEEP_MAPPINGS["arrays"]
            request = http_request(
                "POST", USERMAP, [("Content-Type", FORM)], form(("api_key", key), ("mapping", deep))
            )
        elif kind == 2:
            big, _ = one_mib_id_body(key, rng.choice([-5000, 1]))
            request = http_request("POST", USERMAP, [("Content-Type", FORM)], big)
        elif kind == 3:
            request = http_request(
                "POST",
                USERMAP,
                [("Content-Type", "multipart/form-data; boundary=x")],
                rng.randbytes(200_000),
            )
        elif kind == 4:
            ids = [f"id-{rng.randrange(10**6)}" * 50 for _ in range(100)]
            request = http_request(
                "GET",
                READ,
                [("Content-Type", FORM), ("Authorization", basic(key, "s"))],
                form(*(("user_ids", i) for i in ids)),
            )
        else:
            request = http_request("POST", USERMAP, [], rng.randbytes(100_000))
        assert_clear(hostile.send(request, timeout=20), ok=True, framing=True)


def test_memory_stays_bounded_over_repeated_bursts(hostile: Hostile) -> None:
    rng = random.Random(6)
    burst(hostile, rng)  # warm-up: caches, allocator arenas, the journal filling to its size
    after = []
    for _ in range(3):
        started = time.monotonic()
        burst(hostile, rng)
        after.append(hostile.process.memory_kb())
        print(f"burst: {time.monotonic() - started:.2f} s")
    # The process's own memory: accepted requests (megabyte ids among them) grow the database
    # file, whose memory-mapped pages count in VmRSS as they are read back.
    growth = after[-1]["RssAnon"] - after[0]["RssAnon"]
    print(f"resident memory after bursts (kB): {after}")
    assert growth < 24 * 1024, after
    assert after[-1]["VmHWM"] < 512 * 1024, after
