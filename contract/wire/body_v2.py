"""The body of versions 1 and 2: columnar CBOR, every series coded on its own.

Frozen: concentrators not upgraded yet still send it, and a config may pin it
(``[uplink] wire_version``). Version 3 (`contract.wire.body`) adds references.
"""

from __future__ import annotations

from itertools import pairwise
from typing import cast

import cbor2

from contract.records import Reading
from contract.wire.columns import (
    int_field,
    loads,
    pack,
    texts,
    unpack,
)
from contract.wire.content import (
    MAX_BODY_BYTES,
    MAX_READINGS,
    BatchContent,
    decode_events,
    encode_events,
)
from contract.wire.decimals import MAX_DECIMALS, format_decimal
from contract.wire.errors import WireError, fail
from contract.wire.series import parse_tables, series_of

_DEFAULT_SOURCE = "poll"
_BODY_FIELDS = 21


def encode_body(content: BatchContent) -> bytes:
    """CBOR array of 21 fields; readings as columns, events as rows.

    Readings are sorted into series by (quantity, unit, meter) and by slot within a
    series. Quantity-major order puts the same quantity of consecutive meters side by
    side, so first values and read times delta-encode against the previous meter.

    ``n = readings, s = series, t = n - s (readings after each series' first)``::

         0 n            1 s
         2 quantities   [text]   sorted
         3 units        [text]   sorted
         4 meter_width  0: meters are text; w: meters are w-digit numbers
         5 meters       [text] | column of deltas (sorted, so 12-digit DL/T 645
                        addresses of one installation cost about a byte)
         6 s_meter      column(s): meter index - previous series' meter index
         7 s_quantity   column(s): index into quantities
         8 s_unit       column(s): index into units
         9 s_count      column(s): readings in the series
        10 s_scale      column(s): decimals << 1 | mixed
        11 slot_step    the gcd of all slot steps inside series (1 if none)
        12 slot_head    column(s): first slot - previous series' first slot
        13 slot_tail    column(t): (slot - previous slot) / slot_step
        14 value_head   column(s): first mantissa - previous series' first mantissa
        15 value_tail   column(t): mantissa - previous mantissa
        16 value_exp    column: for readings of "mixed" series only, series decimals
                        minus this value's decimals
        17 value_text   {reading index: text} for values no mantissa restores exactly
        18 read_at      column(n): ms after the slot, as the residual of a gradient
                        predictor (see `_predict_read_at`)
        19 sources      null if every source is "poll", else [[text], column(n)]
        20 events       [[kind, severity, meter | null, detail, at], ...]

    Mantissas are at the series' decimals, so "0.50" and "12345.67" are integers and
    a value is never a float. A series whose values have different decimal counts is
    scaled to the largest and carries the per-reading difference in ``value_exp``.
    """
    readings = sorted(content.readings, key=lambda r: (r.quantity, r.unit, r.meter, r.slot))
    n = len(readings)
    if n > MAX_READINGS:
        raise ValueError(f"{n} readings in one batch, at most {MAX_READINGS}")

    (quantities, units, meter_width, meter_field, q_index, u_index, m_index, bounds, slots,
     offsets, parsed, step) = series_of(readings)  # fmt: skip

    s_meter: list[int] = []
    s_quantity: list[int] = []
    s_unit: list[int] = []
    s_count: list[int] = []
    s_scale: list[int] = []
    slot_head: list[int] = []
    slot_tail: list[int] = []
    value_head: list[int] = []
    value_tail: list[int] = []
    value_exp: list[int] = []
    value_text: dict[int, str] = {}
    prev_meter = prev_slot = prev_value = 0
    for a, b in bounds:
        first = readings[a]
        meter = m_index[first.meter]
        s_meter.append(meter - prev_meter)
        s_quantity.append(q_index[first.quantity])
        s_unit.append(u_index[first.unit])
        s_count.append(b - a)
        slot_head.append(slots[a] - prev_slot)
        slot_tail.extend((slots[i] - slots[i - 1]) // step for i in range(a + 1, b))
        prev_meter, prev_slot = meter, slots[a]

        scales = {p[1] for p in parsed[a:b] if p is not None}
        decimals = max(scales, default=0)
        mixed = len(scales) > 1
        s_scale.append(decimals << 1 | mixed)
        mantissas: list[int] = []
        last = prev_value
        for i in range(a, b):
            p = parsed[i]
            if p is None:
                value_text[i] = readings[i].value
                mantissas.append(last)  # a zero delta: keeps the neighbours' deltas small
                if mixed:
                    value_exp.append(0)
                continue
            last = p[0] * 10 ** (decimals - p[1])
            mantissas.append(last)
            if mixed:
                value_exp.append(decimals - p[1])
        value_head.append(mantissas[0] - prev_value)
        value_tail.extend(y - x for x, y in pairwise(mantissas))
        prev_value = mantissas[0]

    read_at = _predict_read_at(offsets, slots, bounds, encode=True)

    sources_field: object = None
    if any(r.source != _DEFAULT_SOURCE for r in readings):
        names = sorted({r.source for r in readings})
        index = {s: i for i, s in enumerate(names)}
        sources_field = [names, pack([index[r.source] for r in readings])]

    events = encode_events(content.events)
    body = cbor2.dumps(
        [
            n,
            len(bounds),
            quantities,
            units,
            meter_width,
            meter_field,
            pack(s_meter),
            pack(s_quantity),
            pack(s_unit),
            pack(s_count),
            pack(s_scale),
            step,
            pack(slot_head),
            pack(slot_tail),
            pack(value_head),
            pack(value_tail),
            pack(value_exp),
            value_text,
            pack(read_at),
            sources_field,
            events,
        ]
    )
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"batch body of {len(body)} bytes, at most {MAX_BODY_BYTES}")
    return body


