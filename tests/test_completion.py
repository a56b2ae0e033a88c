"""Tab completion, as `make setup` installs it: the venv's activate script sources
click's completion functions, and they complete our commands and options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)


@pytest.fixture(scope="module")
def activate() -> Path:
    done = subprocess.run(
        ["make", "-s", "completion", f"VENV={VENV}"], cwd=ROOT, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return VENV / "bin" / "activate"


def _complete(activate: Path, *words: str) -> list[str]:
    """What bash offers after ``words`` (the last one being completed)."""
    cmd = words[0].replace("-", "_")
    script = (
        f'. "{activate}"\n'
        f"COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}\n"
        f"_{cmd}_completion {words[0]}\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [w for w in done.stdout.splitlines() if w]


def test_activate_twice_does_not_source_twice(activate: Path) -> None:
    again = subprocess.run(
        ["make", "-s", "completion", f"VENV={VENV}"], cwd=ROOT, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert activate.read_text().count("meterflow-completion") == 1


def test_commands_complete(activate: Path) -> None:
    assert _complete(activate, "concentrator", "con") == ["config"]
    assert "readings" in _complete(activate, "cloud-receiver", "rea")
    assert set(_complete(activate, "hil-sim", "")) >= {"bus", "fleet", "plc", "modem"}


def test_options_and_choices_complete(activate: Path) -> None:
    assert "--protocol" in _complete(activate, "concentrator", "read", "--pro")
    assert _complete(activate, "hil-sim", "bus", "--protocol", "mod") == ["modbus"]
