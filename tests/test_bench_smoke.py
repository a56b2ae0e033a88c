"""The benchmarks still run and print their BENCH lines (figures are judged by `make bench`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_codec_benchmark_prints_its_figures() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "codec.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    names = re.findall(r"^BENCH (\S+) ([0-9.]+) (\S+)$", out, re.M)
    assert {n for n, _, _ in names} >= {
        "dlt645_decode_us",
        "modbus_decode_us",
        "dlt698_decode_us",
        "bus_efficiency_2400",
    }


def _bench(script: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    return {n for n, _, _ in re.findall(r"^BENCH (\S+) ([0-9.]+) (\S+)$", out, re.M)}


def test_wire_benchmark_prints_its_figures() -> None:
    assert _bench("wire.py") >= {
        "uplink_bytes_per_reading_live",
        "uplink_bytes_per_reading_backlog",
        "json_bytes_per_reading",
        "json_to_backlog_ratio",
    }


def test_receiver_benchmark_prints_its_figures() -> None:
    assert _bench("receiver.py") >= {
        "receiver_ingest_sqlite_rps",
        "receiver_ingest_postgres_rps",
        "backlog_drain_rps",
    }


def test_ingest_stages_benchmark_prints_its_figures() -> None:
    assert _bench("ingest_stages.py") >= {
        "ingest_open_readings_per_s",
        "ingest_store_sqlite_readings_per_s",
        "ingest_store_postgres_readings_per_s",
    }


def test_daemon_benchmark_prints_its_figures() -> None:
    assert _bench("daemon.py") >= {
        "daemon_bus_efficiency_2400",
        "daemon_reads_per_s_core",
        "pymodbus_client_reads_per_cpu_s",
        "daemon_vs_pymodbus_cpu_ratio",
        "daemon_peak_rss_mb",
        "daemon_uplink_rss_mb",
        "daemon_peak_rss_uplink_mb",
        "store_commit_rps",
        "store_bytes_per_reading",
        "store_encrypted_commit_rps",
        "store_encrypted_ratio",
    }


def test_plc_benchmark_prints_its_figures() -> None:
    assert _bench("plc.py") >= {"plc_in_slot_rate", "plc_naive_in_slot_rate"}


def test_forecast_benchmark_prints_its_figures() -> None:
    assert _bench("forecast.py") >= {"forecast_mape", "naive_mape"}


@pytest.mark.long  # 52 s; `make bench` runs it
def test_scan_benchmark_prints_its_figures() -> None:
    assert _bench("scan.py") >= {
        "scan_found_fraction_9600_2pct",
        "scan_found_fraction_2400_2pct",
        "scan_wrong_success",
        "scan_probes_per_meter_4_9600",
        "scan_probes_per_meter_16_2400",
    }


def test_metrics_benchmark_prints_its_figures() -> None:
    assert _bench("metrics.py") >= {
        "receiver_metrics_refresh_ms_sqlite",
        "receiver_metrics_refresh_ms_postgres",
        "concentrator_metrics_rss_mb",
        "concentrator_metrics_scrape_gzip_bytes",
    }


@pytest.mark.long  # 64 s; `make bench` runs it
def test_loadprofile_benchmark_prints_its_figures() -> None:
    assert _bench("loadprofile.py") >= {
        "collection_completeness_after_outage",
        "backfill_intervals_per_s_2400",
        "backfill_wire_limit_intervals_per_s_2400",
        "backfill_wire_ratio_2400",
    }


def test_api_benchmark_prints_its_figures() -> None:
    assert _bench("api.py") >= {
        "api_readings_rps",
        "api_page_p95_ms",
        "api_direct_rps",
        "api_readings_share",
    }


def test_portal_benchmark_prints_its_figures() -> None:
    assert _bench("portal.py") >= {
        "portal_month_view_p95_ms",
        "portal_month_api_p95_ms",
        "portal_month_query_p95_ms",
        "portal_month_query_pk_only_p95_ms",
        "portal_db_readings",
    }
