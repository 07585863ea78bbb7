"""Progress and cancellation shared by the CLI, the jobs and the engine.

Library functions take an optional ``progress(fraction, message)`` callback and an optional
``cancel`` event; the CLI turns the callback into a tqdm bar on a terminal and into plain,
rate-limited lines otherwise (logs, CI). A set ``cancel`` event makes :func:`check_cancel`
raise :class:`Cancelled`, the one exception that means "the caller asked to stop".
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Callable, Iterator, Optional

ProgressCallback = Callable[[float, str], None]


class Cancelled(Exception):
    """The caller asked the work to stop; nothing was returned."""


def check_cancel(cancel: Optional[threading.Event]) -> None:
    """Raise :class:`Cancelled` when ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled")


def scaled(progress: Optional[ProgressCallback], start: float, stop: float) -> Optional[ProgressCallback]:
    """A callback that maps [0, 1] of a sub-task onto [start, stop] of the parent's progress."""
    if progress is None:
        return None

    def report(fraction: float, message: str) -> None:
        progress(start + (stop - start) * min(max(fraction, 0.0), 1.0), message)

    return report


@contextlib.contextmanager
def terminal_progress(description: str = "", stream=None) -> Iterator[ProgressCallback]:
    """Yield a ``progress(fraction, message)`` callback drawing a bar (TTY) or printing lines."""
    stream = stream or sys.stderr
    if hasattr(stream, "isatty") and stream.isatty():
        from tqdm import tqdm

        bar = tqdm(total=100, desc=description, unit="%", file=stream,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")

        def report(fraction: float, message: str) -> None:
            bar.n = round(min(max(fraction, 0.0), 1.0) * 100)
            bar.set_postfix_str(message, refresh=False)
            bar.refresh()

        try:
            yield report
        finally:
            bar.close()
        return

    last = {"time": 0.0, "percent": -1}

    def report_lines(fraction: float, message: str) -> None:
        percent = int(min(max(fraction, 0.0), 1.0) * 100)
        now = time.monotonic()
        if percent == last["percent"] or (now - last["time"] < 2.0 and percent < 100):
            return
        last.update(time=now, percent=percent)
        print(f"{description}: {percent:3d}% {message}".rstrip(), file=stream, flush=True)

    yield report_lines
