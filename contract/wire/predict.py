"""Per-series value predictors of version 3: what is left for the entropy coder.

Each series' values are exact integer mantissas at the series' decimals. A residual is
the value minus its prediction, and the prediction is one of:

- *previous*: the value before (for the first value of a series with a reference, the
  reference, aligned to the larger number of decimals, so a scale change is exact);
- *linear*: the line through the two values before (a register that grows steadily);
- *ratio*: the value before, scaled by how a partner series of the same meter moved
  over the same step, ``round(prev * partner_now / partner_prev)``. Current and power
  of one meter move together (I = P / (U cos φ)); the encoder finds such pairs by
  trying them, the decoder only follows the partner offset it is given. A partner has
  no partner of its own, so two passes decode everything.

Integer arithmetic only: both ends compute the same prediction bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from contract.wire.errors import fail


@dataclass
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


def _ratio(prev: int, now: int, before: int) -> int:
    """``prev * now / before`` rounded half up; ``prev`` when ``before`` is 0."""
    if before == 0:
        return prev
    if before < 0:
        now, before = -now, -before
    return (2 * prev * now + before) // (2 * before)


def linear_is_smaller(m: list[int]) -> bool:
    if len(m) < 3:
        return False
    flat = sum(abs(m[i] - m[i - 1]) for i in range(2, len(m)))
    line = sum(abs(m[i] - 2 * m[i - 1] + m[i - 2]) for i in range(2, len(m)))
    return line < flat


def residuals(s: SeriesValues, partner: SeriesValues | None) -> list[int]:
    """The series' residuals in column order: the reference delta first (if any)."""
    m = s.m
    out: list[int] = []
    head = s.head_pair()
    if head is not None:
        ref, first, _ = head
        guess = ref
        p_head = partner.head_pair() if partner is not None else None
        if p_head is not None:
            guess = _ratio(ref, p_head[1], p_head[0])
        out.append(first - guess)
    for j in range(1, len(m)):
        if partner is not None:
            guess = _ratio(m[j - 1], partner.m[j], partner.m[j - 1])
        elif s.linear and j >= 2:
            guess = 2 * m[j - 1] - m[j - 2]
        else:
            guess = m[j - 1]
        out.append(m[j] - guess)
    return out


def restore(
    s: SeriesValues, res: list[int], first: int | None, partner: SeriesValues | None, what: str
) -> None:
    """Fill ``s.m`` from residuals (the inverse of `residuals`); ``first`` is the head
    value of a series without a reference. ``partner.m`` must be restored already."""
    m = s.m
    at = 0
    if s.ref is not None:
        top = max(s.decimals, s.ref[1])
        ref = s.ref[0] * 10 ** (top - s.ref[1])
        guess = ref
        if partner is not None and partner.ref is not None:
            p_head = partner.head_pair()
            assert p_head is not None
            guess = _ratio(ref, p_head[1], p_head[0])
        value, rest = divmod(res[0] + guess, 10 ** (top - s.decimals))
        if rest:
            fail("bad_layout", f"{what}: the reference delta leaves a remainder")
        m.append(value)
        at = 1
    else:
        assert first is not None
        m.append(first)
    for j in range(1, len(s.slots)):
        if partner is not None:
            guess = _ratio(m[j - 1], partner.m[j], partner.m[j - 1])
        elif s.linear and j >= 2:
            guess = 2 * m[j - 1] - m[j - 2]
        else:
            guess = m[j - 1]
        m.append(res[at] + guess)
        at += 1


SAMPLE_METERS = 64  # meters whose series decide the pairing for the whole batch


def choose_partners(series: list[SeriesValues], groups: list[range], kinds: list[int]) -> list[int]:
    """Per series, 0 or the offset to its partner (same meter, same slots).

    Pairs are chosen per kind (quantity), not per series: the first ``SAMPLE_METERS``
    meters' absolute residuals say which kind is best predicted from which, greedily
    by the largest saving, a partner kind having no partner itself; every meter then
    follows that choice where it has both series. One choice for the batch keeps the
    partner column constant (it compresses to nothing) and the search short.
    """
    gain: dict[tuple[int, int], int] = {}
    for group in groups[:SAMPLE_METERS]:
        for k in group:
            own = sum(map(abs, residuals(series[k], None)))
            for p in group:
                if _eligible(series, k, p):
                    saved = own - sum(map(abs, residuals(series[k], series[p])))
                    pair = (kinds[k], kinds[p])
                    gain[pair] = gain.get(pair, 0) + saved
    chosen: dict[int, int] = {}
    anchors: set[int] = set()
    for (kind, of), saved in sorted(gain.items(), key=lambda x: (-x[1], x[0])):
        if saved <= 0 or kind in chosen or kind in anchors or of in chosen:
            continue
        chosen[kind] = of
        anchors.add(of)
    offsets = [0] * len(series)
    if not chosen:
        return offsets
    for group in groups:
        where = {kinds[k]: k for k in group}
        for k in group:
            partner = where.get(chosen.get(kinds[k], -1))
            if partner is not None and _eligible(series, k, partner):
                offsets[k] = partner - k
    return offsets


def _eligible(series: list[SeriesValues], k: int, p: int) -> bool:
    a, b = series[k], series[p]
    if p == k or a.slots != b.slots:
        return False
    # A single value can only be scaled when both have references.
    return len(a.slots) >= 2 or (a.ref is not None and b.ref is not None)
