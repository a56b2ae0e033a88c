"""What this release of the concentrator needs and offers, for the release builder.

``python -m concentrator.release_info`` prints it as JSON. The receiver's
``release build`` runs it from inside the wheel it packages (a pure-Python wheel is
importable as a zip), so the package states the wheel's own store schema, not that of
whatever software the receiver happens to run; and the receiver never imports the
concentrator.
"""

from __future__ import annotations

import json

from concentrator import __version__
from concentrator.storage import SCHEMA_VERSION, STORE_MIN_READER
from contract import wire


def release_info() -> dict[str, object]:
    return {
        "version": __version__,
        "store_schema": SCHEMA_VERSION,
        "store_min_reader": STORE_MIN_READER,
        "wire_versions": list(wire.VERSIONS),
    }


if __name__ == "__main__":
    print(json.dumps(release_info()))
