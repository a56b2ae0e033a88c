"""Every kind of event the concentrator records, in one place: ``concentrator events
--kind`` takes exactly these (a misspelt kind is refused with this list, not answered
with nothing), and a test keeps the list equal to the kinds the code records."""

from __future__ import annotations

EVENT_KINDS: tuple[str, ...] = (
    # the daemon and its store
    "daemon_start", "daemon_stop", "config_reloaded", "config_reload_failed",
    "config_reload_refused", "store_integrity", "store_corrupt", "loss", "reading_rejected",
    "metrics_unavailable", "upgrade", "store_encrypted", "held_journal_damaged",
    # meters and buses
    "meter_state", "bus_port_down", "bus_port_back", "relay", "time_sync", "clock_drift",
    "command",
    # the day's collection completeness, sent up after local midnight (control.completeness)
    "collection_day",
    # the meter archive the utility pushes down, and commissioning mode
    "archive_refused", "commissioning",
    # carrier (PLC) modules
    "plc_module_down", "plc_module_back", "plc_module_reset", "plc_node_readded",
    "plc_route_status", "plc_routes_synced", "plc_unknown_meter", "plc_config_mismatch",
    # the cellular modem (concentrator.uplink.modem: "modem_" + its event's kind)
    "modem_outage_start", "modem_outage_end", "modem_reset", "modem_hung",
    "modem_weak_signal", "modem_signal_restored",
)  # fmt: skip


def kind_problem(kind: str) -> str | None:
    """What is wrong with ``kind`` as an event kind (None: it is one)."""
    if kind in EVENT_KINDS:
        return None
    return f"unknown event kind {kind!r}: expected one of {', '.join(sorted(EVENT_KINDS))}"
