"""The ``rollout.start`` kind: a staged software rollout, with its release package as
the request's attachment (when the version is not stored yet); always approved by a
second operator, and carried out by the service, which holds the release key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cloud_receiver.access.policy import Action
from cloud_receiver.access.requests import Request
from cloud_receiver.applications.fleet import rollout
from cloud_receiver.applications.requests.kind import ApprovedKind, Keys
from cloud_receiver.storage import Storage
from contract import package


def _release(version: str, read: Callable[[], package.Manifest]) -> None:
    """Read the attached package (``read``: its manifest) as a rollout error, and
    require that it holds the release asked for."""
    try:
        m = read()
    except package.PackageError as exc:
        raise rollout.RolloutError(str(exc)) from exc
    if m.version != version:
        raise rollout.RolloutError(f"the package holds release {m.version}, not {version}")


class RolloutKind(ApprovedKind):
    """params: version, stages ([name, target] pairs), health_window_s; the attachment
    is the release package, when the version is not stored yet."""

    name = "rollout.start"
    needs = frozenset({"release"})

    def action(self, params: dict[str, Any]) -> Action:
        return Action.ROLLOUT_START

    def _stages(self, params: dict[str, Any]) -> list[rollout.Stage]:
        return [rollout.Stage.parse(f"{n}:{t}") for n, t in params["stages"]]

    def check(self, storage: Storage, params: dict[str, Any], attachment: bytes | None) -> None:
        stages = self._stages(params)
        if not stages:
            raise rollout.RolloutError("a rollout needs at least one stage")
        if not float(params["health_window_s"]) > 0:
            raise rollout.RolloutError("the health window must be positive")
        version = str(params["version"])
        if attachment is not None:
            _release(
                version,
                lambda: package.Manifest.from_bytes(
                    package.Package.from_bytes(attachment).manifest
                ),
            )
        elif version not in rollout.stored_versions(storage):
            raise rollout.RolloutError(
                f"no release {version}: add it with `rollout start --package`"
            )
        running = [d for d in rollout.status(storage) if d["state"] == rollout.RUNNING]
        if running:
            raise rollout.RolloutError(
                f"rollout {running[0]['id']} ({running[0]['version']}) is still running:"
                " abort it first"
            )

    def describe(self, params: dict[str, Any]) -> str:
        stages = ", ".join(f"{n}:{t}" for n, t in params.get("stages") or [])
        return (
            f"rollout of {params.get('version')} in stages {stages}, health window"
            f" {params.get('health_window_s')} s"
        )

    def execute(
        self, storage: Storage, keys: Keys, req: Request, attachment: bytes | None, now: float
    ) -> dict[str, Any]:
        release_key = keys.release
        assert release_key is not None
        p = req.params
        version = str(p["version"])
        if attachment is not None:
            _release(
                version,
                lambda: rollout.add_release(
                    storage, package.Package.from_bytes(attachment), release_key(), now
                ),
            )
        rollout_id = rollout.start(
            storage, version, self._stages(p), float(p["health_window_s"]), now
        )
        return {"id": rollout_id, "version": version}
