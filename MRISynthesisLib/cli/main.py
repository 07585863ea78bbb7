"""The ``mrisynth`` parser and entry point; each command lives in its own module of this package.

Every subcommand turns its arguments into library calls; errors reach the user as one
line on stderr with exit code 2 (the traceback only with ``--debug``). Subcommands that
write files take ``--output-dir``/``-o``.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import traceback
from typing import Sequence as TypingSequence

from .. import __version__

class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that every ``finally`` removes its staging files on
    the way out; ``exit_code`` is what a shell reports for that signal (128 + its number)."""

    def __init__(self, signum: int = 15) -> None:
        super().__init__()
        self.exit_code = 128 + int(signum)


#: Signals that end a run like SIGTERM: a closed terminal or a dropped SSH session sends SIGHUP.
TERMINATING_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


#: Exit codes after a signal, as shells report them (128 + signal number).
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


@contextlib.contextmanager
def _terminate_as_exception():
    """While a command runs, SIGTERM and SIGHUP raise :class:`Terminated` instead of killing the process.

    Python's default for SIGTERM ends the process without unwinding, which left half-written
    staging folders behind; as an exception it unwinds like Ctrl-C.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated(signum)

    previous = {number: signal.signal(number, raise_terminated) for number in TERMINATING_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand that exists."""
    parser = argparse.ArgumentParser(
        prog="mrisynth",
        description="Synthesise missing brain MRI sequences (T1, T1c, T2, FLAIR) with the two-stage "
        "HF-GAN + 3D Refiner method, and the tools around it.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in _command_modules():
        command.register(subparsers)
    return parser


def _command_modules() -> list:
    """One module per command, in the order ``--help`` lists them (imported here: keeps start-up light)."""
    from . import demo, evaluate, phantom, reproduce, synthesize, train, validate, worker

    return [phantom, synthesize, validate, evaluate, demo, train, reproduce, worker]


def main(argv: TypingSequence[str] | None = None) -> int:
    """Entry point of the ``mrisynth`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        with _terminate_as_exception():
            return int(args.handler(args) or 0)
    except Terminated as stop:
        print("mrisynth: terminated", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print("mrisynth: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # every failure becomes one line unless --debug
        if args.debug:
            traceback.print_exc()
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"mrisynth: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
