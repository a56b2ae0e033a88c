"""Run benchmarks on two commits in the same sitting and compare their BENCH figures.

    python bench/compare.py --base REV [--rounds 2] [bench/daemon.py bench/wire.py ...]

Absolute times do not hold on a shared, noisy machine; ratios taken in one run do. The
base commit is checked out into a temporary git worktree and each script is run from
there with the base's own code on ``PYTHONPATH``, alternating base and head for each
round, so that both see the same load. Prints ``BENCH compare_<name> <ratio> x`` (head
/ base, > 1 is better whichever way the figure runs) and a table; exits 1 when a
figure got worse by more than ``--tolerance`` (default 10 %).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCRIPTS = (
    "bench/codec.py",
    "bench/daemon.py",
    "bench/wire.py",
    "bench/receiver.py",
    "bench/plc.py",
    "bench/forecast.py",
    "bench/metrics.py",
    "bench/loadprofile.py",
    "bench/api.py",
    "bench/portal.py",
)
# Units whose figures are better when higher; every other unit is better when lower.
HIGHER_IS_BETTER = {"reads/s", "readings/s", "ratio", "fraction", "x", "rps", "intervals/s"}
# Figures that describe the set-up, not the software (a computed wire-time limit).
NOT_COMPARED = re.compile(r"(_limit_|_limit$|^naive_)")
_LINE = re.compile(r"^BENCH (\S+) (\S+) ?(.*)$")


def run(script: str, tree: Path) -> dict[str, tuple[float, str]]:
    """One run of ``script`` with the code of ``tree``; its BENCH figures by name."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run(
        [sys.executable, str(tree / script)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        print(f"warning: {script} in {tree} exited {done.returncode}:\n{tail}", file=sys.stderr)
    figures: dict[str, tuple[float, str]] = {}
    for line in done.stdout.splitlines():
        m = _LINE.match(line.strip())
        if m:
            try:
                figures[m[1]] = (float(m[2]), m[3].strip())
            except ValueError:
                continue
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("scripts", nargs="*", default=list(DEFAULT_SCRIPTS))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mf-bench-base-") as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(
            [
                "git",
                "-C",
                str(ROOT),
                "worktree",
                "add",
                "--detach",
                "-q",
                str(base_tree),
                args.base,
            ],
            check=True,
        )
        try:
            results: dict[str, dict[str, list[float]]] = {"base": {}, "head": {}}
            units: dict[str, str] = {}
            for script in args.scripts:
                for _ in range(args.rounds):
                    for side, tree in (("base", base_tree), ("head", ROOT)):
                        if not (tree / script).exists():
                            continue
                        for name, (value, unit) in run(script, tree).items():
                            results[side].setdefault(name, []).append(value)
                            units[name] = unit
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)],
                check=False,
            )

    worse = []
    print(f"{'figure':44} {'base':>14} {'head':>14} {'better by':>10}")
    for name in sorted(set(results["base"]) | set(results["head"])):
        b, h = results["base"].get(name), results["head"].get(name)
        unit = units.get(name, "")
        if not b or not h:
            shown = f"{statistics.median(b or h or [0]):14.3f}"
            print(f"{name:44} {shown if b else '-':>14} {shown if h else '-':>14} {'new':>10}")
            continue
        mb, mh = statistics.median(b), statistics.median(h)
        if NOT_COMPARED.search(name) or mb == 0 or mh == 0:
            print(f"{name:44} {mb:14.3f} {mh:14.3f} {'-':>10}")
            continue
        gain = mh / mb if unit in HIGHER_IS_BETTER else mb / mh
        print(f"{name:44} {mb:14.3f} {mh:14.3f} {gain:9.3f}x  {unit}")
        print(f"BENCH compare_{name} {gain:.3f} x")
        if gain < 1 - args.tolerance:
            worse.append(name)
    if worse:
        print(f"worse than base by more than {args.tolerance:.0%}: {', '.join(worse)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
