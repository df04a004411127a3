"""Orgs, projects, keys and regions over HTTP (spec section 1), and configuration files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.server import ServerThread
from emulator.settings import Settings
from emulator.tenancy import ConfigError, Org, Project, Region, load_orgs
from tests.conftest import StartEmulator

READ = "/api/2/usermap"

ACME_US = ("acme-us-key", "acme-us-secret")
ACME_EU = ("acme-eu-key", "acme-eu-secret")
GLOBEX = ("globex-key", "globex-secret")

ORGS = (
    Org(
        name="acme",
        projects=(
            Project("web", "acme", ACME_US[0], ACME_US[1], Region.US),
            Project("eu-app", "acme", ACME_EU[0], ACME_EU[1], Region.EU),
        ),
    ),
    Org(name="globex", projects=(Project("main", "globex", GLOBEX[0], GLOBEX[1], Region.US),)),
)

TOML_CONFIG = f"""
[[orgs]]
name = "acme"
  [[orgs.projects]]
  name = "web"
  api_key = "{ACME_US[0]}"
  secret_key = "{ACME_US[1]}"
  region = "us"

  [[orgs.projects]]
  name = "eu-app"
  api_key = "{ACME_EU[0]}"
  secret_key = "{ACME_EU[1]}"
  region = "EU"        # case does not matter

[[orgs]]
name = "globex"
  [[orgs.projects]]
  name = "main"
  api_key = "{GLOBEX[0]}"
  secret_key = "{GLOBEX[1]}"
  # region defaults to us
"""

JSON_CONFIG: dict[str, Any] = {
    "orgs": [
        {
            "name": "acme",
            "projects": [
                {"name": "web", "api_key": ACME_US[0], "secret_key": ACME_US[1], "region": "us"},
                {"name": "eu-app", "api_key": ACME_EU[0], "secret_key": ACME_EU[1], "region": "eu"},
            ],
        },
        {
            "name": "globex",
            "projects": [{"name": "main", "api_key": GLOBEX[0], "secret_key": GLOBEX[1]}],
        },
    ]
}


# --- helpers ---------------------------------------------------------------------------------


def mapping(user_id: str, global_user_id: str) -> str:
    return json.dumps([{"user_id": user_id, "global_user_id": global_user_id}])


def post(
    client: httpx.Client, api_key: str, host: str | None = None, mapping_: str | None = None
) -> httpx.Response:
    headers = {"Host": host} if host is not None else {}
    return client.post(
        "/usermap",
        data={"api_key": api_key, "mapping": mapping_ or mapping("u", "g")},
        headers=headers,
    )


def get(
    client: httpx.Client,
    credentials: tuple[str, str],
    user_ids: list[str],
    host: str | None = None,
) -> httpx.Response:
    headers = {"Host": host} if host is not None else {}
    return client.request(
        "GET", READ, data={"user_ids": user_ids}, auth=credentials, headers=headers
    )


def read_ok(
    client: httpx.Client, credentials: tuple[str, str], user_ids: list[str], host: str | None = None
) -> dict[str, Any]:
    response = get(client, credentials, user_ids, host)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_invalid_key(response: httpx.Response, api_key: str) -> str:
    """The HTTP V2-style invalid key answer; returns the hint."""
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"code": 400, "error": f"Invalid API key: {api_key}"}
    hint: str = response.headers.get("x-emulator-hint", "")
    assert hint
    return hint


def assert_unauthorized(response: httpx.Response) -> str:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == 'Basic realm="Amplitude"'
    body = response.json()
    assert body["error"]["http_code"] == 401
    assert body["error"]["type"] == "unauthorized"
    hint: str = response.headers.get("x-emulator-hint", "")
    assert hint
    return hint


@pytest.fixture(scope="module")
def configured() -> Iterator[httpx.Client]:
    """One configured emulator for the module's stateless checks (starting one costs ~0.2 s)."""
    settings = Settings(port=0, log_level="warning", orgs=ORGS)
    with (
        ServerThread(settings) as running,
        httpx.Client(base_url=running.base_url, timeout=10) as client,
    ):
        yield client


@pytest.fixture
def fresh_configured(start_emulator: StartEmulator) -> Iterator[httpx.Client]:
    """A configured emulator of the test's own, for exact amplitude ids."""
    running = start_emulator(orgs=ORGS)
    with httpx.Client(base_url=running.base_url, timeout=10) as client:
        yield client


# --- configured mode -------------------------------------------------------------------------


