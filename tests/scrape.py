"""Scraping a Prometheus endpoint as Prometheus does (real HTTP, the text format parsed
by prometheus_client's own parser), and the TCP ports a process listens on (/proc)."""

from __future__ import annotations

import gzip
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    """One scrape: the samples by (name, labels), and the families' types."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]
    types: dict[str, str]

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, frozenset(labels.items())))

    def get(self, name: str, **labels: str) -> float:
        value = self.value(name, **labels)
        assert value is not None, f"no sample {name}{labels or ''}; have {self.names()}"
        return value

    def total(self, name: str) -> float:
        """The sum over every label set of ``name`` (e.g. over the buses)."""
        return sum(v for (n, _), v in self.samples.items() if n == name)

    def labels(self, name: str, label: str) -> dict[str, float]:
        return {
            dict(labels)[label]: v
            for (n, labels), v in self.samples.items()
            if n == name and label in dict(labels)
        }

    def names(self) -> list[str]:
        return sorted({n for n, _ in self.samples})


def fetch(
    url: str, *, gzip_ok: bool = False, timeout: float = 30.0
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Accept-Encoding": "gzip"} if gzip_ok else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def scrape(url: str, *, timeout: float = 30.0) -> Scrape:
    status, headers, body = fetch(url, gzip_ok=True, timeout=timeout)
    assert status == 200, (status, body[:200])
    assert headers["Content-Type"].startswith("text/plain; version=")
    if headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(body.decode()):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return Scrape(samples, types)


def try_scrape(url: str) -> Scrape | None:
    """The scrape, or None while nothing answers there."""
    try:
        return scrape(url, timeout=5.0)
    except (OSError, AssertionError):
        return None


def listening_ports(pid: int) -> set[int]:
    """TCP ports (IPv4 and IPv6) on which process ``pid`` holds a listening socket."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: TCP_LISTEN
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "prometheus"


def example_metric_names(prefix: str) -> set[str]:
    """Every metric the example alerting rules use that starts with ``prefix``."""
    text = (EXAMPLES / "meterflow-rules.yml").read_text()
    return set(re.findall(rf"\b{prefix}[a-z_]+", text))
