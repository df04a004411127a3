"""GET /_emulator/health and /ready; POST /_emulator/reset (all, or one org with ?api_key=)."""

from __future__ import annotations

import statistics
import time

import httpx
import pytest

from emulator.tenancy import Org, Project, Region
from tests.conftest import StartEmulator
from tests.control import (
    CONTROL,
    DEFAULT_CONFIG,
    add_fault,
    client_for,
    export_state,
    faults,
    journal,
    map_ok,
    map_users,
    ok_json,
    patch_config,
    read_users,
    refused,
    reset,
    set_clock,
)

ACME = Org(
    "acme",
    (
        Project("web", "acme", "acme-web", "acme-web-secret", Region.US),
        Project("app", "acme", "acme-app", "acme-app-secret", Region.EU),
    ),
)
GLOBEX = Org("globex", (Project("main", "globex", "globex-key", "globex-secret", Region.US),))


def test_health_answers_ok(http: httpx.Client) -> None:
    assert ok_json(http.get(f"{CONTROL}/health")) == {"status": "ok"}


def test_ready_once_loaded(http: httpx.Client) -> None:
    assert ok_json(http.get(f"{CONTROL}/ready")) == {"status": "ready"}


def test_reset_clears_mappings_and_restarts_amplitude_ids(http: httpx.Client, api_key: str) -> None:
    map_ok(http, api_key, {"u1": "g1", "u2": "g1"})
    assert read_users(http, api_key, ["u1"])["u1"]["amplitude_id"] == 1

    assert reset(http) == {"reset": "all"}

    assert export_state(http)["orgs"] == []
    assert read_users(http, api_key, ["u1", "g1"]) == {
        "u1": {"mapped_from": [], "mapped_to": []},
        "g1": {"mapped_from": [], "mapped_to": []},
    }
    # The same kind of request after a reset gets the same amplitude ids as at the start.
    map_ok(http, api_key, {"x": "y"})
    assert read_users(http, api_key, ["x", "y"]) == {
        "x": {
            "amplitude_id": 1,
            "mapped_from": [],
            "mapped_to": [{"amplitude_id": 2, "user_id": "y"}],
        },
        "y": {
            "amplitude_id": 2,
            "mapped_from": [{"amplitude_id": 1, "user_id": "x"}],
            "mapped_to": [],
        },
    }


def test_reset_keeps_configured_orgs_and_projects(start_emulator: StartEmulator) -> None:
    server = start_emulator(orgs=(ACME, GLOBEX), amplitude_id_base=100)
    with client_for(server) as http:
        map_ok(http, "acme-web", {"a": "b"})
        map_ok(http, "globex-key", {"c": "d"})
        before = export_state(http)

        assert reset(http) == {"reset": "all"}

        after = export_state(http)
        assert after["permissive"] is False
        assert after["orgs"] == [
            {**org, "amplitude_ids": {}, "mappings": {}} for org in before["orgs"]
        ]
        assert [project["api_key"] for project in after["orgs"][0]["projects"]] == [
            "acme-web",
            "acme-app",
        ]
        # Configured keys still work, unknown ones are still refused, ids start at the base.
        map_ok(http, "acme-app", {"e": "f"})
        assert read_users(http, "acme-web", ["e"], "acme-web-secret")["e"]["amplitude_id"] == 100
        assert map_users(http, "stranger", {"a": "b"}).status_code == 400


def test_reset_clears_rate_windows(http: httpx.Client, api_key: str) -> None:
    set_clock(http, freeze=True)
    patch_config(http, rate_limit=1)
    map_ok(http, api_key, {"a": "b"})
    assert map_users(http, api_key, {"c": "d"}).status_code == 429

    reset(http)

    map_ok(http, api_key, {"c": "d"})
    # Limits are runtime configuration, not state: a reset keeps them.
    assert ok_json(http.get(f"{CONTROL}/config")) == {**DEFAULT_CONFIG, "rate_limit": 1}


def test_reset_clears_journal_and_fault_rules(http: httpx.Client, api_key: str) -> None:
    map_ok(http, api_key, {"a": "b"})
    add_fault(http, {"match": {"api_key": "someone-else"}, "effect": {"status": 503}})
    assert len(journal(http)) == 1
    assert len(faults(http)) == 1

    reset(http)

    assert journal(http) == []
    assert faults(http) == []


