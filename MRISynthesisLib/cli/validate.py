"""``mrisynth validate``: leave-one-out on a complete case, with error maps and metric tables."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import (UsageError, add_model_options, add_protocol_option, add_uncertainty_options, load_inputs,
                     output_plan, parse_inputs, print_distribution_check, uncertainty_settings)
from .study import add_case_inputs, add_study_options


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``validate``."""
    parser = subparsers.add_parser(
        "validate", help="leave-one-out check on a complete case",
        description="On a case with all four sequences, synthesise each one from the other three and compare "
        "with the acquired one (SSIM whole/tumour/healthy, PSNR, NMSE, MAE). Writes the synthetic volumes, error "
        "maps, <case>-validation.csv/.md and <case>-report.json. The case must be what the model expects "
        "(skull-stripped, co-registered, near 1 mm): that is measured first; a clinical study (files or --dicom) "
        "is prepared with --prepare, and then scored in the model space against its prepared acquired series.",
    )
    add_case_inputs(parser, "BraTS-style case folder with all four sequences")
    parser.add_argument("-o", "--output-dir", type=Path, required=True, help="folder for the results")
    add_model_options(parser)
    add_uncertainty_options(parser)
    add_protocol_option(parser)
    add_study_options(parser, validation=True)
    parser.set_defaults(handler=run_validate)


def validation_rows(result, protocol: str = "brain") -> list:
    """One row per target and stage (stage 1 and final) with the scoring ``protocol`` and its image metrics."""
    rows = []
    for sequence, target in result.targets.items():
        for stage, values in (("stage1", target.stage1_metrics), ("final", target.metrics)):
            if values:
                rows.append({"target": sequence.value, "stage": stage, "protocol": protocol, **values})
    return rows


def _label_file(args: argparse.Namespace) -> tuple:
    """The case folder's label-map file, if any, as a one-item tuple."""
    from ..core.io import find_case_files

    found = find_case_files(args.case_dir) if args.case_dir is not None else None
    return (Path(found.label),) if found is not None and found.label is not None else ()


def _check_all_four(args: argparse.Namespace, found) -> None:
    """Refuse a case without all four sequences, naming where they were looked for."""
    from ..sequences import SEQUENCES

    missing = [s.display_name for s in SEQUENCES if s not in found]
    if missing:
        source = args.dicom or args.case_dir or ", ".join(str(path) for path in found.values())
        raise UsageError(f"{source}: validation needs all four sequences; missing {', '.join(missing)}")


def _case_label(args: argparse.Namespace, prepared, run):
    """The case folder's label map, in the model space when the study was prepared (None without a label).

    With ``--prepare`` the label must lie on the reference series' own grid (where the preparation's
    brain mask and registrations start from); a label on any other grid is refused rather than guessed.
    """
    from ..core.io import grid_differences, read_case_label

    label = read_case_label(args.case_dir) if args.case_dir is not None else None
    if label is None or prepared is None:
        return label
    from ..clinical.model_space import into_grid

    reference = run.images[prepared.reference]
    differences = grid_differences(label, reference)
    if differences:
        raise UsageError(f"{_label_file(args)[0]}: with --prepare the label map must lie on the grid of the "
                         f"reference series {run.files[prepared.reference]} ({'; '.join(differences)})")
    return into_grid(label, prepared.brain_mask, nearest=True)


def run_validate(args: argparse.Namespace) -> int:
    """Leave-one-out synthesis of every sequence of a complete case, with metrics.

    With ``--prepare`` the metrics compare each synthetic sequence with the acquired one after the same
    preparation (both in the model space: the only grid on which they are alike voxel for voxel), and the
    written volumes and error maps lie on the reference series' own grid, like ``synthesize --prepare``'s.
    """
    from ..core.io import write_text
    from ..evaluation.tables import metrics_table_markdown, protocol_line, rows_to_csv
    from ..metrics.protocols import protocol_columns, protocol_provenance
    from ..core.result_files import build_report, write_report, write_result
    from ..core.pipeline import synthesize
    from ..core.progress import terminal_progress
    from ..sequences import SEQUENCES
    from ..core.bundles import load_bundle
    from . import study

    study.check_study_options(args)  # contradictory options, then missing sequences, before any image is read
    samples, seed = uncertainty_settings(args)
    if args.dicom is None:  # which sequences there are is known before any image is read
        _, files = parse_inputs(args.case_dir, args.input)
        _check_all_four(args, files)
    run = study.read_study(args, parse_inputs, load_inputs)
    _check_all_four(args, run.images)
    for line in run.messages:
        print(line)
    case_id = args.case or run.case_id
    protected = run.inputs_for_plan + _label_file(args)  # the label map is an input too: never replaced
    plan = output_plan(args, case_id, dict(enumerate(protected)), SEQUENCES)
    plan.check(study.extra_output_names(args, case_id, SEQUENCES, list(run.images)))
    bundle = load_bundle(args.model)
    images, prepared, preconditions = study.model_inputs(args, run, lambda line: print(f"note: {line}"), bundle)
    label = _case_label(args, prepared, run)
    with terminal_progress(description=f"validating {case_id}") as progress:
        result = synthesize(images, bundle, targets=list(SEQUENCES), device=args.device, progress=progress,
                            ground_truth=images, label=label, intensity=args.intensity,
                            metrics_protocol=args.protocol, uncertainty=samples, uncertainty_seed=seed)
    native = prepared.result_on_grid(result) if prepared is not None else result
    rows = validation_rows(result, args.protocol)
    space = " in the model space, after the same preparation" if prepared is not None else ""
    table = metrics_table_markdown(
        [dict(row, target=f"{row['target']} ({row['stage']})") for row in rows], protocol_columns(args.protocol))
    scoring = (f"metrics on [0, 1]-normalised images inside the brain{space}" if args.protocol == "brain" else
               f"metrics by the BraSyn protocol (whole volume){space}")
    with plan.staged() as staging:
        written = write_result(native, staging, case_id, final_dir=args.output_dir)
        extras = study.write_study_extras(args, staging, case_id, result, prepared, run)
        write_text(rows_to_csv(rows, list(rows[0]) if rows else None), staging / f"{case_id}-validation.csv")
        write_text(f"# Leave-one-out validation of {case_id} (MRISynthesis)\n\nModel: {bundle.name} ({bundle.stages}). "
                   f"Each sequence synthesised from the other three; {scoring}.\n\n"
                   f"{protocol_line(args.protocol)}.\n\n" + table, staging / f"{case_id}-validation.md")
        report = build_report(native, case_id, run.files, written, bundle)
        report["preparation"] = prepared.report() if prepared is not None else None
        report["preconditions"] = preconditions.to_json() if preconditions is not None else None
        report["study_outputs"] = extras or None
        report.update(protocol_provenance(args.protocol))
        write_report(report, staging / f"{case_id}-report.json")
    print(protocol_line(args.protocol))
    print_distribution_check(native)
    print(table, end="")
    if extras.get("brain_mask"):
        print(f"brain mask (check it): {extras['brain_mask']}")
    return 0
