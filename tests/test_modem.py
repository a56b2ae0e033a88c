"""The AT client, its parser, the modem emulator and the link supervisor.

Parser vectors are laid out by hand from the syntax of ITU-T V.250 §5 (echo, <CR><LF>
framing, final result codes) and 3GPP TS 27.007 (+CSQ §8.5, +CREG §7.2, +CGREG
§10.1.20, +CEREG §10.1.22, +COPS §7.3, +CME ERROR §9.2); none comes from the encoder
side of our own emulator. Each runs whole, one byte at a time, split at every position,
and behind a garbage line. The client and the supervisor talk to ``hil_sim.modem`` on a
real PTY with a time scale, so a 12-second boot takes a quarter of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from concentrator.config import ConfigIssue, ModemConfig, check_config, load_config
from concentrator.uplink.modem import (
    HungDetected,
    ModemEvent,
    ModemReset,
    ModemSupervisor,
    OutageEnded,
    OutageStarted,
    SignalRestored,
    WeakSignal,
)
from drivers.errors import BusError, EncodeError, FrameError, ModemError, ModemHung, ModemTimeout
from drivers.modem import (
    AccessTech,
    AtParser,
    AtTimeouts,
    Domain,
    Final,
    ModemClient,
    Operator,
    RegStatus,
    Response,
    SignalQuality,
    Urc,
    parse_cgatt,
    parse_cops,
    parse_csq,
    parse_registration,
    parse_registration_urc,
    parse_text,
    split_fields,
)
from hil_sim.clock import SimClock
from hil_sim.modem import ModemFault, SimModem, make_imei, parse_modem_fault
from hil_sim.process import SimProcess

SCALE = 50.0  # emulator: simulated seconds per real second
# Real seconds. Generous against a loaded 2-core machine: the emulator answers in
# milliseconds, so a wait that runs out means the module really stayed silent.
TIMEOUTS = AtTimeouts(default_s=1.0, cfun_s=5.0, cgatt_s=5.0, cops_s=5.0, boot_s=10.0)
WAIT_S = 30.0  # the longest a test waits for a condition before failing

T = TypeVar("T")


# ---------------------------------------------------------------------- helpers
def drain(parser: AtParser) -> tuple[list[Response | Urc], int]:
    events: list[Response | Urc] = []
    errors = 0
    while True:
        try:
            event = parser.next_event()
        except FrameError:
            errors += 1
            continue
        if event is None:
            return events, errors
        events.append(event)


def run(chunks: Iterable[bytes], command: str | None = None) -> tuple[list[Response | Urc], int]:
    parser = AtParser()
    if command is not None:
        parser.command(command)
    events: list[Response | Urc] = []
    errors = 0
    for chunk in chunks:
        parser.feed(chunk)
        more, bad = drain(parser)
        events += more
        errors += bad
    return events, errors


GARBAGE_LINE = b"\x00\xff\x13~\x80\r\n"  # a power-up glitch: bytes no module sends


def every_way(data: bytes, command: str | None) -> list[Response | Urc]:
    """Parse ``data`` whole, byte by byte, split anywhere and behind garbage; all
    must agree. Returns the events."""
    whole, errors = run([data], command)
    assert errors == 0
    assert run([bytes([b]) for b in data], command) == (whole, 0)
    for i in range(len(data) + 1):
        assert run([data[:i], data[i:]], command) == (whole, 0)
    assert run([GARBAGE_LINE, data], command) == (whole, 1)
    return whole


def one_response(data: bytes, command: str) -> Response:
    events = every_way(data, command)
    responses = [e for e in events if isinstance(e, Response)]
    assert len(responses) == 1, events
    return responses[0]


async def until(predicate: Callable[[], T], what: str, within_s: float = WAIT_S) -> T:
    """Wait for a condition (checked every 20 ms), failing after ``within_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within_s} s waiting for {what}")
        await asyncio.sleep(0.02)


class Events:
    """Collects supervisor events; ``await events.first(Kind)`` waits for one."""

    def __init__(self) -> None:
        self.seen: list[ModemEvent] = []

    def __call__(self, event: ModemEvent) -> None:
        self.seen.append(event)

    def of(self, kind: type[T]) -> list[T]:
        return [e for e in self.seen if isinstance(e, kind)]

    async def first(self, kind: type[T], count: int = 1) -> T:
        try:
            await until(lambda: len(self.of(kind)) >= count, f"{count} {kind.__name__} event(s)")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; seen {self.seen}") from None
        return self.of(kind)[count - 1]


