"""Software update packages: one definition, used by the receiver (which builds and
serves them) and the concentrator (which downloads, checks and installs them).

A package file (``.mfpkg``) is a CBOR map ``{"format", "manifest", "signature",
"payload"}``:

- ``payload``: a tar archive of the files to install (wheels), in name order, with
  zeroed owners and times, so the same wheels always give the same bytes.
- ``manifest``: canonical CBOR describing the payload — the version, each file's name,
  size and SHA-256, the payload's size and SHA-256, the chunk size and the SHA-256 of
  every chunk, and what the package needs of the device it lands on (config format,
  uplink wire-format range, store schema).
- ``signature``: Ed25519 over the manifest bytes, with the utility's release key.

Over MQTT only the manifest and its signature travel in the (signed) upgrade command;
the payload follows in chunks that are each checked against the manifest on arrival, so
a corrupt or truncated chunk is refused at once and fetched again, and a download cut
half way resumes after the last good chunk. Nothing is installed before the whole
payload and every file in it match the signed manifest.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from packaging.version import InvalidVersion, Version

FORMAT = 1
DEFAULT_CHUNK_BYTES = 16 * 1024  # one lost chunk costs little on GPRS
MAX_CHUNK_BYTES = 256 * 1024  # below Mosquitto's and paho's message limits by far
MAX_PAYLOAD_BYTES = 256 * 1024 * 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")

Reason = Literal[
    "bad_package",
    "bad_manifest",
    "bad_signature",
    "bad_chunk",
    "truncated",
    "bad_hash",
    "bad_archive",
    "incompatible",
    "not_newer",
]


class PackageError(Exception):
    """A package, chunk or manifest that is refused; ``reason`` is a short code, the
    message says what was expected."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: Reason = reason


@dataclass(frozen=True)
class FileEntry:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Requirements:
    """What the package needs of the device: a config file of at least this format, an
    uplink wire format it can still send (the device's config may pin one), and a store
    that the *running* version can still open after the package migrated it — otherwise
    a rollback would strand the readings."""

    min_config_format: int
    min_wire_version: int
    max_wire_version: int
    store_schema: int
    store_min_reader: int


