"""Per-series value predictors of version 3: what is left for the entropy coder.

Each series' values are exact integer mantissas at the series' decimals. A residual is
the value minus its prediction, and the prediction is one of:

- *previous*: the value before (for the first value of a series with a reference, the
  reference, aligned to the larger number of decimals, so a scale change is exact);
- *linear*: the line through the two values before (a register that grows steadily);
- *ratio*: the value before, scaled by how one or two partner series of the same
  meter moved over the same step, ``round(prev * (now / before) ** ±1 ...)``. Current,
  power and voltage of one meter move together (I = P / (U cos φ)); the encoder finds
  such partners by trying them, the decoder only follows the offsets it is given. A
  partner has no partner of its own, so two passes decode everything.

Integer arithmetic only: both ends compute the same prediction bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from contract.wire.errors import fail


@dataclass(slots=True)
class SeriesValues:
    """One series as the predictors see it."""

    decimals: int
    ref: tuple[int, int] | None  # the reference as (mantissa, decimals)
    slots: list[int]
    linear: bool = False
    m: list[int] = field(default_factory=list)  # mantissas at ``decimals``

    def head_pair(self) -> tuple[int, int, int] | None:
        """(reference, first value, 10**shift) aligned to the larger number of decimals."""
        if self.ref is None:
            return None
        top = max(self.decimals, self.ref[1])
        return (
            self.ref[0] * 10 ** (top - self.ref[1]),
            self.m[0] * 10 ** (top - self.decimals),
            (10 ** (top - self.decimals)),
        )


def _scaled(prev: int, moves: list[tuple[int, int, int]]) -> int:
    """``prev`` times each partner's ``(now / before) ** exponent``, rounded half up;
    ``prev`` when a divisor is 0."""
    num, den = prev, 1
    for now, before, exponent in moves:
        if exponent > 0:
            num, den = num * now, den * before
        else:
            num, den = num * before, den * now
    if den == 0:
        return prev
    if den < 0:
        num, den = -num, -den
    return (2 * num + den) // (2 * den)


Partners = list[tuple["SeriesValues", int]]  # (partner, exponent +1 or -1)


def _head_guess(ref: int, partners: Partners) -> int:
    moves = []
    for p, exponent in partners:
        pair = p.head_pair()
        if pair is None:
            return ref
        moves.append((pair[1], pair[0], exponent))
    return _scaled(ref, moves)


def _guess(s: SeriesValues, m: list[int], j: int, partners: Partners) -> int:
    if partners:
        return _scaled(m[j - 1], [(p.m[j], p.m[j - 1], e) for p, e in partners])
    if s.linear and j >= 2:
        return 2 * m[j - 1] - m[j - 2]
    return m[j - 1]


def linear_is_smaller(m: list[int]) -> bool:
    if len(m) < 3:
        return False
    flat = sum(abs(m[i] - m[i - 1]) for i in range(2, len(m)))
    line = sum(abs(m[i] - 2 * m[i - 1] + m[i - 2]) for i in range(2, len(m)))
    return line < flat


def residuals(s: SeriesValues, partners: Partners) -> list[int]:
    """The series' residuals in column order: the reference delta first (if any)."""
    m = s.m
    out: list[int] = []
    head = s.head_pair()
    if head is not None:
        out.append(head[1] - _head_guess(head[0], partners))
    out.extend(m[j] - _guess(s, m, j, partners) for j in range(1, len(m)))
    return out


def restore(
    s: SeriesValues, res: list[int], first: int | None, partners: Partners, what: str
) -> None:
    """Fill ``s.m`` from residuals (the inverse of `residuals`); ``first`` is the head
    value of a series without a reference. The partners must be restored already."""
    m = s.m
    at = 0
    if s.ref is not None:
        top = max(s.decimals, s.ref[1])
        guess = _head_guess(s.ref[0] * 10 ** (top - s.ref[1]), partners)
        value, rest = divmod(res[0] + guess, 10 ** (top - s.decimals))
        if rest:
            fail("bad_layout", f"{what}: the reference delta leaves a remainder")
        m.append(value)
        at = 1
    else:
        assert first is not None
        m.append(first)
    for j in range(1, len(s.slots)):
        m.append(res[at] + _guess(s, m, j, partners))
        at += 1


SAMPLE_METERS = 64  # meters whose series decide the pairing for the whole batch


Option = tuple[tuple[int, int], ...]  # (partner kind, exponent) pairs


def choose_partners(
    series: list[SeriesValues], groups: list[range], kinds: list[int]
) -> list[list[tuple[int, int]]]:
    """Per series, its partners as (offset to the partner series, exponent).

    Chosen per kind (quantity), not per series: on the first ``SAMPLE_METERS`` meters,
    each kind tries one partner kind (either exponent) and two (the second with
    either), and keeps what saves most absolute residual; greedily, a partner kind
    having no partner itself. Every meter then follows the choice where it has the
    series. One choice per batch keeps the partner columns constant (they compress to
    nothing) and the search short.
    """
    present = sorted(set(kinds))
    options: list[Option] = []
    for p in present:
        options += [((p, 1),), ((p, -1),)]
        options += [((p, 1), (q, e)) for q in present if q != p for e in (1, -1)]
    saving: dict[tuple[int, Option], int] = {}
    for group in groups[:SAMPLE_METERS]:
        where = {kinds[k]: k for k in group}
        for k in group:
            own: int | None = None
            for option in options:
                ks = [where.get(kind) for kind, _ in option]
                if kinds[k] in (kind for kind, _ in option) or any(
                    x is None or not _eligible(series, k, x) for x in ks
                ):
                    continue
                if own is None:
                    own = sum(map(abs, residuals(series[k], [])))
                found: Partners = [
                    (series[cast(int, x)], e) for x, (_, e) in zip(ks, option, strict=True)
                ]
                cost = sum(map(abs, residuals(series[k], found)))
                key = (kinds[k], option)
                saving[key] = saving.get(key, 0) + own - cost
    chosen: dict[int, Option] = {}
    anchors: set[int] = set()
    for (kind, option), saved in sorted(saving.items(), key=lambda x: (-x[1], x[0])):
        mate_kinds = {m for m, _ in option}
        if saved <= 0 or kind in chosen or kind in anchors or mate_kinds & chosen.keys():
            continue
        chosen[kind] = option
        anchors |= mate_kinds
    out: list[list[tuple[int, int]]] = [[] for _ in series]
    for group in groups:
        where = {kinds[k]: k for k in group}
        for k in group:
            pick = chosen.get(kinds[k])
            if pick is None:
                continue
            ks = [where.get(kind) for kind, _ in pick]
            if all(x is not None and _eligible(series, k, x) for x in ks):
                out[k] = [(cast(int, x) - k, e) for x, (_, e) in zip(ks, pick, strict=True)]
    return out


def _eligible(series: list[SeriesValues], k: int, p: int) -> bool:
    a, b = series[k], series[p]
    if p == k or a.slots != b.slots:
        return False
    # A single value can only be scaled when both have references.
    return len(a.slots) >= 2 or (a.ref is not None and b.ref is not None)


def partner_code(partners: list[tuple[int, int]], i: int) -> int:
    """Partner ``i`` as one integer: offset * 2, plus 1 for exponent -1; 0 for none."""
    if i >= len(partners):
        return 0
    offset, exponent = partners[i]
    return offset * 2 + (exponent < 0)


def partner_decode(code: int) -> tuple[int, int]:
    return code >> 1, -1 if code & 1 else 1
