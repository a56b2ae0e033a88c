"""The simulator's own behaviour: meter physics, protocol answers, collisions, options."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from helpers import read_json
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import dlt645
from hil_sim.bus import _collide
from hil_sim.dlt645_meter import Dlt645Meter
from hil_sim.errors import OptionError, SimError, SimNotReady, SimUnavailable, SpecError
from hil_sim.faults import FaultPlan, parse_fault_option, parse_offline_option
from hil_sim.fleet import make_addresses
from hil_sim.model import CHINA_TZ, MeterModel, tariff_at
from hil_sim.modem import parse_modem_fault
from hil_sim.process import SimProcess, cli_command, env_without_color

T0 = dt.datetime(2026, 11, 25, 0, 0, tzinfo=CHINA_TZ).timestamp()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=3 * 86400), min_size=1, max_size=30))
def test_energy_registers_never_run_backwards(offsets: list[float]) -> None:
    model = MeterModel("000000000001", seed=7, start=T0)
    last = model.energy_fwd()
    for offset in sorted(offsets):
        model.advance(T0 + offset)
        now = model.energy_fwd()
        assert all(b >= a for a, b in zip(last, now, strict=True))
        assert now[0] == sum(now[1:])
        last = now


def test_history_does_not_depend_on_how_often_a_meter_is_read() -> None:
    often = MeterModel("000000000001", seed=11, start=T0)
    rarely = MeterModel("000000000001", seed=11, start=T0)
    for minute in range(0, 24 * 60, 7):
        often.advance(T0 + minute * 60)
    often.advance(T0 + 86400)
    rarely.advance(T0 + 86400)
    diff = abs(often.energy_fwd()[0] - rarely.energy_fwd()[0])
    assert diff <= Decimal("0.05")


def test_energy_lands_in_the_time_of_use_tariff() -> None:
    model = MeterModel("000000000001", seed=1, start=T0)  # local midnight: valley
    before = model.energy_fwd()
    model.advance(T0 + 3 * 3600)
    after = model.energy_fwd()
    assert tariff_at(dt.datetime.fromtimestamp(T0 + 3600, CHINA_TZ)) == 4
    assert after[4] > before[4]
    assert after[1:4] == before[1:4]


def test_open_relay_stops_the_load() -> None:
    model = MeterModel("000000000001", seed=1, start=T0)
    model.set_relay(T0, True)
    before = model.energy_fwd()
    model.advance(T0 + 7200)
    assert model.energy_fwd() == before
    assert model.measure(T0 + 60).power_total == 0.0
    model.keep_power = True
    model.set_relay(T0 + 7200, False)
    assert model.set_relay(T0 + 7201, True) is False  # 保电: a trip is refused


def test_daily_freezes_reach_back_62_days_and_grow_day_by_day() -> None:
    model = MeterModel("000000000001", seed=5, start=T0 + 3600)
    freezes = list(model.freezes)
    assert len(freezes) == 62
    assert freezes[0].at.hour == 0 and freezes[0].at.minute == 0
    totals = [f.energy_fwd[0] for f in freezes]
    assert totals == sorted(totals, reverse=True)
    model.advance(T0 + 86400 + 3600)
    assert len(model.freezes) == 62
    assert model.freezes[0].energy_fwd[0] >= totals[0]


def _meter(**kw: object) -> Dlt645Meter:
    return Dlt645Meter(MeterModel("210000000101", seed=1, start=T0), **kw)  # type: ignore[arg-type]


def _request(raw: bytes) -> dlt645.Frame:
    return dlt645.decode_frame(raw)


def test_meter_answers_its_address_wildcards_but_not_broadcast_reads() -> None:
    meter = _meter()
    read = _request(dlt645.build_read("210000000101", 0x00010000))
    assert meter.selected_by(read)
    assert meter.selected_by(_request(dlt645.build_read("AAAAAAAAAA01", 0x00010000)))
    assert not meter.selected_by(_request(dlt645.build_read("AAAAAAAAAA02", 0x00010000)))
    broadcast = _request(dlt645.build_read(dlt645.BROADCAST, 0x00010000))
    assert meter.selected_by(broadcast) and meter.answer(broadcast, T0).reply is None


def test_unknown_di_gets_no_data_error_reply() -> None:
    meter = _meter()
    answer = meter.answer(_request(dlt645.build_read("210000000101", 0x12345678)), T0)
    assert answer.reply is not None
    frame = dlt645.decode_frame(answer.reply)
    assert frame.is_error and frame.data == bytes([dlt645.ErrorBits.NO_DATA])
    assert answer.truth == ()


def test_preamble_option_puts_fe_bytes_before_replies() -> None:
    meter = _meter(preamble=4)
    answer = meter.answer(_request(dlt645.build_read_address()), T0)
    assert answer.reply is not None and answer.reply.startswith(b"\xfe" * 4 + b"\x68")


def test_collision_is_the_and_of_overlapping_replies() -> None:
    a = bytes([0x68, 0xF0, 0x0F])
    b = bytes([0x68, 0x3C, 0xFF])
    assert _collide([(0.0, a), (0.0, b)], 0.0) == bytes([0x68, 0x30, 0x0F])
    # b starts one character later: its bytes overlap a's from the second slot.
    assert _collide([(0.0, a), (0.01, b)], 0.01) == bytes([0x68, 0x68 & 0xF0, 0x3C & 0x0F, 0xFF])


def test_fault_options_are_validated() -> None:
    assert parse_fault_option("no_reply=0.5@000000000001") == ("000000000001", "no_reply", 0.5)
    with pytest.raises(ValueError, match="expected one of"):
        parse_fault_option("gremlins=0.1")
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        parse_fault_option("no_reply=2")
    with pytest.raises(ValueError, match="not a number"):
        parse_fault_option("no_reply=x")
    window = parse_offline_option("*@10-20")
    assert window.meter is None and (window.start, window.end) == (10.0, 20.0)
    with pytest.raises(ValueError, match="end must be after start"):
        parse_offline_option("m@20-10")
    with pytest.raises(ValueError, match="unknown fault kind"):
        FaultPlan(rates={"gremlins": 0.1})


def test_simulator_errors_share_one_root_and_stay_value_errors() -> None:
    # One root for the package; the CLI's edge converts by class (hil_sim.cli.edge).
    with pytest.raises(OptionError) as bad_option:
        parse_fault_option("gremlins=0.1")
    assert bad_option.value.option is None
    with pytest.raises(OptionError) as bad_modem_fault:
        parse_modem_fault("outage@5")
    assert bad_modem_fault.value.option == "--fault"
    with pytest.raises(SpecError) as no_room:
        make_addresses(5, base="999999999998")
    assert not isinstance(no_room.value, OptionError)
    with pytest.raises(SpecError, match="invalid literal"):
        make_addresses(1, base="12x")
    for error in (bad_option.value, bad_modem_fault.value, no_room.value):
        assert isinstance(error, SimError) and isinstance(error, ValueError)
    assert issubclass(SimNotReady, SimUnavailable) and issubclass(SimUnavailable, SimError)


def test_the_cli_edge_turns_errors_into_messages_and_exit_codes(tmp_path) -> None:
    from click.testing import CliRunner

    from hil_sim.cli import main

    runner = CliRunner()
    link = str(tmp_path / "l")
    # OptionError without a flag: the usage, "Invalid value: ...", exit 2.
    result = runner.invoke(main, ["bus", "--link", link, "--fault", "no_reply=2"])
    assert result.exit_code == 2
    assert "Usage: main bus [OPTIONS]" in result.output
    assert "Error: Invalid value: fault no_reply: probability 2.0 outside 0..1" in result.output
    # OptionError naming its flag.
    result = runner.invoke(main, ["modem", "--link", link, "--fault", "outage@5"])
    assert result.exit_code == 2
    assert "Error: Invalid value for --fault: 'outage@5': an outage needs an END" in result.output
    # SpecError: the usage and the message, exit 2.
    result = runner.invoke(
        main, ["bus", "--link", link, "--address-base", "999999999999", "--meters", "5"]
    )
    assert result.exit_code == 2
    assert "Error: address base 999999999999 leaves no room for 5 meters" in result.output
    # SimUnavailable: "error: ..." and exit 1 (nothing listens on port 1).
    unreachable = "postgresql://nobody@127.0.0.1:1/x"
    args = ["--areas", "1", "--customers", "2", "--days", "1", "--db", unreachable]
    result = runner.invoke(main, ["areas", "--out-dir", str(tmp_path / "out"), *args])
    assert result.exit_code == 1
    assert result.output.startswith("error: cannot open database postgresql://nobody@127.0.0.1:1/x")


def test_uniform_fault_plan_hits_its_rate() -> None:
    plan = FaultPlan.uniform(0.02, seed=1)
    draws = [plan.draw("m") for _ in range(20000)]
    rate = sum(d is not None for d in draws) / len(draws)
    assert 0.015 < rate < 0.025
    assert "error_reply" not in {d for d in draws if d}


def test_addresses() -> None:
    assert make_addresses(3, base="000000000099") == [
        "000000000099",
        "000000000100",
        "000000000101",
    ]
    rnd = make_addresses(50, randomise=True, seed=4)
    assert len(set(rnd)) == 50 and all(len(a) == 12 and a.isdigit() for a in rnd)
    with pytest.raises(ValueError, match="no room"):
        make_addresses(5, base="999999999998")


def test_cover_open_counter_follows_simulated_time() -> None:
    from hil_sim.model import MeterModel

    model = MeterModel("000000000001", 1, cover_open_count=2, cover_opened_at=[100.0, 200.0])
    assert [model.covers_opened(t) for t in (99.0, 100.0, 150.0, 250.0)] == [2, 3, 3, 4]


# ---------------------------------------------------------------------- issue 18


def _hil_sim(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli_command("hil-sim"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env_without_color(),
        cwd=cwd,
    )


def test_options_are_checked_by_the_configs_rules_and_never_a_traceback(tmp_path: Path) -> None:
    link = str(tmp_path / "l")
    cases = [
        # (arguments, the flag named, words of the message)
        (["bus", "--link", link, "--address-base", "12ab"], "--address-base",
         '"12ab" is not a 12-digit DL/T 645 address'),
        (["fleet", "--link-dir", str(tmp_path), "--address-base", "12ab"], "--address-base",
         '"12ab" is not a 12-digit DL/T 645 address'),
        (["plc", "--link", link, "--address-base", "1"], "--address-base",
         "expected 12 digits, got 1"),
        (["plc", "--link", link, "--master-address", "12G"], "--master-address",
         "expected 12 hex digits"),
        # `concentrator config check` refuses "7m" (it does not divide a day): so does hil-sim.
        (["bus", "--link", link, "--cadence", "7m"], "--cadence",
         '"7m" does not divide a day into equal slots'),
        # A rate `config check` refuses for a [[bus]] is refused here too.
        (["fleet", "--link-dir", str(tmp_path), "--baud", "1234"], "--baud",
         "1234 is not a standard rate"),
        (["bus", "--link", "/nonexistent/dir/bus"], "--link",
         "the folder /nonexistent/dir does not exist"),
        (["bus", "--link", link, "--write-config", "/nonexistent/c.toml"], "--write-config",
         "the folder /nonexistent does not exist"),
        (["bus", "--link", link, "--store", "/nonexistent/s.db"], "--store",
         "the folder /nonexistent does not exist"),
        (["fleet", "--link-dir", "/nonexistent-mf-links"], "--link-dir",
         "/nonexistent-mf-links does not exist: create it first"),
    ]  # fmt: skip
    for args, flag, words in cases:
        done = _hil_sim(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert f"Invalid value for '{flag}'" in done.stderr and words in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert not Path("/nonexistent-mf-links").exists()  # nothing created at /
    assert _hil_sim("--version").stdout.startswith("hil-sim, version ")


def test_a_live_link_is_refused_and_never_taken_over_or_deleted(tmp_path: Path) -> None:
    link = tmp_path / "bus"
    first = SimProcess(["bus", "--link", str(link), "--meters", "2", "--baud", "0"])
    first.start()
    try:
        pty = first.ready["buses"][0]["pty"]
        second = _hil_sim("bus", "--link", str(link), "--meters", "1", "--baud", "0")
        assert second.returncode == 1, second.stderr
        assert second.stderr.startswith(f"error: {link} is live: served by pid {first.proc.pid}")
        assert "stop that simulator first, or choose another --link" in second.stderr
        # The first one still owns it, and still serves on it.
        assert os.readlink(link) == pty
        assert read_json("--port", str(link), "--address", first.meters[0], "voltage_a")
        # A link somebody else put there meanwhile is not ours to delete on exit.
        other = tmp_path / "other"
        other.symlink_to("/dev/null")
        os.replace(other, link)
    finally:
        first.stop()
    assert os.readlink(link) == "/dev/null"
    link.unlink()
    # Once its simulator is gone, a link is free again (even after kill -9: the lock
    # dies with the process), and a normal stop removes it.
    again = SimProcess(["bus", "--link", str(link), "--meters", "1", "--baud", "0"])
    again.start()
    assert again.proc is not None
    again.proc.kill()
    again.proc.wait(timeout=60)
    with SimProcess(["bus", "--link", str(link), "--meters", "1", "--baud", "0"]) as third:
        assert os.readlink(link) == third.ready["buses"][0]["pty"]
    assert not link.exists() and not link.is_symlink()


def test_a_device_or_file_is_never_replaced_by_a_link(tmp_path: Path) -> None:
    target = tmp_path / "ttyS9"
    target.write_text("not a link")
    done = _hil_sim("bus", "--link", str(target), "--meters", "1")
    assert done.returncode == 1
    assert "exists and is not a simulator's link" in done.stderr
    assert target.read_text() == "not a link"
