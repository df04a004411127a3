"""The store's two paths agree: SQLite through its driver (the hot path) and through SQLAlchemy
Core (what every other database uses). Same batches in, same graph, reads, counts and refusals
out; and replacing the whole state gives the same graph on both."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from emulator.domain.mapping import MappingCycle, plan_batch
from emulator.domain.model import Edge, Map, MappingOp, OrgGraph, Unmap
from emulator.storage import Database, MappingStore
from emulator.storage.store import _sqlite_read

# Awkward ids too: NUL, astral characters, quotes, and ones that look like numbers or JSON.
ODD_IDS = ["a\x00b", "😀", 'q"uote', "1", "null", "[1]", "é", " "]


def apply(store: MappingStore, org: str, ops: list[MappingOp]) -> str:
    """Apply a batch the way Backend.map_batch does; 'ok' or the refusal's reason."""
    try:
        with store.write(org) as transaction:
            plan = plan_batch(ops, transaction)
            transaction.apply(plan, amplitude_id_base=1)
    except MappingCycle as error:
        return f"cycle at {error.index}"
    return "ok"


def random_batch(rng: random.Random, pool: list[str]) -> list[MappingOp]:
    ops: list[MappingOp] = []
    for _ in range(rng.randint(1, 12)):
        user = rng.choice(pool)
        if rng.random() < 0.2:
            ops.append(Unmap(user))
        else:
            ops.append(Map(user, rng.choice(pool)))
    return ops


@pytest.fixture(params=["memory", "file"])
def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[MappingStore, MappingStore]]:
    def url(name: str) -> str:
        return "sqlite://" if request.param == "memory" else f"sqlite:///{tmp_path / name}.db"

    databases = [Database(url("driver")), Database(url("core"))]
    yield MappingStore(databases[0]), MappingStore(databases[1], sqlite_driver=False)
    for database in databases:
        database.close()


def test_random_batches_give_the_same_graph(stores: tuple[MappingStore, MappingStore]) -> None:
    driver, core = stores
    rng = random.Random(2024)
    pool = [f"u{number}" for number in range(25)] + ODD_IDS
    for _ in range(300):
        org = rng.choice(["org-a", "org-b"])
        ops = random_batch(rng, pool)
        assert apply(driver, org, ops) == apply(core, org, ops)
    assert driver.dump() == core.dump()
    assert driver.counts() == core.counts()
    for org in ("org-a", "org-b", "org-unknown"):
        assert driver.read(org, pool) == core.read(org, pool)


def test_batches_and_reads_over_the_chunk_size(stores: tuple[MappingStore, MappingStore]) -> None:
    driver, core = stores
    # 1200 users into 3 globals: IN lists are cut into chunks, and each global has hundreds of
    # users in mapped_from, in amplitude_id order.
    ops: list[MappingOp] = [Map(f"user-{n}", f"global-{n % 3}") for n in range(1200)]
    assert apply(driver, "org", ops) == apply(core, "org", ops) == "ok"
    unmaps: list[MappingOp] = [Unmap(f"user-{n}") for n in range(0, 1200, 7)]
    assert apply(driver, "org", unmaps) == apply(core, "org", unmaps) == "ok"
    ids = [f"global-{n}" for n in range(3)] + [f"user-{n}" for n in range(1200)]
    read = driver.read("org", ids)
    assert read == core.read("org", ids)
    mapped_from = [edge.amplitude_id for edge in read["global-0"].mapped_from]
    assert mapped_from == sorted(mapped_from)
    assert len(mapped_from) == len([n for n in range(0, 1200, 3) if n % 7])
    assert driver.dump() == core.dump()


def test_a_refused_batch_changes_nothing_on_either_path(
    stores: tuple[MappingStore, MappingStore],
) -> None:
    driver, core = stores
    for store in stores:
        assert apply(store, "org", [Map("a", "b"), Map("b", "c")]) == "ok"
        assert apply(store, "org", [Map("x", "y"), Map("c", "a")]) == "cycle at 1"
    assert driver.dump() == core.dump()
    assert "x" not in driver.dump()["org"].amplitude_ids


def test_replace_all_gives_the_same_graph_on_both_paths(
    stores: tuple[MappingStore, MappingStore],
) -> None:
    driver, core = stores
    graphs = {
        "org-a": OrgGraph(amplitude_ids={"a": 1, "b": 2, "😀": 3}, mappings={"a": "b", "😀": "b"}),
        "org-b": OrgGraph(amplitude_ids={"x": 7}),
    }
    for store in stores:
        assert apply(store, "org-old", [Map("p", "q")]) == "ok"
        store.replace_all(graphs)
    assert driver.dump() == core.dump() == graphs
    assert driver.counts() == core.counts() == (2, 4, 2)
    assert driver.read("org-a", ["b"]) == core.read("org-a", ["b"])
    assert [edge.user_id for edge in driver.read("org-a", ["b"])["b"].mapped_from] == ["a", "😀"]


@pytest.mark.parametrize("where", ["memory", "file"])
def test_sqlite_keeps_the_graph_in_its_primary_keys(where: str, tmp_path: Path) -> None:
    """The graph's tables are WITHOUT ROWID on SQLite: a mapping writes four B-trees, not six
    (the file-database commit cost in docs/performance.md)."""
    database = Database("sqlite://" if where == "memory" else f"sqlite:///{tmp_path / 'graph.db'}")
    try:
        assert database.sqlite is not None
        rows = database.sqlite.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
        ddl: dict[str, str] = dict(rows.fetchall())
    finally:
        database.close()
    assert "WITHOUT ROWID" in ddl["mappings"]
    assert "WITHOUT ROWID" in ddl["amplitude_ids"]
    assert "WITHOUT ROWID" not in ddl["events"]


@pytest.mark.parametrize("count", [1, 2, 100, 500])
def test_a_read_looks_each_id_up_and_never_walks_an_org(count: int) -> None:
    """Every table in the read's plan is searched on its whole key (org and id): a plan that
    searched on the org alone would read the org's whole index, O(graph) per read."""
    database = Database("sqlite://")
    store = MappingStore(database)
    ops: list[MappingOp] = [Map(f"u{n}", f"g{n // 2}") for n in range(2 * count)]
    assert apply(store, "org", ops) == "ok"
    connection = database.sqlite
    assert connection is not None
    ids = [f"u{n}" for n in range(count)]
    plan = [
        detail
        for *_, detail in connection.execute(f"EXPLAIN QUERY PLAN {_sqlite_read(count)}", (1, *ids))
    ]
    lookups = [detail for detail in plan if " AS " in detail or detail.startswith("SEARCH")]
    searches = [detail for detail in plan if detail.startswith("SEARCH")]
    assert len(searches) == 5, plan  # own ids; mapped_to and its id; mapped_from and its id
    assert all(
        detail.endswith(("(org=? AND user_id=?)", "(org=? AND global_user_id=?)"))
        for detail in searches
    ), plan
    assert not [detail for detail in lookups if detail.startswith("SCAN") and "ids" not in detail]
    assert store.read("org", [*ids, ids[0]])["u0"].mapped_to == [Edge("g0", 2)]
