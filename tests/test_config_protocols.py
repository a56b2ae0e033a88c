"""The config's DL/T 698.45 and DL/T 645-1997 meters: accepted beside DL/T 645-2007 on one
bus, their quantities checked per protocol with FILE:LINE errors (real TOML files)."""

from __future__ import annotations

from pathlib import Path

from concentrator.config import check_config, load_config

MIXED = """\
[concentrator]
id = "dc-0001"

[storage]
path = "readings.db"

[[bus]]
name = "bus1"
type = "rs485"
port = "/dev/ttyS1"
baud = 2400
parity = "E"

[[bus]]
name = "plc1"
type = "plc"
port = "/dev/ttyS3"
baud = 9600
parity = "E"

[[meter]]
address = "000000000001"
protocol = "dlt645"
bus = "bus1"

[[meter]]
address = "000000000002"
protocol = "dlt698"
bus = "bus1"

[[meter]]
address = "000000000003"
protocol = "dlt645-1997"
bus = "bus1"

[[task]]
name = "energy"
quantities = ["energy_fwd_total", "voltage_a", "current_a", "power_total"]
every = "15m"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_mixed_bus_is_accepted_with_shared_quantity_names(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, MIXED))
    assert [m.protocol for m in config.meters] == ["dlt645", "dlt698", "dlt645-1997"]


def test_a_quantity_one_protocol_lacks_is_named_with_its_line(tmp_path: Path) -> None:
    text = MIXED.replace('"power_total"]', '"power_total", "frequency", "clock"]')
    path = _write(tmp_path, text)
    issues = check_config(path)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.startswith("quantities"))
    messages = sorted(i.message.split(";")[0] for i in issues)
    assert {(i.line, i.field) for i in issues} == {(line, "task[0].quantities")}
    # frequency: 645-1997 has none; clock: no meter's clock is a canonical quantity
    # (645's are meter_date and meter_time, docs/quantities.md).
    assert messages == [
        'unknown quantity "clock" for DL/T 645 meters (e.g. meter[0] at line 21, 1 meter(s))',
        'unknown quantity "clock" for DL/T 645-1997 meters (e.g. meter[2] at line 31, 1 meter(s))',
        'unknown quantity "clock" for DL/T 698.45 meters (e.g. meter[1] at line 26, 1 meter(s))',
        'unknown quantity "frequency" for DL/T 645-1997 meters (e.g. meter[2] at line 31, '
        "1 meter(s))",
    ]
    # Each lists the names that protocol's meters can be read for.
    assert all("expected one of: energy_" in i.message for i in issues)


def test_unknown_protocol_lists_the_four(tmp_path: Path) -> None:
    path = _write(tmp_path, MIXED.replace('"dlt645-1997"', '"dlt645-2007"'))
    [issue] = check_config(path)
    assert issue.field == "meter[2].protocol" and issue.line == 33
    for name in ("dlt645", "dlt645-1997", "dlt698", "modbus"):
        assert name in issue.message


def test_dlt698_address_is_checked_and_unique_across_protocols(tmp_path: Path) -> None:
    text = MIXED.replace('address = "000000000002"', 'address = "2"')
    [issue] = check_config(_write(tmp_path, text))
    assert issue.field == "meter[1].address"
    assert "expected 12 digits" in issue.message
    text = MIXED.replace('address = "000000000003"', 'address = "000000000002"')
    [issue] = check_config(_write(tmp_path, text))
    assert issue.field == "meter[2].address"
    assert 'duplicate address "000000000002" on bus "bus1"' in issue.message


def test_carrier_bus_takes_dlt_meters_not_modbus(tmp_path: Path) -> None:
    text = MIXED.replace('protocol = "dlt698"\nbus = "bus1"', 'protocol = "dlt698"\nbus = "plc1"')
    assert load_config(_write(tmp_path, text)).meters[1].bus == "plc1"
    text = MIXED.replace('protocol = "dlt698"\nbus = "bus1"', 'protocol = "modbus"\nbus = "plc1"')
    text = text.replace('address = "000000000002"', 'address = "2"')
    [issue] = check_config(_write(tmp_path, text))
    assert issue.field == "meter[1].protocol"
    assert "carrier (PLC) bus: only DL/T 645 and DL/T 698.45 meters" in issue.message
