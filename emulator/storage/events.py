"""Events, device profiles, insert ids and user properties: SQLAlchemy Core, one org at a time.

Runs on the Database's engine (storage/database.py; on SQLite it shares the mapping store's one
connection) and shares the mapping store's amplitude id counter (storage/core.py), so an event's
user gets the same amplitude_id the User Mapping API gives it, and the ids of device profiles
never collide with users'. Imported on first use: the User Mapping API never needs it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection, delete, func, insert, select
from sqlalchemy.engine import Row

from emulator.domain.activity import StoredEvent
from emulator.domain.ingest import InsertKey, Kind, Named
from emulator.storage.core import highest_amplitude_id
from emulator.storage.database import Database
from emulator.storage.schema import (
    amplitude_ids,
    device_amplitude_ids,
    events,
    insert_ids,
    mappings,
    profiles,
)

# Bound parameters per IN (...) list: under every database's limit.
_CHUNK = 500

_KINDS: tuple[Kind, ...] = ("user", "device")


_T = TypeVar("_T")


def _chunks(items: Sequence[_T]) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _id_table(kind: Kind) -> tuple[Any, Any]:
    """The amplitude id table of `kind` and its key column."""
    if kind == "user":
        return amplitude_ids, amplitude_ids.c.user_id
    return device_amplitude_ids, device_amplitude_ids.c.device_id


class EventTransaction:
    """One org's event data inside an open transaction."""

    def __init__(self, connection: Connection, org: int) -> None:
        self._connection = connection
        self._org = org

    def amplitude_ids(self, named: Sequence[Named], base: int) -> dict[Named, int]:
        """The amplitude id of each named user or device profile, allocating new ones in order
        of `named` from the org's one counter (`base` for the org's first)."""
        found: dict[Named, int] = {}
        for kind in _KINDS:
            table, key = _id_table(kind)
            wanted = list(dict.fromkeys(value for k, value in named if k == kind))
            for chunk in _chunks(wanted):
                for value, amplitude_id in self._connection.execute(
                    select(key, table.c.amplitude_id).where(
                        table.c.org == self._org, key.in_(chunk)
                    )
                ):
                    found[(kind, value)] = amplitude_id
        new = [name for name in dict.fromkeys(named) if name not in found]
        if new:
            highest = highest_amplitude_id(self._connection, self._org)
            first = base if highest is None else highest + 1
            rows: dict[Kind, list[dict[str, Any]]] = {"user": [], "device": []}
            for offset, (kind, value) in enumerate(new):
                found[(kind, value)] = first + offset
                key = "user_id" if kind == "user" else "device_id"
                rows[kind].append({"org": self._org, key: value, "amplitude_id": first + offset})
            for kind in _KINDS:
                if rows[kind]:
                    self._connection.execute(insert(_id_table(kind)[0]), rows[kind])
        return found

    def seen_insert_ids(
        self, project: str, keys: Collection[InsertKey], since_ms: int
    ) -> set[InsertKey]:
        """Which (scope, insert_id) pairs were accepted after `since_ms`."""
        seen: set[InsertKey] = set()
        by_insert_id: dict[str, set[str]] = {}
        for scope, insert_id in keys:
            by_insert_id.setdefault(insert_id, set()).add(scope)
        for chunk in _chunks(sorted(by_insert_id)):
            for scope, insert_id in self._connection.execute(
                select(insert_ids.c.scope, insert_ids.c.insert_id).where(
                    insert_ids.c.org == self._org,
                    insert_ids.c.project == project,
                    insert_ids.c.insert_id.in_(chunk),
                    insert_ids.c.accepted_at > since_ms,
                )
            ):
                if scope in by_insert_id.get(insert_id, ()):
                    seen.add((scope, insert_id))
        return seen

    def remember_insert_ids(self, project: str, keys: Collection[InsertKey], now_ms: int) -> None:
        """Record (scope, insert_id) pairs as accepted now (replacing older acceptances)."""
        pairs = sorted(set(keys))
        for chunk in _chunks(pairs):
            for scope, insert_id in chunk:
                self._connection.execute(
                    delete(insert_ids).where(
                        insert_ids.c.org == self._org,
                        insert_ids.c.project == project,
                        insert_ids.c.scope == scope,
                        insert_ids.c.insert_id == insert_id,
                    )
                )
            self._connection.execute(
                insert(insert_ids),
                [
                    {
                        "org": self._org,
                        "project": project,
                        "scope": scope,
                        "insert_id": insert_id,
                        "accepted_at": now_ms,
                    }
                    for scope, insert_id in chunk
                ],
            )

    def add_events(self, project: str, rows: Sequence[StoredEvent]) -> None:
        if not rows:
            return
        self._connection.execute(
            insert(events),
            [
                {
                    "org": self._org,
                    "project": project,
                    "amplitude_id": row.amplitude_id,
                    "user_id": row.user_id,
                    "device_id": row.device_id,
                    "event_type": row.event_type,
                    "time": row.time,
                    "server_upload_time": row.server_upload_time,
                    "insert_id": row.insert_id,
                    "event_properties": row.event_properties,
                    "user_properties": row.user_properties,
                    "fields": row.fields,
                }
                for row in rows
            ],
        )

    def properties(self, ids: Collection[int]) -> dict[int, dict[str, Any]]:
        """The current user properties of each profile that has any."""
        found: dict[int, dict[str, Any]] = {}
        for chunk in _chunks(sorted(ids)):
            for amplitude_id, properties in self._connection.execute(
                select(profiles.c.amplitude_id, profiles.c.properties).where(
                    profiles.c.org == self._org, profiles.c.amplitude_id.in_(chunk)
                )
            ):
                found[amplitude_id] = properties
        return found

    def save_properties(self, changed: dict[int, dict[str, Any]]) -> None:
        ids = sorted(changed)
        for chunk in _chunks(ids):
            self._connection.execute(
                delete(profiles).where(
                    profiles.c.org == self._org, profiles.c.amplitude_id.in_(chunk)
                )
            )
        if ids:
            self._connection.execute(
                insert(profiles),
                [
                    {
                        "org": self._org,
                        "amplitude_id": amplitude_id,
                        "properties": changed[amplitude_id],
                    }
                    for amplitude_id in ids
                ],
            )


