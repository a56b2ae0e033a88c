"""Theft and tamper suspects of one transformer area, ranked, each with its evidence.

For an analysis day D the *recent* window is the 7 days ending with D and the *baseline*
the 28 days before it. Each customer meter collects points from independent signals;
the score is their sum, capped at 100; **a score of 50 or more is an alarm**
(`ALARM_SCORE`): enough for a field inspection. One tamper event, a growing reverse
register, a phase imbalance or a consumption drop alone stays below it; it takes
repeated tamper events, or two kinds of evidence together: a tamper event or a growing
reverse register with a drop, or a drop that coincides with, and accounts for, loss the
area's load does not explain.

Signals (points):

- **tamper events** in the recent window, kinds and points from `.tamper`
  (meter cover 35, magnetic field 40, …; repeats +5 each up to double), and rises of
  the meter-cover counter register;
- **reverse energy**: ``energy_rev_total`` grew by at least 1 kWh in the recent window
  (35; customers in an archive group named ``pv`` generate, and are exempt);
- **phase imbalance** (three-phase meters with per-phase currents): the median of
  (max − min) / max of the three currents over recent slots with load, against the
  baseline's: when it rose by at least 0.1, 30 × (median − 0.25) / 0.25, up to 30;
- **consumption drop**: own ratio = recent / baseline mean daily energy; peer ratio =
  the median own ratio of the other customers of the same group in the area (of all
  other customers when the group has fewer than 3); relative drop = 1 − own / peer.
  Strength = (drop − 10 %) / 30 %, clamped to 0..1. It earns 20 × strength alone (a
  holiday looks the same), plus 40 × strength × gate, plus 15 × gate × the share of
  the area's excess loss (kWh/day) that the customer's shortfall would explain. The
  *gate* (`LossTrend`) says how clearly the area's recent loss exceeds what its load
  explains: 0 up to 2 standard errors, 1 from 4.

A theft that started before the baseline window shows no drop against the customer's
own history; only tamper, reverse-energy and phase evidence find it then.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from cloud_receiver.applications.analytics.energy import (
    CURRENTS,
    DEFAULT_MAX_GAP_S,
    ENERGY_FWD,
    ENERGY_REV,
    FREEZE_FWD,
    MeterData,
    MeterDay,
    NotEnoughData,
    growth,
    load_days,
    midnight,
)
from cloud_receiver.applications.analytics.lineloss import AreaDay, area_days, require_total
from cloud_receiver.applications.analytics.tamper import (
    COVER_OPEN_COUNT,
    REPEAT_POINTS,
    TAMPER_EVENTS,
)
from cloud_receiver.applications.fleet.archive import Archive
from cloud_receiver.storage import MeterRecord, Storage
from contract.records import Event

ALARM_SCORE = 50.0
RECENT_DAYS = 7
BASELINE_DAYS = 28
MIN_RECENT_DAYS = 3  # days with data needed in each window to judge a drop
MIN_BASELINE_DAYS = 7
REVERSE_MIN_KWH = Decimal(1)
REVERSE_POINTS = 35.0
REVERSE_EXEMPT_GROUPS = frozenset({"pv"})
PHASE_POINTS = 30.0
PHASE_MIN_LOAD_A = 1.0  # slots with less current on every phase say nothing
DROP_ALONE_POINTS = 20.0
DROP_GATED_POINTS = 40.0
EXPLAIN_POINTS = 15.0
PEER_GROUP_MIN = 3


@dataclass(frozen=True)
class Suspect:
    meter: str
    account: str
    group: str
    score: float
    alarm: bool
    reasons: tuple[str, ...]
    signals: dict[str, float]


@dataclass(frozen=True)
class LossTrend:
    """The area's loss in the recent window against the baseline's.

    Technical loss grows with the load (I²R), so a plain rise of the loss rate would also
    follow the weather. The baseline's complete days fit rate = a + b × supply; the
    *excess* is how far the recent days' loss lies above that line, in percentage points
    of the rate and in kWh/day: loss the load does not explain. ``z`` is the excess in
    standard errors of the baseline days' scatter around the line (floored at 0.1 % of
    the supply), so a small area with steady loss shows a small theft, a noisy one only
    a large theft.
    """

    baseline_rate: float | None  # mean daily loss rate of the complete baseline days
    recent_rate: float | None
    excess_points: float | None  # None: too few complete days in a window
    excess_kwh: float | None
    z: float | None

    @property
    def gate(self) -> float:
        """How far the area's loss is unexplained: 0 up to z = 2, 1 from z = 4."""
        return 0.0 if self.z is None else _clamp((self.z - 2.0) / 2.0)


