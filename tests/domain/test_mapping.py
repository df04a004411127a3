"""Tests of emulator.domain.mapping: spec sections 3 (validation) and 6 (the rules)."""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from emulator.domain.mapping import (
    InvalidMapping,
    MappingCycle,
    MappingNotJson,
    TooManyMappings,
    decode_mapping,
    named_user_ids,
    parse_mapping,
    plan_batch,
)
from emulator.domain.model import Map, MappingOp, Unmap
from tests.support import reaches

MAX_BATCH = 2000


def parse(document: object, *, max_batch: int = MAX_BATCH) -> list[MappingOp]:
    return parse_mapping(json.dumps(document), max_batch=max_batch)


def refusal(document: object, *, max_batch: int = MAX_BATCH) -> InvalidMapping:
    with pytest.raises(InvalidMapping) as caught:
        parse(document, max_batch=max_batch)
    assert type(caught.value) is InvalidMapping
    return caught.value


# --- parse_mapping: accepted shapes -------------------------------------------------------------


def test_single_object_is_a_batch_of_one() -> None:
    assert parse({"user_id": "u", "global_user_id": "g"}) == [Map("u", "g")]


def test_array_keeps_batch_order() -> None:
    ops = parse(
        [
            {"user_id": "u1", "global_user_id": "g1"},
            {"user_id": "u2", "unmap": True},
            {"user_id": "u3", "global_user_id": "g3"},
        ]
    )
    assert ops == [Map("u1", "g1"), Unmap("u2"), Map("u3", "g3")]


@pytest.mark.parametrize("unmap", [False, None])
def test_unmap_false_or_null_is_an_ordinary_map(unmap: bool | None) -> None:
    assert parse([{"user_id": "u", "global_user_id": "g", "unmap": unmap}]) == [Map("u", "g")]


def test_unmap_true_with_null_global_is_an_unmap() -> None:
    # A null id counts as missing, so the object does not carry a global_user_id.
    assert parse([{"user_id": "u", "unmap": True, "global_user_id": None}]) == [Unmap("u")]


def test_extra_keys_of_real_clients_are_ignored() -> None:
    document = [
        {
            "user_id": "prev",
            "global_user_id": "user",
            "user_properties": {"plan": "pro"},
            "event_id": 7,
            "min_id_length": 5,
        },
        {"user_id": "x", "unmap": True, "user_properties": {}},
    ]
    assert parse(document) == [Map("prev", "user"), Unmap("x")]


def test_self_map_parses_as_a_map() -> None:
    assert parse([{"user_id": "same", "global_user_id": "same"}]) == [Map("same", "same")]


def test_ids_are_any_non_empty_strings() -> None:
    ids = [" ", "ü-ñ", "a,b", "[1]", "x" * 1000, "0", "null", "😀"]
    ops = parse([{"user_id": value, "global_user_id": value + "!"} for value in ids])
    assert ops == [Map(value, value + "!") for value in ids]


def test_exactly_max_batch_objects_is_allowed() -> None:
    document = [{"user_id": f"u{i}", "global_user_id": "g"} for i in range(5)]
    assert len(parse(document, max_batch=5)) == 5


# --- parse_mapping: refusals --------------------------------------------------------------------


@pytest.mark.parametrize("document", [3, "text", None, True, 1.5, "[]"])
def test_not_an_object_or_array_has_no_index(document: object) -> None:
    error = refusal(document)
    assert error.index is None
    assert error.missing_field is None


def test_empty_array_has_no_index() -> None:
    error = refusal([])
    assert error.index is None
    assert error.missing_field is None


@pytest.mark.parametrize("element", [1, "u", None, True, [], [{"user_id": "u"}]])
def test_element_that_is_not_an_object(element: object) -> None:
    error = refusal([{"user_id": "a", "global_user_id": "b"}, element])
    assert error.index == 1
    assert error.missing_field is None


@pytest.mark.parametrize(
    ("obj", "missing"),
    [
        ({"global_user_id": "g"}, "user_id"),
        ({"user_id": None, "global_user_id": "g"}, "user_id"),
        ({"unmap": True}, "user_id"),
        ({"user_id": None, "unmap": True}, "user_id"),
        ({"user_id": "u"}, "global_user_id"),
        ({"user_id": "u", "global_user_id": None}, "global_user_id"),
        ({"user_id": "u", "unmap": False}, "global_user_id"),
        ({"user_id": "u", "unmap": None}, "global_user_id"),
        ({}, "user_id"),
    ],
)
def test_missing_or_null_field_is_named(obj: dict[str, object], missing: str) -> None:
    error = refusal(obj)
    assert error.index == 0
    assert error.missing_field == missing


