"""Staged, signed upgrades end to end, with real processes: concentrators under their
guard (`concentrator supervise`) with their own data dirs and simulated meters, a real
Mosquitto with TLS and ACLs, and `cloud-receiver run`. The releases are real wheels,
built from this source tree with another version number (and, for the broken one, a
poller that cannot read a meter)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import Operators, read_status, receiver_cli, receiver_json, wait_for
from mqtt_harness import Broker
from test_uplink_e2e import Receiver

import concentrator
from cloud_receiver.applications.fleet import pki
from cloud_receiver.applications.fleet import rollout as ro
from cloud_receiver.storage import SqliteStorage
from cloud_receiver.storage.schema import releases
from concentrator.storage import Store
from concentrator.update.releases import Releases
from contract import package, wire
from hil_sim.fleet import add_uplink
from hil_sim.process import SimProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BASE = concentrator.__version__
GOOD, BROKEN = "0.2.0", "0.3.0"
BREAK_POLLING = """

# A deliberately broken build (tests/test_rollout_e2e.py): no meter can be read.
async def _cannot_poll(self: BusWorker, job: Job) -> None:
    raise BusTimeout("this build cannot poll (deliberately broken)")


BusWorker._read_quantities = _cannot_poll  # type: ignore[method-assign]
BusWorker._read_freeze = _cannot_poll  # type: ignore[method-assign]
"""


def build_wheel(work: Path, version: str, *, broken: bool = False) -> Path:
    """A wheel of this tree as ``version``, built offline like a release engineer would."""
    src = work / f"src-{version}"
    for name in ("drivers", "concentrator", "cloud_receiver", "hil_sim"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    init = src / "concentrator" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{BASE}"', f'"{version}"'))
    if broken:
        poller = src / "concentrator" / "polling" / "bus_worker.py"
        poller.write_text(poller.read_text() + BREAK_POLLING)
    out = work / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", str(out), f"./{src.name}"],
        cwd=work, check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    return next(out.glob(f"meterflow-{version}-*.whl"))


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("release-build")
    return {GOOD: build_wheel(work, GOOD), BROKEN: build_wheel(work, BROKEN, broken=True)}


class Site:
    """One concentrator: simulated meters on a PTY bus, its config and store in its own
    folder, and `concentrator supervise` running the daemon."""

    def __init__(self, root: Path, broker: Broker, cid: str, seed: int, **uplink: Any) -> None:
        self.cid = cid
        self.dir = root / cid
        self.dir.mkdir()
        self.cfg, self.db = self.dir / "c.toml", self.dir / "store.db"
        self.sim = SimProcess(
            ["bus", "--link", str(self.dir / "bus1"), "--meters", "2", "--baud", "9600",
             "--cadence", "5s", "--seed", str(seed), "--address-base", f"{seed:06d}000001",
             "--write-config", str(self.cfg),
             "--store", str(self.db)]
        )  # fmt: skip
        self.sim.start()
        frag = pki.provision(broker.pki_dir, cid, broker_host="127.0.0.1", broker_port=broker.port)
        add_uplink(self.cfg, frag, concentrator_id=cid,
                   overrides={"ack_timeout_s": 5.0, "poll_s": 0.5, **uplink})  # fmt: skip
        self.releases = Releases(self.dir / "releases")
        with self.cfg.open("a") as fh:
            fh.write(
                f'\n[update]\nrelease_key_file = "{(frag / "release.pub").absolute()}"\n'
                f'releases_dir = "{self.releases.root}"\nchunk_timeout_s = 5.0\n'
            )
        self.log = self.dir / "guard.log"
        self.guard: subprocess.Popen[bytes] | None = None

    def set_update(self, key: str, value: int) -> None:
        with self.cfg.open("a") as fh:  # [update] is the last table
            fh.write(f"{key} = {value}\n")

    def start(self) -> None:
        with self.log.open("ab") as fh:
            self.guard = subprocess.Popen(
                [sys.executable, "-m", "concentrator", "supervise", "--config", str(self.cfg),
                 "-v"],
                stdout=fh, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def stop(self) -> None:
        if self.guard is not None and self.guard.poll() is None:
            self.guard.send_signal(signal.SIGTERM)
            try:
                self.guard.wait(120)
            except subprocess.TimeoutExpired:
                self.guard.kill()
                self.guard.wait()
        self.sim.stop()

    def status(self) -> dict[str, Any]:
        return read_status(self.db.with_suffix(".status.json")) or {}

    def readings(self) -> set[tuple[str, str, int]]:
        with Store.open(self.db) as store:
            return {(r.reading.meter, r.reading.quantity, r.reading.slot)
                    for r in store.get_readings()}  # fmt: skip


class Utility:
    def __init__(self, root: Path) -> None:
        self.broker = Broker(root / "broker")
        self.broker.start()
        self.rdb = root / "receiver.db"
        self.receiver = Receiver(self.broker, self.rdb, root / "receiver.log")
        self.receiver.start()
        self.ops = Operators(f"sqlite:///{self.rdb}", root / "sessions")

    def storage(self) -> SqliteStorage:
        return SqliteStorage(self.rdb)

    def query(self, fn: Any, *args: Any) -> Any:
        if not self.rdb.exists():
            return None
        s = self.storage()
        try:
            return fn(s, *args)
        finally:
            s.close()

    def software(self) -> dict[str, tuple[str, int, float]]:
        return self.query(ro.software) or {}

    def rollout(self, rollout_id: int) -> dict[str, Any]:
        docs = self.query(ro.status, rollout_id) or [{}]
        doc: dict[str, Any] = docs[0]
        return doc

    def readings(self, cid: str) -> set[tuple[str, str, int]]:
        rows = self.query(lambda s: s.readings()) or []
        return {(r.meter, r.quantity, r.slot) for r in rows if r.concentrator == cid}

    def upgrade_events(self, cid: str) -> list[dict[str, Any]]:
        events = self.query(lambda s: s.events(cid)) or []
        return [dict(e.detail, at=e.at) for _, e in events if e.kind == "upgrade"]

    def stop(self) -> None:
        self.receiver.stop()
        self.broker.stop()


@pytest.fixture
def utility(tmp_path: Path) -> Iterator[Utility]:
    u = Utility(tmp_path)
    yield u
    u.stop()


def _start_fleet(utility: Utility, sites: list[Site]) -> None:
    for s in sites:
        s.start()
    wait_for(
        lambda: all(utility.software().get(s.cid, ("",))[0] == BASE for s in sites),
        180,
        "every concentrator's first batch at the receiver",
    )


def _build_package(utility: Utility, wheel: Path, out: Path) -> Path:
    pki_dir = str(utility.broker.pki_dir)
    done = receiver_cli("release", "build", "--wheel", str(wheel), "--pki-dir", pki_dir,
                        "--chunk-size", "4096", "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def _start_rollout(utility: Utility, version: str, pkg: Path, *stages: str, window: str) -> int:
    """One operator asks for the rollout, a second approves it, the service starts it."""
    pki_dir = str(utility.broker.pki_dir)
    args = ["rollout", "start", version, "--package", str(pkg), "--health-window", window,
            "--db", str(utility.rdb), "--pki-dir", pki_dir, "--json"]  # fmt: skip
    for st in stages:
        args += ["--stage", st]
    asked = receiver_json(*args, session=utility.ops.login("olga", "operator"))
    assert asked["status"] == "awaiting_approval"
    approved = receiver_json("approve", str(asked["request"]), "--db", str(utility.rdb), "--json",
                             session=utility.ops.login("ivan", "operator"))  # fmt: skip
    rollout_id: int = approved["id"]
    return rollout_id


def _nothing_lost(utility: Utility, sites: list[Site]) -> None:
    """Every reading any release stored on a concentrator reaches the receiver."""
    for s in sites:
        stored = s.readings()
        assert stored
        wait_for(lambda s=s, stored=stored: stored <= utility.readings(s.cid), 120,
                 f"{s.cid}'s readings at the receiver")  # fmt: skip


@pytest.mark.long  # 76 s; `make test` keeps the refused packages and rollback run
def test_two_stage_rollout_with_a_cut_link_upgrades_a_mixed_fleet(
    tmp_path: Path, utility: Utility, wheels: dict[str, Path]
) -> None:
    sites = [
        Site(tmp_path, utility.broker, "dc-a", 1),
        Site(tmp_path, utility.broker, "dc-b", 2),
        # Still pinned to the old wire format: the receiver reads both side by side.
        Site(tmp_path, utility.broker, "dc-c", 3, wire_version=1),
    ]
    pilot = sites[0]
    pilot.set_update("download_bps", 25_000)  # slow enough to cut the link mid-download
    try:
        _start_fleet(utility, sites)
        assert {c: v[1] for c, v in utility.software().items()} == {
            "dc-a": wire.VERSION, "dc-b": wire.VERSION, "dc-c": 1
        }  # fmt: skip
        pkg = _build_package(utility, wheels[GOOD], tmp_path / "good.mfpkg")
        m = package.Manifest.from_bytes(package.Package.from_bytes(pkg.read_bytes()).manifest)
        rollout_id = _start_rollout(utility, GOOD, pkg, "pilot:dc-a", "wide:ALL", window="12s")

        part = pilot.releases.incoming / f"{GOOD}.part"
        wait_for(lambda: part.exists() and part.stat().st_size >= 3 * m.chunk_size, 120,
                 "the pilot's download under way")  # fmt: skip
        utility.broker.stop()  # the link goes down mid-download
        wait_for(lambda: (pilot.status().get("uplink") or {}).get("connected") is False, 60,
                 "the pilot to notice the cut link")  # fmt: skip
        cut_at = part.stat().st_size
        assert cut_at < m.payload_size
        utility.broker.start()

        wait_for(lambda: utility.rollout(rollout_id).get("state") == ro.DONE, 360,
                 "the rollout to finish")  # fmt: skip
        [done] = receiver_json("rollout", "status", "--id", str(rollout_id), "--db",
                               str(utility.rdb), "--json",
                               session=utility.ops.login("vera", "viewer"))  # fmt: skip
        assert done["stages"] == ["pilot:dc-a", "wide:ALL"] and done["health_window_s"] == 12
        assert {t["concentrator"]: (t["stage"], t["state"]) for t in done["targets"]} == {
            "dc-a": ("pilot", "healthy"), "dc-b": ("wide", "healthy"), "dc-c": ("wide", "healthy")
        }  # fmt: skip
        wait_for(lambda: all(v[0] == GOOD for v in utility.software().values()), 120,
                 "every concentrator sending as the new release")  # fmt: skip
        # The mixed fleet: dc-c still sends wire format 1 (its config pins it).
        assert {c: v[1] for c, v in utility.software().items()} == {
            "dc-a": wire.VERSION, "dc-b": wire.VERSION, "dc-c": 1
        }  # fmt: skip

        # The download resumed after the cut: every chunk fetched once, none again.
        [installed] = [e for e in utility.upgrade_events("dc-a") if e["state"] == "installed"]
        assert installed["link_losses"] >= 1
        assert installed["fetched"] == installed["chunks"] == len(m.chunks)
        # The wide stage opened only after the pilot had been healthy for its window.
        [healthy] = [e for e in utility.upgrade_events("dc-a") if e["state"] == "healthy"]
        for cid in ("dc-b", "dc-c"):
            [offer] = utility.query(lambda s, cid=cid: s.commands(concentrator=cid))
            assert offer.action == "upgrade" and offer.issued_at >= healthy["at"]
        for s in sites:
            assert s.releases.link("current") == GOOD and s.releases.link("previous") is None
            assert s.status().get("version") == GOOD
        _nothing_lost(utility, sites)
        # The new release polls: readings taken after the switch.
        for s in sites:
            with Store.open(s.db) as store:
                trial = [e.event for e in store.events(kind="upgrade")
                         if e.event.detail["state"] == "trial"]  # fmt: skip
                assert trial
                assert any(r.reading.read_at > trial[0].at for r in store.get_readings())
    finally:
        for s in sites:
            s.stop()


def test_bad_packages_are_refused_and_a_broken_release_is_rolled_back(
    tmp_path: Path, utility: Utility, wheels: dict[str, Path]
) -> None:
    sites = [Site(tmp_path, utility.broker, "dc-p", 4), Site(tmp_path, utility.broker, "dc-w", 5)]
    pilot, wide = sites
    try:
        _start_fleet(utility, sites)
        good = package.Package.from_bytes(
            _build_package(utility, wheels[GOOD], tmp_path / "good.mfpkg").read_bytes()
        )
        m = package.Manifest.from_bytes(good.manifest)

        # Three bad packages, each sent to dc-w by a rollout of its own, straight into the
        # receiver's database (the CLI would not accept them): each is refused with its
        # reason, the rollout halts, and nothing is installed.
        forged = pki.signing_key(tmp_path / "not-the-release.key", "a stranger's key")
        flipped = bytearray(good.payload)
        flipped[m.chunk_size + 10] ^= 0x01  # chunk 1 no longer matches its hash
        cases = [
            ("0.2.1", good.manifest, forged.sign(good.manifest), good.payload, "bad_signature"),
            ("0.2.2", None, None, bytes(flipped), "bad_hash: chunk 1"),
            ("0.2.3", None, None, good.payload[:-1], f"truncated: chunk {len(m.chunks) - 1}"),
        ]
        for version, manifest, signature, payload, why in cases:
            if manifest is None:
                manifest = _with_version(good.manifest, version)
                signature = pki.release_key(utility.broker.pki_dir).sign(manifest)
            assert signature is not None

            def insert(s: SqliteStorage, *row: Any) -> None:
                with s.transaction() as tx:
                    tx.execute(sa.insert(releases).values(row))

            utility.query(insert, version, manifest, signature, payload, time.time())
            rid = utility.query(lambda s, v=version: ro.start(s, v, [ro.Stage("only", "dc-w")],
                                                              10.0, time.time()))  # fmt: skip
            wait_for(lambda rid=rid: utility.rollout(rid).get("state") == ro.HALTED, 120,
                     f"{version} refused")  # fmt: skip
            [target] = utility.rollout(rid)["targets"]
            assert target["state"] in ("refused", "failed") and why in target["reason"], target
            assert not wide.releases.installed(version)
            assert not (wide.releases.incoming / f"{version}.part").exists()
            assert wide.releases.link("current") is None

        # A release that cannot poll: the pilot tries it, the guard rolls it back, the
        # wide stage never starts.
        pkg = _build_package(utility, wheels[BROKEN], tmp_path / "broken.mfpkg")
        rollout_id = _start_rollout(utility, BROKEN, pkg, "pilot:dc-p", "wide:ALL", window="12s")
        wait_for(lambda: utility.rollout(rollout_id).get("state") == ro.HALTED, 300,
                 "the broken release to be rolled back")  # fmt: skip
        doc = utility.rollout(rollout_id)
        [target] = doc["targets"]  # the wide stage never opened
        assert target["concentrator"] == "dc-p" and target["state"] == "rolled_back"
        assert "no reading polled and stored" in target["reason"]
        assert not [c for c in utility.query(lambda s: s.commands(concentrator="dc-w"))
                    if c.issued_by == f"rollout {rollout_id}"]  # fmt: skip
        assert pilot.releases.link("current") is None  # back on the base install
        wait_for(lambda: pilot.status().get("version") == BASE, 60, "the old release running")
        rolled = [e for e in utility.upgrade_events("dc-p") if e["state"] == "rolled_back"]
        wait_for(lambda: utility.software()["dc-p"][0] == BASE, 60, "dc-p reporting as old")
        # The old release polls again after the rollback, and nothing was lost.
        back_at = rolled[0]["at"] if rolled else time.time()
        wait_for(lambda: max(_read_times(pilot.db)) > back_at, 60, "readings after the rollback")
        _nothing_lost(utility, sites)
    finally:
        for s in sites:
            s.stop()


def _read_times(db: Path) -> list[float]:
    with Store.open(db) as store:
        return [r.reading.read_at for r in store.get_readings()]


def _with_version(manifest: bytes, version: str) -> bytes:
    m = package.Manifest.from_bytes(manifest)
    return package.Manifest(
        version=version,
        files=m.files,
        payload_size=m.payload_size,
        payload_sha256=m.payload_sha256,
        chunk_size=m.chunk_size,
        chunks=m.chunks,
        requires=m.requires,
        built_at=m.built_at,
    ).to_bytes()
