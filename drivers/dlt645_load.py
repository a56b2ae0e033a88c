"""DL/T 645-2007 load records (负荷记录): the meter's own interval curve, read back.

A meter stores a record every load-record period (15 minutes here): the time, then up
to six classes of values, each class followed by the separator ``AA`` (an empty class
is the separator alone). A concentrator reads them with a 0x11 read of data identifier
06000001 ("records from a given time") whose parameters are the block count and the
start time (DL/T 645-2007 appendix A, load-record table; docs/protocols.md §1.9)::

    request data:  DI 01 00 00 06 | NN | mm hh DD MM YY
    one record:    A0 A0 | LL | mm hh DD MM YY | class 1 AA | ... | class 6 AA | CS | E5
                   start   bytes  record time                                 sum   end

``LL`` counts the bytes from the record time to the last ``AA``; ``CS`` is the sum mod
256 of every byte from the first ``A0`` to the last ``AA``; one ``E5`` ends the record.
A record that starts ``E0 E0`` is one the meter itself marks as not correct: it has the
same layout and is skipped. Every one of these facts was checked against independent
implementations (docs/protocols.md §1.9). BCD data never holds the
byte ``AA`` (its nibbles are not decimal), so the separators cannot be confused with
values. Sans-I/O: bytes in, typed records out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from drivers.dlt645 import (
    DataId,
    Kind,
    bcd,
    decode_value,
    encode_value,
    from_bcd,
)
from drivers.dlt645.packed_bcd import _datetime_bcd, _parse_datetime
from drivers.errors import EncodeError, FrameError

# Data identifiers (DI3 06): records from the earliest, from a given time, the latest.
DI_EARLIEST = 0x06000000
DI_GIVEN_TIME = 0x06000001
DI_LATEST = 0x06000002
RECORD_START = b"\xa0\xa0"
RECORD_BAD = b"\xe0\xe0"  # the meter marks this record as not correct
RECORD_END = b"\xe5"
SEPARATOR = 0xAA
MAX_BLOCKS = 99  # NN is one BCD byte
CLASSES = 6
# Fixed bytes of a record around its classes: A0 A0, LL, time (5), CS, E5.
OVERHEAD = 2 + 1 + 5 + 1 + 1


@dataclass(frozen=True)
class Field:
    """One value of a record class: its name (canonical where the vocabulary has it)."""

    name: str
    kind: Kind  # "bcd" unsigned, "sbcd" sign bit in the top byte (the DL/T 645 layouts)
    length: int
    decimals: int
    unit: str

    def entry(self) -> DataId:
        return DataId(DI_GIVEN_TIME, self.name, self.name, self.kind, self.length,
                      self.decimals, self.unit)  # fmt: skip


def _f(name: str, kind: Kind, length: int, decimals: int, unit: str) -> Field:
    return Field(name, kind, length, decimals, unit)


# The six classes and their layouts (DL/T 645-2007 appendix A, load-record format table;
# the value layouts are those of the same quantities' own DIs, docs/protocols.md §1.6).
CLASS_FIELDS: tuple[tuple[Field, ...], ...] = (
    (  # 1: voltage, current, frequency (17 bytes)
        *(_f(f"voltage_{p}", "bcd", 2, 1, "V") for p in "abc"),
        *(_f(f"current_{p}", "sbcd", 3, 3, "A") for p in "abc"),
        _f("frequency", "bcd", 2, 2, "Hz"),
    ),
    (  # 2: active and reactive power, total and phases (24 bytes)
        _f("power_total", "sbcd", 3, 4, "kW"),
        *(_f(f"power_{p}", "sbcd", 3, 4, "kW") for p in "abc"),
        _f("reactive_power_total", "sbcd", 3, 4, "kvar"),
        *(_f(f"reactive_power_{p}", "sbcd", 3, 4, "kvar") for p in "abc"),
    ),
    (  # 3: power factor, total and phases (8 bytes)
        _f("power_factor", "sbcd", 2, 3, ""),
        *(_f(f"power_factor_{p}", "sbcd", 2, 3, "") for p in "abc"),
    ),
    (  # 4: active and combined reactive energy totals (16 bytes)
        _f("energy_fwd_total", "bcd", 4, 2, "kWh"),
        _f("energy_rev_total", "bcd", 4, 2, "kWh"),
        _f("reactive_combined_1_total", "sbcd", 4, 2, "kvarh"),
        _f("reactive_combined_2_total", "sbcd", 4, 2, "kvarh"),
    ),
    (  # 5: reactive energy of the four quadrants (16 bytes)
        *(_f(f"reactive_q{q}_total", "bcd", 4, 2, "kvarh") for q in range(1, 5)),
    ),
    (  # 6: present active and reactive demand (6 bytes)
        _f("demand_active", "sbcd", 3, 4, "kW"),
        _f("demand_reactive", "sbcd", 3, 4, "kvar"),
    ),
)
FIELDS: dict[str, tuple[int, Field]] = {
    f.name: (c, f) for c, fields in enumerate(CLASS_FIELDS, start=1) for f in fields
}


def class_length(n: int) -> int:
    return sum(f.length for f in CLASS_FIELDS[n - 1])


def class_of(name: str) -> int | None:
    """The record class (1..6) that carries quantity ``name``, or None."""
    hit = FIELDS.get(name)
    return hit[0] if hit else None


@dataclass(frozen=True)
class LoadRecord:
    """One stored record: the meter's local time stamp and the values of its classes.

    ``values`` holds every field of each class present; a class the meter does not
    record is absent from ``classes``.
    """

    at: dt.datetime  # meter-local, naive, to the minute
    values: dict[str, Decimal] = field(default_factory=dict)

    @property
    def classes(self) -> frozenset[int]:
        return frozenset(c for n in self.values if (c := class_of(n)) is not None)


# --------------------------------------------------------------------------------------
# Requests


def request_data(start: dt.datetime, blocks: int) -> bytes:
    """Parameters of a 06000001 read: NN (BCD) then the start time mm hh DD MM YY."""
    if not 1 <= blocks <= MAX_BLOCKS:
        raise EncodeError(f"load-record block count {blocks}: expected 1..{MAX_BLOCKS}")
    return bcd(blocks, 2) + _datetime_bcd(start, "mhDMY")


def parse_request(params: bytes) -> tuple[int, dt.datetime]:
    """The meter's side: (block count, start time) of a 06000001 read's parameters."""
    if len(params) != 6:
        raise FrameError(f"load-record request has {len(params)} parameter bytes, expected 6")
    blocks = from_bcd(params[:1], what="load-record block count")
    if blocks == 0:
        raise FrameError("load-record block count 0: expected 1..99", offset=0)
    return blocks, _parse_datetime(params[1:], "mhDMY", "load-record start time")


# --------------------------------------------------------------------------------------
# Records


def encode_record(record: LoadRecord) -> bytes:
    """One record as the meter sends it (the simulator's side)."""
    body = bytearray(_datetime_bcd(record.at, "mhDMY"))
    present = record.classes
    for n in range(1, CLASSES + 1):
        if n in present:
            for f in CLASS_FIELDS[n - 1]:
                if f.name not in record.values:
                    raise EncodeError(f"load record class {n}: {f.name} missing")
                body += encode_value(f.entry(), record.values[f.name])
        body.append(SEPARATOR)
    head = RECORD_START + bytes([len(body)])
    cs = sum(head + body) & 0xFF
    return bytes(head + body) + bytes([cs]) + RECORD_END


def decode_records(raw: bytes) -> list[LoadRecord]:
    """Every valid record in a reply's value bytes (follow-up frames already joined);
    records the meter marks ``E0 E0`` (not correct) are checked and left out."""
    out: list[LoadRecord] = []
    pos = 0
    k = 0
    while pos < len(raw):
        k += 1
        record, pos = _decode_one(raw, pos, k)
        if record is not None:
            out.append(record)
    return out


def _decode_one(raw: bytes, pos: int, k: int) -> tuple[LoadRecord | None, int]:
    at = pos
    start = raw[pos : pos + 2]
    if start not in (RECORD_START, RECORD_BAD):
        got = start.hex(" ").upper() or "nothing"
        raise FrameError(
            f"load record {k}: starts with {got}, expected A0 A0 (or E0 E0)", offset=at
        )
    if pos + 3 > len(raw):
        raise FrameError(f"load record {k}: cut off before its length byte", offset=at)
    length = raw[pos + 2]
    end = pos + 3 + length  # the checksum byte
    if end + 2 > len(raw):
        raise FrameError(
            f"load record {k}: length {length} runs past the {len(raw)} bytes received",
            offset=pos + 2,
        )
    body = raw[pos + 3 : end]
    cs = sum(raw[pos:end]) & 0xFF
    if raw[end] != cs:
        raise FrameError(
            f"load record {k}: checksum 0x{raw[end]:02X}, computed 0x{cs:02X}",
            offset=end,
        )
    if raw[end + 1 : end + 2] != RECORD_END:
        raise FrameError(
            f"load record {k}: ends with {raw[end + 1]:02X}, expected E5", offset=end + 1
        )
    if start == RECORD_BAD:
        return None, end + 2
    if len(body) < 5 + CLASSES:
        raise FrameError(
            f"load record {k}: {len(body)} bytes, expected at least {5 + CLASSES}",
            offset=pos + 2,
        )
    stamp = _parse_datetime(body[:5], "mhDMY", f"load record {k}: time")
    values: dict[str, Decimal] = {}
    i = 5
    for n in range(1, CLASSES + 1):
        if i >= len(body):
            raise FrameError(
                f"load record {k}: ends before the separator of class {n}",
                offset=pos + 3 + i,
            )
        if body[i] != SEPARATOR:
            size = class_length(n)
            part = body[i : i + size]
            if (
                len(part) < size
                or SEPARATOR in part
                or i + size >= len(body)
                or body[i + size] != SEPARATOR
            ):
                raise FrameError(
                    f"load record {k}: class {n} is not {size} bytes then AA",
                    offset=pos + 3 + i,
                )
            j = 0
            for f in CLASS_FIELDS[n - 1]:
                value = decode_value(f.entry(), part[j : j + f.length])
                assert isinstance(value, Decimal)
                values[f.name] = value
                j += f.length
            i += size
        i += 1
    if i != len(body):
        raise FrameError(
            f"load record {k}: {len(body) - i} bytes after class 6", offset=pos + 3 + i
        )
    return LoadRecord(stamp, values), end + 2


def record_length(classes: Sequence[int]) -> int:
    """Bytes of one record that carries ``classes``."""
    return OVERHEAD + CLASSES + sum(class_length(n) for n in classes)