def _stored(row: Row[Any]) -> StoredEvent:
    return StoredEvent(
        seq=row.id,
        amplitude_id=row.amplitude_id,
        user_id=row.user_id,
        device_id=row.device_id,
        event_type=row.event_type,
        time=row.time,
        server_upload_time=row.server_upload_time,
        insert_id=row.insert_id,
        event_properties=row.event_properties,
        user_properties=row.user_properties,
        fields=row.fields,
    )


class EventReader:
    """Read-only queries on one org's events, identities and properties; an IdentityGraph."""

    def __init__(self, connection: Connection, org: int) -> None:
        self._connection = connection
        self._org = org

    # --- the mapping graph ----------------------------------------------------------------

    def globals_of(self, user_ids: Collection[str]) -> Mapping[str, str]:
        found: dict[str, str] = {}
        for chunk in _chunks(sorted(user_ids)):
            found.update(
                (user_id, global_user_id)
                for user_id, global_user_id in self._connection.execute(
                    select(mappings.c.user_id, mappings.c.global_user_id).where(
                        mappings.c.org == self._org, mappings.c.user_id.in_(chunk)
                    )
                )
            )
        return found

    def mapped_into(self, global_user_ids: Collection[str]) -> Mapping[str, list[str]]:
        found: dict[str, list[str]] = {}
        for chunk in _chunks(sorted(global_user_ids)):
            for global_user_id, user_id in self._connection.execute(
                select(mappings.c.global_user_id, mappings.c.user_id)
                .where(mappings.c.org == self._org, mappings.c.global_user_id.in_(chunk))
                .order_by(mappings.c.user_id)
            ):
                found.setdefault(global_user_id, []).append(user_id)
        return found

    def mappings(self) -> dict[str, str]:
        """The org's whole graph: user -> global."""
        rows = self._connection.execute(
            select(mappings.c.user_id, mappings.c.global_user_id).where(mappings.c.org == self._org)
        )
        return {user_id: global_user_id for user_id, global_user_id in rows.all()}  # noqa: C416

    # --- identities -----------------------------------------------------------------------

    def owner(self, amplitude_id: int) -> Named | None:
        """Whose amplitude id this is: a user's or a device profile's."""
        for kind in _KINDS:
            table, key = _id_table(kind)
            value = self._connection.execute(
                select(key).where(table.c.org == self._org, table.c.amplitude_id == amplitude_id)
            ).scalar_one_or_none()
            if value is not None:
                return (kind, value)
        return None

    def user_amplitude_ids(self, user_ids: Collection[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for chunk in _chunks(sorted(user_ids)):
            found.update(
                (user_id, amplitude_id)
                for user_id, amplitude_id in self._connection.execute(
                    select(amplitude_ids.c.user_id, amplitude_ids.c.amplitude_id).where(
                        amplitude_ids.c.org == self._org, amplitude_ids.c.user_id.in_(chunk)
                    )
                )
            )
        return found

    def search_user_or_device(self, text: str) -> list[tuple[str | None, int]]:
        """(user_id, amplitude_id) of the user `text` names, of users who sent events from
        device `text`, and of device `text`'s own profile; by amplitude id."""
        found: dict[int, str | None] = {}
        user = self.user_amplitude_ids([text])
        if text in user:
            found[user[text]] = text
        for user_id, amplitude_id in self._connection.execute(
            select(events.c.user_id, events.c.amplitude_id)
            .where(
                events.c.org == self._org,
                events.c.device_id == text,
                events.c.user_id.is_not(None),
            )
            .distinct()
        ):
            found[amplitude_id] = user_id
        device = self._connection.execute(
            select(device_amplitude_ids.c.amplitude_id).where(
                device_amplitude_ids.c.org == self._org, device_amplitude_ids.c.device_id == text
            )
        ).scalar_one_or_none()
        if device is not None:
            found[device] = None
        return [(found[amplitude_id], amplitude_id) for amplitude_id in sorted(found)]

    def search_user_prefix(self, prefix: str, limit: int) -> list[tuple[str, int]]:
        rows = self._connection.execute(
            select(amplitude_ids.c.user_id, amplitude_ids.c.amplitude_id)
            .where(
                amplitude_ids.c.org == self._org,
                amplitude_ids.c.user_id.startswith(prefix, autoescape=True),
            )
            .order_by(amplitude_ids.c.amplitude_id)
            .limit(limit)
        )
        # LIKE may ignore case on some databases: keep exact prefixes only.
        return [
            (user_id, amplitude_id) for user_id, amplitude_id in rows if user_id.startswith(prefix)
        ]

    # --- events and properties --------------------------------------------------------------

    def events_of_users(self, user_ids: Sequence[str]) -> list[StoredEvent]:
        found: list[StoredEvent] = []
        for chunk in _chunks(list(user_ids)):
            found.extend(
                _stored(row)
                for row in self._connection.execute(
                    select(events).where(events.c.org == self._org, events.c.user_id.in_(chunk))
                )
            )
        return found

    def events_of_device_profile(self, device_id: str) -> list[StoredEvent]:
        """The events a device sent without a user_id."""
        return [
            _stored(row)
            for row in self._connection.execute(
                select(events).where(
                    events.c.org == self._org,
                    events.c.device_id == device_id,
                    events.c.user_id.is_(None),
                )
            )
        ]

    def activity(self) -> list[tuple[str | None, str | None, int]]:
        """(user_id, device_id, time) of every event of the org."""
        rows = self._connection.execute(
            select(events.c.user_id, events.c.device_id, events.c.time).where(
                events.c.org == self._org
            )
        )
        return [(user_id, device_id, time) for user_id, device_id, time in rows]

    def properties(self, amplitude_id: int) -> dict[str, Any]:
        properties: dict[str, Any] | None = self._connection.execute(
            select(profiles.c.properties).where(
                profiles.c.org == self._org, profiles.c.amplitude_id == amplitude_id
            )
        ).scalar_one_or_none()
        return properties or {}


class EventStore:
    """Events and identities of every org, on the Database's engine. Callers serialise writes
    (see Backend)."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self.engine = database.engine

    @contextmanager
    def write(self, org: str) -> Iterator[EventTransaction]:
        """A transaction: committed when the block ends, rolled back on error."""
        org_id = self._database.ensure_org_id(org)
        with self.engine.begin() as connection:
            yield EventTransaction(connection, org_id)

    @contextmanager
    def read(self, org: str) -> Iterator[EventReader]:
        org_id = self._database.org_id(org)
        with self.engine.connect() as connection:
            # An org that never stored anything reads as empty: no org has the id 0.
            yield EventReader(connection, 0 if org_id is None else org_id)

    def counts(self) -> int:
        """How many events the database holds."""
        with self.engine.connect() as connection:
            total: int = connection.execute(select(func.count()).select_from(events)).scalar_one()
        return total
