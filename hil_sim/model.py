"""Physical model of one meter: what it really measures, independent of any protocol.

Energy registers integrate a load profile (daily shape plus noise) so they are monotonic
and realistic; the time-of-use tariff decides which tariff register the energy lands
in; an open relay really stops the load; the meter keeps its own (drifting) clock and
the last 62 daily freezes. Noise is a pure function of (seed, minute), so a meter's
history does not depend on how often it is read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections import deque
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Literal

Profile = Literal["household", "commercial"]

CHINA_TZ = dt.timezone(dt.timedelta(hours=8))

# Tariff by local hour, as on a typical provincial time-of-use schedule:
# 1 sharp (尖), 2 peak (峰), 3 flat (平), 4 valley (谷).
_TOU = [4] * 7 + [3] + [2] * 3 + [3] * 7 + [2] + [1] * 2 + [2] * 2 + [4]
assert len(_TOU) == 24


def tariff_at(local: dt.datetime) -> int:
    return _TOU[local.hour]


def _unit_noise(seed: int, key: int, salt: str) -> float:
    """Deterministic noise in [-1, 1) from (seed, key)."""
    digest = hashlib.blake2b(f"{seed}:{key}:{salt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**63 - 1.0


# Daily shapes, relative load by local hour (0..1); peak_kw scales them.
_HOUSEHOLD = [0.15, 0.12, 0.1, 0.1, 0.1, 0.12, 0.3, 0.55, 0.45, 0.3, 0.28, 0.35,
              0.4, 0.3, 0.28, 0.28, 0.32, 0.5, 0.85, 1.0, 0.95, 0.8, 0.5, 0.25]  # fmt: skip
_COMMERCIAL = [0.1, 0.1, 0.1, 0.1, 0.1, 0.12, 0.2, 0.45, 0.85, 0.95, 1.0, 0.95,
               0.8, 0.9, 0.95, 1.0, 0.95, 0.85, 0.6, 0.4, 0.25, 0.15, 0.12, 0.1]  # fmt: skip
DAILY_SHAPES: dict[Profile, list[float]] = {"household": _HOUSEHOLD, "commercial": _COMMERCIAL}


@dataclass(frozen=True)
class Measurements:
    """Instantaneous values at one moment, before any protocol scaling."""

    voltage: tuple[float, float, float]
    current: tuple[float, float, float]
    power: tuple[float, float, float]  # kW per phase
    power_total: float
    power_factor: float
    frequency: float


@dataclass(frozen=True)
class Freeze:
    at: dt.datetime  # meter-local time of the freeze
    energy_fwd: tuple[Decimal, ...]  # total, tariff 1..4 (kWh)


LOAD_PERIOD_S = 900  # the meter records its load curve every 15 minutes
LOAD_MEMORY = 96 * 10  # and keeps the last ten days of records


@dataclass(frozen=True)
class Interval:
    """One load-curve record as the meter stored it: when (true time and the meter's own
    stamp) and its energy registers then; instantaneous values are `measure(t)`."""

    t: float  # simulated unix time of the record (a 15-minute boundary)
    at: dt.datetime  # meter-local time stamped on it, to the minute
    energy_fwd: tuple[Decimal, ...]  # total, tariff 1..4 (kWh)
    energy_rev: Decimal
    reactive: Decimal  # combined reactive energy 1 (kvarh): the load draws it, never exports


@dataclass
class MeterModel:
    address: str
    seed: int
    profile: Profile = "household"
    phases: int = 3
    peak_kw: float = 3.0
    start: float = 0.0  # simulated unix time the model starts integrating from
    tz: dt.tzinfo = CHINA_TZ
    clock_offset: float = 0.0  # meter clock minus true time (s)
    clock_drift_ppm: float = 0.0
    relay_open: bool = False
    keep_power: bool = False
    cover_open_count: int = 0  # openings before the simulation started
    cover_opened_at: list[float] = field(default_factory=list)  # simulated unix times
    reverse_fraction: float = 0.0  # share of energy flowing backwards (PV, bypass)
    _wh: list[float] = field(default_factory=lambda: [0.0] * 5)  # tariff 1..4 at [1..4]
    _rev_wh: float = 0.0
    _t: float = 0.0
    _freezes: deque[Freeze] = field(default_factory=lambda: deque(maxlen=62))
    _intervals: deque[Interval] = field(default_factory=lambda: deque(maxlen=LOAD_MEMORY))
    _varh: float = 0.0
    _history_done: bool = False

    def __post_init__(self) -> None:
        # Enough energy on the registers that 62 days of history never go below zero.
        base = self.peak_kw * 24 * 70 * (1 + abs(_unit_noise(self.seed, 0, "init"))) + 1000
        shares = (0.1, 0.3, 0.35, 0.25)
        for t, share in enumerate(shares, start=1):
            self._wh[t] = math.floor(base * share) * 1000.0
        self._t = self.start

    # ---------------------------------------------------------------- load and energy
    def power_kw(self, t: float) -> float:
        """Total active power drawn at simulated time t (constant within a minute)."""
        if self.relay_open:
            return 0.0
        minute = int(t // 60)
        local = dt.datetime.fromtimestamp(minute * 60, self.tz)
        shape = _HOUSEHOLD if self.profile == "household" else _COMMERCIAL
        h = local.hour + local.minute / 60
        lo = shape[int(h) % 24]
        hi = shape[(int(h) + 1) % 24]
        rel = lo + (hi - lo) * (h - int(h))
        noise = 1.0 + 0.15 * _unit_noise(self.seed, minute, "load")
        return max(0.0, self.peak_kw * rel * noise)

    def advance(self, now: float) -> None:
        """Integrate energy up to ``now`` in minute steps; freezes at local midnight."""
        t = self._t
        while t < now:
            step_end = min(now, (math.floor(t / 60) + 1) * 60)
            p = self.power_kw(t)
            wh = p * (step_end - t) / 3.6
            tariff = tariff_at(dt.datetime.fromtimestamp(t, self.tz))
            self._wh[tariff] += wh * (1.0 - self.reverse_fraction)
            self._rev_wh += wh * self.reverse_fraction
            pf = self.power_factor_at(t)
            self._varh += wh * math.sqrt(1.0 - pf * pf) / pf
            t = step_end
            if t == math.floor(t) and int(t) % 60 == 0:
                local = dt.datetime.fromtimestamp(t, self.tz)
                if local.hour == 0 and local.minute == 0 and t <= now:
                    self.freezes.appendleft(Freeze(self._freeze_stamp(t), self.energy_fwd()))
                if int(t) % LOAD_PERIOD_S == 0:
                    self._intervals.append(
                        Interval(
                            t,
                            self._freeze_stamp(t),
                            self.energy_fwd(),
                            self.energy_rev(),
                            self._kwh(self._varh),
                        )
                    )
        self._t = max(self._t, now)

    @property
    def intervals(self) -> deque[Interval]:
        """The load-curve records the meter holds, oldest first (since the model started:
        a record is taken when the integration passes its boundary)."""
        return self._intervals

    def power_factor_at(self, t: float) -> float:
        """The power factor over the minute containing t (as `measure` gives it)."""
        return 0.92 + 0.06 * _unit_noise(self.seed, int(t) // 60, "pf")

    def covers_opened(self, t: float) -> int:
        """The meter-cover opening counter at simulated time ``t``."""
        return self.cover_open_count + sum(1 for at in self.cover_opened_at if at <= t)

    def _freeze_stamp(self, t: float) -> dt.datetime:
        # The meter freezes when its own clock reaches midnight and stamps that minute;
        # its clock is off by seconds, so round to the minute.
        shown = self.meter_time(t) + dt.timedelta(seconds=30)
        return shown.replace(second=0, microsecond=0)

    @property
    def freezes(self) -> deque[Freeze]:
        """Daily freezes, most recent first; the days before the simulation started are
        reconstructed once, on first use, by integrating the profile backwards in hourly
        steps (a meter in the field arrives with 62 days of history)."""
        if not self._history_done:
            self._history_done = True
            wh = list(self._wh)
            t = self.start
            history: list[Freeze] = []
            limit = self.start - 63 * 86400
            while t > limit and len(history) < 62:
                step_start = (math.ceil(t / 3600) - 1) * 3600
                p = self.power_kw(step_start)
                tariff = tariff_at(dt.datetime.fromtimestamp(step_start, self.tz))
                wh[tariff] -= p * (t - step_start) / 3.6 * (1.0 - self.reverse_fraction)
                t = step_start
                local = dt.datetime.fromtimestamp(t, self.tz)
                if local.hour == 0:
                    tariffs = [self._kwh(max(0.0, wh[i])) for i in range(1, 5)]
                    energy = (sum(tariffs, Decimal("0.00")), *tariffs)
                    history.append(Freeze(self._freeze_stamp(t), energy))
            for freeze in history:  # oldest last, behind anything frozen since start
                self._freezes.append(freeze)
        return self._freezes

    @staticmethod
    def _kwh(wh: float) -> Decimal:
        # Registers show whole hundredths of a kWh, truncated: they never run ahead.
        return (Decimal(int(wh)) / 1000).quantize(Decimal("0.01"), rounding=ROUND_FLOOR)

    def energy_fwd(self) -> tuple[Decimal, ...]:
        tariffs = [self._kwh(self._wh[t]) for t in range(1, 5)]
        return (sum(tariffs, Decimal("0.00")), *tariffs)

    def energy_rev(self) -> Decimal:
        return self._kwh(self._rev_wh)

    # ---------------------------------------------------------------- instantaneous
    def measure(self, t: float) -> Measurements:
        p_total = self.power_kw(t)
        second = int(t)
        phases = self.phases
        share = [1.0, 0.0, 0.0] if phases == 1 else [0.36, 0.33, 0.31]
        voltage = tuple(
            (220.0 + 3.0 * _unit_noise(self.seed, second, f"v{i}") - 2.0 * p_total / self.peak_kw)
            if i < phases
            else 0.0
            for i in range(3)
        )
        pf = self.power_factor_at(t)
        power = tuple(p_total * share[i] for i in range(3))
        current = tuple(
            (power[i] * 1000 / (voltage[i] * pf)) if voltage[i] else 0.0 for i in range(3)
        )
        freq = 50.0 + 0.04 * _unit_noise(self.seed, second, "f")
        return Measurements(
            voltage=(voltage[0], voltage[1], voltage[2]),
            current=(current[0], current[1], current[2]),
            power=(power[0], power[1], power[2]),
            power_total=p_total,
            power_factor=pf,
            frequency=freq,
        )

    # ---------------------------------------------------------------- clock
    def meter_time(self, t: float) -> dt.datetime:
        """The meter's own local clock (naive local time, as the meter shows it)."""
        drift = (t - self.start) * self.clock_drift_ppm / 1e6
        return dt.datetime.fromtimestamp(t + self.clock_offset + drift, self.tz).replace(
            tzinfo=None
        )

    def set_clock(self, t: float, meter_local: dt.datetime) -> None:
        """Broadcast time sync: from now on the meter shows ``meter_local`` at true t."""
        target = meter_local.replace(tzinfo=self.tz).timestamp()
        drift = (t - self.start) * self.clock_drift_ppm / 1e6
        self.clock_offset = target - t - drift

    # ---------------------------------------------------------------- relay
    def set_relay(self, t: float, open_: bool) -> bool:
        """Open or close the load switch; keep-power (保电) refuses to open it."""
        self.advance(t)
        if open_ and self.keep_power:
            return False
        self.relay_open = open_
        return True
