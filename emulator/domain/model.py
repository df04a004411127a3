"""The nouns of the User Mapping API, in Amplitude's words."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Map:
    """One mapping object that maps `user_id` into `global_user_id`."""

    user_id: str
    global_user_id: str


@dataclass(frozen=True, slots=True)
class Unmap:
    """One mapping object with `"unmap": true`: remove the user's current mapping."""

    user_id: str


MappingOp = Map | Unmap


def is_text(value: object) -> bool:
    """Whether `value` is a string UTF-8 can hold: JSON's `\\ud800` escapes make ones it cannot."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """What an accepted batch changes, worked out before anything is written.

    `mapping_changes` holds the final global of each user the batch changes (None: unmapped), so a
    later object for the same user has already won. `named_user_ids` lists every id the batch
    names, in the order that allocates `amplitude_id`s.
    """

    mapping_changes: dict[str, str | None]
    named_user_ids: list[str]
    object_count: int


@dataclass(frozen=True, slots=True)
class Edge:
    """One entry of `mapped_from` / `mapped_to`: the user named and that user's amplitude_id."""

    user_id: str
    amplitude_id: int


@dataclass(slots=True)
class UserMappings:
    """What GET /api/2/usermap reports for one requested user id."""

    amplitude_id: int | None = None
    mapped_from: list[Edge] = field(default_factory=list)
    mapped_to: list[Edge] = field(default_factory=list)


@dataclass(slots=True)
class OrgGraph:
    """An org's whole state: every amplitude_id it allocated and every direct mapping."""

    amplitude_ids: dict[str, int] = field(default_factory=dict)
    mappings: dict[str, str] = field(default_factory=dict)  # user_id -> global_user_id
