"""Rules for state loaded wholesale (seeding, snapshots): the same invariants as the API keeps."""

from __future__ import annotations

from collections.abc import Mapping

from emulator.domain.model import OrgGraph


class InvalidOrgGraph(ValueError):
    """The org's state breaks an invariant; the message says which."""


def complete_org_graph(
    org: str, amplitude_ids: Mapping[str, int], mappings: Mapping[str, str], base: int
) -> OrgGraph:
    """Check a loaded org graph and give every id it names an amplitude_id.

    Ids named by a mapping but missing from `amplitude_ids` are allocated after the highest one,
    in order of appearance (user before global), as the API would have.
    """
    ids = dict(amplitude_ids)
    if len(set(ids.values())) != len(ids):
        raise InvalidOrgGraph(f"org {org!r}: two users share an amplitude_id")
    next_id = max(ids.values(), default=base - 1) + 1
    for user_id, global_user_id in mappings.items():
        if user_id == global_user_id:
            raise InvalidOrgGraph(f"org {org!r}: {user_id!r} is mapped to itself")
        for named in (user_id, global_user_id):
            if named not in ids:
                ids[named] = next_id
                next_id += 1
    for start in mappings:
        seen = {start}
        current = mappings.get(start)
        while current is not None:
            if current in seen:
                raise InvalidOrgGraph(f"org {org!r}: the mappings from {start!r} form a cycle")
            seen.add(current)
            current = mappings.get(current)
    return OrgGraph(amplitude_ids=ids, mappings=dict(mappings))
