"""``mrisynth evaluate``: a bundle on many complete cases, the paper's tables and box plots."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..core.devices import DEVICE_CHOICES

#: The files of one evaluation that a second evaluation into the same folder replaces as a set.
EVALUATION_FILES = ("evaluation.csv", "evaluation.md", "ssim_boxplot.png", "dice_boxplot.png")
#: Hidden list of an evaluation's files (with --save-volumes, the volumes too), replaced with the set.
EVALUATION_MANIFEST = ".mrisynth-evaluation.json"



def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``evaluate``."""
    parser = subparsers.add_parser(
        "evaluate", help="evaluate a model bundle on complete cases (paper Tables 1-3)",
        description="For every case under --data (all four sequences and a -seg label map) and every target, "
        "synthesise the target from the other three and compare with the acquired one: SSIM whole/tumour/"
        "healthy, PSNR, NMSE, MAE before and after refinement, and Dice/HD95 of the bundle's segmenter on the "
        "completed set. Writes evaluation.csv, evaluation.md and box plots (PNG).",
    )
    parser.add_argument("--data", type=Path, required=True, help="folder of BraTS-style case folders")
    parser.add_argument("-o", "--output-dir", type=Path, required=True, help="folder for the results")
    parser.add_argument("--model", default=None, help="catalogue bundle name, bundle folder or checkpoint "
                        "(default: the catalogue's default bundle)")
    parser.add_argument("--device", choices=DEVICE_CHOICES + ("gpu",), default="auto",
                        help="where the networks run (default auto: CUDA when present)")
    parser.add_argument("--cases", type=int, default=None, help="evaluate only the first N cases (sorted)")
    parser.add_argument("--targets", default=None, help="comma-separated targets (default: all four)")
    parser.add_argument("--save-volumes", action="store_true",
                        help="also write every synthetic volume and predicted label map")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier evaluation's tables and plots in the output folder (as one set)")
    parser.set_defaults(handler=run_evaluate)


def is_evaluation_file(name: str) -> bool:
    """The fixed files of an evaluation set; its saved volumes are listed in its manifest."""
    return name in EVALUATION_FILES


def run_evaluate(args: argparse.Namespace) -> int:
    """Find the cases, evaluate, write the tables and figures atomically, print the summary."""
    from ..evaluation.cases import evaluate_cases, find_evaluation_cases
    from ..evaluation.tables import console_summary
    from ..evaluation.writing import write_evaluation
    from ..core.result_files import OutputPlan
    from ..core.progress import terminal_progress
    from ..core.bundles import load_bundle

    cases = find_evaluation_cases(args.data, args.cases)
    plan = OutputPlan(args.output_dir, is_evaluation_file, inputs=tuple(case.folder for case in cases),
                      overwrite=args.overwrite, what="an evaluation", manifest=EVALUATION_MANIFEST)
    plan.check(EVALUATION_FILES[:2])
    targets = args.targets.split(",") if args.targets else None
    bundle = load_bundle(args.model)
    notes = []
    if bundle.segmenter is None:
        notes.append(f"Model {bundle.name} has no segmenter: Dice and HD95 are skipped.")
    with plan.staged() as staging:
        with terminal_progress(description=f"evaluating {len(cases)} case(s)") as progress:
            rows = evaluate_cases(cases, bundle, device=args.device, progress=progress, targets=targets,
                                  volumes_dir=staging if args.save_volumes else None)
        paths = write_evaluation(rows, staging, f"{bundle.name} ({bundle.stages})",
                                 segmenter=bundle.segmenter is not None, refiner=bundle.refiner is not None,
                                 notes=notes)
    for note in notes:
        print(f"note: {note}")
    print(console_summary(rows, segmenter=bundle.segmenter is not None, refiner=bundle.refiner is not None))
    for path in paths.values():
        print(f"wrote {args.output_dir / path.name}")
    return 0
