"""POST /usermap (and GET /usermap): every way the parameters travel (spec section 2, section 8).

Each test sends a request shaped the way a real client shapes it and then reads the org's graph
back through GET /api/2/usermap, so "accepted" always means "and it did what it said".
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import httpx
import pytest

from emulator.server import ServerThread
from tests.support import (
    FORM,
    HINT,
    MISSING_API_KEY,
    MISSING_MAPPING,
    RawResult,
    address_of,
    raw_exchange,
)

USERMAP = "/usermap"
READ = "/api/2/usermap"
SEGMENT_CONTENT_TYPE = "application/x-www-form-urlencoded;charset=UTF-8"


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[httpx.Client]:
    """One client for the module (each httpx.Client builds a TLS context, ~80 ms)."""
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        yield http


def mapping_json(*pairs: tuple[str, str]) -> str:
    """A compact JSON array of map objects, as clients serialise it (no spaces)."""
    objects = [{"user_id": user, "global_user_id": global_user} for user, global_user in pairs]
    return json.dumps(objects, separators=(",", ":"))


def global_of(client: httpx.Client, api_key: str, user_id: str) -> str | None:
    """The global `user_id` is mapped to in `api_key`'s org, read over HTTP (None: unmapped)."""
    response = client.get(READ, params={"user_ids": [user_id]}, auth=(api_key, "any-secret"))
    assert response.status_code == 200, response.text
    mapped_to: list[dict[str, Any]] = response.json()[user_id]["mapped_to"]
    assert len(mapped_to) <= 1
    return str(mapped_to[0]["user_id"]) if mapped_to else None