# ---------------------------------------------------------------------- parser vectors
def test_csq_with_echo() -> None:
    # ATE1 (power-on default): the module echoes "AT+CSQ<CR>" before its answer.
    data = b"AT+CSQ\r\r\n+CSQ: 20,99\r\n\r\nOK\r\n"
    response = one_response(data, "AT+CSQ")
    assert response == Response("AT+CSQ", ("+CSQ: 20,99",), Final.OK)
    sq = parse_csq(response)
    assert sq == SignalQuality(20, 99) and sq.dbm == -73  # -113 + 2 × 20


@pytest.mark.parametrize(
    ("rssi", "dbm"),
    [
        *[(0, -113), (1, -111), (2, -109), (15, -83), (30, -53), (31, -51), (99, None)],
        *[(100, -116), (101, -115), (191, -25), (199, None)],  # TD-SCDMA range [M]
    ],
)
def test_csq_rssi_to_dbm(rssi: int, dbm: int | None) -> None:
    # TS 27.007 §8.5: 0 = -113 dBm or less, 2 dB steps, 31 = -51 dBm or greater.
    response = Response("AT+CSQ", (f"+CSQ: {rssi},99",), Final.OK)
    sq = parse_csq(response)
    assert sq.dbm == dbm and sq.known == (dbm is not None)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("+CSQ: 32,0", "rssi 32"),
        ("+CSQ: 20,8", "ber 8"),
        ("+CSQ: 20", "<rssi>,<ber>"),
        ("+CSQ: x,0", "expected a number"),
        ("+CSQ: -1,0", "expected a number"),
    ],
)
def test_malformed_csq_is_a_frame_error(line: str, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        parse_csq(Response("AT+CSQ", (line,), Final.OK))


def test_answer_without_its_line_is_a_frame_error() -> None:
    # A late OK of an earlier command closing this one: no +CSQ line at all.
    with pytest.raises(FrameError, match=r"no \+CSQ: line"):
        parse_csq(Response("AT+CSQ", (), Final.OK))


def test_registration_read_form_with_location() -> None:
    data = b'\r\n+CREG: 2,5,"1A2B","01C3D4E5",7\r\n\r\nOK\r\n'
    reg = parse_registration(one_response(data, "AT+CREG?"), Domain.CS)
    assert reg.stat == RegStatus.ROAMING and reg.registered
    assert (reg.mode, reg.area, reg.cell, reg.act) == (2, "1A2B", "01C3D4E5", AccessTech.EUTRAN)


@pytest.mark.parametrize(
    ("stat", "name", "registered"),
    [
        (0, RegStatus.NOT_REGISTERED, False),
        (1, RegStatus.HOME, True),
        (2, RegStatus.SEARCHING, False),
        (3, RegStatus.DENIED, False),
        (4, RegStatus.UNKNOWN, False),
        (5, RegStatus.ROAMING, True),
        (11, RegStatus.UNKNOWN, False),  # newer than our table: not trusted as a link
    ],
)
def test_registration_states(stat: int, name: RegStatus, registered: bool) -> None:
    reg = parse_registration(Response("AT+CGREG?", (f"+CGREG: 0,{stat}",), Final.OK), Domain.GPRS)
    assert reg.stat == name and reg.registered is registered


def test_cereg_may_leave_tac_and_ci_empty() -> None:
    reg = parse_registration(Response("AT+CEREG?", ("+CEREG: 2,4,,,",), Final.OK), Domain.EPS)
    assert reg.stat == RegStatus.UNKNOWN and reg.area is None and reg.cell is None


def test_urc_of_the_waiting_command_is_told_from_its_answer() -> None:
    # The network changed while AT+CREG? was on its way: "+CREG: 2" (URC form, one
    # field) lands among the information lines; the read form starts "<n>,<stat>".
    data = b"\r\n+CREG: 2\r\n\r\n+CREG: 1,1\r\n\r\nOK\r\n"
    response = one_response(data, "AT+CREG?")
    assert response.lines == ("+CREG: 2", "+CREG: 1,1")
    assert parse_registration(response, Domain.CS).stat == RegStatus.HOME


def test_urcs_are_kept_apart_from_the_answer() -> None:
    data = b"\r\nRING\r\n\r\n+CGREG: 2\r\n\r\n+CSQ: 7,0\r\n\r\nOK\r\n\r\n+CEREG: 1\r\n"
    events = every_way(data, "AT+CSQ")
    assert events == [
        Urc("RING"),
        Urc("+CGREG: 2"),
        Response("AT+CSQ", ("+CSQ: 7,0",), Final.OK),
        Urc("+CEREG: 1"),
    ]


@pytest.mark.parametrize(
    ("text", "domain", "stat", "area"),
    [
        ("+CGREG: 5", Domain.GPRS, RegStatus.ROAMING, None),
        ('+CREG: 1,"1A2B","01C3D4E5",7', Domain.CS, RegStatus.HOME, "1A2B"),
        ("+CEREG: 2", Domain.EPS, RegStatus.SEARCHING, None),
    ],
)
def test_registration_urc(text: str, domain: Domain, stat: RegStatus, area: str | None) -> None:
    reg = parse_registration_urc(text)
    assert reg is not None and (reg.domain, reg.stat, reg.area) == (domain, stat, area)


@pytest.mark.parametrize("text", ["RING", "+CGREG: x", '+CGREG: 1,"1A2B', "+CGREG: 1,2,3"])
def test_other_or_broken_urcs_are_not_registrations(text: str) -> None:
    assert parse_registration_urc(text) is None


@pytest.mark.parametrize(
    ("data", "final", "code", "kind", "meaning"),
    [
        (b"\r\n+CME ERROR: 10\r\n", Final.CME_ERROR, 10, "CME", "SIM not inserted"),
        (b"\r\n+CME ERROR: 30\r\n", Final.CME_ERROR, 30, "CME", "no network service"),
        (b"\r\n+CME ERROR: 148\r\n", Final.CME_ERROR, 148, "CME", "unspecified GPRS error"),
        (b"\r\n+CME ERROR: 9999\r\n", Final.CME_ERROR, 9999, "CME", "not in TS 27.007"),
        (b"\r\n+CME ERROR: SIM busy\r\n", Final.CME_ERROR, None, "CME", "SIM busy"),  # CMEE=2
        (b"\r\n+CMS ERROR: 500\r\n", Final.CMS_ERROR, 500, "CMS", "unknown error"),
        (b"\r\nERROR\r\n", Final.ERROR, None, None, "command not accepted"),
    ],
)
def test_error_results_name_their_meaning(
    data: bytes, final: Final, code: int | None, kind: str | None, meaning: str
) -> None:
    response = one_response(data, "AT+CGATT=1")
    assert response.final == final and response.error_code == code and not response.ok
    with pytest.raises(ModemError, match=meaning) as info:
        response.check()
    assert (info.value.kind, info.value.code, info.value.command) == (kind, code, "AT+CGATT=1")
    assert meaning in info.value.description


def test_operator_and_attach_and_identity() -> None:
    cops = one_response(b'\r\n+COPS: 0,0,"CHINA MOBILE",7\r\n\r\nOK\r\n', "AT+COPS?")
    assert parse_cops(cops) == Operator(0, "CHINA MOBILE", 0, AccessTech.EUTRAN)
    assert parse_cops(Response("AT+COPS?", ("+COPS: 0",), Final.OK)) == Operator(0)
    assert parse_cgatt(one_response(b"\r\n+CGATT: 1\r\n\r\nOK\r\n", "AT+CGATT?")) is True
    assert parse_text(one_response(b"\r\nQuectel\r\n\r\nOK\r\n", "AT+CGMI")) == "Quectel"
    # Some firmwares prefix the identity with the command or a label.
    assert parse_text(Response("AT+CGMR", ("+CGMR: V1.2",), Final.OK)) == "V1.2"
    assert parse_text(Response("AT+CGMR", ("Revision: EC20X",), Final.OK)) == "EC20X"
    assert parse_text(Response("AT+CGSN", ('"866123458854406"',), Final.OK)) == "866123458854406"
    with pytest.raises(FrameError, match="neither 0 nor 1"):
        parse_cgatt(Response("AT+CGATT?", ("+CGATT: 2",), Final.OK))


def test_split_fields_keeps_commas_inside_quotes() -> None:
    assert split_fields('0,0,"A, B",7') == ["0", "0", '"A, B"', "7"]
    with pytest.raises(FrameError, match="unterminated"):
        split_fields('0,"abc')


def test_idle_lines_are_urcs_late_answers_are_counted_not_delivered() -> None:
    parser = AtParser()
    parser.feed(b"\r\nRDY\r\n\r\nOK\r\nAT+CSQ\r\r\n+CSQ: 5,0\r\n")
    events, errors = drain(parser)
    # An answer given up on arrives late: its OK and echo are counted, and its
    # information line is surfaced as a URC rather than glued to the next command.
    assert events == [Urc("RDY"), Urc("+CSQ: 5,0")] and errors == 0
    assert parser.stray == 1 and parser.echoes == 1


def test_overlong_line_is_one_frame_error_then_parsing_goes_on() -> None:
    parser = AtParser(max_line=32)
    parser.command("AT+CSQ")
    parser.feed(b"\r\n" + b"X" * 40)
    parser.feed(b"Y" * 40 + b"\r\n+CSQ: 9,0\r\n\r\nOK\r\n")
    events, errors = drain(parser)
    assert errors == 1
    assert events == [Response("AT+CSQ", ("+CSQ: 9,0",), Final.OK)]


def test_command_encoding() -> None:
    parser = AtParser()
    assert parser.command(" AT+CSQ ") == b"AT+CSQ\r"
    with pytest.raises(EncodeError, match="still waiting"):
        parser.command("AT")
    parser.cancel()
    for bad, message in [("CSQ", "starts with AT"), ("AT+COPS=\u00e9", "printable ASCII")]:
        with pytest.raises(EncodeError, match=message):
            parser.command(bad)
    with pytest.raises(EncodeError, match="longer than"):
        parser.command("AT" + "E0" * 200)


# ---------------------------------------------------------------------- fuzz
DECODERS: list[Callable[[Response], object]] = [
    parse_csq,
    parse_cops,
    parse_cgatt,
    parse_text,
    *[functools.partial(parse_registration, domain=d) for d in Domain],
    Response.check,
]
COMMANDS = [None, "AT", "AT+CSQ", "AT+CREG?", "AT+CGREG?", "AT+CEREG?", "AT+COPS?", "AT+CGMI"]
TOKENS = [
    b"\r\n", b"\r", b"\n", b"OK", b"ERROR", b"+CME ERROR: ", b"+CMS ERROR: ", b"+CSQ: ",
    b"+CREG: ", b"+CGREG: ", b"+CEREG: ", b"+COPS: ", b"+CGATT: ", b"RING", b"AT+CSQ",
    b"0", b"1", b"7", b"31", b"99", b"199", b"123456789012", b",", b'"', b'"1A2B"', b" ",
    b"\x00", b"\xff", b"Revision: ",
]  # fmt: skip


def _exercise(chunks: list[bytes], command: str | None) -> None:
    parser = AtParser(max_line=128)
    if command is not None:
        parser.command(command)
    for chunk in chunks:
        parser.feed(chunk)
        for _ in range(10_000):  # bounded: a parser that never runs dry is a failure
            try:
                event = parser.next_event()
            except FrameError:
                continue
            if event is None:
                break
            if isinstance(event, Urc):
                parse_registration_urc(event.text)  # never raises
                continue
            assert isinstance(event, Response)
            for decode in DECODERS:
                with contextlib.suppress(FrameError, ModemError):
                    decode(event)
        else:
            pytest.fail("the parser kept producing events from finite input")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=80), max_size=12), st.sampled_from(COMMANDS))
