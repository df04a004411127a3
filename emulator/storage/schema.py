"""Tables, in portable SQL: every row is keyed by the org it belongs to."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, MetaData, String, Table, UniqueConstraint

metadata = MetaData()

# One amplitude_id per (org, user id), allocated when an accepted request first names the id.
amplitude_ids = Table(
    "amplitude_ids",
    metadata,
    Column("org", String, primary_key=True),
    Column("user_id", String, primary_key=True),
    Column("amplitude_id", BigInteger, nullable=False),
    UniqueConstraint("org", "amplitude_id", name="uq_amplitude_ids_org_amplitude_id"),
)

# The direct edges of the mapping graph: a user has at most one global.
mappings = Table(
    "mappings",
    metadata,
    Column("org", String, primary_key=True),
    Column("user_id", String, primary_key=True),
    Column("global_user_id", String, nullable=False),
    Index("ix_mappings_org_global_user_id", "org", "global_user_id"),
)
