"""What the commands that synthesise share: their options, reading and checking the input
files, and the checked output plan of one case."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.devices import DEVICE_CHOICES

if TYPE_CHECKING:  # for the annotation only: result_files loads when a command runs
    from ..core.result_files import OutputPlan


class UsageError(ValueError):
    """Arguments that do not describe a run."""


class IntensityAction(argparse.Action):
    """``--intensity``, checked while the arguments are parsed by the engine's own
    :func:`~MRISynthesisLib.core.pipeline.parse_intensity` (the two cannot disagree).

    A bad value replaces the command's handler by one that raises the one-line message, so that it
    reaches the user like every other error (``mrisynth: error: ...``, exit code 2) and before any
    input is read or the model is loaded. (argparse's own ``type=`` refusal would print the usage and
    exit from inside the parser.)
    """

    def __call__(self, parser, namespace, values, option_string=None):
        from ..core.pipeline import parse_intensity

        try:
            parse_intensity(values, name=option_string or "--intensity")
        except (TypeError, ValueError) as error:
            message = str(error)

            def refuse(args: argparse.Namespace) -> int:
                raise UsageError(message)

            namespace.handler = refuse
        setattr(namespace, self.dest, values)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="catalogue bundle name, bundle folder, or checkpoint file (default: the catalogue's "
                             "default bundle)")
    parser.add_argument("--device", choices=DEVICE_CHOICES + ("gpu",), default="auto",
                        help="where the networks run (default auto: CUDA when present)")
    parser.add_argument("--case", default=None, help="case name used in output file names")
    parser.add_argument("--intensity", default="mean", action=IntensityAction,
                        help="intensity encoding at inference: 'mean' (prior mean, default), '+1sigma'/'-2sigma', "
                             "or a value in [0, 1]")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace this case's results from an earlier run in the output folder (as one set; "
                             "inputs are never replaced). Without it, an earlier set is refused")


#: ``--uncertainty`` by default on the command line: off (a script chooses its cost; the Slicer panel's default
#: is measured by benchmarks/uncertainty.py).
DEFAULT_UNCERTAINTY_SAMPLES = 0


def add_uncertainty_options(parser: argparse.ArgumentParser) -> None:
    """``--uncertainty N`` and ``--uncertainty-seed S``: the per-voxel uncertainty map of each target."""
    parser.add_argument("--uncertainty", default=str(DEFAULT_UNCERTAINTY_SAMPLES), metavar="N",
                        help="also write <case>-<seq>-uncertainty.nii.gz: the per-voxel standard deviation over N "
                             "variations of the synthesis (left-right flips, bottleneck dropout, intensity codes "
                             "within 2 sigma, shifted refiner windows); 0 (default) turns it off, else at least 2. "
                             "Each sample costs about one refinement")
    parser.add_argument("--uncertainty-seed", default="0", metavar="S",
                        help="seed of the uncertainty samples (default 0; the same seed gives the same map)")


def uncertainty_settings(args: argparse.Namespace) -> tuple:
    """(samples, seed) from ``--uncertainty`` and ``--uncertainty-seed``, checked (one-line errors)."""
    from ..core.uncertainty import check_samples, check_seed

    values = []
    for option, text in (("--uncertainty", args.uncertainty), ("--uncertainty-seed", args.uncertainty_seed)):
        try:
            values.append(int(str(text).strip()))
        except ValueError:
            raise UsageError(f"{option} must be a whole number, got {text!r}") from None
    if values[0] < 0:
        raise UsageError("--uncertainty must be 0 or more")
    try:
        return check_samples(values[0], "--uncertainty"), check_seed(values[1], "--uncertainty-seed")
    except ValueError as error:
        raise UsageError(str(error)) from None


def add_protocol_option(parser: argparse.ArgumentParser) -> None:
    """``--protocol brain|brasyn``: which metrics score a synthesis against the acquired image."""
    from ..metrics.protocols import DEFAULT_PROTOCOL, PROTOCOLS

    parser.add_argument("--protocol", choices=PROTOCOLS, default=DEFAULT_PROTOCOL,
                        help="scoring protocol: 'brain' (default; this project's metrics over the brain, stricter) "
                             "or 'brasyn' (the BraSyn challenge's whole-volume SSIM/PSNR/MSE with torchmetrics: "
                             "quote these beside the paper or the BraSyn leaderboard)")


def parse_inputs(case_dir, pairs: list) -> tuple:
    """``(case_id, {Sequence: path})`` from a case folder and/or ``SEQ=PATH`` pairs."""
    from ..core.io import find_case_files, sequence_paths, strip_image_extension

    found = find_case_files(case_dir) if case_dir is not None else None
    named = []
    for pair in pairs:
        if "=" not in pair:
            raise UsageError(f"--input {pair!r}: expected SEQ=PATH, e.g. t1n=scan.nii.gz")
        named.append(tuple(pair.split("=", 1)))
    files = sequence_paths(named, found.sequences if found else None)
    if not files:
        raise UsageError("give a case folder or at least one --input SEQ=PATH")
    refuse_repeated_files(files)
    if found is not None:
        return found.case_id, files
    first = next(iter(files.values()))
    return strip_image_extension(first.name).rsplit("-", 1)[0] or "case", files


def refuse_repeated_files(files: dict) -> None:
    """One file (or two links to it) given for two sequences is refused before anything is read."""
    from ..core.result_files import same_file

    items = list(files.items())
    for index, (sequence, path) in enumerate(items):
        for other, other_path in items[index + 1:]:
            if same_file(path, other_path):
                raise UsageError(f"{other_path}: given as both {sequence.display_name} and {other.display_name}")


def load_inputs(files: dict) -> dict:
    """Read and check every input file; a synthetic volume or a repeated scan is refused by file name."""
    from ..core.input_checks import check_acquired, find_duplicate
    from ..core.io import read_image

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


def output_plan(args: argparse.Namespace, case_id: str, files: dict, targets) -> "OutputPlan":
    """The checked output plan of one case: refuses bad case names, outputs onto inputs and earlier sets."""
    from ..core.result_files import ROLES, OutputPlan, case_family, check_case_name
    from ..sequences import parse_sequence

    source = "--case" if args.case else "case name"
    case_id = check_case_name(case_id, source)
    plan = OutputPlan(args.output_dir, case_family(case_id), inputs=tuple(Path(p) for p in files.values()),
                      overwrite=args.overwrite, what=f"results of case {case_id}")
    names = [f"{case_id}-report.json"] + [f"{case_id}-{parse_sequence(t).value}{suffix}.nii.gz"
                                           for t in targets for _, suffix, _ in ROLES]
    plan.check(names)
    return plan


def targets_to_synthesise(text, files: dict) -> list:
    """The asked targets, or the missing sequences (validated again by the engine)."""
    from ..sequences import SEQUENCES, parse_sequence

    if text:
        return [parse_sequence(name.strip()) for name in text.split(",") if name.strip()]
    return [s for s in SEQUENCES if s not in files]


def add_output_dir(parser: argparse.ArgumentParser, required: bool = True, default: str | None = None) -> None:
    parser.add_argument(
        "-o", "--output-dir", type=Path, required=required, default=default,
        help="folder for the results (created if missing)" + (f"; default {default}" if default else ""),
    )


def print_distribution_check(result) -> None:
    """One ``warning:`` line per out-of-distribution reason of ``result``, or one ``note:`` when the model's
    bundle has no training statistics (no check is no reassurance)."""
    from ..core.ood_check import report_fields

    fields = report_fields(getattr(result, "distribution_check", None))
    if fields["out_of_distribution"] is None:
        print(f"note: {fields['distribution_check'].get('note')}")
    for warning in fields["out_of_distribution_warnings"]:
        print(f"warning: {warning['reason']}")
