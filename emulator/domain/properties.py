"""User properties: what an event's or an identification's `user_properties` does to a user.

Amplitude's Identify API docs: `user_properties` is either plain properties (set each one) or an
object of operations only (`$set`, `$setOnce`, `$add`, `$append`, `$prepend`, `$unset`,
`$clearAll`, `$preInsert`, `$postInsert`, `$remove`); the two forms cannot be mixed. Updates
apply to the one user (or device) named; nothing here knows about mappings, so properties are
never merged across mapped users.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CLEAR_ALL = "$clearAll"
# The order operations of one update apply in: Amplitude's SDKs send each property under one
# operation only, and list them in this order (clear first, list edits last).
OPERATIONS: tuple[str, ...] = (
    CLEAR_ALL,
    "$unset",
    "$set",
    "$setOnce",
    "$add",
    "$append",
    "$prepend",
    "$preInsert",
    "$postInsert",
    "$remove",
)

Properties = dict[str, Any]


class InvalidProperties(ValueError):
    """`user_properties` breaks a rule; the message says which."""


@dataclass(frozen=True, slots=True)
class PropertyUpdate:
    """A parsed `user_properties`: `$clearAll` first, then each operation's properties in order."""

    clear_all: bool
    operations: tuple[tuple[str, Mapping[str, Any]], ...]


def parse_update(value: object) -> PropertyUpdate | None:
    """The update `user_properties` describes; None when it changes nothing (absent or {})."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidProperties("user_properties must be a JSON object")
    if not value:
        return None
    operation_keys = [key for key in value if key in OPERATIONS]
    if not operation_keys:
        # Plain properties are a $set of each one.
        return PropertyUpdate(clear_all=False, operations=(("$set", value),))
    if len(operation_keys) != len(value):
        plain = sorted(key for key in value if key not in OPERATIONS)
        raise InvalidProperties(
            f"user_properties mixes operations with plain properties ({', '.join(plain)}); "
            "put plain properties inside $set"
        )
    operations: list[tuple[str, Mapping[str, Any]]] = []
    for operation in OPERATIONS[1:]:
        if operation not in value:
            continue
        arguments = value[operation]
        if not isinstance(arguments, dict):
            raise InvalidProperties(f"{operation} must map property names to values")
        if operation == "$add":
            for name, amount in arguments.items():
                if not _is_number(amount):
                    raise InvalidProperties(f"$add of {name!r} must be a number")
        operations.append((operation, arguments))
    return PropertyUpdate(clear_all=CLEAR_ALL in value, operations=tuple(operations))


def apply_update(properties: Mapping[str, Any], update: PropertyUpdate) -> Properties:
    """`properties` after `update`, as a new dict (the input is not changed)."""
    result: Properties = {} if update.clear_all else copy.deepcopy(dict(properties))
    for operation, arguments in update.operations:
        for name, argument in arguments.items():
            _apply(result, operation, name, copy.deepcopy(argument))
    return result


def _apply(properties: Properties, operation: str, name: str, argument: Any) -> None:
    current = properties.get(name)
    if operation == "$set":
        properties[name] = argument
    elif operation == "$setOnce":
        properties.setdefault(name, argument)
    elif operation == "$unset":
        properties.pop(name, None)
    elif operation == "$add":
        # A missing or non-numeric property counts as 0; a sum too large for a float (which
        # JSON could not carry) leaves the property as it was.
        total = (current if _is_number(current) else 0) + argument
        if not isinstance(total, float) or math.isfinite(total):
            properties[name] = total
    elif operation in ("$append", "$prepend", "$preInsert", "$postInsert", "$remove"):
        properties[name] = _edit_list(_as_list(current, name in properties), operation, argument)


def _edit_list(items: list[Any], operation: str, argument: Any) -> list[Any]:
    values = argument if isinstance(argument, list) else [argument]
    if operation == "$append":
        return items + values
    if operation == "$prepend":
        return values + items
    if operation == "$remove":
        return [item for item in items if item not in values]
    # $preInsert / $postInsert: only the values not in the list yet, each once, in order.
    fresh: list[Any] = []
    for value in values:
        if value not in items and value not in fresh:
            fresh.append(value)
    return fresh + items if operation == "$preInsert" else items + fresh


def _as_list(current: Any, present: bool) -> list[Any]:
    # A scalar property becomes the first item of the list an operation makes of it.
    if not present:
        return []
    return list(current) if isinstance(current, list) else [current]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
