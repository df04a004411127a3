"""GET /api/2/usermap over HTTP (spec section 4): where the ids travel, the answer, auth, errors."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import quote_from_bytes

import httpx
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from requests.auth import HTTPBasicAuth

from emulator.server import ServerThread
from emulator.settings import Limits, Settings
from emulator.tenancy import Org, Project, Region
from tests.conftest import StartEmulator

READ = "/api/2/usermap"
SECRET = "any-secret"  # permissive mode accepts any secret

PROJECT_KEY = "read-web-key"
PROJECT_SECRET = "read-web-secret"
CONFIGURED_ORGS = (
    Org(
        name="acme",
        projects=(
            Project(
                name="web",
                org="acme",
                api_key=PROJECT_KEY,
                secret_key=PROJECT_SECRET,
                region=Region.US,
            ),
        ),
    ),
)


# --- helpers ---------------------------------------------------------------------------------


def post_mapping(client: httpx.Client, api_key: str, objects: Sequence[dict[str, Any]]) -> None:
    response = client.post("/usermap", data={"api_key": api_key, "mapping": json.dumps(objects)})
    assert response.status_code == 200, response.text


def map_users(client: httpx.Client, api_key: str, *pairs: tuple[str, str]) -> None:
    post_mapping(client, api_key, [{"user_id": u, "global_user_id": g} for u, g in pairs])


def read(
    client: httpx.Client, api_key: str, user_ids: Sequence[str], secret: str = SECRET
) -> httpx.Response:
    """The documented call: a form body on a GET, one `user_ids` key per id."""
    return client.request(
        "GET",
        READ,
        data={"user_ids": list(user_ids)},
        auth=(api_key, secret),
    )


def read_ok(client: httpx.Client, api_key: str, user_ids: Sequence[str]) -> dict[str, Any]:
    response = read(client, api_key, user_ids)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def top_level_pairs(response: httpx.Response) -> list[tuple[str, Any]]:
    """The response object's members as written, repeats and order kept."""
    pairs: list[tuple[str, Any]] = json.loads(response.text, object_pairs_hook=list)
    return pairs


def basic(api_key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{api_key}:{secret}".encode()).decode()


def assert_dashboard_400(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers.get("x-emulator-hint")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"http_code", "type", "message", "metadata"}
    assert error["http_code"] == 400
    assert error["type"] == "invalid"
    assert isinstance(error["message"], str)
    assert error["message"]
    assert set(error["metadata"]) == {"details"}
    assert isinstance(error["metadata"]["details"], str)
    assert error["metadata"]["details"]


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Basic realm="Amplitude"'
    assert response.headers["content-type"] == "application/json"
    assert response.headers.get("x-emulator-hint")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"http_code", "type", "message"}
    assert body["error"]["http_code"] == 401
    assert body["error"]["type"] == "unauthorized"
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]


def assert_edges_name_their_own_ids(
    client: httpx.Client, api_key: str, body: dict[str, Any]
) -> None:
    """Each entry's amplitude_id is the amplitude_id of the user that entry names."""
    named = {
        edge["user_id"]: edge["amplitude_id"]
        for entry in body.values()
        for edge in entry["mapped_from"] + entry["mapped_to"]
    }
    if not named:
        return
    own = read_ok(client, api_key, list(named))
    for user_id, amplitude_id in named.items():
        assert own[user_id]["amplitude_id"] == amplitude_id, user_id


@pytest.fixture(scope="module")
def configured() -> Iterator[httpx.Client]:
    """An emulator with one configured project, so secrets are checked."""
    settings_ = Settings(port=0, log_level="warning", orgs=CONFIGURED_ORGS)
    with (
        ServerThread(settings_) as running,
        httpx.Client(base_url=running.base_url, timeout=10) as http,
    ):
        yield http


# --- the documented client -------------------------------------------------------------------


