"""The field engineer's CLI on the running daemon, and the control socket behind it.

- The protocol: malformed requests (bad JSON, unknown command, missing fields, oversize
  lines, random bytes and random requests from hypothesis) each get a specific error,
  on a real daemon that keeps answering.
- In process: relay control and broadcast time change the simulated meters' own state
  (relay, clock); a refused relay command is audited; flush wakes the uplink.
- End to end: `concentrator run` against `hil-sim fleet` (time running 30 times faster),
  every command driven as a user would (`python -m concentrator ...`), its output and
  exit code checked; on-demand reads during a saturated poll; what the daemon stored
  and what the CLI printed checked against the simulator's ground truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import pwd
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import DaemonProcess, run_cli, truth_values, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from concentrator.cli.exitcodes import Exit
from concentrator.clock import ScaledClock
from concentrator.config import DEFAULT_CONTROL_SOCKET, check_config, load_config
from concentrator.control.client import ControlClient, DaemonUnreachable
from concentrator.control.protocol import (
    COMMANDS,
    MAX_LINE,
    ControlError,
    ErrorCode,
    Request,
    parse_request,
    parse_time,
)
from concentrator.daemon import Daemon
from concentrator.storage import Store
from hil_sim.clock import SimClock
from hil_sim.fleet import (
    DEFAULT_OPERATOR,
    DEFAULT_PASSWORD,
    DEFAULT_PASSWORD_LEVEL,
    FleetOptions,
    build_bus,
    write_config,
)
from hil_sim.process import SimProcess, cli_command, env_without_color
from hil_sim.truth import TruthLog

CODES = {c.value for c in ErrorCode}
TZ8 = dt.timezone(dt.timedelta(hours=8))


def short_dir(prefix: str) -> Path:
    # A Unix socket path holds at most 107 bytes: pytest's tmp_path can be longer.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def answers(path: Path, payload: bytes, n: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Send raw bytes; collect every line up to the n-th final line (or EOF)."""
    out: list[dict[str, Any]] = []
    finals = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(payload)
        with s.makefile("rb") as lines:
            for raw in lines:
                doc = json.loads(raw)
                assert doc["v"] == 1, doc
                out.append(doc)
                finals += "result" in doc or "error" in doc
                if finals == n:
                    break
    return out


def responsive(path: Path) -> bool:
    try:
        ControlClient(path, timeout=10).call("status")
    except (DaemonUnreachable, ControlError, OSError):
        return False
    return True


# ---------------------------------------------------------------------- config


def _config(tmp_path: Path, extra: str) -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[concentrator]\nid = "dc"\n{extra}\n[storage]\npath = "s.db"\n')
    return cfg


def test_control_socket_defaults_and_is_relative_to_the_config(tmp_path: Path) -> None:
    plain = load_config(_config(tmp_path, ""))
    assert plain.concentrator.control_socket == DEFAULT_CONTROL_SOCKET
    relative = load_config(_config(tmp_path, 'control_socket = "run/ctl.sock"'))
    assert relative.concentrator.control_socket == tmp_path / "run" / "ctl.sock"


def test_control_socket_problems_name_their_line(tmp_path: Path) -> None:
    long = "/tmp/" + "x" * 120 + ".sock"
    [issue] = check_config(_config(tmp_path, f'control_socket = "{long}"'))
    assert (issue.line, issue.field) == (3, "concentrator.control_socket")
    assert "at most 107" in issue.message
    [issue] = check_config(_config(tmp_path, "control_socket = 5"))
    assert (issue.line, issue.field) == (3, "concentrator.control_socket")
    assert "expected a string" in issue.message
    [issue] = check_config(_config(tmp_path, 'control_socket = ""'))
    assert issue.line == 3 and "must not be empty" in issue.message


# ---------------------------------------------------------------------- protocol


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"hello", "bad_json"),
        (b"\xff\xfe{}", "bad_json"),
        (b"[" * 5000, "bad_json"),  # nested too deep for the parser: still just bad JSON
        (b"1" * 5000, "bad_json"),  # an integer too long to convert
        (b"[1, 2]", "bad_request"),
        (b'{"cmd": "status"}', "bad_request"),  # no version
        (b'{"v": 2, "cmd": "status"}', "unsupported_version"),
        (b'{"v": true, "cmd": "status"}', "unsupported_version"),
        (b'{"v": "1", "cmd": "status"}', "unsupported_version"),
        (b'{"v": 1}', "bad_request"),  # no command
        (b'{"v": 1, "cmd": 7}', "bad_request"),
        (b'{"v": 1, "cmd": "reboot"}', "unknown_command"),
        (b'{"v": 1, "cmd": "status", "verbose": true}', "bad_request"),
        (b'{"v": 1, "cmd": "status", "id": [1]}', "bad_request"),
        (b'{"v": 1, "cmd": "status", "id": true}', "bad_request"),
        (b'{"v": 1, "cmd": "read", "args": []}', "bad_request"),
        (b'{"v": 1, "cmd": "read", "args": {"meter": "1", "port": "/dev/x"}}', "bad_request"),
    ],
)
def test_malformed_requests_get_a_specific_error(line: bytes, code: str) -> None:
    with pytest.raises(ControlError) as err:
        parse_request(line)
    assert err.value.code == code, err.value.message


