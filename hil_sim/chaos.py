"""Chaos and soak: the whole chain under random faults, judged against the ground truth.

    python -m hil_sim.chaos --minutes 30          # `make chaos`
    python -m hil_sim.chaos --minutes 2 --quick   # the short version in `make test`

Runs the simulator (4 RS-485 buses x 64 DL/T 645 meters with line faults), the
concentrator daemon, a private Mosquitto with TLS, the cloud receiver (SQLite, or
PostgreSQL with ``--db``) and, between the concentrator and the broker, a TCP proxy
standing for the GPRS link. While it runs, at random moments: kill -9 of the
concentrator (whatever it is doing: inside a commit, between publish and ack), a
Mosquitto restart, kill -9 of the receiver, link cuts (drop, blackhole, slow trickle),
filling the concentrator's disk (its data directory is a small tmpfs; sometimes the
daemon is also killed and restarted while the disk is full) and steps of its wall clock
(forward and back, through ``concentrator run --clock-step-file``; the meters' clocks
are not stepped, as in the field). Then the faults stop, the meters fall silent, the
backlog drains, and every process is stopped.

The verdict compares three records: what the meters really measured (the simulator's
truth log), what the concentrator committed (its store) and what the receiver holds:

- duplicated: a reading stored twice at the receiver (the unique key forbids it; checked
  by counting anyway) or acknowledged in two batches;
- invented: a reading at the receiver that no meter measured, or that the concentrator
  never committed, or with another value;
- unexplained missing: a reading the concentrator committed that never arrived, or a
  scheduled 15-minute reading that is neither stored nor recorded missing with a reason
  (meter silent, daemon down, quota eviction — the store's ``missing`` table and loss
  events).

It prints a table of the faults injected and of those counts, the backlog drain time
after the last fault and the concentrator's peak RSS, and exits 1 on any duplicate,
invented or unexplained-missing reading. ``--concentrator-cmd`` runs another build of
the concentrator (the test suite uses it to show that a deliberately broken one fails).
"""

from __future__ import annotations

import json
import math
import random
import shlex
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from cloud_receiver.public import LocalBroker, open_storage, pki
from concentrator.public import Store
from hil_sim.chaos_rig import Proc, Proxy, SmallDisk
from hil_sim.fleet import add_uplink
from hil_sim.process import SimProcess, cli_command
from hil_sim.truth import read_truth

CID = "dc-chaos"
SCALE = 30.0  # wall-clock seconds per real second
CADENCE = "5m"  # a 5-minute slot lasts 10 s: 64 meters at 9600 baud take about 4 s
PERIOD = 300
DRAIN_TIMEOUT_S = 600.0
# Relative frequency of each fault: concentrator kills dominate, as the soak asks.
DEFAULT_WEIGHTS = {
    "concentrator": 10.0,
    "broker": 1.0,
    "receiver": 1.0,
    "outage": 1.0,
    "link": 1.5,
    "disk": 1.0,
    "clock": 1.0,
}
# The wall clock wanders within these bounds (seconds), in steps of one to three slots.
CLOCK_STEP_RANGE = (-2 * PERIOD, 6 * PERIOD)


@dataclass
class Report:
    faults: Counter[str] = field(default_factory=Counter)
    generated: int = 0  # values the meters reported (truth log, faults excluded)
    committed: int = 0
    delivered: int = 0
    duplicated: int = 0
    invented: int = 0
    unexplained: int = 0
    explained_missing: int = 0
    drain_s: float = 0.0
    peak_rss_mb: float = 0.0
    self_exits: int = 0  # the concentrator died without being killed: a bug to look at
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.duplicated == 0 and self.invented == 0 and self.unexplained == 0


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)  # polling other processes' files and databases


def _status(path: Path) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc
    except (OSError, ValueError):
        return {}


def _backlog(store_path: Path) -> int:
    try:
        with Store.open(store_path) as store:
            b = store.backlog()
        return b.readings + b.events
    except Exception:  # being written by the daemon right now: ask again
        return -1


def run(
    root: Path,
    *,
    minutes: float,
    seed: int,
    db_url: str | None,
    concentrator_cmd: list[str],
    meters_per_bus: int,
    console: Console,
    weights: dict[str, float] | None = None,
) -> Report:
    weights = weights or DEFAULT_WEIGHTS
    rng = random.Random(seed)
    report = Report()
    root.mkdir(parents=True, exist_ok=True)
    disk = SmallDisk(root / "data")
    why = disk.mount()
    if why is not None:
        console.print(f"[yellow]no disk-fill faults: cannot mount a small tmpfs ({why})[/yellow]")
        weights = {**weights, "disk": 0.0}
        report.faults["disk fill (not run: cannot mount)"] = 0
    try:
        return _run(root, disk, report, rng, minutes=minutes, seed=seed, db_url=db_url,
                    concentrator_cmd=concentrator_cmd, meters_per_bus=meters_per_bus,
                    console=console, weights=weights)  # fmt: skip
    finally:
        disk.unmount()