def test_arbitrary_bytes_raise_only_frame_error(chunks: list[bytes], command: str | None) -> None:
    _exercise(chunks, command)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.lists(st.sampled_from(TOKENS), max_size=16).map(b"".join), max_size=10),
    st.sampled_from(COMMANDS),
)
def test_plausible_answers_raise_only_our_errors(chunks: list[bytes], command: str | None) -> None:
    # Bytes built from real tokens reach the decoders far more often than random ones.
    _exercise(chunks, command)


# ---------------------------------------------------------------------- emulator + client
@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[SimModem]:
    modem = SimModem(link=tmp_path / "modem", clock=SimClock(scale=SCALE), seed=1)
    await modem.start()
    yield modem
    await modem.stop()


@pytest.fixture
async def client(sim: SimModem) -> AsyncIterator[ModemClient]:
    c = ModemClient(str(sim.link), timeouts=TIMEOUTS)
    await c.open()
    yield c
    await c.close()


async def test_client_reads_identity_signal_and_registration(
    sim: SimModem, client: ModemClient
) -> None:
    await client.command("AT")
    assert client._parser.echoes == 1  # the module starts with ATE1
    await client.echo_off()
    info = await client.info()
    assert (info.manufacturer, info.model, info.revision) == (
        "Quectel",
        "EC20F",
        sim.identity.revision,
    )
    assert info.imei == sim.identity.imei and len(info.imei) == 15
    sq = await client.signal_quality()
    assert sq.dbm is not None and -71 <= sq.dbm <= -67  # rssi 22 ± 1
    for domain in Domain:
        reg = await client.registration(domain)
        assert reg.domain == domain and reg.stat == RegStatus.HOME
    await client.command("AT+CEREG=2")  # read form with the serving cell
    reg = await client.registration(Domain.EPS)
    assert (reg.mode, reg.area, reg.cell, reg.act) == (2, "1A2B", "01C3D4E5", AccessTech.EUTRAN)
    op = await client.operator()
    assert op.name == "CHINA MOBILE" and op.act == AccessTech.EUTRAN
    assert await client.attached()
    await client.attach()
    assert client._parser.echoes == 2  # ATE0's own echo, then silence
    assert client.stats.timeouts == 0 and client.stats.frame_errors == 0