def test_documented_python_requests_call(server: ServerThread, api_key: str) -> None:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        map_users(client, api_key, ("user1", "user2"))
    url = server.base_url + READ
    user_ids = ["user1", "user2", "nobody"]

    # What the docs' call puts on the wire: a urlencoded body on a GET, one key per id.
    prepared = requests.Request(
        "GET", url, auth=HTTPBasicAuth(api_key, SECRET), data={"user_ids": user_ids}
    ).prepare()
    assert prepared.body == "user_ids=user1&user_ids=user2&user_ids=nobody"
    assert prepared.url == url

    response = requests.get(
        url, auth=HTTPBasicAuth(api_key, SECRET), data={"user_ids": user_ids}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert "X-Emulator-Hint" not in response.headers
    body = response.json()
    assert list(body) == user_ids
    assert body == {
        "user1": {
            "amplitude_id": 1,
            "mapped_from": [],
            "mapped_to": [{"amplitude_id": 2, "user_id": "user2"}],
        },
        "user2": {
            "amplitude_id": 2,
            "mapped_from": [{"amplitude_id": 1, "user_id": "user1"}],
            "mapped_to": [],
        },
        "nobody": {"mapped_from": [], "mapped_to": []},
    }


def test_documented_chain_example_exactly(client: httpx.Client, api_key: str) -> None:
    # Self-maps allocate amplitude ids and change nothing, so fillers can give the docs' ids:
    # filler-a 1, filler-b 2, user1 3, filler-c 4, user2 5, filler-d 6, user3 7.
    post_mapping(
        client,
        api_key,
        [
            {"user_id": "filler-a", "global_user_id": "filler-a"},
            {"user_id": "filler-b", "global_user_id": "filler-b"},
            {"user_id": "user1", "global_user_id": "user1"},
            {"user_id": "filler-c", "global_user_id": "filler-c"},
            {"user_id": "user1", "global_user_id": "user2"},
            {"user_id": "filler-d", "global_user_id": "filler-d"},
            {"user_id": "user3", "global_user_id": "user1"},
        ],
    )
    body = read_ok(client, api_key, ["user1", "user2", "nobody"])
    # The documented example, verbatim (spec section 4).
    assert body == {
        "user1": {
            "amplitude_id": 3,
            "mapped_from": [{"amplitude_id": 7, "user_id": "user3"}],
            "mapped_to": [{"amplitude_id": 5, "user_id": "user2"}],
        },
        "user2": {
            "amplitude_id": 5,
            "mapped_from": [{"amplitude_id": 3, "user_id": "user1"}],
            "mapped_to": [],
        },
        "nobody": {"mapped_from": [], "mapped_to": []},
    }
    assert "mappings" not in body
    assert list(body) == ["user1", "user2", "nobody"]
    # GET reports direct edges only: user3 points at user1, not at the end of the chain.
    user3 = read_ok(client, api_key, ["user3"])["user3"]
    assert user3 == {
        "amplitude_id": 7,
        "mapped_from": [],
        "mapped_to": [{"amplitude_id": 3, "user_id": "user1"}],
    }
    assert_edges_name_their_own_ids(client, api_key, body)


def test_chain_built_in_separate_requests_mirrors(client: httpx.Client, api_key: str) -> None:
    map_users(client, api_key, ("user1", "user2"))
    map_users(client, api_key, ("user3", "user1"), ("user4", "user1"))
    body = read_ok(client, api_key, ["user1", "user2", "user3", "user4"])
    ids = {user_id: entry["amplitude_id"] for user_id, entry in body.items()}
    assert ids == {"user1": 1, "user2": 2, "user3": 3, "user4": 4}
    assert body["user1"]["mapped_to"] == [{"amplitude_id": 2, "user_id": "user2"}]
    assert sorted(e["user_id"] for e in body["user1"]["mapped_from"]) == ["user3", "user4"]
    assert body["user2"]["mapped_from"] == [{"amplitude_id": 1, "user_id": "user1"}]
    assert body["user3"]["mapped_to"] == [{"amplitude_id": 1, "user_id": "user1"}]
    assert body["user4"]["mapped_to"] == [{"amplitude_id": 1, "user_id": "user1"}]
    # The two sides mirror each other.
    for user_id, entry in body.items():
        for edge in entry["mapped_to"]:
            mirrored = body[edge["user_id"]]["mapped_from"]
            assert {"amplitude_id": entry["amplitude_id"], "user_id": user_id} in mirrored
    assert_edges_name_their_own_ids(client, api_key, body)


# --- where the ids travel --------------------------------------------------------------------


def test_repeated_query_string_keys(client: httpx.Client, api_key: str) -> None:
    map_users(client, api_key, ("a", "b"))
    response = client.get(
        READ, params=[("user_ids", "b"), ("user_ids", "a")], auth=(api_key, SECRET)
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["b", "a"]
    assert body["a"]["mapped_to"] == [{"amplitude_id": 2, "user_id": "b"}]


@pytest.mark.parametrize("where", ["query", "body"])
def test_json_array_string(client: httpx.Client, api_key: str, where: str) -> None:
    map_users(client, api_key, ("a", "b"))
    value = json.dumps(["b", "nobody", "a"])
    if where == "query":
        response = client.get(READ, params={"user_ids": value}, auth=(api_key, SECRET))
    else:
        response = client.request("GET", READ, data={"user_ids": value}, auth=(api_key, SECRET))
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["b", "nobody", "a"]
    assert body["b"]["mapped_from"] == [{"amplitude_id": 1, "user_id": "a"}]
    assert body["nobody"] == {"mapped_from": [], "mapped_to": []}


def test_json_array_mixed_with_plain_values(client: httpx.Client, api_key: str) -> None:
    response = client.get(
        READ,
        params=[("user_ids", "x"), ("user_ids", '["y","z"]'), ("user_ids", "x")],
        auth=(api_key, SECRET),
    )
    assert response.status_code == 200, response.text
    assert list(response.json()) == ["x", "y", "z"]


@pytest.mark.parametrize("body_value", ["from-body", '["from-body"]'])
def test_body_wins_when_both_carry_ids(client: httpx.Client, api_key: str, body_value: str) -> None:
    response = client.request(
        "GET",
        READ,
        params=[("user_ids", "from-query"), ("user_ids", "also-query")],
        data={"user_ids": body_value},
        auth=(api_key, SECRET),
    )
    assert response.status_code == 200, response.text
    assert list(response.json()) == ["from-body"]


def test_query_used_when_body_has_no_ids(client: httpx.Client, api_key: str) -> None:
    response = client.request(
        "GET",
        READ,
        params={"user_ids": "from-query"},
        data={"user_ids": "", "other": "x"},
        auth=(api_key, SECRET),
    )
    assert response.status_code == 200, response.text
    assert list(response.json()) == ["from-query"]


@pytest.mark.parametrize("value", ["[", "[abc", '["a"', "[not, json]", "[1, 2]", '["a", 1]'])
def test_bracket_value_that_is_not_a_json_array_of_ids_is_an_ordinary_id(
    client: httpx.Client, api_key: str, value: str
) -> None:
    map_users(client, api_key, (value, "g"))
    body = read_ok(client, api_key, [value])
    assert list(body) == [value]
    assert body[value]["mapped_to"] == [{"amplitude_id": 2, "user_id": "g"}]


def test_empty_values_are_dropped(client: httpx.Client, api_key: str) -> None:
    response = client.get(
        READ,
        params=[("user_ids", ""), ("user_ids", "a"), ("user_ids", ""), ("user_ids", '["", "b"]')],
        auth=(api_key, SECRET),
    )
    assert response.status_code == 200, response.text
    assert list(response.json()) == ["a", "b"]


@pytest.mark.parametrize("values", [[""], ["", ""], ["[]"], ['[""]']])
def test_only_empty_values_is_zero_ids(
    client: httpx.Client, api_key: str, values: list[str]
) -> None:
    assert_dashboard_400(read(client, api_key, values))


def test_ids_are_never_split_on_commas(client: httpx.Client, api_key: str) -> None:
    map_users(client, api_key, ("a,b", "c"))
    body = read_ok(client, api_key, ["a,b", "a", "x, y"])
    assert list(body) == ["a,b", "a", "x, y"]
    assert body["a,b"]["mapped_to"] == [{"amplitude_id": 2, "user_id": "c"}]
    assert body["a"] == {"mapped_from": [], "mapped_to": []}
    query = client.get(READ, params={"user_ids": "a,b"}, auth=(api_key, SECRET))
    assert list(query.json()) == ["a,b"]


def test_duplicates_are_answered_once(client: httpx.Client, api_key: str) -> None:
    map_users(client, api_key, ("a", "b"))
    response = client.get(
        READ,
        params=[("user_ids", "a"), ("user_ids", "b"), ("user_ids", "a"), ("user_ids", '["b","a"]')],
        auth=(api_key, SECRET),
    )
    assert response.status_code == 200, response.text
    assert list(response.json()) == ["a", "b"]
    # The JSON text itself holds each key once (a dict would hide a repeated key).
    assert [key for key, _ in top_level_pairs(response)] == ["a", "b"]


def test_response_is_keyed_in_request_order(client: httpx.Client, api_key: str) -> None:
    map_users(client, api_key, ("m", "a"), ("z", "a"))
    order = ["z", "unknown-1", "a", "m", "unknown-0"]
    response = read(client, api_key, order)
    assert response.status_code == 200
    assert list(response.json()) == order
    assert [key for key, _ in top_level_pairs(response)] == order


def test_unicode_ids_round_trip(client: httpx.Client, api_key: str) -> None:
    user, global_ = "ユーザー 1 + ü", "glöbal/😀&=?"
    map_users(client, api_key, (user, global_))
    body = read_ok(client, api_key, [user, global_])
    assert body[user]["mapped_to"] == [{"amplitude_id": 2, "user_id": global_}]
    assert body[global_]["mapped_from"] == [{"amplitude_id": 1, "user_id": user}]


# --- unknown and unmapped users --------------------------------------------------------------


def test_unknown_user_has_empty_lists_and_no_amplitude_id(
    client: httpx.Client, api_key: str
) -> None:
    map_users(client, api_key, ("known", "g"))
    body = read_ok(client, api_key, ["stranger"])
    assert body == {"stranger": {"mapped_from": [], "mapped_to": []}}


def test_known_but_unmapped_user(client: httpx.Client, api_key: str) -> None:
    # A self-map names the user (it gets an amplitude_id) and maps nothing.
    post_mapping(client, api_key, [{"user_id": "solo", "global_user_id": "solo"}])
    map_users(client, api_key, ("u", "g"))
    post_mapping(client, api_key, [{"user_id": "u", "unmap": True}])
    body = read_ok(client, api_key, ["solo", "u", "g"])
    assert body == {
        "solo": {"amplitude_id": 1, "mapped_from": [], "mapped_to": []},
        "u": {"amplitude_id": 2, "mapped_from": [], "mapped_to": []},
        "g": {"amplitude_id": 3, "mapped_from": [], "mapped_to": []},
    }


def test_remapping_moves_the_edge(client: httpx.Client, api_key: str) -> None:
    map_users(client, api_key, ("u", "g1"))
    map_users(client, api_key, ("u", "g2"))
    body = read_ok(client, api_key, ["u", "g1", "g2"])
    assert body["u"]["mapped_to"] == [{"amplitude_id": 3, "user_id": "g2"}]
    assert body["g1"]["mapped_from"] == []
    assert body["g2"]["mapped_from"] == [{"amplitude_id": 1, "user_id": "u"}]


# --- how many ids ----------------------------------------------------------------------------


def test_zero_ids_is_400_with_the_dashboard_error_shape(client: httpx.Client, api_key: str) -> None:
    assert_dashboard_400(client.get(READ, auth=(api_key, SECRET)))
    assert_dashboard_400(client.get(READ, params={"other": "x"}, auth=(api_key, SECRET)))


@pytest.mark.parametrize("where", ["query", "body", "json-array"])
def test_101_ids_is_400(client: httpx.Client, api_key: str, where: str) -> None:
    ids = [f"u{i:03}" for i in range(101)]
    if where == "query":
        response = client.get(READ, params={"user_ids": ids}, auth=(api_key, SECRET))
    elif where == "body":
        response = read(client, api_key, ids)
    else:
        response = read(client, api_key, [json.dumps(ids)])
    assert_dashboard_400(response)
    assert "101" in response.json()["error"]["metadata"]["details"]


def test_exactly_100_ids_is_200(client: httpx.Client, api_key: str) -> None:
    ids = [f"u{i:03}" for i in range(100)]
    map_users(client, api_key, ("u042", "u099"))
    body = read_ok(client, api_key, ids)
    assert list(body) == ids
    assert body["u042"]["mapped_to"] == [{"amplitude_id": 2, "user_id": "u099"}]
    assert body["u000"] == {"mapped_from": [], "mapped_to": []}


def test_100_distinct_ids_among_more_values_is_200(client: httpx.Client, api_key: str) -> None:
    ids = [f"u{i:03}" for i in range(100)]
    body = read_ok(client, api_key, [*ids, "u000", "u050", *ids[:10]])
    assert list(body) == ids


# --- authentication --------------------------------------------------------------------------


def test_missing_credentials_is_401(client: httpx.Client, configured: httpx.Client) -> None:
    for http in (client, configured):
        assert_unauthorized(http.get(READ, params={"user_ids": "a"}))


MALFORMED_AUTHORIZATION: list[bytes] = [
    b"Basic !!!not-base64!!!",
    b"Basic " + base64.b64encode(b"no-colon-here"),
    b"Basic " + base64.b64encode(b":secret-but-no-key"),
    b"Basic " + base64.b64encode(b"\xff\xfe:x"),  # not UTF-8
    b"Basic \xe9\xe9\xe9",  # not ASCII
    b"Basic",
    b"",
    b"Bearer " + base64.b64encode(b"key:secret"),
    b"Digest username=key",
    base64.b64encode(b"key:secret"),  # no scheme
]


@pytest.mark.parametrize("authorization", MALFORMED_AUTHORIZATION)
def test_malformed_authorization_is_401(
    client: httpx.Client, configured: httpx.Client, authorization: bytes
) -> None:
    for http in (client, configured):
        response = http.get(
            READ, params={"user_ids": "a"}, headers={b"Authorization": authorization}
        )
        assert_unauthorized(response)


def test_basic_scheme_is_case_insensitive(configured: httpx.Client) -> None:
    encoded = base64.b64encode(f"{PROJECT_KEY}:{PROJECT_SECRET}".encode()).decode()
    for scheme in ("Basic", "basic", "BASIC"):
        response = configured.get(
            READ, params={"user_ids": "a"}, headers={"Authorization": f"{scheme} {encoded}"}
        )
        assert response.status_code == 200, (scheme, response.text)


def test_secret_may_contain_a_colon() -> None:
    orgs = (
        Org(
            name="o",
            projects=(
                Project(name="p", org="o", api_key="k", secret_key="s:e:c", region=Region.US),
            ),
        ),
    )
    with ServerThread(Settings(port=0, log_level="warning", orgs=orgs)) as running:
        url = running.base_url + READ
        assert httpx.get(url, params={"user_ids": "a"}, auth=("k", "s:e:c")).status_code == 200
        assert_unauthorized(httpx.get(url, params={"user_ids": "a"}, auth=("k", "s")))


def test_configured_mode_checks_the_secret(configured: httpx.Client) -> None:
    ok = configured.get(READ, params={"user_ids": "a"}, auth=(PROJECT_KEY, PROJECT_SECRET))
    assert ok.status_code == 200, ok.text
    assert_unauthorized(
        configured.get(READ, params={"user_ids": "a"}, auth=(PROJECT_KEY, "wrong-secret"))
    )
    assert_unauthorized(configured.get(READ, params={"user_ids": "a"}, auth=(PROJECT_KEY, "")))
    assert_unauthorized(
        configured.get(READ, params={"user_ids": "a"}, auth=("unknown-key", PROJECT_SECRET))
    )
    # The secret of one project is no password for another key.
    assert_unauthorized(
        configured.get(READ, params={"user_ids": "a"}, auth=(PROJECT_SECRET, PROJECT_KEY))
    )


def test_permissive_mode_accepts_any_secret(client: httpx.Client, api_key: str) -> None:
    map_users(client, api_key, ("u", "g"))
    for secret in ("", "x", "another secret"):
        response = client.get(READ, params={"user_ids": "u"}, auth=(api_key, secret))
        assert response.status_code == 200, response.text
        assert response.json()["u"]["mapped_to"] == [{"amplitude_id": 2, "user_id": "g"}]


@pytest.mark.parametrize("where", ["query", "body"])
def test_credentials_as_parameters(configured: httpx.Client, where: str) -> None:
    good = {"api_key": PROJECT_KEY, "secret_key": PROJECT_SECRET, "user_ids": "a"}
    wrong = {**good, "secret_key": "wrong"}
    only_key = {"api_key": PROJECT_KEY, "user_ids": "a"}

    def send(params: dict[str, str]) -> httpx.Response:
        if where == "query":
            return configured.get(READ, params=params)
        return configured.request("GET", READ, data=params)

    response = send(good)
    assert response.status_code == 200, response.text
    assert list(response.json()) == ["a"]
    assert_unauthorized(send(wrong))
    assert_unauthorized(send(only_key))


def test_authorization_header_wins_over_parameters(configured: httpx.Client) -> None:
    params = {"api_key": PROJECT_KEY, "secret_key": PROJECT_SECRET, "user_ids": "a"}
    # A header is present, so it alone decides: a bad header is not rescued by good parameters.
    assert_unauthorized(
        configured.get(READ, params=params, headers={"Authorization": basic(PROJECT_KEY, "bad")})
    )
    assert_unauthorized(configured.get(READ, params=params, headers={"Authorization": "Bearer x"}))
    good_header = {"Authorization": basic(PROJECT_KEY, PROJECT_SECRET)}
    wrong_params = {**params, "secret_key": "wrong"}
    assert configured.get(READ, params=wrong_params, headers=good_header).status_code == 200


def test_auth_is_checked_before_user_ids(configured: httpx.Client) -> None:
    assert_unauthorized(configured.get(READ))  # no credentials, no ids
    assert_unauthorized(configured.get(READ, auth=(PROJECT_KEY, "wrong")))
    too_many = [f"u{i}" for i in range(101)]
    assert_unauthorized(
        configured.request("GET", READ, data={"user_ids": too_many}, auth=(PROJECT_KEY, "wrong"))
    )
    assert_unauthorized(
        configured.get(READ, headers={"Authorization": "Basic !!"}, params={"user_ids": ""})
    )
    # With good credentials the same requests reach the ids check.
    assert_dashboard_400(configured.get(READ, auth=(PROJECT_KEY, PROJECT_SECRET)))


# --- rate limiting ---------------------------------------------------------------------------


def test_reads_are_not_rate_limited(start_emulator: StartEmulator) -> None:
    running = start_emulator(limits=Limits(rate_limit=1, rate_window_seconds=30))
    with httpx.Client(base_url=running.base_url, timeout=10) as client:
        map_users(client, "k", ("u", "g"))
        limited = client.post(
            "/usermap", data={"api_key": "k", "mapping": '{"user_id":"v","global_user_id":"g"}'}
        )
        assert limited.status_code == 429, limited.text  # the window is full
        for _ in range(25):
            response = read(client, "k", ["u", "g", "v"])
            assert response.status_code == 200, response.text
            assert "retry-after" not in response.headers
            body = response.json()
            assert body["u"]["mapped_to"] == [{"amplitude_id": 2, "user_id": "g"}]
            assert body["v"] == {"mapped_from": [], "mapped_to": []}
        # Reads did not empty the window either.
        again = client.post(
            "/usermap", data={"api_key": "k", "mapping": '{"user_id":"v","global_user_id":"g"}'}
        )
        assert again.status_code == 429


# --- robustness: no input gives a 500 --------------------------------------------------------


NASTY_REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("lone surrogate in query array", {"params": {"user_ids": '["\\ud800"]'}}),
    ("lone surrogate in body array", {"content": b'user_ids=["\\udfff","a"]'}),
    ("deeply nested array", {"content": b"user_ids=" + b"[" * 200_000}),
    ("huge number in array", {"content": b"user_ids=[" + b"9" * 5000 + b"]"}),
    ("NaN in array", {"params": {"user_ids": "[NaN]"}}),
    ("objects in array", {"params": {"user_ids": '[{"a":1}, null, true]'}}),
    ("bad percent escapes", {"content": b"user_ids=%&user_ids=%zz&user_ids=%ff%fe"}),
    ("raw invalid utf-8", {"content": b"user_ids=\xff\xfe\xfd"}),
    ("nul byte", {"params": {"user_ids": "a\x00b"}}),
    ("only separators", {"content": b"&&&===&&"}),
    ("key without value", {"content": b"user_ids&user_ids"}),
    ("json body", {"json": {"user_ids": ["a"]}}),
    (
        "multipart without boundary",
        {"content": b"x", "headers": {"Content-Type": "multipart/form-data"}},
    ),
    (
        "garbage multipart",
        {
            "content": b"--x\r\ngarbage",
            "headers": {"Content-Type": "multipart/form-data; boundary=x"},
        },
    ),
    ("non-ascii host", {"params": {"user_ids": "a"}, "headers": {"Host": b"\xe9xample"}}),
    ("empty host", {"params": {"user_ids": "a"}, "headers": {"Host": b""}}),
    ("ipv6 host", {"params": {"user_ids": "a"}, "headers": {"Host": b"[::1]:80"}}),
    ("very long id", {"content": b"user_ids=" + b"x" * 500_000}),
]


@pytest.mark.parametrize(
    "request_kwargs", [kwargs for _, kwargs in NASTY_REQUESTS], ids=[n for n, _ in NASTY_REQUESTS]
)
def test_no_input_gives_a_500(
    client: httpx.Client, api_key: str, request_kwargs: dict[str, Any]
) -> None:
    response = client.request("GET", READ, auth=(api_key, SECRET), **request_kwargs)
    assert response.status_code in (200, 400), response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    if response.status_code == 200:
        assert body
        for entry in body.values():
            assert set(entry) <= {"amplitude_id", "mapped_from", "mapped_to"}
    else:
        assert body["error"]["type"] == "invalid"


def test_lone_surrogate_array_is_an_ordinary_id(client: httpx.Client, api_key: str) -> None:
    value = '["\\ud800"]'
    body = read_ok(client, api_key, [value])
    assert body == {value: {"mapped_from": [], "mapped_to": []}}


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(values=st.lists(st.text(max_size=12).filter(lambda v: not v.startswith("[")), max_size=110))
def test_any_ids_answer_once_each_in_order(
    client: httpx.Client, api_key: str, values: list[str]
) -> None:
    response = read(client, api_key, values)
    expected = list(dict.fromkeys(v for v in values if v))
    if 1 <= len(expected) <= 100:
        assert response.status_code == 200, response.text
        body = response.json()
        assert list(body) == expected
        assert all(entry == {"mapped_from": [], "mapped_to": []} for entry in body.values())
    else:
        assert_dashboard_400(response)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=300), query=st.binary(max_size=100))
