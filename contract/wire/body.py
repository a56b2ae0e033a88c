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
    20 read_at      column(n): ms after the slot, as residuals (`_predict_read_at`)
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import accumulate, repeat
from typing import TypeVar, cast

import cbor2

from contract.records import Reading, decoded_reading
from contract.wire.columns import (
    int_field,
    loads,
    pack,
    pack_meters,
    texts,
    unpack,
    unpack_meters,
)
from contract.wire.content import (
    MAX_BODY_BYTES,
    MAX_READINGS,
    BatchContent,
    decode_events,
    encode_events,
)
from contract.wire.decimals import MAX_DECIMALS, format_column, format_decimal, parse_decimal
from contract.wire.errors import WireError, fail
from contract.wire.predict import (
    SeriesValues,
    choose_partners,
    linear_is_smaller,
    partner_code,
    partner_decode,
    residuals,
    restore,
)
from contract.wire.references import Reference, RefKey, Resolver, check

_DEFAULT_SOURCE = "poll"
_BODY_FIELDS = 24
_MAX_CODE = MAX_DECIMALS << 2 | 3

_Bounds = list[tuple[int, int]]


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

    quantities = sorted({r.quantity for r in readings})
    units = sorted({r.unit for r in readings})
    meters = sorted({r.meter for r in readings})
    meter_width, meter_field = pack_meters(meters)
    q_index = {q: i for i, q in enumerate(quantities)}
    u_index = {u: i for i, u in enumerate(units)}
    m_index = {m: i for i, m in enumerate(meters)}

    starts = [
        i
        for i in range(n)
        if i == 0
        or (readings[i].meter, readings[i].quantity, readings[i].unit)
        != (readings[i - 1].meter, readings[i - 1].quantity, readings[i - 1].unit)
    ]
    bounds = list(zip(starts, [*starts[1:], n], strict=False))

    slots = [r.slot for r in readings]
    offsets: list[int] = []
    for r in readings:
        if not math.isfinite(r.read_at):
            raise ValueError(f"read_at {r.read_at} of meter {r.meter!r} is not a finite time")
        offsets.append(round(r.read_at * 1000) - r.slot * 1000)
    parsed = [parse_decimal(r.value) for r in readings]

    step = 0
    for a, b in bounds:
        for i in range(a + 1, b):
            step = math.gcd(step, slots[i] - slots[i - 1])
    step = step or 1

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

    read_at = _predict_read_at(offsets, slots, bounds, ref_offsets, encode=True)

    sources_field: object = None
    if any(r.source != _DEFAULT_SOURCE for r in readings):
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


def _predict_read_at(
    values: list[int],
    slots: list[int],
    bounds: _Bounds,
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


def decode_body(body: bytes, resolve: Resolver | None) -> BatchContent:
    """Decode a version 3 body; ``resolve`` looks up its references (None: the caller
    holds none, and a batch that has references is refused as unresolved)."""
    layout = _guarded(_parse, loads(body))
    wanted = list(dict.fromkeys(k for k in layout.ref_keys if k is not None))
    found: Mapping[RefKey, tuple[str, float]] = {}
    if wanted:
        if resolve is None:
            fail("unresolved_reference", f"{len(wanted)} reference(s) and no way to resolve them")
        found = resolve(wanted)  # the resolver's own errors pass through unchanged
        missing = [k for k in wanted if k not in found]
        if missing:
            meter, quantity, slot = missing[0]
            fail(
                "unresolved_reference",
                f"{len(missing)} of {len(wanted)} reference(s) not held, the first"
                f" meter {meter} {quantity} at slot {slot}",
            )
        rows = [(k, *found[k]) for k in layout.ref_keys if k is not None]
        if check(rows) != layout.ref_check:
            fail(
                "unresolved_reference",
                f"references held differ from the sender's (ref_check {layout.ref_check})",
            )
    return _guarded(_finish, layout, found)


_T = TypeVar("_T")


def _guarded(fn: Callable[..., _T], *args: object) -> _T:
    try:
        return fn(*args)
    except WireError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, OverflowError, RecursionError) as exc:
        # A structure the explicit checks did not foresee. It was authenticated, so it
        # came from a key holder with a broken encoder; say what broke.
        fail("bad_layout", f"body does not decode ({type(exc).__name__}: {exc})")


