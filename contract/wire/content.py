"""What a batch carries (`BatchContent`), and its events as rows, the same in every version."""

from __future__ import annotations

from dataclasses import dataclass

from contract.records import Event, Reading
from contract.wire.errors import fail

# A decompressed body larger than this is refused, so a small message cannot expand
# into gigabytes (a zip bomb). A full day of 2,000 meters x 4 quantities is ~6 MiB raw.
MAX_BODY_BYTES = 64 * 1024 * 1024
# Bounds the memory the decoder allocates before it has looked at any column.
MAX_READINGS = 1_000_000


@dataclass(frozen=True, slots=True)
class BatchContent:
    """What one batch carries.

    The wire groups readings by series, so `open_batch` returns them in its own order,
    not the order they were sealed in: compare as multisets. Events keep their order.
    ``read_at`` comes back rounded to the millisecond, the precision the store keeps.
    """

    readings: tuple[Reading, ...] = ()
    events: tuple[Event, ...] = ()


def encode_events(events: tuple[Event, ...]) -> list[list[object]]:
    return [[e.kind, e.severity, e.meter, e.detail, e.at] for e in events]


def decode_events(rows: object) -> tuple[Event, ...]:
    if not isinstance(rows, list):
        fail("bad_layout", "events: expected an array")
    events = []
    for i, row in enumerate(rows):
        if not (
            isinstance(row, list)
            and len(row) == 5
            and isinstance(row[0], str)
            and isinstance(row[1], str)
            and (row[2] is None or isinstance(row[2], str))
            and isinstance(row[3], dict)
            and type(row[4]) in (int, float)
        ):
            fail("bad_layout", f"event {i}: expected [kind, severity, meter|null, {{...}}, at]")
        _check_detail(row[3], f"event {i} detail", 0)
        events.append(Event(kind=row[0], severity=row[1], meter=row[2], detail=row[3], at=row[4]))
    return tuple(events)


def _check_detail(value: object, what: str, depth: int) -> None:
    # The store keeps details as JSON, so only JSON's types may arrive. The depth bound
    # also stops a self-referencing structure (CBOR shared references) from looping.
    if depth > 32:
        fail("bad_layout", f"{what}: nested deeper than 32 levels")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                fail("bad_layout", f"{what}: key {k!r} is not text")
            _check_detail(v, what, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_detail(v, what, depth + 1)
    elif value is not None and not isinstance(value, str | int | float):
        fail("bad_layout", f"{what}: {type(value).__name__} is not a JSON type")
