"""``mrisynth synthesize`` and ``mrisynth validate``: the engine on files."""
from __future__ import annotations

import argparse
import csv
import io as text_io
from pathlib import Path

from .devices import DEVICE_CHOICES


class UsageError(ValueError):
    """Arguments that do not describe a run."""


def _common_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="catalogue bundle name, bundle folder, or checkpoint file (default: the catalogue's "
                             "default bundle)")
    parser.add_argument("--device", choices=DEVICE_CHOICES + ("gpu",), default="auto",
                        help="where the networks run (default auto: CUDA when present)")
    parser.add_argument("--case", default=None, help="case name used in output file names")
    parser.add_argument("--intensity", default="mean",
                        help="intensity encoding at inference: 'mean' (prior mean, default), '+1sigma'/'-2sigma', "
                             "or a value in [0, 1]")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace this case's results from an earlier run in the output folder (as one set; "
                             "inputs are never replaced). Without it, an earlier set is refused")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``synthesize`` and ``validate``."""
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
    _common_model_options(parser)
    parser.set_defaults(handler=run_synthesize)

    parser = subparsers.add_parser(
        "validate", help="leave-one-out check on a complete case",
        description="On a case with all four sequences, synthesise each one from the other three and compare "
        "with the acquired one (SSIM whole/tumour/healthy, PSNR, NMSE, MAE). Writes the synthetic volumes, error "
        "maps, <case>-validation.csv/.md and <case>-report.json.",
    )
    parser.add_argument("case_dir", type=Path, help="BraTS-style case folder with all four sequences")
    parser.add_argument("-o", "--output-dir", type=Path, required=True, help="folder for the results")
    _common_model_options(parser)
    parser.set_defaults(handler=run_validate)


def _parse_inputs(case_dir, pairs: list) -> tuple:
    """``(case_id, {Sequence: path})`` from a case folder and/or ``SEQ=PATH`` pairs."""
    from .io import find_case_files, sequence_paths, strip_image_extension

    found = find_case_files(case_dir) if case_dir is not None else None
    named = []
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"--input {pair!r}: expected SEQ=PATH, e.g. t1n=scan.nii.gz")
        named.append(tuple(pair.split("=", 1)))
    files = sequence_paths(named, found.sequences if found else None)
    if not files:
        raise UsageError("give a case folder or at least one --input SEQ=PATH")
    _refuse_repeated_files(files)
    if found is not None:
        return found.case_id, files
    first = next(iter(files.values()))
    return strip_image_extension(first.name).rsplit("-", 1)[0] or "case", files


def _refuse_repeated_files(files: dict) -> None:
    """One file (or two links to it) given for two sequences is refused before anything is read."""
    from .outputs import same_file

    items = list(files.items())
    for index, (sequence, path) in enumerate(items):
        for other, other_path in items[index + 1:]:
            if same_file(path, other_path):
                raise UsageError(f"{other_path}: given as both {sequence.display_name} and {other.display_name}")


def _load(files: dict) -> dict:
    """Read and check every input file; a synthetic volume or a repeated scan is refused by file name."""
    from .input_checks import check_acquired, find_duplicate
    from .io import read_image

    images = {}
    for sequence, path in files.items():
        images[sequence] = read_image(path)
        check_acquired(images[sequence], str(path))
    duplicate = find_duplicate(images)
    if duplicate is not None:
        first, second = duplicate
        raise UsageError(f"{files[second]}: holds exactly the voxels of {files[first]} (given as "
                         f"{second.display_name} and {first.display_name})")
    return images


def _output_plan(args: argparse.Namespace, case_id: str, files: dict, targets) -> "OutputPlan":
    """The checked output plan of one case: refuses bad case names, outputs onto inputs and earlier sets."""
    from .outputs import ROLES, OutputPlan, case_family, check_case_name
    from .sequences import parse_sequence

    source = "--case" if args.case else "case name"
    case_id = check_case_name(case_id, source)
    plan = OutputPlan(args.output_dir, case_family(case_id), inputs=tuple(Path(p) for p in files.values()),
                      overwrite=args.overwrite, what=f"results of case {case_id}")
    names = [f"{case_id}-report.json"] + [f"{case_id}-{parse_sequence(t).value}{suffix}.nii.gz"
                                           for t in targets for _, suffix, _ in ROLES]
    plan.check(names)
    return plan


def _targets(text, files: dict) -> list:
    """The asked targets, or the missing sequences (validated again by the engine)."""
    from .sequences import SEQUENCES, parse_sequence

    if text:
        return [parse_sequence(name.strip()) for name in text.split(",") if name.strip()]
    return [s for s in SEQUENCES if s not in files]


def run_synthesize(args: argparse.Namespace) -> int:
    """Read inputs, synthesise, write outputs by role and the report."""
    from .outputs import build_report, write_report, write_result
    from .pipeline import synthesize
    from .progress import terminal_progress
    from .weights import load_bundle

    case_id, files = _parse_inputs(args.case_dir, args.input)
    case_id = args.case or case_id
    targets = _targets(args.targets, files)
    plan = _output_plan(args, case_id, files, targets)
    images = _load(files)
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


def validation_rows(result) -> list:
    """One row per target and stage (stage 1 and final) with the image metrics."""
    rows = []
    for sequence, target in result.targets.items():
        for stage, values in (("stage1", target.stage1_metrics), ("final", target.metrics)):
            if values:
                rows.append({"target": sequence.value, "stage": stage, **values})
    return rows


def rows_to_csv(rows: list) -> str:
    """CSV text of metric rows (columns from the first row)."""
    if not rows:
        return ""
    buffer = text_io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def run_validate(args: argparse.Namespace) -> int:
    """Leave-one-out synthesis of every sequence of a complete case, with metrics."""
    from .io import find_case_files, read_case_label, write_text
    from .outputs import build_report, metrics_table_markdown, write_report, write_result
    from .pipeline import synthesize
    from .progress import terminal_progress
    from .sequences import SEQUENCES
    from .weights import load_bundle

    found = find_case_files(args.case_dir)
    missing = [s.display_name for s in SEQUENCES if s not in found.sequences]
    if missing:
        raise UsageError(f"{args.case_dir}: validation needs all four sequences; missing {', '.join(missing)}")
    case_id = args.case or found.case_id
    inputs = {**found.sequences, **({"label": found.label} if found.label is not None else {})}
    plan = _output_plan(args, case_id, inputs, SEQUENCES)
    images = _load(found.sequences)
    label = read_case_label(args.case_dir)
    bundle = load_bundle(args.model)
    with terminal_progress(description=f"validating {case_id}") as progress:
        result = synthesize(images, bundle, targets=list(SEQUENCES), device=args.device, progress=progress,
                            ground_truth=images, label=label, intensity=args.intensity)
    rows = validation_rows(result)
    table = metrics_table_markdown(
        [dict(row, target=f"{row['target']} ({row['stage']})") for row in rows])
    with plan.staged() as staging:
        written = write_result(result, staging, case_id, final_dir=args.output_dir)
        write_text(rows_to_csv(rows), staging / f"{case_id}-validation.csv")
        write_text(f"# Leave-one-out validation of {case_id} (MRISynthesis)\n\nModel: {bundle.name} ({bundle.stages}). "
                   "Each sequence synthesised from the other three; metrics on [0, 1]-normalised "
                   "images inside the brain.\n\n" + table, staging / f"{case_id}-validation.md")
        write_report(build_report(result, case_id, found.sequences, written, bundle),
                     staging / f"{case_id}-report.json")
    print(table, end="")
    return 0
