"""``mrisynth validate``: leave-one-out on a complete case, with error maps and metric tables."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import UsageError, add_model_options, load_inputs, output_plan


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``validate``."""
    parser = subparsers.add_parser(
        "validate", help="leave-one-out check on a complete case",
        description="On a case with all four sequences, synthesise each one from the other three and compare "
        "with the acquired one (SSIM whole/tumour/healthy, PSNR, NMSE, MAE). Writes the synthetic volumes, error "
        "maps, <case>-validation.csv/.md and <case>-report.json. The case must be what the model expects "
        "(skull-stripped, co-registered, near 1 mm): that is measured first.",
    )
    parser.add_argument("case_dir", type=Path, help="BraTS-style case folder with all four sequences")
    parser.add_argument("-o", "--output-dir", type=Path, required=True, help="folder for the results")
    add_model_options(parser)
    parser.set_defaults(handler=run_validate)


def validation_rows(result) -> list:
    """One row per target and stage (stage 1 and final) with the image metrics."""
    rows = []
    for sequence, target in result.targets.items():
        for stage, values in (("stage1", target.stage1_metrics), ("final", target.metrics)):
            if values:
                rows.append({"target": sequence.value, "stage": stage, **values})
    return rows


def run_validate(args: argparse.Namespace) -> int:
    """Leave-one-out synthesis of every sequence of a complete case, with metrics."""
    from ..core.io import find_case_files, read_case_label, write_text
    from ..evaluation.tables import metrics_table_markdown, rows_to_csv
    from ..core.result_files import build_report, write_report, write_result
    from ..core.pipeline import synthesize
    from ..core.progress import terminal_progress
    from ..sequences import SEQUENCES
    from ..core.bundles import load_bundle
    from ..clinical.study_run import StudyOptions, model_ready_inputs

    found = find_case_files(args.case_dir)
    missing = [s.display_name for s in SEQUENCES if s not in found.sequences]
    if missing:
        raise UsageError(f"{args.case_dir}: validation needs all four sequences; missing {', '.join(missing)}")
    case_id = args.case or found.case_id
    inputs = {**found.sequences, **({"label": found.label} if found.label is not None else {})}
    plan = output_plan(args, case_id, inputs, SEQUENCES)
    images = load_inputs(found.sequences)
    label = read_case_label(args.case_dir)
    bundle = load_bundle(args.model)
    model_ready_inputs(images, bundle, StudyOptions(), {s: str(p) for s, p in found.sequences.items()},
                       advice="validate a BraTS-preprocessed case (skull-stripped, co-registered); prepare a "
                              "clinical study with 'mrisynth synthesize --prepare' first")
    with terminal_progress(description=f"validating {case_id}") as progress:
        result = synthesize(images, bundle, targets=list(SEQUENCES), device=args.device, progress=progress,
                            ground_truth=images, label=label, intensity=args.intensity)
    rows = validation_rows(result)
    table = metrics_table_markdown(
        [dict(row, target=f"{row['target']} ({row['stage']})") for row in rows])
    with plan.staged() as staging:
        written = write_result(result, staging, case_id, final_dir=args.output_dir)
        write_text(rows_to_csv(rows, list(rows[0]) if rows else None), staging / f"{case_id}-validation.csv")
        write_text(f"# Leave-one-out validation of {case_id} (MRISynthesis)\n\nModel: {bundle.name} ({bundle.stages}). "
                   "Each sequence synthesised from the other three; metrics on [0, 1]-normalised "
                   "images inside the brain.\n\n" + table, staging / f"{case_id}-validation.md")
        write_report(build_report(result, case_id, found.sequences, written, bundle),
                     staging / f"{case_id}-report.json")
    print(table, end="")
    return 0
