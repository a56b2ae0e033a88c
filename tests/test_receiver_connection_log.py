"""``cloud-receiver run`` says what happens to its broker connection (issue 18, item 8):
every failed attempt with its reason and the delay before the next one, a lost
connection with the same, and its counters when SIGTERM stops it, all at the default
log level (no -v). Against a real closed port and a real Mosquitto."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

from helpers import wait_for
from mqtt_harness import Broker
from scrape import try_scrape

from cloud_receiver.applications.fleet.broker import free_port

WAIT_S = 60.0


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_connection_failures_reasons_delays_and_counters_at_the_default_level(
    tmp_path: Path,
) -> None:
    broker = Broker(tmp_path / "broker")  # its PKI, on a free port; not started yet
    err, out = tmp_path / "receiver.err", tmp_path / "receiver.out"
    metrics_port = free_port()  # its broker-session gauge says when it is connected

    def connected() -> bool:
        scraped = try_scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        return scraped is not None and scraped.value("meterflow_receiver_broker_connected") == 1

    args = [sys.executable, "-m", "cloud_receiver", "run", "--broker", broker.address,
            "--pki-dir", str(broker.pki_dir), "--db", f"sqlite:///{tmp_path / 'r.db'}",
            "--metrics", f"127.0.0.1:{metrics_port}", "--json"]  # fmt: skip
    with err.open("wb") as e, out.open("wb") as o:
        proc = subprocess.Popen(args, stdout=o, stderr=e)
    try:
        # Nothing listens on the port: each attempt is logged with why, and the backoff.
        refused = f"cannot connect to the broker {broker.address}: ConnectionRefusedError"
        wait_for(lambda: _text(err).count(refused) >= 2, WAIT_S, "two refused attempts")
        delays = re.findall(rf"{re.escape(refused)}: .*; retrying in (\d+) s", _text(err))
        assert delays[:2] == ["1", "2"], _text(err)
        assert " WARNING " in _text(err).splitlines()[0]
        # The broker comes up: the receiver connects (and says nothing at this level) ...
        broker.start()
        wait_for(connected, WAIT_S, "the receiver to connect")
        # ... and when the broker goes away, the loss is logged with the (reset) backoff.
        broker.stop()
        lost = f"disconnected from the broker {broker.address}: "
        wait_for(lambda: lost in _text(err), WAIT_S, "the lost connection logged")
        assert re.search(rf"{re.escape(lost)}.*; reconnecting in 1 s", _text(err)), _text(err)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        broker.stop()
    assert proc.returncode == 0, _text(err)
    # The counters, without -v: a line on stderr, and (--json) one object on stdout.
    assert re.search(
        r"^stopped: 0 messages, 0 batches stored \(0 readings\), 0 duplicates, 0 quarantined,"
        r" 0 over the rate limit, 0 evicted from the quarantine$",
        _text(err),
        re.MULTILINE,
    ), _text(err)
    counters = json.loads(_text(out))
    assert (counters["messages"], counters["stored"], counters["readings"]) == (0, 0, 0)