def assert_ok(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.json() == {"code": 200}
    assert response.headers["content-type"] == "application/json"
    assert HINT not in response.headers


def assert_refused(response: httpx.Response, status: int, body: dict[str, Any]) -> None:
    assert response.status_code == status, response.text
    assert response.json() == body
    assert response.headers["content-type"] == "application/json"
    assert response.headers.get(HINT), "every refusal carries a hint"


def raw(server: ServerThread, request: bytes) -> RawResult:
    """Send `request` byte for byte on a fresh socket and read one response (no 1xx first,
    framed by Content-Length)."""
    response = raw_exchange(address_of(server.base_url), request)
    assert response.status is not None, f"no response head: {response!r}"
    assert response.interim == [], response.interim
    assert "content-length" in response.headers, response.headers
    return response


# --- 1. the query string ---------------------------------------------------------------------


def test_docs_curl_request_with_raw_json_in_the_target(
    server: ServerThread, client: httpx.Client, api_key: str
) -> None:
    # Byte for byte what `curl --location -g --request POST '...usermap?mapping=[{...}]&api_key=K'`
    # sends: `"`, `{`, `[` and `<` raw in the request target, no body, no Content-Length.
    target = (
        '/usermap?mapping=[{"user_id":"<USER_ID","global_user_id":"<GLOBAL_USER_ID"}]'
        f"&api_key={api_key}"
    )
    request = (
        f"POST {target} HTTP/1.1\r\n"
        f"Host: {urlsplit(server.base_url).netloc}\r\n"
        "User-Agent: curl/7.88.1\r\n"
        "Accept: */*\r\n"
        "\r\n"
    ).encode()
    response = raw(server, request)
    assert response.status == 200, response.body
    assert response.json() == {"code": 200}
    assert response.headers["content-type"] == "application/json"
    assert HINT not in response.headers
    assert global_of(client, api_key, "<USER_ID") == "<GLOBAL_USER_ID"


def test_docs_curl_unmap_request_with_raw_json_in_the_target(
    server: ServerThread, client: httpx.Client, api_key: str
) -> None:
    assert_ok(
        client.post(USERMAP, params={"api_key": api_key, "mapping": mapping_json(("u", "g"))})
    )
    target = f'/usermap?mapping=[{{"user_id":"u","unmap":true}}]&api_key={api_key}'
    request = f"POST {target} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n".encode()
    response = raw(server, request)
    assert response.status == 200, response.body
    assert global_of(client, api_key, "u") is None


def test_percent_encoded_query_on_a_post_without_body(client: httpx.Client, api_key: str) -> None:
    response = client.post(
        USERMAP, params={"mapping": mapping_json(("a", "g")), "api_key": api_key}
    )
    assert "%5B%7B%22user_id%22" in str(response.request.url)  # really percent-encoded
    assert response.request.content == b""
    assert_ok(response)
    assert global_of(client, api_key, "a") == "g"


def test_percent_encoded_query_with_spaces_and_unicode(client: httpx.Client, api_key: str) -> None:
    mapping = json.dumps([{"user_id": "José Ñ", "global_user_id": "用户 2"}])  # with spaces
    target = f"{USERMAP}?mapping={quote(mapping, safe='')}&api_key={quote(api_key)}"
    assert_ok(client.post(target))
    assert global_of(client, api_key, "José Ñ") == "用户 2"


def test_plus_in_a_query_string_is_a_space(client: httpx.Client, api_key: str) -> None:
    mapping = '{"user_id":"first+user","global_user_id":"g"}'  # `+` raw: a space when decoded
    assert_ok(client.post(f"{USERMAP}?api_key={api_key}&mapping={mapping}"))
    assert global_of(client, api_key, "first user") == "g"
    assert global_of(client, api_key, "first+user") is None


def test_get_with_query_string_maps(client: httpx.Client, api_key: str) -> None:
    response = client.get(USERMAP, params={"api_key": api_key, "mapping": mapping_json(("a", "g"))})
    assert_ok(response)
    assert global_of(client, api_key, "a") == "g"


def test_get_with_raw_json_in_the_target(
    server: ServerThread, client: httpx.Client, api_key: str
) -> None:
    target = f'/usermap?api_key={api_key}&mapping={{"user_id":"a","global_user_id":"g"}}'
    response = raw(server, f"GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    assert response.status == 200, response.body
    assert global_of(client, api_key, "a") == "g"


# --- 2. urlencoded bodies --------------------------------------------------------------------


def test_urlencoded_body(client: httpx.Client, api_key: str) -> None:
    response = client.post(USERMAP, data={"api_key": api_key, "mapping": mapping_json(("a", "g"))})
    assert response.request.headers["content-type"] == FORM
    assert_ok(response)
    assert global_of(client, api_key, "a") == "g"


@pytest.mark.parametrize(
    "content_type",
    [
        SEGMENT_CONTENT_TYPE,
        "application/x-www-form-urlencoded; charset=utf-8",
        "APPLICATION/X-WWW-FORM-URLENCODED",
    ],
)
def test_urlencoded_body_with_content_type_parameters(
    client: httpx.Client, api_key: str, content_type: str
) -> None:
    body = urlencode({"api_key": api_key, "mapping": mapping_json(("a", "g"))})
    response = client.post(USERMAP, content=body.encode(), headers={"Content-Type": content_type})
    assert_ok(response)
    assert global_of(client, api_key, "a") == "g"


def test_urlencoded_body_without_any_content_type(client: httpx.Client, api_key: str) -> None:
    body = urlencode({"api_key": api_key, "mapping": mapping_json(("a", "g"))}).encode()
    response = client.post(USERMAP, content=body)
    assert "content-type" not in response.request.headers
    assert_ok(response)
    assert global_of(client, api_key, "a") == "g"


def test_raw_form_body_without_content_type_over_a_socket(
    server: ServerThread, client: httpx.Client, api_key: str
) -> None:
    # The JSON unescaped in the body too, with no Content-Type header at all.
    body = f'api_key={api_key}&mapping=[{{"user_id":"a","global_user_id":"g"}}]'.encode()
    request = (
        f"POST /usermap HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    response = raw(server, request)
    assert response.status == 200, response.body
    assert global_of(client, api_key, "a") == "g"


def test_text_plain_body_is_read_as_urlencoded(client: httpx.Client, api_key: str) -> None:
    body = urlencode({"api_key": api_key, "mapping": mapping_json(("a", "g"))}).encode()
    response = client.post(USERMAP, content=body, headers={"Content-Type": "text/plain"})
    assert_ok(response)
    assert global_of(client, api_key, "a") == "g"


def test_chunked_form_body(client: httpx.Client, api_key: str) -> None:
    body = urlencode({"api_key": api_key, "mapping": mapping_json(("a", "g"))}).encode()

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(body), 7):
            yield body[start : start + 7]

    response = client.post(USERMAP, content=pieces(), headers={"Content-Type": FORM})
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_ok(response)
    assert global_of(client, api_key, "a") == "g"


# --- 3. multipart ----------------------------------------------------------------------------


def test_multipart_fields(client: httpx.Client, api_key: str) -> None:
    # (None, value): plain form fields without a filename.
    response = client.post(
        USERMAP,
        files={"api_key": (None, api_key), "mapping": (None, mapping_json(("a", "g")))},
    )
    assert response.request.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'filename="' not in response.request.read()
    assert_ok(response)
    assert global_of(client, api_key, "a") == "g"


def test_multipart_file_part_as_mapping(client: httpx.Client, api_key: str) -> None:
    # What `curl -F api_key=K -F mapping=@batch.json` sends.
    batch = mapping_json(("a", "g"), ("b", "g")).encode()
    response = client.post(
        USERMAP,
        data={"api_key": api_key},
        files={"mapping": ("batch.json", batch, "application/json")},
    )
    assert b'filename="batch.json"' in response.request.read()
    assert_ok(response)
    assert global_of(client, api_key, "a") == "g"
    assert global_of(client, api_key, "b") == "g"


def test_multipart_body_wins_over_query(client: httpx.Client, api_key: str) -> None:
    response = client.post(
        USERMAP,
        params={"api_key": api_key, "mapping": mapping_json(("a", "from-query"))},
        files={"mapping": (None, mapping_json(("a", "from-body")))},
    )
    assert_ok(response)
    assert global_of(client, api_key, "a") == "from-body"


# --- mapping: one object or an array; extra keys; options ------------------------------------


def test_mapping_as_one_object(client: httpx.Client, api_key: str) -> None:
    mapping = json.dumps({"user_id": "a", "global_user_id": "g"})
    assert_ok(client.post(USERMAP, data={"api_key": api_key, "mapping": mapping}))
    assert global_of(client, api_key, "a") == "g"


def test_mapping_as_an_array(client: httpx.Client, api_key: str) -> None:
    mapping = mapping_json(("a", "g1"), ("b", "g2"), ("c", "g1"))
    assert_ok(client.post(USERMAP, data={"api_key": api_key, "mapping": mapping}))
    assert [global_of(client, api_key, user) for user in ("a", "b", "c")] == ["g1", "g2", "g1"]


def test_mapping_with_whitespace_around_the_json(client: httpx.Client, api_key: str) -> None:
    mapping = '\n  [ { "user_id" : "a" ,\t"global_user_id" : "g" } ]  \n'
    assert_ok(client.post(USERMAP, data={"api_key": api_key, "mapping": mapping}))
    assert global_of(client, api_key, "a") == "g"


def test_extra_keys_in_mapping_objects_are_ignored(client: httpx.Client, api_key: str) -> None:
    mapping = json.dumps(
        [
            {
                "user_id": "a",
                "global_user_id": "g",
                "user_properties": {"plan": "pro", "nested": [1, {"x": None}]},
                "event_id": 17,
                "min_id_length": 1,
                "insert_id": "whatever",
            },
            {"user_id": "b", "unmap": True, "user_properties": {}, "event_id": "x"},
        ]
    )
    assert_ok(client.post(USERMAP, data={"api_key": api_key, "mapping": mapping}))
    assert global_of(client, api_key, "a") == "g"
    assert global_of(client, api_key, "b") is None


def test_min_id_length_is_not_enforced(client: httpx.Client, api_key: str) -> None:
    # Ignored: a one-character id passes even though the object asks for at least 5.
    mapping = json.dumps([{"user_id": "a", "global_user_id": "b", "min_id_length": 5}])
    assert_ok(
        client.post(
            USERMAP,
            data={"api_key": api_key, "mapping": mapping, "options": '{"min_id_length":5}'},
        )
    )
    assert global_of(client, api_key, "a") == "b"


def test_unknown_parameters_are_ignored(client: httpx.Client, api_key: str) -> None:
    response = client.post(
        USERMAP,
        data={
            "api_key": api_key,
            "mapping": mapping_json(("a", "g")),
            "secret_key": "s",
            "client_upload_time": "2024-01-01",
        },
    )
    assert_ok(response)
    assert global_of(client, api_key, "a") == "g"


@pytest.mark.parametrize(
    "options",
    ['{"min_id_length":5}', "{}", "[]", "null", "not json at all", "{", "\x00\xff", ""],
)
def test_options_accepted_and_ignored(client: httpx.Client, api_key: str, options: str) -> None:
    response = client.post(
        USERMAP, data={"api_key": api_key, "mapping": mapping_json(("a", "g")), "options": options}
    )
    assert_ok(response)
    assert global_of(client, api_key, "a") == "g"


def test_options_in_the_query_string_ignored(client: httpx.Client, api_key: str) -> None:
    response = client.post(
        USERMAP,
        params={"options": "{broken"},
        data={"api_key": api_key, "mapping": mapping_json(("a", "g"))},
    )
    assert_ok(response)
    assert global_of(client, api_key, "a") == "g"


# --- precedence: body over query, first occurrence, empty values -----------------------------


def test_body_mapping_wins_over_query_mapping(client: httpx.Client, api_key: str) -> None:
    response = client.post(
        USERMAP,
        params={"api_key": api_key, "mapping": mapping_json(("a", "from-query"))},
        data={"mapping": mapping_json(("a", "from-body"))},
    )
    assert_ok(response)
    assert global_of(client, api_key, "a") == "from-body"


def test_body_api_key_wins_over_query_api_key(client: httpx.Client) -> None:
    query_key, body_key = "key-query-" + uuid.uuid4().hex, "key-body-" + uuid.uuid4().hex
    response = client.post(
        USERMAP,
        params={"api_key": query_key},
        data={"api_key": body_key, "mapping": mapping_json(("a", "g"))},
    )
    assert_ok(response)
    # Permissive mode: each key is its own org, so the org tells which key was used.
    assert global_of(client, body_key, "a") == "g"
    assert global_of(client, query_key, "a") is None


def test_query_supplies_what_the_body_lacks(client: httpx.Client, api_key: str) -> None:
    response = client.post(
        USERMAP, params={"api_key": api_key}, data={"mapping": mapping_json(("a", "g"))}
    )
    assert_ok(response)
    assert global_of(client, api_key, "a") == "g"


def test_first_occurrence_wins_in_the_query(client: httpx.Client, api_key: str) -> None:
    query = urlencode(
        [
            ("api_key", api_key),
            ("mapping", mapping_json(("a", "first"))),
            ("mapping", mapping_json(("a", "second"))),
            ("api_key", "key-other-" + uuid.uuid4().hex),
        ]
    )
    assert_ok(client.post(f"{USERMAP}?{query}"))
    assert global_of(client, api_key, "a") == "first"


def test_first_occurrence_wins_in_the_body(client: httpx.Client, api_key: str) -> None:
    other_key = "key-other-" + uuid.uuid4().hex
    body = urlencode(
        [
            ("mapping", mapping_json(("a", "first"))),
            ("api_key", api_key),
            ("api_key", other_key),
            ("mapping", "not json"),  # never read: the first mapping wins
        ]
    )
    assert_ok(client.post(USERMAP, content=body.encode(), headers={"Content-Type": FORM}))
    assert global_of(client, api_key, "a") == "first"
    assert global_of(client, other_key, "a") is None


def test_first_occurrence_wins_in_multipart(client: httpx.Client, api_key: str) -> None:
    response = client.post(
        USERMAP,
        files=[
            ("api_key", (None, api_key)),
            ("mapping", (None, mapping_json(("a", "first")))),
            ("mapping", (None, mapping_json(("a", "second")))),
        ],
    )
    assert_ok(response)
    assert global_of(client, api_key, "a") == "first"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("api_key=&mapping=%7B%7D", MISSING_API_KEY),
        ("api_key=K&mapping=", MISSING_MAPPING),
        ("api_key&mapping=%7B%7D", MISSING_API_KEY),  # a name without `=`
        ("api_key=K&mapping", MISSING_MAPPING),
    ],
)
def test_empty_values_count_as_missing(
    client: httpx.Client, body: str, expected: dict[str, Any]
) -> None:
    response = client.post(USERMAP, content=body.encode(), headers={"Content-Type": FORM})
    assert_refused(response, 400, expected)


