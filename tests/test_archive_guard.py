"""The concentrator's side of meter ownership (issue 19, item 1): the archive command's
rules, the ``commissioning`` config key, and which configured meters the archive lets
the daemon poll — kept in the real store across a restart, an older archive refused,
commissioning from the file or the control command's word. End to end (receiver →
signed command → polling follows): tests/test_ownership_e2e.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from concentrator.config import Config, check_config, load_config
from concentrator.polling.archive_guard import ArchiveGuard
from concentrator.storage import Store, StoreWriter
from contract import commands as c

M1, M2, M3 = "000000000001", "000000000002", "000000000003"
NOW = 1_800_000_000.0
KEY = c.new_key()


def _config(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "c.toml"
    meters = "".join(
        f'[[meter]]\naddress = "{m}"\nprotocol = "dlt645"\nbus = "b1"\n' for m in (M1, M2, M3)
    )  # fmt: skip
    cfg.write_text(
        f'[concentrator]\nid = "dc"\n{extra}\n[storage]\npath = "s.db"\n\n'
        f'[[bus]]\nname = "b1"\ntype = "rs485"\nport = "/dev/null"\nbaud = 2400\nparity = "E"\n\n'
        f"{meters}"
    )
    return cfg


def archive_command(**params: object) -> c.Command:
    return c.Command(
        "cmd-a", "dc", 7, "archive", (), NOW - 10, NOW + 600, NOW - 10,
        params={"version": 3, "meters": [M1, M2], **params},
    )  # fmt: skip


# ------------------------------------------------------------------ the command
def test_an_archive_command_carries_its_list_signed() -> None:
    cmd = archive_command()
    assert c.open_signed(c.sign(cmd, KEY), KEY.public_key()) == cmd
    assert c.open_signed(c.sign(archive_command(meters=[]), KEY), KEY.public_key()).params == {
        "version": 3, "meters": []
    }  # fmt: skip


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"version": 0}, "params.version, a positive integer"),
        ({"version": "3"}, "params.version, a positive integer"),
        ({"version": True}, "params.version, a positive integer"),
        ({"meters": "000000000001"}, "params.meters, the list"),
        ({"meters": [M1, "12 4"]}, r"params.meters\[1\] '12 4'"),
        ({"meters": [M1, 5]}, r"params.meters\[1\] 5"),
        ({"meters": [M1, M1]}, "lists a meter twice"),
        ({"meters": [f"{i:012d}" for i in range(2049)]}, "at most 2048"),
    ],
)
def test_a_malformed_archive_is_refused_naming_the_field(
    params: dict[str, object], message: str
) -> None:
    with pytest.raises(c.CommandError, match=message):
        c.sign(archive_command(**params), KEY)


@given(st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=14), max_size=4))
def test_any_archive_params_are_checked_never_crash(params: dict[str, object]) -> None:
    with contextlib.suppress(c.CommandError):
        c.check_archive(params)


# ------------------------------------------------------------------ the config key
def test_commissioning_is_off_unless_the_config_says(tmp_path: Path) -> None:
    assert load_config(_config(tmp_path)).concentrator.commissioning is False
    assert load_config(_config(tmp_path, "commissioning = true")).concentrator.commissioning
    [issue] = check_config(_config(tmp_path, 'commissioning = "yes"'))
    assert (issue.line, issue.field) == (3, "concentrator.commissioning")
    assert "true or false" in issue.message


# ------------------------------------------------------------------ the guard
@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[StoreWriter]:
    with Store.open(tmp_path / "s.db") as store:
        w = StoreWriter(store, retry_s=0.01, gather_s=0.0, now=lambda: NOW)
        task = asyncio.create_task(w.run())
        try:
            yield w
        finally:
            task.cancel()
            w.close()


def _loaded(tmp_path: Path, extra: str = "") -> Config:
    return load_config(_config(tmp_path, extra))


async def test_the_archive_decides_what_is_polled_and_outlives_a_restart(
    tmp_path: Path, writer: StoreWriter
) -> None:
    cfg = _loaded(tmp_path)
    guard = ArchiveGuard(writer)
    await guard.load(cfg)
    assert guard.refused(cfg) == []  # no archive yet: every configured meter is polled
    applied = await guard.apply(3, [M1, M2, "000000000009"], "cmd-a", NOW, cfg)
    assert applied == {"version": 3, "meters": 3, "not_configured": ["000000000009"],
                       "not_in_archive": [M3]}  # fmt: skip
    assert guard.refused(cfg) == [M3] and not guard.allows(M3) and guard.allows(M1)
    with pytest.raises(ValueError, match="archive version 2 is older than the one in force"):
        await guard.apply(2, [M3], "cmd-b", NOW, cfg)
    await guard.apply(3, [M1, M2, M3], "cmd-c", NOW, cfg)  # the same version again: kept
    await guard.apply(4, [M1], "cmd-d", NOW, cfg)
    restarted = ArchiveGuard(writer)
    await restarted.load(cfg)
    assert restarted.refused(cfg) == [M2, M3]
    assert restarted.status(cfg) == {
        "commissioning": False, "commissioning_source": "config", "archive_version": 4,
        "archive_meters": 1, "archive_applied_at": NOW, "refused": [M2, M3],
    }  # fmt: skip


async def test_commissioning_from_the_file_or_the_command(
    tmp_path: Path, writer: StoreWriter
) -> None:
    on_in_file = _loaded(tmp_path, "commissioning = true")
    guard = ArchiveGuard(writer)
    await guard.load(on_in_file)
    await guard.apply(1, [M1], "cmd-a", NOW, on_in_file)
    assert guard.commissioning and guard.refused(on_in_file) == []
    await guard.set_word("off")  # the command's word overrides the file ...
    assert guard.refused(on_in_file) == [M2, M3]
    restarted = ArchiveGuard(writer)
    await restarted.load(on_in_file)  # ... across a restart
    assert not restarted.commissioning and restarted.status(on_in_file)["commissioning_source"] == (
        "command"
    )
    await restarted.set_word("config")  # back to what the file says
    assert restarted.commissioning and restarted.refused(on_in_file) == []
    await restarted.set_word("on")
    off_in_file = _loaded(tmp_path)
    await restarted.load(off_in_file)
    assert restarted.commissioning  # the word "on" still holds
