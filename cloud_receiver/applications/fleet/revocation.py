"""Certificate revocation and renewal: the ledger ``revoked.json`` and the CRL ``crl.pem``.

Two things end a certificate's trust (docs/architecture.md, "Keys: revocation and
rotation"):

- ``revoke`` of a concentrator (stolen, decommissioned): every certificate it holds goes
  into the CRL at once, and the concentrator itself is marked revoked, so the receivers
  quarantine its batches (reason ``revoked``) even if they come by another path;
- a renewal: a new certificate for the same CN, written under the same file names; the
  one it replaces stays valid for a grace period (the device still uses it until its
  operator copies the new files and sends SIGHUP), then enters the CRL at the next
  `write_crl` — or at once with ``revoke --superseded``.

The CRL is a version 2 CRL signed by the deployment CA (RFC 5280 §5) with a
``nextUpdate``: Mosquitto's ``crlfile`` makes OpenSSL check every client certificate
against it at the TLS handshake, and OpenSSL refuses *every* client once ``nextUpdate``
has passed (X509_V_ERR_CRL_HAS_EXPIRED), so ``cloud-receiver crl`` must run well within
`CRL_VALIDITY` (a daily timer). Mosquitto 2.0 re-reads ``crlfile`` (with its server
certificate and key) on SIGHUP — ``systemctl reload mosquitto`` — and checks the new
CRL from the next handshake on; a client connected before keeps its connection, which
is why the receivers refuse a revoked concentrator's batches too (checked against
2.0.11 in tests/test_revocation.py).

Ledger layout::

    {"concentrators": {"<id>": {"revoked_at": unix, "reason": "..."}},
     "certificates": [{"serial": "<hex>", "concentrator": "<id>",
                       "revoke_at": unix, "reason": "superseded|key_compromise|..."}]}

A certificate whose ``revoke_at`` has come is in the CRL; one whose ``revoke_at`` is
still ahead is superseded but inside its grace period. The receiver side reads only
``concentrators`` (`cloud_receiver.ingest.keys.Revocations`).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from cloud_receiver.applications.fleet import pki
from cloud_receiver.applications.fleet.pki import PkiError
from cloud_receiver.ingest.keys import REVOCATIONS

CRL_FILE = "crl.pem"
# How long a written CRL stays valid: `cloud-receiver crl` (a daily timer) must rewrite
# it before then, or the broker refuses every client.
CRL_VALIDITY = dt.timedelta(days=30)
# How long a renewed concentrator may still use its old certificate by default: enough
# for a field visit or a scheduled file copy.
DEFAULT_GRACE = dt.timedelta(days=7)

REASONS: dict[str, x509.ReasonFlags] = {
    "key_compromise": x509.ReasonFlags.key_compromise,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "superseded": x509.ReasonFlags.superseded,
}


@dataclass(frozen=True)
class CertEntry:
    serial: int
    concentrator: str
    revoke_at: float
    reason: str

    def revoked(self, now: float) -> bool:
        return self.revoke_at <= now


@dataclass
class Ledger:
    concentrators: dict[str, dict[str, Any]]
    certificates: list[CertEntry]

    def doc(self) -> dict[str, Any]:
        return {
            "concentrators": dict(sorted(self.concentrators.items())),
            "certificates": [
                {
                    "serial": f"{c.serial:x}",
                    "concentrator": c.concentrator,
                    "revoke_at": c.revoke_at,
                    "reason": c.reason,
                }
                for c in self.certificates
            ],
        }


@dataclass(frozen=True)
class Renewal:
    concentrator: str
    old_serial: int
    new_serial: int
    old_revoked_at: float  # when the old certificate enters the CRL
    cert_file: Path


def _now() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


def load_ledger(pki_dir: Path | str) -> Ledger:
    path = Path(pki_dir) / REVOCATIONS
    if not path.exists():
        return Ledger({}, [])
    try:
        doc = json.loads(path.read_text())
        return Ledger(
            {str(k): dict(v) for k, v in doc.get("concentrators", {}).items()},
            [
                CertEntry(
                    int(c["serial"], 16), str(c["concentrator"]), float(c["revoke_at"]), c["reason"]
                )
                for c in doc.get("certificates", [])
            ],
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PkiError(f"{path}: not a revocation ledger: {exc}") from None


@contextmanager
def _ledger_locked(pki_dir: Path) -> Iterator[Ledger]:
    """Read-modify-write of the ledger, serialised between concurrent runs; the ledger
    is saved when the block ends without an error."""
    lock_path = pki_dir / f".{REVOCATIONS}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        ledger = load_ledger(pki_dir)
        yield ledger
        text = json.dumps(ledger.doc(), indent=2) + "\n"
        pki._write_public(pki_dir / REVOCATIONS, text.encode())
    finally:
        os.close(fd)


def _current_cert(pki_dir: Path, concentrator_id: str) -> tuple[Path, x509.Certificate]:
    pki.validate_concentrator_id(concentrator_id)
    path = pki_dir / "concentrators" / concentrator_id / f"{concentrator_id}.crt"
    if not path.exists():
        raise PkiError(
            f"concentrator {concentrator_id!r} has no certificate in {pki_dir}"
            f" (expected {path}); `cloud-receiver provision` issues one"
        )
    try:
        return path, x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise PkiError(f"{path}: not a PEM certificate: {exc}") from None


def revoke_concentrator(
    pki_dir: Path | str,
    concentrator_id: str,
    *,
    reason: str = "key_compromise",
    now: float | None = None,
) -> list[int]:
    """Revoke every certificate of ``concentrator_id`` now and mark it revoked for the
    receivers; rewrite the CRL. Returns the serials that entered the CRL by this call."""
    pki_dir = Path(pki_dir)
    if reason not in REASONS or reason == "superseded":
        raise PkiError(
            f"revocation reason {reason!r} is not one of key_compromise, cessation_of_operation"
        )
    at = _now() if now is None else now
    _, cert = _current_cert(pki_dir, concentrator_id)
    with _ledger_locked(pki_dir) as ledger:
        newly = _revoke_now(ledger, concentrator_id, at, include=cert.serial_number, why=reason)
        ledger.concentrators.setdefault(concentrator_id, {"revoked_at": at, "reason": reason})
    write_crl(pki_dir, now=at)
    return newly


def revoke_superseded(
    pki_dir: Path | str, concentrator_id: str, *, now: float | None = None
) -> list[int]:
    """End the grace period of the certificates ``concentrator_id``'s renewals replaced:
    they enter the CRL now; the current certificate stays valid."""
    pki_dir = Path(pki_dir)
    at = _now() if now is None else now
    _current_cert(pki_dir, concentrator_id)
    with _ledger_locked(pki_dir) as ledger:
        newly = _revoke_now(ledger, concentrator_id, at, include=None, why="superseded")
    write_crl(pki_dir, now=at)
    return newly


def _revoke_now(
    ledger: Ledger, concentrator_id: str, at: float, *, include: int | None, why: str
) -> list[int]:
    newly: list[int] = []
    kept: list[CertEntry] = []
    for entry in ledger.certificates:
        if entry.concentrator == concentrator_id and not entry.revoked(at):
            entry = CertEntry(entry.serial, entry.concentrator, at, entry.reason)
            newly.append(entry.serial)
        kept.append(entry)
    if include is not None and all(e.serial != include for e in kept):
        kept.append(CertEntry(include, concentrator_id, at, why))
        newly.append(include)
    ledger.certificates[:] = kept
    return newly


def renew_certificate(
    pki_dir: Path | str,
    concentrator_id: str,
    *,
    grace: dt.timedelta = DEFAULT_GRACE,
    now: float | None = None,
) -> Renewal:
    """Issue a new certificate (and key) for the same CN under the same file names; the
    old one is recorded as superseded and enters the CRL when ``grace`` has passed."""
    pki_dir = Path(pki_dir)
    at = _now() if now is None else now
    if grace < dt.timedelta(0):
        raise PkiError(f"grace period {grace} is negative")
    _, old = _current_cert(pki_dir, concentrator_id)
    with _ledger_locked(pki_dir) as ledger:
        if concentrator_id in ledger.concentrators:
            raise PkiError(
                f"concentrator {concentrator_id!r} is revoked; a revoked concentrator gets no"
                " new certificate (provision the device under a new id)"
            )
        revoke_at = at + grace.total_seconds()
        ledger.certificates.append(
            CertEntry(old.serial_number, concentrator_id, revoke_at, "superseded")
        )
        out = pki_dir / "concentrators" / concentrator_id
        cert_file, _ = pki.issue_client_cert(pki_dir, concentrator_id, out_dir=out)
    new = x509.load_pem_x509_certificate(cert_file.read_bytes())
    write_crl(pki_dir, now=at)
    return Renewal(concentrator_id, old.serial_number, new.serial_number, revoke_at, cert_file)


def write_crl(
    pki_dir: Path | str, *, now: float | None = None, validity: dt.timedelta = CRL_VALIDITY
) -> Path:
    """Write ``crl.pem``: every ledger certificate whose ``revoke_at`` has come, signed
    by the CA, valid until ``now + validity``."""
    pki_dir = Path(pki_dir)
    at = _now() if now is None else now
    if validity <= dt.timedelta(0):
        raise PkiError(f"CRL validity {validity} must be positive")
    ca_cert, ca_key = pki._load_ca(pki_dir)
    this_update = dt.datetime.fromtimestamp(at, dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(this_update - pki.BACKDATE)
        .next_update(min(this_update + validity, ca_cert.not_valid_after_utc))
        .add_extension(x509.CRLNumber(int(at * 1000)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
    )
    for entry in load_ledger(pki_dir).certificates:
        if not entry.revoked(at):
            continue
        revoked = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(dt.datetime.fromtimestamp(entry.revoke_at, dt.UTC))
            .add_extension(x509.CRLReason(REASONS[entry.reason]), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(revoked)
    crl = builder.sign(ca_key, hashes.SHA256())
    path = pki_dir / CRL_FILE
    pki._write_public(path, crl.public_bytes(serialization.Encoding.PEM))
    return path


def pending(pki_dir: Path | str, *, now: float | None = None) -> list[CertEntry]:
    """Superseded certificates still inside their grace period, soonest first."""
    at = _now() if now is None else now
    waiting = [e for e in load_ledger(pki_dir).certificates if not e.revoked(at)]
    return sorted(waiting, key=lambda e: e.revoke_at)
