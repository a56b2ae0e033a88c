"""``hil-sim areas``: transformer areas (total meter, customers, loss, theft) written as
the receiver's archive and readings, for the utility analytics."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from clitools.files import open_text, write_file
from clitools.options import day_option, db_option, existing_parent, json_option, seed_option
from clitools.output import result
from hil_sim.cli.edge import SimCommand
from hil_sim.errors import SimUnavailable, SpecError


@click.command(cls=SimCommand)
@json_option()
@click.option(
    "--out-dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    callback=existing_parent,
    help="Where archive.csv, truth.jsonl (and without --db readings.csv, events.csv) go.",
)
@db_option(required=False, help="Ingest into this receiver database URL.")
@click.option("--areas", "n_areas", type=click.IntRange(1, 999), default=3, show_default=True)
@click.option("--customers", type=click.IntRange(1, 5000), default=20, show_default=True)
@click.option(
    "--commercial",
    type=click.IntRange(0),
    default=2,
    show_default=True,
    help="How many customers per area are three-phase commercial ones.",
)
@day_option("--from", "start", default="2026-01-05", help="First day.")
@click.option("--days", type=click.IntRange(1, 3660), default=56, show_default=True)
@click.option(
    "--loss",
    default="3-6",
    show_default=True,
    help="Technical loss in percent, MIN-MAX: from light to full load.",
)
@click.option(
    "--theft",
    "thefts",
    multiple=True,
    metavar="AREA:CUSTOMER@DAY[:SHARE[:METHOD[:EVENT]]]",
    help="Inject a theft (repeatable): METHOD bypass|reverse|phase, EVENT a tamper event"
    " kind, e.g. 1:3@40:0.5:bypass:meter_cover_open.",
)
@click.option(
    "--vacation",
    "vacations",
    multiple=True,
    metavar="AREA:CUSTOMER@DAY+DAYS[:LEVEL]",
    help="A customer away (load x LEVEL, default 0.15) with no theft (repeatable).",
)
@seed_option()
def areas(
    out_dir: Path,
    db_url: str | None,
    n_areas: int,
    customers: int,
    commercial: int,
    start: dt.date,
    days: int,
    loss: str,
    thefts: tuple[str, ...],
    vacations: tuple[str, ...],
    seed: int,
    as_json: bool,
) -> None:
    """Simulate transformer areas (total meter, customers, loss, theft) for analytics."""
    import csv

    from cloud_receiver.public import format_archive_csv
    from hil_sim import areas as sim_areas
    from hil_sim.areas import EVENT_COLUMNS, READING_COLUMNS

    lo, _, hi = loss.partition("-")
    try:
        loss_min, loss_max = float(lo) / 100, float(hi or lo) / 100
    except ValueError:
        raise click.BadParameter(
            f"{loss!r}: expected MIN-MAX percent", param_hint="--loss"
        ) from None
    theft_specs = [sim_areas.parse_theft(t) for t in thefts]
    vacation_specs = [sim_areas.parse_vacation(v) for v in vacations]
    for number in [a for a, _ in theft_specs] + [a for a, _ in vacation_specs]:
        if not 1 <= number <= n_areas:
            raise SpecError(f"area {number}: there are {n_areas} areas")
    options = sim_areas.Options(
        tuple(
            sim_areas.AreaSpec(
                customers=customers,
                commercial=min(commercial, customers),
                loss_min=loss_min,
                loss_max=loss_max,
                thefts=tuple(t for a, t in theft_specs if a == i),
                vacations=tuple(v for a, v in vacation_specs if a == i),
            )
            for i in range(1, n_areas + 1)
        ),
        start,
        days,
        seed,
    )
    sim = sim_areas.AreaSim(options)
    out_dir.mkdir(exist_ok=True)  # its folder exists (checked): one level, never more
    write_file(out_dir / "archive.csv", format_archive_csv(sim.archive()))
    if db_url is not None:
        from cloud_receiver.public import open_storage

        try:
            storage = open_storage(db_url)
        except Exception as exc:  # a wrong URL or an unreachable server: say which
            raise SimUnavailable(f"cannot open database {db_url}: {exc}") from exc
        try:
            stored = sim_areas.ingest(storage, sim)
        finally:
            storage.close()
        where = f"{stored} readings stored in {db_url}"
    else:
        n = 0
        with (
            open_text(out_dir / "readings.csv") as rf,
            open_text(out_dir / "events.csv") as ef,
        ):
            readings, events = csv.writer(rf), csv.writer(ef)
            readings.writerow(READING_COLUMNS)
            events.writerow(EVENT_COLUMNS)
            for b in sim.batches():
                for r in b.readings:
                    row = (r.meter, r.quantity, r.slot, r.value, r.unit, r.read_at, r.source)
                    readings.writerow((*row, b.concentrator, b.seq))
                for e in b.events:
                    detail = json.dumps(e.detail)
                    events.writerow(
                        (b.concentrator, b.seq, e.kind, e.severity, e.meter, detail, e.at)
                    )
                n += len(b.readings)
        where = f"{n} readings written to {out_dir / 'readings.csv'}"
    sim_areas.write_truth(out_dir / "truth.jsonl", sim.truth)
    result(
        as_json,
        f"{n_areas} areas x {customers} customers, {days} days from {start}: {where};"
        f" archive {out_dir / 'archive.csv'}, ground truth {out_dir / 'truth.jsonl'}",
        {
            "areas": n_areas, "customers": customers, "days": days, "start": start,
            "readings": stored if db_url is not None else n, "db": db_url,
            "archive": out_dir / "archive.csv", "truth": out_dir / "truth.jsonl",
            "readings_csv": None if db_url is not None else out_dir / "readings.csv",
        },
    )  # fmt: skip
