"""Daemon and store benchmarks (issue: concentrator daemon).

Prints ``BENCH <name> <value> <unit>``; each ratio is taken against a baseline computed
in the same run:
- daemon_bus_efficiency_2400: reads/s the daemon achieves on a saturated 2400-baud
  simulated bus with 40 ms turnaround ÷ 1 / (request + reply wire time + turnaround).
- daemon_reads_per_s_core: reads per CPU-second of the daemon process with --baud 0
  (one read is one request and its reply, each stored as a reading), 256 meters on 4
  buses, 6 quantities each every 5 s; daemon_cpu_reads_missing: reads recorded missing
  meanwhile (target 0: every scheduled reading read and committed).
- pymodbus_client_reads_per_cpu_s: the yardstick, in the same run: pymodbus's bare
  synchronous RTU client reading a 16-register SDM-style block from pymodbus's own
  server over PTYs, per CPU-second of the client process (bench/pymodbus_ref.py);
  daemon_vs_pymodbus_cpu_ratio is daemon_reads_per_s_core over it (target >= 3: the
  daemon, scheduling and committing every reading, at a third of the client's CPU per
  read).
- daemon_peak_rss_mb: peak RSS (VmHWM) with 2,048 meters on 8 buses and a store holding
  a 1,000,000-reading backlog (target <= 45 MB).
- daemon_uplink_rss_mb: what importing the uplink's stack adds to that RSS (the
  benchmark's config has no [uplink]; a concentrator with one pays it).
- daemon_peak_rss_uplink_mb: the same run as a concentrator runs it, with the [uplink]
  of a provisioning, a private Mosquitto and ``cloud-receiver run`` acking, so the
  window covers the uplink draining the backlog (target <= 45 MB, not met: see
  CHANGELOG.md, issue 22 item 4, for where the memory goes).
- store_commit_rps, store_bytes_per_reading: group commits of 1,000 readings, FULL sync.
- store_encrypted_commit_rps: the same commits into a SQLCipher-encrypted store, in the
  same run (target: at least 0.5 of store_commit_rps); store_encrypted_ratio is that
  share.

The daemon figures are taken with the store encrypted (``[storage] key_file``), as a
concentrator runs it; ``--plain`` takes them with a plaintext store for comparison.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pymodbus_ref  # beside this script (bench/ is no package)
import rigs

from clitools.files import write_file
from cloud_receiver.public import LocalBroker, pki
from concentrator.public import Store
from contract.records import Reading
from drivers import dlt645
from hil_sim.fleet import add_uplink
from hil_sim.process import SimProcess

ENERGY = [
    "energy_fwd_total",
    "energy_fwd_t1",
    "energy_fwd_t2",
    "energy_fwd_t3",
    "energy_fwd_t4",
    "energy_rev_total",
]


def _daemon(cfg: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "concentrator", "run", "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _status(path: Path, timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            doc: dict[str, object] = json.loads(path.read_text())
            return doc
        except (OSError, ValueError):
            time.sleep(0.1)
    raise RuntimeError(f"no status file {path}")


def _reads(status: dict[str, object]) -> int:
    buses = status["buses"]
    assert isinstance(buses, dict)
    return sum(int(b["reads_ok"]) for b in buses.values())


def _set_tasks(cfg: Path, quantities: list[str], every: str) -> None:
    text = cfg.read_text()
    text = text[: text.index("[[task]]")]
    text += (
        f'[[task]]\nname = "bench"\nquantities = {json.dumps(quantities)}\n'
        f'every = "{every}"\nretries = 0\n'
    )
    cfg.write_text(text)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


KEY = bytes(range(32))  # a fixed key: the benchmark measures cost, not secrecy
ENCRYPT = "--plain" not in sys.argv


def _key() -> bytes | None:
    return KEY if ENCRYPT else None


def _encrypt(cfg: Path) -> None:
    """Give the config written by hil-sim a store key (``[storage] key_file``)."""
    if not ENCRYPT:
        return
    write_file(cfg.parent / "store.key", KEY.hex() + "\n")
    text = cfg.read_text()
    cfg.write_text(text.replace("[storage]\n", '[storage]\nkey_file = "store.key"\n', 1))


def _fleet(tmp: Path, *args: str) -> tuple[SimProcess, Path, Path]:
    cfg, db = tmp / "c.toml", tmp / "s.db"
    (tmp / "links").mkdir(exist_ok=True)
    sim = SimProcess(
        [
            "fleet",
            "--link-dir",
            str(tmp / "links"),
            "--write-config",
            str(cfg),
            "--store",
            str(db),
            *args,
        ]
    )
    sim.start()
    _encrypt(cfg)
    return sim, cfg, db


def bench_bus_efficiency(window: float) -> float:
    with tempfile.TemporaryDirectory() as t:
        sim, cfg, db = _fleet(
            Path(t),
            "--buses",
            "1",
            "--meters-per-bus",
            "32",
            "--baud",
            "2400",
            "--turnaround",
            "40-40",
        )
        _set_tasks(cfg, ENERGY, "1h")  # 192 reads of equal frames: the bus never idles
        proc = _daemon(cfg)
        try:
            status = db.with_suffix(".status.json")
            _status(status)
            time.sleep(3)  # let the first slot's queue fill (measurement, not sync)
            r0, t0 = _reads(_status(status)), time.monotonic()
            time.sleep(window)
            r1, t1 = _reads(_status(status)), time.monotonic()
        finally:
            proc.terminate()
            proc.wait(60)
            sim.stop()
    request = len(dlt645.build_read("000000000001", 0x00010000))
    reply = len(dlt645.build_reply("000000000001", 0x11, bytes(8)))
    limit = 1 / (dlt645.wire_time(request + reply, 2400) + 0.040)
    achieved = (r1 - r0) / (t1 - t0)
    print(f"BENCH daemon_reads_per_s_2400 {achieved:.3f} reads/s")
    print(f"BENCH daemon_bus_limit_2400 {limit:.3f} reads/s")
    return achieved / limit


def _missing(status: dict[str, object]) -> int:
    buses = status["buses"]
    assert isinstance(buses, dict)
    return sum(int(b["missing"]) for b in buses.values())


CPU_EVERY_S = 5  # 1,536 reads every 5 s: a load the four buses carry whole, with room


def bench_cpu(window: float) -> tuple[float, int]:
    """Reads per CPU-second at a load the buses carry whole, and the reads recorded
    missing meanwhile (0: the daemon scheduled and committed every reading). Before
    issue 22 this asked 1,536 reads a second of buses that carried about 600 (the 5 ms
    inter-frame gap), and part of the CPU went to recording the rest missing."""
    with tempfile.TemporaryDirectory() as t:
        sim, cfg, db = _fleet(Path(t), "--buses", "4", "--meters-per-bus", "64", "--baud", "0")
        _set_tasks(cfg, ENERGY, f"{CPU_EVERY_S}s")
        proc = _daemon(cfg)
        try:
            status = db.with_suffix(".status.json")
            _status(status)
            time.sleep(CPU_EVERY_S + 2)  # past the first slot, cut short by the start
            s0, c0 = _status(status), _cpu_s(proc.pid)
            time.sleep(window)
            s1, c1 = _status(status), _cpu_s(proc.pid)
        finally:
            proc.terminate()
            proc.wait(60)
            sim.stop()
    return (_reads(s1) - _reads(s0)) / max(c1 - c0, 1e-9), _missing(s1) - _missing(s0)


CID = "dc-bench-rss"


def _backlog(db: Path, backlog: int) -> None:
    with Store.open(db, key=_key()) as store:
        slot0 = 1_700_000_000
        batch = []
        for i in range(backlog):
            batch.append(
                Reading(
                    f"{i % 2048 + 1:012d}",
                    "energy_fwd_total",
                    slot0 + (i // 2048) * 900,
                    f"{1000 + i / 100:.2f}",
                    "kWh",
                    slot0 + (i // 2048) * 900 + 5.0,
                )
            )
            if len(batch) == 10_000:
                store.add_readings(batch)
                batch.clear()
        store.add_readings(batch)


def bench_rss(backlog: int, window: float, uplink: bool = False) -> float:
    """Peak RSS of ``concentrator run`` with 2,048 meters on 8 buses and ``backlog``
    readings in the outbox. With ``uplink`` the config has the ``[uplink]`` of a
    provisioning and a private Mosquitto and ``cloud-receiver run`` take its batches, so
    the window covers the uplink draining the backlog, as after an outage."""
    with tempfile.TemporaryDirectory() as t, contextlib.ExitStack() as stack:
        tmp = Path(t)
        sim, cfg, db = _fleet(tmp, "--buses", "8", "--meters-per-bus", "256", "--baud", "0")
        stack.callback(sim.stop)
        _set_tasks(cfg, ["energy_fwd_total"], "1m")
        _backlog(db, backlog)
        if uplink:
            broker = stack.enter_context(LocalBroker(tmp / "broker"))
            frag = pki.provision(
                broker.pki_dir, CID, broker_host="127.0.0.1", broker_port=broker.port
            )
            add_uplink(cfg, frag, concentrator_id=CID)
            receiver = rigs.receiver(broker, tmp / "receiver.db", tmp / "receiver.log")
            stack.callback(rigs.stop, receiver)
        proc = _daemon(cfg)
        stack.callback(rigs.stop, proc)
        status_file = db.with_suffix(".status.json")
        _status(status_file)
        time.sleep(window)
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited with {proc.returncode}")
        peak = _hwm_mb(proc.pid)
        if uplink:  # measured what it claims: an uplink that sent and had batches acked
            up = _status(status_file).get("uplink")
            if not isinstance(up, dict) or not up["readings_acked"]:
                raise RuntimeError(f"the uplink delivered nothing: {up}")
        return peak


_UPLINK_RSS = """
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
import concentrator.daemon, concentrator.cli
before = rss()
import concentrator.control.command_runner, concentrator.update.updater, concentrator.uplink.mqtt
print(rss() - before)
"""


def uplink_rss_mb() -> float:
    """The RSS a daemon with ``[uplink]`` adds by importing the uplink's stack (paho-mqtt,
    cryptography, CBOR, zstd): not in daemon_peak_rss_mb, whose config has no uplink."""
    out = subprocess.run(
        [sys.executable, "-c", _UPLINK_RSS], capture_output=True, text=True, check=True
    ).stdout
    return float(out)


def bench_store(n: int, key: bytes | None = None) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as t, Store.open(Path(t) / "s.db", key=key) as store:
        readings = [
            Reading(
                f"{m:012d}",
                q,
                1_700_000_000 + s * 900,
                f"{12345 + s / 100:.2f}",
                "kWh",
                1_700_000_000 + s * 900 + 3.0,
            )
            for s in range(n // 4000 + 1)
            for m in range(1000)
            for q in ("energy_fwd_total", "voltage_a", "current_a", "power_total")
        ][:n]
        t0 = time.perf_counter()
        for i in range(0, n, 1000):
            store.add_readings(readings[i : i + 1000])
        rps = n / (time.perf_counter() - t0)
        return rps, store.stats().bytes_per_reading


def main() -> int:
    quick = "--quick" in sys.argv
    eff = bench_bus_efficiency(5 if quick else 40)
    print(f"BENCH daemon_bus_efficiency_2400 {eff:.3f} ratio")
    cpu, cpu_missing = bench_cpu(4 if quick else 20)
    print(f"BENCH daemon_reads_per_s_core {cpu:.0f} reads/s")
    print(f"BENCH daemon_cpu_reads_missing {cpu_missing} readings")
    pymodbus = pymodbus_ref.measure(3 if quick else 20)
    print(f"BENCH pymodbus_client_reads_per_cpu_s {pymodbus:.0f} reads/s")
    vs_pymodbus = cpu / pymodbus
    print(f"BENCH daemon_vs_pymodbus_cpu_ratio {vs_pymodbus:.2f} ratio")
    rss = bench_rss(20_000 if quick else 1_000_000, 3 if quick else 20)
    print(f"BENCH daemon_peak_rss_mb {rss:.1f} MB")
    print(f"BENCH daemon_uplink_rss_mb {uplink_rss_mb():.1f} MB")
    rss_up = bench_rss(20_000 if quick else 1_000_000, 3 if quick else 20, uplink=True)
    print(f"BENCH daemon_peak_rss_uplink_mb {rss_up:.1f} MB")
    n = 5_000 if quick else 200_000
    rps, bpr = bench_store(n)
    print(f"BENCH store_commit_rps {rps:.0f} readings/s")
    print(f"BENCH store_bytes_per_reading {bpr:.1f} B")
    enc_rps, _ = bench_store(n, KEY)
    print(f"BENCH store_encrypted_commit_rps {enc_rps:.0f} readings/s")
    ratio = enc_rps / rps
    print(f"BENCH store_encrypted_ratio {ratio:.3f} ratio")
    missed = [
        f"{name} {value:g} (target {target})"
        for name, value, target, ok in (
            ("daemon_bus_efficiency_2400", eff, ">= 0.9", eff >= 0.9),
            ("daemon_reads_per_s_core", cpu, ">= 3000", cpu >= 3000),
            ("daemon_cpu_reads_missing", cpu_missing, "0", cpu_missing == 0),
            ("daemon_vs_pymodbus_cpu_ratio", vs_pymodbus, ">= 3", vs_pymodbus >= 3),
            ("daemon_peak_rss_mb", rss, "<= 45", rss <= 45),
            ("store_encrypted_ratio", ratio, ">= 0.5", ratio >= 0.5),
        )
        if not ok
    ]
    for line in missed:
        print(f"target missed: {line}")
    # --quick (the test suite) checks that the figures are produced, not their size.
    return 1 if missed and not quick else 0


if __name__ == "__main__":
    sys.exit(main())
