"""``python -m MRISynthesisLib.worker REQUEST.json``: run one synthesis request in this process.

Standard output is reserved for the event lines first, before the engine (SimpleITK, torch) is
imported: whatever those print on import goes to standard error, never into the protocol stream.
"""
from __future__ import annotations

import sys

from .stdio import reserve_stdout_for_events

_EVENTS_FD = reserve_stdout_for_events()

from .run import main  # noqa: E402  (after the redirect, on purpose)

sys.exit(main(events_fd=_EVENTS_FD))
