"""Clinical studies end to end on clinical-like phantom studies written to disk (NIfTI and DICOM):
preconditions measured, preparation (N4, rigid co-registration, the true brain mask, model space),
results back on the reference series' grid, DICOM in and out through ``mrisynth synthesize``."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from MRISynthesisLib.cli.main import main
from MRISynthesisLib.clinical.preconditions import check_preconditions
from MRISynthesisLib.clinical.prepare import PreparationError, prepare_study
from MRISynthesisLib.clinical.registration import mask_points, target_registration_error
from MRISynthesisLib.phantom import generate_clinical_study, write_clinical_study
from MRISynthesisLib.sequences import Sequence

ACQUIRED = (Sequence.T1N, Sequence.T2W, Sequence.T2F)


@pytest.fixture(scope="module")
def study():
    return generate_clinical_study(7, small=True)


@pytest.fixture(scope="module")
def study_on_disk(tmp_path_factory, study):
    return write_clinical_study(study, tmp_path_factory.mktemp("clinical"), dicom=True)


def same_grid(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-4) -> bool:
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tolerance)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tolerance)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6))


def test_preconditions_flag_the_clinical_study_and_pass_its_brats_version(study):
    clinical = check_preconditions(study.images)
    problems = " | ".join(clinical.problems)
    for sequence in Sequence:
        assert clinical.inputs[sequence].skull_stripped is False, problems
    assert all(check.coregistered is False for check in clinical.alignment.values()), problems
    assert "1 x 1 x 5.5 mm voxels" in problems
    assert clinical.one_line().endswith("run with --prepare (co-registration, brain extraction, resampling to the "
                                        "model's grid) or give a brain mask with --brain-mask FILE")
    assert check_preconditions(study.brats.images).ok


def test_a_moved_series_of_an_aligned_case_is_found(study):
    images = dict(study.brats.images)
    moved = sitk.Euler3DTransform()
    moved.SetTranslation((0.0, 2.5, 0.0))
    images[Sequence.T2W] = sitk.Resample(images[Sequence.T2W], images[Sequence.T2W], moved, sitk.sitkLinear, 0.0)
    report = check_preconditions(images)
    assert [check.coregistered for check in report.alignment.values()] == [True, False, True], report.problems


def test_preparation_registers_every_series_within_a_millimetre_and_maps_back_exactly(study):
    acquired = {s: study.images[s] for s in ACQUIRED}
    mask = study.primary(Sequence.T1N).brain_mask
    before = {s: sitk.GetArrayFromImage(image).copy() for s, image in acquired.items()}
    prepared = prepare_study(acquired, brain_mask=mask, spacing_mm=2.0)
    assert prepared.reference is Sequence.T1N and set(prepared.registrations) == {Sequence.T2W, Sequence.T2F}
    truth = study.transforms
    points = np.array([truth[Sequence.T1N].TransformPoint(tuple(map(float, p)))
                       for p in mask_points(study.brain_mask, max_points=5000)])
    for sequence, registration in prepared.registrations.items():
        true = sitk.CompositeTransform([truth[sequence], truth[Sequence.T1N].GetInverse()])
        error = target_registration_error(registration.transform, true, points)
        assert error.mean_mm < 1.0, f"{sequence.value}: mean TRE {error.mean_mm:.2f} mm"
        assert registration.trusted and registration.describe()
    brain = sitk.GetArrayFromImage(prepared.brain_mask) > 0
    for sequence, image in prepared.images.items():
        assert image.GetSpacing() == (2.0, 2.0, 2.0) and image.GetDirection() == (1, 0, 0, 0, 1, 0, 0, 0, 1)
        array = sitk.GetArrayFromImage(image)
        assert not array[~brain].any(), "outside the brain is 0, as in BraTS data"
        assert np.count_nonzero(array[brain]) > 0.95 * brain.sum()
    on_t2 = prepared.to_input_grid(prepared.images[Sequence.T1N], Sequence.T2W)
    assert same_grid(on_t2, acquired[Sequence.T2W], tolerance=0)
    assert same_grid(prepared.reference_brain_mask, acquired[Sequence.T1N], tolerance=0)
    for sequence, image in acquired.items():
        np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), before[sequence])
    report = prepared.report()
    assert set(report["registrations"]) == {"t2w", "t2f"} and report["brain_extraction"] == "mask"


def test_a_series_of_another_head_stops_the_preparation_by_name(study):
    other = generate_clinical_study(8, small=True)
    acquired = {Sequence.T1N: study.images[Sequence.T1N], Sequence.T2W: other.images[Sequence.T2W]}
    noise = sitk.GetImageFromArray(np.random.default_rng(0).random(
        sitk.GetArrayViewFromImage(acquired[Sequence.T2W]).shape).astype(np.float32) * 100)
    noise.CopyInformation(acquired[Sequence.T2W])
    acquired[Sequence.T2W] = noise
    mask = study.primary(Sequence.T1N).brain_mask
    with pytest.raises(PreparationError, match=r"co-registration of T2 to T1 failed its check"):
        prepare_study(acquired, brain_mask=mask, names={Sequence.T1N: "T1", Sequence.T2W: "T2"},
                      bias_correction=False)


def test_cli_refuses_an_unprepared_study_saying_what_to_do(tmp_path, study_on_disk, capsys):
    nifti = study_on_disk / "nifti"
    out = tmp_path / "out"
    code = main(["synthesize", "--input", f"t1n={next(nifti.glob('*-t1n.nii.gz'))}",
                 "--input", f"t2w={next(nifti.glob('*-t2w.nii.gz'))}", "-o", str(out), "--device", "cpu"])
    message = capsys.readouterr().err.strip()
    assert code == 2 and len(message.splitlines()) == 1
    assert "not skull-stripped" in message and "--prepare" in message and "--brain-mask FILE" in message
    assert not out.exists(), "nothing is written for a refused study"
    assert main(["validate", str(nifti), "-o", str(out), "--device", "cpu"]) == 2
    message = capsys.readouterr().err.strip()
    assert "not skull-stripped" in message and "--prepare" in message and len(message.splitlines()) == 1
    assert not out.exists()


def test_cli_dicom_study_prepared_gives_results_on_the_reference_grid_and_dicom_series(tmp_path, study_on_disk,
                                                                                       capsys):
    dicom = tmp_path / "dicom"
    shutil.copytree(study_on_disk / "dicom", dicom)  # the module's study stays whole for the other tests
    t1c_series = next(p for p in dicom.iterdir() if "POST" in p.name)
    shutil.rmtree(t1c_series)  # the study lacks its post-contrast T1: synthesise it
    mask = study_on_disk / "truth" / "brain-mask-t1n.nii.gz"
    out = tmp_path / "out"
    code = main(["synthesize", "--dicom", str(dicom), "--prepare", "--brain-mask", str(mask), "--output-grid", "each",
                 "--dicom-output", "-o", str(out), "--device", "cpu"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "3-PLANE LOC" in printed.out and "ignored" in printed.out.lower()
    case = next(out.glob("*-report.json")).name[: -len("-report.json")]
    reference = sitk.ReadImage(str(study_on_disk / "nifti" / f"{study_on_disk.name}-t1n.nii.gz"))
    synthetic = sitk.ReadImage(str(out / f"{case}-t1c.nii.gz"))
    assert same_grid(synthetic, reference), "results lie on the reference series' own grid"
    assert same_grid(sitk.ReadImage(str(out / f"{case}-brain-mask.nii.gz")), reference)
    on_flair = sitk.ReadImage(str(out / f"{case}-t1c-on-t2f-grid.nii.gz"))
    assert same_grid(on_flair, sitk.ReadImage(str(study_on_disk / "nifti" / f"{study_on_disk.name}-t2f.nii.gz")))
    report = json.loads((out / f"{case}-report.json").read_text())
    assert set(report["preparation"]["registrations"]) == {"t2w", "t2f"}
    assert report["study_outputs"]["dicom_series"]
    series_dir = out / report["study_outputs"]["dicom_series"][0]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series_dir)))
    assert same_grid(reader.Execute(), reference)
    written = pydicom.dcmread(next(series_dir.iterdir()), stop_before_pixels=True)
    source = pydicom.dcmread(next((dicom / next(p.name for p in dicom.iterdir() if "T1" in p.name)).iterdir()),
                             stop_before_pixels=True)
    assert written.SeriesDescription.startswith("SYNTHETIC") and written.StudyInstanceUID == source.StudyInstanceUID
    assert written.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert written.SeriesInstanceUID != source.SeriesInstanceUID and list(written.ImageType[:2]) == ["DERIVED",
                                                                                                       "SECONDARY"]


def _final_ssim(folder, case: str) -> dict:
    """Final-stage whole-brain SSIM per target from a validation's CSV."""
    import csv

    with open(folder / f"{case}-validation.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["stage"] == "final"]
    return {row["target"]: float(row["ssim"]) for row in rows}


def _final_tumour_ssim(folder, case: str) -> dict:
    import csv

    with open(folder / f"{case}-validation.csv", newline="") as handle:
        return {row["target"]: row.get("ssim_tumour") for row in csv.DictReader(handle) if row["stage"] == "final"}


def test_cli_validate_prepares_a_clinical_study_and_scores_it_like_its_brats_version(tmp_path, study, study_on_disk,
                                                                                     capsys):
    """``validate --prepare``: leave-one-out on a clinical study (files with a label map on the T1 series' grid,
    then DICOM) scored in the model space against the prepared acquired series; the scores agree with validating
    the same case's BraTS-space version, and the volumes written lie on the reference series' grid."""
    mask = study_on_disk / "truth" / "brain-mask-t1n.nii.gz"
    case = study_on_disk.name
    nifti = tmp_path / "nifti" / case
    shutil.copytree(study_on_disk / "nifti", nifti)
    t1 = study.images[Sequence.T1N]
    label_on_t1 = sitk.Resample(study.brats.label, t1, study.transforms[Sequence.T1N].GetInverse(),
                                sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    sitk.WriteImage(label_on_t1, str(nifti / f"{case}-seg.nii.gz"))
    out = tmp_path / "prepared"
    code = main(["validate", str(nifti), "--prepare", "--brain-mask", str(mask), "-o", str(out), "--device", "cpu"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    tumour = _final_tumour_ssim(out, case)
    assert all(value not in (None, "", "nan") for value in tumour.values()), f"the label reached the model space: {tumour}"
    assert "brain mask (check it)" in printed.out and "co-registered" in printed.out
    assert main(["validate", str(study_on_disk / "brats"), "-o", str(tmp_path / "brats"), "--device", "cpu"]) == 0
    capsys.readouterr()
    prepared, brats = _final_ssim(out, case), _final_ssim(tmp_path / "brats", case)
    assert set(prepared) == {"t1n", "t1c", "t2w", "t2f"}
    for target, value in prepared.items():
        assert abs(value - brats[target]) < 0.08, f"{target}: prepared {value:.3f} vs BraTS-space {brats[target]:.3f}"
    reference = sitk.ReadImage(str(nifti / f"{case}-t1n.nii.gz"))
    for name in (f"{case}-t1c.nii.gz", f"{case}-t2f-error-map.nii.gz", f"{case}-brain-mask.nii.gz"):
        assert same_grid(sitk.ReadImage(str(out / name)), reference), name
    report = json.loads((out / f"{case}-report.json").read_text())
    assert set(report["preparation"]["registrations"]) == {"t2w", "t2f", "t1c"}
    assert "model space" in (out / f"{case}-validation.md").read_text()

    dicom_out = tmp_path / "dicom"
    code = main(["validate", "--dicom", str(study_on_disk / "dicom"), "--prepare", "--brain-mask", str(mask),
                 "--case", "study", "-o", str(dicom_out), "--device", "cpu"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "3-PLANE LOC" in printed.out
    from_dicom = _final_ssim(dicom_out, "study")
    for target, value in from_dicom.items():
        assert abs(value - prepared[target]) < 0.02, f"{target}: DICOM {value:.3f} vs NIfTI {prepared[target]:.3f}"


def test_cli_validate_refusals_name_the_file_and_come_before_any_reading(tmp_path, study, study_on_disk, capsys):
    """A label map off the reference grid with --prepare, --input files without all four sequences, and
    --prepare without a brain extraction are each one line; nothing is written."""
    case = study_on_disk.name
    nifti = tmp_path / case
    shutil.copytree(study_on_disk / "nifti", nifti)
    sitk.WriteImage(study.brats.label, str(nifti / f"{case}-seg.nii.gz"))  # on the BraTS grid, not the T1's
    mask = study_on_disk / "truth" / "brain-mask-t1n.nii.gz"
    out = tmp_path / "out"
    assert main(["validate", str(nifti), "--prepare", "--brain-mask", str(mask), "-o", str(out), "--device",
                 "cpu"]) == 2
    message = capsys.readouterr().err.strip()
    assert f"{case}-seg.nii.gz: with --prepare the label map must lie on the grid of the reference series" in message
    assert len(message.splitlines()) == 1
    t1 = nifti / f"{case}-t1n.nii.gz"
    assert main(["validate", "--input", f"t1n={t1}", "-o", str(out)]) == 2
    message = capsys.readouterr().err.strip()
    assert message.endswith(f"{t1}: validation needs all four sequences; missing T1 contrast-enhanced, T2, T2-FLAIR"), message
    assert main(["validate", str(nifti), "--prepare", "-o", str(out)]) == 2
    assert "--prepare needs a brain extraction" in capsys.readouterr().err
    assert not out.exists()


def test_cli_dicom_ambiguity_no_mr_and_missing_brain_extraction_are_one_line(tmp_path, capsys, monkeypatch, offline):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # HD-BET, where installed, finds no weights there (offline)
    study = generate_clinical_study(9, small=True, extra_flair=True)
    folder = write_clinical_study(study, tmp_path / "s", dicom=True) / "dicom"
    out = tmp_path / "out"
    assert main(["synthesize", "--dicom", str(folder), "-o", str(out)]) == 2
    message = capsys.readouterr().err.strip()
    assert "2 series look like FLAIR" in message and "--input t2f=" in message and len(message.splitlines()) == 1
    assert main(["synthesize", "--dicom", str(folder), "--input", "t2f=5", "--prepare", "-o", str(out)]) == 2
    assert "--prepare needs a brain extraction" in capsys.readouterr().err
    assert main(["synthesize", "--dicom", str(folder), "--input", "t2f=5", "--prepare", "--brain-extraction",
                 "hd-bet", "-o", str(out)]) == 2
    message = capsys.readouterr().err.strip()
    assert len(message.splitlines()) == 1 and "--brain-mask FILE" in message
    if shutil.which("hd-bet") is None:
        assert "HD-BET is not installed" in message
    else:
        assert "HD-BET could not extract the brain" in message and "offline" in message
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    assert main(["synthesize", "--dicom", str(empty), "-o", str(out)]) == 2
    assert "no DICOM files found" in capsys.readouterr().err
    assert not out.exists()


def test_hd_bet_runs_as_its_version_2_command_line_and_its_mask_is_used(tmp_path, study, monkeypatch):
    """HD-BET cannot be installed here (no network for its weights): a stand-in program with HD-BET 2's
    command line and file naming (``-o X.nii.gz --save_bet_mask`` writes ``X_bet.nii.gz``) checks the call."""
    import stat
    import sys

    from MRISynthesisLib.clinical import brain_masks

    program = tmp_path / "hd-bet"
    program.write_text(f"""#!{sys.executable}
import sys, SimpleITK as sitk
args = sys.argv[1:]
assert args[args.index("-device") + 1] in ("cpu", "cuda", "mps"), args
assert "--save_bet_mask" in args and "--no_bet_image" in args, args
image = sitk.ReadImage(args[args.index("-i") + 1])
target = args[args.index("-o") + 1]
mask = sitk.Resample(sitk.ReadImage({str(tmp_path / 'truth.nii.gz')!r}), image, sitk.Transform(),
                     sitk.sitkNearestNeighbor, 0)
sitk.WriteImage(mask, target[:-7] + "_bet.nii.gz")
""")
    program.chmod(program.stat().st_mode | stat.S_IEXEC)
    t1 = study.images[Sequence.T1N]
    sitk.WriteImage(study.primary(Sequence.T1N).brain_mask, str(tmp_path / "truth.nii.gz"))
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    mask = brain_masks.hd_bet_mask(t1, device="auto", name="T1")
    expected = sitk.GetArrayFromImage(study.primary(Sequence.T1N).brain_mask) > 0
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask) > 0, expected)
    program.write_text(f"#!{sys.executable}\nimport sys\nprint('urlopen error: no network', file=sys.stderr)\n"
                       "sys.exit(1)\n")
    with pytest.raises(brain_masks.BrainExtractionError, match=r"HD-BET could not extract the brain of T1 \(urlopen "
                       r"error: no network; offline, it cannot fetch its weights\); or give a brain mask"):
        brain_masks.hd_bet_mask(t1, device="auto", name="T1")
