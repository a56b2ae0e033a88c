"""The configuration as the daemon uses it: frozen dataclasses, one per table.

Every table is typed here, the services ones (``[uplink]``, ``[modem]``, ``[update]``)
included, and only the checker (``concentrator.config.checker``) builds them from a
file, so a value that reaches a task has been checked once, with its line. Paths are
absolute by then (a relative one is relative to the config file). Key files named by
the config are read by the task that uses them; the checker reads them too, so a bad
key is a config error, not a crash at start-up.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal

from concentrator.config.issues import ConfigIssue
from contract.timezone import parse_utc_offset
from drivers.at_timeouts import AtTimeouts
from drivers.serial_bus import Parity, SerialSettings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from drivers.plc_bus import PlcSettings

DEFAULT_CONTROL_SOCKET = Path("/run/meterflow/concentrator.sock")
DAY_S = 86_400

_DAILY_RE = re.compile(r"daily@(\d{2}):(\d{2})")
_PERIOD_RE = re.compile(r"(\d+)([smh])")


# ---------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Cadence:
    """When a task runs: every ``period_s`` seconds from local midnight + ``offset_s``.

    Slots are wall-clock boundaries in the concentrator's timezone (docs/architecture.md,
    "Time"), so "15m" means :00/:15/:30/:45 local and "daily@00:05" means 00:05 local
    each day.
    """

    text: str
    period_s: int
    offset_s: int = 0

    def slot_start(self, t: float, tz: dt.tzinfo) -> int:
        """Unix time of the start of the slot that contains unix time ``t``."""
        offset = dt.datetime.fromtimestamp(t, tz).utcoffset()
        utc_offset_s = int(offset.total_seconds()) if offset is not None else 0
        local = math.floor(t) + utc_offset_s - self.offset_s
        return local - local % self.period_s + self.offset_s - utc_offset_s


@dataclass(frozen=True)
class ConcentratorSection:
    id: str
    timezone: str = "+08:00"
    # The field CLI's way into the running daemon (concentrator/control/).
    control_socket: Path = DEFAULT_CONTROL_SOCKET
    # Poll configured meters outside the archive the receiver downloaded (docs/analytics.md, "Meter
    # ownership"); ``concentrator commissioning on|off`` overrides it.
    commissioning: bool = False

    @property
    def tzinfo(self) -> dt.timezone:
        return parse_utc_offset(self.timezone) or dt.timezone(dt.timedelta(hours=8))


@dataclass(frozen=True)
class StorageSection:
    path: Path
    quota_mb: int | None = None
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    retention_days: float = 7.0
    # The store's SQLCipher key (issue 19, item 5); None: the store is not encrypted.
    key_file: Path | None = None

    def key(self) -> bytes | None:
        """The store's key, read now (every opener of the store calls this)."""
        return None if self.key_file is None else read_store_key(self.key_file)


STORE_KEY_BYTES = 32  # SQLCipher 4's raw key: AES-256, used as is (no PBKDF2 on open)


def read_store_key(path: Path) -> bytes:
    """The store's key: 64 hex digits (a newline may follow) in a file of mode 0600
    owned by whoever runs the daemon. ValueError or OSError says what is wrong.

    A key another user may read is refused, not merely warned about: the point of
    encrypting the store is that only the daemon's account can read it. A hardware key
    store (a TPM or secure element) would hand the same 32 bytes to this function's
    callers; see README "Files at rest".
    """
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ValueError(
            f"{path}: mode {mode:04o}; the store key must be readable by its owner only "
            f"(chmod 600 {path})"
        )
    raw = path.read_bytes()
    text = raw.decode("ascii", errors="replace").rstrip("\n")
    if len(text) != 2 * STORE_KEY_BYTES:
        raise ValueError(
            f"{path}: {len(text)} characters; expected {2 * STORE_KEY_BYTES} hex digits "
            f"(a {8 * STORE_KEY_BYTES}-bit key: `concentrator config keygen`)"
        )
    for i, ch in enumerate(text):
        if ch not in "0123456789abcdefABCDEF":
            raise ValueError(f"{path}: byte {i} is {ch!r}, expected a hex digit")
    return bytes.fromhex(text)