@pytest.mark.parametrize("bad_id", ["", 0, 5, 1.5, True, False, [], ["u"], {}, {"id": "u"}])
@pytest.mark.parametrize("field", ["user_id", "global_user_id"])
def test_id_that_is_not_a_non_empty_string(bad_id: object, field: str) -> None:
    obj: dict[str, object] = {"user_id": "u", "global_user_id": "g", field: bad_id}
    error = refusal([{"user_id": "ok", "global_user_id": "fine"}, obj])
    assert error.index == 1
    assert error.missing_field is None  # present and not null: not "missing"


def test_bad_user_id_of_an_unmap_object() -> None:
    error = refusal([{"user_id": "", "unmap": True}])
    assert error.index == 0
    assert error.missing_field is None


@pytest.mark.parametrize("global_id", ["g", "", 0, [], {}])
def test_unmap_true_must_not_carry_global_user_id(global_id: object) -> None:
    error = refusal([{"user_id": "u", "unmap": True, "global_user_id": global_id}])
    assert error.index == 0
    assert error.missing_field is None


@pytest.mark.parametrize("unmap", ["true", "false", 1, 0, 1.0, [], {}, [True]])
def test_unmap_must_be_boolean_or_null(unmap: object) -> None:
    error = refusal(
        [
            {"user_id": "a", "global_user_id": "b"},
            {"user_id": "a", "unmap": True},
            {"user_id": "u", "global_user_id": "g", "unmap": unmap},
        ]
    )
    assert error.index == 2
    assert error.missing_field is None


def test_first_bad_object_is_named() -> None:
    error = refusal(
        [
            {"user_id": "a", "global_user_id": "b"},
            {"user_id": "a", "global_user_id": ""},
            {"global_user_id": "b"},
            "junk",
        ]
    )
    assert error.index == 1
    assert error.missing_field is None


def test_missing_field_of_a_later_object() -> None:
    error = refusal([{"user_id": "a", "global_user_id": "b"}] * 3 + [{"user_id": "c"}])
    assert error.index == 3
    assert error.missing_field == "global_user_id"


def test_lone_surrogate_id_is_an_invalid_mapping_not_a_crash() -> None:
    # "\ud800" is JSON-escaped text no UTF-8 store can hold: refused as a bad object.
    text = '[{"user_id":"a","global_user_id":"b"},{"user_id":"\\ud800","global_user_id":"g"}]'
    with pytest.raises(InvalidMapping) as caught:
        parse_mapping(text, max_batch=MAX_BATCH)
    assert caught.value.index == 1


def test_over_max_batch_is_too_many() -> None:
    document = [{"user_id": f"u{i}", "global_user_id": "g"} for i in range(6)]
    with pytest.raises(TooManyMappings) as caught:
        parse(document, max_batch=5)
    assert (caught.value.count, caught.value.limit) == (6, 5)


def test_count_is_checked_before_any_object() -> None:
    # Spec section 3: the count (413) comes before each object's shape.
    document: list[object] = ["junk"] * 2001
    with pytest.raises(TooManyMappings) as caught:
        parse(document)
    assert caught.value.count == 2001


def test_default_limit_2000_objects() -> None:
    ok = [{"user_id": f"u{i}", "global_user_id": f"g{i}"} for i in range(2000)]
    assert len(parse(ok)) == 2000
    with pytest.raises(TooManyMappings):
        parse([*ok, {"user_id": "x", "global_user_id": "y"}])


# --- decode_mapping -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "[NaN]",
        '{"user_id": "u", "global_user_id": "g", "x": NaN}',
        '[{"user_id": "u", "global_user_id": "g", "x": Infinity}]',
        '[{"user_id": "u", "global_user_id": "g", "x": -Infinity}]',
    ],
)
def test_nan_and_infinity_are_not_json(text: str) -> None:
    with pytest.raises(MappingNotJson):
        decode_mapping(text)
    with pytest.raises(MappingNotJson):
        parse_mapping(text, max_batch=MAX_BATCH)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "{",
        "[",
        "[{]",
        "{'user_id': 'u'}",
        '[{"user_id":"u","global_user_id":"g"},]',
        '{"user_id":"u","global_user_id":"g"} x',
        '{"user_id":"u","global_user_id":"g"}{}',
        "user_id=u",
        "undefined",
        "[1, 2",
    ],
)
def test_broken_json(text: str) -> None:
    with pytest.raises(MappingNotJson) as caught:
        parse_mapping(text, max_batch=MAX_BATCH)
    assert caught.value.reason


