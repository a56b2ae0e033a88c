"""The tamper evidence the receiver consumes, in one place: event kinds and registers.

Smart meters record tamper events (DL/T 645-2007 keeps event records such as meter-cover
and terminal-cover openings, constant magnetic field interference, and loss of voltage
while current flows). A concentrator reports them as events in its batches (the
``events`` table); ``hil_sim.areas`` emits the same kinds. Each kind carries the points
it adds to a suspect's score (`.suspects`) and the words used in the
evidence. The meter-cover opening counter (DL/T 645 DI 03300D00, quantity
``cover_open_count``) is read as a register too: an increase counts as one
``meter_cover_open`` per opening, for concentrators that poll the counter instead of
reporting the event.

Status-word bits (04000501..07) are not decoded here: apart from the relay bit of word 3
their layout is not confirmed in docs/protocols.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from contract import quantities


@dataclass(frozen=True)
class TamperKind:
    points: float  # added to the suspect score, once per kind (repeats add a little more)
    words: str  # the evidence, e.g. "meter cover opened"


TAMPER_EVENTS: dict[str, TamperKind] = {
    # Opening the cover is how a bypass or a shunt is fitted inside the meter.
    "meter_cover_open": TamperKind(35, "meter cover opened"),
    # The terminal cover hides the wiring: jumpers across the terminals go in there.
    "terminal_cover_open": TamperKind(30, "terminal cover opened"),
    # A strong magnet saturates the current transformer so the meter under-registers.
    "magnetic_interference": TamperKind(40, "constant magnetic field interference"),
    # Current flows while a phase voltage is missing: a voltage link was opened.
    "voltage_loss_loaded": TamperKind(35, "voltage lost on a phase while current flowed"),
    # The meter lost its supply while the load kept drawing current past it.
    "power_down_loaded": TamperKind(25, "meter powered down while the load was drawing"),
}

COVER_OPEN_COUNT = quantities.COVER_OPEN_COUNT  # DL/T 645 DI 03300D00, the register counterpart
REPEAT_POINTS = 5.0  # per further event of a kind already counted, up to the kind's points
