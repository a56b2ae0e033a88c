"""``make demo``: the whole chain on one machine.

1. Simulated meters on a 2400-baud bus, found and read by the field CLI.
2. Simulated meters → concentrator daemon (time running 60 times faster) → a private
   Mosquitto with TLS and client certificates on a free port → cloud receiver (SQLite),
   then what arrived, per meter, checked against what the concentrator committed.
3. The portal (`cloud-receiver web`) on that database, with a demo operator (password
   and TOTP) and a demo customer with a prepaid account: its address and both logins
   are the demo's last words; it serves until Ctrl-C (at once stopped when the demo
   does not run in a terminal, or after ``MF_DEMO_PORTAL_S`` seconds when that is set).
"""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from cloud_receiver.public import LocalBroker, SqliteStorage, pki
from concentrator.public import Store
from hil_sim.demo_report import explain_concentrator, explain_receiver
from hil_sim.fleet import add_uplink
from hil_sim.process import SimProcess, cli_command


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="meterflow-demo-") as tmp:
        link = Path(tmp) / "rs485-1"
        print(f"== starting hil-sim: 4 DL/T 645 meters on a 2400-baud bus at {link}")
        with SimProcess(
            [
                "bus",
                "--meters",
                "4",
                "--baud",
                "2400",
                "--link",
                str(link),
                "--address-base",
                "210000000101",
            ]
        ) as sim:
            concentrator = cli_command("concentrator")
            print("== concentrator scan (wildcard-address search)")
            scanned = subprocess.run(
                [*concentrator, "scan", "--port", str(link), "--timeout", "0.3"],
                check=True,
                stdout=subprocess.PIPE,
                text=True,
            ).stdout
            # One line per meter found: its address, then the protocol it answered in.
            found = [line.split()[0] for line in scanned.splitlines() if line.strip()]
            print("found:", ", ".join(found))
            for address in found:
                print(f"== concentrator read --address {address}")
                subprocess.run(
                    [
                        *concentrator,
                        "read",
                        "--port",
                        str(link),
                        "--address",
                        address,
                        "energy_fwd_total",
                        "energy_fwd_t1",
                        "energy_fwd_t2",
                        "energy_fwd_t3",
                        "energy_fwd_t4",
                        "voltage_a",
                        "current_a",
                        "power_total",
                        "frequency",
                        "meter_date",
                        "meter_time",
                    ],
                    check=True,
                )
            print(
                f"== ground truth: {sum(1 for _ in sim.truth.open())} values logged by the meters"
            )
        run_daemon_demo(Path(tmp))
    return 0


CID = "dc-demo-0001"
RUN_S = 45.0  # three 15-minute slots at time x60
DRAIN_TIMEOUT_S = 120.0


