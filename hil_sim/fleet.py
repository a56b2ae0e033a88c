"""Building simulated meters and buses from a few options, and describing them as config."""

from __future__ import annotations

import os
import random
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from clitools.files import write_file
from drivers import dlt645
from hil_sim.bus import ProtocolAdapter, SimBus, SimMeter
from hil_sim.clock import SimClock
from hil_sim.dlt645_1997_meter import Dlt6451997Meter
from hil_sim.dlt645_meter import Dlt645Meter
from hil_sim.dlt698_meter import Dlt698Meter
from hil_sim.errors import SpecError
from hil_sim.faults import FaultPlan
from hil_sim.mixed_bus import mixed_adapter
from hil_sim.model import MeterModel, Profile
from hil_sim.truth import TruthLog

ProtocolName = Literal["dlt645", "dlt645-1997", "dlt698", "modbus"]

DEFAULT_PASSWORD = "123456"
DEFAULT_PASSWORD_LEVEL = 2
DEFAULT_OPERATOR = "00000001"


def dlt645_adapter() -> ProtocolAdapter:
    def corrupt(reply: bytes) -> bytes:
        # The checksum is the second-to-last byte of every DL/T 645 frame.
        return reply[:-2] + bytes([(reply[-2] + 1) & 0xFF]) + reply[-1:]

    def error_reply(meter: SimMeter, frame: Any) -> bytes:
        return dlt645.build_error_reply(meter.address, frame.function, dlt645.ErrorBits.OTHER)

    return ProtocolAdapter(
        name="dlt645",
        bits_per_char=dlt645.BITS_PER_CHAR,
        make_decoder=dlt645.Decoder,
        corrupt_checksum=corrupt,
        error_reply=error_reply,
    )


def make_addresses(
    count: int, *, base: str = "000000000001", randomise: bool = False, seed: int = 0
) -> list[str]:
    """Meter addresses: consecutive from ``base`` (one delivery batch) or random."""
    if randomise:
        rng = random.Random(seed)
        chosen: set[str] = set()
        while len(chosen) < count:
            chosen.add(f"{rng.randrange(1, 10**12):012d}")
        return sorted(chosen)
    try:
        start = int(base)
    except ValueError as exc:
        raise SpecError(str(exc)) from None
    if start + count > 10**12:
        raise SpecError(f"address base {base} leaves no room for {count} meters")
    return [f"{start + i:012d}" for i in range(count)]


@dataclass
class FleetOptions:
    protocol: ProtocolName = "dlt645"
    meters: int = 1
    baud: int = 2400
    address_base: str = "000000000001"
    random_addresses: bool = False
    seed: int = 0
    profile: Profile = "household"
    peak_kw: float | None = None  # every meter's peak load; None: drawn per meter
    phases: int = 3
    turnaround: tuple[float, float] = (0.020, 0.080)
    preamble: int = 0
    modbus_model: str = "sdm630"
    first_slave: int = 1
    faults: FaultPlan = field(default_factory=FaultPlan)
    # A mixed DL/T bus: meter i speaks protocols[i % len]; empty: every meter `protocol`.
    protocols: tuple[str, ...] = ()

    def mix(self) -> tuple[str, ...]:
        return self.protocols or (self.protocol,)

    def protocol_of(self, i: int) -> str:
        mix = self.mix()
        return mix[i % len(mix)]


def build_meters(opts: FleetOptions, clock: SimClock) -> list[SimMeter]:
    rng = random.Random(opts.seed)
    meters: list[SimMeter] = []
    if "modbus" not in opts.mix():
        addresses = make_addresses(
            opts.meters, base=opts.address_base, randomise=opts.random_addresses, seed=opts.seed
        )
        for i, address in enumerate(addresses):
            model = _model(address, opts, clock, rng, i)
            protocol = opts.protocol_of(i)
            if protocol == "dlt698":
                meters.append(Dlt698Meter(model, preamble=opts.preamble))
            elif protocol == "dlt645-1997":
                meters.append(Dlt6451997Meter(model, preamble=opts.preamble))
            else:
                meters.append(
                    Dlt645Meter(
                        model,
                        password_level=DEFAULT_PASSWORD_LEVEL,
                        password=DEFAULT_PASSWORD,
                        preamble=opts.preamble,
                    )
                )
        return meters
    from hil_sim.modbus_meter import ModbusMeter

    if not 1 <= opts.first_slave <= 247 or opts.first_slave + opts.meters - 1 > 247:
        raise SpecError(f"{opts.meters} Modbus meters from slave {opts.first_slave} exceed 247")
    for i in range(opts.meters):
        slave = opts.first_slave + i
        model = _model(str(slave), opts, clock, rng, i)
        meters.append(ModbusMeter(model, slave=slave, meter_model=opts.modbus_model))
    return meters


def _peak(opts: FleetOptions, rng: random.Random) -> float:
    drawn = rng.uniform(2.0, 6.0) if opts.profile == "household" else rng.uniform(15, 60)
    return drawn if opts.peak_kw is None else opts.peak_kw  # drawn anyway: same seeds


