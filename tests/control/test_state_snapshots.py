"""GET/PUT /_emulator/state, --seed, and named snapshots."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.server import ServerThread
from emulator.tenancy import Org, Project, Region
from tests.conftest import StartEmulator
from tests.control import (
    CONTROL,
    READ,
    client_for,
    export_state,
    journal,
    map_ok,
    map_users,
    ok_json,
    read_users,
    refused,
    reset,
)

ACME = Org("acme", (Project("web", "acme", "acme-key", "acme-secret", Region.US),))

# Two orgs of permissive keys: a chain, a fan-in, an unmapped user and an unmap.
BUILD: list[tuple[str, dict[str, str | None]]] = [
    ("org-a", {"u1": "g1", "u2": "g1", "g1": "top"}),
    ("org-a", {"u2": None, "lonely": "lonely"}),
    ("org-b", {"x": "y"}),
]
USERS = ["u1", "u2", "g1", "top", "lonely", "nobody"]

# A configured state document written by hand, as a seed file would hold it.
SEED: dict[str, Any] = {
    "version": 1,
    "permissive": False,
    "orgs": [
        {
            "name": "seeded",
            "projects": [
                {"name": "web", "api_key": "seed-key", "secret_key": "seed-secret", "region": "us"}
            ],
            "amplitude_ids": {"alice": 10, "bob": 20},
            "mappings": {"alice": "bob", "carol": "bob"},
        }
    ],
}


def build(http: httpx.Client) -> None:
    for api_key, pairs in BUILD:
        map_ok(http, api_key, pairs)


def reads(http: httpx.Client) -> dict[str, dict[str, Any]]:
    return {
        "org-a": read_users(http, "org-a", USERS),
        "org-b": read_users(http, "org-b", ["x", "y"]),
    }


def wait_until_loaded(http: httpx.Client, timeout: float = 10) -> httpx.Response:
    """Poll /ready until the seed has loaded or failed."""
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(f"{CONTROL}/ready")
        if response.status_code == 200 or response.json()["status"] != "loading":
            return response
        assert time.monotonic() < deadline, "the seed did not load in time"
        time.sleep(0.01)


# --- export and import -------------------------------------------------------------------------


def test_export_lists_orgs_projects_mappings_and_amplitude_ids(http: httpx.Client) -> None:
    build(http)
    assert export_state(http) == {
        "version": 1,
        "permissive": True,
        "orgs": [
            {
                "name": "org-a",
                "projects": [],
                "amplitude_ids": {"u1": 1, "g1": 2, "u2": 3, "top": 4, "lonely": 5},
                "mappings": {"g1": "top", "u1": "g1"},
            },
            {
                "name": "org-b",
                "projects": [],
                "amplitude_ids": {"x": 1, "y": 2},
                "mappings": {"x": "y"},
            },
        ],
    }


def test_state_round_trip(http: httpx.Client) -> None:
    build(http)
    exported = export_state(http)
    before = reads(http)

    reset(http)
    assert export_state(http)["orgs"] == []
    summary = ok_json(http.put(f"{CONTROL}/state", json=exported))

    assert export_state(http) == exported
    assert reads(http) == before
    assert summary["orgs"] == 2
    assert summary["users"] == 7
    assert summary["mappings"] == 3
    # New ids continue after the loaded ones.
    map_ok(http, "org-b", {"z": "y"})
    assert read_users(http, "org-b", ["z"])["z"]["amplitude_id"] == 3


def test_state_round_trip_with_configured_projects(start_emulator: StartEmulator) -> None:
    server = start_emulator(orgs=(ACME,))
    with client_for(server) as http:
        map_ok(http, "acme-key", {"a": "b", "b": "c"})
        exported = export_state(http)
        assert exported["permissive"] is False
        assert exported["orgs"][0]["projects"] == [
            {"name": "web", "api_key": "acme-key", "secret_key": "acme-secret", "region": "us"}
        ]
        before = read_users(http, "acme-key", ["a", "b", "c"], "acme-secret")

        reset(http)
        ok_json(http.put(f"{CONTROL}/state", json=exported))

        assert export_state(http) == exported
        assert read_users(http, "acme-key", ["a", "b", "c"], "acme-secret") == before


def test_put_minimal_document_allocates_amplitude_ids(http: httpx.Client, api_key: str) -> None:
    summary = ok_json(
        http.put(f"{CONTROL}/state", json={"orgs": [{"name": api_key, "mappings": {"a": "b"}}]})
    )

    assert summary["orgs"] == 1
    assert summary["users"] == 2
    assert summary["mappings"] == 1
    assert summary["permissive"] is True  # no "permissive": the tenancy stays
    assert read_users(http, api_key, ["a", "b"]) == {
        "a": {
            "amplitude_id": 1,
            "mapped_from": [],
            "mapped_to": [{"amplitude_id": 2, "user_id": "b"}],
        },
        "b": {
            "amplitude_id": 2,
            "mapped_from": [{"amplitude_id": 1, "user_id": "a"}],
            "mapped_to": [],
        },
    }


def test_put_allocates_missing_ids_after_the_given_ones(http: httpx.Client, api_key: str) -> None:
    document = {
        "orgs": [{"name": api_key, "amplitude_ids": {"x": 10}, "mappings": {"a": "x", "b": "c"}}]
    }
    ok_json(http.put(f"{CONTROL}/state", json=document))

    assert export_state(http)["orgs"][0]["amplitude_ids"] == {"x": 10, "a": 11, "b": 12, "c": 13}
    map_ok(http, api_key, {"new": "x"})
    assert read_users(http, api_key, ["new"])["new"]["amplitude_id"] == 14


def test_put_replaces_everything_and_clears_the_journal(http: httpx.Client) -> None:
    build(http)
    ok_json(
        http.put(f"{CONTROL}/state", json={"orgs": [{"name": "org-c", "mappings": {"p": "q"}}]})
    )

    assert [org["name"] for org in export_state(http)["orgs"]] == ["org-c"]
    assert journal(http) == []
    assert read_users(http, "org-a", ["u1"]) == {"u1": {"mapped_from": [], "mapped_to": []}}


INVALID_DOCUMENTS: list[Any] = [
    [],
    "state",
    {"orgs": {}},
    {"orgs": [1]},
    {"orgs": [{"mappings": {"a": "b"}}]},
    {"orgs": [{"name": 5}]},
    {"orgs": [{"name": "o", "mappings": {"a": "a"}}]},
    {"orgs": [{"name": "o", "mappings": {"a": "b", "b": "a"}}]},
    {"orgs": [{"name": "o", "mappings": {"a": "b", "b": "c", "c": "a"}}]},
    {"orgs": [{"name": "o", "mappings": {"a": 1}}]},
    {"orgs": [{"name": "o", "mappings": {"a": ""}}]},
    {"orgs": [{"name": "o", "mappings": {"": "b"}}]},
    {"orgs": [{"name": "o", "mappings": ["a", "b"]}]},
    {"orgs": [{"name": "o", "amplitude_ids": {"a": "1"}}]},
    {"orgs": [{"name": "o", "amplitude_ids": {"a": True}}]},
    {"orgs": [{"name": "o", "amplitude_ids": {"a": 1.5}}]},
    {"orgs": [{"name": "o", "amplitude_ids": [1, 2]}]},
    {"orgs": [{"name": "o", "amplitude_ids": {"a": 1, "b": 1}}]},
    {"orgs": [{"name": "o", "amplitude_ids": {"a": 1}, "mappings": {"a": "b"}}, {"name": "o"}]},
    {"permissive": "yes", "orgs": []},
    {"permissive": False, "orgs": [{"name": "o", "projects": [{"api_key": "k"}]}]},
    {
        "permissive": False,
        "orgs": [
            {"name": "o", "projects": [{"api_key": "k", "secret_key": "s"}]},
            {"name": "p", "projects": [{"api_key": "k", "secret_key": "t"}]},
        ],
    },
    {
        "permissive": False,
        "orgs": [
            {"name": "o", "projects": [{"api_key": "k", "secret_key": "s", "region": "mars"}]}
        ],
    },
]


@pytest.mark.parametrize("document", INVALID_DOCUMENTS)
def test_put_invalid_document_is_refused_and_changes_nothing(
    http: httpx.Client, document: Any
) -> None:
    build(http)
    before = export_state(http)
    entries = journal(http)

    refused(http.put(f"{CONTROL}/state", json=document))

    assert export_state(http) == before
    assert journal(http) == entries
    assert map_users(http, "any-key", {"a": "b"}).status_code == 200  # still permissive


def test_put_body_that_is_not_json_is_refused(http: httpx.Client) -> None:
    build(http)
    before = export_state(http)
    refused(http.put(f"{CONTROL}/state", content=b'{"orgs": ['))
    assert export_state(http) == before


def test_put_with_permissive_false_replaces_the_tenancy(start_emulator: StartEmulator) -> None:
    server = start_emulator()
    with client_for(server) as http:
        map_ok(http, "anyone", {"a": "b"})
        document = {
            "permissive": False,
            "orgs": [
                {
                    "name": "acme",
                    "projects": [
                        {"name": "web", "api_key": "k1", "secret_key": "s1", "region": "us"}
                    ],
                    "mappings": {"a": "b"},
                }
            ],
        }
        assert ok_json(http.put(f"{CONTROL}/state", json=document))["permissive"] is False

        map_ok(http, "k1", {"c": "d"})
        refusal = map_users(http, "anyone", {"c": "d"})
        assert refusal.status_code == 400
        assert refusal.json() == {"code": 400, "error": "Invalid API key: anyone"}
        assert read_users(http, "k1", ["a"], "s1")["a"]["mapped_to"] == [
            {"amplitude_id": 2, "user_id": "b"}
        ]
        assert http.get(READ, params={"user_ids": "a"}, auth=("k1", "wrong")).status_code == 401
        # A reset keeps the projects the state brought.
        reset(http)
        map_ok(http, "k1", {"a": "b"})
        assert map_users(http, "anyone", {"a": "b"}).status_code == 400

        ok_json(http.put(f"{CONTROL}/state", json={"permissive": True, "orgs": []}))
        map_ok(http, "anyone", {"a": "b"})


# --- --seed ------------------------------------------------------------------------------------


def test_seed_file_is_loaded_at_start(start_emulator: StartEmulator, tmp_path: Path) -> None:
    seed = tmp_path / "state.json"
    seed.write_text(json.dumps(SEED), encoding="utf-8")
    server = start_emulator(seed=seed)
    with client_for(server) as http:
        assert ok_json(http.get(f"{CONTROL}/health")) == {"status": "ok"}
        assert wait_until_loaded(http).json() == {"status": "ready"}

        assert read_users(http, "seed-key", ["alice", "bob", "carol"], "seed-secret") == {
            "alice": {
                "amplitude_id": 10,
                "mapped_from": [],
                "mapped_to": [{"amplitude_id": 20, "user_id": "bob"}],
            },
            "bob": {
                "amplitude_id": 20,
                "mapped_from": [
                    {"amplitude_id": 10, "user_id": "alice"},
                    {"amplitude_id": 21, "user_id": "carol"},
                ],
                "mapped_to": [],
            },
            "carol": {
                "amplitude_id": 21,
                "mapped_from": [],
                "mapped_to": [{"amplitude_id": 20, "user_id": "bob"}],
            },
        }
        assert map_users(http, "other-key", {"a": "b"}).status_code == 400
        exported = export_state(http)
        assert exported["permissive"] is False
        assert exported["orgs"][0]["amplitude_ids"] == {"alice": 10, "bob": 20, "carol": 21}


@pytest.mark.skipif(sys.platform == "win32", reason="needs a named pipe (os.mkfifo)")
def test_not_ready_while_the_seed_loads(start_emulator: StartEmulator, tmp_path: Path) -> None:
    # A named pipe holds the loader up until the test writes the document into it.
    seed = tmp_path / "state.fifo"
    os.mkfifo(seed)
    server = start_emulator(seed=seed)
    with client_for(server) as http:
        assert ok_json(http.get(f"{CONTROL}/health")) == {"status": "ok"}
        assert ok_json(http.get(f"{CONTROL}/ready"), 503) == {"status": "loading"}
        early = map_users(http, "seed-key", {"a": "b"})
        assert ok_json(early, 503) == {"code": 503, "error": "Service unavailable"}
        assert early.headers["retry-after"] == "1"
        assert "loading" in early.headers["x-emulator-hint"]
        assert journal(http) == []  # answered before the journal, which the seed would clear

        seed.write_text(json.dumps(SEED), encoding="utf-8")

        assert wait_until_loaded(http).json() == {"status": "ready"}
        assert read_users(http, "seed-key", ["alice"], "seed-secret")["alice"]["amplitude_id"] == 10


@pytest.mark.parametrize(
    ("content", "error_part"),
    [
        (json.dumps({"orgs": [{"name": "o", "mappings": {"a": "b", "b": "a"}}]}), "cycle"),
        ("{not json", "cannot read seed"),
        (None, "cannot read seed"),
    ],
    ids=["cycle", "not-json", "missing-file"],
)
def test_invalid_seed_leaves_the_emulator_unready(
    start_emulator: StartEmulator, tmp_path: Path, content: str | None, error_part: str
) -> None:
    seed = tmp_path / "state.json"
    if content is not None:
        seed.write_text(content, encoding="utf-8")
    server: ServerThread = start_emulator(seed=seed)
    with client_for(server) as http:
        ready = wait_until_loaded(http)
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "failed"
        assert error_part in body["error"]
        assert ok_json(http.get(f"{CONTROL}/ready"), 503) == body  # and it stays so

        assert ok_json(http.get(f"{CONTROL}/health")) == {"status": "ok"}
        for response in (
            map_users(http, "k", {"a": "b"}),
            http.get(READ, params={"user_ids": "a"}, auth=("k", "s")),
        ):
            assert ok_json(response, 503) == {"code": 503, "error": "Service unavailable"}
            assert response.headers["retry-after"] == "1"
            assert "Not ready" in response.headers["x-emulator-hint"]


# --- snapshots ---------------------------------------------------------------------------------


def test_snapshot_and_restore(http: httpx.Client) -> None:
    build(http)
    exported = export_state(http)
    before = reads(http)

    assert ok_json(http.post(f"{CONTROL}/snapshots/built"), 201) == {"snapshot": "built"}
    map_ok(http, "org-a", {"u1": None, "new": "g1"})
    map_ok(http, "org-c", {"p": "q"})
    assert export_state(http) != exported

    assert ok_json(http.post(f"{CONTROL}/snapshots/built/restore")) == {"restored": "built"}

    assert export_state(http) == exported
    assert reads(http) == before
    # A snapshot can be restored again, after a reset too.
    reset(http)
    ok_json(http.post(f"{CONTROL}/snapshots/built/restore"))
    assert export_state(http) == exported


def test_snapshot_taken_again_replaces_the_old_one(http: httpx.Client, api_key: str) -> None:
    map_ok(http, api_key, {"a": "b"})
    ok_json(http.post(f"{CONTROL}/snapshots/again"), 201)
    map_ok(http, api_key, {"c": "d"})
    ok_json(http.post(f"{CONTROL}/snapshots/again"), 201)
    expected = export_state(http)
    reset(http)

    ok_json(http.post(f"{CONTROL}/snapshots/again/restore"))
    assert export_state(http) == expected


def test_snapshot_list(start_emulator: StartEmulator) -> None:
    server = start_emulator()
    with client_for(server) as http:
        assert ok_json(http.get(f"{CONTROL}/snapshots")) == {"snapshots": []}
        for name in ("zeta", "alpha", "with space"):
            ok_json(http.post(f"{CONTROL}/snapshots/{name}"), 201)
        assert ok_json(http.get(f"{CONTROL}/snapshots")) == {
            "snapshots": ["alpha", "with space", "zeta"]
        }


def test_restore_unknown_snapshot_is_404_and_changes_nothing(http: httpx.Client) -> None:
    build(http)
    before = export_state(http)
    assert "never-taken" in refused(http.post(f"{CONTROL}/snapshots/never-taken/restore"), 404)
    assert export_state(http) == before


def test_restore_brings_back_the_tenancy(start_emulator: StartEmulator) -> None:
    server = start_emulator()
    with client_for(server) as http:
        map_ok(http, "anyone", {"a": "b"})
        ok_json(http.post(f"{CONTROL}/snapshots/open"), 201)
        closed = {
            "permissive": False,
            "orgs": [{"name": "o", "projects": [{"api_key": "k", "secret_key": "s"}]}],
        }
        ok_json(http.put(f"{CONTROL}/state", json=closed))
        assert map_users(http, "anyone", {"c": "d"}).status_code == 400

        ok_json(http.post(f"{CONTROL}/snapshots/open/restore"))

        map_ok(http, "anyone", {"c": "d"})
        assert read_users(http, "anyone", ["a"])["a"]["amplitude_id"] == 1
