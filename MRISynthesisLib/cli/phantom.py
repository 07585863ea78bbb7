"""``mrisynth phantom``: MR-physics phantom cases in BraTS layout, or clinical-like studies (``--clinical``)."""
from __future__ import annotations

import argparse

from .common import UsageError, add_output_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "phantom", help="generate MR-physics phantom cases in BraTS layout or as clinical studies",
        description="Generate simulated brain MRI cases (T1, T1c, T2, FLAIR and a BraTS 2023 label map) "
        "from the ICBM152 template with MR signal equations. For tests, demos and training demo models; "
        "not patient data. With --clinical each case is written as a clinical-like study instead: every "
        "series on its own grid and orientation, with skull, slightly moved, with the true brain masks and "
        "transforms and the BraTS-space case beside it (and DICOM series with --dicom).",
    )
    add_output_dir(parser)
    parser.add_argument("--cases", type=int, default=1, help="number of cases (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first case; case i uses seed+i (default 0)")
    parser.add_argument("--small", action="store_true",
                        help="2.5 mm, 96 x 96 x 64 voxels (fast tests); the same as --grid small")
    parser.add_argument("--grid", choices=("full", "medium", "small"), default=None,
                        help="case grid: full (240 x 240 x 155 at 1 mm, default), medium (160 x 160 x 104 at "
                        "1.5 mm) or small (96 x 96 x 64 at 2.5 mm), all over the BraTS field of view")
    parser.add_argument("--randomised", action="store_true",
                        help="randomised training cases: anatomy (deformation, atrophy, sulci, vessels, tumours), "
                        "contrast (1.5/3 T, sequence timing) and acquisition (shared bias, thick slices, ringing, "
                        "motion, noise) drawn from wide ranges; same seed, same case")
    parser.add_argument("--clinical", action="store_true",
                        help="write clinical-like studies: <case>/nifti, truth, brats (and dicom)")
    parser.add_argument("--dicom", action="store_true", help="with --clinical: also write the series as DICOM")
    parser.add_argument("--extra-flair", action="store_true",
                        help="with --clinical: acquire a second FLAIR series (AX T2 FLAIR 2)")
    parser.set_defaults(handler=run_phantom)


def run_phantom(args: argparse.Namespace) -> int:
    from .. import phantom
    from ..core.progress import terminal_progress

    if args.cases < 1:
        raise UsageError("--cases must be at least 1")
    if (args.dicom or args.extra_flair) and not args.clinical:
        raise UsageError("--dicom and --extra-flair need --clinical")
    if args.seed < 0:
        raise UsageError("--seed must be a non-negative integer")
    if args.small and args.grid not in (None, "small"):
        raise UsageError(f"--small contradicts --grid {args.grid}")
    grid = args.grid or ("small" if args.small else "full")
    if args.clinical and (args.randomised or grid == "medium"):
        raise UsageError("--clinical makes classic studies on the full or small grid: "
                         "leave out --randomised and --grid medium")
    if not args.clinical:
        with terminal_progress(description="phantom cases") as progress:
            folders = phantom.generate_cases(args.output_dir, args.cases, args.seed, grid=grid,
                                             randomise=args.randomised, progress=progress)
        for folder in folders:
            print(folder)
        return 0
    written = []
    with terminal_progress(description="clinical phantom studies") as progress:
        for i in range(args.cases):
            study = phantom.generate_clinical_study(args.seed + i, small=grid == "small", extra_flair=args.extra_flair)
            folder = phantom.write_clinical_study(study, args.output_dir, dicom=args.dicom)
            written.append((folder, study))
            progress((i + 1) / args.cases, f"{study.case_id} written ({i + 1}/{args.cases})")
    for folder, study in written:
        print(folder)
        for series in study.series:
            print(f"  {series.key:6s} {series.plan.description:24s} {'x'.join(map(str, series.image.GetSize()))} "
                  f"voxels of {' x '.join(f'{s:g}' for s in series.image.GetSpacing())} mm")
        kinds = "nifti, truth, brats" + (", dicom (series 01 is the localizer)" if args.dicom else "")
        print(f"  folders: {kinds}")
    return 0
