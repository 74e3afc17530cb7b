"""The ``lineguard`` command's entry point: what must be checked before Faust is imported.

Faust reads ``-L``/``--loop`` (and ``FAUST_LOOP``, ``F_LOOP``) from the command line when it
is imported, and loads that event loop's library there and then. None but asyncio's is
installed, so any other ended in a traceback from Faust's import, before lineguard could
refuse it; it is refused here, in one line, with status 2 as other bad options are.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Final

LOOPS: Final = ("aio",)
"""The event loops lineguard runs on: asyncio's, Faust's default."""


def loop_asked(argv: Sequence[str]) -> tuple[str, str] | None:
    """Where a loop is asked for and which, read as Faust reads it, or ``None``."""
    for at, arg in enumerate(argv):
        if arg == "-L" or arg.startswith("--loop"):
            name, _, value = arg.partition("=")
            if not value and at + 1 < len(argv):
                value = argv[at + 1]
            return name, value
    for variable in ("FAUST_LOOP", "F_LOOP"):
        if os.environ.get(variable):
            return variable, os.environ[variable]
    return None


def main() -> None:
    """Console entry point: ``lineguard``, once the loop asked for is one it runs on."""
    asked = loop_asked(sys.argv[1:])
    if asked is not None and asked[1] not in LOOPS:
        where, loop = asked
        print(
            f"lineguard: {where} {loop!r}: lineguard runs only on asyncio's event loop,"
            f" {', '.join(LOOPS)} (Faust's default); leave the option out",
            file=sys.stderr,
        )
        raise SystemExit(2)
    from streams.app import main as run

    run()
