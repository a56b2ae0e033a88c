"""What every command prints for a machine: ``--json`` results and ``--json`` errors.

One rule for the three command lines (issue 18, item 4): every command takes ``--json``;
its result is JSON on stdout, and when it fails, stdout carries one JSON object
``{"error": MESSAGE, "exit_code": N, ...}`` while the exit code is the same non-zero
code the command has without ``--json`` (the human ``error:`` line still goes to
stderr, for the person watching).

Each program's command group is a `JsonGroup`. When ``--json`` is among the arguments,
it watches the two streams for the run: an error that an edge reports through
`report_error` is printed as JSON at once, with its details (a configuration's list of
issues); any other failure that left stdout empty — a usage error from click, a
message printed by a command that then exits non-zero — gets the JSON object from
what was written to stderr. A script therefore always finds exactly one JSON document
on stdout.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
_ERROR_PREFIXES = ("error: ", "Error: ")


class _Watched:
    """A text stream that remembers whether anything went through it and, with
    ``keep``, the last `KEEP_CHARS` of it (a service under ``--json`` logs for days);
    everything is passed on."""

    KEEP_CHARS = 16_384

    def __init__(self, inner: IO[str], keep: bool) -> None:
        self._inner = inner
        self._keep = keep
        self.written = False
        self._tail = ""

    @property
    def text(self) -> str:
        return self._tail

    def write(self, s: str) -> int:
        if s:
            self.written = True
            if self._keep:
                self._tail = (self._tail + s)[-self.KEEP_CHARS :]
        return self._inner.write(s)

    def writelines(self, lines: Sequence[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@dataclasses.dataclass
class _JsonRun:
    out: _Watched
    err: _Watched
    reported: bool = False


_run: _JsonRun | None = None


def json_mode() -> bool:
    """True while a command given ``--json`` runs."""
    return _run is not None


def wants_json(args: Sequence[str]) -> bool:
    """``--json`` among the options (not after ``--``, where it would be an argument)."""
    for arg in args:
        if arg == "--":
            return False
        if arg == "--json":
            return True
    return False


def to_jsonable(value: Any) -> Any:
    """Records and the values in them as JSON: dataclasses as objects, times as ISO
    8601 text, decimals as numbers, paths and enums as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value) if value != value.to_integral_value() else int(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def json_cell(text: str) -> str | int | float | None:
    """A table cell for JSON: a number as a number, an empty cell as null."""
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    return number if number == number and abs(number) != float("inf") else text


def print_json(doc: Any) -> None:
    """One JSON document on stdout (one line: a script reads it with one ``json.loads``)."""
    click.echo(json.dumps(to_jsonable(doc), ensure_ascii=False))


def report_error(message: str, exit_code: int, **details: Any) -> None:
    """Under ``--json``, the error as a JSON object on stdout (once per run); a no-op
    otherwise. The caller still prints its human message on stderr and exits."""
    global _run
    if _run is None or _run.reported or exit_code == 0:
        return
    _run.reported = True
    print_json({"error": message, "exit_code": int(exit_code), **details})


def _message_from(stderr: str) -> str:
    """The error in what a failed command wrote on stderr: click's ``Error:`` line (its
    usage text dropped), else every line with the ``error:`` prefix removed."""
    lines = [line.rstrip() for line in stderr.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if line.startswith("Error: "):
            return " ".join([line.removeprefix("Error: "), *lines[i + 1 :]])
    kept = []
    for line in lines:
        for prefix in _ERROR_PREFIXES:
            line = line.removeprefix(prefix)
        kept.append(line)
    return "\n".join(kept) or "failed"


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1  # sys.exit("message"): Python prints it and exits 1


class JsonGroup(click.Group):
    """A program's top command group: ``--json`` errors as described in the module."""

    def main(self, args: Sequence[str] | None = None, *a: Any, **kw: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if not wants_json(argv) or kw.get("standalone_mode", True) is False:
            return super().main(argv, *a, **kw)
        global _run
        run = _JsonRun(_Watched(sys.stdout, keep=False), _Watched(sys.stderr, keep=True))
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = run.out, run.err
        _run = run
        try:
            return super().main(argv, *a, **kw)
        except SystemExit as exc:
            code = _exit_code(exc.code)
            if code != 0 and not run.out.written:
                report_error(_message_from(run.err.text), code)
            raise
        finally:
            _run = None
            sys.stdout, sys.stderr = saved

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            report_error(
                exc.format_message(), exc.exit_code, usage=isinstance(exc, click.UsageError)
            )
            raise


def result(as_json: bool, text: str, doc: Mapping[str, Any]) -> None:
    """A command's one result: ``doc`` as JSON with ``--json``, else ``text``."""
    if as_json:
        print_json(doc)
    else:
        click.echo(text)


def json_errors_option() -> Callable[[F], F]:
    """``--json`` for a command whose output is JSON already (a simulator's ready and
    stopped lines) or a log (a service): errors become one JSON object on stdout too
    (`JsonGroup` acts on the flag; the command itself never sees it)."""
    return click.option(
        "--json",
        is_flag=True,
        expose_value=False,
        help="Errors as one JSON object on stdout (the output itself is JSON already).",
    )