def _run(
    root: Path,
    disk: SmallDisk,
    report: Report,
    rng: random.Random,
    *,
    minutes: float,
    seed: int,
    db_url: str | None,
    concentrator_cmd: list[str],
    meters_per_bus: int,
    console: Console,
    weights: dict[str, float],
) -> Report:
    cfg, store_path = root / "concentrator.toml", disk.path / "concentrator.db"
    status_path = store_path.with_suffix(".status.json")
    clock_step = root / "clock-step"  # seconds the concentrator's wall clock is stepped
    clock_step.write_text("0")
    step = 0.0
    (root / "links").mkdir(exist_ok=True)
    sim = SimProcess(
        ["fleet", "--buses", "4", "--meters-per-bus", str(meters_per_bus), "--baud", "9600",
         "--fault-rate", "0.02", "--time-scale", str(SCALE), "--cadence", CADENCE,
         "--seed", str(seed), "--link-dir", str(root / "links"), "--write-config", str(cfg),
         "--store", str(store_path)]
    )  # fmt: skip
    broker = LocalBroker(root / "broker")
    broker.start()
    proxy = Proxy(broker.port)
    frag = pki.provision(broker.pki_dir, CID, broker_host="127.0.0.1", broker_port=broker.port)
    origin = time.time()  # the simulator's clock starts about here; restarts keep to it
    sim.start()
    add_uplink(
        cfg, frag, concentrator_id=CID,
        overrides={"broker_port": proxy.port, "ack_timeout_s": 10.0, "poll_s": 1.0,
                   "reconnect_max_s": 5.0, "keepalive_s": 10},
    )  # fmt: skip
    url = db_url or f"sqlite:///{root / 'receiver.db'}"
    receiver = Proc(
        [*cli_command("cloud-receiver"), "run", "--broker", broker.address,
         "--pki-dir", str(broker.pki_dir), "--db", url, "-v"],
        root / "receiver.log",
    )  # fmt: skip
    daemon = Proc(
        [*concentrator_cmd, "run", "--config", str(cfg), "--time-scale", str(SCALE),
         "--time-origin", repr(origin), "--clock-step-file", str(clock_step),
         "--control-socket", str(root / "ctl.sock"), "-v"],
        root / "concentrator.log",
    )  # fmt: skip
    receiver.start()
    daemon.start()
    started = time.monotonic()
    try:
        _wait(lambda: _status(status_path).get("started"), 120, "the concentrator to start")
        first_wall = float(_status(status_path)["started"])
        end_at = started + minutes * 60
        console.print(f"chaos: {minutes:g} min of faults, seed {seed}, store {store_path}")
        while time.monotonic() < end_at:
            time.sleep(rng.uniform(2.0, 6.0))  # the next fault comes at a random moment
            if not daemon.alive():  # systemd (Restart=always) would start it again
                report.self_exits += 1
                report.examples.append(f"concentrator exited on its own: {daemon.exit_code()}")
                daemon.start()
            report.peak_rss_mb = max(report.peak_rss_mb, daemon.rss_mb())
            kind = rng.choices(list(weights), weights=list(weights.values()))[0]
            if kind == "concentrator":
                daemon.kill9()
                report.faults["kill -9 concentrator"] += 1
                daemon.start()
            elif kind == "broker":
                broker.restart()
                report.faults["restart Mosquitto"] += 1
            elif kind == "receiver":
                receiver.kill9()
                report.faults["kill -9 receiver"] += 1
                receiver.start()
            elif kind == "outage":
                # The receiver is away a while; batches queue at the broker, which may
                # crash meanwhile and lose what it had not saved: only the receiver's
                # ack may retire a batch.
                receiver.kill9()
                report.faults["receiver outage"] += 1
                time.sleep(rng.uniform(5.0, 15.0))
                if rng.random() < 0.5:
                    broker.crash()
                    report.faults["crash Mosquitto (kill -9) during it"] += 1
                    broker.start()
                receiver.start()
            elif kind == "disk":
                disk.fill()
                report.faults["fill the concentrator's disk"] += 1
                if rng.random() < 0.5:
                    # The worst moment for a kill: readings held in memory, not stored.
                    time.sleep(rng.uniform(1.0, 5.0))
                    daemon.kill9()
                    report.faults["kill -9 concentrator while its disk is full"] += 1
                    daemon.start()
                time.sleep(rng.uniform(3.0, 12.0))
                disk.free()
            elif kind == "clock":
                lo, hi = CLOCK_STEP_RANGE
                choices = [d * PERIOD for d in (-2, -1, 1, 2, 3) if lo <= step + d * PERIOD <= hi]
                delta = rng.choice(choices)
                step += delta
                clock_step.write_text(f"{step:g}\n")
                report.faults[f"step wall clock {'forward' if delta > 0 else 'back'}"] += 1
            else:
                mode = rng.choice(["drop", "blackhole", "slow"])
                proxy.set_mode(mode)
                report.faults[f"link {mode}"] += 1
                time.sleep(rng.uniform(1.0, 8.0))
                proxy.set_mode("up")
        # Quiet: every part up, the meters silent, the backlog drains.
        disk.free()
        for p in (daemon, receiver):
            if not p.alive():
                p.start()
        proxy.set_mode("up")
        last_fault = time.monotonic()
        wall_end = float(_status(status_path).get("wall", first_wall))
        sim.stop()
        _wait(lambda: _backlog(store_path) == 0, DRAIN_TIMEOUT_S, "the backlog to drain")
        report.drain_s = time.monotonic() - last_fault
        report.peak_rss_mb = max(report.peak_rss_mb, daemon.rss_mb())
    finally:
        daemon.stop()
        receiver.stop()
        sim.stop()
        proxy.close()
        broker.stop()
    _judge(report, store_path, url, sim.truth, first_wall, wall_end)
    # The small disk goes away with the run: keep the store for a post-mortem.
    src, dst = sqlite3.connect(store_path), sqlite3.connect(root / "concentrator.final.db")
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    return report


