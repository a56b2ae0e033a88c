"""The GPRS link end to end: the daemon's modem supervisor against the modem emulator,
whose state decides whether the concentrator's data link (a TCP proxy in front of a
private Mosquitto with TLS) carries packets. An outage and a hung module are detected,
recovered, reported as events, and the uplink resumes and drains its backlog into the
receiver: every reading committed arrives exactly once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_daemon_inprocess import until
from test_uplink_e2e import Receiver

from cloud_receiver.applications.fleet import pki
from cloud_receiver.applications.fleet.local_broker import LocalBroker
from cloud_receiver.storage import SqliteStorage
from concentrator.clock import ScaledClock
from concentrator.daemon import Daemon
from hil_sim.clock import SimClock
from hil_sim.fleet import FleetOptions, add_uplink, build_bus, write_config
from hil_sim.modem import SimModem
from hil_sim.netlink import LinkProxy
from hil_sim.truth import TruthLog

pytestmark = pytest.mark.slow

SCALE = 60.0
CID = "dc-modem"
MODEM = """
[modem]
port = "{port}"
poll_s = 0.5
dead_link_s = 2.0
reset_backoff_min_s = 1.0
reset_backoff_max_s = 4.0
hung_probe_tries = 2
command_timeout_s = 0.5
"""


def received(db: Path) -> int:
    if not db.exists():
        return 0
    s = SqliteStorage(db)
    try:
        return len(s.readings())
    finally:
        s.close()


async def test_outage_and_hung_modem_are_recovered_and_the_backlog_drains(
    tmp_path: Path,
) -> None:
    with LocalBroker(tmp_path / "broker") as broker:
        frag = pki.provision(broker.pki_dir, CID, broker_host="127.0.0.1", broker_port=broker.port)
        receiver_db = tmp_path / "receiver.db"
        receiver = Receiver(broker, receiver_db, tmp_path / "receiver.log")
        receiver.start()
        opts = FleetOptions(meters=4, baud=0)
        sim_clock = SimClock(scale=SCALE)
        bus = build_bus(
            opts, link=tmp_path / "bus1", clock=sim_clock, truth=TruthLog(tmp_path / "t.jsonl")
        )
        await bus.start()
        modem = SimModem(link=tmp_path / "modem", clock=sim_clock)
        await modem.start()
        proxy = LinkProxy("127.0.0.1", broker.port, follow=lambda: modem.data_up)
        await proxy.start()
        cfg = tmp_path / "c.toml"
        write_config(
            cfg, [("bus1", tmp_path / "bus1", opts, bus.meters)], store_path=tmp_path / "s.db",
            cadence="1m",
        )  # fmt: skip
        add_uplink(
            cfg, frag, concentrator_id=CID,
            overrides={"broker_port": proxy.port, "ack_timeout_s": 5.0, "poll_s": 0.5,
                       "reconnect_max_s": 2.0},
        )  # fmt: skip
        with cfg.open("a") as fh:
            fh.write(MODEM.format(port=tmp_path / "modem"))
        daemon = Daemon(cfg, clock=ScaledClock(scale=SCALE), control_socket=tmp_path / "ctl.sock")
        task = asyncio.create_task(daemon.run(install_signals=False))
        try:
            await until(lambda: daemon.store is not None or task.done())

            def kinds() -> list[str]:
                assert daemon.store is not None
                return [e.event.kind for e in daemon.store.events()]

            def backlog() -> int:
                assert daemon.store is not None
                return daemon.store.backlog().readings

            await until(lambda: received(receiver_db) >= 4, 120)
            assert daemon.modem is not None

            # 1. The network goes: the module loses registration, the link drops.
            modem.set_outage(True)
            await until(lambda: "modem_outage_start" in kinds(), 60)
            await until(lambda: backlog() >= 8, 120)  # polling goes on into the store
            modem.set_outage(False)
            await until(lambda: "modem_outage_end" in kinds(), 60)
            await until(lambda: backlog() == 0, 120)  # the backlog drains

            # 2. The module hangs (no answer, no data): detected, reset, back.
            modem.hang()
            await until(lambda: "modem_hung" in kinds(), 60)
            await until(lambda: modem.counters.total_resets >= 1, 60)
            await until(lambda: modem.data_up and not modem.hung, 60)
            before = received(receiver_db)
            try:
                await until(lambda: received(receiver_db) > before, 120)
                await until(lambda: backlog() == 0, 120)
                # Reset at once, the module was back before an outage was declared.
                await until(lambda: daemon.modem is not None and daemon.modem.link_up, 60)
            except TimeoutError:
                raise AssertionError(f"{daemon.status()}, backlog {backlog()}") from None
            status = daemon.status()["modem"]
            assert status is not None and status["link_up"] and status["hangs"] >= 1
        finally:
            daemon.stop()
            async with asyncio.timeout(60):
                await task
            await proxy.stop()
            await modem.stop()
            await bus.stop()
            receiver.stop()
        assert daemon.failure is None
        assert proxy.cuts >= 1  # the link really went down, twice over

    from concentrator.storage import Store

    with Store.open(tmp_path / "s.db") as store:
        committed = {
            (r.reading.meter, r.reading.quantity, r.reading.slot): r.reading.value
            for r in store.get_readings()
        }
        outbox = store.backlog().readings
    s = SqliteStorage(receiver_db)
    try:
        rows = s.readings()
    finally:
        s.close()
    arrived = {(r.meter, r.quantity, r.slot): r.value for r in rows}
    assert len(arrived) == len(rows)  # exactly once
    assert len(committed) - len(arrived) == outbox  # all but what was read at the very end
    assert all(committed[k] == v for k, v in arrived.items())
