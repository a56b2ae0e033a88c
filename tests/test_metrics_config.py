"""The ``[metrics]`` table: off when absent, checked by the one checker with its lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from test_config import VALID, line_of, only_issue, write

from concentrator.cli import main
from concentrator.cli.exitcodes import Exit
from concentrator.config import MetricsConfig, check_config, load_config


def test_metrics_are_off_without_the_table(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, VALID)).metrics is None


def test_metrics_table_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID + "\n[metrics]\nport = 9469\n"))
    assert config.metrics == MetricsConfig(port=9469, address="127.0.0.1")


def test_metrics_on_every_interface(tmp_path: Path) -> None:
    text = VALID + '\n[metrics]\naddress = "0.0.0.0"\nport = 9469\n'
    assert load_config(write(tmp_path, text)).metrics == MetricsConfig(9469, "0.0.0.0")
    text = VALID + '\n[metrics]\naddress = "::1"\nport = 9469\n'
    assert load_config(write(tmp_path, text)).metrics == MetricsConfig(9469, "::1")


@pytest.mark.parametrize(
    ("table", "needle", "field", "message"),
    [
        ("port = 0", "port = 0", "metrics.port", "0 is out of range 1..65535"),
        ("port = 70000", "port = 70000", "metrics.port", "70000 is out of range 1..65535"),
        ('port = "9469"', "port =", "metrics.port", 'expected an integer, got string "9469"'),
        ("port = 9469.5", "port =", "metrics.port", "expected an integer, got float 9469.5"),
        (
            'address = "eth0"\nport = 9469',
            "address",
            "metrics.address",
            '"eth0" is not an IP address; expected e.g. "127.0.0.1"',
        ),
        (
            'address = "localhost"\nport = 9469',
            "address",
            "metrics.address",
            '"localhost" is not an IP address',
        ),
        ("address = 127\nport = 9469", "address", "metrics.address", "expected a string"),
        (
            "port = 9469\nlisten = 1",
            "listen",
            "metrics",
            "unknown key(s) listen; expected some of address, port",
        ),
    ],
)
def test_bad_metrics_table(
    tmp_path: Path, table: str, needle: str, field: str, message: str
) -> None:
    text = VALID + f"\n[metrics]\n{table}\n"
    issue = only_issue(write(tmp_path, text))
    assert (issue.line, issue.field) == (_in_metrics(text, needle), field)
    assert message in issue.message


def _in_metrics(text: str, needle: str) -> int:
    """The line of ``needle`` in the [metrics] table (at the end of ``text``)."""
    start = line_of(text, "[metrics]")
    return start + line_of("\n".join(text.splitlines()[start:]), needle)


def test_empty_metrics_table_asks_for_the_port(tmp_path: Path) -> None:
    """``[metrics]`` written but empty is a mistake to report, not metrics silently off."""
    text = VALID + "\n[metrics]\n"
    issue = only_issue(write(tmp_path, text))
    assert (issue.line, issue.field) == (line_of(text, "[metrics]"), "metrics.port")
    assert issue.message == "required key is missing"


def test_metrics_not_a_table(tmp_path: Path) -> None:
    text = VALID.replace("[concentrator]", "metrics = 9469\n\n[concentrator]")
    issue = only_issue(write(tmp_path, text))
    assert (issue.line, issue.field) == (1, "metrics")
    assert issue.message == "expected a table [metrics], got integer"


def test_cli_check_reports_the_metrics_table_with_file_and_line(tmp_path: Path) -> None:
    text = VALID + '\n[metrics]\naddress = "10.0.0.300"\nport = 99999\n'
    path = write(tmp_path, text)
    assert len(check_config(path)) == 2
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exit_code == Exit.CONFIG
    assert result.stderr.splitlines() == [
        f"{path}:{line_of(text, '10.0.0.300')}: metrics.address: "
        '"10.0.0.300" is not an IP address; expected e.g. "127.0.0.1" (this machine only), '
        '"0.0.0.0" (every interface) or "::1"',
        f"{path}:{line_of(text, '99999')}: metrics.port: 99999 is out of range 1..65535",
    ]
