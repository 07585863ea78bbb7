"""What ``synthesize`` and ``validate`` do with a clinical study: DICOM studies in, preconditions, preparation,
results mapped back to the study's grids, DICOM series out.

Without ``--prepare`` (or ``--brain-mask``) the inputs must already be what the model expects
(BraTS-like: skull-stripped, co-registered, near 1 mm): that is measured, and a study that is not
is refused with one line that says what to do. With ``--prepare`` the study is bias-corrected,
co-registered, brain-extracted and resampled into the model space, and every result is mapped
back onto the reference series' own grid (``--output-grid each``: also onto every input's grid).
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Dict, List, Optional

from .common import UsageError

#: Where results go with --output-grid.
OUTPUT_GRIDS = ("reference", "each")


def add_case_inputs(parser: argparse.ArgumentParser, case_help: str) -> None:
    """The inputs :func:`read_study` reads: a case folder and/or ``--input SEQ=PATH`` (with ``--dicom``:
    ``SEQ=<series number or SeriesInstanceUID>``)."""
    parser.add_argument("case_dir", nargs="?", type=Path, help=case_help)
    parser.add_argument("--input", action="append", default=[], metavar="SEQ=PATH",
                        help="an input image, e.g. t1n=a.nii.gz or FLAIR=dicom_folder (repeatable; with --dicom: "
                             "SEQ=<series number or SeriesInstanceUID>)")


def add_study_options(parser: argparse.ArgumentParser, validation: bool = False) -> None:
    """--dicom, --prepare, --brain-mask, --brain-extraction, --bias-correction, and for ``synthesize`` also
    --output-grid and --dicom-output (a validation scores in the model space and writes no DICOM series)."""
    group = parser.add_argument_group("clinical studies")
    group.add_argument("--dicom", type=Path, metavar="STUDY_DIR",
                       help="a DICOM study folder: its series are recognised (T1, T1c, T2, FLAIR); with --dicom, "
                            "--input SEQ=N picks series number N (or a SeriesInstanceUID) for SEQ")
    group.add_argument("--prepare", action="store_true",
                       help="prepare a clinical study for the model: rigid co-registration to the first series, "
                            "brain extraction, resampling to the model's axial grid (1 mm for BraTS models); results "
                            "go back to the reference series' grid")
    group.add_argument("--brain-mask", type=Path, metavar="FILE",
                       help="brain mask in the reference series' space: with --prepare, the brain extraction; "
                            "without, skull-strips inputs that are already co-registered")
    group.add_argument("--brain-extraction", choices=("mask", "hd-bet"), default=None,
                       help="brain extraction backend for --prepare (default: mask when --brain-mask is given; "
                            "hd-bet needs the HD-BET package, which downloads its weights on first use)")
    group.add_argument("--bias-correction", action="store_true",
                       help="with --prepare: N4 bias-field correction first (off by default: on the phantom studies "
                            "it did not change the synthesis measurably and costs tens of seconds per series)")
    if validation:
        parser.set_defaults(output_grid="reference", dicom_output=False)
        return
    group.add_argument("--output-grid", choices=OUTPUT_GRIDS, default="reference",
                       help="with --prepare: results on the reference series' grid (default) or also on every "
                            "input series' grid")
    group.add_argument("--dicom-output", action="store_true",
                       help="with --dicom: also write each synthetic volume as a new DERIVED MR series of the "
                            "patient's study (<case>-dicom/)")


@dataclasses.dataclass
class StudyRun:
    """What a command reads and how: images, their names, and the DICOM series they came from."""

    case_id: str
    files: Dict  # Sequence -> Path (image files) or a series label (DICOM)
    images: Dict
    series: Dict  # Sequence -> DicomSeries (DICOM studies only)
    messages: List[str]
    inputs_for_plan: tuple


def read_study(args: argparse.Namespace, parse_inputs, load_inputs) -> StudyRun:
    """The inputs from ``--dicom STUDY_DIR`` (with ``--input SEQ=N`` choices) or from files, checked."""
    check_study_options(args)
    if args.dicom is None:
        if args.dicom_output:
            raise UsageError("--dicom-output needs --dicom STUDY_DIR (the study the new series join)")
        case_id, files = parse_inputs(args.case_dir, args.input)
        return StudyRun(case_id, files, load_inputs(files), {}, [], tuple(Path(p) for p in files.values())
                        + _mask_input(args))
    from ..clinical.study_inputs import study_inputs
    from ..core.input_checks import check_acquired, find_duplicate

    if args.case_dir is not None:
        raise UsageError("give either a case folder or --dicom STUDY_DIR, not both")
    overrides = {}
    for pair in args.input:
        name, separator, value = pair.partition("=")
        if not separator or not value:
            raise UsageError(f"--input {pair!r}: with --dicom, expected SEQ=<series number or SeriesInstanceUID>")
        overrides[name] = value
    found = study_inputs(args.dicom, overrides)
    files = {sequence: series.label() for sequence, series in found.series.items()}
    for sequence, image in found.images.items():
        check_acquired(image, f"{args.dicom}: series {files[sequence]}")
    duplicate = find_duplicate(found.images)
    if duplicate is not None:
        first, second = duplicate
        raise UsageError(f"{args.dicom}: series {files[second]} holds exactly the voxels of {files[first]}")
    if args.dicom_output:
        from ..sequences import SEQUENCES

        reference = next(s for s in SEQUENCES if s in found.series)
        if found.series[reference].is_multiframe:
            raise UsageError(f"{args.dicom}: --dicom-output needs a classic (single-frame) reference series; "
                             f"{found.series[reference].label()} is multi-frame")
    case_id = _dicom_case_id(found)
    return StudyRun(case_id, files, found.images, found.series, list(found.messages),
                    (Path(args.dicom),) + _mask_input(args))


def _mask_input(args: argparse.Namespace) -> tuple:
    """The brain mask file is an input too: never replaced by an output."""
    return (Path(args.brain_mask),) if getattr(args, "brain_mask", None) is not None else ()


def _dicom_case_id(found) -> str:
    """A case name that identifies nobody: ``study-`` and a digest of the series UIDs (``--case`` names it)."""
    import hashlib

    digest = hashlib.sha1(" ".join(sorted(s.uid for s in found.series.values())).encode("ascii", "replace"))
    return f"study-{digest.hexdigest()[:10]}"


def check_study_options(args: argparse.Namespace) -> None:
    """Refuse contradictory clinical-study options before anything is read (one line each)."""
    if not args.prepare and (args.brain_extraction or args.bias_correction or args.output_grid != "reference"):
        raise UsageError("--brain-extraction, --bias-correction and --output-grid need --prepare")
    if args.prepare and args.brain_extraction is None and args.brain_mask is None:
        raise UsageError("--prepare needs a brain extraction: --brain-mask FILE, or --brain-extraction hd-bet "
                         "(HD-BET package)")
    if args.brain_extraction == "mask" and args.brain_mask is None:
        raise UsageError("--brain-extraction mask needs --brain-mask FILE")


def model_inputs(args: argparse.Namespace, run: StudyRun, say, bundle) -> tuple:
    """``(images for the model, PreparedStudy or None, preconditions report or None)``.

    Refuses (one line) a study that is not what the model expects when no preparation was asked for.
    """
    from ..clinical.brain_masks import mask_from_file
    from ..clinical.study_run import StudyOptions, model_ready_inputs
    from ..sequences import SEQUENCES

    names = {sequence: str(label) for sequence, label in run.files.items()}
    check_study_options(args)
    backend = args.brain_extraction or ("mask" if args.brain_mask else None)
    reference = next(s for s in SEQUENCES if s in run.images)
    mask = mask_from_file(args.brain_mask, run.images[reference]) if args.brain_mask is not None else None
    options = StudyOptions(prepare=args.prepare, brain_mask=mask, brain_extraction=backend or "mask",
                           bias_correction=args.bias_correction)
    images, prepared, report = model_ready_inputs(run.images, bundle, options, names,
                                                  device=getattr(args, "device", "cpu"))
    for line in prepared.messages if prepared is not None else []:
        say(line)
    return images, prepared, report


def extra_output_names(args: argparse.Namespace, case_id: str, targets, sequences) -> List[str]:
    """Files beyond the usual results: the brain mask and, with --output-grid each, results per input grid."""
    names = []
    if args.prepare:
        names.append(f"{case_id}-brain-mask.nii.gz")
        if args.output_grid == "each":
            names += [f"{case_id}-{t.value}-on-{s.value}-grid.nii.gz" for t in targets for s in sequences]
    return names


def write_study_extras(args, staging: Path, case_id: str, result, prepared, run: StudyRun) -> dict:
    """Write the brain mask and the per-grid volumes into ``staging``; returns what was written, by name."""
    import SimpleITK as sitk

    from ..core.io import write_image

    written: dict = {}
    if prepared is None:
        return written
    name = f"{case_id}-brain-mask.nii.gz"
    write_image(prepared.reference_brain_mask, staging / name, "brain mask used by MRISynthesis --prepare")
    written["brain_mask"] = str(Path(args.output_dir) / name)
    if args.output_grid == "each":
        for target, made in result.targets.items():
            for sequence in run.images:
                name = f"{case_id}-{target.value}-on-{sequence.value}-grid.nii.gz"
                brain = prepared.to_input_grid(prepared.brain_mask, sequence, nearest=True)
                write_image(sitk.Mask(prepared.to_input_grid(made.synthetic, sequence), brain, 0), staging / name,
                            f"SYNTHETIC {target.short_name} on the {sequence.short_name} grid by MRISynthesis")
                written.setdefault("on_input_grids", {}).setdefault(target.value, {})[sequence.value] = str(
                    Path(args.output_dir) / name)
    return written


def dicom_output_folder(args: argparse.Namespace, case_id: str) -> Optional[Path]:
    """The folder the DICOM series go into, refused up front when it exists (series are never replaced)."""
    if not args.dicom_output:
        return None
    folder = Path(args.output_dir) / f"{case_id}-dicom"
    if folder.exists():
        raise UsageError(f"{folder}: exists; DICOM series are never replaced (move it away or choose another "
                         "--output-dir)")
    return folder


def write_dicom_series(staging: Path, folder_name: str, native_result, run: StudyRun, model_name: str) -> List[str]:
    """Each synthetic volume as a new MR series in the study, on the reference series' grid (inside staging)."""
    from ..clinical.dicom_output import write_synthetic_series

    reference = native_result.reference
    sources = {sequence: list(series.files) for sequence, series in run.series.items()}
    written = []
    for target, made in native_result.targets.items():
        path = write_synthetic_series(made.synthetic, list(run.series[reference].files), sources,
                                      staging / folder_name, sequence=target, model_name=model_name)
        written.append(f"{folder_name}/{path.name}")
    return written