@dataclass
class _Layout:
    n: int
    meters: list[str]
    quantities: list[str]
    units: list[str]
    s_meter: list[int]
    s_quantity: list[int]
    s_unit: list[int]
    s_count: list[int]
    s_code: list[int]
    slots: list[int]
    bounds: _Bounds
    ref_keys: list[RefKey | None]
    ref_check: int | None
    fields: list[object]


def _parse(fields: object) -> _Layout:
    """Everything but the values: enough to know which references to resolve."""
    if not isinstance(fields, list) or len(fields) != _BODY_FIELDS:
        fail("bad_layout", f"body must be an array of {_BODY_FIELDS} fields")
    n = int_field(fields[0], "reading count", 0, MAX_READINGS)
    s = int_field(fields[1], "series count", 1 if n else 0, n)
    quantities = texts(fields[2], "quantities")
    units = texts(fields[3], "units")
    meters = unpack_meters(fields[4], fields[5])

    s_meter = list(accumulate(unpack(fields[6], s, "s_meter")))
    s_quantity = unpack(fields[7], s, "s_quantity")
    s_unit = unpack(fields[8], s, "s_unit")
    s_count = unpack(fields[9], s, "s_count")
    s_code = unpack(fields[10], s, "s_code")
    if (s_count and min(s_count) < 1) or sum(s_count) != n:
        fail("bad_layout", f"s_count: series counts must be >= 1 and add up to {n}")
    for what, index, table in (
        ("s_meter", s_meter, meters),
        ("s_quantity", s_quantity, quantities),
        ("s_unit", s_unit, units),
    ):
        if index and (min(index) < 0 or max(index) >= len(table)):
            fail("bad_layout", f"{what}: index outside its table of {len(table)}")
    if any(not 0 <= c <= _MAX_CODE for c in s_code):
        fail("bad_layout", f"s_code: expected decimals 0..{MAX_DECIMALS} and two flag bits")
    step = int_field(fields[11], "slot_step", 1, 1 << 63)
    slot_head = unpack(fields[12], s, "slot_head")
    slot_tail = unpack(fields[13], n - s, "slot_tail")
    s_ref = unpack(fields[14], s, "s_ref")
    if any(r < 0 for r in s_ref):
        fail("bad_layout", "s_ref: expected 0 or a positive slot distance")
    ref_check = None
    if any(s_ref):
        ref_check = int_field(fields[15], "ref_check", 0, 0xFFFFFFFF)
    elif fields[15] is not None:
        fail("bad_layout", "ref_check: expected null in a batch without references")

    bounds: _Bounds = []
    slots: list[int] = []
    ref_keys: list[RefKey | None] = []
    if s == n:  # one reading per series (a live batch): no tails, no loop per reading
        bounds = [(k, k + 1) for k in range(s)]
        slots = list(accumulate(slot_head))
        ref_keys = (
            [
                (meters[m], quantities[q], slot - d) if d else None
                for m, q, slot, d in zip(s_meter, s_quantity, slots, s_ref, strict=True)
            ]
            if any(s_ref)
            else [None] * s
        )
    a = tail = slot = 0
    for k in range(s if s != n else 0):
        b = a + s_count[k]
        bounds.append((a, b))
        slot += slot_head[k]
        row = slot
        for i in range(a, b):
            if i > a:
                row += slot_tail[tail] * step
                tail += 1
            slots.append(row)
        ref_keys.append(
            (meters[s_meter[k]], quantities[s_quantity[k]], slot - s_ref[k]) if s_ref[k] else None
        )
        a = b
    return _Layout(
        n, meters, quantities, units, s_meter, s_quantity, s_unit, s_count, s_code, slots,
        bounds, ref_keys, ref_check, fields,
    )  # fmt: skip


_V = TypeVar("_V")
_HEAD_ALONE = SeriesValues(0, None, [])
_ALONE: list[tuple[int, int]] = []  # the partners of a series without any (never changed)


