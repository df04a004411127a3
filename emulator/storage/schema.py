"""Tables, in portable SQL: every row is keyed by the org it belongs to (its id in `orgs`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData()

# Each org once, by name; every other table names an org by its id here (its column `org`). Org
# names are api keys in the permissive mode, 32 characters that every row and index entry of the
# graph repeated: a graph of a million mappings took 254 MB on SQLite, 92 MB with ids, and reads
# of a large graph go to the disk that much less (docs/performance.md). Ids are never reused:
# clearing the data keeps the orgs.
orgs = Table(
    "orgs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String, nullable=False, unique=True),
)


# The `org` column of every other table: the org's id in `orgs`.
def _org_column(**options: Any) -> Column[int]:
    return Column("org", Integer, nullable=False, **options)


# SQLite: the rows of the hot tables live in their primary key's B-tree (WITHOUT ROWID), not in
# a rowid table beside it; a mapping then writes four B-trees instead of six, and a graph takes
# less room (docs/performance.md). Other databases ignore the option.
_CLUSTERED: dict[str, Any] = {"sqlite_with_rowid": False}

# One amplitude_id per (org, user id), allocated when an accepted request first names the id.
amplitude_ids = Table(
    "amplitude_ids",
    metadata,
    _org_column(primary_key=True),
    Column("user_id", String, primary_key=True),
    Column("amplitude_id", BigInteger, nullable=False),
    UniqueConstraint("org", "amplitude_id", name="uq_amplitude_ids_org_amplitude_id"),
    **_CLUSTERED,
)

# The direct edges of the mapping graph: a user has at most one global.
mappings = Table(
    "mappings",
    metadata,
    _org_column(primary_key=True),
    Column("user_id", String, primary_key=True),
    Column("global_user_id", String, nullable=False),
    Index("ix_mappings_org_global_user_id", "org", "global_user_id"),
    **_CLUSTERED,
)

# Events and identities (Amplitude's HTTP V2, Batch and Identify APIs) ---------------------------

# Device-only profiles (events with a device_id and no user_id) get amplitude ids from the same
# per-org counter as users; a separate table, because a device id may equal some user id.
device_amplitude_ids = Table(
    "device_amplitude_ids",
    metadata,
    _org_column(primary_key=True),
    Column("device_id", String, primary_key=True),
    Column("amplitude_id", BigInteger, nullable=False),
    UniqueConstraint("org", "amplitude_id", name="uq_device_amplitude_ids_org_amplitude_id"),
)

# Every accepted event, as sent. `id` is the ingestion order (ties of `time` are ordered by it);
# SQLite only autoincrements an INTEGER primary key, hence the variant.
events = Table(
    "events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    _org_column(),
    Column("project", String, nullable=False),
    Column("amplitude_id", BigInteger, nullable=False),  # of the user (or device) that fired it
    Column("user_id", String),
    Column("device_id", String),
    Column("event_type", String, nullable=False),
    Column("time", BigInteger, nullable=False),  # client event time, ms since the epoch
    Column("server_upload_time", BigInteger, nullable=False),  # ms, the emulator clock
    Column("insert_id", String),
    Column("event_properties", JSON, nullable=False),
    Column("user_properties", JSON, nullable=False),  # as sent with the event
    Column("fields", JSON, nullable=False),  # the other documented fields, as sent
    Index("ix_events_org_user_id", "org", "user_id"),
    Index("ix_events_org_device_id", "org", "device_id"),
)

# insert_id de-duplication: when an insert_id was last accepted for a device (or, without a
# device_id, a user) of a project. `scope` is "device:<id>" or "user:<id>".
insert_ids = Table(
    "insert_ids",
    metadata,
    _org_column(primary_key=True),
    Column("project", String, primary_key=True),
    Column("scope", String, primary_key=True),
    Column("insert_id", String, primary_key=True),
    Column("accepted_at", BigInteger, nullable=False),  # ms, the emulator clock
)

# The current user properties of each user or device profile, by its amplitude id.
profiles = Table(
    "profiles",
    metadata,
    _org_column(primary_key=True),
    Column("amplitude_id", BigInteger, primary_key=True),
    Column("properties", JSON, nullable=False),
)