async def test_errors_carry_the_code_and_its_meaning(sim: SimModem, client: ModemClient) -> None:
    with pytest.raises(ModemError, match="command not accepted") as plain:
        await client.command("AT+QFOO")
    assert plain.value.kind is None
    sim.set_outage(True)
    await client.command("AT+CMEE=1")
    with pytest.raises(ModemError, match=r"\+CME ERROR 30 \(no network service\)") as cme:
        await client.attach()
    assert (cme.value.code, cme.value.description) == (30, "no network service")
    await client.command("AT+CMEE=2")
    with pytest.raises(ModemError, match="no network service") as verbose:
        await client.attach()
    assert verbose.value.code is None
    assert (await client.signal_quality()).dbm is None  # CSQ 99: no cell
    assert (await client.registration()).stat == RegStatus.SEARCHING
    assert (await client.operator()).name is None


async def test_registration_urcs_are_collected(sim: SimModem, client: ModemClient) -> None:
    seen: list[Urc] = []
    client.on_urc = seen.append
    await client.command("AT+CGREG=1")
    sim.set_outage(True)
    await until(lambda: Urc("+CGREG: 2") in client.urcs, "+CGREG: 2 URC")
    sim.set_outage(False)
    await until(lambda: Urc("+CGREG: 1") in client.urcs, "+CGREG: 1 URC after the outage")
    assert seen == list(client.urcs)


