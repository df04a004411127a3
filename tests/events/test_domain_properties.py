"""emulator/domain/properties.py: user property operations, pure."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.domain.properties import InvalidProperties, apply_update, parse_update


def applied(current: dict[str, Any], user_properties: object) -> dict[str, Any]:
    update = parse_update(user_properties)
    assert update is not None
    return apply_update(current, update)


def test_nothing_to_update() -> None:
    assert parse_update(None) is None
    assert parse_update({}) is None


def test_plain_properties_are_set() -> None:
    assert applied({"a": 1, "b": 2}, {"b": 3, "c": [1]}) == {"a": 1, "b": 3, "c": [1]}


@pytest.mark.parametrize(
    ("current", "operations", "expected"),
    [
        ({}, {"$set": {"a": 1}}, {"a": 1}),
        ({"a": 1}, {"$setOnce": {"a": 2, "b": 3}}, {"a": 1, "b": 3}),
        ({"a": 1}, {"$add": {"a": 2.5, "b": -1}}, {"a": 3.5, "b": -1}),
        ({"a": "x"}, {"$add": {"a": 2}}, {"a": 2}),
        ({"a": 1e308}, {"$add": {"a": 1e308}}, {"a": 1e308}),
        ({"l": [1]}, {"$append": {"l": [2, 3], "m": 1}}, {"l": [1, 2, 3], "m": [1]}),
        ({"l": 1}, {"$prepend": {"l": 0}}, {"l": [0, 1]}),
        ({"l": [1, 2]}, {"$preInsert": {"l": [2, 0, 0]}}, {"l": [0, 1, 2]}),
        ({"l": [1, 2]}, {"$postInsert": {"l": [2, 3]}}, {"l": [1, 2, 3]}),
        ({"l": [1, 2, 1]}, {"$remove": {"l": 1}}, {"l": [2]}),
        ({"a": 1, "b": 2}, {"$unset": {"a": "-"}}, {"b": 2}),
        ({"a": 1}, {"$clearAll": "-", "$set": {"b": 2}}, {"b": 2}),
        # One update applies $unset before $set, whatever the order of its keys.
        ({"a": 1}, {"$set": {"a": 2}, "$unset": {"a": "-"}}, {"a": 2}),
    ],
)
def test_operations(
    current: dict[str, Any], operations: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert applied(current, operations) == expected


def test_the_input_is_not_changed() -> None:
    current = {"l": [1]}
    applied(current, {"$append": {"l": 2}})
    assert current == {"l": [1]}


@pytest.mark.parametrize(
    "value",
    [
        [1],
        "plan",
        {"$set": {"a": 1}, "plan": "pro"},
        {"$set": "a"},
        {"$add": {"a": "1"}},
        {"$add": {"a": True}},
    ],
)
def test_invalid_updates(value: object) -> None:
    with pytest.raises(InvalidProperties):
        parse_update(value)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=8,
)


@given(
    st.dictionaries(st.text(max_size=3), JSON, max_size=4),
    st.dictionaries(st.text(max_size=3), JSON, min_size=1, max_size=4),
)
def test_plain_updates_are_dict_updates(current: dict[str, Any], update: dict[str, Any]) -> None:
    if any(key.startswith("$") for key in update):
        return
    assert applied(current, update) == {**current, **update}