def test_reset_returns_the_clock_to_real_time(http: httpx.Client) -> None:
    set_clock(http, freeze=True, set=1_000_000)

    reset(http)

    clock = ok_json(http.get(f"{CONTROL}/clock"))
    assert clock["frozen"] is False
    assert abs(clock["now"] - time.time()) < 60


def test_reset_keeps_snapshots(http: httpx.Client, api_key: str) -> None:
    map_ok(http, api_key, {"a": "b"})
    ok_json(http.post(f"{CONTROL}/snapshots/kept-over-reset"), 201)

    reset(http)

    assert "kept-over-reset" in ok_json(http.get(f"{CONTROL}/snapshots"))["snapshots"]
    ok_json(http.post(f"{CONTROL}/snapshots/kept-over-reset/restore"))
    assert read_users(http, api_key, ["a"])["a"]["mapped_to"] == [
        {"amplitude_id": 2, "user_id": "b"}
    ]


def test_reset_one_org_in_permissive_mode(http: httpx.Client) -> None:
    set_clock(http, freeze=True, set=1_000_000)
    patch_config(http, rate_limit=1)
    map_ok(http, "org-one", {"a": "b"})
    map_ok(http, "org-two", {"a": "b"})
    rule = add_fault(http, {"match": {"api_key": "org-three"}, "effect": {"status": 503}})

    assert reset(http, "org-one") == {"reset": "org-one"}

    # Its mappings, ids, rate window and journal entries are gone; the other org keeps its own.
    assert {entry["api_key"] for entry in journal(http)} == {"org-two"}
    assert read_users(http, "org-one", ["a"]) == {"a": {"mapped_from": [], "mapped_to": []}}
    assert read_users(http, "org-two", ["a"])["a"]["mapped_to"] == [
        {"amplitude_id": 2, "user_id": "b"}
    ]
    map_ok(http, "org-one", {"c": "d"})
    assert read_users(http, "org-one", ["c"])["c"]["amplitude_id"] == 1
    assert map_users(http, "org-two", {"c": "d"}).status_code == 429
    # Fault rules and the clock are not an org's: they stay.
    assert [found["id"] for found in faults(http)] == [rule["id"]]
    assert ok_json(http.get(f"{CONTROL}/clock")) == {"now": 1_000_000.0, "frozen": True}


def test_reset_one_org_by_any_of_its_projects_keys(start_emulator: StartEmulator) -> None:
    server = start_emulator(orgs=(ACME, GLOBEX))
    with client_for(server) as http:
        map_ok(http, "acme-web", {"a": "b"})
        map_ok(http, "globex-key", {"a": "b"})

        # The EU project's key names the org too; the control API is region-neutral.
        assert reset(http, "acme-app") == {"reset": "acme"}

        orgs = {org["name"]: org for org in export_state(http)["orgs"]}
        assert orgs["acme"]["amplitude_ids"] == {}
        assert orgs["acme"]["mappings"] == {}
        assert orgs["globex"]["mappings"] == {"a": "b"}
        assert [entry["org"] for entry in journal(http)] == ["globex"]


@pytest.mark.parametrize("key", ["no-such-key", "undefined"])
def test_reset_with_an_unknown_key_is_refused_and_resets_nothing(
    start_emulator: StartEmulator, key: str
) -> None:
    server = start_emulator(orgs=(ACME,))
    with client_for(server) as http:
        map_ok(http, "acme-web", {"a": "b"})
        before = export_state(http)

        assert key in refused(http.post(f"{CONTROL}/reset", params={"api_key": key}))

        assert export_state(http) == before
        assert len(journal(http)) == 1


def test_reset_with_a_never_valid_key_is_refused_in_permissive_mode(http: httpx.Client) -> None:
    map_ok(http, "kept", {"a": "b"})
    refused(http.post(f"{CONTROL}/reset", params={"api_key": "null"}))
    assert export_state(http)["orgs"][0]["mappings"] == {"a": "b"}


def test_reset_latency(http: httpx.Client, api_key: str) -> None:
    """Median time of a reset with a small state, over one keep-alive connection (printed)."""
    timings: list[float] = []
    for round_number in range(50):
        map_ok(http, api_key, {f"u{round_number}-{i}": f"g{round_number}" for i in range(10)})
        started = time.perf_counter()
        response = http.post(f"{CONTROL}/reset")
        timings.append(time.perf_counter() - started)
        assert response.status_code == 200
        assert export_state(http)["orgs"] == []
    median_ms = statistics.median(timings) * 1000
    print(f"\nPOST /_emulator/reset: median {median_ms:.2f} ms over {len(timings)} resets")
