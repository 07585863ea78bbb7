"""Clinical-like phantom studies: each series on the grid and orientation of its protocol, a head around the
brain, true transforms that bring every series back into brain space, DICOM that SimpleITK and pydicom
read back exactly, determinism, and the ``mrisynth phantom --clinical`` layout.

Everything is checked on files written to disk and read back (SimpleITK, pydicom).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from MRISynthesisLib import phantom
from MRISynthesisLib.cli.main import main
from MRISynthesisLib.sequences import SEQUENCES, Sequence

SEED = 3
#: Keys of the series of a study with a second FLAIR, in acquisition order.
KEYS = ["t1n", "t2w", "t2f", "t2f-2", "t1c"]
GRID_TOLERANCE_MM = 1e-4


@pytest.fixture(scope="module")
def study() -> phantom.ClinicalStudy:
    return phantom.generate_clinical_study(SEED, small=True, extra_flair=True)


@pytest.fixture(scope="module")
def written(study, tmp_path_factory):
    return phantom.write_clinical_study(study, tmp_path_factory.mktemp("clinical"), dicom=True)


def _array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def _direction(image: sitk.Image) -> np.ndarray:
    return np.asarray(image.GetDirection()).reshape(3, 3)


def _angle_deg(a, b) -> float:
    cosine = abs(float(np.dot(a, b))) / (np.linalg.norm(a) * np.linalg.norm(b))
    return math.degrees(math.acos(min(1.0, cosine)))


def _same_grid(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    for name in ("GetOrigin", "GetSpacing", "GetDirection"):
        np.testing.assert_allclose(getattr(a, name)(), getattr(b, name)(), atol=GRID_TOLERANCE_MM, err_msg=name)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _headers(folder) -> list:
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in sorted(folder.glob("IM*.dcm"))]


def _dicom_folders(written) -> dict:
    return {path.name: path for path in sorted((written / "dicom").iterdir())}


# ------------------------------------------------------------------------------------- geometry


def test_each_series_has_the_grid_and_orientation_of_its_protocol(study):
    assert [s.key for s in study.series] == KEYS
    by_key = {s.key: s for s in study.series}
    t1n = by_key["t1n"].image
    np.testing.assert_allclose(_direction(t1n)[:, :2].T, [[0, 1, 0], [0, 0, -1]], atol=1e-12)  # sagittal
    assert t1n.GetSpacing() == (2.0, 2.0, 2.0) and by_key["t1n"].plan.dimensionality == "3D"
    for key, in_plane, slice_spacing, thickness in (("t2w", 1.0, 5.5, 5.0), ("t2f", 1.8, 3.3, 3.0),
                                                     ("t2f-2", 1.44, 4.4, 4.0)):
        series = by_key[key]
        assert series.plan.orientation == "axial" and series.plan.dimensionality == "2D"
        assert _angle_deg(_direction(series.image)[:, 2], (0, 0, 1)) <= 10.0 + 1e-9  # AC-PC tilt at most
        np.testing.assert_allclose(series.image.GetSpacing(), (in_plane, in_plane, slice_spacing))
        assert series.plan.thickness == thickness
    t1c = by_key["t1c"]
    normal = {"sagittal": (1, 0, 0), "axial": (0, 0, 1)}[t1c.plan.orientation]
    assert _angle_deg(_direction(t1c.image)[:, 2], normal) < 1e-6 and t1c.plan.dimensionality == "3D"
    for series in study.series:  # real direction cosines: orthonormal and right-handed
        np.testing.assert_allclose(_direction(series.image).T @ _direction(series.image), np.eye(3), atol=1e-12)
        assert np.linalg.det(_direction(series.image)) == pytest.approx(1.0)
    grids = {(s.image.GetSize(), s.image.GetSpacing(), tuple(np.round(s.image.GetOrigin(), 3)),
              tuple(np.round(s.image.GetDirection(), 6))) for s in study.series}
    assert len(grids) == len(KEYS)
    small_grid = phantom.phantom_grid(small=True)
    for image in list(study.brats.images.values()) + [study.brain_mask]:
        assert image.GetSize() == small_grid.size and image.GetSpacing() == small_grid.spacing


def test_the_head_gives_signal_outside_the_brain_and_noise_in_the_air(study):
    brain_ml = np.count_nonzero(_array(study.brain_mask)) * np.prod(study.brain_mask.GetSpacing()) / 1000.0
    for series in study.series:
        image, mask = _array(series.image).astype(float), _array(series.brain_mask) > 0
        assert series.image.GetPixelID() == sitk.sitkUInt16
        foreground = image > 0.2 * np.median(image[mask])
        outside = np.count_nonzero(foreground & ~mask) / np.count_nonzero(foreground)
        assert outside > 0.2, f"{series.key}: only {outside:.0%} of the foreground is outside the brain"
        assert np.mean(image == 0) < 0.2, f"{series.key}: the air holds exact zeros, not noise"
        mask_ml = np.count_nonzero(mask) * np.prod(series.image.GetSpacing()) / 1000.0
        assert mask_ml == pytest.approx(brain_ml, rel=0.1), series.key


def test_scalp_fat_is_brighter_than_the_brain_on_t1(study):
    series = study.primary(Sequence.T1N)
    image, mask = _array(series.image).astype(float), _array(series.brain_mask) > 0
    assert np.percentile(image[~mask], 99.5) > 1.5 * np.percentile(image[mask], 99.0)


# ------------------------------------------------------------------------------------- transforms


def test_saved_transforms_bring_every_series_into_brain_space(study, written):
    reference = sitk.ReadImage(str(written / "truth" / "brain-mask.nii.gz"))
    brain = _array(reference) > 0
    np.testing.assert_array_equal(brain, _array(study.brain_mask) > 0)
    for key in KEYS:
        transform = sitk.ReadTransform(str(written / "truth" / f"{key}-from-brain.tfm"))
        mask = sitk.ReadImage(str(written / "truth" / f"brain-mask-{key}.nii.gz"))
        back = _array(sitk.Resample(mask, reference, transform, sitk.sitkNearestNeighbor)) > 0
        assert _dice(back, brain) > 0.9, key

        seq = key.split("-")[0]
        image = sitk.Cast(sitk.ReadImage(str(written / "nifti" / f"{study.case_id}-{key}.nii.gz")), sitk.sitkFloat32)
        brats = _array(sitk.ReadImage(str(written / "brats" / f"{study.case_id}-{seq}.nii.gz")))

        def correlation(with_transform: sitk.Transform) -> float:
            moved = _array(sitk.Resample(image, reference, with_transform, sitk.sitkLinear))
            return float(np.corrcoef(moved[brain], brats[brain])[0, 1])

        aligned, unmoved = correlation(transform), correlation(sitk.Transform())
        assert aligned > 0.8 and aligned > unmoved + 0.1, f"{key}: {aligned:.3f} vs {unmoved:.3f} untransformed"


def test_transforms_json_states_the_convention_and_small_motions(study, written):
    summary = json.loads((written / "truth" / "transforms.json").read_text())
    assert "brain physical space" in summary["convention"] and list(summary["series"]) == KEYS
    for key, entry in summary["series"].items():
        transform = sitk.ReadTransform(str(written / "truth" / entry["file"]))
        euler = sitk.Euler3DTransform()
        euler.SetFixedParameters(transform.GetFixedParameters())
        euler.SetParameters(transform.GetParameters())
        np.testing.assert_allclose(np.reshape(euler.GetMatrix(), (3, 3)), entry["matrix"], atol=1e-12)
        np.testing.assert_allclose(euler.GetTranslation(), entry["translation_mm"], atol=1e-12)
        np.testing.assert_allclose(euler.GetCenter(), entry["center_mm"], atol=1e-12)
        assert max(abs(a) for a in entry["rotation_deg"]) <= 2.3 and max(abs(t) for t in entry["translation_mm"]) <= 2.3
        assert entry["series_description"] == {s.key: s.plan.description for s in study.series}[key]
        point = (10.0, -120.0, 60.0)  # the documented formula, p_series = R (p - c) + c + t
        expected = np.asarray(entry["matrix"]) @ (np.subtract(point, entry["center_mm"])) + entry["center_mm"] \
            + entry["translation_mm"]
        np.testing.assert_allclose(transform.TransformPoint(point), expected, atol=1e-9)


# ------------------------------------------------------------------------------------- DICOM


def test_dicom_series_read_back_exactly_on_the_nifti_grid(study, written):
    folders = _dicom_folders(written)
    assert list(folders) == ["01-3-PLANE-LOC"] + [
        f"{s.series_number:02d}-{s.plan.description.replace(' ', '-')}" for s in study.series]
    for series in study.series:
        folder = folders[f"{series.series_number:02d}-{series.plan.description.replace(' ', '-')}"]
        reader = sitk.ImageSeriesReader()
        (uid,) = reader.GetGDCMSeriesIDs(str(folder))
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), uid))
        from_dicom = reader.Execute()
        nifti = sitk.ReadImage(str(written / "nifti" / f"{study.case_id}-{series.key}.nii.gz"))
        _same_grid(from_dicom, nifti)
        _same_grid(from_dicom, series.image)
        assert from_dicom.GetPixelID() == nifti.GetPixelID() == sitk.sitkUInt16
        np.testing.assert_array_equal(_array(from_dicom), _array(nifti))


def test_dicom_attributes_describe_study_series_and_acquisition(study, written):
    folders = _dicom_folders(written)
    headers = {name: _headers(folder) for name, folder in folders.items()}
    every = [ds for slices in headers.values() for ds in slices]
    assert {ds.StudyInstanceUID for ds in every} == {every[0].StudyInstanceUID}
    assert len({ds.FrameOfReferenceUID for ds in every}) == 1
    assert all(len({ds.SeriesInstanceUID for ds in slices}) == 1 for slices in headers.values())
    assert len({slices[0].SeriesInstanceUID for slices in headers.values()}) == len(folders)
    assert len({ds.SOPInstanceUID for ds in every}) == len(every)
    for ds in every:
        assert (ds.PatientName, ds.PatientID, ds.Modality) == ("Phantom^Clinical", study.case_id, "MR")
        assert ds.Manufacturer == "MRISynthesis phantom" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
        assert (ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation) == (16, 16, 0)
        assert ds.StudyDate and ds.StudyTime and ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian

    localizer = headers["01-3-PLANE-LOC"]
    assert [ds.ImageType[2] for ds in localizer] == ["LOCALIZER"] * 9
    assert {ds.SeriesDescription for ds in localizer} == {"3-PLANE LOC"} and localizer[0].SeriesNumber == 1
    assert len({tuple(ds.ImageOrientationPatient) for ds in localizer}) == 3

    protocols = study.brats.parameters["protocols"]
    for series in study.series:
        slices = headers[f"{series.series_number:02d}-{series.plan.description.replace(' ', '-')}"]
        first, plan, image = slices[0], series.plan, series.image
        assert len(slices) == image.GetSize()[2] and [ds.InstanceNumber for ds in slices] == list(
            range(1, len(slices) + 1))
        assert list(first.ImageType) == ["ORIGINAL", "PRIMARY", "M", "ND"]
        assert first.SeriesDescription == first.ProtocolName == plan.description
        assert first.SeriesNumber == series.series_number
        assert first.MRAcquisitionType == ("3D" if series.sequence in (Sequence.T1N, Sequence.T1C) else "2D")
        protocol = protocols[series.sequence.value]
        assert float(first.RepetitionTime) == pytest.approx(protocol["TR"], abs=0.01)
        assert float(first.EchoTime) == pytest.approx(protocol["TE"], abs=0.01)
        scanning = list(first.ScanningSequence) if first["ScanningSequence"].VM > 1 else [first.ScanningSequence]
        expected = {"mprage": ["GR", "IR"], "spgr": ["GR"], "se": ["SE"], "flair": ["SE", "IR"]}[protocol["type"]]
        assert scanning == expected, plan.description
        assert ("InversionTime" in first) == ("IR" in scanning)
        if "IR" in scanning:
            assert float(first.InversionTime) == pytest.approx(protocol["TI"], abs=0.01)
        for keyword in ("SequenceVariant", "ScanOptions", "FlipAngle", "EchoTrainLength"):
            assert keyword in first, f"{plan.description}: no {keyword}"
        assert ("ContrastBolusAgent" in first) == (series.sequence == Sequence.T1C)
        if series.sequence == Sequence.T1C:
            assert first.ContrastBolusAgent == "GADOBUTROL" and plan.description.endswith("POST GD")
        direction = _direction(image)
        assert (first.Rows, first.Columns) == (image.GetSize()[1], image.GetSize()[0])
        np.testing.assert_allclose([float(v) for v in first.PixelSpacing], image.GetSpacing()[1::-1])
        assert float(first.SliceThickness) == plan.thickness
        assert float(first.SpacingBetweenSlices) == pytest.approx(image.GetSpacing()[2])
        np.testing.assert_allclose([float(v) for v in first.ImageOrientationPatient],
                                   np.concatenate([direction[:, 0], direction[:, 1]]), atol=1e-9)
        np.testing.assert_allclose([float(v) for v in first.ImagePositionPatient], image.GetOrigin(),
                                   atol=GRID_TOLERANCE_MM)
    flairs = [ds[0].SeriesDescription for ds in headers.values() if "FLAIR" in ds[0].SeriesDescription]
    assert flairs == ["AX T2 FLAIR", "AX T2 FLAIR 2"]


# ------------------------------------------------------------------------------------- determinism, CLI


def test_same_seed_gives_the_same_study_and_the_brats_case_of_generate_case(study):
    again = phantom.generate_clinical_study(SEED, small=True, extra_flair=True)
    assert json.dumps(again.parameters, sort_keys=True) == json.dumps(study.parameters, sort_keys=True)
    for first, second in zip(study.series, again.series):
        np.testing.assert_array_equal(_array(first.image), _array(second.image))
        np.testing.assert_array_equal(_array(first.brain_mask), _array(second.brain_mask))
        assert first.transform.GetParameters() == second.transform.GetParameters()
    for first, second in zip(study.localizer, again.localizer):
        np.testing.assert_array_equal(_array(first), _array(second))
    case = phantom.generate_case(SEED, small=True)
    for seq in SEQUENCES:
        np.testing.assert_array_equal(_array(study.brats.images[seq]), _array(case.images[seq]))


def test_cli_writes_the_clinical_layout(tmp_path, capsys):
    assert main(["phantom", "--clinical", "--dicom", "--small", "--cases", "1", "-o", str(tmp_path)]) == 0
    folder = tmp_path / "Phantom-00000"
    assert str(folder) in capsys.readouterr().out
    names = {kind: sorted(p.name for p in (folder / kind).iterdir()) for kind in ("nifti", "truth", "brats")}
    assert names["nifti"] == sorted(f"Phantom-00000-{seq.value}.nii.gz" for seq in SEQUENCES)
    assert names["brats"] == sorted(phantom.case_files("Phantom-00000").values())
    expected_truth = {"brain-mask.nii.gz", "transforms.json", "study.json"}
    for seq in SEQUENCES:
        expected_truth |= {f"brain-mask-{seq.value}.nii.gz", f"{seq.value}-from-brain.tfm"}
    assert set(names["truth"]) == expected_truth
    series = sorted((folder / "dicom").iterdir())
    assert len(series) == 5 and series[0].name == "01-3-PLANE-LOC"
    assert all(any(path.glob("IM*.dcm")) for path in series)
    for seq in SEQUENCES:
        image = sitk.ReadImage(str(folder / "nifti" / f"Phantom-00000-{seq.value}.nii.gz"))
        mask = sitk.ReadImage(str(folder / "truth" / f"brain-mask-{seq.value}.nii.gz"))
        _same_grid(image, mask)


def test_cli_refuses_dicom_without_clinical(tmp_path, capsys):
    assert main(["phantom", "--dicom", "--small", "-o", str(tmp_path)]) == 2
    assert "--clinical" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
