"""Next-day load forecast per area: 96 quarter-hour values, the method chosen on measurement.

The area's load is its total meter's slot energy as kW. Candidate methods, each using
only the days before the day it forecasts:

- ``naive_day`` — yesterday's same quarter-hour (seasonal naive, daily season);
- ``naive_week`` — the same weekday last week (seasonal naive, weekly season);
- ``recent_mean`` — the mean of the last 7 complete days per quarter-hour;
- ``weekday_mean`` — the mean of the last 4 complete same-weekday days;
- ``weekday_level`` — ``weekday_mean`` scaled by how the last 3 days ran against their own
  ``weekday_mean`` forecasts (clamped to ±20 %): the weekly shape, today's level (weather);
- ``holt_winters`` — additive exponential smoothing, no trend, weekly season of 672
  quarter-hours (α = 0.005 per slot, γ = 0.3, tuned on another seed than the benchmark
  uses); a missing slot only advances the state.

`forecast` backtests every candidate on the validation days (default the 14 days before
the forecast day, rolling origin: each validated day forecast from the days before it),
picks the lowest mean MAPE and forecasts with it. MAPE = mean |actual − forecast| /
actual over the quarter-hours with load, in percent. The seasonal-naive baseline is
``naive_day``; its MAPE on the same validation days is reported beside the chosen one.
Plain Python, no numerical libraries.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cloud_receiver.applications.analytics.energy import (
    DEFAULT_MAX_GAP_S,
    ENERGY_FWD,
    SLOT_S,
    SLOTS_PER_DAY,
    NotEnoughData,
    load,
    midnight,
    slot_energy,
)
from cloud_receiver.applications.analytics.lineloss import require_total
from cloud_receiver.applications.fleet.archive import Archive
from cloud_receiver.storage import Storage

DayLoad = Sequence[float | None]  # kW per quarter-hour, None: no measured load
History = Mapping[dt.date, DayLoad]
Method = Callable[[History, dt.date], list[float] | None]

BASELINE = "naive_day"
VALIDATION_DAYS = 14
HISTORY_DAYS = 56
MIN_HISTORY_DAYS = 8
HW_ALPHA, HW_GAMMA, HW_SEASON = 0.005, 0.3, 7 * SLOTS_PER_DAY
_ONE_DAY = dt.timedelta(days=1)


def area_history(
    storage: Storage,
    archive: Archive,
    area_name: str,
    first: dt.date,
    end: dt.date,
    tz: dt.tzinfo,
    max_gap_s: int = DEFAULT_MAX_GAP_S,
) -> dict[dt.date, list[float | None]]:
    """The area's load (its total meter) per quarter-hour for each day first..end."""
    area = archive.area(area_name)
    require_total(area)
    assert area.total is not None
    since, until = midnight(first, tz), midnight(end, tz)
    data = load(storage, [area.total.meter], (ENERGY_FWD,), since, until + 1)
    slots = slot_energy(area.total, data[area.total.meter], since, until, max_gap_s)
    history: dict[dt.date, list[float | None]] = {}
    for i in range((end - first).days):
        start = midnight(first + dt.timedelta(days=i), tz)
        day = [slots.get(start + q * SLOT_S) for q in range(SLOTS_PER_DAY)]
        history[first + dt.timedelta(days=i)] = [s.kw if s and s.measured else None for s in day]
    return history


def complete(history: History, day: dt.date) -> list[float] | None:
    values = history.get(day)
    if values is None or any(v is None for v in values):
        return None
    return [v for v in values if v is not None]


def _mean(days: Sequence[Sequence[float]]) -> list[float]:
    return [statistics.fmean(col) for col in zip(*days, strict=True)]


def naive_day(history: History, day: dt.date) -> list[float] | None:
    return complete(history, day - _ONE_DAY)


def naive_week(history: History, day: dt.date) -> list[float] | None:
    return complete(history, day - 7 * _ONE_DAY)


def recent_mean(history: History, day: dt.date, k: int = 7) -> list[float] | None:
    days = [d for i in range(1, k + 1) if (d := complete(history, day - i * _ONE_DAY))]
    return _mean(days) if len(days) >= 3 else None


def weekday_mean(history: History, day: dt.date, k: int = 4) -> list[float] | None:
    days = [d for i in range(1, k + 2) if (d := complete(history, day - 7 * i * _ONE_DAY))]
    return _mean(days[:k]) if len(days) >= 2 else None


