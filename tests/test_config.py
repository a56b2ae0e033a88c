"""Config parsing: real TOML files, every issue reported with its line and field."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from concentrator.cli import main
from concentrator.cli.exitcodes import Exit
from concentrator.config import (
    Cadence,
    ConfigError,
    ConfigIssue,
    check_config,
    load_config,
    parse_cadence,
)
from concentrator.storage import Store
from drivers.serial_bus import SerialSettings
from hil_sim.clock import SimClock
from hil_sim.fleet import FleetOptions, build_meters, write_config
from hil_sim.process import cli_command, env_without_color

VALID = """\
[concentrator]
id = "dc-0001"
timezone = "+08:00"

[storage]
path = "readings.db"
quota_mb = 512

[[bus]]
name = "bus1"
type = "rs485"
port = "/dev/ttyS1"
baud = 2400
parity = "E"
response_timeout_ms = 800

[[bus]]
name = "bus2"
type = "rs485"
port = "/dev/ttyS2"
baud = 9600
parity = "N"

[[meter]]
address = "000000000001"
protocol = "dlt645"
bus = "bus1"
group = "households"
password_level = 2
password = "123456"
operator = "00000001"

[[meter]]
address = "7"
protocol = "modbus"
bus = "bus2"
group = "pv"
model = "sdm120"

[[task]]
name = "energy"
quantities = ["energy_fwd_total"]
every = "15m"
groups = ["households"]

[[task]]
name = "pv"
quantities = ["energy_fwd_total", "power_a"]
every = "daily@00:05"
groups = ["pv"]
relay = false

