"""`concentrator read` and `concentrator scan` against `hil-sim bus`, through real pyserial
I/O on PTYs, compared with the simulator's ground-truth log."""

from __future__ import annotations

import json

import pytest
from helpers import read_json, run_cli, truth_of

from concentrator.config import load_config
from drivers import dlt645, modbus_rtu
from hil_sim.fleet import make_addresses


def _assert_matches_truth(doc: dict[str, object], sim_truth: list, meter: str) -> None:
    readings = doc["readings"]
    assert isinstance(readings, list)
    told = [r for r in sim_truth if r.meter == meter and r.fault is None]
    for reading in readings:
        # The meter answered each request once; the last value it told for this
        # quantity is what the CLI must have printed.
        values = [r.value for r in told if r.quantity == reading["name"]]
        assert values, f"the simulator never reported {reading['name']}"
        assert reading["value"] == values[-1], reading
        assert reading["di"] == [r.key for r in told if r.quantity == reading["name"]][-1]


def test_read_every_dlt645_quantity_matches_ground_truth(sim) -> None:
    s = sim("--meters", "3", "--baud", "9600", "--preamble", "4")
    link = str(s.links[0])
    meter = s.meters[1]
    doc = read_json("--port", link, "--address", meter, "--baud", "9600")
    assert doc["meter"] == meter
    names = [r["name"] for r in doc["readings"]]
    assert names == list(dlt645.DEFAULT_QUANTITIES)  # three-phase meter: all supported
    s.stop()  # flush and close the truth log
    _assert_matches_truth(doc, truth_of(s.truth), meter)


def test_read_named_quantities_in_order(sim) -> None:
    s = sim("--meters", "2", "--baud", "9600")
    doc = read_json(
        "--port",
        str(s.links[0]),
        "--address",
        s.meters[0],
        "--baud",
        "9600",
        "voltage_a",
        "02800002",
        "energy_fwd_t4",
    )
    assert [r["name"] for r in doc["readings"]] == ["voltage_a", "frequency", "energy_fwd_t4"]
    assert [r["unit"] for r in doc["readings"]] == ["V", "Hz", "kWh"]


def test_read_every_modbus_quantity_matches_ground_truth(sim) -> None:
    s = sim("--meters", "3", "--protocol", "modbus", "--baud", "9600")
    doc = read_json("--port", str(s.links[0]), "--protocol", "modbus", "--address", "3")
    assert [r["name"] for r in doc["readings"]] == list(modbus_rtu.SDM630)
    assert all(r["di"].startswith("0x") for r in doc["readings"])
    s.stop()
    _assert_matches_truth(doc, truth_of(s.truth), "3")


def test_single_phase_meter_reports_unsupported_phases_without_failing(sim) -> None:
    s = sim("--meters", "1", "--baud", "9600", "--phases", "1")
    result = run_cli("read", "--port", str(s.links[0]), "--address", s.meters[0], "--baud", "9600")
    assert result.returncode == 0, result.stderr
    assert "not supported by meter" in result.stderr and "voltage_b" in result.stderr
    named = run_cli(
        "read", "--port", str(s.links[0]), "--address", s.meters[0], "--baud", "9600", "voltage_b"
    )
    assert named.returncode == 5
    assert f"meter {s.meters[0]}" in named.stderr and "no requested data" in named.stderr


