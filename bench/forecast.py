"""Forecast benchmark: next-day area load, the chosen method against seasonal naive.

Simulates transformer areas (``hil_sim.areas``: 4 areas x 20 customers, 8 weeks, seed 1),
stores them in a receiver SQLite database through ``Storage.ingest`` as the receiver
would, and forecasts each of the last 14 days of every area from the days before it
(``cloud_receiver.applications.analytics.forecast.forecast``: the method is chosen on
the 14 days before each forecast day, so the held-out day never takes part in the
choice). Prints
``BENCH <name> <value> <unit>`` lines, MAPE over the same held-out area-days:

- forecast_mape — the chosen method;
- naive_mape — the seasonal-naive baseline, yesterday's same quarter-hour;
- naive_week_mape — the same weekday last week (the other seasonal-naive choice).

``--quick`` (the test suite's smoke run): 2 areas x 10 customers, 5 weeks, 7 held-out days.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cloud_receiver.public import DEFAULT_TZ, Archive, SqliteStorage
from cloud_receiver.public import forecast as fc
from hil_sim.areas import AreaSim, AreaSpec, Options, area_name, ingest

START = dt.date(2026, 1, 5)  # a Monday


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run for the test suite")
    args = parser.parse_args()
    n_areas, customers, days, held_out = (2, 10, 35, 7) if args.quick else (4, 20, 56, 14)
    options = Options(tuple(AreaSpec(customers=customers) for _ in range(n_areas)), START, days, 1)
    sim = AreaSim(options)
    errors: dict[str, list[float]] = collections.defaultdict(list)
    chosen: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        storage = SqliteStorage(Path(tmp) / "receiver.db")
        try:
            t0 = time.perf_counter()
            stored = ingest(storage, sim)
            storage.replace_archive(sim.archive())
            print(f"# {stored} readings ingested in {time.perf_counter() - t0:.1f} s", flush=True)
            archive = Archive(storage.archive())
            end = START + dt.timedelta(days=days)
            t0 = time.perf_counter()
            for i in range(1, n_areas + 1):
                area = area_name(i)
                history = fc.area_history(storage, archive, area, START, end, DEFAULT_TZ)
                for k in range(days - held_out, days):
                    day = START + dt.timedelta(days=k)
                    actual = fc.complete(history, day)
                    if actual is None:
                        raise RuntimeError(f"{area} {day}: the simulated load is incomplete")
                    result = fc.forecast(history, area, day)
                    chosen[result.method] += 1
                    before = {d: v for d, v in history.items() if d < day}
                    for name, predicted in (
                        ("forecast", list(result.kw)),
                        ("naive", fc.naive_day(before, day)),
                        ("naive_week", fc.naive_week(before, day)),
                    ):
                        error = fc.mape(actual, predicted) if predicted else None
                        if error is None:
                            raise RuntimeError(f"{area} {day}: no {name} forecast")
                        errors[name].append(error)
            elapsed = time.perf_counter() - t0
        finally:
            storage.close()
    n = len(errors["forecast"])
    print(f"# {n} held-out area-days; methods chosen: {dict(chosen)}; {elapsed:.1f} s")
    print(f"BENCH forecast_mape {statistics.fmean(errors['forecast']):.2f} %")
    print(f"BENCH naive_mape {statistics.fmean(errors['naive']):.2f} %")
    print(f"BENCH naive_week_mape {statistics.fmean(errors['naive_week']):.2f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