def weekday_level(history: History, day: dt.date) -> list[float] | None:
    shape = weekday_mean(history, day)
    if shape is None:
        return None
    seen = expected = 0.0
    for i in range(1, 4):
        before = day - i * _ONE_DAY
        actual, fitted = complete(history, before), weekday_mean(history, before)
        if actual and fitted:
            seen += sum(actual)
            expected += sum(fitted)
    level = min(1.2, max(0.8, seen / expected)) if expected else 1.0
    return [v * level for v in shape]


def holt_winters(history: History, day: dt.date) -> list[float] | None:
    days = sorted(d for d, v in history.items() if d < day and any(x is not None for x in v))
    if len(days) < 8 or (day - days[0]).days < 8:
        return None
    first = days[0]
    series: list[float | None] = []
    for i in range((day - first).days):
        series.extend(history.get(first + i * _ONE_DAY) or [None] * SLOTS_PER_DAY)
    init = series[:HW_SEASON]
    known = [v for v in init if v is not None]
    if len(known) < HW_SEASON // 2:
        return None
    level = statistics.fmean(known)
    season = [(v - level) if v is not None else 0.0 for v in init]
    for t in range(HW_SEASON, len(series)):
        y = series[t]
        if y is None:
            continue
        i = t % HW_SEASON
        new_level = HW_ALPHA * (y - season[i]) + (1 - HW_ALPHA) * level
        season[i] = HW_GAMMA * (y - new_level) + (1 - HW_GAMMA) * season[i]
        level = new_level
    n = len(series)
    return [max(0.0, level + season[(n + q) % HW_SEASON]) for q in range(SLOTS_PER_DAY)]


METHODS: dict[str, Method] = {
    "naive_day": naive_day,
    "naive_week": naive_week,
    "recent_mean": recent_mean,
    "weekday_mean": weekday_mean,
    "weekday_level": weekday_level,
    "holt_winters": holt_winters,
}


def mape(actual: Sequence[float], forecast: Sequence[float]) -> float | None:
    """Mean absolute percentage error over the slots with load (percent)."""
    errors = [abs(a - f) / a for a, f in zip(actual, forecast, strict=True) if a > 0]
    return 100 * statistics.fmean(errors) if errors else None


@dataclass(frozen=True)
class Forecast:
    area: str
    day: dt.date
    method: str
    kw: tuple[float, ...]  # 96 quarter-hours from local midnight
    validation: dict[str, float]  # method -> mean MAPE (%) over the validation days
    validation_days: tuple[dt.date, ...]
    baseline_kw: tuple[float, ...] | None  # naive_day's forecast for the day

    @property
    def validation_mape(self) -> float:
        return self.validation[self.method]

    @property
    def baseline_mape(self) -> float | None:
        return self.validation.get(BASELINE)


def backtest(history: History, days: Sequence[dt.date]) -> tuple[dict[str, float], list[dt.date]]:
    """Mean MAPE per method over those of ``days`` with a complete actual load on which
    every method could forecast (so all are judged on the same days)."""
    per_day: dict[dt.date, dict[str, float]] = {}
    for day in days:
        actual = complete(history, day)
        if actual is None:
            continue
        scores = {}
        for name, method in METHODS.items():
            predicted = method(history, day)
            error = mape(actual, predicted) if predicted is not None else None
            if error is not None:
                scores[name] = error
        per_day[day] = scores
    usable = [d for d, s in per_day.items() if BASELINE in s]
    names = [n for n in METHODS if all(n in per_day[d] for d in usable)] if usable else []
    return {n: statistics.fmean(per_day[d][n] for d in usable) for n in names}, usable


def forecast(
    history: History,
    area: str,
    day: dt.date,
    validation_days: int = VALIDATION_DAYS,
) -> Forecast:
    """Forecast ``day`` from the days of ``history`` before it (later days are ignored)."""
    past = {d: v for d, v in history.items() if d < day}
    have = sum(complete(past, d) is not None for d in past)
    if have < MIN_HISTORY_DAYS:
        raise NotEnoughData(
            f"area {area}: {have} complete days of load before {day};"
            f" a forecast needs at least {MIN_HISTORY_DAYS}"
        )
    candidates = [day - i * _ONE_DAY for i in range(validation_days, 0, -1)]
    scores, used = backtest(past, candidates)
    available = {n: s for n, s in scores.items() if METHODS[n](past, day) is not None}
    if not available:
        raise NotEnoughData(
            f"area {area}: no method could be validated on the {validation_days} days before"
            f" {day} (complete days with a complete day before them are needed)"
        )
    method = min(available, key=lambda n: (available[n], list(METHODS).index(n)))
    predicted = METHODS[method](past, day)
    assert predicted is not None
    baseline = naive_day(past, day)
    return Forecast(
        area,
        day,
        method,
        tuple(predicted),
        scores,
        tuple(used),
        tuple(baseline) if baseline else None,
    )