def check_configured_server(running: ServerThread) -> None:
    """What every way of configuring ORGS must give, checked over HTTP."""
    with httpx.Client(base_url=running.base_url, timeout=10) as client:
        assert post(client, ACME_US[0]).status_code == 200
        assert post(client, GLOBEX[0]).status_code == 200
        assert_invalid_key(post(client, "not-configured"), "not-configured")
        # The EU project is EU; the US ones are US.
        assert post(client, ACME_EU[0], host="api.eu.amplitude.com").status_code == 200
        assert_invalid_key(post(client, ACME_EU[0], host="api.amplitude.com"), ACME_EU[0])
        assert_invalid_key(post(client, GLOBEX[0], host="api.eu.amplitude.com"), GLOBEX[0])
        # Secrets are checked, and the two acme projects share one org.
        body = read_ok(client, ACME_EU, ["u"])
        assert body["u"]["mapped_to"] == [{"amplitude_id": 2, "user_id": "g"}]
        assert_unauthorized(get(client, (ACME_US[0], GLOBEX[1]), ["u"]))
        assert_unauthorized(get(client, ("not-configured", "x"), ["u"]))


def test_configured_with_orgs(start_emulator: StartEmulator) -> None:
    check_configured_server(start_emulator(orgs=ORGS))


def test_configured_from_a_toml_file(start_emulator: StartEmulator, tmp_path: Path) -> None:
    path = tmp_path / "emulator.toml"
    path.write_text(TOML_CONFIG, encoding="utf-8")
    orgs = load_orgs(path)
    assert [org.name for org in orgs] == ["acme", "globex"]
    assert [p.region for p in orgs[0].projects] == [Region.US, Region.EU]
    assert orgs[1].projects[0].region is Region.US
    check_configured_server(start_emulator(orgs=tuple(orgs)))


def test_configured_from_a_json_file(start_emulator: StartEmulator, tmp_path: Path) -> None:
    path = tmp_path / "emulator.json"
    path.write_text(json.dumps(JSON_CONFIG), encoding="utf-8")
    orgs = load_orgs(path)
    assert [org.name for org in orgs] == ["acme", "globex"]
    check_configured_server(start_emulator(orgs=tuple(orgs)))


@pytest.mark.parametrize("api_key", ["unknown", "ACME-US-KEY", ACME_US[1], f" {ACME_US[0]}"])
def test_unknown_key_is_invalid(configured: httpx.Client, api_key: str) -> None:
    hint = assert_invalid_key(post(configured, api_key), api_key)
    assert "api_key" in hint or "key" in hint.lower()
    assert_unauthorized(get(configured, (api_key, ACME_US[1]), ["u"]))


def test_invalid_key_in_the_query_string(configured: httpx.Client) -> None:
    response = configured.post("/usermap", params={"api_key": "nope", "mapping": mapping("u", "g")})
    assert_invalid_key(response, "nope")


# --- regions ---------------------------------------------------------------------------------

EU_HOSTS = [
    "api.eu.amplitude.com",
    "API.EU.AMPLITUDE.COM",
    "api.eu.amplitude.com:443",
    "Api.Eu.Amplitude.Com:8080",
    "analytics.eu.amplitude.com",
]
US_HOSTS = [
    "api.amplitude.com",
    "API.Amplitude.com:443",
    "api2.amplitude.com",
    "amplitude.com",
    "AMPLITUDE.COM:80",
]
NEUTRAL_HOSTS = [None, "localhost", "localhost:8000", "emulator:8000", "127.0.0.1", "[::1]:8000"]


@pytest.mark.parametrize("host", US_HOSTS)
def test_eu_key_on_a_us_host_is_invalid(configured: httpx.Client, host: str) -> None:
    hint = assert_invalid_key(post(configured, ACME_EU[0], host=host), ACME_EU[0])
    assert "region" in hint.lower()
    assert "EU" in hint


@pytest.mark.parametrize("host", EU_HOSTS)
def test_us_key_on_an_eu_host_is_invalid(configured: httpx.Client, host: str) -> None:
    hint = assert_invalid_key(post(configured, ACME_US[0], host=host), ACME_US[0])
    assert "region" in hint.lower()
    assert "US" in hint


@pytest.mark.parametrize("host", [*EU_HOSTS, *NEUTRAL_HOSTS])
def test_eu_key_on_eu_or_neutral_host(configured: httpx.Client, host: str | None) -> None:
    response = post(configured, ACME_EU[0], host=host)
    assert response.status_code == 200, response.text
    assert response.json() == {"code": 200}


@pytest.mark.parametrize("host", [*US_HOSTS, *NEUTRAL_HOSTS])
def test_us_key_on_us_or_neutral_host(configured: httpx.Client, host: str | None) -> None:
    assert post(configured, ACME_US[0], host=host).status_code == 200


def test_wrong_region_changes_nothing(configured: httpx.Client) -> None:
    assert post(configured, ACME_EU[0], "api.amplitude.com", mapping("x", "y")).status_code == 400
    body = read_ok(configured, ACME_EU, ["x", "y"])
    assert body == {
        "x": {"mapped_from": [], "mapped_to": []},
        "y": {"mapped_from": [], "mapped_to": []},
    }