@dataclass(frozen=True)
class BusConfig:
    name: str
    port: str
    baud: int
    parity: Parity
    type: Literal["rs485", "plc"] = "rs485"
    response_timeout_ms: int = 600
    inter_frame_gap_ms: int = 5
    rs485: bool = False
    # Power-line carrier only (a Q/GDW 1376.2 module on this port):
    monitor_timeout_ms: int = 90_000  # one meter read through the carrier network
    max_in_flight: int = 1  # reads sent to the module before the first answer
    master_address: str | None = None  # A1; None: the module's own report (03 F4)
    comm_mode: int | None = None  # control byte's mode; None: the module's report (03 F10)
    retries: int = 6  # per read and slot: a failed node is tried again later in the slot

    def plc_settings(self, time_scale: float = 1.0) -> PlcSettings:
        """Carrier time (routing, relays, the meter) runs on the daemon's clock, so a
        scaled test clock scales these timeouts; the UART itself does not. The carrier's
        driver is imported here, by a carrier bus only."""
        from drivers.plc_bus import PlcSettings

        return PlcSettings(
            port=self.port,
            baud=self.baud,
            parity=self.parity,
            response_timeout=self.response_timeout_ms / 1000 / time_scale,
            monitor_timeout=self.monitor_timeout_ms / 1000 / time_scale,
            max_in_flight=self.max_in_flight,
            mode=self.comm_mode,
            master_address=self.master_address,
        )

    def settings(self) -> SerialSettings:
        return SerialSettings(
            port=self.port,
            baud=self.baud,
            parity=self.parity,
            response_timeout=self.response_timeout_ms / 1000,
            inter_frame_gap=self.inter_frame_gap_ms / 1000,
            rs485=self.rs485,
        )


DEFAULT_GROUP = "default"  # a meter's group when the config names none


@dataclass(frozen=True, slots=True)  # thousands of them: no __dict__ each
class MeterConfig:
    address: str
    # dlt645 is DL/T 645-2007; DL/T 645-1997 and DL/T 698.45 meters may share its buses
    # (docs/protocols-dlt698-645-1997.md, "Mixed buses").
    protocol: Literal["dlt645", "dlt645-1997", "dlt698", "modbus"]
    bus: str
    group: str = DEFAULT_GROUP
    area: str | None = None
    password_level: int | None = None
    password: str | None = None
    operator: str | None = None
    model: str | None = None  # Modbus register map; None for DL/T 645

    @property
    def has_relay_credentials(self) -> bool:
        return None not in (self.password_level, self.password, self.operator)


@dataclass(frozen=True)
class TaskConfig:
    name: str
    quantities: tuple[str, ...]
    every: Cadence
    groups: tuple[str, ...] = ("*",)
    retries: int = 2
    retry_backoff_s: float = 2.0
    backfill: bool = True
    relay: bool = False

    def applies_to(self, meter: MeterConfig) -> bool:
        return "*" in self.groups or meter.group in self.groups


# ---------------------------------------------------------------------- services


@dataclass(frozen=True)
class UplinkConfig:
    """The ``[uplink]`` table: the MQTT broker, the TLS files and the payload key."""

    broker_host: str
    broker_port: int
    ca_file: Path
    cert_file: Path
    key_file: Path
    payload_key_file: Path
    key_id: int = 1
    keepalive_s: int = 300  # every keepalive costs bytes on GPRS: not too short
    window: int = 4
    ack_timeout_s: float = 60.0
    # A backlog compresses better in big batches (slot-to-slot deltas within a series),
    # but sealing one holds its readings as Python objects: bench/wire.py's backlog
    # 1.38 B/reading at 30,000, 1.46 at 15,000, 1.51 at 10,000 (target <= 1.5), and
    # bench/daemon.py's daemon_peak_rss_uplink_mb 89, 75 and 73 MB (issue 22).
    batch_readings: int = 15_000
    batch_events: int = 500
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 300.0
    poll_s: float = 2.0  # how often an idle uplink looks for new readings
    # The utility's Ed25519 command public key (PEM): with it the concentrator listens
    # on its ``cmd`` topic and runs what that key signed; without it, no commands.
    command_key_file: Path | None = None
    # The uplink wire format sent (`contract.wire`): pin an older one while a
    # receiver that reads only it is still in service.
    wire_version: int = field(default_factory=lambda: _wire().VERSION)

    def command_key(self) -> Ed25519PublicKey | None:
        if self.command_key_file is None:
            return None
        return load_public_key(self.command_key_file, "command key")

    def payload_key(self) -> bytes:
        return read_payload_key(self.payload_key_file)


def _wire() -> ModuleType:
    """`contract.wire`, imported by the uplink's config only: with cryptography, CBOR
    and zstd it costs a daemon without ``[uplink]`` megabytes of RSS for nothing."""
    from contract import wire

    return wire


def wire_versions() -> tuple[int, ...]:
    """The uplink wire formats this build can send (`contract.wire.VERSIONS`)."""
    return tuple(_wire().VERSIONS)


def load_public_key(path: Path, what: str) -> Ed25519PublicKey:
    """`contract.commands.load_public_key`, imported only where a key is configured."""
    from contract.commands import load_public_key as load

    return load(path, what)


