"""``release`` and ``rollout``: signed software packages and their staged rollouts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from clitools.files import GROUP_READ, write_file
from clitools.options import db_option, json_option, pki_dir_option
from clitools.output import result
from clitools.table import Column, limit_option, more_note, print_table, window
from cloud_receiver.access.policy import Action
from cloud_receiver.applications.fleet import pki
from cloud_receiver.cli.auth import acting, session_option, show_request, wait_done, wait_option
from cloud_receiver.cli.common import duration
from cloud_receiver.errors import ReceiverError


def _wheel_release_info(wheel: Path) -> dict[str, Any]:
    """Ask the wheel itself what it needs (``concentrator.release_info``, imported from
    the wheel's zip in a child process): the package must state the store schema of the
    release it carries, and the receiver never imports the concentrator."""
    import json
    import subprocess

    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); "
        "from concentrator.release_info import release_info; print(json.dumps(release_info()))"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", code, str(wheel)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"{wheel.name}: cannot read its release information ({last})")
    info: dict[str, Any] = json.loads(done.stdout)
    return info


@click.group()
def release() -> None:
    """Software release packages for concentrators."""


@release.command("build")
@click.option(
    "--wheel",
    "wheels",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The meterflow wheel; repeat for pinned dependency wheels the release needs.",
)
@click.option("--version", "version", default=None, help="Release version (default: the wheel's).")
@click.option(
    "--key",
    "key_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Ed25519 release key (PEM); default: release.key in --pki-dir.",
)
@pki_dir_option(
    help="PKI directory holding release.key (created there on first use).", required=False
)
@click.option(
    "--min-config-format",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="The oldest concentrator config format the release reads.",
)
@click.option(
    "--wire",
    "wire_range",
    default=None,
    help="Uplink wire formats the release can send, MIN-MAX (default: this build's).",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(1024, 256 * 1024),
    default=16 * 1024,
    show_default=True,
    help="Bytes per MQTT chunk: small enough that a lost one costs little on GPRS.",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Package file to write (.mfpkg).",
)
@json_option()
def release_build(
    wheels: tuple[Path, ...],
    version: str | None,
    key_file: Path | None,
    pki_dir: Path | None,
    min_config_format: int,
    wire_range: str | None,
    chunk_size: int,
    out_path: Path,
    as_json: bool,
) -> None:
    """Turn built wheels into a signed update package."""
    import time

    from contract import package, wire

    main_wheel = next((w for w in wheels if w.name.startswith("meterflow-")), None)
    if main_wheel is None:
        raise ReceiverError("one --wheel must be the meterflow wheel (meterflow-<version>-...whl)")
    wheel_version = main_wheel.name.split("-")[1]
    version = version or wheel_version
    if version != wheel_version:
        raise ReceiverError(f"--version {version} differs from the wheel's {wheel_version}")
    lo, hi = min(wire.VERSIONS), max(wire.VERSIONS)
    if wire_range is not None:
        try:
            lo, hi = (int(x) for x in wire_range.split("-"))
        except ValueError:
            raise click.BadParameter(f"{wire_range!r}: expected MIN-MAX, e.g. 1-2") from None
    if key_file is None:
        if pki_dir is None:
            raise click.UsageError("give --key or --pki-dir")
        key_file = pki_dir / pki.RELEASE_KEY
    try:
        info = _wheel_release_info(main_wheel)
        key = pki.signing_key(key_file, "release key")
        pkg = package.build(
            list(wheels),
            version=version,
            key=key,
            requires=package.Requirements(
                min_config_format=min_config_format,
                min_wire_version=lo,
                max_wire_version=hi,
                store_schema=int(info["store_schema"]),
                store_min_reader=int(info["store_min_reader"]),
            ),
            chunk_size=chunk_size,
            built_at=time.time(),
        )
    except (package.PackageError, ValueError) as exc:
        raise ReceiverError(str(exc)) from exc
    write_file(out_path, pkg.to_bytes(), GROUP_READ)
    m = package.Manifest.from_bytes(pkg.manifest)
    result(
        as_json,
        f"{out_path}: release {m.version}, {len(m.files)} file(s), {m.payload_size} bytes "
        f"in {len(m.chunks)} chunks, signed",
        {"package": str(out_path), "version": m.version, "files": len(m.files),
         "payload_size": m.payload_size, "chunks": len(m.chunks)},
    )  # fmt: skip


@click.group()
def rollout() -> None:
    """Staged upgrades of concentrators, with health-based rollback."""


@rollout.command("start")
@click.argument("version")
@click.option(
    "--package",
    "package_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="The release package (.mfpkg); needed the first time a version is rolled out.",
)
@click.option(
    "--stage",
    "stages",
    multiple=True,
    required=True,
    help="NAME:GROUP, in order; GROUP is ALL or comma-separated ids or patterns (dc-0*).",
)
@click.option(
    "--health-window",
    default="30m",
    show_default=True,
    callback=duration,
    help="How long each upgraded concentrator must stay healthy (90s, 30m, 2h).",
)
@db_option()
@session_option()
@pki_dir_option(
    help="PKI directory with release.key: check the package's signature before asking"
    " (the service checks it again).",
    required=False,
)
@wait_option()
@json_option()
def rollout_start(
    version: str,
    package_path: Path | None,
    stages: tuple[str, ...],
    health_window: float,
    db_url: str,
    session_file: Path | None,
    pki_dir: Path | None,
    wait_s: float,
    as_json: bool,
) -> None:
    """Ask for VERSION to be rolled out in stages; once a second operator approves
    (`cloud-receiver approve ID`), the running receiver starts it and sends the offers."""
    from cloud_receiver.applications.fleet import rollout as ro
    from contract import package

    parsed = [ro.Stage.parse(s) for s in stages]
    data = None
    if package_path is not None:
        data = package_path.read_bytes()
        if pki_dir is not None and (pki_dir / pki.RELEASE_KEY).exists():
            try:
                pkg = package.Package.from_bytes(data)
                package.verify_manifest(pkg.manifest, pkg.signature,
                                        pki.release_key(pki_dir).public_key())  # fmt: skip
            except package.PackageError as exc:
                raise ReceiverError(f"{package_path}: {exc}") from exc
    params = {
        "version": version, "stages": [[s.name, s.target] for s in parsed],
        "health_window_s": health_window,
    }  # fmt: skip
    with acting(db_url, session_file) as actor:
        req = actor.submit("rollout.start", params, attachment=data)
        show_request(wait_done(actor.storage, req.id, wait_s), as_json)


@rollout.command("status")
@click.option("--id", "rollout_id", type=int, default=None, help="One rollout (default: all).")
@db_option()
@session_option()
@limit_option()
@json_option()
def rollout_status(
    rollout_id: int | None, db_url: str, session_file: Path | None, limit: int, as_json: bool
) -> None:
    """Rollouts, their stages and each concentrator's state and running release: the
    newest --limit rollouts."""
    import json

    from rich.console import Console

    from cloud_receiver.applications.fleet import rollout as ro

    with acting(db_url, session_file, Action.FLEET_READ) as actor:
        every = ro.status(actor.storage, rollout_id)  # newest first
    docs, more = window(every, lambda d: 0.0, None, None, limit, newest=False)
    more_note(more, "older rollouts: use --limit (0: all) or --id")
    if as_json:
        click.echo(json.dumps(docs, indent=1))
        return
    console = Console()
    for d in docs:
        console.print(
            f"rollout {d['id']}: {d['version']} [{d['state']}] stage {d['stage']} of "
            f"{', '.join(d['stages'])}; window {d['health_window_s']:.0f} s"
            + (f"; {d['reason']}" if d["reason"] else "")
        )
        columns = (Column("concentrator", "id"), Column("stage"), Column("state"),
                   Column("running", "id"), Column("wire", "number"), Column("reason"))  # fmt: skip
        rows = [
            (t["concentrator"], t["stage"], t["state"], t["running"], t["wire_version"],
             t["reason"] or "")
            for t in d["targets"]
        ]  # fmt: skip
        print_table(columns, rows)


@rollout.command("abort")
@db_option()
@session_option()
@click.option("--reason", default="aborted by hand", show_default=True)
@json_option()
def rollout_abort(db_url: str, session_file: Path | None, reason: str, as_json: bool) -> None:
    """Halt the running rollout: no further offers or stages."""
    import time

    from cloud_receiver.applications.fleet import rollout as ro

    with acting(db_url, session_file, Action.ROLLOUT_ABORT) as actor:
        halted = ro.abort(actor.storage, time.time(), reason)
        if halted is not None:
            actor.record("change", str(Action.ROLLOUT_ABORT), f"rollout:{halted}",
                         detail={"reason": reason})  # fmt: skip
    if halted is None:
        raise ReceiverError("no rollout is running")
    result(as_json, f"rollout {halted} halted", {"rollout": halted, "reason": reason})


COMMANDS = [release, rollout]
