"""Click options used by more than one command line, as factories.

Each factory takes the per-command wording (``help``) and defaults where commands
differ, and keeps the name, type, range and parsing in one place. The returned
object is a decorator, used like ``@click.option``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from contract import quantities
from drivers.serial_bus import baud_problem

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]


def json_option() -> Decorator[Any]:
    """``--json``: machine-readable output (into the parameter ``as_json``)."""
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


def db_option(*, required: bool = True, help: str = "Receiver database URL.") -> Decorator[Any]:
    """``--db URL``: a receiver database (``sqlite:///PATH`` or ``postgresql://...``)."""
    return click.option("--db", "db_url", required=required, default=None, help=help)


def seed_option() -> Decorator[Any]:
    """``--seed N``: the random seed that makes a simulation repeatable."""
    return click.option("--seed", type=int, default=0, show_default=True)


def time_scale_option(help: str) -> Decorator[Any]:
    """``--time-scale X``: simulated (or scaled) seconds per real second."""
    return click.option(
        "--time-scale",
        type=click.FloatRange(min=0.001),
        default=1.0,
        show_default=True,
        help=help,
    )


def time_origin_option(help: str) -> Decorator[Any]:
    """``--time-origin T``: the real unix time at which scaled time equals real time."""
    return click.option("--time-origin", type=float, default=None, help=help)


def _bus_baud(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A click callback: a rate a meter bus runs at, by the config's rule."""
    if value is not None and (problem := baud_problem(value)) is not None:
        raise click.BadParameter(problem, ctx=ctx, param=param)
    return value


def baud_option(*, default: int | None, help: str, bus: bool = True) -> Decorator[Any]:
    """``--baud N``: a serial line speed; 0 is allowed (simulators: no wire time). With
    ``bus`` (a meter bus or a carrier module's UART), only the rates a ``[[bus]]`` takes
    (`drivers.serial_bus.baud_problem`): what a simulator writes into a config, or a
    direct read tries, is what the daemon would accept."""
    return click.option(
        "--baud",
        type=click.IntRange(0),
        default=default,
        show_default=default is not None,
        callback=_bus_baud if bus else None,
        help=help,
    )


def parity_option(help: str) -> Decorator[Any]:
    """``--parity E|N|O``: a serial line's parity (8 data bits, 1 stop bit)."""
    return click.option("--parity", type=click.Choice(["E", "N", "O"]), default=None, help=help)


def existing_parent(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A click callback: a path whose folder exists (None stays None). A program asked
    to write ``/nonexistent/dir/x`` says so, rather than failing half-way or creating
    folders nobody asked for."""
    if value is None:
        return value
    folder = Path(value).absolute().parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise click.BadParameter(f"{value}: the folder {folder} {what}", ctx=ctx, param=param)
    return value


def existing_dir(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A click callback: a folder that exists (None stays None)."""
    if value is None:
        return value
    if not Path(value).is_dir():
        what = "is not a folder" if Path(value).exists() else "does not exist"
        raise click.BadParameter(f"{value} {what}: create it first", ctx=ctx, param=param)
    return value


def link_option(help: str) -> Decorator[Any]:
    """``--link PATH``: the stable symlink to a simulator's PTY, in a folder that exists."""
    return click.option(
        "--link",
        type=click.Path(path_type=Path),
        required=True,
        callback=existing_parent,
        help=help,
    )


def pki_dir_option(help: str, *, required: bool = True) -> Decorator[Any]:
    """``--pki-dir DIR``: the deployment's PKI directory."""
    return click.option(
        "--pki-dir", type=click.Path(path_type=Path, file_okay=False), required=required, help=help
    )


def parse_day(ctx: click.Context | None, param: click.Parameter | None, value: Any) -> Any:
    """A click callback: ``YYYY-MM-DD`` as a ``datetime.date`` (None stays None)."""
    if value is None or isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected a date YYYY-MM-DD") from None


def day_option(
    flag: str,
    dest: str,
    *,
    help: str,
    required: bool = False,
    default: str | None = None,
    metavar: str | None = None,
) -> Decorator[Any]:
    """A date option (``--from``, ``--to``, ``--day``) parsed by `parse_day`; ``metavar``
    names the value in ``--help`` (default: click's)."""
    return click.option(
        flag,
        dest,
        required=required,
        default=default,
        show_default=default is not None,
        callback=parse_day,
        metavar=metavar,
        help=help,
    )


def _canonical_quantities(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    for name in value or ():
        if name not in quantities.BY_NAME:
            raise click.BadParameter(quantities.unknown_message(name))
    return value


def quantity_option(help: str, *, multiple: bool = True) -> Decorator[Any]:
    """``--quantity NAME`` (repeatable): a canonical quantity name (docs/quantities.md);
    an unknown one is refused with the valid names listed."""
    return click.option(
        "--quantity",
        "quantities" if multiple else "quantity",
        multiple=multiple,
        metavar="NAME",
        callback=_canonical_quantities if multiple else _one_quantity,
        help=f"{help} A canonical name (docs/quantities.md).",
    )


def _one_quantity(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    return value if value is None else _canonical_quantities(ctx, param, (value,))[0]


def config_option(help: str) -> Decorator[Any]:
    """``--config FILE``: a configuration file (TOML), into the parameter ``config_path``."""
    return click.option(
        "--config", "config_path", required=True, type=click.Path(path_type=Path), help=help
    )
