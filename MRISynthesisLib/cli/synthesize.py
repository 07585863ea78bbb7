"""``mrisynth synthesize``: the missing sequences of one case, from files to files."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_model_options, load_inputs, output_plan, parse_inputs, targets_to_synthesise


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``synthesize``."""
    parser = subparsers.add_parser(
        "synthesize", help="synthesise the missing sequences of a case",
        description="Synthesise every missing sequence (or --targets) from the acquired ones. Writes "
        "<case>-<seq>.nii.gz (final), -stage1, -refinement, -tumor-map and <case>-report.json.",
    )
    parser.add_argument("case_dir", nargs="?", type=Path, help="BraTS-style case folder (2023+ or 2021 names)")
    parser.add_argument("--input", action="append", default=[], metavar="SEQ=PATH",
                        help="an input image, e.g. t1n=a.nii.gz or FLAIR=dicom_folder (repeatable)")
    parser.add_argument("-o", "--output-dir", type=Path, required=True, help="folder for the results")
    parser.add_argument("--targets", default=None, help="comma-separated sequences to synthesise "
                                                           "(default: every missing one)")
    parser.add_argument("--no-tumour-maps", action="store_true", help="skip the tumour-region maps")
    add_model_options(parser)
    parser.set_defaults(handler=run_synthesize)


def run_synthesize(args: argparse.Namespace) -> int:
    """Read inputs, synthesise, write outputs by role and the report."""
    from ..core.result_files import build_report, write_report, write_result
    from ..core.pipeline import synthesize
    from ..core.progress import terminal_progress
    from ..core.bundles import load_bundle

    case_id, files = parse_inputs(args.case_dir, args.input)
    case_id = args.case or case_id
    targets = targets_to_synthesise(args.targets, files)
    plan = output_plan(args, case_id, files, targets)
    images = load_inputs(files)
    bundle = load_bundle(args.model)
    with terminal_progress(description=f"synthesising {case_id}") as progress:
        result = synthesize(images, bundle, targets=targets if args.targets else None, device=args.device,
                            progress=progress, tumour_maps=not args.no_tumour_maps, intensity=args.intensity)
    with plan.staged() as staging:
        written = write_result(result, staging, case_id, final_dir=args.output_dir)
        report = build_report(result, case_id, files, written, bundle)
        write_report(report, staging / f"{case_id}-report.json")
    for message in result.messages:
        print(f"note: {message}")
    for sequence, outputs in written.items():
        print(f"{sequence}: {outputs['synthetic']}")
    print(f"report: {args.output_dir / f'{case_id}-report.json'}")
    return 0