def run_daemon_demo(tmp: Path) -> None:
    """16 meters on 2 buses → concentrator → Mosquitto (TLS) → receiver."""
    cfg, db, receiver_db = tmp / "concentrator.toml", tmp / "concentrator.db", tmp / "receiver.db"
    print("== private Mosquitto: TLS, client certificates, ACL, on a free port")
    with LocalBroker(tmp / "broker") as broker:
        print(f"   listening on {broker.address}; PKI in {broker.pki_dir}")
        print(f"== cloud-receiver provision {CID}: client certificate and payload key")
        fragment = pki.provision(
            broker.pki_dir, CID, broker_host="127.0.0.1", broker_port=broker.port
        )
        print("== hil-sim fleet: 2 buses x 8 meters, 2400 baud, 2 % faults, time x60")
        (tmp / "fleet").mkdir()
        fleet = ["fleet", "--buses", "2", "--meters-per-bus", "8", "--baud", "2400",
                 "--fault-rate", "0.02", "--time-scale", "60", "--link-dir", str(tmp / "fleet"),
                 "--write-config", str(cfg), "--store", str(db)]  # fmt: skip
        with SimProcess(fleet):
            add_uplink(cfg, fragment, concentrator_id=CID, overrides={"poll_s": 1.0})
            print(f"== cloud-receiver run --broker {broker.address} --db sqlite:///…")
            receiver = subprocess.Popen(
                [*cli_command("cloud-receiver"), "run", "--broker", broker.address,
                 "--pki-dir", str(broker.pki_dir), "--db", f"sqlite:///{receiver_db}"]
            )  # fmt: skip
            try:
                print(f"== concentrator run --time-scale 60 ({RUN_S:.0f} s: three 15-minute slots)")
                # Its own control socket: never the machine's daemon's.
                daemon = subprocess.Popen(
                    [*cli_command("concentrator"), "run", "--config", str(cfg),
                     "--time-scale", "60", "--control-socket", str(tmp / "concentrator.sock")]
                )  # fmt: skip
                try:
                    daemon.wait(timeout=RUN_S)
                    raise SystemExit(f"the concentrator exited early ({daemon.returncode})")
                except subprocess.TimeoutExpired:
                    pass
                print("== waiting for the uplink to deliver the backlog (receiver acks)")
                _wait_drained(db)
            finally:
                _stop(daemon)
                _stop(receiver)
    print("== concentrator stats")
    subprocess.run([*cli_command("concentrator"), "stats", "--config", str(cfg)], check=True)
    _say(explain_concentrator(db))
    session = _log_in(tmp, f"sqlite:///{receiver_db}")
    print("== cloud-receiver concentrators")
    subprocess.run(
        [*cli_command("cloud-receiver"), "concentrators", "--db", f"sqlite:///{receiver_db}",
         "--session", str(session)],
        check=True,
    )  # fmt: skip
    _say(explain_receiver(db, receiver_db, CID))
    _print_arrivals(db, receiver_db)
    _serve_portal(tmp, receiver_db, session)


