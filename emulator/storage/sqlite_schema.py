"""The tables of storage/schema.py as SQLite DDL, checked in: opening a SQLite database then needs
no SQLAlchemy (it is most of the emulator's start-up time otherwise).

schema.py stays the one source of truth: tests/test_storage_database.py compiles its metadata on
the SQLite dialect (`CreateTable(..., if_not_exists=True)` and `CreateIndex` for
`metadata.sorted_tables`, whitespace normalised) and fails, showing the text to paste here, when
the two differ. IF NOT EXISTS everywhere, so a database file made before (by SQLAlchemy's
`create_all`, same statements) opens unchanged.
"""

from __future__ import annotations

# The tables of data, in `metadata.sorted_tables` order; every one has an `org` column (the
# org's id). `orgs` itself is not among them: clearing data keeps the orgs and their ids.
TABLES: tuple[str, ...] = (
    "amplitude_ids",
    "device_amplitude_ids",
    "events",
    "insert_ids",
    "mappings",
    "profiles",
)

DDL = """\
CREATE TABLE IF NOT EXISTS amplitude_ids (
    org INTEGER NOT NULL,
    user_id VARCHAR NOT NULL,
    amplitude_id BIGINT NOT NULL,
    PRIMARY KEY (org, user_id),
    CONSTRAINT uq_amplitude_ids_org_amplitude_id UNIQUE (org, amplitude_id)
)
 WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS device_amplitude_ids (
    org INTEGER NOT NULL,
    device_id VARCHAR NOT NULL,
    amplitude_id BIGINT NOT NULL,
    PRIMARY KEY (org, device_id),
    CONSTRAINT uq_device_amplitude_ids_org_amplitude_id UNIQUE (org, amplitude_id)
);

CREATE TABLE IF NOT EXISTS events (
    id INTEGER NOT NULL,
    org INTEGER NOT NULL,
    project VARCHAR NOT NULL,
    amplitude_id BIGINT NOT NULL,
    user_id VARCHAR,
    device_id VARCHAR,
    event_type VARCHAR NOT NULL,
    time BIGINT NOT NULL,
    server_upload_time BIGINT NOT NULL,
    insert_id VARCHAR,
    event_properties JSON NOT NULL,
    user_properties JSON NOT NULL,
    fields JSON NOT NULL,
    PRIMARY KEY (id)
);

CREATE INDEX IF NOT EXISTS ix_events_org_device_id ON events (org, device_id);

CREATE INDEX IF NOT EXISTS ix_events_org_user_id ON events (org, user_id);

CREATE TABLE IF NOT EXISTS insert_ids (
    org INTEGER NOT NULL,
    project VARCHAR NOT NULL,
    scope VARCHAR NOT NULL,
    insert_id VARCHAR NOT NULL,
    accepted_at BIGINT NOT NULL,
    PRIMARY KEY (org, project, scope, insert_id)
);

CREATE TABLE IF NOT EXISTS mappings (
    org INTEGER NOT NULL,
    user_id VARCHAR NOT NULL,
    global_user_id VARCHAR NOT NULL,
    PRIMARY KEY (org, user_id)
)
 WITHOUT ROWID;

CREATE INDEX IF NOT EXISTS ix_mappings_org_global_user_id ON mappings (org, global_user_id);

CREATE TABLE IF NOT EXISTS orgs (
    id INTEGER NOT NULL,
    name VARCHAR NOT NULL,
    PRIMARY KEY (id),
    UNIQUE (name)
);

CREATE TABLE IF NOT EXISTS profiles (
    org INTEGER NOT NULL,
    amplitude_id BIGINT NOT NULL,
    properties JSON NOT NULL,
    PRIMARY KEY (org, amplitude_id)
);
"""