@pytest.mark.parametrize(
    "text",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        '[{"user_id":"u","global_user_id":"g","x":' + "[" * 100_000 + "]" * 100_000 + "}]",
    ],
    ids=["arrays", "objects", "inside-an-object"],
)
def test_deep_nesting_is_not_json_not_a_crash(text: str) -> None:
    with pytest.raises(MappingNotJson) as caught:
        decode_mapping(text)
    assert caught.value.reason
    with pytest.raises(MappingNotJson):
        parse_mapping(text, max_batch=MAX_BATCH)


@pytest.mark.parametrize(
    "text",
    [
        "1" * 10_000,
        "-" + "9" * 10_000,
        '[{"user_id":"u","global_user_id":"g","n":' + "7" * 10_000 + "}]",
    ],
    ids=["bare", "negative", "inside-an-object"],
)
def test_ten_thousand_digit_number_is_not_json_not_a_crash(text: str) -> None:
    with pytest.raises(MappingNotJson):
        decode_mapping(text)
    with pytest.raises(MappingNotJson):
        parse_mapping(text, max_batch=MAX_BATCH)


def test_moderate_nesting_and_numbers_are_json() -> None:
    text = '[{"user_id":"u","global_user_id":"g","x":' + "[" * 500 + "]" * 500 + ',"n":1e5}]'
    assert parse_mapping(text, max_batch=MAX_BATCH) == [Map("u", "g")]
    assert decode_mapping("9" * 100) == int("9" * 100)


# --- plan_batch against a dict-backed graph ---------------------------------------------------


class DictGraph:
    """A MappingGraph over a plain dict; records what it was asked."""

    def __init__(self, edges: Mapping[str, str] | None = None) -> None:
        self.edges: dict[str, str] = dict(edges or {})
        self.asked: list[set[str]] = []

    def globals_of(self, user_ids: Collection[str]) -> Mapping[str, str]:
        self.asked.append(set(user_ids))
        return {user: self.edges[user] for user in user_ids if user in self.edges}


def applied(edges: Mapping[str, str], changes: Mapping[str, str | None]) -> dict[str, str]:
    result = dict(edges)
    for user, new in changes.items():
        if new is None:
            result.pop(user, None)
        else:
            result[user] = new
    return result


def test_plan_new_mapping() -> None:
    graph = DictGraph()
    plan = plan_batch([Map("u", "g")], graph)
    assert plan.mapping_changes == {"u": "g"}
    assert plan.named_user_ids == ["u", "g"]
    assert plan.object_count == 1
    assert graph.edges == {}  # planning writes nothing


def test_plan_remap_replaces() -> None:
    plan = plan_batch([Map("u", "g2")], DictGraph({"u": "g1"}))
    assert plan.mapping_changes == {"u": "g2"}


def test_plan_self_map_keeps_existing_mapping() -> None:
    plan = plan_batch([Map("u", "u")], DictGraph({"u": "g"}))
    assert plan.mapping_changes == {}
    assert plan.named_user_ids == ["u"]
    assert plan.object_count == 1


def test_plan_unmap() -> None:
    plan = plan_batch([Unmap("u")], DictGraph({"u": "g", "v": "g"}))
    assert plan.mapping_changes == {"u": None}
    assert plan.named_user_ids == ["u"]


def test_plan_unmap_of_unmapped_changes_nothing_but_counts() -> None:
    plan = plan_batch([Unmap("u"), Unmap("u")], DictGraph({"v": "g"}))
    assert plan.mapping_changes == {}
    assert plan.named_user_ids == ["u"]
    assert plan.object_count == 2


def test_plan_later_object_wins() -> None:
    plan = plan_batch([Map("u", "g1"), Map("u", "g2"), Map("u", "g3")], DictGraph())
    assert plan.mapping_changes == {"u": "g3"}
    assert plan.named_user_ids == ["u", "g1", "g2", "g3"]


def test_plan_map_then_unmap_in_one_batch_is_no_net_change() -> None:
    plan = plan_batch([Map("u", "g"), Unmap("u")], DictGraph())
    assert plan.mapping_changes == {}
    assert plan.named_user_ids == ["u", "g"]


def test_plan_unmap_then_map_back_is_no_net_change() -> None:
    plan = plan_batch([Unmap("u"), Map("u", "g")], DictGraph({"u": "g"}))
    assert plan.mapping_changes == {}