@dataclass(frozen=True)
class SuspectReport:
    area: str
    day: dt.date
    alarm_score: float
    trend: LossTrend
    suspects: tuple[Suspect, ...]  # score > 0, highest first
    notes: tuple[str, ...] = field(default=())

    @property
    def alarms(self) -> tuple[Suspect, ...]:
        return tuple(s for s in self.suspects if s.alarm)


def rank_suspects(
    storage: Storage,
    archive: Archive,
    area_name: str,
    day: dt.date,
    tz: dt.tzinfo,
    *,
    recent_days: int = RECENT_DAYS,
    baseline_days: int = BASELINE_DAYS,
    max_gap_s: int = DEFAULT_MAX_GAP_S,
) -> SuspectReport:
    area = archive.area(area_name)
    require_total(area)
    first = day - dt.timedelta(days=recent_days + baseline_days - 1)
    end = day + dt.timedelta(days=1)
    quantities = (ENERGY_FWD, FREEZE_FWD, ENERGY_REV, COVER_OPEN_COUNT, *CURRENTS)
    meters = [m.meter for m in area.meters]
    data = load_days(storage, meters, first, end, tz, max_gap_s, quantities)
    if not any(d.by_quantity for d in data.values()):
        raise NotEnoughData(
            f"no readings of area {area_name}'s meters between {first} and {day} (inclusive)"
        )
    days = [first + dt.timedelta(days=i) for i in range(recent_days + baseline_days)]
    losses, per_meter = area_days(area, data, days, tz, max_gap_s)
    trend = _trend(losses[:baseline_days], losses[baseline_days:])
    recent_start = midnight(days[baseline_days], tz)
    window_end = midnight(end, tz)
    events = storage.meter_events([c.meter for c in area.customers], recent_start, window_end)
    notes: list[str] = []
    if trend.excess_points is None:
        notes.append(
            "area loss trend unknown: fewer than 3 complete days in the recent or the"
            " baseline window (see `report loss`)"
        )
    ratios = {c.meter: _ratio(per_meter[c.meter], baseline_days) for c in area.customers}
    suspects = []
    for c in area.customers:
        reasons: list[str] = []
        signals: dict[str, float] = {}
        score = _tamper(c, events, data[c.meter], recent_start, window_end, tz, reasons, signals)
        score += _reverse(
            c,
            data[c.meter],
            per_meter[c.meter],
            baseline_days,
            recent_start,
            window_end,
            reasons,
            signals,
        )
        score += _phases(data[c.meter], recent_start, window_end, reasons, signals)
        peers = _peers(c, area.customers, ratios)
        score += _drop(c, ratios[c.meter], peers, trend, reasons, signals)
        score = min(100.0, score)
        if score > 0:
            suspects.append(
                Suspect(
                    c.meter,
                    c.account,
                    c.group,
                    round(score, 1),
                    score >= ALARM_SCORE,
                    tuple(reasons),
                    signals,
                )
            )
    suspects.sort(key=lambda s: (-s.score, s.meter))
    return SuspectReport(area_name, day, ALARM_SCORE, trend, tuple(suspects), tuple(notes))


# ------------------------------------------------------------------------- signals