def test_the_request_id_is_echoed_even_in_errors() -> None:
    with pytest.raises(ControlError) as err:
        parse_request(b'{"v": 1, "id": "abc", "cmd": "reboot"}')
    assert err.value.request_id == "abc"
    assert parse_request(b'{"v":1,"id":7,"cmd":"read","args":{"meter":"x"}}') == Request(
        7, "read", {"meter": "x"}
    )
    assert parse_request(b'{"v":1,"cmd":"status"}') == Request(None, "status", {})


@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_our_error(data: bytes) -> None:
    try:
        parse_request(data)
    except ControlError as exc:
        assert exc.code in CODES


def test_times_are_unix_seconds_iso_in_concentrator_time_or_ages() -> None:
    now = 1_800_000_000.0
    assert parse_time("90m", now, TZ8) == now - 5400
    assert parse_time("1d", now, TZ8) == now - 86400
    assert parse_time("1700000000", now, TZ8) == 1.7e9
    assert parse_time(1.5e9, now, TZ8) == 1.5e9
    assert parse_time("2026-11-25", now, TZ8) == dt.datetime(2026, 11, 25, tzinfo=TZ8).timestamp()
    assert (
        parse_time("2026-11-25T08:00+00:00", now, TZ8)
        == dt.datetime(2026, 11, 25, 8, tzinfo=dt.UTC).timestamp()
    )
    for bad in ("yesterday", "nan", "inf"):
        with pytest.raises(ControlError) as err:
            parse_time(bad, now, TZ8)
        assert err.value.code == "bad_argument"


# -- a real daemon in a thread of this process, with one meter on a port that does not
# exist: every command is answered without any bus time.


@dataclass
class ThreadDaemon:
    socket: Path
    daemon: Daemon
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread


@pytest.fixture(scope="module")
def quiet_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadDaemon]:
    tmp = tmp_path_factory.mktemp("quiet")
    sock_dir = short_dir("mfq")
    cfg = tmp / "c.toml"
    cfg.write_text(
        '[concentrator]\nid = "dc-quiet"\n[storage]\npath = "s.db"\n'
        '[[bus]]\nname = "bus1"\ntype = "rs485"\nport = "/nonexistent/tty-quiet"\nbaud = 2400\n'
        'parity = "E"\n'
        '[[meter]]\naddress = "000000000001"\nprotocol = "dlt645"\nbus = "bus1"\n'
    )
    started = threading.Event()
    got: dict[str, Any] = {}

    def main() -> None:
        async def serve() -> None:
            got["daemon"] = Daemon(cfg, control_socket=sock_dir / "ctl.sock")
            got["loop"] = asyncio.get_running_loop()
            started.set()
            await got["daemon"].run(install_signals=False)

        try:
            asyncio.run(serve())
        finally:
            started.set()  # also when the daemon could not even be built

    thread = threading.Thread(target=main, name="quiet-daemon", daemon=True)
    thread.start()
    path = sock_dir / "ctl.sock"
    try:
        assert started.wait(30) and "daemon" in got
        rig = ThreadDaemon(path, got["daemon"], got["loop"], thread)
        wait_for(lambda: responsive(path), 60, "the quiet daemon's control socket")
        yield rig
    finally:
        if "loop" in got:
            got["loop"].call_soon_threadsafe(got["daemon"].stop)
        thread.join(60)
        shutil.rmtree(sock_dir, ignore_errors=True)
    assert not thread.is_alive() and rig.daemon.failure is None


