"""``mrisynth evaluate``: a bundle on many complete cases, the paper's tables and box plots."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..core.devices import DEVICE_CHOICES
from .common import add_protocol_option, add_uncertainty_options, uncertainty_settings

#: The files of one evaluation that a second evaluation into the same folder replaces as a set.
EVALUATION_FILES = ("evaluation.csv", "evaluation.md", "ssim_boxplot.png", "dice_boxplot.png", "reliability.png")
#: Hidden list of an evaluation's files (with --save-volumes, the volumes too), replaced with the set.
EVALUATION_MANIFEST = ".mrisynth-evaluation.json"



def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``evaluate``."""
    parser = subparsers.add_parser(
        "evaluate", help="evaluate a model bundle on complete cases (paper Tables 1-3)",
        description="For every case under --data (all four sequences; a -seg label map is optional) and every "
        "target, synthesise the target from the other three and compare with the acquired one: SSIM whole/"
        "tumour/healthy, PSNR, NMSE, MAE before and after refinement, and Dice/HD95 of the segmenter on the "
        "completed set against the label map and against the pseudo-label (the segmenter on the four acquired "
        "sequences; the paper's Table 3 protocol, which also gives the tumour region of cases without a label "
        "map). Writes evaluation.csv, evaluation.md and box plots (PNG).",
    )
    parser.add_argument("--data", type=Path, required=True, help="folder of BraTS-style case folders")
    parser.add_argument("-o", "--output-dir", type=Path, required=True, help="folder for the results")
    parser.add_argument("--model", default=None, help="catalogue bundle name, bundle folder or checkpoint "
                        "(default: the catalogue's default bundle)")
    parser.add_argument("--device", choices=DEVICE_CHOICES + ("gpu",), default="auto",
                        help="where the networks run (default auto: CUDA when present)")
    parser.add_argument("--cases", type=int, default=None, help="evaluate only the first N cases (sorted)")
    parser.add_argument("--targets", default=None, help="comma-separated targets (default: all four)")
    parser.add_argument("--segmenter", type=Path, default=None,
                        help="segment with this instead of the bundle's segmenter: an MRISynthesis segmenter "
                        "checkpoint (segmenter.pt, e.g. from 'mrisynth train segmenter') or a folder holding one "
                        "(a bundle folder). MONAI bundle configs and FeTS weights cannot be read; no FeTS-compatible "
                        "weights ship with MRISynthesis, so pseudo-labels are not the paper's FeTS ones")
    parser.add_argument("--intensity", default="mean",
                        help="intensity-encoding value of each target (the paper's Table 1 rows): mean (the prior "
                        "mean, default), 2sigma (a draw from the prior clipped at mean ± 2 sigma, per case and "
                        "target) or gt (the true target's own value: the upper bound)")
    parser.add_argument("--intensity-seed", type=int, default=0,
                        help="seed of the 2sigma draws (default 0; the same seed gives the same values)")
    add_protocol_option(parser)
    add_uncertainty_options(parser)
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
    from ..core.bundles import load_bundle, load_segmenter
    from ..evaluation.intensity import check_intensity_mode, check_intensity_seed

    check_intensity_mode(args.intensity)
    check_intensity_seed(args.intensity_seed)
    samples, seed = uncertainty_settings(args)
    cases = find_evaluation_cases(args.data, args.cases)
    plan = OutputPlan(args.output_dir, is_evaluation_file, inputs=tuple(case.folder for case in cases),
                      overwrite=args.overwrite, what="an evaluation", manifest=EVALUATION_MANIFEST)
    plan.check(EVALUATION_FILES[:2])
    targets = args.targets.split(",") if args.targets else None
    bundle = load_bundle(args.model)
    segmenter = load_segmenter(args.segmenter) if args.segmenter is not None else bundle.segmenter
    segmenter_name = f"the segmenter {args.segmenter}" if args.segmenter is not None else \
        f"the segmenter of {bundle.name}"
    notes = []
    if segmenter is None:
        notes.append(f"Model {bundle.name} has no segmenter (and no --segmenter was given): Dice and HD95 are "
                     "skipped.")
    with plan.staged() as staging:
        with terminal_progress(description=f"evaluating {len(cases)} case(s)") as progress:
            rows = evaluate_cases(cases, bundle, device=args.device, progress=progress, targets=targets,
                                  volumes_dir=staging if args.save_volumes else None, intensity=args.intensity,
                                  intensity_seed=args.intensity_seed, segmenter=segmenter,
                                  protocol=args.protocol, uncertainty=samples, uncertainty_seed=seed)
        paths = write_evaluation(rows, staging, f"{bundle.name} ({bundle.stages})",
                                 segmenter=segmenter is not None, refiner=bundle.refiner is not None,
                                 notes=notes, segmenter_name=segmenter_name)
    for note in notes:
        print(f"note: {note}")
    print(console_summary(rows, segmenter=segmenter is not None, refiner=bundle.refiner is not None))
    for path in paths.values():
        print(f"wrote {args.output_dir / path.name}")
    return 0