def _tamper(
    c: MeterRecord,
    events: Sequence[Event],
    data: MeterData,
    since: int,
    until: int,
    tz: dt.tzinfo,
    reasons: list[str],
    signals: dict[str, float],
) -> float:
    kinds: Counter[str] = Counter()
    first_at: dict[str, float] = {}
    for e in events:
        if e.meter == c.meter and e.kind in TAMPER_EVENTS:
            kinds[e.kind] += 1
            first_at.setdefault(e.kind, e.at)
    opened = int(growth(data.get(COVER_OPEN_COUNT), since, until))
    if opened and "meter_cover_open" not in kinds:
        kinds["meter_cover_open"] += opened
    points = 0.0
    for kind, n in sorted(kinds.items()):
        spec = TAMPER_EVENTS[kind]
        points += min(2 * spec.points, spec.points + REPEAT_POINTS * (n - 1))
        when = (
            f"first {dt.datetime.fromtimestamp(first_at[kind], tz):%Y-%m-%d %H:%M}"
            if kind in first_at
            else "cover-open counter register"
        )
        reasons.append(f"{spec.words} ×{n} ({when})")
        signals[f"event_{kind}"] = float(n)
    return points


def _reverse(
    c: MeterRecord,
    data: MeterData,
    days: Sequence[MeterDay],
    baseline_days: int,
    since: int,
    until: int,
    reasons: list[str],
    signals: dict[str, float],
) -> float:
    grew = growth(data.get(ENERGY_REV), since, until)
    if grew < REVERSE_MIN_KWH or c.group in REVERSE_EXEMPT_GROUPS:
        return 0.0
    forward = sum((d.kwh for d in days[baseline_days:] if d.kwh is not None), Decimal(0))
    reverse = grew * c.multiplier
    share = float(reverse / (reverse + forward)) if reverse + forward else 1.0
    reasons.append(
        f"reverse energy register grew {reverse:.2f} kWh in the last {len(days) - baseline_days}"
        f" days ({share:.0%} of the energy through the meter)"
    )
    signals["reverse_kwh"] = float(reverse)
    return REVERSE_POINTS


def _imbalance(data: MeterData, since: int, until: int) -> list[tuple[float, float, float]]:
    """Per-phase currents (A) of the slots in [since, until) with load on some phase."""
    a, b, c = (dict(data.get(q)) for q in CURRENTS)
    out = []
    for slot in sorted(a):
        if since <= slot < until and slot in b and slot in c:
            amps = (float(a[slot]), float(b[slot]), float(c[slot]))
            if max(amps) >= PHASE_MIN_LOAD_A:
                out.append(amps)
    return out


def _spread(amps: tuple[float, float, float]) -> float:
    return (max(amps) - min(amps)) / max(amps)


def _phases(
    data: MeterData, since: int, until: int, reasons: list[str], signals: dict[str, float]
) -> float:
    recent = _imbalance(data, since, until)
    if len(recent) < 8:
        return 0.0
    before = [_spread(x) for x in _imbalance(data, 0, since)]
    now = statistics.median(_spread(x) for x in recent)
    then = statistics.median(before) if len(before) >= 8 else None
    if then is not None and now - then < 0.1:
        return 0.0  # as unbalanced as it always was: wiring, not a new bypass
    points = PHASE_POINTS * _clamp((now - 0.25) / 0.25)
    if points <= 0:
        return 0.0
    means = [statistics.fmean(x[i] for x in recent) for i in range(3)]
    low = "abc"[means.index(min(means))]
    history = f", {then:.2f} before" if then is not None else ""
    reasons.append(
        f"phase currents unbalanced: median (max−min)/max {now:.2f} over {len(recent)}"
        f" loaded slots{history}; phase {low} averages {min(means):.1f} A against"
        f" {max(means):.1f} A"
    )
    signals["phase_imbalance"] = now
    return points


@dataclass(frozen=True)
class _Ratio:
    baseline: float | None  # mean kWh/day
    recent: float | None

    @property
    def own(self) -> float | None:
        if self.baseline is None or self.recent is None or self.baseline < 0.1:
            return None
        return self.recent / self.baseline


def _ratio(days: Sequence[MeterDay], baseline_days: int) -> _Ratio:
    def mean(part: Sequence[MeterDay], need: int) -> float | None:
        known = [float(d.kwh) for d in part if d.kwh is not None]
        return statistics.fmean(known) if len(known) >= need else None

    return _Ratio(
        mean(days[:baseline_days], MIN_BASELINE_DAYS),
        mean(days[baseline_days:], MIN_RECENT_DAYS),
    )