def test_malformed_lines_get_their_errors_and_the_connection_goes_on(
    quiet_daemon: ThreadDaemon,
) -> None:
    lines = [
        b"hello",
        b"\xff\xfe",
        b"[1]",
        b'{"v": 2, "id": 1, "cmd": "status"}',
        b'{"v": 1, "id": "x", "cmd": "nope"}',
        b'{"v": 1, "id": 3, "cmd": "read"}',
        b'{"v": 1, "id": 4, "cmd": "read", "args": {"meter": 5}}',
        b'{"v": 1, "id": 5, "cmd": "relay", "args": {"meter": "000000000001", "action": "x"}}',
        b'{"v": 1, "id": 6, "cmd": "events", "args": {"since": "last tuesday"}}',
        b'{"v": 1, "id": 7, "cmd": "read", "args": {"meter": "999999999998"}}',
        b'{"v": 1, "id": 8, "cmd": "relay", "args": {"meter": "000000000001", "action": "open"}}',
        b'{"v": 1, "id": 9, "cmd": "read", "args": {"meter": "000000000001"}}',
        b"   ",  # blank: ignored
        b'{"v": 1, "id": 10, "cmd": "status"}',
    ]
    got = answers(quiet_daemon.socket, b"\n".join(lines) + b"\n", n=13)
    codes = [(d["id"], d.get("error", {}).get("code")) for d in got]
    assert codes == [
        (None, "bad_json"),
        (None, "bad_json"),
        (None, "bad_request"),
        (1, "unsupported_version"),
        ("x", "unknown_command"),
        (3, "bad_request"),  # missing argument "meter"
        (4, "bad_request"),
        (5, "bad_argument"),
        (6, "bad_argument"),
        (7, "unknown_meter"),
        (8, "refused"),  # no relay password in the config
        (9, "bus_error"),  # the port cannot be opened
        (10, None),
    ]
    assert got[-1]["result"]["concentrator"] == "dc-quiet"
    assert all(d["error"]["message"] for d in got[:-1])


def test_an_oversize_line_is_refused_and_only_that_connection_closed(
    quiet_daemon: ThreadDaemon,
) -> None:
    status = b'{"v": 1, "cmd": "status"}\n'
    got = answers(quiet_daemon.socket, b"x" * (MAX_LINE + 100) + b"\n" + status, n=2)
    assert [d["error"]["code"] for d in got] == ["line_too_long"]  # then EOF
    assert "result" in answers(quiet_daemon.socket, status)[0]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
_arg_names = sorted({a for args in COMMANDS.values() for a in args} | {"x"})
_requests = st.fixed_dictionaries(
    {
        "v": st.sampled_from([1, 1, 1, 2, "1", None, True]),
        "cmd": st.sampled_from([*COMMANDS, "nope", ""]),
        "args": st.dictionaries(
            st.sampled_from(_arg_names),
            _json_values
            | st.sampled_from(["000000000001", "open", "close", "2026-11-25", "1h", "bus1"]),
            max_size=3,
        ),
    },
    optional={"id": st.one_of(st.none(), st.integers(), st.text(max_size=10), _json_values)},
).filter(lambda r: r["args"].get("follow") is not True)  # a log follower never ends


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    line=st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(str.encode),
        _json_values.map(lambda v: json.dumps(v).encode()),
        _requests.map(lambda r: json.dumps(r).encode()),
    )
)
def test_random_lines_get_one_answer_and_never_crash_the_daemon(
    quiet_daemon: ThreadDaemon, line: bytes
) -> None:
    line = line.replace(b"\n", b" ")
    if not line.strip():
        return  # blank lines are ignored by design
    got = answers(quiet_daemon.socket, line + b"\n")
    *streamed, final = got
    assert all(set(d) & {"progress", "log"} for d in streamed)
    assert ("result" in final) != ("error" in final)
    if "error" in final:
        assert final["error"]["code"] in CODES and final["error"]["message"]
    assert quiet_daemon.thread.is_alive() and quiet_daemon.daemon.failure is None


# ---------------------------------------------------------------------- in process

SCALE = 60.0


