"""Collection completeness (issue 20, item 6): exact figures on crafted data, on SQLite and
PostgreSQL — live and recovered apart, late arrivals, a meter commissioned mid-day, a
meter moved between concentrators, an unassigned meter, a meter never heard from, readings
off the grid or outside the archive, and a site at +05:45."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers import Operators
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_receiver.cli import main
from cloud_receiver.storage import MeterRecord, Storage, open_storage
from cloud_receiver.storage import ownership as rule
from cloud_receiver.storage.completeness import MeterDay, Plan, Report, compute
from cloud_receiver.storage.ownership import Assignment
from contract.records import Event, Reading

CST = dt.timezone(dt.timedelta(hours=8))
PLAN = Plan(CST)
DAY = dt.date(2025, 3, 10)
MIDNIGHT = PLAN.day_start(DAY)
NEXT = MIDNIGHT + 86_400
A, B, C, D, E, STRAY = (f"00000000000{i}" for i in range(1, 7))
LONG_AGO = MIDNIGHT - 30 * 86_400


def energy(meter: str, slots: range, source: str = "poll", quantity: str = "energy_fwd_total"
           ) -> list[Reading]:  # fmt: skip
    return [Reading(meter, quantity, s, f"{s % 1000}.00", "kWh", s + 5.0, source) for s in slots]


def q(first: int, last: int, day: int = MIDNIGHT, step: int = 900) -> range:
    """Slots numbered first..last of the local day starting at ``day``."""
    return range(day + first * step, day + (last + 1) * step, step)


def assign(storage: Storage, *rows: tuple[str, int, str]) -> None:
    with storage.transaction() as conn:
        rule.assign(conn, [Assignment(m, t, c, 1.0, "test") for m, t, c in rows])


def deliver(storage: Storage, batches: list[tuple[str, float, list[Reading]]]) -> None:
    for seq, (concentrator, received_at, readings) in enumerate(batches, start=1):
        storage.ingest(concentrator, seq, 1, readings, [], received_at)


def report(storage: Storage, now: float, plan: Plan = PLAN, days: int = 1, **kw: str) -> Report:
    with storage.read() as conn:
        return compute(conn, plan, DAY, DAY + dt.timedelta(days=days), now, **kw)


def fill(storage: Storage) -> None:
    storage.replace_archive(
        [MeterRecord(m, "TA-1", "customer") for m in (A, B, C)]
        + [MeterRecord(m, "TA-2", "customer") for m in (D, E)]
    )
    assign(
        storage,
        (A, LONG_AGO, "dc-1"),
        (B, LONG_AGO, "dc-1"),
        (C, MIDNIGHT + 10 * 3600, "dc-1"),  # commissioned at 10:00: 56 slots due
        (D, LONG_AGO, "dc-2"),
    )  # fmt: skip  (E: in the archive, never assigned, never heard)
    deliver(storage, [
        ("dc-1", MIDNIGHT + 43_200, energy(A, q(0, 95)) + energy(B, q(0, 79))),
        # B's last 16 slots recovered from its memory: 8 before the cut-off (02:00), 8 after.
        ("dc-1", NEXT + 3600, energy(B, q(80, 87), "backfill")),
        ("dc-1", NEXT + 5 * 3600, energy(B, q(88, 95), "backfill")),
        # C: its backlog before commissioning does not count; 50..59 never arrive.
        ("dc-1", NEXT, energy(C, q(30, 49)) + energy(C, q(60, 95))),
        # D: only a reading off the grid, and another quantity: nothing counts.
        ("dc-2", NEXT, energy(D, range(MIDNIGHT + 300, MIDNIGHT + 301))
         + energy(D, q(0, 95), quantity="voltage_a")),
        ("dc-2", NEXT, energy(STRAY, q(0, 95))),  # not in the archive
    ])  # fmt: skip
    # dc-1's own view of the day (and of the day before, outside the window).
    told = [
        Event("collection_day", "warning", None, {"day": d, **TOLD, "incomplete": []}, at)
        for d, at in (("2025-03-10", NEXT + 900), ("2025-03-09", MIDNIGHT + 900))
    ]
    storage.ingest("dc-1", 99, 1, [], told, NEXT + 900)  # fmt: skip


TOLD = {"meters": 3, "complete": 1, "expected": 248, "live": 230, "recovered": 16}


def row(r: Report, meter: str) -> MeterDay:
    (found,) = [m for m in r.rows if m.meter == meter]
    return found


def test_a_closed_day_exact_figures(receiver_storage: Storage) -> None:
    fill(receiver_storage)
    r = report(receiver_storage, NEXT + 12 * 3600)
    assert [(m.meter, m.concentrator, m.expected, m.live, m.recovered, m.late, m.status)
            for m in r.rows] == [
        (A, "dc-1", 96, 96, 0, 0, "complete"),
        (B, "dc-1", 96, 80, 16, 8, "late"),
        (C, "dc-1", 56, 46, 0, 0, "partial"),
        (D, "dc-2", 96, 0, 0, 0, "never_answered"),
        (E, "", 96, 0, 0, 0, "never_answered"),
    ]  # fmt: skip
    (day,) = r.totals("day")
    assert (day.key, day.meters, day.complete, day.expected, day.live, day.recovered, day.late) \
        == ("2025-03-10", 5, 2, 440, 222, 16, 8)  # fmt: skip
    assert day.ratio == 238 / 440 and day.success_rate == 2 / 5
    by_c = {t.key: (t.meters, t.complete, t.expected, t.received) for t in r.totals("concentrator")}
    assert by_c == {"dc-1": (3, 2, 248, 238), "dc-2": (1, 0, 96, 0), "": (1, 0, 96, 0)}
    by_area = {t.key: (t.meters, t.expected, t.received) for t in r.totals("area")}
    assert by_area == {"TA-1": (3, 248, 238), "TA-2": (2, 192, 0)}
    assert [m.meter for m in r.incomplete()] == [B, C, D, E]
    assert r.archive == 5 and r.heard == {A, B, C}  # D only off the grid
    assert r.reported == {("dc-1", "2025-03-10"): TOLD}
    # The filters narrow the rows; the figures of what is left do not change.
    assert [m.meter for m in report(receiver_storage, NEXT * 2, area="TA-2").rows] == [D, E]
    assert [m.meter for m in report(receiver_storage, NEXT * 2, concentrator="dc-2").rows] == [D]
    assert report(receiver_storage, NEXT * 2, meter=B).rows == [row(r, B)]


def test_the_day_so_far_counts_completed_slots(receiver_storage: Storage) -> None:
    fill(receiver_storage)
    r = report(receiver_storage, MIDNIGHT + 10 * 3600 + 7 * 60)  # 10:07: 40 slots over
    # C is commissioned at 10:00: nothing of it is due yet, so it has no row.
    assert [(m.meter, m.expected, m.received, m.status) for m in r.rows] == [
        (A, 40, 40, "complete"), (B, 40, 40, "complete"),
        (D, 40, 0, "never_answered"), (E, 40, 0, "never_answered"),
    ]  # fmt: skip
    # Before the day is over nothing is late: the cut-off is tomorrow.
    assert r.overall().late == 0
    # In the first slot of the day nothing is due: no rows, no ratio rather than a false one.
    first = report(receiver_storage, MIDNIGHT + 600)
    assert first.rows == [] and first.overall().ratio is None


def test_moves_unassigned_meters_and_several_days(receiver_storage: Storage) -> None:
    receiver_storage.replace_archive([MeterRecord(m, "TA-1", "customer") for m in (A, B)])
    # A moves from dc-1 to dc-2 at noon of the second day; B is unassigned, delivered by
    # dc-3 the day before the window and on the first day, by nobody on the second.
    assign(receiver_storage, (A, LONG_AGO, "dc-1"), (A, NEXT + 12 * 3600, "dc-2"))
    deliver(receiver_storage, [
        ("dc-1", NEXT, energy(A, q(0, 95)) + energy(A, q(0, 47, NEXT))),
        ("dc-2", NEXT + 86_400 + 3 * 3600, energy(A, q(48, 95, NEXT))),  # after 02:00
        ("dc-3", MIDNIGHT, energy(B, q(90, 95, MIDNIGHT - 86_400)) + energy(B, q(0, 9))),
    ])  # fmt: skip
    r = report(receiver_storage, NEXT + 2 * 86_400, days=2)
    got = [(m.day.day, m.meter, m.concentrator, m.received, m.late, m.status) for m in r.rows]
    assert got == [
        (10, A, "dc-1", 96, 0, "complete"),
        (10, B, "dc-3", 10, 0, "partial"),
        (11, A, "dc-2", 96, 48, "late"),  # its owner at the day's last slot
        (11, B, "dc-3", 0, 0, "never_answered"),  # still where it was last heard
    ]
    assert [(t.key, t.meters, t.expected, t.received) for t in r.totals("day")] == [
        ("2025-03-10", 2, 192, 106), ("2025-03-11", 2, 192, 96),
    ]  # fmt: skip


def test_a_site_at_plus_0545_hourly(receiver_storage: Storage) -> None:
    """Nepal's fixed +05:45: local midnight is 18:15 UTC, hourly slots at :15 UTC."""
    plan = Plan(dt.timezone(dt.timedelta(hours=5, minutes=45)), interval_s=3600)
    start = plan.day_start(DAY)
    assert dt.datetime.fromtimestamp(start, dt.UTC).strftime("%H:%M") == "18:15"
    receiver_storage.replace_archive([MeterRecord(m, "TA-1", "customer") for m in (A, B)])
    deliver(receiver_storage, [
        # A on local hours, the one before midnight belongs to the day before.
        ("dc-1", start, energy(A, q(-1, 23, start, 3600))),
        # B on UTC hours: 45 minutes off this site's grid, none of them counts.
        ("dc-1", start, energy(B, q(0, 23, start - 900, 3600))),
    ])  # fmt: skip
    r = report(receiver_storage, start + 2 * 86_400, plan)
    assert [(m.meter, m.expected, m.received, m.status) for m in r.rows] == [
        (A, 24, 24, "complete"), (B, 24, 0, "never_answered"),
    ]  # fmt: skip