async def test_full_reset_and_radio_cycle(sim: SimModem, client: ModemClient) -> None:
    await client.echo_off()
    assert await client.reset("cfun11")
    assert sim.counters.resets == 1 and not sim.booting
    echoes = client._parser.echoes
    await client.command("AT")
    assert client._parser.echoes == echoes  # echo is off again after the reboot
    await until(lambda: sim.stat() == RegStatus.HOME, "registration after the reboot")
    assert await client.reset("cfun01")
    assert sim.counters.radio_cycles == 1
    await until(lambda: sim.stat() == RegStatus.HOME, "registration after the radio cycle")
    with pytest.raises(ValueError, match="reset method"):
        await client.reset("reboot")


async def test_mute_module_times_out_then_is_hung(sim: SimModem, client: ModemClient) -> None:
    sim.hang(reset_cures=False)
    with pytest.raises(ModemTimeout, match=r"did not answer AT\+CSQ within 1\.000 s") as t:
        await client.signal_quality()
    assert not isinstance(t.value, ModemHung) and t.value.command == "AT+CSQ"
    with pytest.raises(ModemHung, match="2 probes") as hung:
        await client.probe(tries=2)
    assert hung.value.tries == 2
    client.send_blind("AT+CFUN=1,1")  # a hard hang ignores even this
    assert not await client.wait_ready(timeout_s=1.5)
    assert sim.counters.resets == 0 and sim.counters.ignored >= 3
    sim.power_cycle()
    assert await client.wait_ready()
    assert sim.counters.power_cycles == 1 and not sim.hung


async def test_closed_port_is_a_bus_error(tmp_path: Path) -> None:
    with pytest.raises(BusError, match="cannot open modem port"):
        await ModemClient(str(tmp_path / "nothing")).open()
    c = ModemClient(str(tmp_path / "nothing"))
    with pytest.raises(BusError, match="not open"):
        await c.command("AT")


