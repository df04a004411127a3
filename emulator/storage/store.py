"""Reads and writes of the mapping graph, one org at a time, one transaction per batch."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, create_engine, delete, func, insert, select
from sqlalchemy.engine import make_url

from emulator.domain.model import BatchPlan, Edge, OrgGraph, UserMappings
from emulator.storage import sqlite
from emulator.storage.schema import amplitude_ids, mappings, metadata

# Bound parameters per IN (...) list: under every database's limit.
_CHUNK = 500


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class OrgTransaction:
    """One org's graph inside an open transaction; the domain's MappingGraph."""

    def __init__(self, connection: Connection, org: str) -> None:
        self._connection = connection
        self._org = org

    def globals_of(self, user_ids: Collection[str]) -> Mapping[str, str]:
        found: dict[str, str] = {}
        for chunk in _chunks(list(user_ids)):
            rows = self._connection.execute(
                select(mappings.c.user_id, mappings.c.global_user_id).where(
                    mappings.c.org == self._org, mappings.c.user_id.in_(chunk)
                )
            )
            found.update((user_id, global_user_id) for user_id, global_user_id in rows)
        return found

    def apply(self, plan: BatchPlan, amplitude_id_base: int) -> None:
        self._allocate_amplitude_ids(plan.named_user_ids, amplitude_id_base)
        changed = list(plan.mapping_changes)
        for chunk in _chunks(changed):
            self._connection.execute(
                delete(mappings).where(mappings.c.org == self._org, mappings.c.user_id.in_(chunk))
            )
        new_rows = [
            {"org": self._org, "user_id": user_id, "global_user_id": global_user_id}
            for user_id, global_user_id in plan.mapping_changes.items()
            if global_user_id is not None
        ]
        if new_rows:
            self._connection.execute(insert(mappings), new_rows)

    def _allocate_amplitude_ids(self, user_ids: Sequence[str], base: int) -> None:
        known: set[str] = set()
        for chunk in _chunks(user_ids):
            known.update(
                self._connection.execute(
                    select(amplitude_ids.c.user_id).where(
                        amplitude_ids.c.org == self._org, amplitude_ids.c.user_id.in_(chunk)
                    )
                ).scalars()
            )
        new_ids = [user_id for user_id in user_ids if user_id not in known]
        if not new_ids:
            return
        highest = self._connection.execute(
            select(func.max(amplitude_ids.c.amplitude_id)).where(amplitude_ids.c.org == self._org)
        ).scalar_one()
        first = base if highest is None else highest + 1
        self._connection.execute(
            insert(amplitude_ids),
            [
                {"org": self._org, "user_id": user_id, "amplitude_id": first + offset}
                for offset, user_id in enumerate(new_ids)
            ],
        )


class MappingStore:
    """The database behind every org. Callers serialise writes (see Backend)."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        options: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            options = sqlite.engine_options()
        self.engine = create_engine(url, **options)
        if url.get_backend_name() == "sqlite":
            sqlite.configure(self.engine)
        metadata.create_all(self.engine)

    @contextmanager
    def write(self, org: str) -> Iterator[OrgTransaction]:
        """A transaction on `org`'s graph: committed when the block ends, rolled back on error."""
        with self.engine.begin() as connection:
            yield OrgTransaction(connection, org)

    def read(self, org: str, user_ids: Sequence[str]) -> dict[str, UserMappings]:
        """Direct edges of each requested user, in request order (spec section 4)."""
        result = {user_id: UserMappings() for user_id in user_ids}
        with self.engine.connect() as connection:
            for chunk in _chunks(user_ids):
                for user_id, amplitude_id in connection.execute(
                    select(amplitude_ids.c.user_id, amplitude_ids.c.amplitude_id).where(
                        amplitude_ids.c.org == org, amplitude_ids.c.user_id.in_(chunk)
                    )
                ):
                    result[user_id].amplitude_id = amplitude_id
                for user_id, global_user_id, amplitude_id in connection.execute(
                    select(
                        mappings.c.user_id, mappings.c.global_user_id, amplitude_ids.c.amplitude_id
                    )
                    .join(
                        amplitude_ids,
                        (amplitude_ids.c.org == mappings.c.org)
                        & (amplitude_ids.c.user_id == mappings.c.global_user_id),
                    )
                    .where(mappings.c.org == org, mappings.c.user_id.in_(chunk))
                ):
                    result[user_id].mapped_to.append(Edge(global_user_id, amplitude_id))
                for global_user_id, user_id, amplitude_id in connection.execute(
                    select(
                        mappings.c.global_user_id, mappings.c.user_id, amplitude_ids.c.amplitude_id
                    )
                    .join(
                        amplitude_ids,
                        (amplitude_ids.c.org == mappings.c.org)
                        & (amplitude_ids.c.user_id == mappings.c.user_id),
                    )
                    .where(mappings.c.org == org, mappings.c.global_user_id.in_(chunk))
                    .order_by(amplitude_ids.c.amplitude_id)
                ):
                    result[global_user_id].mapped_from.append(Edge(user_id, amplitude_id))
        return result

    def dump(self) -> dict[str, OrgGraph]:
        """Every org's whole graph."""
        graphs: dict[str, OrgGraph] = {}
        with self.engine.connect() as connection:
            for org, user_id, amplitude_id in connection.execute(
                select(amplitude_ids).order_by(amplitude_ids.c.org, amplitude_ids.c.amplitude_id)
            ):
                graphs.setdefault(org, OrgGraph()).amplitude_ids[user_id] = amplitude_id
            for org, user_id, global_user_id in connection.execute(
                select(mappings).order_by(mappings.c.org, mappings.c.user_id)
            ):
                graphs.setdefault(org, OrgGraph()).mappings[user_id] = global_user_id
        return graphs

    def counts(self) -> tuple[int, int, int]:
        """How many orgs, users (amplitude ids) and mappings the database holds."""
        with self.engine.connect() as connection:
            orgs, users = connection.execute(
                select(func.count(func.distinct(amplitude_ids.c.org)), func.count())
            ).one()
            mapped = connection.execute(select(func.count()).select_from(mappings)).scalar_one()
        return orgs, users, mapped

    def replace_all(self, graphs: Mapping[str, OrgGraph]) -> None:
        """Make the database hold exactly `graphs`, in one transaction."""
        with self.engine.begin() as connection:
            connection.execute(delete(mappings))
            connection.execute(delete(amplitude_ids))
            id_rows = [
                {"org": org, "user_id": user_id, "amplitude_id": amplitude_id}
                for org, graph in graphs.items()
                for user_id, amplitude_id in graph.amplitude_ids.items()
            ]
            mapping_rows = [
                {"org": org, "user_id": user_id, "global_user_id": global_user_id}
                for org, graph in graphs.items()
                for user_id, global_user_id in graph.mappings.items()
            ]
            if id_rows:
                connection.execute(insert(amplitude_ids), id_rows)
            if mapping_rows:
                connection.execute(insert(mappings), mapping_rows)

    def clear(self, org: str | None = None) -> None:
        """Forget mappings and amplitude ids: of one org, or of all."""
        with self.engine.begin() as connection:
            for table in (mappings, amplitude_ids):
                statement = delete(table)
                if org is not None:
                    statement = statement.where(table.c.org == org)
                connection.execute(statement)

    def close(self) -> None:
        self.engine.dispose()