def test_plan_chain_is_allowed() -> None:
    plan = plan_batch([Map("user3", "user1"), Map("user1", "user2")], DictGraph())
    assert plan.mapping_changes == {"user3": "user1", "user1": "user2"}
    assert plan.named_user_ids == ["user3", "user1", "user2"]


def test_plan_direct_cycle_is_refused() -> None:
    graph = DictGraph({"a": "b"})
    with pytest.raises(MappingCycle) as caught:
        plan_batch([Map("c", "d"), Map("b", "a")], graph)
    assert caught.value.index == 1
    assert caught.value.missing_field is None
    assert isinstance(caught.value, InvalidMapping)
    assert graph.edges == {"a": "b"}


def test_plan_cycle_through_ids_the_batch_does_not_name() -> None:
    # b -> c -> a is committed; a -> b closes it, though c is not in the batch.
    graph = DictGraph({"b": "c", "c": "a"})
    with pytest.raises(MappingCycle) as caught:
        plan_batch([Map("a", "b")], graph)
    assert caught.value.index == 0
    assert any("c" in asked for asked in graph.asked)


def test_plan_cycle_inside_one_batch() -> None:
    with pytest.raises(MappingCycle) as caught:
        plan_batch([Map("a", "b"), Map("b", "c"), Map("x", "y"), Map("c", "a")], DictGraph())
    assert caught.value.index == 3


def test_plan_cycle_broken_earlier_in_the_batch_is_allowed() -> None:
    plan = plan_batch([Unmap("a"), Map("b", "a")], DictGraph({"a": "b"}))
    assert plan.mapping_changes == {"a": None, "b": "a"}


def test_plan_remap_away_then_reverse_is_allowed() -> None:
    plan = plan_batch([Map("a", "c"), Map("b", "a")], DictGraph({"a": "b"}))
    assert plan.mapping_changes == {"a": "c", "b": "a"}


def test_plan_remap_to_own_descendant_is_a_cycle() -> None:
    # a -> b -> c; mapping c -> a closes the loop even though c is currently a global.
    with pytest.raises(MappingCycle) as caught:
        plan_batch([Map("c", "a")], DictGraph({"a": "b", "b": "c"}))
    assert caught.value.index == 0


def test_plan_self_map_is_never_a_cycle() -> None:
    plan = plan_batch([Map("a", "a"), Map("b", "b")], DictGraph({"a": "b"}))
    assert plan.mapping_changes == {}


def test_named_user_ids_order() -> None:
    ops: list[MappingOp] = [Map("b", "a"), Unmap("c"), Map("a", "d"), Map("e", "e"), Unmap("b")]
    assert named_user_ids(ops) == ["b", "a", "c", "d", "e"]


# --- property: parse_mapping refuses only in its documented ways ------------------------------

_FIELD_NAMES = st.sampled_from(["user_id", "global_user_id", "unmap", "user_properties", "x"])
_SMALL_TEXT = st.text(max_size=3)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities too: json.dumps writes them as NaN / Infinity
    | _SMALL_TEXT
    | st.sampled_from(["a", "b", ""])
)
JSON_VALUES = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(_FIELD_NAMES | _SMALL_TEXT, children, max_size=5)
    ),
    max_leaves=30,
)
# Objects that are often valid, so accepted batches are common too.
_ID_LIKE = st.integers(0, 5).flatmap(lambda n: _SCALARS if n == 0 else st.sampled_from(["a", "b"]))
MAPPING_OBJECTS = st.fixed_dictionaries(
    {"user_id": _ID_LIKE},
    optional={
        "global_user_id": _ID_LIKE,
        "unmap": st.integers(0, 3).flatmap(lambda n: _SCALARS if n == 0 else st.booleans()),
        "user_properties": JSON_VALUES,
    },
)
DOCUMENTS = (
    JSON_VALUES
    | MAPPING_OBJECTS
    | st.lists(
        st.integers(0, 9).flatmap(lambda n: JSON_VALUES if n == 0 else MAPPING_OBJECTS),
        max_size=8,
    )
)


