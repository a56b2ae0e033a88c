"""One error tree for the simulator, split by what the caller should do.

- ``SpecError``: what was asked for cannot be simulated (an address range with no room
  for the meters, an impossible transformer area, a malformed theft or vacation). The
  same request fails again: correct it. A ``ValueError`` too, as it always was.
- ``OptionError``: the text of one command-line option does not parse (a fault, an
  offline window, a cover opening, a modem fault); ``option`` names the flag when the
  parser belongs to exactly one.
- ``SimUnavailable``: something the simulation needs from outside is not there (the
  receiver database cannot be opened, a simulator process did not become ready). The
  request was fine; the environment is not.

The ``hil-sim`` command line turns them into a message and an exit code in one place
(``hil_sim.cli.edge``): 2 with the usage for the first two, 1 for the last.
"""

from __future__ import annotations


class SimError(Exception):
    """Root of every error raised by ``hil_sim``."""


class SpecError(SimError, ValueError):
    """The simulation asked for cannot be built."""


class OptionError(SpecError):
    """A command-line option's text does not parse."""

    def __init__(self, message: str, *, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


class SimUnavailable(SimError):
    """Something outside the simulator that it needs failed or is missing."""


class LinkInUse(SimUnavailable):
    """The link asked for is served by another simulator, which keeps it."""


class SimNotReady(SimUnavailable, RuntimeError):
    """A ``hil-sim`` process exited or stayed silent instead of reporting ready."""