def _model(
    address: str, opts: FleetOptions, clock: SimClock, rng: random.Random, i: int
) -> MeterModel:
    return MeterModel(
        address=address,
        seed=opts.seed * 100_003 + i,
        profile=opts.profile,
        phases=opts.phases,
        peak_kw=_peak(opts, rng),
        start=clock.now(),
        clock_offset=rng.uniform(-20.0, 20.0),
        clock_drift_ppm=rng.uniform(-20.0, 20.0),
    )


def adapter_for(protocol: ProtocolName, mix: tuple[str, ...] = ()) -> ProtocolAdapter:
    if protocol == "dlt645" and set(mix) <= {"dlt645"}:
        return dlt645_adapter()
    if protocol != "modbus":
        return mixed_adapter(mix or (protocol,))
    from hil_sim.modbus_meter import modbus_adapter

    return modbus_adapter()


def build_bus(
    opts: FleetOptions,
    *,
    link: Path | None,
    truth: TruthLog | None = None,
    clock: SimClock | None = None,
) -> SimBus:
    clock = clock or SimClock()
    meters = build_meters(opts, clock)
    for opening in opts.faults.cover_opens:
        for meter in meters:
            if opening.meter in (None, meter.address) and isinstance(meter, Dlt645Meter):
                meter.model.cover_opened_at.append(clock.start + opening.at)
    return SimBus(
        meters,
        adapter_for(opts.protocol, opts.protocols),
        baud=opts.baud,
        turnaround=opts.turnaround,
        faults=opts.faults,
        truth=truth,
        clock=clock,
        link=link,
        seed=opts.seed,
    )


# ---------------------------------------------------------------------- config writer


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_path_text(target: Path, config: Path) -> str:
    """``target`` as a path in the config file ``config``: the concentrator reads a
    relative path relative to the config file's folder (wherever it is started from),
    so a path below that folder is written relative to it (the folder can move as a
    whole), any other absolute. Symlinks are kept as they are: a link is the point."""
    absolute = Path(os.path.abspath(target))
    try:
        return str(absolute.relative_to(Path(os.path.abspath(config)).parent))
    except ValueError:
        return str(absolute)


def write_config(
    path: Path,
    buses: Sequence[tuple[str, Path, FleetOptions, Sequence[SimMeter]]],
    *,
    concentrator_id: str = "dc-sim-0001",
    store_path: Path | None = None,
    cadence: str = "15m",
) -> None:
    """Write a concentrator config (TOML) that reads every simulated meter.

    Each bus entry is (name, link path, options, meters).
    """
    lines = [
        "# Written by hil-sim: a concentrator configuration for the simulated meters.",
        "[concentrator]",
        f"id = {_toml_str(concentrator_id)}",
        "",
        "[storage]",
        f"path = {_toml_str(config_path_text(store_path or path.with_suffix('.db'), path))}",
        "",
    ]
    for name, link, opts, _ in buses:
        parity = "N" if opts.protocol == "modbus" else "E"
        lines += [
            "[[bus]]",
            f"name = {_toml_str(name)}",
            'type = "rs485"',
            f"port = {_toml_str(config_path_text(link, path))}",
            f"baud = {opts.baud}",
            f"parity = {_toml_str(parity)}",
            "",
        ]
    for name, _, opts, meters in buses:
        for i, meter in enumerate(meters):
            protocol = opts.protocol_of(i)
            lines += [
                "[[meter]]",
                f"address = {_toml_str(meter.address)}",
                f"protocol = {_toml_str(protocol)}",
                f"bus = {_toml_str(name)}",
            ]
            if protocol == "dlt645":
                lines += [
                    f"password_level = {DEFAULT_PASSWORD_LEVEL}",
                    f"password = {_toml_str(DEFAULT_PASSWORD)}",
                    f"operator = {_toml_str(DEFAULT_OPERATOR)}",
                ]
            elif protocol == "modbus":
                lines.append(f"model = {_toml_str(opts.modbus_model)}")
            lines.append(f"group = {_toml_str(protocol)}")
            lines.append("")
    protocols = {p for _, _, opts, _ in buses for p in opts.mix()}
    if "dlt645" in protocols:
        lines += [
            "[[task]]",
            'name = "interval-energy"',
            'quantities = ["energy_fwd_total"]',
            f"every = {_toml_str(cadence)}",
            'groups = ["dlt645"]',
            "",
            "[[task]]",
            'name = "daily-freeze"',
            'quantities = ["frozen_daily_energy_fwd", "frozen_daily_time"]',
            'every = "daily@00:05"',
            'groups = ["dlt645"]',
            "",
        ]
    for protocol in ("dlt645-1997", "dlt698"):
        if protocol in protocols:
            # The quantities every DL/T meter has under one name (`drivers.readers`).
            lines += [
                "[[task]]",
                f"name = {_toml_str('interval-energy-' + protocol)}",
                'quantities = ["energy_fwd_total"]',
                f"every = {_toml_str(cadence)}",
                f"groups = [{_toml_str(protocol)}]",
                "",
            ]
    if "modbus" in protocols:
        lines += [
            "[[task]]",
            'name = "interval-energy-modbus"',
            'quantities = ["energy_fwd_total", "energy_rev_total"]',
            f"every = {_toml_str(cadence)}",
            'groups = ["modbus"]',
            "",
        ]
    write_file(path, "\n".join(lines))


