"""Update packages (`contract.package`) and the receiver's rollout bookkeeping
(`cloud_receiver.applications.fleet.rollout`) on SQLite and PostgreSQL: refusals with
their reasons, fuzzed manifests and chunk messages, and stages that open only on
health."""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers import Operators, receiver_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_receiver.applications.fleet import rollout as ro
from cloud_receiver.storage import Storage
from contract import commands as wire_commands
from contract import package
from contract.records import Event

KEY = Ed25519PrivateKey.generate()
REQ = package.Requirements(
    min_config_format=1, min_wire_version=1, max_wire_version=2, store_schema=2, store_min_reader=2
)
DEVICE = package.Device("0.1.0", config_format=1, wire_version=2, store_schema=2)


def build(
    tmp_path: Path, version: str = "0.2.0", size: int = 10_000, **kw: object
) -> package.Package:
    wheel = tmp_path / f"meterflow-{version}-py3-none-any.whl"
    wheel.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    args: dict[str, object] = {"version": version, "key": KEY, "requires": REQ,
                               "chunk_size": 1024, "built_at": 1.0}  # fmt: skip
    args.update(kw)
    return package.build([wheel], **args)  # type: ignore[arg-type]


def test_a_package_round_trips_and_extracts_what_was_signed(tmp_path: Path) -> None:
    pkg = package.Package.from_bytes(build(tmp_path).to_bytes())
    m = package.verify_manifest(pkg.manifest, pkg.signature, KEY.public_key())
    assert m.version == "0.2.0" and len(m.chunks) == -(-len(pkg.payload) // 1024)
    for i in range(len(m.chunks)):
        offset, length = m.chunk_range(i)
        package.check_chunk(m, i, pkg.payload[offset : offset + length])
    [wheel] = package.extract(m, pkg.payload, tmp_path / "out")
    assert wheel.read_bytes() == (tmp_path / wheel.name).read_bytes()
    # The same wheels give the same bytes (a version names one payload for ever).
    assert build(tmp_path).payload == pkg.payload


def test_bad_signature_wrong_hash_and_truncated_chunk_are_refused(tmp_path: Path) -> None:
    pkg = build(tmp_path)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(package.PackageError, match="bad_signature"):
        package.verify_manifest(pkg.manifest, other.sign(pkg.manifest), KEY.public_key())
    with pytest.raises(package.PackageError, match="bad_signature"):  # one changed byte
        flipped = pkg.manifest[:-1] + bytes([pkg.manifest[-1] ^ 1])
        package.verify_manifest(flipped, pkg.signature, KEY.public_key())
    m = package.Manifest.from_bytes(pkg.manifest)
    chunk = pkg.payload[1024:2048]
    with pytest.raises(
        package.PackageError, match=r"truncated: chunk 1: 1000 bytes, expected 1024"
    ):
        package.check_chunk(m, 1, chunk[:1000])
    with pytest.raises(package.PackageError, match=r"bad_hash: chunk 1"):
        package.check_chunk(m, 1, bytes([chunk[0] ^ 1]) + chunk[1:])
    with pytest.raises(package.PackageError, match=r"bad_chunk: chunk 99"):
        package.check_chunk(m, 99, chunk)
    with pytest.raises(package.PackageError, match="truncated: payload"):
        package.extract(m, pkg.payload[:-1], tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing written


def test_a_payload_with_other_files_is_refused_even_with_matching_hashes(tmp_path: Path) -> None:
    """A signed manifest over a payload that holds an extra or changed file: the archive
    check catches what the payload hash alone could not if the signer erred."""
    pkg = build(tmp_path)
    m = package.Manifest.from_bytes(pkg.manifest)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../evil.whl")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    payload = buf.getvalue()
    forged = package.Manifest(
        version=m.version, files=m.files, payload_size=len(payload),
        payload_sha256=package.sha256(payload), chunk_size=m.chunk_size,
        chunks=(package.sha256(payload),), requires=m.requires, built_at=m.built_at,
    )  # fmt: skip
    with pytest.raises(package.PackageError, match="bad_archive"):
        package.extract(forged, payload, tmp_path / "out")


@pytest.mark.parametrize(
    ("requires", "device", "reason"),
    [
        (REQ, package.Device("0.2.0", 1, 2, 2), "not_newer: version 0.2.0 is not newer"),
        (REQ, package.Device("0.10.0", 1, 2, 2), "not newer than the running 0.10.0"),
        (package.Requirements(2, 1, 2, 2, 2), DEVICE, "needs config format 2"),
        (package.Requirements(1, 2, 3, 3, 2), package.Device("0.1.0", 1, 1, 2), "pinned to 1"),
        (package.Requirements(1, 1, 2, 3, 3), DEVICE, "could not roll back"),
    ],
)
def test_a_package_the_device_cannot_take_is_refused(
    tmp_path: Path, requires: package.Requirements, device: package.Device, reason: str
) -> None:
    m = package.Manifest.from_bytes(build(tmp_path, requires=requires).manifest)
    with pytest.raises(package.PackageError, match=reason):
        package.check_compatible(m, device)


def test_a_compatible_package_passes(tmp_path: Path) -> None:
    package.check_compatible(package.Manifest.from_bytes(build(tmp_path).manifest), DEVICE)


@given(st.binary(max_size=400))
@settings(max_examples=300)
def test_random_manifests_and_messages_raise_only_package_error(data: bytes) -> None:
    for parse in (package.Manifest.from_bytes, package.decode_chunk, package.decode_request,
                  package.Package.from_bytes):  # fmt: skip
        with contextlib.suppress(package.PackageError):
            parse(data)


FIELDS = ["format", "version", "files", "payload", "chunk_size", "chunks", "requires", "built_at"]
VALUES = st.one_of(
    st.integers(-2, 2**40),
    st.text(max_size=8),
    st.none(),
    st.lists(st.integers(0, 5), max_size=3),
    st.floats(),
)


@given(st.dictionaries(st.sampled_from(FIELDS), VALUES))
def test_manifest_fields_of_the_wrong_type_raise_only_package_error(
    doc: dict[str, object],
) -> None:
    with contextlib.suppress(package.PackageError):
        package.Manifest.from_bytes(cbor2.dumps(doc))


def test_upgrade_commands_are_checked() -> None:
    base = wire_commands.Command(
        id="u1", concentrator="dc-1", counter=1, action="upgrade", meters=(), not_before=0.0,
        not_after=60.0, issued_at=0.0,
        params={"manifest": "00ff", "signature": "aa", "health_window_s": 60.0},
    )  # fmt: skip
    wire_commands.check(base)
    for params, why in [
        ({"manifest": "zz", "signature": "aa", "health_window_s": 1.0}, "manifest"),
        ({"manifest": "00", "signature": "aa", "health_window_s": 0}, "health_window_s"),
    ]:
        bad = wire_commands.Command(**{**base.__dict__, "params": params})
        with pytest.raises(wire_commands.CommandError, match=why):
            wire_commands.check(bad)


# ------------------------------------------------------------------ receiver rollouts


@pytest.fixture
def storage(receiver_storage: Storage) -> Storage:
    for i, cid in enumerate(("dc-1", "dc-2", "dc-3")):
        receiver_storage.ingest(cid, 1, 1, [], [], 100.0 + i)  # they have reported
    return receiver_storage


def _event(state: str, version: str = "0.2.0", at: float = 200.0, **detail: object) -> Event:
    return Event("upgrade", "info", None, {"state": state, "version": version, **detail}, at)


def test_stages_open_only_on_health_and_a_rollback_halts(storage: Storage, tmp_path: Path) -> None:
    pkg = build(tmp_path)
    ro.add_release(storage, pkg, KEY.public_key(), 150.0)
    ro.add_release(storage, pkg, KEY.public_key(), 151.0)  # the same package again: fine
    with pytest.raises(ro.RolloutError, match="already stored with other content"):
        ro.add_release(storage, build(tmp_path, size=9000), KEY.public_key(), 152.0)
    with pytest.raises(package.PackageError, match="bad_signature"):
        other = Ed25519PrivateKey.generate()
        ro.add_release(storage, package.Package(pkg.manifest, other.sign(pkg.manifest),
                                                pkg.payload), KEY.public_key(), 152.0)  # fmt: skip
    with pytest.raises(ro.RolloutError, match="no concentrator has reported as 'dc-9'"):
        ro.start(storage, "0.2.0", [ro.Stage.parse("pilot:dc-9")], 60.0, 160.0)
    rid = ro.start(storage, "0.2.0", [ro.Stage.parse("pilot:dc-1"), ro.Stage.parse("wide:ALL")],
                   60.0, 160.0)  # fmt: skip
    with pytest.raises(ro.RolloutError, match="still running"):
        ro.start(storage, "0.2.0", [ro.Stage.parse("x:ALL")], 60.0, 161.0)

    assert ro.advance(storage, KEY, 170.0) == [
        f"rollout {rid}: offered 0.2.0 to dc-1 ({storage.commands(concentrator='dc-1')[0].id})"
    ]
    [offer] = storage.commands(concentrator="dc-1")
    assert offer.action == "upgrade" and offer.params["manifest"] == pkg.manifest.hex()
    # Chunks go only to a concentrator being upgraded to that release.
    assert ro.chunk(storage, "dc-1", "0.2.0", 0) == pkg.payload[:1024]
    assert ro.chunk(storage, "dc-2", "0.2.0", 0) is None
    assert ro.chunk(storage, "dc-1", "9.9.9", 0) is None

    for state in ("downloading", "installed", "trial"):
        ro.apply_events(storage, "dc-1", [_event(state)], 180.0)
        assert ro.advance(storage, KEY, 181.0) == []  # not healthy yet: the stage holds
    ro.apply_events(storage, "dc-1", [_event("downloading")], 182.0)  # late news: ignored
    assert ro.status(storage, rid)[0]["targets"][0]["state"] == "trial"
    ro.apply_events(storage, "dc-1", [_event("healthy")], 190.0)
    assert ro.advance(storage, KEY, 191.0) == [f"rollout {rid}: stage wide started"]
    lines = ro.advance(storage, KEY, 192.0)
    assert [line.split(" (")[0] for line in lines] == [
        f"rollout {rid}: offered 0.2.0 to dc-2", f"rollout {rid}: offered 0.2.0 to dc-3"
    ]  # fmt: skip
    ro.apply_events(storage, "dc-2", [_event("rolled_back", reason="no reading stored")], 200.0)
    doc = ro.status(storage, rid)[0]
    assert doc["state"] == ro.HALTED and "dc-2: rolled_back: no reading stored" in doc["reason"]
    assert ro.advance(storage, KEY, 201.0) == []
    assert ro.chunk(storage, "dc-3", "0.2.0", 0) is None  # halted: nothing more is served
    assert json.dumps(doc)  # the CLI prints it as JSON


def test_a_refused_offer_halts_the_rollout(storage: Storage, tmp_path: Path) -> None:
    ro.add_release(storage, build(tmp_path), KEY.public_key(), 150.0)
    rid = ro.start(storage, "0.2.0", [ro.Stage.parse("pilot:dc-2,dc-3")], 60.0, 160.0)
    ro.advance(storage, KEY, 170.0)
    offer = storage.commands(concentrator="dc-3")[0]
    storage.set_command_status(
        offer.id, "failed",
        {"result": "failed", "results": [{"result": "refused", "error": "not_newer: x"}]}, 175.0,
    )  # fmt: skip
    assert ro.advance(storage, KEY, 176.0)[-1].endswith("refused: not_newer: x; halted")
    assert ro.status(storage, rid)[0]["state"] == ro.HALTED
    assert ro.abort(storage, 177.0) is None  # nothing left running


def test_software_is_recorded_from_headers_and_kept_when_unstated(storage: Storage) -> None:
    ro.note_software(storage, "dc-1", "0.1.0", 2, 1.0)
    ro.note_software(storage, "dc-1", None, 1, 2.0)  # a version 1 batch: no software field
    assert ro.software(storage)["dc-1"] == ("0.1.0", 1, 2.0)


def test_rollout_cli_refuses_what_it_cannot_do(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    olga = operators(db).login("olga", "operator")
    done = receiver_cli("rollout", "abort", "--db", db, session=olga)
    assert done.returncode == 1 and "no rollout is running" in done.stderr
    done = receiver_cli("rollout", "start", "0.2.0", "--stage", "pilot", "--db", db,
                        "--pki-dir", str(tmp_path / "pki"), session=olga)  # fmt: skip
    assert done.returncode == 1 and "expected NAME:GROUP" in done.stderr
    done = receiver_cli("rollout", "start", "0.2.0", "--stage", "pilot:ALL", "--db", db,
                        "--pki-dir", str(tmp_path / "pki"), session=olga)  # fmt: skip
    assert done.returncode == 1 and "no release 0.2.0" in done.stderr
    done = receiver_cli("rollout", "start", "0.2.0", "--stage", "pilot:ALL", "--health-window",
                        "soon", "--db", db, "--pki-dir", str(tmp_path / "pki"),
                        session=olga)  # fmt: skip
    assert done.returncode == 2 and "expected a duration" in done.stderr
    wheel = tmp_path / "other-1.0-py3-none-any.whl"
    wheel.write_bytes(b"x")
    done = receiver_cli("release", "build", "--wheel", str(wheel), "--pki-dir",
                        str(tmp_path / "pki"), "--out", str(tmp_path / "p.mfpkg"))  # fmt: skip
    assert done.returncode == 1 and "must be the meterflow wheel" in done.stderr


def test_rollout_status_lists_the_newest_limit_rollouts(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    from click.testing import CliRunner, Result

    from cloud_receiver.cli import main as receiver_main
    from cloud_receiver.storage import open_storage

    db = f"sqlite:///{tmp_path / 'r.db'}"
    s = open_storage(db)
    try:
        s.ingest("dc-1", 1, 1, [], [], 100.0)
        ro.add_release(s, build(tmp_path), KEY.public_key(), 150.0)
        ids = []
        for n in range(3):
            ids.append(ro.start(s, "0.2.0", [ro.Stage.parse("all:ALL")], 60.0, 160.0 + n))
            ro.abort(s, 161.0 + n)
    finally:
        s.close()
    env = {"MF_SESSION": str(operators(db).login("vera", "viewer"))}

    def status(*args: str) -> Result:
        return CliRunner().invoke(receiver_main, ["rollout", "status", "--db", db, *args], env=env)

    newest = status("--limit", "2", "--json")
    assert newest.exit_code == 0, newest.output
    assert [d["id"] for d in json.loads(newest.stdout)] == [ids[2], ids[1]]
    assert newest.stderr.strip() == "1 more row; older rollouts: use --limit (0: all) or --id"
    table = status("--limit", "1")
    assert f"rollout {ids[2]}:" in table.stdout and f"rollout {ids[1]}:" not in table.stdout
    assert "2 more rows" in table.stderr
    every = status("--limit", "0", "--json")
    assert len(json.loads(every.stdout)) == 3 and every.stderr == ""