def _check_partners(
    layout: _Layout, k: int, named: list[tuple[int, int]], codes: list[list[int]]
) -> None:
    """A series' partners: of the same meter, with the same slots, partners of no one."""
    if codes[1][k] and not codes[0][k]:
        fail("bad_layout", f"s_partner: series {k} has a second partner and no first")
    s = len(layout.bounds)
    a, b = layout.bounds[k]
    for offset, _ in named:
        mate = k + offset
        if not (
            0 <= mate < s
            and offset != 0
            and layout.s_meter[mate] == layout.s_meter[k]
            and not codes[0][mate]
            and not codes[1][mate]
            and layout.slots[a:b] == layout.slots[slice(*layout.bounds[mate])]
        ):
            fail("bad_layout", f"s_partner: series {k} names {mate}, not a partner it can have")


def _texts(mantissas: list[int], decimals: list[int]) -> list[str]:
    """Each mantissa's text at its decimals, formatted a column per number of decimals."""
    kinds = set(decimals)
    if len(kinds) == 1:
        return format_column(mantissas, decimals[0])
    out = [""] * len(mantissas)
    for d in kinds:
        at = [i for i, x in enumerate(decimals) if x == d]
        for i, text in zip(at, format_column([mantissas[i] for i in at], d), strict=True):
            out[i] = text
    return out


def _mixed_texts(
    m: list[int], shifts: list[int], series_decimals: int, first: int, verbatim: Mapping[int, str]
) -> list[str]:
    """The texts of a series whose values have fewer decimals than the series, each
    ``shift`` fewer; a value in ``verbatim`` (by reading index) is taken as it is."""
    out: list[str] = []
    for j, (mantissa, shift) in enumerate(zip(m, shifts, strict=True)):
        i = first + j
        if not 0 <= shift <= series_decimals:
            fail("bad_layout", f"value_exp {shift} at reading {i} exceeds the series'")
        text = verbatim.get(i)
        if text is None:
            value, rest = divmod(mantissa, 10**shift)
            if rest:
                fail("bad_layout", f"value at reading {i} has more digits than its exponent")
            text = format_decimal(value, series_decimals - shift)
        out.append(str(text))
    return out


