"""The files in ``examples/`` are what a utility copies onto its machines: they must
stay valid as the configuration rules change, so CI checks them with the real tools."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

from helpers import receiver_cli, run_cli

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "examples" / "concentrator" / "site.toml"
RECEIVER_ENV = ROOT / "examples" / "receiver" / "receiver.env"
RECEIVER_UNIT = ROOT / "systemd" / "meterflow-receiver.service"


def test_the_example_site_config_passes_config_check_once_installed(tmp_path: Path) -> None:
    """Installed as the README says: the file in /etc/meterflow, the provisioned PKI
    beside it, the store's folder made by systemd-tmpfiles. Here those folders live
    under tmp_path; the only findings left are the serial ports this machine lacks."""
    etc, var, pki = tmp_path / "etc", tmp_path / "var", tmp_path / "pki"
    var.mkdir()
    etc.mkdir()
    done = receiver_cli(
        "provision", "dc-0001", "--pki-dir", str(pki), "--broker-host",
        "mqtt.utility.example", "--broker-port", "8883",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shutil.copytree(pki / "concentrators" / "dc-0001", etc / "pki")
    text = SITE.read_text().replace("/var/lib/meterflow", str(var))
    cfg = etc / "concentrator.toml"
    cfg.write_text(text)

    checked = run_cli("config", "check", str(cfg))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith(f"{cfg}: OK (2 buses, 5 meters, 4 tasks")
    findings = [line for line in checked.stderr.splitlines() if line.strip()]
    assert findings, "the example names serial ports this machine does not have"
    for line in findings:
        assert re.search(r": (bus\[\d\]|modem)\.port: warning: serial port /dev/tty", line), line


def test_the_example_site_config_is_refused_for_what_it_lacks_uninstalled() -> None:
    """Uninstalled (no PKI, no store folder), the same file names exactly what is
    missing: the check looks at the file system, not only at the syntax."""
    checked = run_cli("config", "check", str(SITE))
    assert checked.returncode == 7
    assert "storage.path" in checked.stderr and "uplink.payload_key_file" in checked.stderr


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"MF_[A-Z_]+", name), f"{path}:{n}: not VARIABLE=value"
        out[name] = value
    return out


def test_the_example_receiver_env_matches_the_systemd_unit() -> None:
    env = _env_file(RECEIVER_ENV)
    unit = RECEIVER_UNIT.read_text()
    assert "EnvironmentFile=-/etc/meterflow/receiver.env" in unit
    defaults = set(re.findall(r"^Environment=(MF_[A-Z_]+)=", unit, re.M))
    # Every variable the unit reads is set in the example, and nothing the unit ignores.
    assert set(env) == defaults
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    for name in env:
        assert "${" + name + "}" in exec_start or "$" + name in exec_start, name
    # The further run options are options `cloud-receiver run` really takes.
    helped = receiver_cli("run", "--help")
    assert helped.returncode == 0, helped.stderr
    for word in shlex.split(env["MF_RUN_OPTIONS"]):
        if word.startswith("--"):
            assert word in helped.stdout, word