def test_scan_finds_all_64_meters_and_no_false_address(sim) -> None:
    # Consecutive addresses across a byte boundary (…70 to …33 of the next hundred).
    s = sim(
        "--meters", "64", "--baud", "9600", "--turnaround", "5-15", "--address-base", "330000000070"
    )
    result = run_cli(
        "scan", "--port", str(s.links[0]), "--baud", "9600", "--timeout", "0.3", "--json"
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["meters"] == sorted(s.meters)
    assert len(doc["meters"]) == 64
    assert doc["collisions"] >= 1


def test_scan_splits_collisions_below_the_first_byte(sim) -> None:
    # Pick a seed whose random addresses share a low byte, so the search must go deeper.
    seed = next(
        sd
        for sd in range(100)
        if len({a[-2:] for a in make_addresses(6, randomise=True, seed=sd)}) < 6
    )
    s = sim("--meters", "6", "--random-addresses", "--seed", str(seed), "--baud", "0")
    result = run_cli(
        "scan", "--port", str(s.links[0]), "--baud", "0", "--timeout", "0.25", "--json"
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["meters"] == sorted(s.meters)
    assert doc["collisions"] >= 2


@pytest.mark.parametrize(
    ("fault", "code", "words"),
    [
        ("bad_checksum=1", 4, "garbled reply (checksum"),
        ("truncated=1", 4, "garbled reply"),
        ("error_reply=1", 5, "replied with error 0x01: other error"),
        ("no_reply=1", 3, "no reply within"),
    ],
)
def test_faulty_meter_gives_clear_error_and_exit_code(
    sim, fault: str, code: int, words: str
) -> None:
    s = sim("--meters", "2", "--baud", "9600", "--fault", fault)
    meter = s.meters[0]
    result = run_cli(
        "read",
        "--port",
        str(s.links[0]),
        "--address",
        meter,
        "--baud",
        "9600",
        "--timeout",
        "0.3",
        "energy_fwd_total",
    )
    assert result.returncode == code, result.stderr
    assert f"meter {meter}" in result.stderr
    assert words in result.stderr.replace("\n", " ")


def test_absent_modbus_slave_is_no_reply(sim) -> None:
    s = sim("--meters", "1", "--protocol", "modbus", "--baud", "9600")
    result = run_cli(
        "read",
        "--port",
        str(s.links[0]),
        "--protocol",
        "modbus",
        "--address",
        "9",
        "--timeout",
        "0.3",
    )
    assert result.returncode == 3
    assert "meter 9" in result.stderr and "no reply" in result.stderr


def test_noise_before_replies_is_skipped(sim) -> None:
    s = sim("--meters", "1", "--baud", "9600", "--fault", "noise=1")
    doc = read_json(
        "--port",
        str(s.links[0]),
        "--address",
        s.meters[0],
        "--baud",
        "9600",
        "energy_fwd_total",
        "voltage_a",
    )
    assert len(doc["readings"]) == 2


def test_cover_openings_raise_the_meters_counter(sim) -> None:
    s = sim(
        "--meters", "2", "--baud", "9600",
        "--cover-open", f"{'1':0>12}@0", "--cover-open", f"{'1':0>12}@100000000",
        "--cover-open", "*@0",
    )  # fmt: skip
    counts = []
    for meter in s.meters:
        doc = read_json(
            "--port", str(s.links[0]), "--address", meter, "--baud", "9600", "cover_open_count"
        )  # fmt: skip
        counts.append(doc["readings"][0]["value"])
    # Meter 1: its own opening and the bus-wide one; the one far in the future not yet.
    assert counts == ["2", "1"]


def test_a_malformed_cover_opening_is_refused_by_name(tmp_path) -> None:
    import subprocess

    from hil_sim.process import cli_command, env_without_color

    done = subprocess.run(
        [*cli_command("hil-sim"), "bus", "--link", str(tmp_path / "l"), "--cover-open", "1@soon"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env_without_color(),
    )
    assert done.returncode == 2
    assert "expected METER@SECONDS" in done.stderr


def test_bad_arguments_are_named(sim) -> None:
    s = sim("--meters", "1", "--baud", "9600")
    bad_address = run_cli("read", "--port", str(s.links[0]), "--address", "12345678901234")
    assert bad_address.returncode == 2
    assert "expected 12 digits" in bad_address.stderr
    bad_quantity = run_cli(
        "read", "--port", str(s.links[0]), "--address", s.meters[0], "no_such_thing"
    )
    assert bad_quantity.returncode == 2
    assert "no_such_thing" in bad_quantity.stderr
    no_port = run_cli("read", "--port", "/nonexistent/tty", "--address", s.meters[0])
    assert no_port.returncode == 6
    assert "cannot open serial port /nonexistent/tty" in no_port.stderr


def test_write_config_describes_the_hosted_meters(sim, tmp_path) -> None:
    import tomllib

    cfg = tmp_path / "concentrator.toml"
    s = sim("--meters", "3", "--baud", "9600", "--write-config", str(cfg))
    doc = tomllib.loads(cfg.read_text())
    # Beside the config, so written relative to its folder: the rule the config is read by.
    assert doc["bus"] == [
        {"name": "bus1", "type": "rs485", "port": "bus1", "baud": 9600, "parity": "E"}
    ]
    assert doc["storage"]["path"] == "concentrator.db"
    assert load_config(cfg).buses[0].port == str(s.links[0])
    assert [m["address"] for m in doc["meter"]] == s.meters
    assert all(m["protocol"] == "dlt645" and m["bus"] == "bus1" for m in doc["meter"])
    assert all(len(m["password"]) == 6 and m["password_level"] == 2 for m in doc["meter"])
