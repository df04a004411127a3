"""What an accepted POST /usermap does (spec section 6), observed through GET /api/2/usermap."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from emulator.server import ServerThread
from emulator.settings import Limits
from emulator.tenancy import Org, Project, Region
from tests.conftest import StartEmulator

USERMAP = "/usermap"
READ = "/api/2/usermap"

US_KEY, US_SECRET = "semantics-us-key", "semantics-us-secret"
EU_KEY, EU_SECRET = "semantics-eu-key", "semantics-eu-secret"
ONE_ORG_TWO_REGIONS = (
    Org(
        name="semantics-org",
        projects=(
            Project(
                name="us-app",
                org="semantics-org",
                api_key=US_KEY,
                secret_key=US_SECRET,
                region=Region.US,
            ),
            Project(
                name="eu-app",
                org="semantics-org",
                api_key=EU_KEY,
                secret_key=EU_SECRET,
                region=Region.EU,
            ),
        ),
    ),
)

Op = dict[str, Any]


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[httpx.Client]:
    """One client for the module (each httpx.Client builds a TLS context, ~80 ms)."""
    with httpx.Client(base_url=server.base_url, timeout=10) as http:
        yield http


def m(user: str, global_user: str) -> Op:
    return {"user_id": user, "global_user_id": global_user}


def unmap(user: str) -> Op:
    return {"user_id": user, "unmap": True}


def send(
    client: httpx.Client, api_key: str, *ops: Op, headers: dict[str, str] | None = None
) -> httpx.Response:
    return client.post(
        USERMAP, data={"api_key": api_key, "mapping": json.dumps(list(ops))}, headers=headers
    )


def apply(client: httpx.Client, api_key: str, *ops: Op) -> None:
    response = send(client, api_key, *ops)
    assert response.status_code == 200, response.text
    assert response.json() == {"code": 200}


def refused_at(client: httpx.Client, api_key: str, index: int, *ops: Op) -> None:
    response = send(client, api_key, *ops)
    assert response.status_code == 400, response.text
    assert response.json() == {"code": 400, "error": "Invalid mapping", "index": index}
    assert response.headers.get("x-emulator-hint")


def read(
    client: httpx.Client,
    api_key: str,
    *user_ids: str,
    secret: str = "anything",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    response = client.get(
        READ, params={"user_ids": list(user_ids)}, auth=(api_key, secret), headers=headers
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    assert set(result) == set(user_ids)
    assert_mirrored(result)
    return result


def assert_mirrored(result: dict[str, Any]) -> None:
    """Between requested users, mapped_to and mapped_from name each other with the right ids."""
    ids = {user: entry["amplitude_id"] for user, entry in result.items() if "amplitude_id" in entry}
    for user, entry in result.items():
        assert len(entry["mapped_to"]) <= 1, f"{user} has more than one global"
        for edge in entry["mapped_to"]:
            if edge["user_id"] in result:
                back = result[edge["user_id"]]["mapped_from"]
                assert {"amplitude_id": ids[user], "user_id": user} in back
            assert edge["amplitude_id"] == ids.get(edge["user_id"], edge["amplitude_id"])
        for edge in entry["mapped_from"]:
            if edge["user_id"] in result:
                forth = result[edge["user_id"]]["mapped_to"]
                assert forth == [{"amplitude_id": ids[user], "user_id": user}]


def globals_of(client: httpx.Client, api_key: str, *users: str) -> list[str | None]:
    """Each user's direct global (None: unmapped)."""
    result = read(client, api_key, *users)
    return [
        result[user]["mapped_to"][0]["user_id"] if result[user]["mapped_to"] else None
        for user in users
    ]


def amplitude_ids(client: httpx.Client, api_key: str, *users: str) -> list[int | None]:
    result = read(client, api_key, *users)
    return [result[user].get("amplitude_id") for user in users]


def edge(user: str, amplitude_id: int) -> dict[str, Any]:
    return {"amplitude_id": amplitude_id, "user_id": user}