def _log_in(tmp: Path, url: str) -> Path:
    """The first administrator (no session needed while there is no operator), logged in
    with its password and a TOTP code, as a person would with an authenticator app."""
    import json
    import os

    import pyotp

    password = tmp / "password"
    fd = os.open(password, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("demo password, never reuse\n")
    receiver = cli_command("cloud-receiver")
    print("== cloud-receiver operator add demo --role administrator (the first operator)")
    added = subprocess.run(
        [*receiver, "operator", "add", "demo", "--role", "administrator", "--db", url,
         "--password-file", str(password), "--json"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    code = pyotp.TOTP(json.loads(added.stdout)["totp_secret"]).now()
    session = tmp / "session.json"
    print("== cloud-receiver login demo (password and TOTP code)")
    subprocess.run(
        [*receiver, "login", "demo", "--db", url, "--password-file", str(password),
         "--totp", code, "--session", str(session)],
        check=True,
    )  # fmt: skip
    return session


DEMO_PASSWORD = "demo password, never reuse"  # the demo's operators' and customer's


def _receiver_ok(*args: str, session: Path | None = None, **env: str) -> str:
    import os

    command = [*cli_command("cloud-receiver"), *args]
    if session is not None:
        command += ["--session", str(session)]
    done = subprocess.run(command, check=True, capture_output=True, text=True,
                          env={**os.environ, **env})  # fmt: skip
    return done.stdout


def _serve_portal(tmp: Path, receiver_db: Path, session: Path) -> None:
    """A demo operator and a demo customer, then ``cloud-receiver web`` on the demo's
    database; the address and the logins are printed last."""
    import json
    import os
    import socket
    import urllib.request

    import pyotp

    url = f"sqlite:///{receiver_db}"
    stored = SqliteStorage(receiver_db)
    try:
        first = min(r.meter for r in stored.readings())
    finally:
        stored.close()
    print("== cloud-receiver operator add olga --role operator; account open A-demo;"
          " customer add cora")  # fmt: skip
    added = json.loads(
        _receiver_ok("operator", "add", "olga", "--role", "operator", "--db", url, "--json",
                     session=session, MF_NEW_PASSWORD=DEMO_PASSWORD)
    )  # fmt: skip
    _receiver_ok("account", "open", "A-demo", "--meter", first, "--concentrator", CID, "--price",
                 "flat=0.55", "--opening", "credit=50", "--db", url, session=session)  # fmt: skip
    _receiver_ok("customer", "add", "cora", "--meter", first, "--language", "zh", "--db", url,
                 session=session, MF_NEW_PASSWORD=DEMO_PASSWORD)  # fmt: skip
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    web = subprocess.Popen(
        [*cli_command("cloud-receiver"), "web", "--db", url, "--port", str(port),
         "--secret-key", str(tmp / "web.key")]
    )  # fmt: skip
    address = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{address}login", timeout=2):
                    break
            except OSError:
                if web.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the portal did not start") from None
                time.sleep(0.2)
        secret = str(added["totp_secret"])
        print(f"== the portal: {address}")
        print(f"   operator: olga / {DEMO_PASSWORD!r}; TOTP secret {secret} (add it to an"
              f" authenticator app; the code now is {pyotp.TOTP(secret).now()})")  # fmt: skip
        print(f"   customer: cora / {DEMO_PASSWORD!r} (prepaid account A-demo, meter {first})")
        print(f"   API: {address}api/v1, its OpenAPI document at {address}api/openapi.json")
        _wait_for_ctrl_c(float(os.environ.get("MF_DEMO_PORTAL_S", "0") or 0))
    finally:
        _stop(web)


def _wait_for_ctrl_c(seconds: float) -> None:
    """Serve until Ctrl-C in a terminal (or for ``seconds``, when given)."""
    if seconds <= 0 and not sys.stdin.isatty():
        print("   (not a terminal: the portal stops with the demo; run `make demo` in one)")
        return
    print("   Ctrl-C stops the portal and ends the demo")
    try:
        if seconds > 0:
            time.sleep(seconds)
        else:
            signal.pause()
    except KeyboardInterrupt:
        pass


def _say(lines: list[str]) -> None:
    for line in lines:
        print(f"   {line}")


def _wait_drained(db: Path) -> None:
    """Until the receiver has acknowledged every reading and event so far."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        with Store.open(db) as store:
            backlog = store.backlog()
        if backlog.readings == 0 and backlog.events == 0:
            return
        if time.monotonic() > deadline:
            print(
                f"   {backlog.readings} readings and {backlog.events} events still "
                f"undelivered after {DRAIN_TIMEOUT_S:.0f} s"
            )
            return
        time.sleep(0.5)  # the demo polls the store a person would watch


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _print_arrivals(db: Path, receiver_db: Path) -> None:
    """Per meter: what arrived at the receiver, against what the concentrator committed."""
    with Store.open(db) as store:
        committed = {
            (r.reading.meter, r.reading.quantity, r.reading.slot): r.reading.value
            for r in store.get_readings()
        }
    storage = SqliteStorage(receiver_db)
    try:
        rows = storage.readings()
    finally:
        storage.close()
    arrived = {(r.meter, r.quantity, r.slot): r.value for r in rows}
    table = Table(title="What arrived at the cloud receiver, per meter")
    for col in ("meter", "15-min readings", "daily freezes", "last slot", "last kWh"):
        table.add_column(col, justify="left" if col == "meter" else "right")
    tz = dt.datetime.now().astimezone().tzinfo
    for meter in sorted({r.meter for r in rows}):
        energy = sorted(
            (r for r in rows if r.meter == meter and r.quantity == "energy_fwd_total"),
            key=lambda r: r.slot,
        )
        freezes = {r.slot for r in rows if r.meter == meter and r.quantity.startswith("frozen")}
        last = energy[-1] if energy else None
        table.add_row(
            meter,
            str(len(energy)),
            str(len(freezes)),
            dt.datetime.fromtimestamp(last.slot, tz).strftime("%m-%d %H:%M") if last else "-",
            last.value if last else "-",
        )
    Console().print(table)
    with Store.open(db) as store:
        outbox = store.backlog().readings  # read after the last batch went out
    exact = len(arrived) == len(rows) and all(committed.get(k) == v for k, v in arrived.items())
    complete = len(committed) - len(arrived) == outbox
    print(
        f"concentrator committed {len(committed)} readings; the receiver holds {len(rows)}"
        f" ({len(arrived)} distinct); {outbox} still in the concentrator's outbox"
        " (read after its last batch; sent at its next start)"
    )
    if not (exact and complete):
        raise SystemExit("MISMATCH between the concentrator's store and the receiver")
    print("every delivered reading arrived exactly once, with its committed value")


if __name__ == "__main__":
    sys.exit(main())