def read_payload_key(path: Path) -> bytes:
    """The AES-256 payload key (64 hex digits); ValueError or OSError says why not."""
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{path}: expected 64 hex digits") from None
    if len(key) != 32:
        raise ValueError(f"{path}: key is {len(key)} bytes, expected 32")
    return key


MODEM_BAUDS = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
RESET_METHODS = ("cfun11", "cfun01")


@dataclass(frozen=True)
class ModemConfig:
    """The ``[modem]`` table. Times are seconds (monotonic, real)."""

    port: str
    baud: int = 115200
    poll_s: float = 60.0
    dead_link_s: float = 300.0  # down this long = an outage: reset the module
    reset_backoff_min_s: float = 60.0
    reset_backoff_max_s: float = 3600.0
    reset_method: str = "cfun11"
    # CSQ 9 (-95 dBm) and below: GPRS throughput collapses and retransmissions eat the
    # data plan; installers' rule of thumb is CSQ >= 10 [M].
    weak_signal_dbm: int = -95
    signal_history: int = 1440  # a day of samples at the default poll_s
    hung_probe_tries: int = 3
    command_timeout_s: float = AtTimeouts.default_s
    reset_timeout_s: float = AtTimeouts.cfun_s
    attach_timeout_s: float = AtTimeouts.cgatt_s
    operator_timeout_s: float = AtTimeouts.cops_s
    boot_timeout_s: float = AtTimeouts.boot_s
    power_cycle_command: str = ""  # e.g. "gpioset --mode=time -s 2 gpiochip0 17=0"

    def timeouts(self) -> AtTimeouts:
        return AtTimeouts(
            default_s=self.command_timeout_s,
            cfun_s=self.reset_timeout_s,
            cgatt_s=self.attach_timeout_s,
            cops_s=self.operator_timeout_s,
            boot_s=self.boot_timeout_s,
        )


@dataclass(frozen=True)
class UpdateConfig:
    """The ``[update]`` table. Without it the concentrator takes no upgrades."""

    release_key_file: Path
    # Where releases live; relative to the config file. Default: beside the store.
    releases_dir: Path | None = None
    chunk_timeout_s: float = 30.0  # no answer: ask again (a lost request or chunk)
    download_bps: int = 0  # cap on the download rate, to leave the GPRS link to data
    max_chunk_refusals: int = 5  # the same chunk refused this often: the upgrade fails

    def release_key(self) -> Ed25519PublicKey:
        return load_public_key(self.release_key_file, "release key")


@dataclass(frozen=True)
class MetricsConfig:
    """The ``[metrics]`` table: the Prometheus endpoint (`concentrator.control.prometheus`).
    Without it no port is opened and prometheus_client is never imported (RSS budget)."""

    port: int
    # Loopback unless the utility's network is meant to reach it (docs/metrics.md).
    address: str = "127.0.0.1"


# ---------------------------------------------------------------------- the file


@dataclass(frozen=True)
class Config:
    concentrator: ConcentratorSection
    storage: StorageSection
    buses: tuple[BusConfig, ...]
    meters: tuple[MeterConfig, ...]
    tasks: tuple[TaskConfig, ...]
    uplink: UplinkConfig | None = None
    modem: ModemConfig | None = None
    update: UpdateConfig | None = None  # needs an uplink: updates arrive over it
    metrics: MetricsConfig | None = None
    format: int = 1
    # What the check said without refusing the file (a serial port not there yet).
    warnings: tuple[ConfigIssue, ...] = field(default=(), compare=False)

    @property
    def releases_dir(self) -> Path:
        """The A/B release directory of the updater and the guard (`concentrator.update`)."""
        if self.update is not None and self.update.releases_dir is not None:
            return self.update.releases_dir
        return self.storage.path.parent / "releases"


def parse_cadence(text: str) -> Cadence:
    """A period that divides a day ("30s", "15m", "1h") or "daily@HH:MM"; else ValueError."""
    if m := _DAILY_RE.fullmatch(text):
        hh, mm = int(m[1]), int(m[2])
        if hh > 23 or mm > 59:
            raise ValueError(f'"{text}": time of day must be 00:00..23:59')
        return Cadence(text, DAY_S, hh * 3600 + mm * 60)
    if m := _PERIOD_RE.fullmatch(text):
        period = int(m[1]) * {"s": 1, "m": 60, "h": 3600}[m[2]]
        if period == 0 or DAY_S % period:
            raise ValueError(f'"{text}" does not divide a day into equal slots')
        return Cadence(text, period)
    raise ValueError(
        f'"{text}" is not a cadence; expected e.g. "1m", "5m", "15m", "30m", "1h" or "daily@HH:MM"'
    )
