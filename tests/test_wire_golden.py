"""The bytes of a fixed content, per body version: a sender's encoding may never change
for a version receivers already read (version 2 is frozen: concentrators not upgraded
yet still send it, and old receivers still read what an upgraded one pinned to it
sends). A refactoring of the encoders keeps these digests; a new encoding is a new
version. The content covers every column: several meters, quantities and units,
series of several slots with a gap, mixed decimals, a value only its text restores,
sources other than "poll", read times off the slot, events, and (version 3)
references."""

from __future__ import annotations

import hashlib

from contract.records import Event, Reading
from contract.wire import BatchContent, body_v2
from contract.wire import body as body_v3
from contract.wire.body_decode import decode_body
from contract.wire.references import Reference

T0 = 1_750_032_000


def _content() -> BatchContent:
    readings: list[Reading] = []
    for m in range(5):
        meter = f"{202400100001 + m * 3:012d}"
        for k in (0, 1, 2, 4):  # slot 3 missing: a step of two in the series
            slot = T0 + 900 * k
            at = round(slot + 1.25 + m * 0.5 + k * 0.001, 3)
            energy = f"{12345.67 + m * 10 + k * 0.25:.2f}"
            readings.append(Reading(meter, "energy_fwd_total", slot, energy, "kWh", at))
            volts = f"{229.9 + (m + k) % 3 / 10:.1f}"
            source = "backfill" if k == 4 else "poll"
            readings.append(
                Reading(meter, "voltage_a", slot, volts, "V", round(at + 0.1, 3), source)
            )
        # Mixed decimals in one series, and a value no mantissa restores ("+1.50").
        readings.append(Reading(meter, "power_total", T0, "1.5", "kW", T0 + 2.0))
        readings.append(Reading(meter, "power_total", T0 + 900, "1.25", "kW", T0 + 902.0))
        readings.append(Reading(meter, "power_total", T0 + 1800, "+1.50", "kW", T0 + 1802.0))
    events = (
        Event("clock_drift", "warning", "202400100001", {"drift_s": 12.5, "set": True}, 1.5e9),
        Event("loss", "critical", None, {"losses": [{"meters": ["a"], "count": 3}]}, 1.7e9),
    )
    return BatchContent(readings=tuple(readings), events=events)


def _references() -> dict[tuple[str, str], Reference]:
    return {
        (f"{202400100001 + m * 3:012d}", "energy_fwd_total"): Reference(
            T0 - 900, f"{12345.50 + m * 10:.2f}", T0 - 898.75
        )
        for m in range(0, 5, 2)
    }


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _same(got: BatchContent, want: BatchContent) -> bool:
    return sorted(got.readings, key=repr) == sorted(want.readings, key=repr) and (
        got.events == want.events
    )


def test_the_version_2_body_of_a_fixed_content_never_changes() -> None:
    body = body_v2.encode_body(_content())
    assert _same(body_v2.decode_body(body), _content())
    assert _digest(body) == V2


def test_the_version_3_body_of_a_fixed_content_never_changes() -> None:
    key = body_v3.encode_body(_content())
    assert _same(decode_body(key, None), _content())
    assert _digest(key) == V3_KEY
    coded = body_v3.encode_body(_content(), _references())
    held = {(m, q, r.slot): (r.value, r.read_at) for (m, q), r in _references().items()}
    assert _same(decode_body(coded, lambda keys: {k: held[k] for k in keys}), _content())
    assert coded != key  # the references were used
    assert _digest(coded) == V3_REFERENCES


V2 = "760aef285f9d1259cc34f03b37709c7c784ac83a838038f12a6389441b01beff"
V3_KEY = "c9079f1383785fc514e0494354dff55bd5c8adf943d1c16dcca0acafe2c1f98c"
V3_REFERENCES = "2e93fec0ac09f7edd5cb71d7aed3ba97bd82c025ffe837eed29ec968fef9092f"
