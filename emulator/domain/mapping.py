"""The `mapping` parameter: which objects are valid, and what an accepted batch does.

Validation follows spec section 3 (shape, then cycle, object by object in batch order); the
semantics follow section 6 (one global per user, chains allowed, cycles refused, self-map and
unmap-of-unmapped are no-ops, later objects win, all or nothing).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Protocol

from emulator.domain.model import BatchPlan, Map, MappingOp, Unmap, is_text


class MappingNotJson(ValueError):
    """`mapping` is not a JSON document."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidMapping(ValueError):
    """`mapping` is JSON but breaks a rule; `index` names the first bad object, if any."""

    def __init__(self, reason: str, *, index: int | None, missing_field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.index = index
        self.missing_field = missing_field
        # The valid objects before the bad one: one of them may close a cycle, which is then
        # the first failure (spec section 3 checks each object in order, shape then cycle).
        self.ops_before: list[MappingOp] = []


class MappingCycle(InvalidMapping):
    """The object at `index` would close a cycle of mappings."""


class TooManyMappings(ValueError):
    """More mapping objects than one request may carry."""

    def __init__(self, count: int, limit: int) -> None:
        super().__init__(f"{count} mapping objects; at most {limit} are allowed per request")
        self.count = count
        self.limit = limit


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def decode_mapping(text: str) -> object:
    """Parse the `mapping` string as strict JSON (no NaN/Infinity)."""
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        raise MappingNotJson("the JSON is nested too deeply to read") from None
    except ValueError as error:  # JSONDecodeError, and int() refusing a huge number
        raise MappingNotJson(str(error)) from None


def parse_mapping(text: str, *, max_batch: int) -> list[MappingOp]:
    """Turn the `mapping` parameter into mapping operations, or raise the first rule it breaks."""
    document = decode_mapping(text)
    if isinstance(document, dict):
        objects: list[object] = [document]
    elif isinstance(document, list):
        if not document:
            raise InvalidMapping("mapping is an empty array", index=None)
        objects = document
    else:
        raise InvalidMapping("mapping must be a JSON object or an array of objects", index=None)
    if len(objects) > max_batch:
        raise TooManyMappings(len(objects), max_batch)
    ops: list[MappingOp] = []
    for index, obj in enumerate(objects):
        try:
            ops.append(_parse_object(index, obj))
        except InvalidMapping as error:
            error.ops_before = ops
            raise
    return ops


def _parse_object(index: int, obj: object) -> MappingOp:
    if not isinstance(obj, dict):
        raise InvalidMapping(f"mapping object {index} is not a JSON object", index=index)
    user_id = _required_id(index, obj, "user_id")
    unmap = obj.get("unmap")
    if unmap is not None and not isinstance(unmap, bool):
        raise InvalidMapping(
            f"mapping object {index}: unmap must be true, false or null", index=index
        )
    if unmap:
        if obj.get("global_user_id") is not None:
            raise InvalidMapping(
                f"mapping object {index}: an unmap object must not carry global_user_id",
                index=index,
            )
        return Unmap(user_id)
    return Map(user_id, _required_id(index, obj, "global_user_id"))


def _required_id(index: int, obj: Mapping[str, object], name: str) -> str:
    value = obj.get(name)
    if value is None:  # absent or null: both count as missing
        raise InvalidMapping(
            f"mapping object {index} has no {name}", index=index, missing_field=name
        )
    if not isinstance(value, str) or not value:
        raise InvalidMapping(
            f"mapping object {index}: {name} must be a non-empty string", index=index
        )
    if not is_text(value):
        raise InvalidMapping(
            f"mapping object {index}: {name} holds an unpaired UTF-16 surrogate escape",
            index=index,
        )
    return value


class MappingGraph(Protocol):
    """Read access to an org's committed mappings."""

    def globals_of(self, user_ids: Collection[str]) -> Mapping[str, str]:
        """The current global of each of `user_ids` that is mapped; unmapped ids are left out."""
        ...


def named_user_ids(ops: Iterable[MappingOp]) -> list[str]:
    """Every id the batch names, first appearance first (`user_id` before `global_user_id`)."""
    named: dict[str, None] = {}
    for op in ops:
        named.setdefault(op.user_id)
        if isinstance(op, Map):
            named.setdefault(op.global_user_id)
    return list(named)


def plan_batch(ops: list[MappingOp], graph: MappingGraph) -> BatchPlan:
    """Apply `ops` in order to a view of `graph` and return the net change.

    Raises MappingCycle for the first object that would close a cycle; nothing is written by this
    function, so a refused batch changes nothing.
    """
    names = named_user_ids(ops)
    committed: dict[str, str | None] = {}

    def load(user_ids: Collection[str]) -> None:
        found = graph.globals_of(user_ids)
        for user_id in user_ids:
            committed[user_id] = found.get(user_id)

    load(names)
    pending: dict[str, str | None] = {}

    def global_of(user_id: str) -> str | None:
        if user_id in pending:
            return pending[user_id]
        if user_id not in committed:
            load([user_id])
        return committed[user_id]

    for index, op in enumerate(ops):
        if isinstance(op, Unmap):
            pending[op.user_id] = None
        elif op.user_id != op.global_user_id:  # a self-map changes nothing
            if _resolves_to(op.global_user_id, op.user_id, global_of):
                raise MappingCycle(
                    f"mapping object {index} would close a cycle: {op.global_user_id!r} "
                    f"already resolves to {op.user_id!r}",
                    index=index,
                )
            pending[op.user_id] = op.global_user_id

    changes = {user: new for user, new in pending.items() if new != committed[user]}
    return BatchPlan(mapping_changes=changes, named_user_ids=names, object_count=len(ops))


def _resolves_to(start: str, target: str, global_of: Callable[[str], str | None]) -> bool:
    """Whether following mappings from `start` reaches `target`."""
    seen: set[str] = set()
    current: str | None = start
    while current is not None and current not in seen:
        if current == target:
            return True
        seen.add(current)
        current = global_of(current)
    return False
