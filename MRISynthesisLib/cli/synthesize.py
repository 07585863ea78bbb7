"""``mrisynth synthesize``: the missing sequences of one case, from files to files."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import (add_model_options, add_uncertainty_options, load_inputs, output_plan, parse_inputs,
                     print_distribution_check, targets_to_synthesise, uncertainty_settings)
from .study import add_case_inputs, add_study_options


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``synthesize``."""
    parser = subparsers.add_parser(
        "synthesize", help="synthesise the missing sequences of a case",
        description="Synthesise every missing sequence (or --targets) from the acquired ones. Writes "
        "<case>-<seq>.nii.gz (final), -stage1, -refinement, -tumor-map (with --uncertainty N, -uncertainty) and <case>-report.json. The inputs must be "
        "what the model expects (skull-stripped, co-registered, near 1 mm; measured before the synthesis): "
        "prepare a clinical study with --prepare.",
    )
    add_case_inputs(parser, "BraTS-style case folder (2023+ or 2021 names)")
    parser.add_argument("-o", "--output-dir", type=Path, required=True, help="folder for the results")
    parser.add_argument("--targets", default=None, help="comma-separated sequences to synthesise "
                                                           "(default: every missing one)")
    parser.add_argument("--no-tumour-maps", action="store_true", help="skip the tumour-region maps")
    add_model_options(parser)
    add_uncertainty_options(parser)
    add_study_options(parser)
    parser.set_defaults(handler=run_synthesize)


def run_synthesize(args: argparse.Namespace) -> int:
    """Read inputs (files or a DICOM study), check or prepare them, synthesise, write outputs by role and the
    report (with --prepare on the reference series' own grid; with --dicom-output also as DICOM series)."""
    from ..core.result_files import build_report, write_report, write_result
    from ..core.pipeline import synthesize
    from ..core.progress import terminal_progress
    from ..core.bundles import load_bundle
    from . import study

    samples, seed = uncertainty_settings(args)
    run = study.read_study(args, parse_inputs, load_inputs)
    for line in run.messages:
        print(line)
    case_id = args.case or run.case_id
    targets = targets_to_synthesise(args.targets, run.files)
    plan = output_plan(args, case_id, dict(enumerate(run.inputs_for_plan)), targets)  # inputs are never written
    plan.check(study.extra_output_names(args, case_id, targets, list(run.images)))
    dicom_folder = study.dicom_output_folder(args, case_id)
    bundle = load_bundle(args.model)
    images, prepared, preconditions = study.model_inputs(args, run, lambda line: print(f"note: {line}"), bundle)
    with terminal_progress(description=f"synthesising {case_id}") as progress:
        result = synthesize(images, bundle, targets=targets if args.targets else None, device=args.device,
                            progress=progress, tumour_maps=not args.no_tumour_maps, intensity=args.intensity,
                            uncertainty=samples, uncertainty_seed=seed)
    native = prepared.result_on_grid(result) if prepared is not None else result
    with plan.staged() as staging:
        written = write_result(native, staging, case_id, final_dir=args.output_dir)
        extras = study.write_study_extras(args, staging, case_id, result, prepared, run)
        if dicom_folder is not None:
            extras["dicom_series"] = study.write_dicom_series(staging, dicom_folder.name, native, run, bundle.name)
        report = build_report(native, case_id, run.files, written, bundle)
        report["preparation"] = prepared.report() if prepared is not None else None
        report["preconditions"] = preconditions.to_json() if preconditions is not None else None
        report["study_outputs"] = extras or None
        write_report(report, staging / f"{case_id}-report.json")
    for message in native.messages:
        print(f"note: {message}")
    print_distribution_check(native)
    for sequence, outputs in written.items():
        print(f"{sequence}: {outputs['synthetic']}")
    if extras.get("brain_mask"):
        print(f"brain mask (check it): {extras['brain_mask']}")
    for name in extras.get("dicom_series", []):
        print(f"DICOM series: {args.output_dir / name}")
    print(f"report: {args.output_dir / f'{case_id}-report.json'}")
    return 0