def _predict_read_at(
    values: list[int], slots: list[int], bounds: list[tuple[int, int]], *, encode: bool
) -> list[int]:
    """Turn read_at offsets into residuals (encode) or residuals back into offsets.

    A bus polls its meters in the same order every slot, so the gap between two
    meters' reads barely changes from one slot to the next. Where a series has exactly
    the slots of the series before it, a read is predicted by the gradient
    ``left + up - up_left`` (left: this series' previous slot; up: the previous series,
    same slot). What is left is the jitter of one poll cycle, a few ms. Otherwise the
    prediction is this series' previous read, or the previous series' first.
    """
    out = values[:] if encode else [0] * len(values)
    src = values if encode else out  # predictions always use the decoded offsets
    prev: tuple[int, int] | None = None
    for a, b in bounds:
        aligned = (
            prev is not None
            and (b - a) == (prev[1] - prev[0])
            and slots[a:b] == slots[prev[0] : prev[1]]
        )
        for i in range(a, b):
            if aligned:
                up = i - a + cast(tuple[int, int], prev)[0]
                guess = src[up] if i == a else src[i - 1] + src[up] - src[up - 1]
            elif i > a:
                guess = src[i - 1]
            else:
                guess = src[prev[0]] if prev is not None else 0
            if encode:
                out[i] = values[i] - guess
            else:
                out[i] = values[i] + guess
        prev = (a, b)
    return out


def decode_body(body: bytes) -> BatchContent:
    fields = loads(body)
    try:
        return _decode_fields(fields)
    except WireError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, OverflowError, RecursionError) as exc:
        # A structure the explicit checks below did not foresee. It was authenticated,
        # so it came from a key holder with a broken encoder; say what broke.
        fail("bad_layout", f"body does not decode ({type(exc).__name__}: {exc})")


def _decode_fields(fields: object) -> BatchContent:
    fields, tables = parse_tables(fields, _BODY_FIELDS)
    n, s, quantities, units, meters, s_meter, s_quantity, s_unit, s_count = tables
    s_scale = unpack(fields[10], s, "s_scale")
    if any(not 0 <= sc <= (MAX_DECIMALS << 1 | 1) for sc in s_scale):
        fail("bad_layout", f"s_scale: expected decimals 0..{MAX_DECIMALS}")
    step = int_field(fields[11], "slot step", 1, 1 << 63)

    t = n - s
    slot_head = unpack(fields[12], s, "slot_head")
    slot_tail = unpack(fields[13], t, "slot_tail")
    value_head = unpack(fields[14], s, "value_head")
    value_tail = unpack(fields[15], t, "value_tail")
    mixed_n = sum(c for c, sc in zip(s_count, s_scale, strict=True) if sc & 1)
    value_exp = unpack(fields[16], mixed_n, "value_exp")
    value_text = fields[17]
    if not isinstance(value_text, dict) or not all(
        type(k) is int and 0 <= k < n and isinstance(v, str) for k, v in value_text.items()
    ):
        fail("bad_layout", "value_text: expected {reading index: text}")

    # Slots and mantissas, series by series.
    bounds: list[tuple[int, int]] = []
    slots: list[int] = []
    mantissas: list[int] = []
    decimals: list[int] = []
    a = tail = exp = 0
    slot = value = 0
    for k in range(s):
        b = a + s_count[k]
        bounds.append((a, b))
        slot += slot_head[k]
        value += value_head[k]
        series_decimals, mixed = s_scale[k] >> 1, s_scale[k] & 1
        row_slot, row_value = slot, value
        for i in range(a, b):
            if i > a:
                row_slot += slot_tail[tail] * step
                row_value += value_tail[tail]
                tail += 1
            slots.append(row_slot)
            mantissas.append(row_value)
            if mixed:
                shift = value_exp[exp]
                exp += 1
                if not 0 <= shift <= series_decimals:
                    fail("bad_layout", f"value_exp {shift} at reading {i} exceeds the series'")
                decimals.append(series_decimals - shift)
            else:
                decimals.append(series_decimals)
        a = b

    offsets = _predict_read_at(unpack(fields[18], n, "read_at"), slots, bounds, encode=False)

    sources = [_DEFAULT_SOURCE] * n
    if fields[19] is not None:
        if not isinstance(fields[19], list) or len(fields[19]) != 2:
            fail("bad_layout", "sources: expected null or [names, column]")
        names = texts(fields[19][0], "source names")
        index = unpack(fields[19][1], n, "sources")
        if any(not 0 <= i < len(names) for i in index):
            fail("bad_layout", f"sources: index outside its table of {len(names)}")
        sources = [names[i] for i in index]

    readings: list[Reading] = []
    for k, (a, b) in enumerate(bounds):
        meter, quantity, unit = meters[s_meter[k]], quantities[s_quantity[k]], units[s_unit[k]]
        for i in range(a, b):
            text = value_text.get(i)
            if text is None:
                mantissa, rest = divmod(mantissas[i], 10 ** ((s_scale[k] >> 1) - decimals[i]))
                if rest:
                    fail("bad_layout", f"value at reading {i} has more digits than its exponent")
                text = format_decimal(mantissa, decimals[i])
            readings.append(
                Reading(
                    meter=meter,
                    quantity=quantity,
                    slot=slots[i],
                    value=text,
                    unit=unit,
                    read_at=(slots[i] * 1000 + offsets[i]) / 1000,
                    source=sources[i],
                )
            )
    return BatchContent(readings=tuple(readings), events=decode_events(fields[20]))
