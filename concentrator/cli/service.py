"""The long-running processes: ``run`` (the daemon) and ``supervise`` (its guard)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from clitools.options import config_option, time_origin_option, time_scale_option
from concentrator.cli.edge import ServiceCommand
from concentrator.config import DEFAULT_CONTROL_SOCKET


@click.command(cls=ServiceCommand)
@config_option("Concentrator configuration (TOML).")
@time_scale_option("Wall-clock seconds per real second (tests and demos only).")
@click.option(
    "--control-socket",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Control socket for the field CLI (default: [concentrator] control_socket, "
    f"else {DEFAULT_CONTROL_SOCKET}).",
)
@time_origin_option(
    "With --time-scale: the real unix time at which scaled time equals real time, "
    "so that restarts continue the same scaled clock (tests only)."
)
@click.option(
    "--clock-step-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="With --time-scale: a file holding seconds added to the wall clock, re-read every "
    "second, so a test can step the running daemon's clock (tests only).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one object per line with meter/bus fields, for journald and log shippers.",
)
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Log as --log-format json does, and a start that fails as one JSON object on stdout.",
)
def run(
    config_path: Path,
    time_scale: float,
    control_socket: Path | None,
    time_origin: float | None,
    clock_step_file: Path | None,
    log_format: str,
    verbose: int,
    as_json: bool,
) -> None:
    """Run the concentrator daemon until SIGTERM; SIGHUP reloads the config."""
    import logging

    if clock_step_file is not None and time_scale == 1.0:
        raise click.UsageError("--clock-step-file needs --time-scale (a test clock)")

    from concentrator.cli.logfmt import formatter
    from concentrator.daemon import run_daemon

    # stderr shows what -v asks for; `concentrator logs` keeps INFO and up regardless.
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    stderr = logging.StreamHandler()
    stderr.setLevel(level)
    stderr.setFormatter(formatter("json" if as_json else log_format))
    root = logging.getLogger()
    root.addHandler(stderr)
    root.setLevel(min(level, logging.INFO))
    code = run_daemon(
        config_path,
        time_scale=time_scale,
        control_socket=control_socket,
        time_origin=time_origin,
        clock_step_file=clock_step_file,
    )
    if code:
        sys.exit(code)


@click.command(cls=ServiceCommand, context_settings={"ignore_unknown_options": True})
@config_option("Concentrator configuration (TOML), passed on to `concentrator run`.")
@click.option(
    "--releases",
    "releases_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Release directory (default: [update] releases_dir, else 'releases' beside the store).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="The guard's log lines and the daemon's (given --json) as JSON objects; a start"
    " that fails as one JSON object on stdout.",
)
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED)
def supervise(
    config_path: Path, releases_dir: Path | None, as_json: bool, run_args: tuple[str, ...]
) -> None:
    """Run the daemon from the current release, as its guard: switch to a release the
    updater installed, judge it for its health window, and roll it back when it does not
    poll, store and get an uplink batch acknowledged. RUN_ARGS go to `concentrator run`."""
    import logging

    from concentrator.config import load_config
    from concentrator.update.releases import Releases
    from concentrator.update.supervisor import Supervisor

    config = load_config(config_path)
    if releases_dir is None:
        releases_dir = config.releases_dir
    if as_json:
        from concentrator.cli.logfmt import formatter

        handler = logging.StreamHandler()
        handler.setFormatter(formatter("json"))
        logging.basicConfig(level=logging.INFO, handlers=[handler])
    else:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s supervise %(levelname)s %(message)s"
        )
    guard = Supervisor(
        Releases(releases_dir),
        ["--config", str(config_path.resolve()), *(["--json"] if as_json else []), *run_args],
        config.storage.path.with_suffix(".status.json"),
    )
    sys.exit(guard.run())