def _judge(
    report: Report, store_path: Path, url: str, truth: Path, first_wall: float, wall_end: float
) -> None:
    told: dict[tuple[str, str], set[str]] = {}
    for rec in read_truth(truth):
        block = rec.quantity.startswith("frozen_daily_energy_fwd")
        if rec.fault is None:
            report.generated += 5 if block else 1
        if block:
            # One block register, stored as five readings (total and four tariffs).
            parts = rec.value.split(" / ")
            for part, value in zip(("total", "t1", "t2", "t3", "t4"), parts, strict=False):
                told.setdefault((rec.meter, f"frozen_daily_energy_fwd_{part}"), set()).add(value)
        else:
            told.setdefault((rec.meter, rec.quantity), set()).add(rec.value)
    with Store.open(store_path) as store:
        committed = {
            (r.reading.meter, r.reading.quantity, r.reading.slot): r.reading.value
            for r in store.get_readings()
        }
        missing = {(m.meter, m.quantity, m.slot) for m in store.missing()}
        # Readings the concentrator had to give up on (quota eviction, a memory buffer
        # overflowing while the disk was full) are explained by their loss events.
        lost: list[tuple[str, str, int, int]] = []
        for e in store.events(kind="loss"):
            entries = e.event.detail.get("losses")
            for entry in entries if isinstance(entries, list) else []:
                for meter in entry.get("meters") or [entry.get("meter")]:
                    lost.append(
                        (str(meter), entry["quantity"], entry["first_slot"], entry["last_slot"])
                    )
        meters = sorted({r.reading.meter for r in store.get_readings(quantity="energy_fwd_total")})
    storage = open_storage(url)
    try:
        rows = storage.readings()
    finally:
        storage.close()
    report.committed = len(committed)
    keys = Counter((r.meter, r.quantity, r.slot) for r in rows)
    report.duplicated = sum(n - 1 for n in keys.values() if n > 1)
    arrived = {(r.meter, r.quantity, r.slot): r.value for r in rows}

    def lost_here(meter: str, quantity: str, slot: int) -> bool:
        return any(m == meter and q == quantity and a <= slot <= b for m, q, a, b in lost)

    for key, value in arrived.items():
        meter, quantity, slot = key
        # frozen_daily_time is the freeze's own stamp, checked through its energy values
        true = quantity == "frozen_daily_time" or value in told.get((meter, quantity), set())
        # A reading the quota evicted from a batch in flight still travels in that
        # batch's sealed bytes: it may arrive though the store holds it no more.
        evicted_in_flight = key not in committed and lost_here(meter, quantity, slot)
        if (committed.get(key) != value and not evicted_in_flight) or not true:
            report.invented += 1
            report.examples.append(f"invented {key}: {value} (committed {committed.get(key)})")
        else:
            report.delivered += 1
    for key in committed.keys() - arrived.keys():
        report.unexplained += 1
        report.examples.append(f"committed, never delivered: {key}")
    # Every scheduled 15-minute... here 5-minute reading of every meter, from the first
    # full slot to the last one before the meters fell silent: stored or explained.
    first = math.ceil(first_wall / PERIOD) * PERIOD
    last = math.floor(wall_end / PERIOD) * PERIOD
    for slot in range(first, last, PERIOD):
        for meter in meters:
            key = (meter, "energy_fwd_total", slot)
            if key in committed:
                continue
            if key in missing or lost_here(meter, "energy_fwd_total", slot):
                report.explained_missing += 1
            else:
                report.unexplained += 1
                report.examples.append(f"scheduled, neither stored nor explained: {key}")


