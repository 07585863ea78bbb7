"""``mrisynth evaluate`` (a bundle on complete cases, the paper's tables) and ``mrisynth demo``."""
from __future__ import annotations

import argparse
from pathlib import Path

from .devices import DEVICE_CHOICES

#: The files of one evaluation that a second evaluation into the same folder replaces as a set.
EVALUATION_FILES = ("evaluation.csv", "evaluation.md", "ssim_boxplot.png", "dice_boxplot.png")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` and ``demo``."""
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

    parser = subparsers.add_parser(
        "demo", help="synthesise a hidden sequence of a new phantom case and compare",
        description="Generate a full-size phantom case the model never saw, hide one sequence, synthesise it "
        "from the other three and write the inputs, the hidden ground truth, the synthetic volume with its "
        "maps, a JSON report and montage.png; print SSIM/PSNR against the hidden sequence. No network needed.",
    )
    parser.add_argument("-o", "--output-dir", type=Path, default=Path("mrisynth-demo"),
                        help="folder for the results (default ./mrisynth-demo)")
    parser.add_argument("--missing", default="t1c", help="sequence to hide and synthesise (default t1c)")
    parser.add_argument("--seed", type=int, default=None,
                        help="phantom seed (default: the model's demo seed, else 90210)")
    parser.add_argument("--model", default=None, help="catalogue bundle name, bundle folder or checkpoint "
                        "(default: the catalogue's default bundle)")
    parser.add_argument("--device", choices=DEVICE_CHOICES + ("gpu",), default="auto",
                        help="where the networks run (default auto: CUDA when present)")
    parser.add_argument("--small", action="store_true", help=argparse.SUPPRESS)  # 96x96x64 case, for tests
    parser.set_defaults(handler=run_demo)


def is_evaluation_file(name: str) -> bool:
    """Files of an evaluation set: the tables, the plots and (``--save-volumes``) the volumes."""
    return name in EVALUATION_FILES or name.endswith(".nii.gz")


def run_evaluate(args: argparse.Namespace) -> int:
    """Find the cases, evaluate, write the tables and figures atomically, print the summary."""
    from .evaluation import console_summary, evaluate_cases, find_evaluation_cases, write_evaluation
    from .outputs import OutputPlan
    from .progress import terminal_progress
    from .weights import load_bundle

    cases = find_evaluation_cases(args.data, args.cases)
    plan = OutputPlan(args.output_dir, is_evaluation_file, inputs=tuple(case.folder for case in cases),
                      overwrite=args.overwrite, what="an evaluation")
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


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo and print the metrics table and where the files are."""
    from . import demo
    from .progress import terminal_progress

    with terminal_progress(description="demo") as progress:
        result = demo.run_demo(args.output_dir, missing=args.missing, seed=args.seed, model=args.model,
                               device=args.device, small=args.small, progress=progress)
    for note in result.notes:
        print(f"note: {note}")
    sources = ", ".join(s.short_name for s in result.sources)
    print(f"Phantom case {result.case_id} (seed {result.seed}): {result.missing.display_name} hidden and "
          f"synthesised from {sources} by model {result.model_name}.")
    print(f"Compared with the hidden {result.missing.short_name}:")
    print(demo.format_table(result.metrics))
    files = result.files
    print(f"Files in {result.output_dir}:")
    rows = [("inputs", ", ".join(files[k].name for k in files if k.startswith("input_"))),
            ("ground truth", f"{files['ground_truth'].name} (hidden from the model), {files['label'].name}"),
            ("synthetic", files["synthetic"].name),
            ("maps", ", ".join(files[k].name for k in ("stage1", "refinement_map", "tumour_map", "error_map")
                               if k in files)),
            ("report", files["report"].name), ("montage", files["montage"].name)]
    for name, value in rows:
        print(f"  {name + ':':<14}{value}")
    steps = ("phantom_s", "synthesis_s", "metrics_s", "write_s", "montage_s")
    print("Time: " + ", ".join(f"{k[:-2]} {result.timings[k]:.1f} s" for k in steps))
    return 0
