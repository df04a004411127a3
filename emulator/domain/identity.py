"""Who a user is: the person a user id resolves to, and whose events a user's stream holds.

Spec section 6, resolved at read time (so mapping is retroactive and unmapping separates the
streams again): a user resolves to the end of its chain of mappings. A user that is not mapped
(the global end of its chain) has a stream of its own events and those of every user that
resolves to it; a mapped user's stream holds only its own events.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Protocol


class IdentityGraph(Protocol):
    """Read access to an org's direct mappings, in both directions."""

    def globals_of(self, user_ids: Collection[str]) -> Mapping[str, str]:
        """The global each of `user_ids` is mapped to; unmapped ids are left out."""
        ...

    def mapped_into(self, global_user_ids: Collection[str]) -> Mapping[str, list[str]]:
        """The users mapped directly to each of `global_user_ids`; none: left out."""
        ...


def resolve(user_id: str, mappings: Mapping[str, str]) -> str:
    """The person `user_id` resolves to: the end of its chain (a cycle, which the API never
    lets form, stops at the first repeated user)."""
    seen = {user_id}
    current = user_id
    while (next_user := mappings.get(current)) is not None and next_user not in seen:
        seen.add(next_user)
        current = next_user
    return current


def resolve_all(mappings: Mapping[str, str]) -> dict[str, str]:
    """The person of every user the mappings name, each chain walked once."""
    persons: dict[str, str] = {}
    for start in mappings:
        path: list[str] = []
        current = start
        while current not in persons and current in mappings and current not in path:
            path.append(current)
            current = mappings[current]
        person = persons.get(current, current)
        for user in path:
            persons[user] = person
        persons.setdefault(current, person)
    return persons


def stream_members(user_id: str, graph: IdentityGraph) -> list[str]:
    """The users whose events make up `user_id`'s stream, `user_id` first, then by distance.

    A mapped user: only itself. A global: itself and everyone whose chain ends at it, found by
    walking the mappings backwards level by level.
    """
    if user_id in graph.globals_of([user_id]):
        return [user_id]
    members = [user_id]
    seen = {user_id}
    frontier = [user_id]
    while frontier:
        found = graph.mapped_into(frontier)
        frontier = []
        for global_user_id in sorted(found):
            for user in found[global_user_id]:
                if user not in seen:
                    seen.add(user)
                    members.append(user)
                    frontier.append(user)
    return members
