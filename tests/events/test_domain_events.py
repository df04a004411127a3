"""emulator/domain/events.py: which requests and events are valid, pure."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.domain.events import (
    DEFAULT_MIN_ID_LENGTH,
    InvalidEventJson,
    InvalidEvents,
    InvalidOptions,
    MissingRequestField,
    NotJson,
    TooManyEvents,
    UploadRefused,
    api_key_of,
    decode_upload,
    min_id_length_of,
    parse_events,
    parse_identifications,
)


def events_of(*events: object, **document: Any) -> dict[str, Any]:
    return {"api_key": "k", "events": list(events), **document}


def problems(*events: object, **document: Any) -> InvalidEvents:
    with pytest.raises(InvalidEvents) as caught:
        parse_events(events_of(*events, **document), max_events=None)
    return caught.value


def test_a_valid_event_keeps_what_was_sent() -> None:
    (event,) = parse_events(
        events_of(
            {
                "user_id": "user-1",
                "event_type": "$identify",
                "time": 5,
                "insert_id": "i",
                "user_properties": {"$set": {"a": 1}},
                "platform": "Web",
                "session_id": 3,
                "groups": {"team": "x"},
                "unknown": 1,
            }
        ),
        max_events=1,
    )
    assert (event.user_id, event.device_id, event.time, event.insert_id) == ("user-1", None, 5, "i")
    assert event.is_identify
    assert event.update is not None
    assert event.fields == {"platform": "Web", "session_id": 3, "groups": {"team": "x"}}


@pytest.mark.parametrize(
    ("body", "refusal"),
    [
        (b"", NotJson),
        (b"{", NotJson),
        (b"[1]", NotJson),
        (b'{"a": Infinity}', NotJson),
        (b"\xff", NotJson),
        (b"[" * 50_000 + b"]" * 50_000, NotJson),
    ],
)
def test_bodies(body: bytes, refusal: type[UploadRefused]) -> None:
    with pytest.raises(refusal):
        decode_upload(body)


def test_api_keys() -> None:
    assert api_key_of({"api_key": "k"}) == "k"
    for value in (None, "", 3, "\ud800"):
        assert api_key_of({"api_key": value}) is None


def test_options() -> None:
    assert min_id_length_of({}) == DEFAULT_MIN_ID_LENGTH
    assert min_id_length_of({"options": {"min_id_length": 1}}) == 1
    assert min_id_length_of({"options": {}}) == DEFAULT_MIN_ID_LENGTH
    options: object
    for options in ("x", [], {"min_id_length": 0}, {"min_id_length": True}):
        with pytest.raises(InvalidOptions):
            min_id_length_of({"options": options})


def test_request_level_refusals() -> None:
    with pytest.raises(MissingRequestField):
        parse_events({"api_key": "k"}, max_events=None)
    with pytest.raises(MissingRequestField):
        parse_events(events_of(), max_events=None)
    with pytest.raises(InvalidEventJson):
        parse_events({"events": {"event_type": "x"}}, max_events=None)
    with pytest.raises(InvalidEventJson):
        parse_events(events_of({"event_type": "x", "user_id": "user-1"}, "x"), max_events=None)
    with pytest.raises(TooManyEvents):
        parse_events(events_of(*[{"event_type": "x", "user_id": "user-1"}] * 3), max_events=2)


def test_every_defect_is_collected() -> None:
    found = problems(
        {"user_id": "abc"},
        {"event_type": "x"},
        {"event_type": "x", "device_id": "unknown", "time": "t"},
        {"event_type": "x", "user_id": "user-1"},
    )
    assert found.missing == {"event_type": [0], "user_id": [1], "device_id": [1]}
    assert found.invalid == {"device_id": [2], "time": [2]}
    assert found.id_lengths == {"user_id": [0]}
    assert found.error == "Request missing required field"
    assert len(found.reasons) == 6


def test_error_texts_by_kind() -> None:
    assert problems({"event_type": 1, "user_id": "user-1"}).error == (
        "Invalid field values on some events"
    )
    assert problems({"event_type": "x", "user_id": "a"}).error == (
        "Invalid id length for user_id or device_id"
    )


def test_min_id_length_option() -> None:
    assert parse_events(
        events_of({"event_type": "x", "user_id": "ab"}, options={"min_id_length": 2}),
        max_events=None,
    )


def test_identifications() -> None:
    (only,) = parse_identifications(
        '{"user_id": "user-1", "user_properties": {"a": 1}}', max_count=1
    )
    assert (only.user_id, only.update is not None) == ("user-1", True)
    for text in ("", "{", "[]", "1", '["x"]'):
        with pytest.raises(NotJson):
            parse_identifications(text, max_count=None)
    with pytest.raises(TooManyEvents):
        parse_identifications('[{"user_id": "user-1"}, {"user_id": "user-2"}]', max_count=1)
    with pytest.raises(InvalidEvents):
        parse_identifications('{"user_properties": {}}', max_count=None)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(
                [
                    "event_type",
                    "user_id",
                    "device_id",
                    "time",
                    "insert_id",
                    "event_properties",
                    "user_properties",
                    "session_id",
                    "platform",
                ]
            ),
            JSON_VALUES,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_any_events_are_accepted_or_refused_cleanly(events: list[dict[str, Any]]) -> None:
    refusal: UploadRefused | None = None
    try:
        accepted = parse_events(events_of(*events), max_events=None)
    except UploadRefused as error:
        refusal = error
    if refusal is not None:
        assert refusal.reason
        return
    assert len(accepted) == len(events)
    for event in accepted:
        assert event.user_id or event.device_id
