"""The store writer: what it commits, and in which order (a state such as "slot S
started" never reaches the disk ahead of the records queued before it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from concentrator.storage import Store, StoreFullError, StoreWriter


async def test_a_state_is_committed_only_after_the_records_queued_before_it(
    tmp_path: Path,
) -> None:
    with Store.open(tmp_path / "s.db") as store:
        order: list[str] = []
        full = {"left": 3}  # the disk is full for the first three missing records
        record_missing, set_state = store.record_missing_many, store.set_state

        def missing(rows: list[tuple[str, str, int, str]]) -> int:
            if full["left"]:
                full["left"] -= 1
                raise StoreFullError("database or disk is full")
            order.extend(f"missing {slot}" for _, _, slot, _ in rows)
            return record_missing(rows)

        def state(key: str, value: str) -> None:
            order.append(f"state {value}")
            set_state(key, value)

        store.record_missing_many = missing  # type: ignore[method-assign]
        store.set_state = state  # type: ignore[method-assign]
        writer = StoreWriter(store, retry_s=0.01, gather_s=0.0, now=lambda: 0.0)
        task = asyncio.create_task(writer.run())
        try:
            writer.missing("000000000001", "energy_fwd_total", 900, "no poll in this slot")
            writer.missing("000000000001", "energy_fwd_total", 1800, "no poll in this slot")
            writer.set_state("task:t:last_slot", "2700")
            async with asyncio.timeout(30):
                await writer.flush()
            while writer.disk_full or order[-1:] != ["state 2700"]:
                async with asyncio.timeout(30):
                    await writer.flush()
        finally:
            task.cancel()
            writer.close()
        assert order == ["missing 900", "missing 1800", "state 2700"]
        assert store.get_state("task:t:last_slot") == "2700"
        assert len(store.missing()) == 2
