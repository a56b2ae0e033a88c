"""A private Mosquitto for one machine: the demo, the benchmarks and the tests.

It runs the very configuration ``cloud-receiver broker-config`` writes for production
(TLS listener, client certificates required, certificate CN as username, the ACL), on a
free loopback port with a fresh deployment PKI in ``root``. Only the port, the account
(the current user: a test's temporary directory is not readable by ``mosquitto``) and
the data directory differ.

Readiness is a real TLS + MQTT connect with a probe certificate of its own (and no ACL
rights): the broker turns the CN into the client id, so probing as a receiver with a
clean start would wipe that receiver's persistent session (and its backlog).
"""

from __future__ import annotations

import getpass
import shutil
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from cloud_receiver.applications.fleet import pki
from cloud_receiver.applications.fleet.broker import (
    BrokerLimits,
    free_port,
    write_mosquitto_config,
)

PROBE_NAME = "local-broker-probe"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 2.0


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto")
    if found:
        return found
    if Path("/usr/sbin/mosquitto").exists():
        return "/usr/sbin/mosquitto"
    raise FileNotFoundError("mosquitto is not installed: run `make setup` (apt-get mosquitto)")


class LocalBroker:
    """Mosquitto on a free loopback port; ``start``/``stop``/``restart`` as often as needed.

    Every process it starts is stopped by ``stop`` (SIGTERM, which makes Mosquitto
    write its persistence file, then SIGKILL after ``STOP_TIMEOUT_S``).
    """

    def __init__(
        self,
        root: Path,
        *,
        receivers: Sequence[str] = (pki.RECEIVER_NAME,),
        limits: BrokerLimits | None = None,
    ) -> None:
        self.root = root
        self.pki_dir = root / "pki"
        self.data_dir = root / "mosquitto-data"
        self.conf = root / "mosquitto.conf"
        self.log = root / "mosquitto.log"
        self.receivers = tuple(receivers)
        self.limits = limits
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        pki.init_pki(self.pki_dir)
        pki.ensure_server_cert(self.pki_dir, ("localhost",), ("127.0.0.1",))
        for name in (*self.receivers, PROBE_NAME):
            pki.ensure_client_cert(self.pki_dir, name)
        self._write_config()

    def _write_config(self) -> None:
        write_mosquitto_config(
            self.conf,
            pki_dir=self.pki_dir,
            port=self.port,
            data_dir=self.data_dir,
            receivers=self.receivers,
            run_as=getpass.getuser(),
            limits=self.limits,
        )

    def reconfigure(self, limits: BrokerLimits | None = None) -> None:
        """Write the config again (the concentrators provisioned since then get their
        subscription rules; ``limits`` if given) and restart a running broker."""
        if limits is not None:
            self.limits = limits
        self._write_config()
        if self.proc is not None:
            self.restart()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [mosquitto_binary(), "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        delay = 0.02
        try:
            while not self._accepts_clients():
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"mosquitto did not accept TLS clients within {START_TIMEOUT_S} s:"
                        f" {self.log_text()[-2000:]}"
                    )
                time.sleep(delay)  # polling a starting process, bounded by the deadline
                delay = min(delay * 2, 0.5)
        except BaseException:
            self.stop()
            raise

    def _accepts_clients(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {self.log_text()}")
        return probe(self.pki_dir, PROBE_NAME, self.port)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def reload(self) -> None:
        """SIGHUP: Mosquitto re-reads its certificates and the CRL (``systemctl reload``)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def crash(self) -> None:
        """kill -9: what the broker accepted since its last autosave is gone."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def probe(pki_dir: Path, name: str, port: int, host: str = "127.0.0.1") -> bool:
    """True when the broker completes a TLS + MQTT v5 connect for identity ``name``."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    client.tls_set(
        ca_certs=str(pki_dir / f"{pki.CA_NAME}.crt"),
        certfile=str(pki_dir / f"{name}.crt"),
        keyfile=str(pki_dir / f"{name}.key"),
        cert_reqs=ssl.CERT_REQUIRED,
    )
    done = threading.Event()
    ok: list[bool] = []

    def on_connect(c: mqtt.Client, u: object, f: object, reason: object, p: object) -> None:
        ok.append(not getattr(reason, "is_failure", True))
        done.set()

    def on_disconnect(c: mqtt.Client, u: object, f: object, reason: object, p: object) -> None:
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect(host, port, keepalive=10)
    except (OSError, ssl.SSLError):
        return False
    client.loop_start()
    try:
        done.wait(PROBE_TIMEOUT_S)
        return bool(ok and ok[0])
    finally:
        client.disconnect()
        client.loop_stop()