def sorted_edges(edges: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(edges, key=lambda item: str(item["user_id"]))


# --- map, remap, chains ----------------------------------------------------------------------


def test_map(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("user1", "user2"))
    assert read(client, api_key, "user1", "user2") == {
        "user1": {"amplitude_id": 1, "mapped_from": [], "mapped_to": [edge("user2", 2)]},
        "user2": {"amplitude_id": 2, "mapped_from": [edge("user1", 1)], "mapped_to": []},
    }


def test_remap_replaces_the_old_mapping(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("a", "g1"))
    apply(client, api_key, m("a", "g2"))
    assert read(client, api_key, "a", "g1", "g2") == {
        "a": {"amplitude_id": 1, "mapped_from": [], "mapped_to": [edge("g2", 3)]},
        "g1": {"amplitude_id": 2, "mapped_from": [], "mapped_to": []},
        "g2": {"amplitude_id": 3, "mapped_from": [edge("a", 1)], "mapped_to": []},
    }


def test_remap_to_the_same_global_changes_nothing(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("a", "g"))
    before = read(client, api_key, "a", "g")
    apply(client, api_key, m("a", "g"))
    assert read(client, api_key, "a", "g") == before


def test_chain_as_in_the_docs_example(client: httpx.Client, api_key: str) -> None:
    # user3 -> user1 -> user2: GET reports direct edges only.
    apply(client, api_key, m("user1", "user2"))
    apply(client, api_key, m("user3", "user1"))
    assert read(client, api_key, "user1", "user2", "user3") == {
        "user1": {
            "amplitude_id": 1,
            "mapped_from": [edge("user3", 3)],
            "mapped_to": [edge("user2", 2)],
        },
        "user2": {"amplitude_id": 2, "mapped_from": [edge("user1", 1)], "mapped_to": []},
        "user3": {"amplitude_id": 3, "mapped_from": [], "mapped_to": [edge("user1", 1)]},
    }


def test_chain_built_in_one_batch_either_order(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("user3", "user1"), m("user1", "user2"))
    assert globals_of(client, api_key, "user3", "user1", "user2") == ["user1", "user2", None]
    # Each side names only its direct neighbour.
    assert read(client, api_key, "user2")["user2"]["mapped_from"] == [edge("user1", 2)]


def test_many_users_into_one_global(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("a", "g"), m("b", "g"), m("c", "g"))
    result = read(client, api_key, "g", "a", "b", "c")
    assert sorted_edges(result["g"]["mapped_from"]) == [edge("a", 1), edge("b", 3), edge("c", 4)]
    assert all(result[user]["mapped_to"] == [edge("g", 2)] for user in "abc")


def test_a_global_may_itself_be_mapped_and_remapped(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("a", "g"), m("b", "g"))
    apply(client, api_key, m("g", "h"))
    apply(client, api_key, m("g", "k"))
    result = read(client, api_key, "g", "h", "k")
    assert result["g"]["mapped_to"] == [edge("k", 5)]
    assert sorted_edges(result["g"]["mapped_from"]) == [edge("a", 1), edge("b", 3)]
    assert result["h"]["mapped_from"] == []
    assert result["k"]["mapped_from"] == [edge("g", 2)]


def test_user_never_seen_has_no_amplitude_id(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("a", "g"))
    assert read(client, api_key, "nobody") == {"nobody": {"mapped_from": [], "mapped_to": []}}
    # Reading does not allocate one either.
    apply(client, api_key, m("later", "g"))
    assert amplitude_ids(client, api_key, "later", "nobody") == [3, None]


def test_ids_are_case_and_space_sensitive(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("User", "G"), m("user", "g"), m(" user", "g "))
    assert globals_of(client, api_key, "User", "user", " user", "USER") == ["G", "g", "g ", None]


# --- cycles ----------------------------------------------------------------------------------


def test_direct_cycle_is_refused(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("A", "B"))
    before = read(client, api_key, "A", "B")
    refused_at(client, api_key, 0, m("B", "A"))
    assert read(client, api_key, "A", "B") == before


def test_longer_cycle_is_refused(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("A", "B"))
    apply(client, api_key, m("B", "C"))
    before = read(client, api_key, "A", "B", "C")
    refused_at(client, api_key, 0, m("C", "A"))
    refused_at(client, api_key, 0, m("C", "B"))
    refused_at(client, api_key, 1, m("x", "y"), m("C", "A"))
    assert read(client, api_key, "A", "B", "C", "x") == {
        **before,
        "x": {"mapped_from": [], "mapped_to": []},
    }


def test_cycle_formed_inside_one_batch(client: httpx.Client, api_key: str) -> None:
    refused_at(client, api_key, 2, m("A", "B"), m("B", "C"), m("C", "A"))
    refused_at(client, api_key, 1, m("A", "B"), m("B", "A"), m("x", "y"))
    assert read(client, api_key, "A", "B", "C", "x") == {
        user: {"mapped_from": [], "mapped_to": []} for user in ("A", "B", "C", "x")
    }


def test_cycle_through_a_committed_and_a_batch_edge(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("A", "B"))
    refused_at(client, api_key, 1, m("B", "C"), m("C", "A"))
    assert globals_of(client, api_key, "A", "B", "C") == ["B", None, None]


def test_objects_before_count_when_checking_a_cycle(client: httpx.Client, api_key: str) -> None:
    # A -> B is committed; moving or unmapping A first makes B -> A legal in the same batch.
    apply(client, api_key, m("A", "B"))
    apply(client, api_key, m("A", "C"), m("B", "A"))
    assert globals_of(client, api_key, "A", "B", "C") == ["C", "A", None]
    apply(client, api_key, unmap("B"), unmap("A"), m("B", "C"), m("C", "A"))
    assert globals_of(client, api_key, "A", "B", "C") == [None, "C", "A"]


def test_remap_away_then_reverse_is_allowed(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("A", "B"))
    apply(client, api_key, m("A", "C"))
    apply(client, api_key, m("B", "A"))
    assert globals_of(client, api_key, "A", "B") == ["C", "A"]


def test_unmap_breaks_a_would_be_cycle(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("A", "B"), m("B", "C"))
    apply(client, api_key, unmap("B"))
    apply(client, api_key, m("C", "A"))
    assert globals_of(client, api_key, "A", "B", "C") == ["B", None, "A"]


# --- self-maps and unmaps --------------------------------------------------------------------


def test_self_map_is_a_no_op(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("a", "a"))
    assert read(client, api_key, "a") == {
        "a": {"amplitude_id": 1, "mapped_from": [], "mapped_to": []}
    }


def test_self_map_keeps_an_existing_mapping(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("a", "g"))
    before = read(client, api_key, "a", "g")
    apply(client, api_key, m("a", "a"))
    assert read(client, api_key, "a", "g") == before
    assert before["a"]["mapped_to"] == [edge("g", 2)]


def test_self_map_of_a_global_keeps_its_mapped_from(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("a", "g"))
    apply(client, api_key, m("g", "g"))
    assert read(client, api_key, "g")["g"]["mapped_from"] == [edge("a", 1)]


def test_unmap_of_an_unmapped_user_is_a_no_op(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, unmap("a"))
    assert read(client, api_key, "a") == {
        "a": {"amplitude_id": 1, "mapped_from": [], "mapped_to": []}
    }
    apply(client, api_key, unmap("a"), unmap("a"))
    assert read(client, api_key, "a") == {
        "a": {"amplitude_id": 1, "mapped_from": [], "mapped_to": []}
    }


def test_unmap_removes_the_mapping(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("a", "g"), m("b", "g"))
    apply(client, api_key, unmap("a"))
    assert read(client, api_key, "a", "g", "b") == {
        "a": {"amplitude_id": 1, "mapped_from": [], "mapped_to": []},
        "g": {"amplitude_id": 2, "mapped_from": [edge("b", 3)], "mapped_to": []},
        "b": {"amplitude_id": 3, "mapped_from": [], "mapped_to": [edge("g", 2)]},
    }


def test_unmap_of_a_global_keeps_users_mapped_into_it(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("b", "a"), m("a", "g"))
    apply(client, api_key, unmap("a"))
    assert globals_of(client, api_key, "b", "a") == ["a", None]


def test_unmap_with_null_global_and_extra_keys(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("a", "g"))
    apply(client, api_key, {"user_id": "a", "unmap": True, "global_user_id": None, "event_id": 3})
    assert globals_of(client, api_key, "a") == [None]


def test_map_with_unmap_false_or_null_is_a_map(client: httpx.Client, api_key: str) -> None:
    apply(
        client,
        api_key,
        {"user_id": "a", "global_user_id": "g", "unmap": False},
        {"user_id": "b", "global_user_id": "g", "unmap": None},
    )
    assert globals_of(client, api_key, "a", "b") == ["g", "g"]


# --- order inside one batch ------------------------------------------------------------------


def test_later_object_for_the_same_user_wins(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("a", "g1"), m("b", "x"), m("a", "g2"), m("a", "g3"))
    result = read(client, api_key, "a", "g1", "g2", "g3")
    assert result["a"]["mapped_to"] == [edge("g3", 6)]
    assert result["g1"]["mapped_from"] == result["g2"]["mapped_from"] == []
    assert result["g3"]["mapped_from"] == [edge("a", 1)]


def test_map_then_unmap_in_one_batch(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("a", "g"), unmap("a"))
    assert read(client, api_key, "a", "g") == {
        "a": {"amplitude_id": 1, "mapped_from": [], "mapped_to": []},
        "g": {"amplitude_id": 2, "mapped_from": [], "mapped_to": []},
    }


def test_unmap_then_map_in_one_batch(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("a", "old"))
    apply(client, api_key, unmap("a"), m("a", "new"))
    assert globals_of(client, api_key, "a") == ["new"]


def test_map_then_self_map_in_one_batch_keeps_the_map(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("a", "g"), m("a", "a"))
    assert globals_of(client, api_key, "a") == ["g"]


def test_unmap_of_an_existing_mapping_then_remap_back(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("a", "g"))
    before = read(client, api_key, "a", "g")
    apply(client, api_key, unmap("a"), m("a", "g"))
    assert read(client, api_key, "a", "g") == before


# --- org-wide mappings -----------------------------------------------------------------------


@pytest.fixture
def one_org(start_emulator: StartEmulator) -> Iterator[httpx.Client]:
    running = start_emulator(orgs=ONE_ORG_TWO_REGIONS)
    with httpx.Client(base_url=running.base_url, timeout=10) as http:
        yield http


def test_mapping_made_with_one_project_is_read_with_the_other(one_org: httpx.Client) -> None:
    response = send(one_org, US_KEY, m("web-user", "person"), headers={"Host": "api.amplitude.com"})
    assert response.status_code == 200, response.text
    eu_view = read(
        one_org,
        EU_KEY,
        "web-user",
        "person",
        secret=EU_SECRET,
        headers={"Host": "analytics.eu.amplitude.com"},
    )
    assert eu_view == {
        "web-user": {"amplitude_id": 1, "mapped_from": [], "mapped_to": [edge("person", 2)]},
        "person": {"amplitude_id": 2, "mapped_from": [edge("web-user", 1)], "mapped_to": []},
    }


def test_both_projects_write_one_graph_and_one_id_counter(one_org: httpx.Client) -> None:
    response = send(
        one_org, EU_KEY, m("eu-user", "person"), headers={"Host": "api.eu.amplitude.com"}
    )
    assert response.status_code == 200, response.text
    response = send(one_org, US_KEY, m("us-user", "person"), headers={"Host": "api2.amplitude.com"})
    assert response.status_code == 200, response.text
    # The EU project's cycle check sees the US project's edge.
    response = send(
        one_org, EU_KEY, m("person", "us-user"), headers={"Host": "api.eu.amplitude.com"}
    )
    assert response.status_code == 400
    assert response.json() == {"code": 400, "error": "Invalid mapping", "index": 0}
    us_view = read(
        one_org,
        US_KEY,
        "person",
        "eu-user",
        "us-user",
        secret=US_SECRET,
        headers={"Host": "amplitude.com"},
    )
    assert sorted_edges(us_view["person"]["mapped_from"]) == [
        edge("eu-user", 1),
        edge("us-user", 3),
    ]
    assert us_view["person"]["amplitude_id"] == 2
    # The US project unmaps what the EU project mapped.
    response = send(one_org, US_KEY, unmap("eu-user"))
    assert response.status_code == 200, response.text
    eu_view = read(one_org, EU_KEY, "eu-user", secret=EU_SECRET)
    assert eu_view["eu-user"] == {"amplitude_id": 1, "mapped_from": [], "mapped_to": []}


def test_permissive_keys_are_separate_orgs(client: httpx.Client) -> None:
    first, second = f"key-{uuid.uuid4().hex}", f"key-{uuid.uuid4().hex}"
    apply(client, first, m("a", "g"))
    apply(client, second, m("b", "g"))
    assert read(client, first, "a", "b", "g") == {
        "a": {"amplitude_id": 1, "mapped_from": [], "mapped_to": [edge("g", 2)]},
        "b": {"mapped_from": [], "mapped_to": []},
        "g": {"amplitude_id": 2, "mapped_from": [edge("a", 1)], "mapped_to": []},
    }
    # Each org counts its own amplitude ids from the base.
    assert amplitude_ids(client, second, "b", "g", "a") == [1, 2, None]


# --- amplitude_id allocation -----------------------------------------------------------------


def test_ids_follow_batch_order_user_before_global(client: httpx.Client, api_key: str) -> None:
    apply(
        client,
        api_key,
        m("b", "a"),  # b=1, a=2
        unmap("c"),  # c=3: unmap objects allocate
        m("d", "d"),  # d=4: self-maps allocate (once)
        m("a", "e"),  # a known; e=5
        m("f", "b"),  # f=6; b known
    )
    assert amplitude_ids(client, api_key, "a", "b", "c", "d", "e", "f") == [2, 1, 3, 4, 5, 6]


def test_known_ids_keep_their_amplitude_id(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("x", "y"))
    apply(client, api_key, m("y", "z"), m("w", "x"))
    assert amplitude_ids(client, api_key, "x", "y", "z", "w") == [1, 2, 3, 4]


def test_refused_requests_allocate_nothing(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("A", "B"))  # A=1, B=2
    refused_at(
        client, api_key, 2, m("n1", "n2"), m("n3", "n4"), {"user_id": "n5", "global_user_id": 5}
    )
    refused_at(client, api_key, 1, m("n6", "n7"), m("B", "A"))  # cycle
    too_many = [m(f"t{i}", "n8") for i in range(2001)]
    assert send(client, api_key, *too_many).status_code == 413
    assert client.post(USERMAP, data={"api_key": api_key, "mapping": "[{"}).status_code == 400
    apply(client, api_key, m("n9", "A"))
    named = ("n9", "n1", "n2", "n5", "n6", "n7", "t0", "n8")
    assert amplitude_ids(client, api_key, *named) == [3] + [None] * 7


def test_rate_limited_requests_allocate_nothing(start_emulator: StartEmulator) -> None:
    running = start_emulator(limits=Limits(rate_limit=1))
    clock = running.app.state.backend.clock
    clock.freeze()
    with httpx.Client(base_url=running.base_url, timeout=10) as http:
        apply(http, "k", m("a", "b"))  # a=1, b=2; the window is now full
        assert send(http, "k", m("c", "d")).status_code == 429
        assert amplitude_ids(http, "k", "c", "d") == [None, None]
        clock.advance(30)  # the first request ages out of the window
        apply(http, "k", m("e", "c"))
        assert amplitude_ids(http, "k", "a", "b", "e", "c", "d") == [1, 2, 3, 4, None]


def test_ids_are_never_reused_after_unmap(client: httpx.Client, api_key: str) -> None:
    apply(client, api_key, m("a", "g"))  # a=1, g=2
    apply(client, api_key, unmap("a"))
    apply(client, api_key, m("h", "i"))
    assert amplitude_ids(client, api_key, "a", "g", "h", "i") == [1, 2, 3, 4]
    apply(client, api_key, m("a", "h"))
    result = read(client, api_key, "a", "h")
    assert result["a"] == {"amplitude_id": 1, "mapped_from": [], "mapped_to": [edge("h", 3)]}


def test_configurable_base(start_emulator: StartEmulator) -> None:
    running = start_emulator(amplitude_id_base=1000)
    with httpx.Client(base_url=running.base_url, timeout=10) as http:
        apply(http, "first", m("a", "g"), unmap("u"))
        apply(http, "second", m("x", "y"))
        assert read(http, "first", "a", "g", "u") == {
            "a": {"amplitude_id": 1000, "mapped_from": [], "mapped_to": [edge("g", 1001)]},
            "g": {"amplitude_id": 1001, "mapped_from": [edge("a", 1000)], "mapped_to": []},
            "u": {"amplitude_id": 1002, "mapped_from": [], "mapped_to": []},
        }
        assert amplitude_ids(http, "second", "x", "y") == [1000, 1001]


def test_base_zero_reports_amplitude_id_zero(start_emulator: StartEmulator) -> None:
    running = start_emulator(amplitude_id_base=0)
    with httpx.Client(base_url=running.base_url, timeout=10) as http:
        apply(http, "k", m("a", "g"))
        assert read(http, "k", "a", "g") == {
            "a": {"amplitude_id": 0, "mapped_from": [], "mapped_to": [edge("g", 1)]},
            "g": {"amplitude_id": 1, "mapped_from": [edge("a", 0)], "mapped_to": []},
        }
