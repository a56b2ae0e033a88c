"""Utility analytics (issue 10): line loss, suspects, usage, forecast, plots, archive.

The scenario is simulated transformer areas (``hil_sim.areas``) with known theft, a
vacation and data gaps, ingested through ``Storage.ingest`` into SQLite and into
PostgreSQL (a schema of its own for this module), then judged against the simulator's
ground truth. Everything is seeded: the same run gives the same figures.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import struct
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from helpers import Operators
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_receiver.applications.analytics import forecast as fc
from cloud_receiver.applications.analytics import plots
from cloud_receiver.applications.analytics.energy import (
    DEFAULT_TZ,
    ENERGY_FWD,
    FREEZE_FWD,
    Boundary,
    MeterData,
    SlotEnergy,
    add_slots,
    boundary,
    meter_days,
    midnight,
    parse_tz,
    slot_energy,
)
from cloud_receiver.applications.analytics.lineloss import line_loss, summarise
from cloud_receiver.applications.analytics.suspects import ALARM_SCORE, rank_suspects
from cloud_receiver.applications.analytics.usage import parse_tou, subrange, usage_report
from cloud_receiver.applications.fleet.archive import (
    Archive,
    ArchiveError,
    MeterRecord,
    UnknownName,
    format_archive_csv,
    merge,
    parse_archive_csv,
)
from cloud_receiver.cli import main as receiver_cli
from cloud_receiver.storage import Storage, open_storage
from contract.records import Event, Reading
from hil_sim.areas import (
    AreaSim,
    AreaSpec,
    Batch,
    Gap,
    Options,
    Theft,
    Vacation,
    area_name,
    ingest,
    meter_address,
    parse_theft,
)
from hil_sim.cli import main as sim_cli

ROOT = Path(__file__).resolve().parent.parent
START = dt.date(2026, 1, 5)  # a Monday
DAYS = 36
LAST = START + dt.timedelta(days=DAYS - 1)  # the analysis day: thefts started 4-5 days ago
CUSTOMERS = 12
D = dt.timedelta(days=1)

# TA-0001: a bypass with a cover-open event and a reverse-CT theft; customer 5 misses
# the readings around one midnight (interpolated), customer 6 four hours around another
# (no boundary: two days incomplete). TA-0002: no theft, a customer on holiday.
# TA-0003: a three-phase customer bypasses phase A, no event.
GAP_DAY_SHORT, GAP_DAY_LONG = 10, 15
SCENARIO = Options(
    (
        AreaSpec(
            customers=CUSTOMERS,
            thefts=(Theft(3, 31, 0.5, "bypass", "meter_cover_open"), Theft(7, 32, 0.4, "reverse")),
            gaps=(
                Gap(5, GAP_DAY_SHORT * 86400 - 1800, 3600),
                Gap(6, GAP_DAY_LONG * 86400 - 7200, 4 * 3600),
            ),
        ),
        AreaSpec(customers=CUSTOMERS, vacations=(Vacation(4, 30, 10),)),
        AreaSpec(customers=CUSTOMERS, thefts=(Theft(12, 32, 1.0, "phase"),)),
    ),
    START,
    DAYS,
    seed=7,
)
TA1, TA2, TA3 = (area_name(i) for i in (1, 2, 3))


@pytest.fixture(scope="module")
def scenario() -> tuple[AreaSim, list[Batch]]:
    sim = AreaSim(SCENARIO)
    return sim, list(sim.batches())


def _load(url: str, sim: AreaSim, batches: list[Batch]) -> None:
    storage = open_storage(url)
    try:
        for b in batches:
            storage.ingest(b.concentrator, b.seq, 1, b.readings, b.events, b.received_at)
        storage.replace_archive(sim.archive())
    finally:
        storage.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def db_url(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    scenario: tuple[AreaSim, list[Batch]],
) -> Iterator[str]:
    """The scenario stored once per backend for this module (PostgreSQL: its own schema,
    dropped afterwards, as conftest's ``pg_url`` does per test)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('analytics') / 'receiver.db'}"
        _load(url, *scenario)
        yield url
        return
    server: str = request.getfixturevalue("pg_server")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in server else "?"
    url = f"{server}{sep}options=-csearch_path%3D{schema}"
    try:
        _load(url, *scenario)
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def storage(db_url: str) -> Iterator[Storage]:
    s = open_storage(db_url)
    yield s
    s.close()


def _truth(sim: AreaSim) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["area"], r["day"]): r for r in sim.truth if r["type"] == "day"}