[uplink]
broker_host = "mqtt.example"
broker_port = 8883
ca_file = "ca.crt"
cert_file = "dc.crt"
key_file = "dc.key"
payload_key_file = "payload.key"
"""


def write(tmp_path: Path, text: str, name: str = "site.toml") -> Path:
    """Write a config whose serial ports exist: ``/dev/ttySN`` become files in
    ``tmp_path`` (a port that is not there is a warning, and the machine's own
    ports must not decide a test)."""
    path = tmp_path / name
    path.write_text(text.replace('"/dev/ttyS', f'"{tmp_path}/ttyS'), encoding="utf-8")
    for n in (1, 2, 3):
        (tmp_path / f"ttyS{n}").touch()
    (tmp_path / "payload.key").write_text("ab" * 32)  # the [uplink] key the check reads
    return path


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the ``occurrence``-th line containing ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    return hits[occurrence - 1]


def only_issue(path: Path) -> ConfigIssue:
    issues = check_config(path)
    assert len(issues) == 1, "\n".join(map(str, issues))
    return issues[0]


def test_valid_config_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    assert config.concentrator.id == "dc-0001"
    assert config.storage.path == tmp_path / "readings.db"
    assert config.storage.quota_mb == 512
    assert config.storage.synchronous == "FULL"
    assert config.storage.retention_days == 7
    assert [b.name for b in config.buses] == ["bus1", "bus2"]
    assert config.buses[0].settings() == SerialSettings(
        port=str(tmp_path / "ttyS1"),
        baud=2400,
        parity="E",
        response_timeout=0.8,
        inter_frame_gap=0.005,
    )
    dlt, modbus = config.meters
    assert (dlt.group, dlt.password, dlt.model) == ("households", "123456", None)
    assert (modbus.address, modbus.model, modbus.group) == ("7", "sdm120", "pv")
    energy, pv = config.tasks
    assert energy.every == Cadence("15m", 900, 0)
    assert (energy.retries, energy.retry_backoff_s, energy.backfill) == (2, 2.0, True)
    assert pv.every == Cadence("daily@00:05", 86_400, 300)
    assert config.uplink is not None
    assert config.uplink.broker_host == "mqtt.example"
    assert config.uplink.broker_port == 8883


def test_config_from_hil_sim_writer_loads(tmp_path: Path) -> None:
    clock = SimClock()
    dlt_opts = FleetOptions(meters=3, baud=9600)
    mb_opts = FleetOptions(protocol="modbus", meters=2, baud=0, modbus_model="sdm120")
    path = tmp_path / "sim.toml"
    write_config(
        path,
        [
            ("bus1", tmp_path / "link1", dlt_opts, build_meters(dlt_opts, clock)),
            ("bus2", tmp_path / "link2", mb_opts, build_meters(mb_opts, clock)),
        ],
    )
    with path.open("a", encoding="utf-8") as f:
        f.write('\n[[task]]\nname = "voltages"\nquantities = ["frequency"]\nevery = "1m"\n')
    config = load_config(path)
    assert len(config.buses) == 2 and config.buses[1].baud == 0
    assert [m.address for m in config.meters] == [
        "000000000001",
        "000000000002",
        "000000000003",
        "1",
        "2",
    ]
    assert [t.name for t in config.tasks] == [
        "interval-energy",
        "daily-freeze",
        "interval-energy-modbus",
        "voltages",
    ]
    assert [m.group for m in config.meters] == ["dlt645"] * 3 + ["modbus"] * 2


def test_relay_task_needs_passwords_of_each_meter_it_applies_to(tmp_path: Path) -> None:
    # The sim writer gives Modbus meters no passwords: a relay task over them is refused.
    opts = FleetOptions(protocol="modbus", meters=1)
    path = tmp_path / "sim.toml"
    write_config(path, [("bus1", tmp_path / "link", opts, build_meters(opts, SimClock()))])
    with path.open("a", encoding="utf-8") as f:
        f.write('[[task]]\nname = "r"\nquantities = ["power_total"]\nevery = "5m"\nrelay = true\n')
    issue = only_issue(path)
    assert issue.field == "meter[0].password_level"
    assert issue.line == line_of(path.read_text(), "[[meter]]")
    assert "missing passwords for relay tasks" in issue.message
    assert 'meter "1"' in issue.message


def bad(tmp_path: Path, old: str, new: str) -> tuple[Path, str]:
    assert old in VALID
    text = VALID.replace(old, new, 1)
    return write(tmp_path, text), text


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path, text = bad(tmp_path, "[uplink]", "[uplinks]")
    issue = only_issue(path)
    assert (issue.line, issue.field) == (line_of(text, "[uplinks]"), "uplinks")
    assert 'unknown key "uplinks"' in issue.message
    assert "allowed keys: format, concentrator, storage, bus, meter, task, uplink" in issue.message


def test_unknown_key_inside_meter(tmp_path: Path) -> None:
    path, text = bad(tmp_path, 'model = "sdm120"', 'model = "sdm120"\nserial_no = "X1"')
    issue = only_issue(path)
    assert (issue.line, issue.field) == (line_of(text, "serial_no"), "meter[1].serial_no")
    assert "allowed keys: address, protocol, bus" in issue.message


def test_wrong_type(tmp_path: Path) -> None:
    path, text = bad(tmp_path, "baud = 9600", 'baud = "fast"')
    issue = only_issue(path)
    assert str(issue) == (
        f'{path}:{line_of(text, "fast")}: bus[1].baud: expected an integer, got string "fast"'
    )


def test_duplicate_meter_address_names_both_lines(tmp_path: Path) -> None:
    extra = '[[meter]]\naddress = "000000000001"\nprotocol = "dlt645"\nbus = "bus1"\n'
    path, text = bad(tmp_path, "[[task]]", extra + "\n[[task]]")
    issue = only_issue(path)
    first, second = line_of(text, '"000000000001"', 1), line_of(text, '"000000000001"', 2)
    assert (issue.line, issue.field) == (second, "meter[2].address")
    assert f"meter[2] at line {second}" in issue.message
    assert f"meter[0] at line {first}" in issue.message


def test_duplicate_dlt645_address_on_another_bus(tmp_path: Path) -> None:
    extra = '[[meter]]\naddress = "000000000001"\nprotocol = "dlt645"\nbus = "bus2"\n'
    path, _ = bad(tmp_path, "[[task]]", extra + "\n[[task]]")
    issue = only_issue(path)
    assert issue.field == "meter[2].address"
    assert "duplicate DL/T 645 address" in issue.message


def test_two_buses_on_one_port_with_different_baud(tmp_path: Path) -> None:
    path, text = bad(tmp_path, 'port = "/dev/ttyS2"', 'port = "/dev/ttyS1"')
    issues = check_config(path)
    # 9600 8N1 vs 2400 8E1: both settings disagree, both are named
    assert [(i.line, i.field) for i in issues] == [
        (line_of(text, "baud = 9600"), "bus[1].baud"),
        (line_of(text, 'parity = "N"'), "bus[1].parity"),
    ]
    assert f'port "{tmp_path}/ttyS1" is also used by bus "bus1"' in issues[0].message
    assert "2400" in issues[0].message and "9600" in issues[0].message


def test_meter_on_unknown_bus(tmp_path: Path) -> None:
    path, text = bad(tmp_path, 'bus = "bus2"', 'bus = "bus9"')
    issue = only_issue(path)
    assert (issue.line, issue.field) == (line_of(text, "bus9"), "meter[1].bus")
    assert 'no [[bus]] is named "bus9"' in issue.message


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        (
            'address = "000000000001"',
            'address = "12345"',
            "meter[0].address",
            '"12345" is not a 12-digit DL/T 645 address',
        ),
        ('address = "7"', 'address = "248"', "meter[1].address", "slave id 1..247"),
    ],
)
def test_bad_address(tmp_path: Path, old: str, new: str, field: str, message: str) -> None:
    path, text = bad(tmp_path, old, new)
    issue = only_issue(path)
    assert (issue.line, issue.field) == (line_of(text, new), field)
    assert message in issue.message


def test_unknown_quantity_for_the_meters_of_the_task(tmp_path: Path) -> None:
    # power_b is a canonical name, but the "pv" task applies only to a single-phase SDM120
    path, text = bad(tmp_path, '"energy_fwd_total", "power_a"', '"energy_fwd_total", "power_b"')
    issue = only_issue(path)
    assert (issue.line, issue.field) == (line_of(text, "power_b"), "task[1].quantities")
    assert 'unknown quantity "power_b" for Modbus sdm120 meters' in issue.message
    # the names it can be read for are listed
    assert "expected one of: voltage_a, current_a, power_a, frequency, energy_fwd_total" in (
        issue.message
    )


def test_a_quantity_name_of_the_previous_release_is_read_as_its_canonical_name(
    tmp_path: Path,
) -> None:
    # A site's config of the previous release must not stop its daemon at the upgrade.
    path, text = bad(tmp_path, '"energy_fwd_total", "power_a"', '"energy_import", "power_a"')
    assert check_config(path) == []
    [warning] = check_config(path, warnings=True)
    assert (warning.line, warning.field) == (line_of(text, "energy_import"), "task[1].quantities")
    assert '"energy_import" is the previous release\'s name of "energy_fwd_total"' in (
        warning.message
    )
    assert load_config(path).tasks[1].quantities == ("energy_fwd_total", "power_a")


def test_dlt645_tasks_take_canonical_names_or_their_di_codes(tmp_path: Path) -> None:
    path, _ = bad(tmp_path, 'quantities = ["energy_fwd_total"]',
                  'quantities = ["00010000", "frozen_daily_time_5"]')  # fmt: skip
    issue = only_issue(path)
    assert 'unknown quantity "frozen_daily_time_5" for DL/T 645 meters' in issue.message


def test_bad_cadence(tmp_path: Path) -> None:
    path, text = bad(tmp_path, 'every = "15m"', 'every = "7m"')
    issue = only_issue(path)
    assert (issue.line, issue.field) == (line_of(text, '"7m"'), "task[0].every")
    assert "does not divide a day" in issue.message


def test_missing_key_points_at_table_header(tmp_path: Path) -> None:
    path, text = bad(tmp_path, 'every = "15m"\n', "")
    issue = only_issue(path)
    assert (issue.line, issue.field) == (line_of(text, "[[task]]"), "task[0].every")
    assert issue.message == "required key is missing"


def test_relay_task_without_passwords(tmp_path: Path) -> None:
    path, text = bad(tmp_path, 'operator = "00000001"\n', "")
    text = text.replace('groups = ["households"]', 'groups = ["households"]\nrelay = true')
    path.write_text(text)
    issue = only_issue(path)
    assert (issue.line, issue.field) == (line_of(text, "[[meter]]"), "meter[0].operator")
    assert 'meter "000000000001": missing passwords for relay tasks' in issue.message


def test_toml_syntax_error_has_its_line(tmp_path: Path) -> None:
    path, text = bad(tmp_path, "baud = 9600", "baud = 9600 9600")
    issue = only_issue(path)
    assert (issue.line, issue.field) == (line_of(text, "9600 9600"), "toml")
    assert "syntax error" in issue.message and "column" in issue.message


def test_every_error_in_a_file_is_reported(tmp_path: Path) -> None:
    text = (
        VALID.replace('id = "dc-0001"', 'id = "dc 0001"')
        .replace("baud = 2400", "baud = 2401")
        .replace('address = "7"', 'address = "0"')
        .replace('every = "daily@00:05"', 'every = "daily@25:00"')
        .replace("quota_mb = 512", "quota_mb = 0")
    )
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    fields = [i.field for i in caught.value.issues]
    assert fields == [
        "concentrator.id",
        "storage.quota_mb",
        "bus[0].baud",
        "meter[1].address",
        "task[1].every",
    ]
    assert str(caught.value).count("\n") == 4
    assert str(caught.value).splitlines()[0].startswith(f"{tmp_path / 'site.toml'}:")


def test_duplicate_task_name(tmp_path: Path) -> None:
    path, text = bad(tmp_path, 'name = "pv"', 'name = "energy"')
    issue = only_issue(path)
    assert (issue.line, issue.field) == (line_of(text, 'name = "energy"', 2), "task[1].name")
    first = line_of(text, 'name = "energy"')
    assert f"task[0] at line {first}" in issue.message


PLC_BUS = """
[[bus]]
name = "plc1"
type = "plc"
port = "/dev/ttyS3"
max_in_flight = 4
"""


def test_plc_bus_takes_carrier_defaults(tmp_path: Path) -> None:
    text = VALID.replace("[[meter]]", PLC_BUS.lstrip() + "\n[[meter]]", 1).replace(
        'bus = "bus1"', 'bus = "plc1"'
    )
    config = load_config(write(tmp_path, text))
    plc = config.buses[2]
    assert (plc.type, plc.baud, plc.parity, plc.max_in_flight) == ("plc", 9600, "E", 4)
    assert (plc.response_timeout_ms, plc.monitor_timeout_ms, plc.retries) == (5000, 90_000, 6)
    settings = plc.plc_settings(time_scale=60)
    assert settings.monitor_timeout == 1.5 and settings.max_in_flight == 4
    assert config.meters[0].bus == "plc1"


def _plc_text(*extra: str) -> str:
    bus = PLC_BUS.lstrip() + "".join(f"{line}\n" for line in extra)
    return VALID.replace("[[meter]]", bus + "\n[[meter]]", 1).replace(
        'bus = "bus1"', 'bus = "plc1"'
    )


def test_plc_bus_master_address_and_mode(tmp_path: Path) -> None:
    """docs/protocols.md §3.1, §3.4: both learnt from the module unless configured."""
    plc = load_config(write(tmp_path, _plc_text())).buses[2]
    assert (plc.master_address, plc.comm_mode) == (None, None)
    settings = plc.plc_settings()
    assert (settings.master_address, settings.mode) == (None, None)
    text = _plc_text('master_address = "a1b2c3d4e5f6"', "comm_mode = 1")
    plc = load_config(write(tmp_path, text)).buses[2]
    assert (plc.master_address, plc.comm_mode) == ("A1B2C3D4E5F6", 1)
    settings = plc.plc_settings()
    assert (settings.master_address, settings.mode) == ("A1B2C3D4E5F6", 1)


@pytest.mark.parametrize(
    ("line", "field", "message"),
    [
        ('master_address = "12345"', "master_address", "12 hex digits"),
        ('master_address = "12345678901G"', "master_address", "12 hex digits"),
        ("master_address = 123456789012", "master_address", "expected a string"),
        ("comm_mode = 4", "comm_mode", "4 is not a communication mode"),
        ("comm_mode = 0", "comm_mode", "out of range 1..20"),
        ('comm_mode = "hplc"', "comm_mode", "expected an integer"),
    ],
)
def test_plc_bus_identity_keys_are_checked(
    tmp_path: Path, line: str, field: str, message: str
) -> None:
    text = _plc_text(line)
    issue = only_issue(write(tmp_path, text))
    assert (issue.line, issue.field) == (line_of(text, line), f"bus[2].{field}")
    assert message in issue.message


@pytest.mark.parametrize("line", ['master_address = "A1B2C3D4E5F6"', "comm_mode = 3"])
def test_carrier_identity_keys_on_an_rs485_bus_are_refused(tmp_path: Path, line: str) -> None:
    path, text = bad(tmp_path, "response_timeout_ms = 800", line)
    issue = only_issue(path)
    assert issue.line == line_of(text, line) and 'type = "plc"' in issue.message


def test_carrier_keys_on_an_rs485_bus_are_refused(tmp_path: Path) -> None:
    path, text = bad(tmp_path, "response_timeout_ms = 800", "max_in_flight = 2")
    issue = only_issue(path)
    assert (issue.line, issue.field) == (line_of(text, "max_in_flight"), "bus[0].max_in_flight")
    assert 'type = "plc"' in issue.message


def test_modbus_meter_on_a_plc_bus_is_refused(tmp_path: Path) -> None:
    text = VALID.replace("[[meter]]", PLC_BUS.lstrip() + "\n[[meter]]", 1).replace(
        'bus = "bus2"', 'bus = "plc1"'
    )
    issue = only_issue(write(tmp_path, text))
    assert issue.field == "meter[1].protocol" and "only DL/T 645" in issue.message


def test_unknown_bus_type_lists_the_known_ones(tmp_path: Path) -> None:
    path, _ = bad(tmp_path, 'type = "rs485"', 'type = "mbus"')
    assert '"rs485", "plc"' in only_issue(path).message


def test_cli_check_ok(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output == f"{path}: OK (2 buses, 2 meters, 2 tasks)\n"


def test_cli_check_lists_issues_and_exits_config(tmp_path: Path) -> None:
    path, text = bad(tmp_path, "baud = 9600", 'baud = "fast"')
    text = text.replace('every = "15m"', 'every = "7m"')
    write(tmp_path, text)
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == Exit.CONFIG
    assert int(Exit.CONFIG) == 7
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines == [
        f'{path}:{line_of(text, "fast")}: bus[1].baud: expected an integer, got string "fast"',
        f'{path}:{line_of(text, "7m")}: task[0].every: "7m" does not divide a day into equal slots',
    ]


def test_cli_check_json(tmp_path: Path) -> None:
    ok = CliRunner().invoke(main, ["config", "check", "--json", str(write(tmp_path, VALID))])
    assert ok.exit_code == 0
    assert json.loads(ok.output) == {"ok": True, "issues": []}
    path, text = bad(tmp_path, 'bus = "bus2"', 'bus = "bus9"')
    result = CliRunner().invoke(main, ["config", "check", "--json", str(path)])
    assert result.exit_code == Exit.CONFIG
    doc = json.loads(result.stdout)
    assert doc["ok"] is False
    assert doc["issues"] == [
        {
            "file": str(path),
            "line": line_of(text, "bus9"),
            "field": "meter[1].bus",
            "message": 'no [[bus]] is named "bus9" (buses: "bus1", "bus2")',
            "severity": "error",
        }
    ]


def test_cli_check_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["config", "check", str(tmp_path / "nope.toml")])
    assert result.exit_code == Exit.CONFIG
    assert "cannot read" in result.stderr


PLUS8 = dt.timezone(dt.timedelta(hours=8))


def local(y: int, mo: int, d: int, h: int, mi: int, s: int = 0) -> float:
    return dt.datetime(y, mo, d, h, mi, s, tzinfo=PLUS8).timestamp()


def test_15m_slots_align_to_local_quarter_hours() -> None:
    cadence = parse_cadence("15m")
    assert cadence.slot_start(local(2026, 3, 1, 10, 7, 59), PLUS8) == local(2026, 3, 1, 10, 0)
    assert cadence.slot_start(local(2026, 3, 1, 10, 15), PLUS8) == local(2026, 3, 1, 10, 15)
    assert cadence.slot_start(local(2026, 3, 1, 0, 44, 59) + 0.9, PLUS8) == local(2026, 3, 1, 0, 30)


def test_daily_slot_starts_at_its_local_time() -> None:
    cadence = parse_cadence("daily@00:05")
    assert (cadence.period_s, cadence.offset_s) == (86_400, 300)
    # 00:05 local is 16:05 UTC the day before: the slot must not be UTC-aligned
    assert cadence.slot_start(local(2026, 3, 1, 12, 0), PLUS8) == local(2026, 3, 1, 0, 5)
    assert cadence.slot_start(local(2026, 3, 1, 0, 4), PLUS8) == local(2026, 2, 28, 0, 5)
    assert cadence.slot_start(local(2026, 3, 1, 0, 5), PLUS8) == local(2026, 3, 1, 0, 5)


@pytest.mark.parametrize("text", ["7m", "0m", "daily@24:00", "15", "hourly", "1d"])
def test_bad_cadences(text: str) -> None:
    with pytest.raises(ValueError, match=text):
        parse_cadence(text)


def test_cli_check_names_a_bad_uplink_table(tmp_path: Path) -> None:
    path, _ = bad(tmp_path, "broker_port = 8883", 'broker_port = 8883\nbroker = "x"')
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == Exit.CONFIG
    assert "uplink: unknown key(s) broker" in result.output
    (tmp_path / "payload.key").write_text("abc")
    path.write_text(VALID)
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == Exit.CONFIG
    assert "payload.key: expected 64 hex digits" in result.output


# ---------------------------------------------------------------------- paths (issue 18)


def test_every_relative_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "data").mkdir()
    (site / "pki").mkdir()
    (site / "pki" / "payload.key").write_text("ab" * 32)
    for port in ("ttyS1", "ttyS2"):
        (site / port).touch()
    text = (
        VALID.replace('"/dev/ttyS1"', '"ttyS1"')
        .replace('"/dev/ttyS2"', '"ttyS2"')
        .replace('path = "readings.db"', 'path = "data/readings.db"')
        .replace('payload_key_file = "payload.key"', 'payload_key_file = "pki/payload.key"')
        .replace('timezone = "+08:00"', 'timezone = "+08:00"\ncontrol_socket = "ctl.sock"')
    )
    (site / "site.toml").write_text(text)
    # Read from another working directory, through a relative path to the file.
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        config = load_config(Path("site/site.toml"))
    assert config.storage.path == site / "data" / "readings.db"
    assert [b.port for b in config.buses] == [str(site / "ttyS1"), str(site / "ttyS2")]
    assert config.concentrator.control_socket == site / "ctl.sock"
    assert config.uplink is not None and config.uplink.payload_key_file == site / "pki/payload.key"
    assert all(p.is_absolute() for p in (config.storage.path, config.releases_dir))
    assert config.warnings == ()


def test_a_store_folder_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    path, text = bad(tmp_path, 'path = "readings.db"', 'path = "nowhere/readings.db"')
    issue = only_issue(path)
    assert (issue.line, issue.field) == (line_of(text, "nowhere"), "storage.path")
    assert f"the folder {tmp_path / 'nowhere'} does not exist" in issue.message
    path, _ = bad(tmp_path, 'path = "readings.db"', f'path = "{tmp_path}"')
    assert "is a folder" in only_issue(path).message


def test_a_serial_port_that_is_not_there_is_a_warning_not_an_error(tmp_path: Path) -> None:
    path, text = bad(tmp_path, 'port = "/dev/ttyS2"', 'port = "/dev/ttyUSB-not-plugged-in"')
    assert check_config(path) == []
    config = load_config(path)  # the daemon starts, and opens the port when it appears
    [warning] = config.warnings
    assert warning.severity == "warning"
    assert (warning.line, warning.field) == (line_of(text, "not-plugged-in"), "bus[1].port")
    assert "does not exist (yet)" in warning.message
    assert check_config(path, warnings=True) == [warning]
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{path}:{warning.line}: bus[1].port: warning: serial port" in result.stderr
    assert result.stdout.endswith("OK (2 buses, 2 meters, 2 tasks, 1 warning(s))\n")
    doc = json.loads(CliRunner().invoke(main, ["config", "check", "--json", str(path)]).stdout)
    assert doc["ok"] is True and [i["severity"] for i in doc["issues"]] == ["warning"]
    # A pyserial URL is not a device node: nothing to check on the file system.
    path, _ = bad(tmp_path, 'port = "/dev/ttyS2"', 'port = "socket://127.0.0.1:7000"')
    assert load_config(path).warnings == ()
    assert load_config(path).buses[1].port == "socket://127.0.0.1:7000"


def test_missing_key_files_are_errors_at_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)
    (tmp_path / "payload.key").unlink()
    issue = only_issue(path)
    assert (issue.line, issue.field) == (
        line_of(VALID, "payload_key_file"),
        "uplink.payload_key_file",
    )
    assert f"{tmp_path / 'payload.key'} does not exist" in issue.message


@pytest.mark.skipif(os.geteuid() != 0 and shutil.which("setpriv") is None, reason="needs a user")
def test_stats_does_not_need_the_uplink_keys(tmp_path: Path) -> None:
    # Issue 18: `concentrator stats` failed when the running user could not read
    # payload.key. Run as a user who cannot (root reads any file: run it as nobody).
    site = Path(tempfile.mkdtemp(prefix="mf-stats-", dir="/tmp"))
    try:
        site.chmod(0o777)  # the store is theirs to use; only the key is not
        path = write(site, VALID)
        with Store.open(site / "readings.db"):
            pass
        (site / "readings.db").chmod(0o666)
        key = site / "payload.key"
        key.chmod(0o600)
        as_other = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        if os.geteuid() != 0:
            key.chmod(0)
            as_other = []
        command = [*as_other, *cli_command("concentrator")]
        env = {**env_without_color(), "HOME": "/"}
        stats = subprocess.run(
            [*command, "stats", "--config", str(path), "--json"],
            capture_output=True, text=True, timeout=120, env=env, cwd="/",
        )  # fmt: skip
        assert stats.returncode == 0, stats.stderr
        assert "backlog" in json.loads(stats.stdout)
        # The check still reads the keys, as `run` does: this user cannot.
        check = subprocess.run(
            [*command, "config", "check", str(path)],
            capture_output=True, text=True, timeout=120, env=env, cwd="/",
        )  # fmt: skip
        assert check.returncode == Exit.CONFIG
        assert "uplink.payload_key_file" in check.stderr and "Permission denied" in check.stderr
    finally:
        shutil.rmtree(site, ignore_errors=True)