@dataclass
class InProcess:
    daemon: Daemon
    meters: list[Any]  # the simulated DL/T 645 meters
    socket: Path

    async def call(self, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        return await asyncio.to_thread(ControlClient(self.socket, timeout=60).call, cmd, args)

    async def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(run_cli, *args, "--socket", str(self.socket), timeout=120)


async def until(predicate: Callable[[], object], within: float = 60.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - simulator and store state, no Event to wait on
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def in_process(
    tmp_path: Path,
    *,
    meters: int = 2,
    clock_ahead_s: float = 0.0,
    edit: str = "",
    phases: int = 3,
    protocols: tuple[str, ...] = (),
) -> AsyncIterator[InProcess]:
    opts = FleetOptions(meters=meters, baud=0, phases=phases, protocols=protocols)
    link = tmp_path / "bus1"
    sim = build_bus(
        opts, link=link, clock=SimClock(scale=SCALE), truth=TruthLog(tmp_path / "truth.jsonl")
    )
    await sim.start()
    cfg = tmp_path / "c.toml"
    write_config(
        cfg, [("bus1", link, opts, sim.meters)], store_path=tmp_path / "s.db", cadence="1m"
    )
    if edit:  # the last meter's password, wrong
        text = cfg.read_text()
        at = text.rindex(f'password = "{DEFAULT_PASSWORD}"')
        cfg.write_text(text[:at] + f'password = "{edit}"' + text[at + 19 :])
    sock_dir = short_dir("mfi")
    daemon = Daemon(
        cfg,
        clock=ScaledClock(scale=SCALE, offset=clock_ahead_s),
        control_socket=sock_dir / "ctl.sock",
    )
    task = asyncio.create_task(daemon.run(install_signals=False))
    try:
        rig = InProcess(daemon, list(sim.meters), sock_dir / "ctl.sock")
        await until(lambda: rig.socket.exists() or task.done())
        yield rig
    finally:
        daemon.stop()
        async with asyncio.timeout(60):
            await task
        await sim.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)
    assert daemon.failure is None


async def test_relay_switches_the_simulated_meter_and_every_attempt_is_audited(
    tmp_path: Path,
) -> None:
    async with in_process(tmp_path, edit="654321") as rig:
        good, wrong = rig.meters
        opened = await rig.call("relay", {"meter": good.address, "action": "open"})
        assert good.model.relay_open  # the simulated meter's own switch
        assert opened == {
            "meter": good.address,
            "action": "open",
            "relay_state": "open",
            "status_word_3": "0x0010",
        }
        closed = await rig.call("relay", {"meter": good.address, "action": "close"})
        assert not good.model.relay_open and closed["relay_state"] == "closed"
        with pytest.raises(ControlError) as err:
            await rig.call("relay", {"meter": wrong.address, "action": "open"})
        assert err.value.code == "meter_error" and "not authorised" in err.value.message
        assert not wrong.model.relay_open
        audit = (await rig.call("events", {"kind": "relay"}))["events"]
    assert [(e["meter"], e["detail"]["action"], e["detail"]["result"]) for e in audit] == [
        (good.address, "open", "ok"),
        (good.address, "close", "ok"),
        (wrong.address, "open", "failed"),
    ]
    assert all(
        e["detail"]["by"]
        == {
            "user": pwd.getpwuid(os.getuid()).pw_name,
            "uid": os.getuid(),
            "pid": os.getpid(),
        }
        for e in audit
    )
    assert (
        audit[2]["severity"] == "warning" and audit[2]["detail"]["error"]["code"] == "meter_error"
    )


async def test_time_sync_sets_every_meter_clock_to_the_concentrators(tmp_path: Path) -> None:
    # The concentrator's clock is an hour ahead of the meters (which drift by up to 20 s).
    async with in_process(tmp_path, meters=3, clock_ahead_s=3600.0) as rig:
        assert all(abs(m.model.clock_offset) < 60 for m in rig.meters)
        result = await rig.call("time-sync")
        assert [(b["bus"], b["meters"], b["result"]) for b in result["buses"]] == [
            ("bus1", 3, "ok")
        ]
        # Within the start-up gap between the two clocks, at 60 s a second.
        await until(lambda: all(abs(m.model.clock_offset - 3600) < 120 for m in rig.meters), 30)
        [event] = (await rig.call("events", {"kind": "time_sync"}))["events"]
        assert event["detail"]["buses"] == result["buses"] and event["detail"]["by"]["pid"]


async def test_read_lists_what_the_meter_does_not_have_wherever_it_is_asked(
    tmp_path: Path,
) -> None:
    # Issue 18: `read METER` failed (exit 5, "no requested data") when the quantity the
    # meter does not have came last, and passed when it did not. Now a quantity the
    # meter does not have is listed as such, wherever it stands; the read fails only
    # when nothing asked for could be read.
    async with in_process(tmp_path, meters=1, phases=1) as rig:
        meter = rig.meters[0].address
        everything = await rig.cli("read", meter)
        assert everything.returncode == 0, everything.stderr
        assert f"not supported by meter {meter}: voltage_b" in everything.stderr
        for names in (("voltage_a", "voltage_b"), ("voltage_b", "voltage_a")):
            result = await rig.cli("read", meter, *names, "--json")
            assert result.returncode == 0, result.stderr
            doc = json.loads(result.stdout)
            assert [r["name"] for r in doc["readings"]] == ["voltage_a"]
            assert doc["not_supported"] == ["voltage_b"]
        nothing = await rig.cli("read", meter, "voltage_b", "current_c")
        assert nothing.returncode == Exit.METER_ERROR
        assert f"meter {meter}: no requested data: voltage_b, current_c" in nothing.stderr
        # What the daemon polls is recorded missing with the reason, never stops a read.
        assert rig.daemon.failure is None


class FakeUplink:
    """Stands in for the MQTT uplink: counts flush requests."""

    def __init__(self) -> None:
        self.flushed = 0
        self.in_flight: dict[int, Any] = {}

    def flush(self) -> None:
        self.flushed += 1

    def status(self) -> dict[str, object]:
        return {
            "connected": False,
            "in_flight": 0,
            "batches_sent": 0,
            "batches_resent": 0,
            "batches_acked": 0,
            "readings_acked": 0,
            "bytes_sent": 0,
            "last_ack_at": None,
            "rejected": 0,
        }


async def test_flush_wakes_the_uplink_and_reports_what_was_waiting(tmp_path: Path) -> None:
    async with in_process(tmp_path) as rig:
        store = rig.daemon.store
        assert store is not None
        await until(lambda: store.backlog().readings >= 2)
        uplink = FakeUplink()
        rig.daemon.uplink = uplink  # type: ignore[assignment]
        result = await rig.cli("flush")
        assert result.returncode == 0, result.stderr
        assert uplink.flushed == 1
        assert "uplink asked to send now" in result.stdout and "not connected" in result.stdout
        doc = json.loads((await rig.cli("flush", "--json")).stdout)
        assert doc["pending"]["readings"] >= 2 and uplink.flushed == 2


# ---------------------------------------------------------------------- end to end

E2E_SCALE = 30.0  # a one-minute slot lasts 2 s
BAUD = 2400


@dataclass
class Site:
    sim: SimProcess
    config: Path
    db: Path
    socket: Path
    bus1: list[str]  # saturated by polls
    bus2: list[str]
    bare: str  # a meter without relay passwords
    daemon: DaemonProcess
    ondemand: list[dict[str, str]] = field(default_factory=list)  # what `read` printed
    backfilled_days: int = 0

    @property
    def links(self) -> list[Path]:
        return self.sim.links

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--socket", str(self.socket), timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*cli_command("concentrator"), *args, "--socket", str(self.socket)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_without_color(),
        )

    def client(self) -> ControlClient:
        return ControlClient(self.socket, timeout=60)