@pytest.mark.parametrize(
    ("credentials", "host", "status"),
    [
        (ACME_EU, "amplitude.com", 401),
        (ACME_EU, "AMPLITUDE.com:443", 401),
        (ACME_EU, "analytics.eu.amplitude.com", 200),
        (ACME_EU, "Analytics.EU.Amplitude.com:443", 200),
        (ACME_EU, "localhost", 200),
        (ACME_US, "amplitude.com", 200),
        (ACME_US, "analytics.eu.amplitude.com", 401),
        (ACME_US, "localhost", 200),
        (GLOBEX, "analytics.eu.amplitude.com", 401),
    ],
)
def test_read_region_by_host(
    configured: httpx.Client, credentials: tuple[str, str], host: str, status: int
) -> None:
    assert post(configured, ACME_US[0], mapping_=mapping("reader", "target")).status_code == 200
    response = get(configured, credentials, ["reader"], host=host)
    if status == 401:
        hint = assert_unauthorized(response)
        assert "region" in hint.lower()
    else:
        assert response.status_code == 200, response.text
        body = response.json()
        if credentials[0] == GLOBEX[0]:
            assert body["reader"] == {"mapped_from": [], "mapped_to": []}
        else:
            target = read_ok(configured, ACME_US, ["target"])["target"]
            assert body["reader"]["mapped_to"] == [
                {"amplitude_id": target["amplitude_id"], "user_id": "target"}
            ]


# --- permissive mode -------------------------------------------------------------------------


@pytest.mark.parametrize("host", [*US_HOSTS, *EU_HOSTS, *NEUTRAL_HOSTS])
def test_permissive_any_key_on_any_host(
    client: httpx.Client, api_key: str, host: str | None
) -> None:
    response = post(client, api_key, host=host)
    assert response.status_code == 200, response.text
    # Any secret reads it back on any host.
    for read_host, secret in (("analytics.eu.amplitude.com", "s1"), ("amplitude.com", "")):
        body = read_ok(client, (api_key, secret), ["u"], host=read_host)
        assert body["u"]["mapped_to"] == [{"amplitude_id": 2, "user_id": "g"}]


def test_permissive_keys_are_separate_orgs(client: httpx.Client, api_key: str) -> None:
    other = api_key + "-other"
    assert post(client, api_key, mapping_=mapping("u", "g")).status_code == 200
    assert post(client, other, mapping_=mapping("g", "u")).status_code == 200  # no cycle here
    mine = read_ok(client, (api_key, "s"), ["u", "g"])
    theirs = read_ok(client, (other, "s"), ["u", "g"])
    assert mine["u"]["mapped_to"] == [{"amplitude_id": 2, "user_id": "g"}]
    assert mine["g"]["mapped_to"] == []
    assert theirs["g"]["mapped_to"] == [{"amplitude_id": 2, "user_id": "u"}]
    assert theirs["u"]["mapped_to"] == []


# --- keys that are never valid ---------------------------------------------------------------


@pytest.mark.parametrize("key", ["undefined", "null"])
@pytest.mark.parametrize("mode", ["permissive", "configured"])
def test_undefined_and_null_keys_are_refused(
    client: httpx.Client, configured: httpx.Client, key: str, mode: str
) -> None:
    http = client if mode == "permissive" else configured
    hint = assert_invalid_key(post(http, key), key)
    assert key in hint
    assert_invalid_key(
        http.post("/usermap", params={"api_key": key, "mapping": mapping("u", "g")}), key
    )
    assert_unauthorized(get(http, (key, "secret"), ["u"]))
    assert_unauthorized(http.get(READ, params={"api_key": key, "secret_key": "s", "user_ids": "u"}))


def test_undefined_key_changes_nothing(client: httpx.Client) -> None:
    assert post(client, "undefined", mapping_=mapping("ux", "gx")).status_code == 400
    # Not even the org of a key with that name gained anything; it cannot read either.
    assert get(client, ("undefined", "s"), ["ux"]).status_code == 401


# --- orgs are separate; projects of one org share ---------------------------------------------


