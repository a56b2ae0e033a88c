"""Staged software rollouts: a signed release goes to a pilot group first, and the next
stage starts only when every concentrator of the stage before has reported itself
healthy on the new release for the whole health window.

The receiver's side of `concentrator.updater` and `concentrator.supervisor`:

- ``add_release`` keeps a package (checked against the release key) in the database, so
  every receiver of a shared subscription can serve its chunks.
- ``start`` records a rollout and its stages; ``advance`` (run by the service on its
  command tick) opens a stage's targets, sends each one a signed ``upgrade`` command and
  moves on when the stage is healthy; ``apply_events`` reads the concentrators'
  ``upgrade`` events as they are ingested.
- A target that refuses the package, fails to install it or rolls back halts the
  rollout: later stages never start. ``abort`` halts it by hand.
- ``chunk`` answers a concentrator's chunk request — only for a release it is being
  upgraded to.

Which release and wire format each concentrator actually runs is recorded from its
authenticated batch headers (``note_software``), whatever the rollout thinks.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, insert, select, update

from cloud_receiver.applications.fleet import commands
from cloud_receiver.errors import ReceiverError
from cloud_receiver.storage import Storage
from cloud_receiver.storage.schema import (
    concentrators,
    releases,
    rollout_targets,
    rollouts,
    software_seen,
)
from contract import package
from contract.records import Event

RUNNING, DONE, HALTED = "running", "done", "halted"
# Target states, in the order a healthy upgrade passes them.
PROGRESS = ("pending", "offered", "downloading", "installed", "trial", "healthy")
FAILED = ("refused", "failed", "rolled_back")
OFFER_VALID_S = 86400.0  # an upgrade offer not taken within a day is dropped
_STAGE = re.compile(r"(?P<name>[A-Za-z0-9_-]+):(?P<target>.+)")
_R, _T = rollouts.c, rollout_targets.c


class RolloutError(ReceiverError):
    """A rollout request that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class Stage:
    name: str
    target: str  # ALL, or comma-separated concentrator ids / shell patterns

    @classmethod
    def parse(cls, text: str) -> Stage:
        m = _STAGE.fullmatch(text)
        if m is None:
            raise RolloutError(f"stage {text!r}: expected NAME:GROUP, e.g. pilot:dc-01,dc-02")
        return cls(m["name"], m["target"])

    def matches(self, concentrator: str) -> bool:
        if self.target == "ALL":
            return True
        return any(fnmatch.fnmatchcase(concentrator, p) for p in self.target.split(","))


# ------------------------------------------------------------------------- software


def note_software(
    storage: Storage, concentrator: str, software: str | None, wire_version: int, now: float
) -> None:
    """Record what a concentrator runs; ``software`` None: not stated (keep what is known)."""
    s = software_seen.c
    with storage.transaction() as tx:
        row = storage.insert(software_seen).values(
            concentrator=concentrator, software=software or "", wire_version=wire_version,
            seen_at=now,
        )  # fmt: skip
        tx.execute(
            row.on_conflict_do_update(
                index_elements=[s.concentrator],
                set_={
                    "software": s.software if software is None else row.excluded.software,
                    "wire_version": row.excluded.wire_version,
                    "seen_at": row.excluded.seen_at,
                },
            )
        )


def software(storage: Storage) -> dict[str, tuple[str, int, float]]:
    """concentrator -> (release, wire version, when first seen so)."""
    with storage.transaction() as tx:
        s = software_seen.c
        rows = tx.execute(select(s.concentrator, s.software, s.wire_version, s.seen_at)).all()
    return {r[0]: (str(r[1]), int(r[2]), float(r[3])) for r in rows}


# ------------------------------------------------------------------------- releases


