"""Decoding a version 3 body (the layout is `contract.wire.body`'s docstring).

Every field is checked against what the others say before it is used (counts, table
indexes, partners, references), and each failure is a `WireError` naming the field. A
live batch is thousands of series of one reading each, so the values are restored and
formatted column by column, with per-series state only where a series needs it: this
is most of a receiver's ingest time (bench/receiver.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import accumulate, repeat
from typing import TypeVar, cast

from contract.records import decoded_reading
from contract.wire.body import BODY_FIELDS, DEFAULT_SOURCE, MAX_CODE, predict_read_at
from contract.wire.columns import int_field, loads, texts, unpack
from contract.wire.content import BatchContent, decode_events
from contract.wire.decimals import MAX_DECIMALS, format_column, format_decimal, parse_decimal
from contract.wire.errors import WireError, fail
from contract.wire.predict import SeriesValues, partner_decode, restore
from contract.wire.references import RefKey, Resolver, check
from contract.wire.series import Bounds, parse_tables


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
    bounds: Bounds
    ref_keys: list[RefKey | None]
    ref_check: int | None
    fields: list[object]


def _parse(fields: object) -> _Layout:
    """Everything but the values: enough to know which references to resolve."""
    fields, tables = parse_tables(fields, BODY_FIELDS)
    n, s, quantities, units, meters, s_meter, s_quantity, s_unit, s_count = tables
    s_code = unpack(fields[10], s, "s_code")
    if any(not 0 <= c <= MAX_CODE for c in s_code):
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

    bounds: Bounds = []
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
    ``shift`` fewer; a value in ``verbatim`` (by reading index) is left for the caller,
    which sets every verbatim text once, whatever its series."""
    out: list[str] = []
    for j, (mantissa, shift) in enumerate(zip(m, shifts, strict=True)):
        i = first + j
        if not 0 <= shift <= series_decimals:
            fail("bad_layout", f"value_exp {shift} at reading {i} exceeds the series'")
        if i in verbatim:
            out.append("")  # the caller puts every verbatim text in its place
            continue
        value, rest = divmod(mantissa, 10**shift)
        if rest:
            fail("bad_layout", f"value at reading {i} has more digits than its exponent")
        out.append(format_decimal(value, series_decimals - shift))
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
    offsets = predict_read_at(
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
            repeat(DEFAULT_SOURCE) if sources is None else sources,
        )
    )
    assert head == len(value_head) and at_q == per_q and exp == len(value_exp)
    return BatchContent(readings=tuple(readings), events=decode_events(fields[23]))