def test_bad_plans_and_ranges_are_refused(receiver_storage: Storage) -> None:
    with pytest.raises(ValueError, match="interval 700 s: expected a divisor of a day"):
        Plan(CST, interval_s=700)
    with pytest.raises(ValueError, match="interval 0 s"):
        Plan(CST, interval_s=0)
    with pytest.raises(ValueError, match="late_after -1 s"):
        Plan(CST, late_after_s=-1)
    assert Plan(CST, interval_s=300).slots_per_day == 288  # never a fixed 96
    with receiver_storage.read() as conn, pytest.raises(ValueError, match="empty range"):
        compute(conn, PLAN, DAY, DAY, NEXT)
    # An empty archive is an empty report, not an error.
    assert report(receiver_storage, NEXT).rows == []


# ---------------------------------------------------------------------- the command
def test_the_command_reports_as_json_and_as_a_table(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    db_url = f"sqlite:///{tmp_path / 'r.db'}"
    s = open_storage(db_url)
    try:
        fill(s)
    finally:
        s.close()
    env = {"MF_SESSION": str(operators(db_url).login("vera", "viewer")), "COLUMNS": "200"}

    def run(*args: str) -> Result:
        return CliRunner().invoke(main, ["completeness", "--db", db_url, *args], env=env)

    done = run("--day", "2025-03-10", "--json")
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert doc["plan"] == {"quantity": "energy_fwd_total", "interval_s": 900,
                           "slots_per_day": 96, "late_after_s": 7200}  # fmt: skip
    assert (
        doc["since"] == "2025-03-10T00:00:00+08:00" and doc["until"] == "2025-03-11T00:00:00+08:00"
    )
    assert doc["overall"] == {
        "meters": 5, "complete": 2, "success_rate": 0.4, "expected": 440, "live": 222,
        "recovered": 16, "late": 8, "missing": 202, "ratio": 238 / 440,
    }  # fmt: skip
    assert set(doc["concentrators"]) == {"dc-1", "dc-2", ""}
    assert doc["areas"]["TA-2"]["missing"] == 192
    assert [(m["meter"], m["status"]) for m in doc["meters"]] == [
        (A, "complete"), (B, "late"), (C, "partial"), (D, "never_answered"),
        (E, "never_answered"),
    ]  # fmt: skip
    assert doc["meters"][4]["concentrator"] is None and doc["more"] == 0
    assert doc["reported"] == [{"concentrator": "dc-1", "day": "2025-03-10", **TOLD}]
    # Only the meters that fell short, at most two of them: the rest counted on stderr.
    short = run("--day", "2025-03-10", "--incomplete-only", "--limit", "2", "--json")
    assert [m["meter"] for m in json.loads(short.stdout)["meters"]] == [B, C]
    assert "2 more rows" in short.stderr
    hourly = run("--since", "2025-03-10", "--until", "2025-03-11", "--area", "TA-1",
                 "--interval", "1h", "--json")  # fmt: skip
    assert json.loads(hourly.stdout)["overall"]["expected"] == 24 + 24 + 14
    table = run("--day", "2025-03-10", "--concentrator", "dc-1")
    assert table.exit_code == 0, table.output
    assert "concentrator dc-1" in table.stdout and "recovered" in table.stdout
    assert "partial" in table.stdout and D not in table.stdout
    assert "their collection_day events" in table.stdout
    for args, message in (
        (("--day", "2025-03-10", "--since", "2025-03-09"), "--day is one day"),
        (("--since", "2025-03-10", "--until", "2025-03-10"), "empty range"),
        (("--interval", "7m"), "expected an interval that divides a day"),
        (("--day", "10.3.2025"), "expected a date YYYY-MM-DD"),
    ):
        bad = run(*args)
        assert bad.exit_code == 2 and message in bad.output, (args, bad.output)


# ---------------------------------------------------------------------- against a model
GRIDS = (900, 3600)
SOURCES = ("poll", "backfill", "ondemand")
reading_st = st.tuples(
    st.integers(0, 2),  # meter
    st.integers(-86_400 // 300, 2 * 86_400 // 300),  # slot, in 5-minute steps from MIDNIGHT
    st.sampled_from(SOURCES),
    st.sampled_from(["dc-1", "dc-2"]),
    st.integers(0, 3 * 86_400),  # arrival after the slot
)
Commissioned = list[tuple[int, str] | None]


def model(
    plan: Plan, commissioned: Commissioned, got: dict[tuple[int, int], tuple[str, str, int]],
    now: int,
) -> list[tuple[object, ...]]:  # fmt: skip
    """The module docstring's rule, by brute force over every slot."""
    rows = []
    due_until = min(NEXT + 86_400, plan.grid_floor(now))
    for day, start in ((DAY, MIDNIGHT), (DAY + dt.timedelta(days=1), NEXT)):
        for i, name in enumerate((A, B, C)):
            c = commissioned[i]
            lo = max(start, plan.grid_ceil(c[0])) if c else start
            hi = min(start + 86_400, due_until)
            slots = range(lo, hi, plan.interval_s) if hi > lo else range(0)
            if not slots:
                continue
            live = recovered = late = 0
            for s in slots:
                if (i, s) in got:
                    source, _, arrived = got[(i, s)]
                    live += source != "backfill"
                    recovered += source == "backfill"
                    late += arrived > plan.cutoff(day)
            if c:
                owner = c[1]
            else:
                heard = [(s, g[1]) for (j, s), g in got.items() if j == i
                         and MIDNIGHT - 86_400 <= s < hi
                         and (s + plan.offset_s) % plan.interval_s == 0]  # fmt: skip
                owner = max(heard)[1] if heard else ""
            rows.append((day, name, owner, len(slots), live, recovered, late))
    return rows


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    interval=st.sampled_from(GRIDS),
    commissioned=st.lists(
        st.one_of(st.none(), st.tuples(st.integers(MIDNIGHT - 3600, NEXT + 86_400),
                                       st.sampled_from(["dc-1", "dc-2"]))),
        min_size=3, max_size=3,
    ),
    readings=st.lists(reading_st, max_size=40),
    now_after=st.integers(0, 4 * 86_400),
)  # fmt: skip
def test_the_figures_match_the_rule_by_brute_force(
    tmp_path: Path,
    interval: int,
    commissioned: Commissioned,
    readings: list[tuple[int, int, str, str, int]],
    now_after: int,
) -> None:
    """Random archives (commissioned or not, on or off the grid), readings (any source,
    on or off the grid, before and in the window, arriving any time up to now) and
    times: the figures are those of the rule, computed slot by slot."""
    plan, now = Plan(CST, interval_s=interval), MIDNIGHT + now_after
    s = open_storage(f"sqlite:///{tmp_path / f'm{uuid.uuid4().hex}.db'}")
    try:
        s.replace_archive([MeterRecord(m, "TA-1", "customer") for m in (A, B, C)])
        assign(s, *[(m, c[0], c[1]) for m, c in zip((A, B, C), commissioned, strict=True) if c])
        got: dict[tuple[int, int], tuple[str, str, int]] = {}
        for seq, (i, step, source, conc, after) in enumerate(readings, start=1):
            slot = MIDNIGHT + 300 * step
            arrived = min(now, slot + after)
            if (i, slot) in got or arrived < slot:
                continue  # one reading per slot; none arrives before its slot
            got[(i, slot)] = (source, conc, arrived)
            s.ingest(conc, seq, 1, energy((A, B, C)[i], range(slot, slot + 1), source), [],
                     arrived)  # fmt: skip
        with s.read() as conn:
            r = compute(conn, plan, DAY, DAY + dt.timedelta(days=2), now)
    finally:
        s.close()
    got_rows = [(m.day, m.meter, m.concentrator, m.expected, m.live, m.recovered, m.late)
                for m in r.rows]  # fmt: skip
    assert got_rows == model(plan, commissioned, got, now)
    for t in r.totals("day"):
        assert t.received <= t.expected and t.complete <= t.meters