def test_emulator_faults_parse() -> None:
    assert parse_modem_fault("outage@60-120") == ModemFault("outage", 60.0, 120.0)
    assert parse_modem_fault("weak@0-300:4") == ModemFault("weak", 0.0, 300.0, 4)
    assert parse_modem_fault("hang_hard@90") == ModemFault("hang_hard", 90.0)
    for bad, message in [
        ("flood@1", "KIND"),
        ("outage@5", "needs an END"),
        ("hang@1-2", "until a reset"),
        ("outage@9-3", "START < END"),
        ("weak@0-1:40", "RSSI"),
        ("weak@a-b", "numbers"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_modem_fault(bad)


def test_emulated_imei_has_a_valid_luhn_digit() -> None:
    for seed in range(20):
        imei = make_imei(seed)
        digits = [int(d) for d in imei]
        total = sum(
            d if i % 2 == 0 else (2 * d - 9 if d > 4 else 2 * d) for i, d in enumerate(digits)
        )
        assert len(imei) == 15 and total % 10 == 0


def test_timeouts_scale_all_but_the_short_command_wait() -> None:
    fast = AtTimeouts().scaled(0.01)
    assert fast.default_s == AtTimeouts().default_s
    assert fast.cgatt_s == pytest.approx(1.4) and fast.boot_s == pytest.approx(0.6)


async def test_scripted_faults_run_on_simulated_time(tmp_path: Path) -> None:
    script = [ModemFault("weak", 0.0, 10_000.0, rssi=3), ModemFault("outage", 5.0, 10_000.0)]
    sim = SimModem(link=tmp_path / "m", clock=SimClock(scale=SCALE), script=script)
    await sim.start()
    try:
        async with ModemClient(str(sim.link), timeouts=TIMEOUTS) as c:
            await until(lambda: sim.stat() == RegStatus.SEARCHING, "the scripted outage")
            assert (await c.signal_quality()).dbm is None
            sim.set_outage(False)
            await until(lambda: sim.stat() == RegStatus.HOME, "registration")
            sq = await c.signal_quality()
            assert sq.dbm is not None and sq.dbm <= -105  # the weak window: rssi 3 ± 1
    finally:
        await sim.stop()


def test_cli_modem_subcommand(tmp_path: Path) -> None:
    link = tmp_path / "modem"
    proc = SimProcess(
        [
            "modem",
            "--link",
            str(link),
            "--time-scale",
            "50",
            "--gsm-only",
            "--seed",
            "3",
            "--fault",
            "weak@0-100000:4",
        ]
    )
    proc.start()
    try:
        assert proc.ready["event"] == "ready" and proc.ready["modem"]["link"] == str(link)
        assert proc.ready["modem"]["imei"] == make_imei(3)

        async def talk() -> tuple[RegStatus, SignalQuality]:
            async with ModemClient(str(link), timeouts=TIMEOUTS) as c:
                with pytest.raises(ModemError):
                    await c.registration(Domain.EPS)  # a 2G module has no +CEREG
                return (await c.registration(Domain.GPRS)).stat, await c.signal_quality()

        stat, sq = asyncio.run(talk())
        assert stat == RegStatus.HOME and sq.dbm is not None and sq.dbm <= -103
    finally:
        proc.stop()
    assert proc.summary["event"] == "stopped" and proc.summary["commands"] == 3


# ---------------------------------------------------------------------- supervisor
def config(port: Path, **kw: object) -> ModemConfig:
    doc: dict[str, object] = {
        "port": str(port),
        "poll_s": 0.1,
        "dead_link_s": 0.5,
        "reset_backoff_min_s": 0.5,
        "reset_backoff_max_s": 2.0,
        "command_timeout_s": TIMEOUTS.default_s,
        "reset_timeout_s": TIMEOUTS.cfun_s,
        "attach_timeout_s": TIMEOUTS.cgatt_s,
        "operator_timeout_s": TIMEOUTS.cops_s,
        "boot_timeout_s": TIMEOUTS.boot_s,
        "hung_probe_tries": 2,
    }
    doc.update(kw)
    return ModemConfig(**doc)  # type: ignore[arg-type]


async def supervise(
    sim: SimModem,
    body: Callable[[ModemSupervisor, Events], Awaitable[None]],
    *,
    power_cycle: Callable[[], Awaitable[None]] | None = None,
    **kw: object,
) -> ModemSupervisor:
    events = Events()
    sup = ModemSupervisor(
        config(sim.link or Path(), **kw),
        on_event=events,
        power_cycle=power_cycle,
        rng=random.Random(7),
    )
    task = asyncio.create_task(sup.run())
    try:
        await until(lambda: (sup.stats.polls >= 1 and sup.link_up) or task.done(), "the first poll")
        await body(sup, events)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not sup.client.is_open
    return sup


async def test_outage_is_detected_reset_with_backoff_and_recovered(sim: SimModem) -> None:
    loop = asyncio.get_running_loop()

    async def body(sup: ModemSupervisor, events: Events) -> None:
        assert sup.info is not None and sup.info.imei == sim.identity.imei
        assert sup.status()["operator"] == "CHINA MOBILE"
        lost_at = loop.time()
        sim.set_outage(True)
        started = await events.first(OutageStarted)
        assert started.cause == "not registered (searching)"
        assert started.at - started.since >= 0.5 - 0.01  # dead_link_s (wall clock)
        resets = [await events.first(ModemReset, count=n) for n in (1, 2, 3)]
        assert [r.attempt for r in resets] == [1, 2, 3]
        assert all(r.method == "cfun11" and r.answered for r in resets)
        # Backoff doubles from 0.5 s up to the 2 s ceiling, each drawn in [½, 1] of it.
        for r, step in zip(resets, (0.5, 1.0, 2.0), strict=True):
            assert max(0.5, step / 2) <= r.next_reset_in_s <= step
        assert sup.status()["outage"] is True
        sim.set_outage(False)
        ended = await events.first(OutageEnded)
        elapsed = loop.time() - lost_at
        assert 0.5 <= ended.duration_s <= elapsed
        assert ended.cause == started.cause and ended.since == started.since
        assert ended.resets == len(events.of(ModemReset)) == sim.counters.resets
        await until(lambda: sup.link_up, "link up")
        status = sup.status()
        assert status["outage"] is False and status["outages"] == 1 and status["link_up"]
        assert status["registration"] == "home" and status["cause"] is None

    sup = await supervise(sim, body)
    assert sup.stats.resets == sim.counters.resets >= 3


def test_events_become_store_events() -> None:
    # What the daemon hands its store writer; the uplink carries it to the cloud.
    stored = OutageEnded(1000.0, 900.0, 100.0, "not registered (searching)", 2).to_store_event()
    assert (stored.kind, stored.severity, stored.meter, stored.at) == (
        "modem_outage_end",
        "info",
        None,
        1000.0,
    )
    assert json.loads(json.dumps(stored.detail)) == {
        "since": 900.0,
        "duration_s": 100.0,
        "cause": "not registered (searching)",
        "resets": 2,
    }
    reset = ModemReset(1.0, "why", "cfun11", 1, True, 60.0).to_store_event()
    assert (reset.kind, reset.severity) == ("modem_reset", "warning")


async def test_dead_uplink_evidence_triggers_a_reset(sim: SimModem) -> None:
    async def body(sup: ModemSupervisor, events: Events) -> None:
        sup.uplink_dead("no MQTT connection")
        sup.uplink_dead("a later report keeps the first time")
        started = await events.first(OutageStarted)
        assert started.cause == "uplink dead: no MQTT connection"
        reset = await events.first(ModemReset)
        assert reset.reason == started.cause and reset.method == "cfun11"
        sup.uplink_alive()
        ended = await events.first(OutageEnded)
        assert ended.duration_s >= 0.5 and ended.resets >= 1

    await supervise(sim, body)
    assert sim.counters.resets >= 1


async def test_radio_cycle_reset_method(sim: SimModem) -> None:
    async def body(sup: ModemSupervisor, events: Events) -> None:
        sim.set_outage(True)
        reset = await events.first(ModemReset)
        assert reset.method == "cfun01" and reset.answered
        sim.set_outage(False)
        await events.first(OutageEnded)

    await supervise(sim, body, reset_method="cfun01")
    assert sim.counters.radio_cycles >= 1 and sim.counters.resets == 0


async def test_hung_module_is_reset_blind(sim: SimModem) -> None:
    async def body(sup: ModemSupervisor, events: Events) -> None:
        sim.hang(reset_cures=True)
        hung = await events.first(HungDetected)
        assert hung.tries == 2
        reset = await events.first(ModemReset)
        assert (reset.method, reset.answered, reset.reason) == (
            "cfun11-blind",
            True,
            "modem not answering AT",
        )
        polls = sup.stats.polls
        await until(lambda: sup.stats.polls > polls and sup.link_up, "polls after the reset")
        assert sup.status()["hung"] is False

    sup = await supervise(sim, body)
    assert sim.counters.resets == 1 and sim.counters.power_cycles == 0 and not sim.hung
    assert sup.stats.hangs >= 1 and sup.stats.power_cycles == 0


async def test_hard_hung_module_is_power_cycled(sim: SimModem) -> None:
    async def power_cycle() -> None:
        sim.power_cycle()

    async def body(sup: ModemSupervisor, events: Events) -> None:
        sim.hang(reset_cures=False)
        reset = await events.first(ModemReset)
        assert (reset.method, reset.answered) == ("power-cycle", True)
        await until(lambda: sup.link_up and not sup.status()["hung"], "link up after power")

    sup = await supervise(sim, body, power_cycle=power_cycle, boot_timeout_s=2.0)
    assert sim.counters.power_cycles == 1 and sim.counters.resets == 0
    assert sup.stats.power_cycles == 1


async def test_power_cycle_command_runs(sim: SimModem, tmp_path: Path) -> None:
    marker = tmp_path / "cycled"

    async def body(sup: ModemSupervisor, events: Events) -> None:
        sim.hang(reset_cures=False)
        reset = await events.first(ModemReset)
        # The command ran (the file exists) but cannot reach the emulator: still silent.
        assert reset.method == "power-cycle" and not reset.answered
        assert marker.exists()

    await supervise(sim, body, boot_timeout_s=1.5, power_cycle_command=f"touch {marker}")


async def test_weak_signal_is_reported_once_and_its_recovery(sim: SimModem) -> None:
    async def body(sup: ModemSupervisor, events: Events) -> None:
        sim.set_signal(3)
        weak = await events.first(WeakSignal)
        assert -109 <= weak.dbm <= -105 and weak.threshold_dbm == -95
        assert sup.status()["weak_signal"] is True
        polls = sup.stats.polls
        await until(lambda: sup.stats.polls >= polls + 5, "more polls while weak")
        assert len(events.of(WeakSignal)) == 1  # reported on entering, not every poll
        sim.set_signal(25)
        restored = await events.first(SignalRestored)
        assert restored.dbm >= -91
        assert not events.of(OutageStarted)  # weak is not dead

    await supervise(sim, body)


async def test_signal_history_is_bounded(sim: SimModem) -> None:
    async def body(sup: ModemSupervisor, events: Events) -> None:
        await until(lambda: sup.stats.polls >= 12, "12 polls")
        history = sup.signal_history()
        assert len(history) == 5
        assert [s.at for s in history] == sorted(s.at for s in history)
        assert all(s.registered and s.act is None for s in history)  # CEREG mode 1: no AcT

    await supervise(sim, body, signal_history=5)


async def test_2g_module_is_watched_on_gprs(tmp_path: Path) -> None:
    sim = SimModem(link=tmp_path / "m", clock=SimClock(scale=SCALE), lte=False)
    await sim.start()
    try:

        async def body(sup: ModemSupervisor, events: Events) -> None:
            assert sup.status()["registration"] == "home"
            sim.set_outage(True)
            await events.first(OutageStarted)
            sim.set_outage(False)
            await events.first(OutageEnded)

        sup = await supervise(sim, body)
        assert sup._domains == [Domain.GPRS]
    finally:
        await sim.stop()


async def test_missing_port_counts_as_down(tmp_path: Path) -> None:
    events = Events()
    sup = ModemSupervisor(config(tmp_path / "absent"), on_event=events)
    task = asyncio.create_task(sup.run())
    try:
        started = await events.first(OutageStarted)
        assert started.cause.startswith("modem port unavailable: cannot open modem port")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# ---------------------------------------------------------------------- config
def modem_file(tmp_path: Path, table: dict[str, Any]) -> Path:
    """A config file whose ``[modem]`` table holds ``table`` (the checker reads it)."""
    lines = ["[concentrator]", 'id = "dc-1"', "[storage]", 'path = "s.db"', "[modem]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    path = tmp_path / "modem.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def modem_config(tmp_path: Path, table: dict[str, Any]) -> ModemConfig:
    cfg = load_config(modem_file(tmp_path, table)).modem
    assert cfg is not None
    return cfg


def test_config_defaults_and_timeouts(tmp_path: Path) -> None:
    cfg = modem_config(tmp_path, {"port": "/dev/ttyUSB2"})
    assert (cfg.baud, cfg.poll_s, cfg.dead_link_s) == (115200, 60.0, 300.0)
    assert cfg.timeouts() == AtTimeouts()
    doc = {"port": "/dev/ttyS1", "baud": 9600, "poll_s": 30}
    assert modem_config(tmp_path, doc).poll_s == 30.0


@pytest.mark.parametrize(
    ("doc", "field", "message"),
    [
        ({}, "port", "missing"),
        ({"port": " "}, "port", "empty"),
        ({"port": 3}, "port", "expected a string"),
        ({"baud": 12345}, "baud", "12345 is not a UART rate"),
        ({"baud": "fast"}, "baud", "expected an integer"),
        ({"poll_s": 0}, "poll_s", "expected a positive number of seconds, got 0"),
        ({"poll_s": True}, "poll_s", "positive number"),
        ({"dead_link_s": 10}, "dead_link_s", "shorter than poll_s"),
        ({"dead_link_s": -1}, "dead_link_s", "positive number"),
        ({"reset_backoff_min_s": 0}, "reset_backoff_min_s", "positive number"),
        ({"reset_backoff_max_s": 30}, "reset_backoff_max_s", "below reset_backoff_min_s"),
        ({"reset_method": "reboot"}, "reset_method", "cfun11, cfun01"),
        ({"weak_signal_dbm": -20}, "weak_signal_dbm", "-113..-51"),
        ({"signal_history": 0}, "signal_history", "at least 1"),
        ({"power_cycle_command": "gpioset 'x"}, "power_cycle_command", "quotation"),
        ({"colour": "red"}, "colour", "unknown key"),
    ],
)
def test_config_errors_name_the_field(
    tmp_path: Path, doc: dict[str, Any], field: str, message: str
) -> None:
    full = {"port": "/dev/ttyUSB2", **doc} if "port" not in doc and doc else dict(doc)
    # An empty [modem] table means no modem: the port is missing from a table with a key.
    path = modem_file(tmp_path, full or {"baud": 115200})
    issues: list[ConfigIssue] = check_config(path)
    assert len(issues) == 1, issues
    [issue] = issues
    assert re.search(message, issue.message), issue
    # Unknown keys are one issue for the table, at the first unknown key's line.
    assert issue.field == ("modem" if field == "colour" else f"modem.{field}")
    assert issue.line == next(
        (i for i, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(field)),
        5,  # the [modem] header: the key is missing
    )