def _has_non_finite(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_has_non_finite(item) for item in value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    return False


def outcome(text: str, max_batch: int) -> list[MappingOp] | Exception:
    """What parse_mapping does with `text`: its ops, or the documented refusal it raised."""
    try:
        return parse_mapping(text, max_batch=max_batch)
    except (MappingNotJson, InvalidMapping, TooManyMappings) as error:
        return error


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(document=DOCUMENTS, max_batch=st.integers(1, 10))
def test_parse_mapping_of_any_json_refuses_only_as_documented(
    document: object, max_batch: int
) -> None:
    # Anything else (TypeError, KeyError, RecursionError...) propagates and fails the test.
    result = outcome(json.dumps(document), max_batch)
    objects = document if isinstance(document, list) else [document]
    if isinstance(result, Exception):
        assert type(result) in (MappingNotJson, InvalidMapping, TooManyMappings)
        event(type(result).__name__)
        if isinstance(result, MappingNotJson):
            assert _has_non_finite(document)
        elif isinstance(result, InvalidMapping):
            assert not _has_non_finite(document)
            assert result.index is None or 0 <= result.index < len(objects)
            assert result.missing_field in (None, "user_id", "global_user_id")
        else:
            assert isinstance(document, list)
            assert len(document) > max_batch
        return
    event("accepted")
    assert not _has_non_finite(document)
    assert isinstance(document, (dict, list))
    assert 1 <= len(result) == len(objects) <= max_batch
    for op, obj in zip(result, objects, strict=True):
        assert isinstance(obj, dict)
        assert op.user_id == obj["user_id"]
        if isinstance(op, Map):
            assert obj.get("unmap") in (None, False)
            assert op.global_user_id == obj["global_user_id"]
        else:
            assert obj["unmap"] is True
            assert obj.get("global_user_id") is None


@given(text=st.text(max_size=40) | st.binary(max_size=40).map(lambda b: b.decode("latin-1")))
def test_parse_mapping_of_any_text_refuses_only_as_documented(text: str) -> None:
    result = outcome(text, 3)
    if isinstance(result, Exception):
        assert type(result) in (MappingNotJson, InvalidMapping, TooManyMappings)


# --- property: plan_batch agrees with a reference model of spec section 6 ---------------------

IDS = st.sampled_from(["a", "b", "c", "d", "e"])
OPS: st.SearchStrategy[MappingOp] = st.one_of(
    st.builds(Map, IDS, IDS), st.builds(Map, IDS, IDS), st.builds(Unmap, IDS)
)


def reference_apply(edges: Mapping[str, str], ops: Sequence[MappingOp]) -> dict[str, str] | int:
    """The final graph, or the index of the first object that would close a cycle."""
    graph = dict(edges)
    for index, op in enumerate(ops):
        if isinstance(op, Unmap):
            graph.pop(op.user_id, None)
        elif op.user_id == op.global_user_id:
            continue
        elif reaches(graph, op.global_user_id, op.user_id):
            return index
        else:
            graph[op.user_id] = op.global_user_id
    return graph


def reference_names(ops: Sequence[MappingOp]) -> list[str]:
    names: list[str] = []
    for op in ops:
        ids = [op.user_id] + ([op.global_user_id] if isinstance(op, Map) else [])
        names.extend(user for user in ids if user not in names)
    return names


@st.composite
def committed_graphs(draw: st.DrawFn) -> dict[str, str]:
    """An acyclic graph built by applying the accepted objects of a random history."""
    graph: dict[str, str] = {}
    for op in draw(st.lists(OPS, max_size=12)):
        result = reference_apply(graph, [op])
        if isinstance(result, dict):
            graph = result
    return graph


@settings(max_examples=1000)
@given(initial=committed_graphs(), ops=st.lists(OPS, min_size=1, max_size=10))
def test_plan_batch_agrees_with_reference_model(
    initial: dict[str, str], ops: list[MappingOp]
) -> None:
    expected = reference_apply(initial, ops)
    graph = DictGraph(initial)
    if isinstance(expected, int):
        with pytest.raises(MappingCycle) as caught:
            plan_batch(ops, graph)
        assert caught.value.index == expected
    else:
        plan = plan_batch(ops, graph)
        assert applied(initial, plan.mapping_changes) == expected
        # Only real changes are listed: each changed user's final global differs from before.
        assert set(plan.mapping_changes) == {
            user
            for user in initial.keys() | expected.keys()
            if initial.get(user) != expected.get(user)
        }
        assert plan.named_user_ids == reference_names(ops)
        assert plan.object_count == len(ops)
    assert graph.edges == initial


def test_refusal_carries_the_valid_objects_before_the_bad_one() -> None:
    # The wire layer checks those for a cycle: an earlier cycle is the first failure.
    error = refusal(
        [
            {"user_id": "a", "global_user_id": "b"},
            {"user_id": "c", "unmap": True},
            {"user_id": "d"},
            {"user_id": "e", "global_user_id": "f"},
        ]
    )
    assert error.index == 2
    assert error.ops_before == [Map("a", "b"), Unmap("c")]
    assert refusal([7]).ops_before == []
