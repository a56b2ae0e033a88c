"""Options that more than one ``hil-sim`` command takes, as factories.

The concepts every command line shares (``--baud``, ``--seed``, ``--time-scale``,
``--link``, ``--db``, dates) come from ``clitools.options``; these are the simulator's
own: which meters, what they are like, and the concentrator config written for them.
Each factory takes the per-command wording where the commands differ, so every
``--help`` reads as it did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from clitools.options import Decorator, existing_parent
from drivers.meter_ids import dlt645_address_problem


def _address_base(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """The same rule as a ``[[meter]] address`` in the concentrator's config."""
    problem = dlt645_address_problem(value)
    if problem is not None:
        raise click.BadParameter(problem, ctx=ctx, param=param)
    return value


def _cadence(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """The same rule as a ``[[task]] every`` in the concentrator's config: a config
    written with it must pass ``concentrator config check``."""
    from concentrator.public import parse_cadence

    try:
        parse_cadence(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value


def meters_option(*, default: int, most: int) -> Decorator[Any]:
    """``--meters N``: how many meters (into ``n_meters``)."""
    return click.option(
        "--meters", "n_meters", type=click.IntRange(1, most), default=default, show_default=True
    )


def truth_option() -> Decorator[Any]:
    """``--truth PATH``: the ground-truth log, beside the link unless given."""
    return click.option(
        "--truth",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        callback=existing_parent,
        help="Ground-truth log (JSON lines); default LINK.truth.jsonl.",
    )


def address_base_option(help: str | None = None) -> Decorator[Any]:
    """``--address-base A``: the first DL/T 645 address; the others follow it."""
    return click.option(
        "--address-base",
        default="000000000001",
        show_default=True,
        callback=_address_base,
        help=help,
    )


def random_addresses_option(help: str) -> Decorator[Any]:
    """``--random-addresses``: random DL/T 645 addresses instead of consecutive ones."""
    return click.option("--random-addresses", is_flag=True, help=help)


def profile_option() -> Decorator[Any]:
    """``--profile``: the customers' load shape."""
    return click.option(
        "--profile",
        type=click.Choice(["household", "commercial"]),
        default="household",
        show_default=True,
    )


def phases_option() -> Decorator[Any]:
    """``--phases 1|3``: single- or three-phase meters."""
    return click.option("--phases", type=click.Choice(["1", "3"]), default="3", show_default=True)


def preamble_option(help: str) -> Decorator[Any]:
    """``--preamble N``: FE wake-up bytes before each DL/T 645 reply (0..4)."""
    return click.option(
        "--preamble", type=click.IntRange(0, 4), default=0, show_default=True, help=help
    )


def write_config_option(*, files_only: bool, help: str) -> Decorator[Any]:
    """``--write-config PATH``: also write a concentrator config (into ``config_path``)."""
    return click.option(
        "--write-config",
        "config_path",
        type=click.Path(path_type=Path, dir_okay=not files_only),
        default=None,
        callback=existing_parent,
        help=help,
    )


def store_option(*, files_only: bool) -> Decorator[Any]:
    """``--store PATH``: the store path written into that config (into ``store_path``)."""
    return click.option(
        "--store",
        "store_path",
        type=click.Path(path_type=Path, dir_okay=not files_only),
        default=None,
        callback=existing_parent,
        help="Store path written into --write-config (default: beside it); its folder "
        "must exist, as `concentrator config check` requires.",
    )


def cadence_option() -> Decorator[Any]:
    """``--cadence``: the interval-reading cadence written into that config."""
    return click.option(
        "--cadence",
        default="15m",
        show_default=True,
        callback=_cadence,
        help="Interval-reading cadence written into --write-config (as a task's `every`: "
        'a period that divides a day, e.g. "5m", "15m", "1h").',
    )


MIXABLE = ("dlt645", "dlt645-1997", "dlt698")  # the DL/T protocols one line may mix


def _protocols(ctx: click.Context, param: click.Parameter, text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    names = tuple(p.strip() for p in text.split(","))
    for name in names:
        if name not in MIXABLE:
            raise click.BadParameter(
                f"{name!r}: expected a comma-separated list of {', '.join(MIXABLE)}",
                ctx=ctx,
                param=param,
            )
    return names


def protocols_option(help: str) -> Decorator[Any]:
    """``--protocols P1,P2,...``: meter i speaks the (i mod n)-th (a mixed DL/T line)."""
    return click.option(
        "--protocols", default=None, callback=_protocols, metavar="P1,P2,...", help=help
    )