def add_release(
    storage: Storage, pkg: package.Package, release_key: Ed25519PublicKey, now: float
) -> package.Manifest:
    """Check a package against the release key and keep it. The same version twice
    must be the same package: a version names one set of bytes for ever."""
    m = package.verify_manifest(pkg.manifest, pkg.signature, release_key)
    package.check_payload(m, pkg.payload)
    with storage.transaction() as tx:
        stored = tx.execute(
            select(releases.c.manifest).where(releases.c.version == m.version)
        ).scalar()
        if stored is not None:
            if bytes(stored) != pkg.manifest:
                raise RolloutError(f"release {m.version} is already stored with other content")
            return m
        tx.execute(
            insert(releases).values(
                version=m.version, manifest=pkg.manifest, signature=pkg.signature,
                payload=pkg.payload, added_at=now,
            )
        )  # fmt: skip
    return m


def stored_versions(storage: Storage) -> set[str]:
    """The releases kept in the database (each can be rolled out without its package)."""
    with storage.transaction() as tx:
        return set(tx.execute(select(releases.c.version)).scalars())


def _release(tx: Connection, version: str) -> tuple[bytes, bytes, bytes] | None:
    r = releases.c
    row = tx.execute(select(r.manifest, r.signature, r.payload).where(r.version == version)).first()
    if row is None:
        return None
    return bytes(row[0]), bytes(row[1]), bytes(row[2])


# ------------------------------------------------------------------------- rollouts


def start(
    storage: Storage, version: str, stages: Sequence[Stage], window_s: float, now: float
) -> int:
    if not stages:
        raise RolloutError("a rollout needs at least one stage")
    if window_s <= 0:
        raise RolloutError("the health window must be positive")
    with storage.transaction() as tx:
        if _release(tx, version) is None:
            raise RolloutError(f"no release {version}: add it with `rollout start --package`")
        running = tx.execute(
            select(_R.id, _R.version).where(_R.state == RUNNING).with_for_update()
        ).first()
        if running is not None:
            raise RolloutError(
                f"rollout {running[0]} ({running[1]}) is still running: abort it first"
            )
        known = set(tx.execute(select(concentrators.c.concentrator)).scalars())
        for st in stages:
            if st.target == "ALL":
                continue
            for p in st.target.split(","):
                if not any(fnmatch.fnmatchcase(c, p) for c in known):
                    raise RolloutError(f"stage {st.name}: no concentrator has reported as {p!r}")
        doc = json.dumps([[s.name, s.target] for s in stages])
        rollout_id = int(
            tx.execute(
                insert(rollouts)
                .values(
                    version=version, stages=doc, health_window_s=window_s, stage=0,
                    state=RUNNING, reason=None, started_at=now, updated_at=now,
                )
                .returning(_R.id)
            ).scalar_one()
        )  # fmt: skip
        _open_stage(tx, rollout_id, stages, 0, now)
    return rollout_id


def _stages(doc: str) -> list[Stage]:
    return [Stage(str(n), str(t)) for n, t in json.loads(doc)]


def _open_stage(
    tx: Connection, rollout_id: int, stages: Sequence[Stage], index: int, now: float
) -> int:
    """Create the stage's targets: the concentrators it matches that no earlier stage
    took. Resolved when the stage opens, so ALL includes concentrators added meanwhile."""
    taken = set(tx.execute(select(_T.concentrator).where(_T.rollout == rollout_id)).scalars())
    known = sorted(tx.execute(select(concentrators.c.concentrator)).scalars())
    chosen = [c for c in known if c not in taken and stages[index].matches(c)]
    for c in chosen:
        tx.execute(
            insert(rollout_targets).values(
                rollout=rollout_id, concentrator=c, stage=index, state="pending", reason=None,
                command_id=None, detail="{}", updated_at=now,
            )
        )  # fmt: skip
    return len(chosen)


def abort(storage: Storage, now: float, reason: str = "aborted by hand") -> int | None:
    """Halt the running rollout (None if none runs). Concentrators already upgraded stay
    so; offers not taken yet are refused as stale by the concentrators' counters."""
    with storage.transaction() as tx:
        running = tx.execute(select(_R.id).where(_R.state == RUNNING).with_for_update()).scalar()
        if running is None:
            return None
        _halt(tx, int(running), reason, now)
        return int(running)