def _site_config(path: Path, db: Path, sim: SimProcess, bare: str) -> None:
    """bus1's meters also have a task that needs more bus time than a slot has."""
    lines = ['[concentrator]\nid = "dc-field"\n', f'[storage]\npath = "{db}"\n']
    for i, link in enumerate(sim.links, start=1):
        lines.append(
            f'[[bus]]\nname = "bus{i}"\ntype = "rs485"\nport = "{link}"\nbaud = {BAUD}\n'
            'parity = "E"\n'
        )
    for i, bus in enumerate(sim.ready["buses"], start=1):
        for address in bus["meters"]:
            meter = f'[[meter]]\naddress = "{address}"\nprotocol = "dlt645"\nbus = "bus{i}"\n'
            meter += f'group = "{"busy" if i == 1 else "calm"}"\n'
            if address != bare:
                meter += (
                    f"password_level = {DEFAULT_PASSWORD_LEVEL}\n"
                    f'password = "{DEFAULT_PASSWORD}"\noperator = "{DEFAULT_OPERATOR}"\n'
                )
            lines.append(meter)
    lines += [
        '[[task]]\nname = "interval"\nquantities = ["energy_fwd_total"]\nevery = "1m"\n',
        '[[task]]\nname = "busy"\nquantities = ["voltage_a", "current_a", "power_total", '
        '"frequency"]\nevery = "1m"\ngroups = ["busy"]\n',
        '[[task]]\nname = "daily"\nquantities = ["frozen_daily_energy_fwd", "frozen_daily_time"]'
        '\nevery = "daily@00:05"\n',
    ]
    path.write_text("\n".join(lines))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("site")
    (tmp / "links").mkdir()
    sock_dir = short_dir("mfe")
    sim = SimProcess(
        [
            "fleet",
            "--link-dir",
            str(tmp / "links"),
            "--buses",
            "2",
            "--meters-per-bus",
            "4",
            "--baud",
            str(BAUD),
            "--time-scale",
            str(E2E_SCALE),
            "--seed",
            "3",
        ]
    )
    daemon: DaemonProcess | None = None
    try:
        sim.start()
        bus1, bus2 = (b["meters"] for b in sim.ready["buses"])
        cfg, db, path = tmp / "c.toml", tmp / "s.db", sock_dir / "ctl.sock"
        _site_config(cfg, db, sim, bare=bus2[-1])
        daemon = DaemonProcess(cfg, "--time-scale", str(E2E_SCALE), "--control-socket", str(path))
        wait_for(lambda: responsive(path) or daemon.proc.poll() is not None, 60, "the daemon")
        assert daemon.proc.poll() is None, daemon.log.read_text()
        yield Site(sim, cfg, db, path, bus1, bus2, bus2[-1], daemon)
    finally:
        if daemon is not None:
            daemon.stop()
        if sim.proc is not None and sim.proc.poll() is None:
            sim.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


