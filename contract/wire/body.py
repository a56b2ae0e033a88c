"""The body of version 3: columnar CBOR, series coded against references and predictors.

``n = readings, s = series, t = n - s (readings after each series' first)``::

     0 n            1 s
     2 quantities   [text]   sorted
     3 units        [text]   sorted
     4 meter_width  0: meters are text; w: meters are w-digit numbers
     5 meters       [text] | column of deltas (sorted)
     6 s_meter      column(s): meter index - previous series' meter index
     7 s_quantity   column(s): index into quantities
     8 s_unit       column(s): index into units
     9 s_count      column(s): readings in the series
    10 s_code       column(s): decimals << 2 | linear << 1 | mixed
    11 slot_step    the gcd of all slot steps inside series (1 if none)
    12 slot_head    column(s): first slot - previous series' first slot
    13 slot_tail    column(t): (slot - previous slot) / slot_step
    14 s_ref        column(s): 0, or first slot - the slot of the series' reference
    15 ref_check    null, or the CRC-32 of the references (`references.check`)
    16 value_head   column: first mantissa of each series without a reference, minus
                    the previous such head of the same quantity
    17 values       [column per quantity]: for each series of that quantity, the delta
                    against its reference (if it has one), then the residual of each
                    later reading after the series' predictor
    18 value_exp    column: for readings of "mixed" series only, series decimals
                    minus this value's decimals
    19 value_text   {reading index: text} for values no mantissa restores exactly
    20 read_at      column(n): ms after the slot, as residuals (`predict_read_at`)
    21 sources      null if every source is "poll", else [[text], column(n)]
    22 s_partner    [column(s), column(s)]: a series' first and second partner, each
                    0 or (offset to a series of the same meter) * 2 + (1 if its
                    exponent is -1): whose moves predict this one's (`.predict`)
    23 events       [[kind, severity, meter | null, detail, at], ...]

Why this layout (measured in bench/wire.py, against the order-0 entropy of the values):

- series are sorted by meter, then in the order they were read, so consecutive series
  are consecutive exchanges on one bus, and the read-time predictor is left with one
  exchange's jitter;
- each quantity has its own value column: energy deltas fit a byte where power deltas
  need two, and the compressor sees one distribution per column;
- a series predicts each value from the one before, from the line through the two
  before, or from how a partner series of the same meter moved (`.predict`),
  whichever the encoder finds smaller;
- a reference delta is exact: both values are aligned to the larger number of
  decimals, so a change of scale between the reference and the reading is coded
  exactly, and a decoder that cannot divide back without a remainder refuses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import accumulate

import cbor2

from contract.records import Reading
from contract.wire.columns import (
    pack,
)
from contract.wire.content import (
    MAX_BODY_BYTES,
    MAX_READINGS,
    BatchContent,
    encode_events,
)
from contract.wire.decimals import MAX_DECIMALS, parse_decimal
from contract.wire.predict import (
    SeriesValues,
    choose_partners,
    linear_is_smaller,
    partner_code,
    residuals,
)
from contract.wire.references import Reference, RefKey, check
from contract.wire.series import Bounds, series_of

DEFAULT_SOURCE = "poll"
BODY_FIELDS = 24
MAX_CODE = MAX_DECIMALS << 2 | 3


def encode_body(
    content: BatchContent, references: Mapping[tuple[str, str], Reference] | None = None
) -> bytes:
    """CBOR array of 24 fields (see the module docstring); readings as columns.

    A series uses its reference when the reference is older than its first slot and
    both its first value and the reference are canonical decimals; otherwise its first
    value goes whole (a key value).
    """
    n = len(content.readings)
    if n > MAX_READINGS:
        raise ValueError(f"{n} readings in one batch, at most {MAX_READINGS}")
    readings = _in_series_order(content.readings)
    refs = references or {}

    (quantities, units, meter_width, meter_field, q_index, u_index, m_index, bounds, slots,
     offsets, parsed, step) = series_of(readings)  # fmt: skip

    s_meter: list[int] = []
    s_quantity: list[int] = []
    s_unit: list[int] = []
    s_count: list[int] = []
    s_code: list[int] = []
    s_ref: list[int] = []
    slot_head: list[int] = []
    slot_tail: list[int] = []
    value_head: list[int] = []
    values: list[list[int]] = [[] for _ in quantities]
    value_exp: list[int] = []
    value_text: dict[int, str] = {}
    ref_offsets: list[int | None] = []
    ref_rows: list[tuple[RefKey, str, float]] = []
    head_prev = [0] * len(quantities)
    series: list[SeriesValues] = []
    prev_meter = prev_slot = 0
    for a, b in bounds:
        first = readings[a]
        q = q_index[first.quantity]
        meter = m_index[first.meter]
        s_meter.append(meter - prev_meter)
        s_quantity.append(q)
        s_unit.append(u_index[first.unit])
        s_count.append(b - a)
        slot_head.append(slots[a] - prev_slot)
        slot_tail.extend((slots[i] - slots[i - 1]) // step for i in range(a + 1, b))
        prev_meter, prev_slot = meter, slots[a]

        ref = refs.get((first.meter, first.quantity))
        ref_value = None
        if ref is not None and ref.slot < first.slot and parsed[a] is not None:
            ref_value = parse_decimal(ref.value)
        if ref is None or ref_value is None or not math.isfinite(ref.read_at):
            s_ref.append(0)
            ref_offsets.append(None)
        else:
            s_ref.append(first.slot - ref.slot)
            ref_offsets.append(round(ref.read_at * 1000) - ref.slot * 1000)
            ref_rows.append(((first.meter, first.quantity, ref.slot), ref.value, ref.read_at))

        scales = {p[1] for p in parsed[a:b] if p is not None}
        decimals = max(scales, default=0)
        mixed = len(scales) > 1
        mantissas: list[int] = []
        last = head_prev[q]
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
        if ref_value is None:
            value_head.append(mantissas[0] - head_prev[q])
            head_prev[q] = mantissas[0]
        linear = linear_is_smaller(mantissas)
        s_code.append(decimals << 2 | linear << 1 | mixed)
        series.append(SeriesValues(decimals, ref_value, slots[a:b], linear, mantissas))

    groups = [range(x, y) for x, y in _runs(s_meter)]
    partners = choose_partners(series, groups, s_quantity)
    for k, sv in enumerate(series):
        mates = [(series[k + offset], e) for offset, e in partners[k]]
        values[s_quantity[k]].extend(residuals(sv, mates))

    read_at = predict_read_at(offsets, slots, bounds, ref_offsets, encode=True)

    sources_field: object = None
    if any(r.source != DEFAULT_SOURCE for r in readings):
        names = sorted({r.source for r in readings})
        index = {s: i for i, s in enumerate(names)}
        sources_field = [names, pack([index[r.source] for r in readings])]

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
            pack(s_code),
            step,
            pack(slot_head),
            pack(slot_tail),
            pack(s_ref),
            check(ref_rows) if ref_rows else None,
            pack(value_head),
            [pack(c) for c in values],
            pack(value_exp),
            value_text,
            pack(read_at),
            sources_field,
            [pack([partner_code(p, i) for p in partners]) for i in range(2)],
            encode_events(content.events),
        ]
    )
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"batch body of {len(body)} bytes, at most {MAX_BODY_BYTES}")
    return body


def _in_series_order(unordered: tuple[Reading, ...]) -> list[Reading]:
    """Series by meter, and within a meter in the order they were read (their first
    read time): the read-time predictor's "previous series" is then the exchange just
    before on the same bus. Within a series, by slot."""
    groups: dict[tuple[str, str, str], list[Reading]] = {}
    for r in unordered:
        if not math.isfinite(r.read_at):
            raise ValueError(f"read_at {r.read_at} of meter {r.meter!r} is not a finite time")
        groups.setdefault((r.meter, r.quantity, r.unit), []).append(r)
    for rows in groups.values():
        rows.sort(key=lambda r: r.slot)
    order = sorted(groups, key=lambda k: (k[0], groups[k][0].read_at, k[1], k[2]))
    return [r for key in order for r in groups[key]]


def _runs(s_meter_deltas: list[int]) -> list[tuple[int, int]]:
    """Series index ranges of one meter each (meter-major order: contiguous)."""
    starts = [k for k, d in enumerate(s_meter_deltas) if k == 0 or d != 0]
    return list(zip(starts, [*starts[1:], len(s_meter_deltas)], strict=False))


def predict_read_at(
    values: list[int],
    slots: list[int],
    bounds: Bounds,
    ref_offsets: list[int | None],
    *,
    encode: bool,
) -> list[int]:
    """Turn read_at offsets into residuals (encode) or residuals back into offsets.

    A bus polls its meters in the same order every slot, so the gap between two
    series' reads barely changes from one slot to the next. Where a series has exactly
    the slots of the series before it, a read is predicted by the gradient
    ``left + up - up_left`` (left: this series' previous slot, or its reference for
    the first; up: the previous series, same slot). What is left is the jitter of one
    exchange, a few ms. Otherwise the prediction is this series' previous read (or its
    reference), or the previous series' first.
    """
    if not encode and len(bounds) == len(values) and ref_offsets.count(None) == len(values):
        # One reading per series and no references: every prediction is the read before.
        return list(accumulate(values))
    out = values[:] if encode else [0] * len(values)
    src = values if encode else out  # predictions always use the decoded offsets
    prev: tuple[int, int] | None = None
    prev_ref: int | None = None
    for k, (a, b) in enumerate(bounds):
        ref = ref_offsets[k]
        aligned = prev is not None and slots[a:b] == slots[prev[0] : prev[1]]
        for i in range(a, b):
            if prev is not None and aligned:
                up = i - a + prev[0]
                if i > a:
                    guess = src[i - 1] + src[up] - src[up - 1]
                elif ref is not None and prev_ref is not None:
                    guess = ref + src[up] - prev_ref
                else:
                    guess = src[up]
            elif i > a:
                guess = src[i - 1]
            elif ref is not None:
                guess = ref
            else:
                guess = src[prev[0]] if prev is not None else 0
            if encode:
                out[i] = values[i] - guess
            else:
                out[i] = values[i] + guess
        prev, prev_ref = (a, b), ref
    return out