@pytest.fixture(scope="module")
def analyst(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A viewer's login session on the module's database: the reports need one."""
    return Operators(db_url, tmp_path_factory.mktemp("sessions")).login("vera", "viewer")


def _cli(*args: str, session: Path) -> Any:
    return CliRunner().invoke(receiver_cli, list(args), env={"MF_SESSION": str(session)})


def _import(ops: Operators, *args: str) -> Any:
    """``archive import ARGS`` by one operator and, when it is queued, its approval by
    another, which carries it out: the result of the step that ended it."""
    result = _cli("archive", "import", *args, "--json", session=ops.login("olga", "operator"))
    if result.exit_code != 0:
        return result
    request = json.loads(result.stdout)["request"]
    return _cli("approve", str(request), "--db", ops.db_url, session=ops.login("ivan", "operator"))


# ------------------------------------------------------------------------ line loss


def test_line_loss_equals_the_simulators_ground_truth(
    storage: Storage, scenario: tuple[AreaSim, list[Batch]]
) -> None:
    sim, _ = scenario
    truth = _truth(sim)
    archive = Archive(storage.archive())
    checked = 0
    for area in (TA1, TA2, TA3):
        for day in line_loss(storage, archive, area, START, LAST + D, DEFAULT_TZ):
            t = truth[(area, day.day.isoformat())]
            if day.status == "incomplete":
                continue
            assert day.supply_kwh == Decimal(t["supply_kwh"])
            assert day.loss_kwh is not None and day.loss_rate is not None
            if day.status == "ok":
                # Boundaries straight from the registers: exactly what the meters showed.
                assert day.sales_kwh == Decimal(t["sales_kwh"]), (area, day.day)
                assert day.loss_kwh == Decimal(t["loss_kwh"]), (area, day.day)
                checked += 1
            else:  # one boundary interpolated over a 15-minute night gap
                assert abs(day.loss_kwh - Decimal(t["loss_kwh"])) <= Decimal("0.10")
            # The registers truncate to 0.01 kWh: the registered loss is the true loss
            # (technical + theft) to within one hundredth per meter and boundary.
            true_loss = t["technical_loss_kwh"] + t["theft_kwh"]
            assert abs(float(day.loss_kwh) - true_loss) <= 0.01 * (CUSTOMERS + 1) + 0.1 * (
                day.status == "estimated"
            )
    assert checked >= 3 * DAYS - 5


def test_interpolated_midnight_makes_the_day_estimated(storage: Storage) -> None:
    archive = Archive(storage.archive())
    days = line_loss(storage, archive, TA1, START, LAST + D, DEFAULT_TZ)
    by_day = {d.day: d for d in days}
    short = START + GAP_DAY_SHORT * D  # readings missing 23:30-00:30: midnight interpolated
    assert by_day[short - D].status == by_day[short].status == "estimated"
    assert by_day[short].estimated == 1


def test_missing_data_is_flagged_incomplete_never_loss(
    storage: Storage, db_url: str, analyst: Path
) -> None:
    archive = Archive(storage.archive())
    days = {d.day: d for d in line_loss(storage, archive, TA1, START, LAST + D, DEFAULT_TZ)}
    gap = START + GAP_DAY_LONG * D  # readings missing 22:00-02:00 around this midnight
    meter6 = meter_address(1, 6)
    for day in (gap - D, gap):
        d = days[day]
        assert d.status == "incomplete"
        assert d.loss_kwh is None and d.loss_rate is None
        assert d.missing_customers == (meter6,)
        assert d.sales_kwh < d.supply_kwh  # which would have looked like a lot of loss
    assert [d.day for d in days.values() if d.status == "incomplete"] == [gap - D, gap]
    summary = summarise(list(days.values()))
    assert summary.complete_days == DAYS - 2
    assert summary.loss_rate is not None and 0.03 < summary.loss_rate < 0.1

    result = _cli(
        "report",
        "loss",
        "--db",
        db_url,
        "--area",
        TA1,
        "--from",
        str(gap - D),
        "--to",
        str(gap + D),
        "--csv",
        session=analyst,
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["status"], r["loss_kwh"], r["loss_pct"], r["missing"]) for r in rows] == [
        ("incomplete", "", "", meter6)
    ] * 2
    assert all(r["missing_customers"] == "1" for r in rows)


# ------------------------------------------------------------------------- suspects


def test_thieves_rank_at_the_top_of_their_area_with_evidence(storage: Storage) -> None:
    archive = Archive(storage.archive())
    report = rank_suspects(storage, archive, TA1, LAST, DEFAULT_TZ)
    top = report.suspects[:2]
    assert {s.meter for s in top} == {meter_address(1, 3), meter_address(1, 7)}
    assert all(s.alarm and s.score >= ALARM_SCORE for s in top)
    assert len(report.alarms) == 2
    bypass = next(s for s in top if s.meter == meter_address(1, 3))
    assert any("meter cover opened ×1" in r for r in bypass.reasons)
    assert any(re.search(r"down \d+% against its own history", r) for r in bypass.reasons)
    reverse = next(s for s in top if s.meter == meter_address(1, 7))
    assert any(re.search(r"reverse energy register grew \d+\.\d\d kWh", r) for r in reverse.reasons)
    assert report.trend.z is not None and report.trend.z > 4

    phase = rank_suspects(storage, archive, TA3, LAST, DEFAULT_TZ)
    assert phase.suspects[0].meter == meter_address(3, 12) and phase.suspects[0].alarm
    assert any("phase currents unbalanced" in r for r in phase.suspects[0].reasons)
    assert len(phase.alarms) == 1


def test_no_theft_no_alarm_and_a_holiday_is_not_theft(storage: Storage) -> None:
    archive = Archive(storage.archive())
    report = rank_suspects(storage, archive, TA2, LAST, DEFAULT_TZ)
    assert report.alarms == ()
    assert all(s.score < ALARM_SCORE for s in report.suspects)
    away = next(s for s in report.suspects if s.meter == meter_address(2, 4))
    assert any("against its own history" in r for r in away.reasons)
    # Before any theft began, the theft areas raise no alarm either.
    for area in (TA1, TA3):
        assert rank_suspects(storage, archive, area, START + 29 * D, DEFAULT_TZ).alarms == ()


@pytest.mark.parametrize("seed", [11, 12])
def test_no_alarm_without_theft_on_other_seeds(tmp_path: Path, seed: int) -> None:
    sim = AreaSim(Options((AreaSpec(customers=10), AreaSpec(customers=15)), START, DAYS, seed))
    storage = open_storage(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        ingest(storage, sim)
        storage.replace_archive(sim.archive())
        archive = Archive(storage.archive())
        for area in (area_name(1), area_name(2)):
            for day in (LAST, LAST - 3 * D):
                assert rank_suspects(storage, archive, area, day, DEFAULT_TZ).alarms == ()
    finally:
        storage.close()


def test_cover_open_counter_register_counts_as_tamper_evidence(tmp_path: Path) -> None:
    sim = AreaSim(Options((AreaSpec(customers=5, commercial=0),), START, DAYS, seed=3))
    storage = open_storage(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        ingest(storage, sim)
        storage.replace_archive(sim.archive())
        meter = meter_address(1, 2)
        counter = [
            Reading(meter, "cover_open_count", midnight(day, DEFAULT_TZ), str(n), "", 0.0)
            for day, n in ((LAST - 2 * D, 4), (LAST - D, 5), (LAST, 5))
        ]
        storage.ingest("dc-other", 1, 1, counter, [], 0.0)
        report = rank_suspects(storage, Archive(storage.archive()), area_name(1), LAST, DEFAULT_TZ)
    finally:
        storage.close()
    [suspect] = report.suspects
    assert suspect.meter == meter and suspect.score == 35.0 and not suspect.alarm
    assert suspect.reasons == ("meter cover opened ×1 (cover-open counter register)",)


def test_suspects_cli_json(db_url: str, analyst: Path) -> None:
    result = _cli(
        "report",
        "suspects",
        "--db",
        db_url,
        "--area",
        TA1,
        "--day",
        str(LAST),
        "--json",
        session=analyst,
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["alarm_score"] == ALARM_SCORE and doc["day"] == str(LAST)
    assert [s["meter"] for s in doc["suspects"][:2]] == [meter_address(1, 3), meter_address(1, 7)]
    assert all(s["reasons"] and s["score"] > 0 for s in doc["suspects"])
    table = _cli(
        "report", "suspects", "--db", db_url, "--area", TA1, "--day", str(LAST), session=analyst
    )
    assert table.exit_code == 0 and "ALARM" in table.stdout and "2 alarm(s)" in table.stdout


def test_reports_take_limit_within_their_own_day_range(db_url: str, analyst: Path) -> None:
    days = ["--from", str(START), "--to", str(START + 5 * D)]
    whole = _cli("report", "loss", "--db", db_url, "--area", TA1, *days, "--json",
                 session=analyst)  # fmt: skip
    assert whole.exit_code == 0, whole.output
    every = json.loads(whole.stdout)
    assert len(every["rows"]) == 5 and every["more"] == 0 and whole.stderr == ""
    cut = _cli("report", "loss", "--db", db_url, "--area", TA1, *days, "--limit", "2", "--json",
               session=analyst)  # fmt: skip
    doc = json.loads(cut.stdout)
    assert doc["rows"] == every["rows"][:2] and doc["more"] == 3
    assert doc["days"] == every["days"]  # the summary still counts every day
    assert cut.stderr.strip() == "3 more rows; use --limit (0: all) or a shorter --from/--to"
    table = _cli("report", "loss", "--db", db_url, "--area", TA1, *days, "--limit", "1",
                 session=analyst)  # fmt: skip
    assert str(START) in table.stdout and str(START + D) not in table.stdout
    assert "first 1 of 5 rows" in table.stdout and "4 more rows" in table.stderr
    usage = _cli("report", "usage", "--db", db_url, "--meter", meter_address(1, 1), *days,
                 "--by", "slot", "--limit", "96", "--csv", session=analyst)  # fmt: skip
    assert len(usage.stdout.splitlines()) == 1 + 96 and "384 more rows" in usage.stderr
    ranked = _cli("report", "suspects", "--db", db_url, "--area", TA1, "--day", str(LAST),
                  "--limit", "1", "--json", session=analyst)  # fmt: skip
    top = json.loads(ranked.stdout)
    assert [s["meter"] for s in top["suspects"]] == [meter_address(1, 3)] and top["more"] >= 1
    assert f"{top['more']} more row" in ranked.stderr
    listed = _cli("report", "suspects", "--db", db_url, "--area", TA1, "--day", str(LAST),
                  "--limit", "1", session=analyst)  # fmt: skip
    assert meter_address(1, 3) in listed.stdout and meter_address(1, 7) not in listed.stdout


# ------------------------------------------------------------------------ usage


def test_usage_daily_energy_and_time_of_use_split(storage: Storage) -> None:
    archive = Archive(storage.archive())
    tou = parse_tou()
    report = usage_report(
        storage, archive, "meter", meter_address(2, 1), START, START + 7 * D, DEFAULT_TZ, tou
    )
    assert len(report.days) == 7 and len(report.curve) == 7 * 96
    for day in report.days:
        assert day.status == "ok" and day.kwh is not None
        # Slot deltas telescope: the split adds up to the boundary difference.
        assert sum(day.tou.values()) == pytest.approx(float(day.kwh), abs=1e-6)
        assert set(day.tou) == {"peak", "flat", "valley"}
        assert day.peak_hour is not None and 17 <= day.peak_hour <= 21  # household evening
        assert day.max_kw is not None and day.max_kw > 0
    assert report.total_kwh == sum((d.kwh for d in report.days if d.kwh), Decimal(0))
    [month] = report.months
    assert month.month == "2026-01" and month.kwh == report.total_kwh and month.days == 7

    # An account of two meters is their sum; an area is its total meter.
    two = [
        MeterRecord(r.meter, r.area, r.role, "SHARED" if r.meter in _pair() else r.account)
        for r in archive.records
    ]
    account = usage_report(
        storage, Archive(two), "account", "SHARED", START, START + 2 * D, DEFAULT_TZ, tou
    )
    singles = [
        usage_report(storage, archive, "meter", m, START, START + 2 * D, DEFAULT_TZ, tou)
        for m in _pair()
    ]
    assert account.total_kwh == sum((s.total_kwh or Decimal(0) for s in singles), Decimal(0))
    area = usage_report(storage, archive, "area", TA2, START, START + D, DEFAULT_TZ, tou)
    assert area.meters[0].meter == meter_address(2, 0)

    # A day of a wider report is that day's own report (the portal reads a year once).
    m = _pair()[0]
    wide = usage_report(storage, archive, "meter", m, START, START + 2 * D, DEFAULT_TZ, tou)
    own = usage_report(storage, archive, "meter", m, START + D, START + 2 * D, DEFAULT_TZ, tou)
    part = subrange(wide, START + D, START + 2 * D, tou)
    assert part.days == own.days and part.months == own.months and part.since == own.since
    assert part.curve == own.curve and part.total_kwh == own.total_kwh
    with pytest.raises(ValueError, match="is not inside"):
        subrange(wide, START, START + 3 * D, tou)


def _pair() -> tuple[str, str]:
    return meter_address(2, 1), meter_address(2, 2)


def test_usage_csv_has_a_header_and_parses(db_url: str, analyst: Path) -> None:
    args = ["report", "usage", "--db", db_url, "--meter", meter_address(1, 1)]
    args += ["--from", str(START), "--to", str(START + 3 * D), "--csv"]
    rows = list(csv.reader(io.StringIO(_cli(*args, session=analyst).stdout)))
    assert rows[0] == [
        "day",
        "kwh",
        "peak_kwh",
        "flat_kwh",
        "valley_kwh",
        "peak_hour",
        "max_kw",
        "status",
        "note",
    ]
    assert len(rows) == 4 and all(Decimal(r[1]) > 0 for r in rows[1:])
    slots = list(csv.DictReader(io.StringIO(_cli(*args, "--by", "slot", session=analyst).stdout)))
    assert len(slots) == 3 * 96 and float(slots[0]["kw"]) >= 0
    months = list(csv.DictReader(io.StringIO(_cli(*args, "--by", "month", session=analyst).stdout)))
    assert [m["month"] for m in months] == ["2026-01"] and months[0]["days"] == "3"
    sharp = _cli(*args, "--tou", "sharp=19-21;peak=08-11,18-19,21-23;valley=23-07", session=analyst)
    assert sharp.exit_code == 0 and sharp.stdout.startswith("day,kwh,sharp_kwh,peak_kwh")


# ------------------------------------------------------------------------ plots


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_plots_have_titles_and_axis_units(storage: Storage) -> None:
    archive = Archive(storage.archive())
    report = usage_report(
        storage, archive, "area", TA1, START, START + 3 * D, DEFAULT_TZ, parse_tou()
    )
    fig = plots.load_curve(report, DEFAULT_TZ)
    [ax] = fig.axes
    assert TA1 in ax.get_title() and "Load curve" in ax.get_title()
    assert ax.get_ylabel() == "load (kW)" and "UTC+08:00" in ax.get_xlabel()
    assert len(ax.get_lines()[0].get_xdata()) == 3 * 96

    days = line_loss(storage, archive, TA1, START, LAST + D, DEFAULT_TZ)
    fig = plots.line_loss(days, TA1)
    rate, supply = fig.axes
    assert "Line loss" in rate.get_title() and rate.get_xlabel() == "day"
    assert rate.get_ylabel() == "line loss rate (%)" and supply.get_ylabel() == "supply (kWh/day)"
    labels = rate.get_legend_handles_labels()[1]
    assert "incomplete (not loss)" in labels  # the gap days are shown, apart from loss


def test_png_files_from_the_cli(db_url: str, tmp_path: Path, analyst: Path) -> None:
    curve, loss_png, forecast_png = (tmp_path / n for n in ("c.png", "l.png", "f.png"))
    result = _cli(
        "report",
        "usage",
        "--db",
        db_url,
        "--area",
        TA2,
        "--from",
        str(START),
        "--to",
        str(START + 7 * D),
        "--png",
        str(curve),
        session=analyst,
    )
    assert result.exit_code == 0, result.output
    result = _cli(
        "report",
        "loss",
        "--db",
        db_url,
        "--area",
        TA1,
        "--from",
        str(START),
        "--to",
        str(LAST + D),
        "--png",
        str(loss_png),
        session=analyst,
    )
    assert result.exit_code == 0, result.output
    result = _cli(
        "report",
        "forecast",
        "--db",
        db_url,
        "--area",
        TA2,
        "--day",
        str(LAST),
        "--png",
        str(forecast_png),
        session=analyst,
    )
    assert result.exit_code == 0, result.output
    for png in (curve, loss_png, forecast_png):
        assert _png_size(png) == (1000, 450)
        assert 20_000 < png.stat().st_size < 1_000_000


def test_plot_without_matplotlib_says_what_to_install(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = Archive(storage.archive())
    report = usage_report(storage, archive, "area", TA1, START, START + D, DEFAULT_TZ, parse_tou())
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(plots.PlotError, match=r"meterflow\[analytics\]"):
        plots.load_curve(report, DEFAULT_TZ)


# ------------------------------------------------------------------------ forecast


def test_forecast_beats_seasonal_naive_on_held_out_days(storage: Storage) -> None:
    archive = Archive(storage.archive())
    history = fc.area_history(storage, archive, TA2, START, LAST + D, DEFAULT_TZ)
    chosen, naive = [], []
    for day in (LAST - 2 * D, LAST - D, LAST):
        result = fc.forecast(history, TA2, day)
        assert len(result.kw) == 96 and result.method in fc.METHODS
        assert result.validation_mape <= min(result.validation.values())
        assert result.baseline_mape is not None
        actual = fc.complete(history, day)
        assert actual is not None and result.baseline_kw is not None
        chosen.append(fc.mape(actual, result.kw) or 0)
        naive.append(fc.mape(actual, result.baseline_kw) or 0)
    assert sum(chosen) < sum(naive)


def test_forecast_cli_prints_96_values(db_url: str, analyst: Path) -> None:
    result = _cli(
        "report",
        "forecast",
        "--db",
        db_url,
        "--area",
        TA3,
        "--day",
        str(LAST + D),
        "--csv",
        session=analyst,
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 96 and rows[0]["time"] == "00:00" and rows[-1]["time"] == "23:45"
    assert all(float(r["forecast_kw"]) > 0 for r in rows) and rows[0]["actual_kw"] == ""
    doc = json.loads(
        _cli(
            "report",
            "forecast",
            "--db",
            db_url,
            "--area",
            TA3,
            "--day",
            str(LAST),
            "--json",
            session=analyst,
        ).stdout
    )
    assert doc["method"] in fc.METHODS and len(doc["kw"]) == 96 and doc["mape"] > 0
    assert fc.BASELINE in doc["validation_mape"]


def test_forecast_benchmark_prints_both_figures() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "forecast.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    found = dict(re.findall(r"^BENCH (\S+) ([0-9.]+) %$", out, re.M))
    assert float(found["forecast_mape"]) < float(found["naive_mape"])


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["usage", "--area", "TA-9999"], 9, "area 'TA-9999' is not in the archive (known: TA-0001"),
        (["usage", "--meter", "999999999999"], 9, "meter '999999999999' is not in the archive"),
        (["usage", "--account", "NOPE"], 9, "account 'NOPE' is not in the archive"),
        (["loss", "--area", "nowhere"], 9, "area 'nowhere' is not in the archive"),
        (["usage", "--area", TA1, "--meter", "x"], 2, "exactly one of --meter"),
        (["usage"], 2, "exactly one of --meter"),
        (["usage", "--area", TA1, "--tou", "peak=08-11;valley=10-12"], 2, "10:00 is both"),
        (["usage", "--area", TA1, "--tou", "lunch=12-13"], 2, "NAME=HH-HH"),
        (["usage", "--area", TA1, "--tz", "Mars/Olympus"], 2, "expected a UTC offset"),
    ],
)
def test_bad_report_arguments_are_named(
    db_url: str, args: list[str], code: int, message: str, analyst: Path
) -> None:
    command, *rest = args
    result = _cli(
        "report",
        command,
        "--db",
        db_url,
        "--from",
        str(START),
        "--to",
        str(START + D),
        *rest,
        session=analyst,
    )
    assert result.exit_code == code, result.output
    assert message in result.output


@pytest.mark.parametrize(
    ("first", "end", "message"),
    [
        ("2026-13-01", "2026-02-01", "'2026-13-01': expected a date YYYY-MM-DD"),
        ("yesterday", "2026-02-01", "expected a date YYYY-MM-DD"),
        ("2026-02-01", "2026-02-01", "empty range"),
        ("2026-02-05", "2026-02-01", "empty range"),
    ],
)
def test_malformed_dates_and_empty_ranges_exit_2(
    db_url: str, first: str, end: str, message: str, analyst: Path
) -> None:
    for command in (["loss", "--area", TA1], ["usage", "--meter", meter_address(1, 1)]):
        result = _cli(
            "report", *command, "--db", db_url, "--from", first, "--to", end, session=analyst
        )
        assert result.exit_code == 2, result.output
        assert message in result.output


def test_reports_without_data_say_so(db_url: str, analyst: Path) -> None:
    far = "2030-06-01"
    result = _cli(
        "report", "suspects", "--db", db_url, "--area", TA1, "--day", far, session=analyst
    )
    assert result.exit_code == 3 and "no readings of area TA-0001" in result.output
    result = _cli(
        "report", "forecast", "--db", db_url, "--area", TA1, "--day", far, session=analyst
    )
    assert result.exit_code == 3 and "a forecast needs at least 8" in result.output
    result = _cli(
        "report", "suspects", "--db", db_url, "--area", TA1, "--day", "2030-02-30", session=analyst
    )
    assert result.exit_code == 2
    # A loss report over days without readings: every day incomplete, no loss invented.
    result = _cli(
        "report",
        "loss",
        "--db",
        db_url,
        "--area",
        TA1,
        "--from",
        far,
        "--to",
        "2030-06-03",
        "--csv",
        session=analyst,
    )
    assert result.exit_code == 0
    assert [r["status"] for r in csv.DictReader(io.StringIO(result.stdout))] == ["incomplete"] * 2


# ------------------------------------------------------------------------ archive


def test_archive_import_merge_list_and_errors(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    ops = operators(db)
    vera = ops.login("vera", "viewer")
    good = tmp_path / "a.csv"
    good.write_text(
        "\ufeffmeter,area,role,account,group,multiplier\n"
        "T1,台区-1,total,,,40\nC1,台区-1,customer,A1,household,\nC2,台区-1,customer,A1,,1\n",
        encoding="utf-8",
    )
    result = _import(ops, str(good), "--db", db)
    assert result.exit_code == 0, result.output
    assert "3 meters in 1 areas imported" in result.stdout
    more = tmp_path / "b.csv"
    more.write_text("meter,area,role\nC2,台区-2,customer\nT2,台区-2,total\n", encoding="utf-8")
    assert _import(ops, str(more), "--db", db).exit_code == 0
    listed = _cli("archive", "list", "--db", db, "--csv", session=vera)
    records = parse_archive_csv(listed.stdout)
    assert [(r.meter, r.area, r.multiplier) for r in records] == [
        ("T1", "台区-1", Decimal(40)),
        ("C1", "台区-1", Decimal(1)),
        ("T2", "台区-2", Decimal(1)),
        ("C2", "台区-2", Decimal(1)),  # moved by the second import
    ]
    clash = tmp_path / "c.csv"
    clash.write_text("meter,area,role\nT9,台区-1,total\n", encoding="utf-8")
    result = _import(ops, str(clash), "--db", db)
    assert result.exit_code == 7 and "already has total meter T1" in result.output
    assert _import(ops, str(clash), "--db", db, "--replace").exit_code == 0
    assert (
        len(parse_archive_csv(_cli("archive", "list", "--db", db, "--csv", session=vera).stdout))
        == 1
    )

    bad = tmp_path / "bad.csv"
    bad.write_text("meter,area,role\nM1,A,customer\nM2,A,boss\n", encoding="utf-8")
    result = _import(ops, str(bad), "--db", db)
    assert result.exit_code == 7 and "line 3, column role: 'boss'" in result.output
    result = _import(ops, str(tmp_path / "missing.csv"), "--db", db)
    assert result.exit_code == 1 and "missing.csv" in result.output
    result = _cli("archive", "list", "--db", db, "--area", "nowhere", session=vera)
    assert result.exit_code == 9


def test_an_area_without_total_meter_cannot_have_line_loss(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    ops = operators(db)
    csv_file = tmp_path / "a.csv"
    csv_file.write_text("meter,area,role\nC1,A,customer\n", encoding="utf-8")
    assert _import(ops, str(csv_file), "--db", db).exit_code == 0
    result = _cli(
        "report",
        "loss",
        "--db",
        db,
        "--area",
        "A",
        "--from",
        "2026-01-01",
        "--to",
        "2026-01-02",
        session=ops.login("vera", "viewer"),
    )
    assert result.exit_code == 7 and "area A has no total meter" in result.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("meter,area\nM,A\n", "the header lacks role"),
        ("meter,area,role,acount\nM,A,total,x\n", "unknown column(s) 'acount'"),
        ("meter,area,role\n", "no meters"),
        ("meter,area,role\nM,A,total,extra\n", "line 2: 4 fields, the header has 3"),
        ("meter,area,role\nM 1,A,total\n", "line 2, column meter: 'M 1' is not a name"),
        ("meter,area,role,multiplier\nM,A,total,-2\n", "column multiplier: '-2'"),
        ("meter,area,role,multiplier\nM,A,total,NaN\n", "column multiplier: 'NaN'"),
        ("meter,area,role\nM,A,total\nM,B,customer\n", "line 3: meter M already listed at line 2"),
        ("meter,area,role\nM,A,total\nN,A,total\n", "area A already has total meter M"),
    ],
)
def test_archive_errors_name_line_and_column(text: str, message: str) -> None:
    with pytest.raises(ArchiveError) as info:
        parse_archive_csv(text)
    assert message in str(info.value)


_names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters=',"'),
    min_size=1,
    max_size=12,
).filter(lambda s: not any(c.isspace() for c in s))


@st.composite
def _archives(draw: st.DrawFn) -> list[MeterRecord]:
    meters = draw(st.lists(_names, min_size=1, max_size=12, unique=True))
    records = []
    totals: set[str] = set()
    for meter in meters:
        area = draw(st.sampled_from(["A", "台区2", "C-3"]))
        role = "customer" if area in totals else draw(st.sampled_from(["total", "customer"]))
        if role == "total":
            totals.add(area)
        records.append(
            MeterRecord(
                meter,
                area,
                role,
                draw(st.one_of(st.just(""), _names)),
                draw(st.one_of(st.just(""), _names)),
                draw(st.decimals(min_value=Decimal("0.01"), max_value=10_000, places=2)),
            )
        )
    return records


@settings(max_examples=200, deadline=None)
@given(_archives())
def test_archive_csv_round_trips(records: list[MeterRecord]) -> None:
    assert parse_archive_csv(format_archive_csv(records)) == records
    assert merge([], records) == sorted(records, key=lambda r: (r.area, r.role != "total", r.meter))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('meterarolcustomt,"\n\r A1-2.9\ufeff'))))
def test_archive_parser_raises_only_archive_error(text: str) -> None:
    try:
        records = parse_archive_csv("meter,area,role\n" + text)
    except ArchiveError:
        return
    assert records and all(r.role in ("total", "customer") for r in records)


def test_archive_lookups() -> None:
    archive = Archive(parse_archive_csv("meter,area,role,account\nT,A,total,\nC,A,customer,X\n"))
    assert archive.area("A").total == MeterRecord("T", "A", "total")
    assert [r.meter for r in archive.account("X")] == ["C"]
    with pytest.raises(UnknownName, match="account '' is not in the archive"):
        archive.account("")


# ------------------------------------------------------------------------ energy units


def _data(fwd: Sequence[tuple[int, str]], freeze: Sequence[tuple[int, str]] = ()) -> MeterData:
    return MeterData(
        {
            ENERGY_FWD: [(s, Decimal(v)) for s, v in fwd],
            FREEZE_FWD: [(s, Decimal(v)) for s, v in freeze],
        }
    )


def test_boundary_prefers_freeze_then_slot_then_interpolation() -> None:
    t = midnight(START, DEFAULT_TZ)
    both = _data([(t, "10.00"), (t + 900, "10.40")], [(t + 300, "9.99")])
    # The meter's own midnight freeze wins over the 00:00 reading taken after it.
    assert boundary(both, t, DEFAULT_TZ) == Boundary(Decimal("9.99"), "freeze")
    slot = boundary(_data([(t, "10.00")]), t, DEFAULT_TZ)
    assert slot == Boundary(Decimal("10.00"), "slot")
    near = boundary(_data([(t - 900, "10.00"), (t + 1800, "10.33")]), t, DEFAULT_TZ)
    assert near == Boundary(Decimal("10.11"), "interpolated")  # 10.00 + 0.33 / 3
    far = boundary(_data([(t - 900, "10.00"), (t + 7200, "10.33")]), t, DEFAULT_TZ)
    assert isinstance(far, str) and "2026-01-05 00:00" in far and "nearest reading 15 min" in far
    assert isinstance(boundary(_data([]), t, DEFAULT_TZ), str)


def test_day_energy_applies_the_multiplier_and_refuses_a_register_going_back() -> None:
    t = midnight(START, DEFAULT_TZ)
    ct = MeterRecord("T", "A", "total", multiplier=Decimal(40))
    data = _data([(t, "100.00"), (t + 86400, "101.25"), (t + 2 * 86400, "3.00")])
    first, second = meter_days(ct, data, [START, START + D], DEFAULT_TZ)
    assert first.kwh == Decimal("50.0000") and not first.estimated
    assert second.kwh is None and "register went backwards (101.25 → 3.00 kWh)" in second.problem


def test_slot_energy_spreads_a_gap_and_marks_it() -> None:
    t = midnight(START, DEFAULT_TZ)
    m = MeterRecord("M", "A", "customer")
    data = _data([(t, "0.00"), (t + 900, "0.25"), (t + 900 + 4 * 3600, "4.25")])
    slots = slot_energy(m, data, t, t + 86400)
    assert slots[t].kw == pytest.approx(1.0) and slots[t].measured
    gap = [slots[t + 900 * k] for k in range(1, 17)]
    assert all(s.kwh == pytest.approx(0.25) and not s.measured for s in gap)
    assert t + 17 * 900 not in slots


def _add_slots_by_range(
    parts: Sequence[dict[int, SlotEnergy]], since: int, until: int
) -> list[SlotEnergy | None]:
    """`add_slots` as it was: every slot of the range looked up in every meter."""
    total: list[SlotEnergy | None] = []
    for slot in range(since, until, 900):
        got = [p.get(slot) for p in parts]
        if not parts or any(g is None for g in got):
            total.append(None)
            continue
        present = [g for g in got if g is not None]
        total.append(
            SlotEnergy(slot, sum(g.kwh for g in present), all(g.measured for g in present))
        )
    return total


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            # slots on and off the 15-minute grid, before, inside and after the range
            st.integers(-8, 70).map(lambda k: k * 450),
            st.tuples(st.one_of(st.just(-0.0), st.floats(0, 10)), st.booleans()),
            max_size=30,
        ),
        max_size=3,
    )
)
def test_add_slots_walks_the_meters_slots_with_the_same_sums(
    raw: list[dict[int, tuple[float, bool]]],
) -> None:
    """Walking the first meter's slots (the year's page) gives what looking up every slot
    of the range gave: a slot only where every meter has it, summed in meter order."""
    parts = [{s: SlotEnergy(s, kwh, m) for s, (kwh, m) in p.items()} for p in raw]
    since, until = 0, 30 * 900
    # repr: the same floats bit for bit (a sum of one is 0 + x: never -0.0)
    assert repr(add_slots(parts, since, until)) == repr(_add_slots_by_range(parts, since, until))


def test_time_of_use_schedule() -> None:
    tou = parse_tou()
    assert tou.period(0) == "valley" and tou.period(7 * 4) == "flat"
    assert tou.period(8 * 4) == "peak" and tou.period(23 * 4 + 3) == "valley"
    assert tou.by_slot.count("peak") == 8 * 4 and tou.by_slot.count("valley") == 8 * 4
    half = parse_tou("peak=10:30-11:15")
    # 10:30 is slot 42; the end is excluded: 10:30, 10:45 and 11:00 are peak.
    assert half.by_slot[42:45] == ("peak",) * 3 and half.period(41) == half.period(45) == "flat"
    for bad in ("peak=8", "peak=08-08", "peak=08:10-09", "peak=25-26", "flat=01-02"):
        with pytest.raises(ValueError):
            parse_tou(bad)


def test_parse_tz() -> None:
    assert parse_tz("+08:00").utcoffset(None) == dt.timedelta(hours=8)
    assert parse_tz("-5").utcoffset(None) == dt.timedelta(hours=-5)
    assert parse_tz("UTC") == dt.UTC
    with pytest.raises(ValueError):
        parse_tz("+25:00")


# ------------------------------------------------------------------------ simulator


def test_simulator_truth_and_determinism(scenario: tuple[AreaSim, list[Batch]]) -> None:
    sim, batches = scenario
    again = list(AreaSim(SCENARIO).batches())
    assert [(b.concentrator, b.seq, b.readings[:50]) for b in again[:6]] == [
        (b.concentrator, b.seq, b.readings[:50]) for b in batches[:6]
    ]
    header = {r["area"]: r for r in sim.truth if r["type"] == "area"}
    assert {t["meter"] for t in header[TA1]["thieves"]} == {
        meter_address(1, 3),
        meter_address(1, 7),
    }
    assert header[TA2]["thieves"] == []
    for day in (r for r in sim.truth if r["type"] == "day"):
        rate = day["technical_loss_kwh"] / day["true_supply_kwh"]
        assert 0.03 <= rate <= 0.06  # the configured technical loss range
        stealing = (day["area"] == TA1 and day["day"] >= str(START + 31 * D)) or (
            day["area"] == TA3 and day["day"] >= str(START + 32 * D)
        )
        assert (day["theft_kwh"] > 0) == stealing
    events = [e for b in batches for e in b.events]
    cover = Event("meter_cover_open", "warning", meter_address(1, 3), {"source": "hil-sim"}, 0.0)
    assert [(e.kind, e.meter, e.detail) for e in events] == [
        (cover.kind, cover.meter, cover.detail)
    ]
    assert dt.datetime.fromtimestamp(events[0].at, DEFAULT_TZ).date() == START + 31 * D
    registers = [r for b in batches for r in b.readings if r.quantity == ENERGY_FWD]
    assert all(re.fullmatch(r"\d+\.\d\d", r.value) for r in registers)  # 0.01 kWh resolution


def test_parse_theft_spec() -> None:
    assert parse_theft("2:5@40") == (2, Theft(5, 40))
    assert parse_theft("1:3@7:0.3:reverse:magnetic_interference") == (
        1,
        Theft(3, 7, 0.3, "reverse", "magnetic_interference"),
    )
    for bad in ("1:3", "1:3@x", "1:3@4:0.5:steal"):
        with pytest.raises(ValueError):
            parse_theft(bad)


def test_hil_sim_areas_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["areas", "--areas", "2", "--customers", "3", "--commercial", "1", "--days", "2"]
    out = tmp_path / "csv"
    result = runner.invoke(sim_cli, [*args, "--out-dir", str(out), "--theft", "2:1@1"])
    assert result.exit_code == 0, result.output
    readings = list(csv.DictReader((out / "readings.csv").open(encoding="utf-8")))
    assert {r["quantity"] for r in readings} >= {ENERGY_FWD, FREEZE_FWD, "current_a"}
    assert len(parse_archive_csv((out / "archive.csv").read_text(encoding="utf-8"))) == 8
    truth = [json.loads(line) for line in (out / "truth.jsonl").read_text().splitlines()]
    assert [t["type"] for t in truth].count("day") == 4
    assert (out / "events.csv").read_text().startswith("concentrator,seq,kind")

    db = tmp_path / "r.db"
    result = runner.invoke(
        sim_cli, [*args, "--out-dir", str(tmp_path / "db"), "--db", f"sqlite:///{db}"]
    )
    assert result.exit_code == 0, result.output
    assert f"{len(readings)} readings stored" in result.output
    result = runner.invoke(sim_cli, [*args, "--out-dir", str(out), "--theft", "5:1@1"])
    assert result.exit_code == 2 and "area 5: there are 2 areas" in result.output
    result = runner.invoke(sim_cli, [*args, "--out-dir", str(out), "--theft", "1:1@0:0.5:phase"])
    assert result.exit_code == 2 and "three-phase" in result.output