@dataclass(frozen=True)
class Manifest:
    version: str
    files: tuple[FileEntry, ...]
    payload_size: int
    payload_sha256: str
    chunk_size: int
    chunks: tuple[str, ...]
    requires: Requirements
    built_at: float

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT,
            "version": self.version,
            "files": [[f.name, f.size, f.sha256] for f in self.files],
            "payload": [self.payload_size, self.payload_sha256],
            "chunk_size": self.chunk_size,
            "chunks": list(self.chunks),
            "requires": {
                "config_format": self.requires.min_config_format,
                "wire": [self.requires.min_wire_version, self.requires.max_wire_version],
                "store_schema": self.requires.store_schema,
                "store_min_reader": self.requires.store_min_reader,
            },
            "built_at": self.built_at,
        }
        return cbor2.dumps(doc, canonical=True)

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        try:
            doc = cbor2.loads(data)
        except Exception as exc:  # cbor2 raises several types for bad input
            raise PackageError("bad_manifest", f"not CBOR: {exc}") from None
        if not isinstance(doc, dict):
            raise PackageError("bad_manifest", f"a {type(doc).__name__}, expected a map")
        if doc.get("format") != FORMAT:
            raise PackageError("bad_manifest", f"format {doc.get('format')!r}, expected {FORMAT}")
        version = _get(doc, "version", str)
        parse_version(version)
        files = []
        for i, row in enumerate(_get(doc, "files", list)):
            if not (isinstance(row, list) and len(row) == 3):
                raise PackageError("bad_manifest", f"files[{i}]: expected [name, size, sha256]")
            name, size, digest = row
            _check_name(name, f"files[{i}]")
            files.append(
                FileEntry(name, _int(size, f"files[{i}].size"), _hex(digest, f"files[{i}]"))
            )
        if len({f.name for f in files}) != len(files) or not files:
            raise PackageError("bad_manifest", "files: expected at least one, names unique")
        payload = _get(doc, "payload", list)
        if len(payload) != 2:
            raise PackageError("bad_manifest", "payload: expected [size, sha256]")
        size = _int(payload[0], "payload.size")
        if size > MAX_PAYLOAD_BYTES:
            raise PackageError("bad_manifest", f"payload.size {size} > {MAX_PAYLOAD_BYTES}")
        chunk_size = _int(_get(doc, "chunk_size", int), "chunk_size")
        if not 1 <= chunk_size <= MAX_CHUNK_BYTES:
            raise PackageError("bad_manifest", f"chunk_size {chunk_size}: 1..{MAX_CHUNK_BYTES}")
        chunks = tuple(_hex(h, f"chunks[{i}]") for i, h in enumerate(_get(doc, "chunks", list)))
        if len(chunks) != -(-size // chunk_size):
            raise PackageError(
                "bad_manifest", f"{len(chunks)} chunk hashes for {size} bytes of {chunk_size}"
            )
        req = _get(doc, "requires", dict)
        wire = req.get("wire")
        if not (isinstance(wire, list) and len(wire) == 2):
            raise PackageError("bad_manifest", "requires.wire: expected [min, max]")
        requires = Requirements(
            min_config_format=_int(req.get("config_format"), "requires.config_format"),
            min_wire_version=_int(wire[0], "requires.wire[0]"),
            max_wire_version=_int(wire[1], "requires.wire[1]"),
            store_schema=_int(req.get("store_schema"), "requires.store_schema"),
            store_min_reader=_int(req.get("store_min_reader"), "requires.store_min_reader"),
        )
        built_at = doc.get("built_at")
        if not isinstance(built_at, int | float):
            raise PackageError("bad_manifest", "built_at: expected a number")
        return cls(
            version=version,
            files=tuple(files),
            payload_size=size,
            payload_sha256=_hex(payload[1], "payload.sha256"),
            chunk_size=chunk_size,
            chunks=chunks,
            requires=requires,
            built_at=float(built_at),
        )

    def chunk_range(self, index: int) -> tuple[int, int]:
        """(offset, length) of chunk ``index``."""
        if not 0 <= index < len(self.chunks):
            raise PackageError("bad_chunk", f"chunk {index}: expected 0..{len(self.chunks) - 1}")
        offset = index * self.chunk_size
        return offset, min(self.chunk_size, self.payload_size - offset)


def encode_request(version: str, index: int) -> bytes:
    return cbor2.dumps({"v": version, "i": index})


def decode_request(data: bytes) -> tuple[str, int]:
    doc = _small_map(data, "request")
    version, index = doc.get("v"), doc.get("i")
    if not isinstance(version, str) or not isinstance(index, int) or isinstance(index, bool):
        raise PackageError("bad_chunk", "request: expected {v: version text, i: chunk index}")
    return version, index


def encode_chunk(version: str, index: int, data: bytes) -> bytes:
    return cbor2.dumps({"v": version, "i": index, "d": data})


def decode_chunk(data: bytes) -> tuple[str, int, bytes]:
    doc = _small_map(data, "chunk")
    version, index, body = doc.get("v"), doc.get("i"), doc.get("d")
    if (
        not isinstance(version, str)
        or not isinstance(index, int)
        or isinstance(index, bool)
        or not isinstance(body, bytes)
    ):
        raise PackageError("bad_chunk", "chunk: expected {v: version, i: index, d: bytes}")
    return version, index, body


def _small_map(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_CHUNK_BYTES + 1024:
        raise PackageError("bad_chunk", f"{what}: {len(data)} bytes is more than any chunk")
    try:
        doc = cbor2.loads(data)
    except Exception as exc:
        raise PackageError("bad_chunk", f"{what}: not CBOR: {exc}") from None
    if not isinstance(doc, dict):
        raise PackageError("bad_chunk", f"{what}: expected a CBOR map")
    return doc


def _get(doc: dict[str, Any], key: str, kind: type) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise PackageError("bad_manifest", f"{key}: expected a {kind.__name__}")
    return value


def _int(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PackageError("bad_manifest", f"{what}: expected a non-negative integer")
    return value


def _hex(value: object, what: str) -> str:
    if not (isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value)):
        raise PackageError("bad_manifest", f"{what}: expected a SHA-256 in lower-case hex")
    return value


def _check_name(name: object, what: str) -> None:
    if not (isinstance(name, str) and _NAME.fullmatch(name)) or ".." in str(name):
        raise PackageError("bad_manifest", f"{what}: {name!r} is not a plain file name")


def parse_version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise PackageError("bad_manifest", f"version {text!r} is not a PEP 440 version") from None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------ building (receiver)


@dataclass(frozen=True)
class Package:
    manifest: bytes
    signature: bytes
    payload: bytes

    def to_bytes(self) -> bytes:
        return cbor2.dumps(
            {
                "format": FORMAT,
                "manifest": self.manifest,
                "signature": self.signature,
                "payload": self.payload,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Package:
        try:
            doc = cbor2.loads(data)
        except Exception as exc:
            raise PackageError("bad_package", f"not a package file (CBOR): {exc}") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise PackageError("bad_package", f"expected a map with format {FORMAT}")
        manifest, signature, payload = (doc.get(k) for k in ("manifest", "signature", "payload"))
        if not (
            isinstance(manifest, bytes)
            and isinstance(signature, bytes)
            and isinstance(payload, bytes)
        ):
            raise PackageError("bad_package", "manifest, signature and payload must be bytes")
        return cls(manifest, signature, payload)


def build(
    files: Sequence[Path],
    *,
    version: str,
    key: Ed25519PrivateKey,
    requires: Requirements,
    chunk_size: int = DEFAULT_CHUNK_BYTES,
    built_at: float,
) -> Package:
    """Sign a package of ``files`` (wheels) as ``version``."""
    parse_version(version)
    if not 1 <= chunk_size <= MAX_CHUNK_BYTES:
        raise ValueError(f"chunk size {chunk_size}: expected 1..{MAX_CHUNK_BYTES}")
    entries = []
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(files, key=lambda p: p.name):
            _check_name(path.name, str(path))
            data = path.read_bytes()
            entries.append(FileEntry(path.name, len(data), sha256(data)))
            info = tarfile.TarInfo(path.name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    if len({e.name for e in entries}) != len(entries):
        raise ValueError("two files with the same name")
    payload = buf.getvalue()
    chunks = tuple(sha256(payload[i : i + chunk_size]) for i in range(0, len(payload), chunk_size))
    manifest = Manifest(
        version=version,
        files=tuple(entries),
        payload_size=len(payload),
        payload_sha256=sha256(payload),
        chunk_size=chunk_size,
        chunks=chunks,
        requires=requires,
        built_at=built_at,
    ).to_bytes()
    return Package(manifest, key.sign(manifest), payload)


# ------------------------------------------------------------ checking (concentrator)


def verify_manifest(manifest: bytes, signature: bytes, key: Ed25519PublicKey) -> Manifest:
    """The manifest, if ``signature`` is the release key's over exactly these bytes."""
    try:
        key.verify(signature, manifest)
    except InvalidSignature:
        raise PackageError(
            "bad_signature", "the manifest's signature does not verify with the release key"
        ) from None
    return Manifest.from_bytes(manifest)


def check_chunk(m: Manifest, index: int, data: bytes) -> None:
    _, length = m.chunk_range(index)
    if len(data) != length:
        kind: Reason = "truncated" if len(data) < length else "bad_chunk"
        raise PackageError(kind, f"chunk {index}: {len(data)} bytes, expected {length}")
    if sha256(data) != m.chunks[index]:
        raise PackageError("bad_hash", f"chunk {index}: SHA-256 differs from the manifest")


def check_payload(m: Manifest, payload: bytes) -> None:
    if len(payload) != m.payload_size:
        raise PackageError(
            "truncated", f"payload is {len(payload)} bytes, expected {m.payload_size}"
        )
    if sha256(payload) != m.payload_sha256:
        raise PackageError("bad_hash", "payload SHA-256 differs from the manifest")


def extract(m: Manifest, payload: bytes, dest: Path) -> list[Path]:
    """Write the payload's files into ``dest`` after checking every one against the
    manifest: exactly the listed names, regular files, sizes and SHA-256."""
    check_payload(m, payload)
    expected = {f.name: f for f in m.files}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:") as tar:
            for member in tar.getmembers():
                if not member.isfile() or member.name not in expected:
                    raise PackageError(
                        "bad_archive", f"member {member.name!r} is not a file in the manifest"
                    )
                fh = tar.extractfile(member)
                assert fh is not None
                found[member.name] = fh.read()
    except tarfile.TarError as exc:
        raise PackageError("bad_archive", f"payload is not a tar archive: {exc}") from None
    for name, entry in expected.items():
        data = found.get(name)
        if data is None:
            raise PackageError("bad_archive", f"{name}: listed in the manifest, not in the payload")
        if len(data) != entry.size or sha256(data) != entry.sha256:
            raise PackageError("bad_hash", f"{name}: size or SHA-256 differs from the manifest")
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for name, data in found.items():
        path = dest / name
        path.write_bytes(data)
        out.append(path)
    return out


@dataclass(frozen=True)
class Device:
    """What the package is checked against on the concentrator."""

    version: str
    config_format: int
    wire_version: int
    store_schema: int


def check_compatible(m: Manifest, device: Device) -> None:
    """Refuse a package that is not newer, or whose needs this device cannot meet."""
    if parse_version(m.version) <= parse_version(device.version):
        raise PackageError(
            "not_newer", f"version {m.version} is not newer than the running {device.version}"
        )
    r = m.requires
    if device.config_format < r.min_config_format:
        raise PackageError(
            "incompatible",
            f"needs config format {r.min_config_format}, this config file is format "
            f"{device.config_format}: migrate the config first",
        )
    if not r.min_wire_version <= device.wire_version <= r.max_wire_version:
        raise PackageError(
            "incompatible",
            f"sends wire formats {r.min_wire_version}..{r.max_wire_version}, this "
            f"concentrator is pinned to {device.wire_version}",
        )
    if r.store_min_reader > device.store_schema:
        raise PackageError(
            "incompatible",
            f"migrates the store so that only schema {r.store_min_reader}+ can open it; the "
            f"running version (schema {device.store_schema}) could not roll back to it",
        )
