"""What accepting valid events or identifications does, against an open transaction (a ledger).

In order: drop events whose insert_id was accepted for the same device (or, without a device,
the same user) of the project in the last 7 days, or earlier in the same request; give every
user and device-only profile its amplitude id (allocated in order of first appearance); store
the events (identify events only update properties); apply user property updates in order.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Literal, Protocol

from emulator.domain.activity import StoredEvent
from emulator.domain.events import INSERT_ID_WINDOW_MS, Event, Identification
from emulator.domain.properties import PropertyUpdate, apply_update

Kind = Literal["user", "device"]
Named = tuple[Kind, str]  # a user id, or the device id of a device-only profile
InsertKey = tuple[str, str]  # ("device:<id>" or "user:<id>", insert_id)


class EventLedger(Protocol):
    """One org's event data inside a transaction (storage/events.py EventTransaction)."""

    def amplitude_ids(self, named: Sequence[Named], base: int) -> dict[Named, int]: ...

    def seen_insert_ids(
        self, project: str, keys: Collection[InsertKey], since_ms: int
    ) -> set[InsertKey]: ...

    def remember_insert_ids(
        self, project: str, keys: Collection[InsertKey], now_ms: int
    ) -> None: ...

    def add_events(self, project: str, rows: Sequence[StoredEvent]) -> None: ...

    def properties(self, ids: Collection[int]) -> dict[int, dict[str, Any]]: ...

    def save_properties(self, changed: dict[int, dict[str, Any]]) -> None: ...


def profile_of(user_id: str | None, device_id: str | None) -> Named:
    """Whose event or identification it is: the user's, else the device-only profile's."""
    if user_id is not None:
        return ("user", user_id)
    assert device_id is not None, "validation requires user_id or device_id"
    return ("device", device_id)


def insert_key(event: Event) -> InsertKey | None:
    """The de-duplication key: "the same insert_id on the same device_id (if the event has a
    device_id value)", else on the same user_id. An acceptance counts for 7 days: during
    [t, t + 7 days), the same window shape as the rate limits'."""
    if event.insert_id is None:
        return None
    scope = f"device:{event.device_id}" if event.device_id else f"user:{event.user_id}"
    return (scope, event.insert_id)


def ingest(
    ledger: EventLedger,
    project: str,
    events: Sequence[Event],
    *,
    now_ms: int,
    amplitude_id_base: int,
) -> list[Event]:
    """Apply a valid request's events; returns those accepted (duplicates left out)."""
    keys = [key for event in events if (key := insert_key(event)) is not None]
    seen = ledger.seen_insert_ids(project, keys, now_ms - INSERT_ID_WINDOW_MS) if keys else set()
    accepted: list[Event] = []
    for event in events:
        key = insert_key(event)
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        accepted.append(event)
    ids = ledger.amplitude_ids(
        [profile_of(event.user_id, event.device_id) for event in accepted], amplitude_id_base
    )
    ledger.add_events(
        project,
        [
            StoredEvent(
                seq=0,  # the store numbers them
                amplitude_id=ids[profile_of(event.user_id, event.device_id)],
                user_id=event.user_id,
                device_id=event.device_id,
                event_type=event.event_type,
                time=now_ms if event.time is None else event.time,
                server_upload_time=now_ms,
                insert_id=event.insert_id,
                event_properties=event.event_properties,
                user_properties=event.user_properties,
                fields=event.fields,
            )
            for event in accepted
            if not event.is_identify
        ],
    )
    _update_properties(
        ledger,
        [
            (ids[profile_of(event.user_id, event.device_id)], event.update)
            for event in accepted
            if event.update is not None
        ],
    )
    remembered = [key for event in accepted if (key := insert_key(event)) is not None]
    if remembered:
        ledger.remember_insert_ids(project, remembered, now_ms)
    return accepted


def identify(
    ledger: EventLedger, identifications: Sequence[Identification], *, amplitude_id_base: int
) -> None:
    """Apply the Identify API's identifications: each updates its own user's properties."""
    ids = ledger.amplitude_ids(
        [profile_of(item.user_id, item.device_id) for item in identifications], amplitude_id_base
    )
    _update_properties(
        ledger,
        [
            (ids[profile_of(item.user_id, item.device_id)], item.update)
            for item in identifications
            if item.update is not None
        ],
    )


def _update_properties(
    ledger: EventLedger, updates: Sequence[tuple[int, PropertyUpdate | None]]
) -> None:
    if not updates:
        return
    current = ledger.properties({amplitude_id for amplitude_id, _ in updates})
    changed: dict[int, dict[str, Any]] = {}
    for amplitude_id, update in updates:
        if update is None:
            continue
        before = changed.get(amplitude_id, current.get(amplitude_id, {}))
        changed[amplitude_id] = apply_update(before, update)
    ledger.save_properties(changed)
