"""A deliberately broken concentrator, for showing that the chaos suite catches it.

It retires a batch from the outbox when the *broker's* PUBACK arrives instead of the
receiver's ack after its commit. Everything else is the real concentrator CLI. A batch
the broker accepted but lost (a broker crash before it saved its queue while the
receiver was away) is then never sent again: readings go missing.

    python tests/broken_concentrator.py run --config FILE ...
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import paho.mqtt.client as mqtt

from concentrator.cli import main
from concentrator.uplink import mqtt as uplink

_make_client = uplink.Uplink._make_client


def _publish(self: uplink.Uplink, entry: uplink.InFlight) -> None:
    info = self._client.publish(self.up_topic, entry.payload, qos=1)
    if info.rc != mqtt.MQTT_ERR_SUCCESS:
        return
    entry.sent_at = time.monotonic()
    self.stats.batches_sent += 1
    mids: dict[int, int] = self.__dict__.setdefault("_mids", {})
    mids[info.mid] = entry.batch_id


async def _retire(self: uplink.Uplink, batch_id: int) -> None:
    await self.writer.call(self.store.mark_delivered, batch_id)
    self.in_flight.pop(batch_id, None)


def _make_broken_client(self: uplink.Uplink) -> mqtt.Client:
    client = _make_client(self)

    def on_publish(c: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        batch_id = self.__dict__.get("_mids", {}).pop(mid, None)
        if batch_id is not None:  # THE BUG: the broker has it, not the receiver
            self._call(lambda: asyncio.ensure_future(_retire(self, batch_id)))

    client.on_publish = on_publish
    return client


uplink.Uplink._publish = _publish  # type: ignore[method-assign]
uplink.Uplink._make_client = _make_broken_client  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
