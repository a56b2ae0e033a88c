"""Every command line shown in the README and in docs/ is held to the real click
definitions, so an example cannot drift from the commands: the subcommands it names
exist, every ``--option`` it uses belongs to that command, and a complete example (one
without ``[...]`` or ``|`` synopsis notation) parses as the command line it is."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from cloud_receiver.cli import main as receiver_main
from concentrator.cli import main as concentrator_main
from hil_sim.cli import main as sim_main

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS: dict[str, click.Command] = {
    "concentrator": concentrator_main,
    "cloud-receiver": receiver_main,
    "hil-sim": sim_main,
}
SEPARATORS = {"&&", "||", "|", ";", "(", ")", "&"}


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _code_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, logical line) of every fenced block that is not TOML/JSON/etc."""
    fence: str | None = None
    pending, start = "", 0
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        if fence is None or fence not in ("", "sh", "bash", "console", "shell"):
            continue
        if not pending:
            start = n
        pending += line.rstrip("\\").rstrip() + " "
        if not line.rstrip().endswith("\\"):
            yield start, pending.strip()
            pending = ""


def _invocations(line: str) -> Iterator[list[str]]:
    """The argument lists of our programs in one shell line."""
    line = line.split(" # ")[0]
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
    except ValueError:
        return
    words: list[str] = []
    for tok in [*tokens, ";"]:
        if tok in SEPARATORS:
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*|sudo|env|\$", words[0]):
                words.pop(0)
            if words and words[0].rsplit("/", 1)[-1] in PROGRAMS:
                yield words
            words = []
        else:
            words.append(tok)


def _examples() -> list[tuple[str, list[str], bool]]:
    found = []
    for path in _documents():
        for n, line in _code_lines(path):
            synopsis = bool(re.search(r"\[|\]|\.\.\.|…|\|", line)) or "<" in line
            for words in _invocations(line):
                found.append((f"{path.relative_to(ROOT)}:{n}", words, synopsis))
    return found


EXAMPLES = _examples()


def test_the_documents_show_many_commands() -> None:
    # A parser that silently finds nothing would pass everything below.
    assert len(EXAMPLES) > 60
    assert {w[0].rsplit("/", 1)[-1] for _, w, _ in EXAMPLES} == set(PROGRAMS)


def _resolve(words: list[str]) -> tuple[click.Command, list[click.Command], list[str]]:
    cmd = PROGRAMS[words[0].rsplit("/", 1)[-1]]
    chain = [cmd]
    rest = words[1:]
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        sub = cmd.get_command(click.Context(cmd), rest[0])
        if sub is None:
            break
        cmd, rest = sub, rest[1:]
        chain.append(cmd)
    return cmd, chain, rest


@pytest.mark.parametrize(("where", "words", "synopsis"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_each_example_matches_the_command(where: str, words: list[str], synopsis: bool) -> None:
    cmd, chain, rest = _resolve(words)
    if isinstance(cmd, click.Group):
        # A group alone is fine (`cloud-receiver --help`); a word after it must be one
        # of its commands.
        assert not rest or rest[0].startswith("-") or rest[0].isupper(), (
            f"{where}: {' '.join(words)}: no command {rest[0]!r} in {chain[-1].name}"
        )
        return
    known = {o for c in chain for p in c.params for o in (*p.opts, *p.secondary_opts)}
    known |= {"--help"}
    for word in rest:
        for opt in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", word):
            assert opt in known, f"{where}: {' '.join(words)}: {cmd.name} has no {opt}"
    if synopsis or any(re.fullmatch(r"[A-Z][A-Z0-9_]*", w) for w in rest):
        return  # notation or placeholders (METER, URL): the options were checked above
    try:
        cmd.make_context(cmd.name or "", list(rest))
    except click.BadParameter as e:
        # Values are checked too, except what depends on this machine: files and
        # folders the example names that do not exist here.
        assert "does not exist" in str(e) or "not a file" in str(e), f"{where}: {e}"
    except click.UsageError as e:
        raise AssertionError(f"{where}: {' '.join(words)}: {e.format_message()}") from e