def test_two_orgs_never_see_each_others_mappings(fresh_configured: httpx.Client) -> None:
    assert (
        post(
            fresh_configured, ACME_US[0], mapping_=mapping("shared-user", "acme-global")
        ).status_code
        == 200
    )
    globex_view = read_ok(fresh_configured, GLOBEX, ["shared-user", "acme-global"])
    assert globex_view == {
        "shared-user": {"mapped_from": [], "mapped_to": []},
        "acme-global": {"mapped_from": [], "mapped_to": []},
    }
    # Globex maps the same user elsewhere; each org keeps its own graph and its own counter.
    assert (
        post(
            fresh_configured, GLOBEX[0], mapping_=mapping("shared-user", "globex-global")
        ).status_code
        == 200
    )
    globex_view = read_ok(fresh_configured, GLOBEX, ["shared-user", "acme-global"])
    assert globex_view["shared-user"] == {
        "amplitude_id": 1,
        "mapped_from": [],
        "mapped_to": [{"amplitude_id": 2, "user_id": "globex-global"}],
    }
    assert "amplitude_id" not in globex_view["acme-global"]
    acme_view = read_ok(fresh_configured, ACME_US, ["shared-user", "globex-global"])
    assert acme_view["shared-user"]["mapped_to"] == [{"amplitude_id": 2, "user_id": "acme-global"}]
    assert acme_view["globex-global"] == {"mapped_from": [], "mapped_to": []}


def test_projects_of_one_org_share_its_mappings(fresh_configured: httpx.Client) -> None:
    eu = "api.eu.amplitude.com"
    assert post(fresh_configured, ACME_US[0], mapping_=mapping("a", "b")).status_code == 200
    assert (
        post(fresh_configured, ACME_EU[0], host=eu, mapping_=mapping("c", "b")).status_code == 200
    )
    us_view = read_ok(fresh_configured, ACME_US, ["b"], host="amplitude.com")
    eu_view = read_ok(fresh_configured, ACME_EU, ["b"], host="analytics.eu.amplitude.com")
    assert us_view == eu_view
    assert us_view["b"]["mapped_from"] == [
        {"amplitude_id": 1, "user_id": "a"},
        {"amplitude_id": 3, "user_id": "c"},
    ]
    # A cycle across projects of one org is still a cycle.
    response = post(fresh_configured, ACME_EU[0], host=eu, mapping_=mapping("b", "a"))
    assert response.status_code == 400
    assert response.json()["error"] == "Invalid mapping"


# --- configuration errors --------------------------------------------------------------------

PROJECT = '[[orgs.projects]]\nname = "p"\napi_key = "k1"\nsecret_key = "s1"\n'


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "bad-region.toml",
            '[[orgs]]\nname = "o"\n' + PROJECT + 'region = "mars"\n',
            "region must be 'us' or 'eu'",
        ),
        (
            "missing-api-key.toml",
            '[[orgs]]\nname = "o"\n[[orgs.projects]]\nname = "p"\nsecret_key = "s"\n',
            "api_key must be a non-empty string",
        ),
        (
            "empty-api-key.toml",
            '[[orgs]]\nname = "o"\n[[orgs.projects]]\napi_key = ""\nsecret_key = "s"\n',
            "api_key must be a non-empty string",
        ),
        (
            "missing-secret.toml",
            '[[orgs]]\nname = "o"\n[[orgs.projects]]\napi_key = "k"\n',
            "secret_key must be a non-empty string",
        ),
        (
            "duplicate-key-across-orgs.toml",
            '[[orgs]]\nname = "o1"\n' + PROJECT + '[[orgs]]\nname = "o2"\n' + PROJECT,
            "same api_key",
        ),
        (
            "duplicate-key-in-org.toml",
            '[[orgs]]\nname = "o1"\n' + PROJECT + PROJECT,
            "same api_key",
        ),
        (
            "unset-client-key.toml",
            '[[orgs]]\nname = "o"\n[[orgs.projects]]\napi_key = "undefined"\nsecret_key = "s"\n',
            "unset client variables",
        ),
        ("malformed.toml", '[[orgs]\nname = "o"\n', "is not valid TOML"),
        ("no-orgs.toml", 'name = "o"\n', "expected a list of [[orgs]] tables"),
        ("duplicate-org.toml", '[[orgs]]\nname = "o"\n[[orgs]]\nname = "o"\n', "share a name"),
        ("malformed.json", '{"orgs": [', "is not valid json"),
        (
            "bad-region.json",
            json.dumps(
                {
                    "orgs": [
                        {
                            "name": "o",
                            "projects": [{"api_key": "k", "secret_key": "s", "region": "asia"}],
                        }
                    ]
                }
            ),
            "region must be",
        ),
    ],
)
def test_configuration_errors(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_orgs(path)
    assert message.lower() in str(caught.value).lower()
    assert str(path) in str(caught.value)  # says which file
    assert "\n" not in str(caught.value)  # one line, fit for the CLI


def test_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match="cannot read") as caught:
        load_orgs(path)
    assert str(path) in str(caught.value)
    assert "No such file" in str(caught.value)


def test_duplicate_key_in_orgs_given_directly(start_emulator: StartEmulator) -> None:
    orgs = (
        Org("o1", (Project("p", "o1", "k", "s", Region.US),)),
        Org("o2", (Project("q", "o2", "k", "t", Region.EU),)),
    )
    with pytest.raises(ConfigError, match=r"used twice|same api_key"):
        start_emulator(orgs=orgs)