def _halt(tx: Connection, rollout_id: int, reason: str, now: float) -> None:
    tx.execute(
        update(rollouts)
        .where(_R.id == rollout_id)
        .values(state=HALTED, reason=reason, updated_at=now)
    )


def apply_events(storage: Storage, concentrator: str, events: Sequence[Event], now: float) -> int:
    """Move this concentrator's target along from its ``upgrade`` events; a refusal, a
    failure or a rollback halts the rollout. Returns the number of events applied."""
    upgrades = [e for e in events if e.kind == "upgrade"]
    if not upgrades:
        return 0
    applied = 0
    with storage.transaction() as tx:
        row = tx.execute(
            select(_R.id, _R.version, _T.state)
            .join_from(rollouts, rollout_targets, _T.rollout == _R.id)
            .where(_R.state == RUNNING, _T.concentrator == concentrator)
            .with_for_update()
        ).first()
        if row is None:
            return 0
        rollout_id, version, state = int(row[0]), str(row[1]), str(row[2])
        for e in upgrades:
            if e.detail.get("version") != version:
                continue
            new = str(e.detail.get("state"))
            if new not in PROGRESS and new not in FAILED:
                continue
            if state in FAILED or (new in PROGRESS and PROGRESS.index(new) <= _rank(state)):
                continue  # late or repeated news
            state = new
            reason = e.detail.get("reason")
            tx.execute(
                _target(rollout_id, concentrator).values(
                    state=state, reason=reason, detail=json.dumps(e.detail), updated_at=e.at
                )
            )
            applied += 1
            if state in FAILED:
                _halt(tx, rollout_id, f"{concentrator}: {state}: {reason}", now)
    return applied


def _target(rollout_id: int, concentrator: str) -> Any:
    """An UPDATE of one rollout target (add ``.values``)."""
    return update(rollout_targets).where(_T.rollout == rollout_id, _T.concentrator == concentrator)


def _rank(state: str) -> int:
    return PROGRESS.index(state) if state in PROGRESS else len(PROGRESS)


def advance(storage: Storage, key: Ed25519PrivateKey, now: float) -> list[str]:
    """One step of the running rollout: offers to new targets, command outcomes that
    failed, the next stage when this one is healthy. Returns what happened, for the log."""
    out: list[str] = []
    with storage.transaction() as tx:
        row = tx.execute(
            select(_R.id, _R.version, _R.stages, _R.health_window_s, _R.stage)
            .where(_R.state == RUNNING)
            .with_for_update()
        ).first()
        if row is None:
            return out
        rollout_id, version, stages_doc, window_s, stage = row
        rollout_id, stage = int(rollout_id), int(stage)
        stages = _stages(str(stages_doc))
        targets = tx.execute(
            select(_T.concentrator, _T.state, _T.command_id)
            .where(_T.rollout == rollout_id, _T.stage == stage)
            .order_by(_T.concentrator)
        ).all()
    for concentrator, state, command_id in targets:
        if state == "pending":
            cmd_id = _offer(
                storage, key, rollout_id, str(concentrator), str(version), window_s, now
            )
            out.append(f"rollout {rollout_id}: offered {version} to {concentrator} ({cmd_id})")
        elif state == "offered" and command_id:
            failure = _command_failure(storage, str(command_id))
            if failure is not None:
                with storage.transaction() as tx:
                    tx.execute(
                        _target(rollout_id, str(concentrator)).values(
                            state="refused", reason=failure, updated_at=now
                        )
                    )
                    _halt(tx, rollout_id, f"{concentrator}: refused: {failure}", now)
                out.append(f"rollout {rollout_id}: {concentrator} refused: {failure}; halted")
                return out
    if targets and all(state == "healthy" for _, state, _ in targets):
        with storage.transaction() as tx:
            nxt = stage + 1
            while nxt < len(stages) and _open_stage(tx, rollout_id, stages, nxt, now) == 0:
                nxt += 1  # a stage with nobody left in it
            if nxt >= len(stages):
                tx.execute(
                    update(rollouts)
                    .where(_R.id == rollout_id)
                    .values(state=DONE, stage=len(stages) - 1, updated_at=now)
                )
                out.append(f"rollout {rollout_id}: {version} is on every target: done")
            else:
                tx.execute(
                    update(rollouts).where(_R.id == rollout_id).values(stage=nxt, updated_at=now)
                )
                out.append(f"rollout {rollout_id}: stage {stages[nxt].name} started")
    return out