def _finish(layout: _Layout, found: Mapping[RefKey, tuple[str, float]]) -> BatchContent:
    fields, n, s_code = layout.fields, layout.n, layout.s_code
    heads = sum(1 for k in layout.ref_keys if k is None)
    value_head = unpack(fields[16], heads, "value_head")
    per_q = [0] * len(layout.quantities)
    for k, (a, b) in enumerate(layout.bounds):
        per_q[layout.s_quantity[k]] += (b - a) - (layout.ref_keys[k] is None)
    if not isinstance(fields[17], list) or len(fields[17]) != len(per_q):
        fail("bad_layout", f"values: expected {len(per_q)} columns, one per quantity")
    columns = [
        unpack(c, per_q[q], f"values[{layout.quantities[q]}]") for q, c in enumerate(fields[17])
    ]
    mixed_n = sum(c for c, sc in zip(layout.s_count, s_code, strict=True) if sc & 1)
    value_exp = unpack(fields[18], mixed_n, "value_exp")
    value_text = fields[19]
    if not isinstance(value_text, dict) or not all(
        type(k) is int and 0 <= k < n and isinstance(v, str) for k, v in value_text.items()
    ):
        fail("bad_layout", "value_text: expected {reading index: text}")

    s = len(layout.bounds)
    if not isinstance(fields[22], list) or len(fields[22]) != 2:
        fail("bad_layout", "s_partner: expected two columns")
    codes = [unpack(c, s, f"s_partner[{i}]") for i, c in enumerate(fields[22])]
    partners = [
        [partner_decode(c) for c in (first, second) if c] if first or second else _ALONE
        for first, second in zip(*codes, strict=True)
    ]
    # None for a series that is its head alone (one reading, no reference): nothing to
    # restore, and as a partner it has no head pair; a live key batch is all of them.
    series: list[SeriesValues | None] = []
    ref_offsets: list[int | None] = []
    firsts: list[int | None] = []
    starts: list[int] = []
    head_prev = [0] * len(layout.quantities)
    at_q = [0] * len(layout.quantities)
    head = 0
    s_quantity, ref_keys, counts = layout.s_quantity, layout.ref_keys, layout.s_count
    for k in range(s):
        q, key, count = s_quantity[k], ref_keys[k], counts[k]
        ref: tuple[int, int] | None = None
        starts.append(at_q[q])
        if key is None:
            first = head_prev[q] = head_prev[q] + value_head[head]
            head += 1
            firsts.append(first)
            ref_offsets.append(None)
            at_q[q] += count - 1
        else:
            text, read_at = found[key]
            ref = parse_decimal(text)
            if ref is None:
                fail("unresolved_reference", f"reference value {text!r} is not a decimal")
            firsts.append(None)
            ref_offsets.append(round(read_at * 1000) - key[2] * 1000)
            at_q[q] += count
        if partners[k]:
            _check_partners(layout, k, partners[k], codes)
        if key is None and count == 1:
            series.append(None)
            continue
        a, b = layout.bounds[k]
        series.append(
            SeriesValues(s_code[k] >> 2, ref, layout.slots[a:b], bool(s_code[k] >> 1 & 1))
        )
    for second in (False, True):  # partners first, then the series that follow them
        for k, sv in enumerate(series):
            if sv is None or bool(partners[k]) != second:
                continue
            q = s_quantity[k]
            head_value = firsts[k]
            n_res = len(sv.slots) - (head_value is not None)
            res = columns[q][starts[k] : starts[k] + n_res]
            mates = [(series[k + offset] or _HEAD_ALONE, e) for offset, e in partners[k]]
            restore(sv, res, head_value, mates, f"series {k}")

    slots = layout.slots
    offsets = _predict_read_at(
        unpack(fields[20], n, "read_at"), slots, layout.bounds, ref_offsets, encode=False
    )
    sources: list[str] | None = None
    if fields[21] is not None:
        if not isinstance(fields[21], list) or len(fields[21]) != 2:
            fail("bad_layout", "sources: expected null or [names, column]")
        names = texts(fields[21][0], "source names")
        index = unpack(fields[21][1], n, "sources")
        if index and (min(index) < 0 or max(index) >= len(names)):
            fail("bad_layout", f"sources: index outside its table of {len(names)}")
        sources = [names[i] for i in index]
    read_ats = [(t * 1000 + o) / 1000 for t, o in zip(slots, offsets, strict=True)]

    # Column by column, not series by series: a live batch is thousands of series of
    # one reading each, and this is most of an ingest's time.
    decimals = [c >> 2 for c in s_code]
    if series.count(None) == s:
        mantissas = cast(list[int], firsts)
    else:
        mantissas = []
        for k, sv in enumerate(series):
            if sv is None:
                mantissas.append(cast(int, firsts[k]))
            else:
                mantissas.extend(sv.m)
    if len(mantissas) != n:
        fail("bad_layout", f"{len(mantissas)} values restored for {n} readings")
    counts = layout.s_count
    ones = len(counts) == n  # every series holds one reading

    def per_reading(per_series: list[_V]) -> list[_V]:
        if ones:
            return per_series
        return [v for v, c in zip(per_series, counts, strict=True) for _ in range(c)]

    values = _texts(mantissas, per_reading(decimals))
    exp = 0
    for k, (a, b) in enumerate(layout.bounds):
        if s_code[k] & 1:
            shifts = value_exp[exp : exp + b - a]
            exp += b - a
            values[a:b] = _mixed_texts(mantissas[a:b], shifts, decimals[k], a, value_text)
    for i, verbatim in value_text.items():
        values[i] = str(verbatim)
    meters = [layout.meters[i] for i in layout.s_meter]
    quantities = [layout.quantities[i] for i in layout.s_quantity]
    units = [layout.units[i] for i in layout.s_unit]
    readings = list(
        map(
            decoded_reading,
            per_reading(meters),
            per_reading(quantities),
            slots,
            values,
            per_reading(units),
            read_ats,
            repeat(_DEFAULT_SOURCE) if sources is None else sources,
        )
    )
    assert head == len(value_head) and at_q == per_q and exp == len(value_exp)
    return BatchContent(readings=tuple(readings), events=decode_events(fields[23]))
