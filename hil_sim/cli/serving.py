"""How every serving ``hil-sim`` command runs: start, say "ready", serve until a
signal, stop, say "stopped".

The two JSON lines on stdout are the simulator's interface to whoever started it
(``hil_sim.process.SimProcess`` reads both): ``{"event": "ready", ...}`` once the ports
can be opened, ``{"event": "stopped", ...}`` with the counters at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol


class Served(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def print_event(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def serve_until_signalled(
    sims: Sequence[Served],
    ready: Callable[[], dict[str, Any]],
    stopped: Callable[[], dict[str, Any]],
    *,
    on_usr1: Callable[[], None] | None = None,
) -> None:
    """Start ``sims`` one after the other, print ``ready()``, and run until SIGINT or
    SIGTERM (``on_usr1``: what SIGUSR1 does meanwhile); then stop them all, whatever
    each stop raises, and print ``stopped()``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if on_usr1 is not None:
        loop.add_signal_handler(signal.SIGUSR1, on_usr1)
    started: list[Served] = []
    try:
        for sim in sims:
            await sim.start()
            started.append(sim)
    except BaseException:
        for sim in started:  # one link refused: give the others back too
            with contextlib.suppress(Exception):
                await sim.stop()
        raise
    print_event(ready())
    try:
        await stop.wait()
    finally:
        for sim in sims:
            with contextlib.suppress(Exception):
                await sim.stop()
        print_event(stopped())
