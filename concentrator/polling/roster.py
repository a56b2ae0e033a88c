"""Meters the utility added or removed by signed command, laid over the config file.

The file is the site's record and a field engineer's to edit; a command may add a
DL/T 645 meter to a bus or remove one without a site visit. Those changes are kept in
the store (state ``commands:meters``: ``{"added": [{...}], "removed": [...]}``) and laid
over the file at every start and reload; where the file now says otherwise (the meter
is in it, or its bus is gone), the file wins.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from concentrator.config import Config, MeterConfig
from concentrator.storage import StoreWriter

REMOTE_METERS_KEY = "commands:meters"


class Roster:
    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer

    async def _doc(self) -> dict[str, Any]:
        saved = await self.writer.read_state(REMOTE_METERS_KEY)
        doc: dict[str, Any] = json.loads(saved) if saved else {"added": [], "removed": []}
        return doc

    async def overlay(self, config: Config) -> Config:
        """``config`` with the meters commands added or removed."""
        doc = await self._doc()
        removed = set(doc["removed"])
        meters = [m for m in config.meters if m.address not in removed]
        known = {m.address for m in meters}
        buses = {b.name for b in config.buses}
        for spec in doc["added"]:
            if spec["address"] in known or spec["bus"] not in buses:
                continue  # the config file has it now, or lost its bus: the file wins
            meters.append(MeterConfig(spec["address"], "dlt645", spec["bus"], spec["group"],
                                      spec.get("area")))  # fmt: skip
        return replace(config, meters=tuple(meters))

    async def add(
        self, config: Config, address: str, bus: str, group: str, area: str | None
    ) -> None:
        """Keep a new DL/T 645 meter on ``bus``; ValueError with the reason if it cannot be."""
        if any(m.address == address for m in config.meters):
            raise ValueError(f"meter {address} is already configured")
        bus_cfg = next((b for b in config.buses if b.name == bus), None)
        if bus_cfg is None:
            names = ", ".join(b.name for b in config.buses)
            raise ValueError(f"no bus named {bus!r} (buses: {names})")
        doc = await self._doc()
        doc["removed"] = [a for a in doc["removed"] if a != address]
        doc["added"] = [a for a in doc["added"] if a["address"] != address]
        doc["added"].append({"address": address, "bus": bus, "group": group, "area": area})
        await self.writer.write_state(REMOTE_METERS_KEY, json.dumps(doc))

    async def remove(self, config: Config, address: str) -> None:
        """Keep ``address`` out of the configuration; ValueError if it is not in it."""
        if not any(m.address == address for m in config.meters):
            raise ValueError(f"meter {address} is not configured")
        doc = await self._doc()
        doc["added"] = [a for a in doc["added"] if a["address"] != address]
        if address not in doc["removed"]:
            doc["removed"].append(address)
        await self.writer.write_state(REMOTE_METERS_KEY, json.dumps(doc))
