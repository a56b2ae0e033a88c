"""The configuration file: its typed model and the one checker that reads it.

Owns the TOML format of ``concentrator.toml`` (every table, the services ones
included), the frozen dataclasses the rest of the daemon is given, and the issues a
check reports as ``FILE:LINE: FIELD: message``. This module is its interface: other
packages import from here.
"""

from concentrator.config.checker import check_config, load_config
from concentrator.config.issues import ConfigError, ConfigIssue
from concentrator.config.model import (
    DEFAULT_CONTROL_SOCKET,
    DEFAULT_GROUP,
    BusConfig,
    Cadence,
    ConcentratorSection,
    Config,
    MeterConfig,
    MetricsConfig,
    ModemConfig,
    StorageSection,
    TaskConfig,
    UpdateConfig,
    UplinkConfig,
    parse_cadence,
)

__all__ = [
    "DEFAULT_CONTROL_SOCKET",
    "DEFAULT_GROUP",
    "BusConfig",
    "Cadence",
    "ConcentratorSection",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "MeterConfig",
    "MetricsConfig",
    "ModemConfig",
    "StorageSection",
    "TaskConfig",
    "UpdateConfig",
    "UplinkConfig",
    "check_config",
    "load_config",
    "parse_cadence",
]