def test_empty_body_value_falls_back_to_the_query(client: httpx.Client, api_key: str) -> None:
    # An empty value is missing, so the body does not override the query with it.
    response = client.post(
        USERMAP,
        params={"api_key": api_key, "mapping": mapping_json(("a", "g"))},
        content=b"api_key=&mapping=",
        headers={"Content-Type": FORM},
    )
    assert_ok(response)
    assert global_of(client, api_key, "a") == "g"


def test_empty_occurrence_is_skipped_for_a_later_one(client: httpx.Client, api_key: str) -> None:
    body = f"api_key=&api_key={api_key}&mapping=&mapping={quote(mapping_json(('a', 'g')))}"
    assert_ok(client.post(USERMAP, content=body.encode(), headers={"Content-Type": FORM}))
    assert global_of(client, api_key, "a") == "g"


def test_empty_body_with_form_content_type_uses_the_query(
    client: httpx.Client, api_key: str
) -> None:
    response = client.post(
        USERMAP,
        params={"api_key": api_key, "mapping": mapping_json(("a", "g"))},
        headers={"Content-Type": FORM, "Content-Length": "0"},
    )
    assert_ok(response)
    assert global_of(client, api_key, "a") == "g"


# --- a JSON body is not read -----------------------------------------------------------------


def test_json_body_is_not_read_as_parameters(client: httpx.Client, api_key: str) -> None:
    response = client.post(
        USERMAP, json={"api_key": api_key, "mapping": [{"user_id": "a", "global_user_id": "g"}]}
    )
    assert_refused(response, 400, MISSING_API_KEY)
    assert "json" in response.headers[HINT].lower()
    assert global_of(client, api_key, "a") is None