def print_report(report: Report, console: Console, minutes: float) -> None:
    faults = Table(title=f"Faults injected in {minutes:g} min")
    faults.add_column("fault")
    faults.add_column("count", justify="right")
    for kind, n in sorted(report.faults.items()):
        faults.add_row(kind, str(n))
    console.print(faults)
    t = Table(title="Readings")
    t.add_column("what")
    t.add_column("count", justify="right")
    for label, value in (
        ("generated (meters answered)", report.generated),
        ("committed by the concentrator", report.committed),
        ("delivered to the receiver", report.delivered),
        ("duplicated", report.duplicated),
        ("invented", report.invented),
        ("missing, explained (meter silent, daemon down)", report.explained_missing),
        ("missing, UNEXPLAINED", report.unexplained),
    ):
        t.add_row(label, str(value))
    t.add_row("concentrator exits not caused by a kill", str(report.self_exits))
    t.add_row("backlog drain after the last fault", f"{report.drain_s:.1f} s")
    t.add_row("concentrator peak RSS", f"{report.peak_rss_mb:.1f} MB")
    console.print(t)
    for line in report.examples[:20]:
        console.print(f"[red]{line}[/red]")
    console.print("[green]PASS[/green]" if report.ok else "[red]FAIL[/red]")


@click.command()
@click.option("--minutes", type=float, default=30.0, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--dir", "root", type=click.Path(path_type=Path, file_okay=False), default=None)
@click.option(
    "--db",
    "db_url",
    default=None,
    help="Receiver database URL, or `postgres` for a fresh schema on the local server "
    "[default: SQLite].",
)
@click.option("--meters-per-bus", type=click.IntRange(1, 250), default=64, show_default=True)
@click.option(
    "--weights",
    default=None,
    help="Fault weights, e.g. concentrator=10,broker=1,receiver=1,outage=1,link=1.5.",
)
@click.option(
    "--concentrator-cmd",
    default=None,
    help="Command that runs the concentrator CLI [default: this Python's concentrator].",
)
def main(
    minutes: float,
    seed: int,
    root: Path | None,
    db_url: str | None,
    meters_per_bus: int,
    weights: str | None,
    concentrator_cmd: str | None,
) -> None:
    """Run the chain under random faults and judge the result against the ground truth."""
    import tempfile

    console = Console()
    cmd = shlex.split(concentrator_cmd) if concentrator_cmd else cli_command("concentrator")
    chosen = dict(DEFAULT_WEIGHTS)
    for item in (weights or "").split(","):
        if item.strip():
            name, _, value = item.partition("=")
            if name.strip() not in DEFAULT_WEIGHTS:
                raise click.BadParameter(f"unknown fault {name!r}", param_hint="--weights")
            try:
                chosen[name.strip()] = float(value)
            except ValueError:
                raise click.BadParameter(f"{item!r}: expected NAME=NUMBER") from None
    schema = None
    if db_url == "postgres":  # a fresh schema on the machine's PostgreSQL, dropped after
        import uuid

        import psycopg

        from cloud_receiver.public import local_postgres_url

        server = local_postgres_url()
        schema = f"chaos_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in server else "?"
        db_url = f"{server}{sep}options=-csearch_path%3D{schema}"
    with tempfile.TemporaryDirectory(prefix="mf-chaos-") as tmp:
        report = run(
            root or Path(tmp),
            minutes=minutes,
            seed=seed,
            db_url=db_url,
            concentrator_cmd=cmd,
            meters_per_bus=meters_per_bus,
            console=console,
            weights=chosen,
        )
    if schema is not None:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    print_report(report, console, minutes)
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
