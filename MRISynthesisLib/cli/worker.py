"""``mrisynth worker REQUEST.json``: run one synthesis request as a worker process (what the Slicer module starts)."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``worker``."""
    from ..worker.run import LIFELINE_FLAG

    parser = subparsers.add_parser(
        "worker", help="run one synthesis request file (the Slicer module's worker process)",
        description="Read REQUEST.json (input files, targets, model, device), synthesise, write the results "
        "beside it and print progress as JSON lines on stdout. Exit status: 0 done, 1 failed, 2 bad request, "
        "3 cancelled, 4 the starting process went away.")
    parser.add_argument("request", type=Path, help="the request file the module wrote")
    parser.add_argument(LIFELINE_FLAG, dest="lifeline", action="store_true",
                        help="end when standard input closes (the starting process is gone)")
    parser.set_defaults(handler=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    """Hand over to the worker's own entry point (it owns stdout and the signals from here on)."""
    from ..worker.run import LIFELINE_FLAG, main

    return main([str(args.request)] + ([LIFELINE_FLAG] if args.lifeline else []))
