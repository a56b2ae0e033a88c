"""The systemd units: they verify for real, carry the hardening, and call real flags.

``systemd-analyze verify`` refuses a unit whose ExecStart binary does not exist, and
/opt/meterflow is not installed here: the test verifies a copy whose ExecStart points
at this virtualenv's console scripts, the same entry points an installation has.
``verify`` exits 0 on unknown keys and bad values (it only warns), so any warning
about our units fails the test too.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parents[1] / "systemd"
UNITS = (
    "meterflow-concentrator.service",
    "meterflow-receiver.service",
    "meterflow-web.service",
)
INSTALL_BIN = "/opt/meterflow/current/bin"
VENV_BIN = Path(sys.executable).parent
ANALYZE = shutil.which("systemd-analyze")
SYSUSERS = shutil.which("systemd-sysusers")
TMPFILES = shutil.which("systemd-tmpfiles")
MAX_EXPOSURE = 2.5  # `systemd-analyze security`: 0 = locked down, 10 = exposed

needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")

Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """Sections → key → every value in order (DeviceAllow= and friends repeat)."""
    unit: Unit = {}
    section: dict[str, list[str]] = {}
    pending = ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=value: {line!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def one(unit: Unit, key: str, section: str = "Service") -> str:
    values = unit[section].get(key)
    assert values, f"{key}= missing from [{section}]"
    return values[-1]


# ---------------------------------------------------------------------- contents
COMMON_HARDENING = {
    "User": "meterflow",
    "Group": "meterflow",
    "Restart": "always",
    "StateDirectory": "meterflow",
    "ReadWritePaths": "/var/lib/meterflow",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    "CapabilityBoundingSet": "",
    "DevicePolicy": "closed",
}


@pytest.mark.parametrize("name", UNITS)
def test_units_are_hardened(name: str) -> None:
    unit = parse_unit(SYSTEMD_DIR / name)
    for key, value in COMMON_HARDENING.items():
        assert one(unit, key) == value, f"{name}: {key}"
    assert "@system-service" in unit["Service"]["SystemCallFilter"]
    assert float(one(unit, "RestartSec")) > 0
    assert one(unit, "WantedBy", "Install") == "multi-user.target"


def test_concentrator_unit_notifies_and_reaches_serial_ports_only() -> None:
    unit = parse_unit(SYSTEMD_DIR / "meterflow-concentrator.service")
    # The daemon, a child of the guard, sends READY=1 and the watchdog pings.
    assert one(unit, "Type") == "notify" and one(unit, "NotifyAccess") == "all"
    assert int(one(unit, "WatchdogSec")) > 0
    assert one(unit, "ExecStart") == (
        f"{INSTALL_BIN}/concentrator supervise --config /etc/meterflow/concentrator.toml"
        " --releases /var/lib/meterflow/releases --log-format json"
    )
    assert one(unit, "RuntimeDirectory") == "meterflow"  # the control socket's home
    assert one(unit, "SupplementaryGroups") == "dialout"
    assert unit["Service"]["DeviceAllow"] == ["char-ttyS rw", "char-ttyUSB rw", "char-ttyACM rw"]
    # PrivateDevices= would hide /dev/ttyS*, /dev/ttyUSB* from the daemon.
    assert "PrivateDevices" not in unit["Service"]
    # The daemon's shutdown flush (FLUSH_TIMEOUT_S) must fit before systemd's SIGKILL.
    from concentrator.daemon import FLUSH_TIMEOUT_S

    assert int(one(unit, "TimeoutStopSec")) > FLUSH_TIMEOUT_S


@pytest.mark.parametrize("name", UNITS[1:])
def test_receiver_units_are_simple_and_have_no_devices(name: str) -> None:
    unit = parse_unit(SYSTEMD_DIR / name)
    # cloud-receiver does not send READY=1: Type=notify would time out at start.
    assert one(unit, "Type") == "simple" and "WatchdogSec" not in unit["Service"]
    assert one(unit, "PrivateDevices") == "yes" and "DeviceAllow" not in unit["Service"]
    verb = "web" if "web" in name else "run"
    assert one(unit, "ExecStart").startswith(f"{INSTALL_BIN}/cloud-receiver {verb} ")


@pytest.mark.parametrize(
    ("name", "script", "verb"),
    [(UNITS[0], "concentrator", "supervise"), (UNITS[1], "cloud-receiver", "run"),
     (UNITS[2], "cloud-receiver", "web")],
)  # fmt: skip
def test_exec_start_uses_flags_the_cli_has(name: str, script: str, verb: str) -> None:
    argv = shlex.split(one(parse_unit(SYSTEMD_DIR / name), "ExecStart"))
    assert argv[0] == f"{INSTALL_BIN}/{script}" and argv[1] == verb
    flags = [a for a in argv[2:] if a.startswith("--")]
    assert flags
    offered: set[str] = set()
    # The guard passes flags it does not know on to `run`; `web` is a command of its own.
    for sub in {verb, "run"} if verb != "web" else {verb}:
        help_text = subprocess.run(
            [str(VENV_BIN / script), sub, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        offered |= set(re.findall(r"(--[a-z][a-z0-9-]*)", help_text))
    assert set(flags) <= offered, f"{name}: {set(flags) - offered} not in `{script} run --help`"
    required = {
        "supervise": {"--config"},
        "run": {"--broker", "--pki-dir", "--db"},
        "web": {"--db", "--secret-key", "--tls-cert", "--tls-key"},
    }
    assert required[verb] <= set(flags)


# ---------------------------------------------------------------------- systemd's own checks
def installed_copy(tmp_path: Path) -> list[Path]:
    """The units with ExecStart= pointing at this virtualenv's console scripts."""
    copies = []
    for name in UNITS:
        text = (SYSTEMD_DIR / name).read_text()
        assert INSTALL_BIN in text
        copy = tmp_path / name
        copy.write_text(text.replace(INSTALL_BIN, str(VENV_BIN)))
        copies.append(copy)
    for script in ("concentrator", "cloud-receiver"):
        assert os.access(VENV_BIN / script, os.X_OK), f"{VENV_BIN / script} is not installed"
    return copies