def _peers(
    c: MeterRecord, customers: Sequence[MeterRecord], ratios: dict[str, _Ratio]
) -> tuple[list[float], str]:
    """Own ratios of the customers ``c`` is compared with, and what they are."""
    same = [p for p in customers if p.meter != c.meter and p.group == c.group]
    if c.group and len(same) >= PEER_GROUP_MIN:
        pool, label = same, f"{c.group} customers of the area"
    else:
        pool, label = [p for p in customers if p.meter != c.meter], "customers of the area"
    return [r for p in pool if (r := ratios[p.meter].own) is not None], label


def _drop(
    c: MeterRecord,
    ratio: _Ratio,
    peers: tuple[list[float], str],
    trend: LossTrend,
    reasons: list[str],
    signals: dict[str, float],
) -> float:
    own = ratio.own
    if own is None or ratio.baseline is None or ratio.recent is None:
        return 0.0
    peer_ratios, label = peers
    compared = len(peer_ratios) >= PEER_GROUP_MIN
    peer = statistics.median(peer_ratios) if compared else 1.0
    drop = 1.0 - own / peer if peer > 0 else 0.0
    strength = _clamp((drop - 0.1) / 0.3)
    if strength <= 0:
        return 0.0
    shortfall = ratio.baseline * peer - ratio.recent  # kWh/day it would have used
    signals.update(relative_drop=drop, shortfall_kwh_per_day=shortfall)
    against_peers = (
        f"{drop:.0%} against {len(peer_ratios)} other {label} (their median change {peer - 1:+.0%})"
        if compared
        else "too few other customers to compare with"
    )
    reasons.append(
        f"consumption {ratio.baseline:.2f} → {ratio.recent:.2f} kWh/day: down {1 - own:.0%}"
        f" against its own history, {against_peers}"
    )
    points = DROP_ALONE_POINTS * strength
    gate = trend.gate
    excess_kwh = trend.excess_kwh
    if gate > 0 and excess_kwh is not None and excess_kwh > 0:
        explain = _clamp(shortfall / excess_kwh)
        points += DROP_GATED_POINTS * strength * gate + EXPLAIN_POINTS * gate * explain
        reasons.append(
            f"while the area's loss ran {excess_kwh:+.1f} kWh/day"
            f" ({trend.excess_points:+.2f} points) above what its load explains"
            f" ({trend.z:.1f} standard errors); this shortfall of {shortfall:.1f} kWh/day"
            f" would explain {explain:.0%} of it"
        )
        signals["explains"] = explain
    return points


def _trend(baseline: Sequence[AreaDay], recent: Sequence[AreaDay]) -> LossTrend:
    def complete(part: Sequence[AreaDay]) -> list[tuple[float, float]]:
        return [
            (float(d.supply_kwh), d.loss_rate)
            for d in part
            if d.supply_kwh and d.loss_rate is not None
        ]

    base, now = complete(baseline), complete(recent)
    b_rate = statistics.fmean(r for _, r in base) if base else None
    r_rate = statistics.fmean(r for _, r in now) if now else None
    if len(base) < MIN_BASELINE_DAYS or len(now) < MIN_RECENT_DAYS:
        return LossTrend(b_rate, r_rate, None, None, None)
    slope, intercept = 0.0, statistics.fmean(r for _, r in base)
    with contextlib.suppress(statistics.StatisticsError):  # constant supply: no slope
        slope, intercept = statistics.linear_regression(*zip(*base, strict=True))

    def excess(day: tuple[float, float]) -> tuple[float, float]:
        supply, rate = day
        unexplained = rate - (intercept + slope * supply)
        return unexplained, unexplained * supply

    scatter = statistics.stdev(kwh for _, kwh in map(excess, base))
    recent_excess = [excess(d) for d in now]
    excess_kwh = statistics.fmean(kwh for _, kwh in recent_excess)
    floor = 0.001 * statistics.fmean(supply for supply, _ in base)
    stderr = max(scatter * math.sqrt(1 / len(now) + 1 / len(base)), floor)
    return LossTrend(
        b_rate,
        r_rate,
        statistics.fmean(points for points, _ in recent_excess) * 100,
        excess_kwh,
        excess_kwh / stderr,
    )


def _clamp(x: float) -> float:
    return min(1.0, max(0.0, x))
