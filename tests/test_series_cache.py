"""`SeriesCache` returns what `Storage.series` returns, also after readings arrive late,
and fetches again only the week-long chunks whose readings changed."""

from __future__ import annotations

from cloud_receiver.storage import Storage
from cloud_receiver.storage.series_cache import CHUNK_S, SeriesCache
from contract.records import Reading

T0 = 1767196800  # 2026-01-01 00:00 +08:00
FWD = ("energy_fwd_total", "frozen_daily_energy_fwd_total")
M, OTHER = "000000000101", "000000000102"


def test_the_cache_returns_the_stored_series_and_sees_late_readings(
    receiver_storage: Storage,
) -> None:
    storage = receiver_storage
    # Three weeks of quarter hours with a hole on the 10th (a concentrator offline),
    # a voltage the report does not ask for, and a second meter.
    hole = range(T0 + 9 * 86400, T0 + 10 * 86400, 900)
    slots = [s for s in range(T0, T0 + 21 * 86400, 900) if s not in hole]
    seq = 0
    for i in range(0, len(slots), 500):
        seq += 1
        part = slots[i : i + 500]
        storage.ingest("dc-1", seq, 1, [
            *(Reading(M, "energy_fwd_total", s, f"{100 + s % 7}.00", "kWh", s + 3.0)
              for s in part),
            *(Reading(M, "voltage_a", s, "220.1", "V", s + 3.0) for s in part),
            *(Reading(OTHER, "energy_fwd_total", s, "5.00", "kWh", s + 3.0) for s in part),
        ], [], T0)  # fmt: skip
    cache = SeriesCache(storage)
    ranges = [(T0 - 3600, T0 + 21 * 86400 + 86401), (T0 + 3 * 86400, T0 + 12 * 86400),
              (T0 + 9 * 86400 + 450, T0 + 9 * 86400 + 451)]  # fmt: skip
    for since, until in ranges:
        assert cache.series(FWD, [M], since, until) == storage.series(FWD, [M], since, until)
    both = cache.series(FWD, [OTHER, M], T0, T0 + 7 * 86400)
    assert both == storage.series(FWD, [OTHER, M], T0, T0 + 7 * 86400)
    assert {r[0] for r in both} == {M, OTHER} and {r[1] for r in both} == {"energy_fwd_total"}

    # Asked again: nothing fetched, the same rows.
    fetched = cache.fetched
    since, until = ranges[0]
    assert cache.series(FWD, [M], since, until) == storage.series(FWD, [M], since, until)
    assert cache.fetched == fetched

    # The hole filled late (a backlog delivered days after), and a daily freeze: the
    # cache returns them, fetching only the chunk they fell in.
    storage.ingest("dc-1", seq + 1, 1, [
        *(Reading(M, "energy_fwd_total", s, "1.00", "kWh", s + 3.0) for s in hole[:4]),
        Reading(M, "frozen_daily_energy_fwd_total", T0 + 10 * 86400 + 60, "150.00", "kWh",
                T0 + 10 * 86400 + 63),
    ], [], T0 + 20 * 86400)  # fmt: skip
    now = cache.series(FWD, [M], since, until)
    assert now == storage.series(FWD, [M], since, until)
    assert (M, "energy_fwd_total", hole[0], "1.00") in now
    assert (M, "frozen_daily_energy_fwd_total", T0 + 10 * 86400 + 60, "150.00") in now
    changed = {s // CHUNK_S for s in (hole[0], T0 + 10 * 86400 + 60)}
    assert cache.fetched == fetched + len(changed) == fetched + 1  # one week refetched

    # Bounded: a small cache drops chunks and still answers as the database.
    small = SeriesCache(storage, max_rows=700)
    for since, until in ranges:
        assert small.series(FWD, [M], since, until) == storage.series(FWD, [M], since, until)
    assert sum(len(rows) for rows in small._chunks.values()) <= 700 or len(small._chunks) == 1