@needs_analyze
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    assert ANALYZE is not None
    units = installed_copy(tmp_path)
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    ours = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if "meterflow" in line or str(tmp_path) in line
    ]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr


@needs_analyze
def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    # The test above can fail: a misspelt key and a missing binary are reported.
    assert ANALYZE is not None
    broken = tmp_path / "meterflow-broken.service"
    broken.write_text(
        "[Service]\nProtectSytem=strict\nExecStart=/opt/meterflow/current/bin/concentrator run\n"
    )
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(broken)], capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    assert "Unknown key 'ProtectSytem'" in output
    assert "is not executable" in output and result.returncode != 0


@needs_analyze
@pytest.mark.parametrize("name", UNITS)
def test_security_exposure_is_low(tmp_path: Path, name: str) -> None:
    assert ANALYZE is not None
    unit = next(u for u in installed_copy(tmp_path) if u.name == name)
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    exposure = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert exposure is not None, result.stdout + result.stderr
    assert result.returncode == 0 and float(exposure.group(1)) <= MAX_EXPOSURE, result.stdout


@pytest.mark.skipif(
    SYSUSERS is None or TMPFILES is None, reason="systemd-sysusers/-tmpfiles absent"
)
def test_sysusers_and_tmpfiles_create_user_and_config_dirs(tmp_path: Path) -> None:
    assert SYSUSERS is not None and TMPFILES is not None
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    subprocess.run(
        [SYSUSERS, f"--root={root}", str(SYSTEMD_DIR / "meterflow.sysusers.conf")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    passwd = {
        line.split(":")[0]: line.split(":")
        for line in (root / "etc/passwd").read_text().splitlines()
    }
    user = passwd["meterflow"]
    assert user[5] == "/var/lib/meterflow" and user[6] == "/usr/sbin/nologin"
    groups = {
        line.split(":")[0]: int(line.split(":")[2])
        for line in (root / "etc/group").read_text().splitlines()
    }
    gid = groups["meterflow"]
    assert int(user[3]) == gid
    subprocess.run(
        [TMPFILES, f"--root={root}", "--create", str(SYSTEMD_DIR / "meterflow.tmpfiles.conf")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    for sub in ("etc/meterflow", "etc/meterflow/pki"):
        st = (root / sub).stat()
        # The group comes from the root's /etc/group, not from this host's.
        assert stat.S_IMODE(st.st_mode) == 0o750 and st.st_uid == 0 and st.st_gid == gid, sub
