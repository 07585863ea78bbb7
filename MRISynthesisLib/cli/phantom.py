"""``mrisynth phantom``: MR-physics phantom cases in BraTS layout."""
from __future__ import annotations

import argparse

from .common import UsageError, add_output_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "phantom", help="generate MR-physics phantom cases in BraTS layout",
        description="Generate simulated brain MRI cases (T1, T1c, T2, FLAIR and a BraTS 2023 label map) "
        "from the ICBM152 template with MR signal equations. For tests, demos and training demo models; "
        "not patient data.",
    )
    add_output_dir(parser)
    parser.add_argument("--cases", type=int, default=1, help="number of cases (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first case; case i uses seed+i (default 0)")
    parser.add_argument("--small", action="store_true", help="about 2 mm, 96 x 96 x 64 voxels (fast tests)")
    parser.set_defaults(handler=run_phantom)


def run_phantom(args: argparse.Namespace) -> int:
    from .. import phantom
    from ..core.progress import terminal_progress

    if args.cases < 1:
        raise UsageError("--cases must be at least 1")
    with terminal_progress(description="phantom cases") as progress:
        folders = phantom.generate_cases(args.output_dir, args.cases, args.seed, small=args.small,
                                         progress=progress)
    for folder in folders:
        print(folder)
    return 0