def _offer(
    storage: Storage,
    key: Ed25519PrivateKey,
    rollout_id: int,
    concentrator: str,
    version: str,
    window_s: float,
    now: float,
) -> str:
    with storage.transaction() as tx:
        release = _release(tx, version)
    assert release is not None
    manifest, signature, _ = release
    record = commands.issue(
        storage,
        key,
        concentrator=concentrator,
        action="upgrade",
        params={
            "manifest": manifest.hex(),
            "signature": signature.hex(),
            "health_window_s": float(window_s),
        },
        valid_for_s=OFFER_VALID_S,
        issued_by=f"rollout {rollout_id}",
        now=now,
    )
    with storage.transaction() as tx:
        tx.execute(
            _target(rollout_id, concentrator).values(
                state="offered", command_id=record.id, updated_at=now
            )
        )
    return record.id


def _command_failure(storage: Storage, command_id: str) -> str | None:
    rows = storage.commands(command_id=command_id)
    if not rows or rows[0].status not in ("refused", "failed", "expired", "unanswered"):
        return None
    result = rows[0].result or {}
    errors = [str(r.get("error")) for r in result.get("results", []) if r.get("error")]
    return "; ".join(errors) or str(result.get("reason") or rows[0].status)


def chunk(storage: Storage, concentrator: str, version: str, index: int) -> bytes | None:
    """Chunk ``index`` of ``version`` for a concentrator that is being upgraded to it."""
    with storage.transaction() as tx:
        offered = tx.execute(
            select(_R.id)
            .join_from(rollouts, rollout_targets, _T.rollout == _R.id)
            .where(_R.state == RUNNING, _R.version == version, _T.concentrator == concentrator)
        ).first()
        if offered is None:
            return None
        release = _release(tx, version)
    if release is None:
        return None
    m = package.Manifest.from_bytes(release[0])
    offset, length = m.chunk_range(index)
    return release[2][offset : offset + length]


def status(storage: Storage, rollout_id: int | None = None) -> list[dict[str, Any]]:
    """Rollouts (newest first, or the one asked for) with their targets."""
    with storage.transaction() as tx:
        query = select(
            _R.id, _R.version, _R.stages, _R.health_window_s, _R.stage, _R.state, _R.reason,
            _R.started_at, _R.updated_at,
        ).order_by(_R.id.desc())  # fmt: skip
        if rollout_id is not None:
            query = query.where(_R.id == rollout_id)
        rows = tx.execute(query).all()
        out = []
        for r in rows:
            targets = tx.execute(
                select(_T.concentrator, _T.stage, _T.state, _T.reason, _T.command_id,
                       _T.updated_at)
                .where(_T.rollout == r[0])
                .order_by(_T.stage, _T.concentrator)
            ).all()  # fmt: skip
            stages = _stages(str(r[2]))
            out.append(
                {
                    "id": int(r[0]),
                    "version": r[1],
                    "stages": [f"{s.name}:{s.target}" for s in stages],
                    "health_window_s": float(r[3]),
                    "stage": stages[int(r[4])].name,
                    "state": r[5],
                    "reason": r[6],
                    "started_at": float(r[7]),
                    "updated_at": float(r[8]),
                    "targets": [
                        {
                            "concentrator": t[0],
                            "stage": stages[int(t[1])].name,
                            "state": t[2],
                            "reason": t[3],
                            "command": t[4],
                            "updated_at": float(t[5]),
                        }
                        for t in targets
                    ],
                }
            )
    seen = software(storage)
    for doc in out:
        for t in doc["targets"]:
            sw = seen.get(t["concentrator"])
            t["running"], t["wire_version"] = (sw[0], sw[1]) if sw else (None, None)
    return out
