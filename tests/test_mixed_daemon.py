"""The daemon in process on a mixed DL/T bus (645-2007, 698.45, 645-1997 meters): time
sync reaches every meter, each in its own protocol."""

from __future__ import annotations

from pathlib import Path

from test_control_cli import in_process, until

MIX = ("dlt645", "dlt698", "dlt645-1997")


async def test_time_sync_sets_the_clock_of_every_protocols_meters(tmp_path: Path) -> None:
    # The concentrator's clock is an hour ahead of the meters (which drift by up to 20 s).
    async with in_process(tmp_path, meters=3, clock_ahead_s=3600.0, protocols=MIX) as rig:
        assert [type(m).__name__ for m in rig.meters] == [
            "Dlt645Meter", "Dlt698Meter", "Dlt6451997Meter",
        ]  # fmt: skip
        assert all(abs(m.model.clock_offset) < 60 for m in rig.meters)
        result = await rig.call("time-sync")
        assert [(b["bus"], b["meters"], b["result"]) for b in result["buses"]] == [
            ("bus1", 3, "ok")
        ]
        # 0x08 for both 645 editions, ACTION 4000 method 127 for the 698.45 meter.
        await until(lambda: all(abs(m.model.clock_offset - 3600) < 120 for m in rig.meters), 30)