def test_json_body_with_charset_is_not_read(client: httpx.Client, api_key: str) -> None:
    body = json.dumps({"api_key": api_key, "mapping": mapping_json(("a", "g"))}).encode()
    response = client.post(
        USERMAP, content=body, headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert_refused(response, 400, MISSING_API_KEY)
    assert global_of(client, api_key, "a") is None


def test_json_body_with_parameters_in_the_query(client: httpx.Client, api_key: str) -> None:
    # The JSON body gives no parameters; the query string still does.
    response = client.post(
        USERMAP,
        params={"api_key": api_key, "mapping": mapping_json(("a", "from-query"))},
        json={"mapping": [{"user_id": "a", "global_user_id": "from-body"}]},
    )
    assert_ok(response)
    assert global_of(client, api_key, "a") == "from-query"


def test_json_body_with_api_key_in_the_query_misses_mapping(
    client: httpx.Client, api_key: str
) -> None:
    response = client.post(
        USERMAP,
        params={"api_key": api_key},
        json={"mapping": [{"user_id": "a", "global_user_id": "g"}]},
    )
    assert_refused(response, 400, MISSING_MAPPING)
    assert "json" in response.headers[HINT].lower()


# --- real clients (spec section 8) -----------------------------------------------------------


def test_segment_map_user_request(client: httpx.Client, api_key: str) -> None:
    # action-destinations Amplitude mapUser: URLSearchParams body, explicit charset, a mapping
    # array of one object that carries min_id_length, and options.
    body = urlencode(
        {
            "api_key": api_key,
            "mapping": json.dumps(
                [{"user_id": "anon-previous-id", "global_user_id": "user-1234", "min_id_length": 5}]
            ),
            "options": json.dumps({"min_id_length": 5}),
        }
    ).encode()
    response = client.post(
        USERMAP,
        content=body,
        headers={"Content-Type": SEGMENT_CONTENT_TYPE, "User-Agent": "Segment (Actions)"},
    )
    assert response.request.headers["content-type"] == SEGMENT_CONTENT_TYPE
    assert_ok(response)
    assert global_of(client, api_key, "anon-previous-id") == "user-1234"


def test_rudderstack_map_and_unmap_requests(client: httpx.Client, api_key: str) -> None:
    # RudderStack's server: a form body with no Content-Type header at all.
    mapping = json.dumps(
        [
            {
                "global_user_id": "new-user",
                "user_id": "old-user",
                "user_properties": {"email": "a@example.com", "plan": "free"},
            }
        ]
    )
    response = client.post(
        USERMAP, content=urlencode({"api_key": api_key, "mapping": mapping}).encode()
    )
    assert "content-type" not in response.request.headers
    assert_ok(response)
    assert global_of(client, api_key, "old-user") == "new-user"

    unmap = json.dumps([{"user_id": "old-user", "user_properties": {}, "unmap": True}])
    response = client.post(
        USERMAP, content=urlencode({"api_key": api_key, "mapping": unmap}).encode()
    )
    assert "content-type" not in response.request.headers
    assert_ok(response)
    assert global_of(client, api_key, "old-user") is None
