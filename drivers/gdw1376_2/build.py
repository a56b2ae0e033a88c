"""Building frames: a concentrator request, a module's reply or report, a confirm.

See the package docstring (``drivers.gdw1376_2``) for the frame layout and sources.
"""

from __future__ import annotations

from dataclasses import replace

from drivers.gdw1376_2.codes import DENY_ID, ZERO_ADDRESS, CommMode, Edition
from drivers.gdw1376_2.frame import DownInfo, Frame, UpInfo
from drivers.gdw1376_2.module_units import Confirm, Deny
from drivers.gdw1376_2.units import Unit, unit_id

# --------------------------------------------------------------------------------------
# Building frames


def command(
    unit: Unit,
    *,
    seq: int,
    destination: str | None = None,
    source: str = ZERO_ADDRESS,
    relays: tuple[str, ...] = (),
    mode: int = CommMode.HPLC,
    edition: Edition = Edition.Q2013,
) -> Frame:
    """A concentrator request (DIR 0, PRM 1). With ``destination`` (a meter) the frame
    carries the address field; ``source`` is then the module's master-node address."""
    afn, fn = unit_id(unit)
    info = DownInfo(seq=seq, slave_node=destination is not None, relay_level=len(relays))
    return Frame(
        afn=afn,
        fn=fn,
        data=unit.encode(edition),
        info=info,
        prm=True,
        mode=mode,
        source=source if destination is not None else None,
        relays=relays,
        destination=destination,
    )


def reply_to(
    request: Frame,
    unit: Unit,
    *,
    info: UpInfo | None = None,
    edition: Edition = Edition.Q2013,
) -> Frame:
    """The module's answer to ``request`` (DIR 1, PRM 0): same SEQ, addresses swapped.

    SPLCKQ-11's simulated module answers this way (Creat376_2UpFrameFormDownFrame), and
    its captured replies show the meter as source and the master node as destination.
    A deny carries no address field whatever the request had (``DENY_ID``).
    """
    afn, fn = unit_id(unit)
    slave = request.info.slave_node and (afn, fn) != DENY_ID  # a deny is never addressed
    info = replace(info or UpInfo(), seq=request.seq, slave_node=slave)
    return Frame(
        afn=afn,
        fn=fn,
        data=unit.encode(edition),
        info=info,
        prm=False,
        mode=request.mode,
        source=request.destination if slave else None,
        destination=request.source if slave else None,
    )


def report(
    unit: Unit,
    *,
    seq: int,
    mode: int = CommMode.HPLC,
    info: UpInfo | None = None,
    edition: Edition = Edition.Q2013,
) -> Frame:
    """A spontaneous frame from the module (DIR 1, PRM 1): AFN 06 reports, 03 F10."""
    afn, fn = unit_id(unit)
    info = replace(info or UpInfo(), seq=seq, slave_node=False)
    return Frame(afn=afn, fn=fn, data=unit.encode(edition), info=info, prm=True, mode=mode)


def confirm_report(frame: Frame, unit: Confirm | Deny | None = None) -> Frame:
    """The concentrator's answer to a spontaneous frame (DIR 0, PRM 0), same SEQ."""
    unit = unit or Confirm()
    return Frame(
        afn=unit.AFN,
        fn=unit.FN,
        data=unit.encode(),
        info=DownInfo(seq=frame.seq),
        prm=False,
        mode=frame.mode,
    )