def read_until(proc: subprocess.Popen[str], want: Callable[[str], bool], timeout: float) -> str:
    """The process's stdout up to and with the first line ``want`` accepts. Raw reads of
    the pipe, so no line waits unseen in a buffer the selector cannot see."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    text = ""
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(fd, 65536).decode()
            if not chunk:
                break  # EOF
            text += chunk
            if any(want(line) for line in text.splitlines()):
                return text
    finally:
        sel.close()
    raise AssertionError(f"no such line within {timeout} s; stdout so far: {text!r}")


@pytest.mark.slow
def test_status_and_meters(site: Site) -> None:
    mode = site.socket.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660
    result = site.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["concentrator"] == "dc-field" and doc["pid"] == site.daemon.proc.pid
    assert doc["meters"]["total"] == 8 and doc["modem"] is None and doc["uplink"] is None
    assert set(doc["buses"]) == {"bus1", "bus2"}
    assert all(0 <= bus["utilisation"] <= 1 and "queued" in bus for bus in doc["buses"].values())
    assert {"readings", "events", "oldest_age_s"} <= set(doc["backlog"])
    assert {"read", "missing", "rate"} <= set(doc["today"])
    # The environment names the socket as well as --socket does.
    human = run_cli("status", env={"MF_CONTROL_SOCKET": str(site.socket)})
    assert human.returncode == 0, human.stderr
    assert "concentrator dc-field" in human.stdout and "meters   8:" in human.stdout
    assert "uplink   not configured" in human.stdout and "bus2" in human.stdout

    wait_for(
        lambda: all(m["state"] == "online" for m in site.client().call("meters")["meters"]),
        60,
        "every meter read once",
    )
    on_bus2 = json.loads(site.cli("meters", "--bus", "bus2", "--json").stdout)["meters"]
    assert [m["address"] for m in on_bus2] == site.bus2
    assert all(m["bus"] == "bus2" and m["last_read_at"] for m in on_bus2)
    offline = site.cli("meters", "--offline", "--json")
    assert offline.returncode == 0 and json.loads(offline.stdout)["meters"] == []
    table = site.cli("meters")
    assert table.returncode == 0 and all(a in table.stdout for a in site.bus1 + site.bus2)
    assert "8 meter(s)" in table.stdout
    unknown_bus = site.cli("meters", "--bus", "bus9")
    assert unknown_bus.returncode == Exit.USAGE and 'no bus named "bus9"' in unknown_bus.stderr


@pytest.mark.slow
def test_reads_during_a_saturated_poll_leave_both_untouched(site: Site) -> None:
    client = site.client()
    wait_for(
        lambda: client.call("status")["buses"]["bus1"]["queued"] >= 3, 60, "a backlog of polls"
    )
    wanted = ["energy_fwd_total", "voltage_a", "current_a"]
    procs = [site.popen("read", m, *wanted, "--json") for m in site.bus1[:3]]
    for meter, proc in zip(site.bus1[:3], procs, strict=True):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        doc = json.loads(out)
        assert doc["meter"] == meter and doc["bus"] == "bus1"
        assert [r["name"] for r in doc["readings"]] == wanted
        site.ondemand += [{"meter": meter, **r} for r in doc["readings"]]
    # Two transactions overlapping on the line would garble both replies.
    assert client.call("status")["buses"]["bus1"]["frame_errors"] == 0
    table = site.cli("read", site.bus1[3], "frequency", "meter_time")
    assert table.returncode == 0, table.stderr
    assert "frequency" in table.stdout and "(daemon)" in table.stdout


@pytest.mark.slow
def test_read_errors_are_clear(site: Site) -> None:
    unknown = site.cli("read", "000000009999", "voltage_a")
    assert unknown.returncode == Exit.UNKNOWN_METER
    assert "meter 000000009999 is not in the daemon's configuration" in unknown.stderr
    bad_quantity = site.cli("read", site.bus2[0], "no_such_thing")
    assert bad_quantity.returncode == Exit.USAGE and "no_such_thing" in bad_quantity.stderr
    direct_option = site.cli("read", site.bus2[0], "--baud", "9600")
    assert direct_option.returncode == Exit.USAGE and "--baud is for direct mode" in (
        direct_option.stderr
    )
    no_meter = site.cli("read")
    assert no_meter.returncode == Exit.USAGE and "name the meter" in no_meter.stderr


@pytest.mark.slow
def test_relay_on_a_busy_bus_is_switched_read_back_and_audited(site: Site) -> None:
    meter = site.bus1[1]
    opened = site.cli("relay", meter, "open")
    assert opened.returncode == 0, opened.stderr
    assert f"meter {meter}: relay open (status word 3 = 0x0010)" in opened.stdout
    word = json.loads(site.cli("read", meter, "status_word_3", "--json").stdout)
    assert word["readings"][0]["value"] == "0x0010"
    site.ondemand += [{"meter": meter, **r} for r in word["readings"]]
    closed = json.loads(site.cli("relay", meter, "close", "--json").stdout)
    assert closed["relay_state"] == "closed" and closed["status_word_3"] == "0x0000"
    refused = site.cli("relay", site.bare, "open")
    assert refused.returncode == Exit.REFUSED
    assert f"meter {site.bare} has no relay passwords" in refused.stderr
    unknown = site.cli("relay", "000000009999", "open")
    assert unknown.returncode == Exit.UNKNOWN_METER
    usage = site.cli("relay", meter, "toggle")
    assert usage.returncode == Exit.USAGE
    audit = json.loads(site.cli("events", "--kind", "relay", "--json").stdout)["events"]
    ours = [
        (e["meter"], e["detail"]["action"], e["detail"]["result"])
        for e in audit
        if e["meter"] in (meter, site.bare)
    ]
    assert ours == [(meter, "open", "ok"), (meter, "close", "ok"), (site.bare, "open", "refused")]
    assert all(e["detail"]["by"]["user"] == pwd.getpwuid(os.getuid()).pw_name for e in audit)
    table = site.cli("events", "--kind", "relay")
    assert table.returncode == 0 and "action=open" in table.stdout and "result=ok" in table.stdout


@pytest.mark.slow
def test_time_sync_broadcasts_on_every_bus_and_is_audited(site: Site) -> None:
    result = site.cli("time-sync", "--json")
    assert result.returncode == 0, result.stderr
    buses = json.loads(result.stdout)["buses"]
    assert [(b["bus"], b["meters"], b["result"]) for b in buses] == [
        ("bus1", 4, "ok"),
        ("bus2", 4, "ok"),
    ]
    assert all(dt.datetime.fromisoformat(b["sent"]) for b in buses)
    table = site.cli("time-sync")
    assert table.returncode == 0 and table.stdout.count(" ok ") == 2
    events = json.loads(site.cli("events", "--kind", "time_sync", "--since", "1d", "--json").stdout)
    assert events["total"] == 2 and events["events"][0]["detail"]["buses"] == buses
    future = json.loads(site.cli("events", "--since", "2099-01-01", "--json").stdout)
    assert future["total"] == 0
    limited = json.loads(site.cli("events", "--limit", "1", "--json").stdout)
    assert len(limited["events"]) == 1 and limited["total"] > 1
    bad = site.cli("events", "--since", "last tuesday")
    assert bad.returncode == Exit.USAGE and "is not a time" in bad.stderr


@pytest.mark.slow
def test_buffer_shows_the_backlog_and_flush_needs_an_uplink(site: Site) -> None:
    result = site.cli("buffer", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["readings"] > 0 and doc["events"] > 0 and doc["oldest_age_s"] >= 0
    assert doc["batches_in_flight"] == 0 and doc["uplink"] is None
    human = site.cli("buffer")
    assert human.returncode == 0 and "undelivered" in human.stdout
    flush = site.cli("flush")
    assert flush.returncode == Exit.REFUSED and "no [uplink] in the configuration" in flush.stderr


@pytest.mark.slow
def test_backfill_recovers_daily_freezes_with_progress(site: Site) -> None:
    meter = site.bus2[0]
    today = dt.datetime.fromtimestamp(site.client().call("status")["wall"], TZ8).date()
    first, last = (today - dt.timedelta(days=3)).isoformat(), (today - dt.timedelta(days=1))
    result = site.cli("backfill", meter, "--from", first, "--to", last.isoformat(), "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [d["state"] for d in doc["days"]] == ["stored"] * 3 and doc["stored"] == 3
    site.backfilled_days += 3
    assert doc["days"][0]["readings"][0]["name"] == "frozen_daily_energy_fwd_total"
    again = site.cli("backfill", meter, "--from", first, "--to", last.isoformat())
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("skipped") == 3 and again.stdout.count("already stored") == 3
    assert "3/3 days" in again.stderr  # the progress bar's last state
    old = json.loads(
        site.cli("backfill", meter, "--from", "2020-01-01", "--to", "2020-01-02", "--json").stdout
    )
    assert {d["state"] for d in old["days"]} == {"skipped"}
    backwards = site.cli("backfill", meter, "--from", last.isoformat(), "--to", first)
    assert backwards.returncode == Exit.USAGE and "is after" in backwards.stderr
    unknown = site.cli("backfill", "000000009999", "--from", first, "--to", first)
    assert unknown.returncode == Exit.UNKNOWN_METER


@pytest.mark.slow
def test_logs_recent_and_followed(site: Site) -> None:
    recent = site.cli("logs", "-n", "500")
    assert recent.returncode == 0 and "control socket" in recent.stdout
    as_json = site.cli("logs", "-n", "3", "--json")
    lines = [json.loads(x) for x in as_json.stdout.splitlines()]
    assert len(lines) == 3 and all({"at", "level", "logger", "text"} <= set(x) for x in lines)
    # --since/--until on the lines' times (unix seconds, ISO or an age), -n the newest.
    first_at = lines[0]["at"]
    ranged = site.cli("logs", "-n", "2", "--since", str(int(first_at)), "--json")
    got = [json.loads(x) for x in ranged.stdout.splitlines()]
    assert len(got) == 2 and all(x["at"] >= int(first_at) for x in got)
    assert site.cli("logs", "--since", "1d").stdout.strip() != ""
    future = site.cli("logs", "--since", str(int(time.time()) + 3600))
    assert future.returncode == 0 and future.stdout == ""
    assert site.cli("logs", "--until", "1").stdout == ""
    backwards = site.cli("logs", "--since", "2h", "--until", "3h")
    assert backwards.returncode == Exit.USAGE and "since is after until" in backwards.stderr
    endless = site.cli("logs", "--follow", "--until", "1h")
    assert endless.returncode == Exit.USAGE and "--until with --follow" in endless.stderr
    follower = site.popen("logs", "--follow", "-n", "1")
    try:
        read_until(follower, lambda line: bool(line), 60)  # following now
        site.daemon.proc.send_signal(signal.SIGHUP)
        text = read_until(follower, lambda line: "config reloaded" in line, 60)
        assert "config reloaded: 8 meters on 2 buses" in text
        follower.send_signal(signal.SIGINT)
        assert follower.wait(30) == 0
    finally:
        follower.kill()
        follower.communicate()


def test_every_command_says_when_no_daemon_runs(tmp_path: Path) -> None:
    sock_dir = short_dir("mfn")
    stale = sock_dir / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))  # a socket file nobody listens on: a killed daemon's
    s.close()
    commands = [
        ["status"],
        ["meters"],
        ["read", "000000000001"],
        ["relay", "000000000001", "open"],
        ["time-sync"],
        ["events"],
        ["buffer"],
        ["flush"],
        ["backfill", "000000000001", "--from", "2026-11-01", "--to", "2026-11-02"],
        ["logs"],
    ]
    try:
        procs = [
            (
                path,
                subprocess.Popen(
                    [*cli_command("concentrator"), *cmd, "--socket", str(path)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env_without_color(),
                ),
            )
            for cmd in commands
            for path in (sock_dir / "missing.sock", stale)
        ]
        for path, proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == Exit.DAEMON_DOWN, (proc.args, err)
            assert err == f"error: no daemon at {path}: is `concentrator run` started?\n"
            assert out == ""
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


@pytest.mark.slow
def test_stop_ends_followers_and_leaves_true_readings_and_the_relay_open(site: Site) -> None:
    """Runs last in this module: it stops the daemon and the simulator."""
    meter = site.bus1[2]
    opened = site.cli("relay", meter, "open")
    assert opened.returncode == 0, opened.stderr
    follower = site.popen("logs", "--follow", "-n", "1")
    read_until(follower, lambda line: bool(line), 60)
    assert site.daemon.stop() == 0
    _, err = follower.communicate(timeout=60)
    assert follower.returncode == 0 and "the daemon stopped" in err
    assert not site.socket.exists()  # removed on the way out
    down = site.cli("status")
    assert down.returncode == Exit.DAEMON_DOWN and "no daemon at" in down.stderr
    # Direct mode on the same bus, now that the daemon has let go of it.
    direct = run_cli(
        "read",
        "--port",
        str(site.links[0]),
        "--address",
        meter,
        "--baud",
        str(BAUD),
        "status_word_3",
        "--json",
    )
    assert direct.returncode == 0, direct.stderr
    assert json.loads(direct.stdout)["readings"][0]["value"] == "0x0010"
    site.sim.stop()
    told = truth_values(site.sim.truth)
    with Store.open(site.db) as store:
        assert store.integrity_check() == []
        rows = [r.reading for r in store.get_readings()]
    checked = [r for r in rows if r.quantity != "frozen_daily_time"]
    assert len(checked) > 50
    assert [r for r in checked if r.value not in told[(r.meter, r.quantity)]] == []
    backfilled = [r for r in checked if r.source == "backfill"]
    assert len(backfilled) >= 5 * site.backfilled_days  # five energy registers a day
    assert [x for x in site.ondemand if x["value"] not in told[(x["meter"], x["name"])]] == []
