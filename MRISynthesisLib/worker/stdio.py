"""The worker's standard output, kept for event lines only (standard library only, imported first)."""
from __future__ import annotations

import os
import sys

__all__ = ["reserve_stdout_for_events"]


def reserve_stdout_for_events() -> int:
    """Keep the real stdout for events (returns its new descriptor); fd 1 and ``sys.stdout`` lead to stderr.

    The worker's ``__main__`` calls this before anything else is imported, so nothing printed while
    the engine loads (by Python or by C code) can reach the protocol stream.
    """
    sys.stdout.flush()
    events_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return events_fd
