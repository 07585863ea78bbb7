"""The ``mrisynth`` command: phantom data, synthesis, validation, and (later) training and evaluation.

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
from pathlib import Path
from typing import Callable, Sequence as TypingSequence

from . import __version__

Handler = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """A failure to report as one line, without a traceback."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` removes its staging files on the way out."""


#: Exit codes after a signal, as shells report them (128 + signal number).
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


@contextlib.contextmanager
def _terminate_as_exception():
    """While a command runs, SIGTERM raises :class:`Terminated` instead of killing the process outright.

    Python's default for SIGTERM ends the process without unwinding, which left half-written
    staging folders behind; as an exception it unwinds like Ctrl-C.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _add_output_dir(parser: argparse.ArgumentParser, required: bool = True, default: str | None = None) -> None:
    parser.add_argument(
        "-o", "--output-dir", type=Path, required=required, default=default,
        help="folder for the results (created if missing)" + (f"; default {default}" if default else ""),
    )


def _add_phantom(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "phantom", help="generate MR-physics phantom cases in BraTS layout",
        description="Generate simulated brain MRI cases (T1, T1c, T2, FLAIR and a BraTS 2023 label map) "
        "from the ICBM152 template with MR signal equations. For tests, demos and training demo models; "
        "not patient data.",
    )
    _add_output_dir(parser)
    parser.add_argument("--cases", type=int, default=1, help="number of cases (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first case; case i uses seed+i (default 0)")
    parser.add_argument("--small", action="store_true", help="about 2 mm, 96 x 96 x 64 voxels (fast tests)")
    parser.set_defaults(handler=_run_phantom)


def _run_phantom(args: argparse.Namespace) -> int:
    from . import phantom
    from .progress import terminal_progress

    if args.cases < 1:
        raise CommandError("--cases must be at least 1")
    with terminal_progress(description="phantom cases") as progress:
        folders = phantom.generate_cases(args.output_dir, args.cases, args.seed, small=args.small,
                                         progress=progress)
    for folder in folders:
        print(folder)
    return 0


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
    _add_phantom(subparsers)
    for register in _extra_commands():
        register(subparsers)
    return parser


def _extra_commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Subcommands defined in their own modules (kept out of this file to keep it small)."""
    from . import cli_commands

    return cli_commands.REGISTRARS


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
    except Terminated:
        print("mrisynth: terminated", file=sys.stderr)
        return EXIT_TERMINATED
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