def add_uplink(
    config: Path,
    fragment_dir: Path,
    *,
    concentrator_id: str,
    overrides: Mapping[str, int | float | str] | None = None,
) -> None:
    """Give a written config the concentrator id and ``[uplink]`` of a provisioning.

    ``fragment_dir`` is what ``cloud-receiver provision`` made for ``concentrator_id``;
    its file names become absolute paths here, since the config lives elsewhere.
    ``overrides`` set or replace ``[uplink]`` keys (shorter timeouts for tests, say).
    """
    fragment = tomllib.loads((fragment_dir / "uplink.toml").read_text(encoding="utf-8"))
    table: dict[str, int | float | str] = dict(fragment["uplink"])
    for key, value in table.items():
        if key.endswith("_file") and isinstance(value, str):
            table[key] = str((fragment_dir / value).absolute())
    table.update(overrides or {})
    lines = ["", "[uplink]"]
    for key, value in table.items():
        lines.append(f"{key} = {_toml_str(value) if isinstance(value, str) else repr(value)}")
    text = config.read_text(encoding="utf-8")
    head, sep, rest = text.partition("[concentrator]\nid = ")
    if not sep:
        raise SpecError(f"{config}: no [concentrator] id written by hil-sim")
    rest = rest.split("\n", 1)[1]
    text = f"{head}[concentrator]\nid = {_toml_str(concentrator_id)}\n{rest}"
    write_file(config, text.rstrip("\n") + "\n" + "\n".join(lines) + "\n")


def write_plc_config(
    path: Path,
    link: Path,
    addresses: Sequence[str],
    *,
    protocols: Sequence[str] = (),
    concentrator_id: str = "dc-sim-0001",
    store_path: Path | None = None,
    cadence: str = "15m",
    max_in_flight: int = 1,
    retries: int = 6,
    master_address: str | None = None,
    comm_mode: int | None = None,
) -> None:
    """A concentrator config reading DL/T meters through one carrier module; meter i
    speaks ``protocols[i]`` (645-2007 when not given); the module's address and mode are
    learnt from it unless given here."""
    lines = [
        "# Written by hil-sim plc: meters behind one simulated carrier module.",
        "[concentrator]",
        f"id = {_toml_str(concentrator_id)}",
        "",
        "[storage]",
        f"path = {_toml_str(config_path_text(store_path or path.with_suffix('.db'), path))}",
        "",
        "[[bus]]",
        'name = "plc1"',
        'type = "plc"',
        f"port = {_toml_str(config_path_text(link, path))}",
        f"max_in_flight = {max_in_flight}",
        f"retries = {retries}",
        *([f"master_address = {_toml_str(master_address)}"] if master_address else []),
        *([f"comm_mode = {comm_mode}"] if comm_mode is not None else []),
        "",
    ]
    kinds = list(protocols) or ["dlt645"] * len(addresses)
    for address, protocol in zip(addresses, kinds, strict=True):
        lines += [
            "[[meter]]",
            f"address = {_toml_str(address)}",
            f"protocol = {_toml_str(protocol)}",
            'bus = "plc1"',
        ]
        if protocol == "dlt645":
            lines += [
                f"password_level = {DEFAULT_PASSWORD_LEVEL}",
                f"password = {_toml_str(DEFAULT_PASSWORD)}",
                f"operator = {_toml_str(DEFAULT_OPERATOR)}",
                'group = "plc"',
                "",
            ]
        else:
            lines += [f"group = {_toml_str('plc-' + protocol)}", ""]
    if "dlt645" in kinds:
        lines += [
            "[[task]]",
            'name = "interval-energy"',
            'quantities = ["energy_fwd_total"]',
            f"every = {_toml_str(cadence)}",
            'groups = ["plc"]',
            "",
            "[[task]]",
            'name = "daily-freeze"',
            'quantities = ["frozen_daily_energy_fwd", "frozen_daily_time"]',
            'every = "daily@00:05"',
            'groups = ["plc"]',
            "",
        ]
    for protocol in sorted(set(kinds) - {"dlt645"}):
        lines += [
            "[[task]]",
            f"name = {_toml_str('interval-energy-' + protocol)}",
            'quantities = ["energy_fwd_total"]',
            f"every = {_toml_str(cadence)}",
            f"groups = [{_toml_str('plc-' + protocol)}]",
            "",
        ]
    write_file(path, "\n".join(lines))