def test_arbitrary_bytes_never_give_a_500(
    client: httpx.Client, api_key: str, body: bytes, query: bytes
) -> None:
    # Bytes a client can put in a query: raw where legal (stray % included), else escaped.
    url = client.base_url.join(READ).copy_with(
        query=quote_from_bytes(query, safe="=&[]%,:").encode()
    )
    response = client.request("GET", url, content=body, auth=(api_key, SECRET))
    assert response.status_code in (200, 400), response.text
    assert response.headers["content-type"] == "application/json"


def test_long_target_is_414_in_the_dashboard_shape(client: httpx.Client, api_key: str) -> None:
    response = client.get(READ, params={"user_ids": "u" * 9000}, auth=(api_key, SECRET))
    assert response.status_code == 414
    assert response.json() == {
        "error": {
            "http_code": 414,
            "type": "invalid",
            "message": "URI too long",
            "metadata": {"details": response.headers["x-emulator-hint"]},
        }
    }


def test_large_body_is_413_in_the_dashboard_shape(client: httpx.Client, api_key: str) -> None:
    response = client.request(
        "GET", READ, content=b"user_ids=" + b"u" * 1_048_577, auth=(api_key, SECRET)
    )
    assert response.status_code == 413
    assert response.json()["error"]["http_code"] == 413
    assert response.json()["error"]["message"] == "Payload too large"


def test_json_body_hint_says_json_is_not_read(client: httpx.Client, api_key: str) -> None:
    response = client.request("GET", READ, json={"user_ids": ["a"]}, auth=(api_key, SECRET))
    assert_dashboard_400(response)
    assert "JSON body is not read" in response.headers["x-emulator-hint"]
