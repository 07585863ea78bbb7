"""Tests for MRISynthesisLib.core.io: readers, BraTS case folders, grids, resampling, atomic writes.

Every test works on real files written with SimpleITK or nibabel into a temporary folder.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from MRISynthesisLib.core import io
from MRISynthesisLib.core.io import InputError, WriteError
from MRISynthesisLib.sequences import SEQUENCES, Sequence

OBLIQUE_SPACING = (0.9, 1.1, 3.0)
OBLIQUE_ORIGIN = (-12.5, 30.25, 4.0)
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


# --------------------------------------------------------------------------- helpers


def assert_geometry(image: sitk.Image, spacing, origin, direction) -> None:
    """Spacing, origin and direction equal the expected values within io's tolerances."""
    np.testing.assert_allclose(image.GetSpacing(), spacing, atol=1e-4)
    np.testing.assert_allclose(image.GetOrigin(), origin, atol=1e-3)
    np.testing.assert_allclose(image.GetDirection(), np.ravel(direction), atol=1e-5)


def assert_same_voxels(image: sitk.Image, expected: sitk.Image | np.ndarray) -> None:
    if isinstance(expected, sitk.Image):
        expected = sitk.GetArrayFromImage(expected)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), expected)


def listing(folder: Path) -> list[str]:
    """Every file and folder below ``folder``, hidden ones included, as relative paths."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def assert_input_error(error: pytest.ExceptionInfo, name: str, *words: str) -> None:
    """One-line InputError that names ``name`` and contains each of ``words``."""
    message = str(error.value)
    assert isinstance(error.value, InputError)
    assert "\n" not in message and "\r" not in message, message
    assert name in message, message
    for word in words:
        assert word.lower() in message.lower(), message


def normal_file_mode(folder: Path) -> int:
    """Permission bits a plain ``open(..., 'w')`` gives a new file here (depends on umask)."""
    probe = folder / "probe-mode.txt"
    probe.write_text("x")
    mode = stat.S_IMODE(probe.stat().st_mode)
    probe.unlink()
    return mode


@pytest.fixture
def oblique_image(make_volume, rotation) -> sitk.Image:
    """Anisotropic (0.9 x 1.1 x 3 mm), 20-degree oblique int16 volume."""
    return make_volume(
        spacing=OBLIQUE_SPACING, origin=OBLIQUE_ORIGIN, direction=rotation(20), dtype=np.int16, seed=3
    )


# --------------------------------------------------------------------------- readers


@pytest.mark.parametrize("extension", [".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"])
def test_read_sitk_written_file_keeps_voxels_and_geometry(tmp_path, oblique_image, extension):
    path = tmp_path / f"volume{extension}"
    sitk.WriteImage(oblique_image, str(path), True)
    image = io.read_image(path)
    assert image.GetSize() == oblique_image.GetSize()
    assert_same_voxels(image, oblique_image)
    assert_geometry(image, OBLIQUE_SPACING, OBLIQUE_ORIGIN, oblique_image.GetDirection())


@pytest.mark.parametrize("extension", [".nii", ".nii.gz"])
@pytest.mark.parametrize("with_qform", [False, True])
def test_read_nibabel_written_nifti_matches_affine_in_lps(tmp_path, rotation, extension, with_qform):
    rng = np.random.default_rng(5)
    data = rng.normal(100.0, 20.0, size=(8, 9, 10)).astype(np.float32)
    rotation_ras = np.reshape(rotation(20, "y"), (3, 3))
    affine = np.eye(4)
    affine[:3, :3] = rotation_ras @ np.diag(OBLIQUE_SPACING)
    affine[:3, 3] = (14.0, -21.5, 7.25)
    nifti = nib.Nifti1Image(data, affine)
    if with_qform:
        nifti.set_qform(affine, code=1)
    path = tmp_path / f"nib{extension}"
    nib.save(nifti, str(path))

    image = io.read_image(path)

    # nibabel's array is indexed (i, j, k); SimpleITK's numpy view is (k, j, i).
    assert_same_voxels(image, data.transpose(2, 1, 0))
    lps = RAS_TO_LPS @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    assert_geometry(image, spacing, RAS_TO_LPS @ affine[:3, 3], lps / spacing)
    np.testing.assert_allclose(spacing, OBLIQUE_SPACING)  # the affine really is anisotropic


def test_read_dicom_series_folder_keeps_voxels_and_geometry(tmp_path, oblique_image, write_dicom_series):
    folder = tmp_path / "t1_series"
    files = write_dicom_series(oblique_image, folder)
    assert len(files) == oblique_image.GetDepth()

    image = io.read_image(folder)

    assert image.GetSize() == oblique_image.GetSize()
    assert_same_voxels(image, oblique_image)
    assert_geometry(image, OBLIQUE_SPACING, OBLIQUE_ORIGIN, oblique_image.GetDirection())


def test_read_image_accepts_string_paths(tmp_path, make_volume):
    path = tmp_path / "a.nrrd"
    written = make_volume()
    sitk.WriteImage(written, str(path))
    assert_same_voxels(io.read_image(str(path)), written)


def test_read_image_without_check_returns_flawed_image(tmp_path, make_volume):
    path = tmp_path / "zeros.nii.gz"
    sitk.WriteImage(make_volume() * 0, str(path))
    assert io.read_image(path, check=False).GetSize() == (8, 9, 10)
    with pytest.raises(InputError):
        io.read_image(path)


# --------------------------------------------------------------------------- BraTS case folders


def test_find_case_files_brats2023(tmp_path, write_brats_case):
    folder = write_brats_case(tmp_path, naming="2023")
    case = io.find_case_files(folder)
    assert case.case_id == "BraTS-GLI-00000-000"
    assert case.folder == folder
    assert {seq: path.name for seq, path in case.sequences.items()} == {
        Sequence.T1N: "BraTS-GLI-00000-000-t1n.nii.gz",
        Sequence.T1C: "BraTS-GLI-00000-000-t1c.nii.gz",
        Sequence.T2W: "BraTS-GLI-00000-000-t2w.nii.gz",
        Sequence.T2F: "BraTS-GLI-00000-000-t2f.nii.gz",
    }
    assert case.label is not None and case.label.name == "BraTS-GLI-00000-000-seg.nii.gz"


def test_find_case_files_brats2021(tmp_path, write_brats_case):
    folder = write_brats_case(tmp_path, naming="2021")
    case = io.find_case_files(folder)
    assert case.case_id == "BraTS2021_00000"
    assert {seq: path.name for seq, path in case.sequences.items()} == {
        Sequence.T1N: "BraTS2021_00000_t1.nii.gz",
        Sequence.T1C: "BraTS2021_00000_t1ce.nii.gz",
        Sequence.T2W: "BraTS2021_00000_t2.nii.gz",
        Sequence.T2F: "BraTS2021_00000_flair.nii.gz",
    }
    assert case.label is not None and case.label.name == "BraTS2021_00000_seg.nii.gz"


@pytest.mark.parametrize("naming", ["2023", "2021"])
def test_read_case_reads_every_sequence_in_canonical_order(tmp_path, write_brats_case, naming):
    folder = write_brats_case(tmp_path, naming=naming)
    files = io.find_case_files(folder).sequences
    images = io.read_case(folder)
    assert list(images) == list(SEQUENCES)
    for sequence, image in images.items():
        assert_same_voxels(image, sitk.ReadImage(str(files[sequence])))


@pytest.mark.parametrize("naming", ["2023", "2021"])
def test_read_case_label(tmp_path, write_brats_case, naming):
    folder = write_brats_case(tmp_path, naming=naming)
    label = io.read_case_label(folder)
    assert label is not None
    expected = sitk.ReadImage(str(io.find_case_files(folder).label))
    assert_same_voxels(label, expected)
    assert set(np.unique(sitk.GetArrayFromImage(label))) == {0, 1}


def test_case_without_label(tmp_path, write_brats_case):
    folder = write_brats_case(tmp_path, label=False)
    assert io.find_case_files(folder).label is None
    assert io.read_case_label(folder) is None


@pytest.mark.parametrize(
    "naming, sequences, case_id",
    [
        ("2023", (Sequence.T2F, Sequence.T1C), "BraTS-GLI-00000-000"),
        ("2023", (Sequence.T2W, Sequence.T2F), "BraTS-GLI-00000-000"),
        ("2021", (Sequence.T1N, Sequence.T1C), "BraTS2021_00000"),
        ("2021", (Sequence.T2F,), "BraTS2021_00000"),
    ],
)
def test_partial_case_reads_only_present_sequences(tmp_path, write_brats_case, naming, sequences, case_id):
    folder = write_brats_case(tmp_path, naming=naming, sequences=sequences, label=False)
    case = io.find_case_files(folder)
    assert set(case.sequences) == set(sequences)
    assert case.case_id == case_id
    images = io.read_case(folder)
    assert list(images) == [s for s in SEQUENCES if s in sequences]


def test_case_folder_with_scanner_names_and_dicom_subfolder(tmp_path, make_volume, write_dicom_series):
    folder = tmp_path / "patient_42"
    write_dicom_series(make_volume(seed=1), folder / "t1_mprage_sag")
    sitk.WriteImage(make_volume(seed=2), str(folder / "Ax T2 FLAIR.nrrd"))
    sitk.WriteImage(make_volume(seed=3), str(folder / "T1 post Gd.mha"))
    (folder / "outputs").mkdir()  # unrelated sub-folder: not an input
    (folder / "notes.txt").write_text("not an image")

    case = io.find_case_files(folder)

    assert {seq: path.name for seq, path in case.sequences.items()} == {
        Sequence.T1N: "t1_mprage_sag",
        Sequence.T2F: "Ax T2 FLAIR.nrrd",
        Sequence.T1C: "T1 post Gd.mha",
    }
    assert case.case_id == "patient_42"  # no BraTS suffixes: the folder names the case
    images = io.read_case(folder)
    assert_same_voxels(images[Sequence.T1N], sitk.Cast(make_volume(seed=1), sitk.sitkInt16))
    assert_same_voxels(images[Sequence.T2F], make_volume(seed=2))


def test_read_inputs_from_command_line_names(tmp_path, make_volume):
    paths = {}
    for seed, name in enumerate(["T1ce", "flair"]):
        paths[name] = tmp_path / f"{name}.nii.gz"
        sitk.WriteImage(make_volume(seed=seed), str(paths[name]))
    images = io.read_inputs(paths)
    assert set(images) == {Sequence.T1C, Sequence.T2F}
    assert_same_voxels(images[Sequence.T2F], make_volume(seed=1))


# --------------------------------------------------------------------------- grids


def test_grid_differences_names_each_difference(make_volume, rotation):
    reference = make_volume(spacing=(1.0, 1.0, 2.0), origin=(1.0, 2.0, 3.0))
    assert io.grid_differences(reference, reference) == []
    assert io.same_grid(make_volume(spacing=(1.0, 1.0, 2.0), origin=(1.0, 2.0, 3.0), seed=4), reference)

    cases = {
        "size": make_volume(size=(8, 9, 11), spacing=(1.0, 1.0, 2.0), origin=(1.0, 2.0, 3.0)),
        "spacing": make_volume(spacing=(1.0, 1.2, 2.0), origin=(1.0, 2.0, 3.0)),
        "origin": make_volume(spacing=(1.0, 1.0, 2.0), origin=(1.0, 2.5, 3.0)),
        "direction": make_volume(spacing=(1.0, 1.0, 2.0), origin=(1.0, 2.0, 3.0), direction=rotation(5, "z")),
    }
    for what, image in cases.items():
        differences = io.grid_differences(image, reference)
        assert len(differences) == 1 and differences[0].startswith(what), (what, differences)
        assert not io.same_grid(image, reference)


def test_grid_differences_ignore_rounding_noise(make_volume):
    reference = make_volume(spacing=(0.9, 1.1, 3.0), origin=(10.0, -5.0, 2.0))
    noisy = make_volume(spacing=(0.9 + 1e-6, 1.1, 3.0 - 1e-6), origin=(10.0 + 1e-4, -5.0, 2.0))
    assert io.same_grid(noisy, reference)


def test_align_inputs_resamples_only_mismatched_inputs(make_volume, rotation):
    reference = make_volume(spacing=(1.0, 1.0, 1.5), origin=(0.0, 0.0, 0.0), seed=1)
    images = {
        Sequence.T2F: make_volume(spacing=(1.0, 1.0, 1.5), origin=(0.0, 0.0, 0.0), seed=2),  # same grid
        Sequence.T1N: reference,
        Sequence.T1C: make_volume(spacing=(1.2, 0.8, 1.5), seed=3),  # different spacing
        Sequence.T2W: make_volume(spacing=(1.0, 1.0, 1.5), direction=rotation(10, "z"), seed=4),  # rotated
    }
    before = {seq: (sitk.GetArrayFromImage(img), img.GetSpacing(), img.GetDirection()) for seq, img in images.items()}

    aligned = io.align_inputs(images)

    assert aligned.reference == Sequence.T1N
    assert list(aligned.images) == list(SEQUENCES)
    assert aligned.images[Sequence.T1N] is images[Sequence.T1N]
    assert aligned.images[Sequence.T2F] is images[Sequence.T2F]
    for sequence, image in aligned.images.items():
        assert io.same_grid(image, reference), sequence
        assert image.GetPixelID() == images[sequence].GetPixelID()
    assert len(aligned.resampled) == 2
    t1c_lines = [m for m in aligned.resampled if Sequence.T1C.display_name + " resampled" in m]
    t2w_lines = [m for m in aligned.resampled if m.startswith(Sequence.T2W.display_name + " resampled")]
    assert len(t1c_lines) == 1 and "spacing" in t1c_lines[0] and "linear" in t1c_lines[0]
    assert len(t2w_lines) == 1 and "direction" in t2w_lines[0]
    assert not any(m.startswith(Sequence.T2F.display_name) for m in aligned.resampled)
    for sequence, (array, spacing, direction) in before.items():  # the caller's images are untouched
        assert_same_voxels(images[sequence], array)
        assert images[sequence].GetSpacing() == spacing and images[sequence].GetDirection() == direction


def test_align_inputs_with_chosen_reference(make_volume):
    images = {
        Sequence.T1N: make_volume(spacing=(1.0, 1.0, 1.0), seed=1),
        Sequence.T2W: make_volume(spacing=(1.0, 1.0, 2.0), seed=2),
    }
    for reference in (Sequence.T2W, "t2w", "T2"):
        aligned = io.align_inputs(images, reference=reference)
        assert aligned.reference is Sequence.T2W
        assert aligned.images[Sequence.T2W] is images[Sequence.T2W]
        assert io.same_grid(aligned.images[Sequence.T1N], images[Sequence.T2W])
        assert len(aligned.resampled) == 1 and aligned.resampled[0].startswith("T1 resampled onto the T2 grid")


def test_align_inputs_refuses_missing_reference_and_no_inputs(make_volume):
    with pytest.raises(InputError, match="T2-FLAIR"):
        io.align_inputs({Sequence.T1N: make_volume()}, reference=Sequence.T2F)
    with pytest.raises(InputError, match="no input"):
        io.align_inputs({})


def _linear_field(image: sitk.Image) -> np.ndarray:
    """f(x, y, z) = 2x - 3y + 0.5z + 100 at every voxel's physical position, as (z, y, x) array."""
    size = image.GetSize()
    values = np.empty(tuple(reversed(size)), dtype=np.float64)
    for k in range(size[2]):
        for j in range(size[1]):
            for i in range(size[0]):
                x, y, z = image.TransformIndexToPhysicalPoint((i, j, k))
                values[k, j, i] = 2.0 * x - 3.0 * y + 0.5 * z + 100.0
    return values


@pytest.mark.parametrize("target_change", ["shift", "rotation"])
def test_align_inputs_matches_analytic_values(make_volume, rotation, target_change):
    """Linear interpolation reproduces a linear intensity field exactly inside the source grid."""
    source = make_volume(size=(10, 11, 12), spacing=(1.0, 1.2, 1.5), origin=(0.0, 0.0, 0.0))
    field = sitk.GetImageFromArray(_linear_field(source).astype(np.float32))
    field.CopyInformation(source)
    if target_change == "shift":  # a sub-voxel shift and a coarser spacing
        target = make_volume(size=(8, 9, 10), spacing=(1.1, 1.3, 1.6), origin=(0.35, 0.55, 0.7))
    else:
        target = make_volume(size=(8, 9, 10), spacing=(1.0, 1.0, 1.0), origin=(1.0, 1.5, 2.0),
                             direction=rotation(20, "z"))

    aligned = io.align_inputs({Sequence.T1N: target, Sequence.T2W: field})
    resampled = sitk.GetArrayFromImage(aligned.images[Sequence.T2W])

    expected = _linear_field(target)
    inside = np.zeros(expected.shape, dtype=bool)
    outside = np.zeros(expected.shape, dtype=bool)
    upper = np.array(source.GetSize()) - 1
    for k, j, i in np.ndindex(*expected.shape):
        point = target.TransformIndexToPhysicalPoint((i, j, k))
        index = np.array(source.TransformPhysicalPointToContinuousIndex(point))
        inside[k, j, i] = np.all(index >= 0) and np.all(index <= upper)
        outside[k, j, i] = np.any(index < -0.6) or np.any(index > upper + 0.6)
    assert inside.sum() > expected.size // 4  # the check sees a good part of the grid
    np.testing.assert_allclose(resampled[inside], expected[inside], atol=1e-3)
    if outside.any():
        assert np.all(resampled[outside] == 0)


# --------------------------------------------------------------------------- bad inputs


def _write_array(path: Path, array: np.ndarray, vector: bool = False) -> Path:
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=vector), str(path))
    return path


def _bad_random_bytes(folder: Path) -> Path:
    path = folder / "random.nii.gz"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 700, dtype=np.uint8).tobytes())
    return path


def _bad_truncated_gzip(folder: Path) -> Path:
    path = _write_array(folder / "cut.nii.gz", np.arange(1, 721, dtype=np.float32).reshape(8, 9, 10))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _bad_truncated_nifti(folder: Path) -> Path:
    path = _write_array(folder / "cut.nii", np.arange(1, 721, dtype=np.float32).reshape(8, 9, 10))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    return path


def _bad_gzip_of_random_bytes(folder: Path) -> Path:
    path = folder / "noise.nii.gz"
    path.write_bytes(gzip.compress(np.random.default_rng(1).integers(0, 256, 900, dtype=np.uint8).tobytes()))
    return path


def _bad_2d(folder: Path) -> Path:
    return _write_array(folder / "flat.nii.gz", np.arange(1, 73, dtype=np.float32).reshape(8, 9))


def _bad_4d(folder: Path) -> Path:
    path = folder / "time.nii.gz"
    data = np.random.default_rng(2).random((8, 9, 10, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def _bad_vector(folder: Path) -> Path:
    data = np.random.default_rng(3).random((10, 9, 8, 3)).astype(np.float32)
    return _write_array(folder / "rgb.nrrd", data, vector=True)


def _bad_single_slice(folder: Path) -> Path:
    return _write_array(folder / "slab.mha", np.arange(1, 73, dtype=np.float32).reshape(1, 9, 8))


def _bad_empty(folder: Path) -> Path:
    return _write_array(folder / "empty.nii.gz", np.zeros((10, 9, 8), dtype=np.int16))


def _bad_constant(folder: Path) -> Path:
    return _write_array(folder / "constant.nii.gz", np.full((10, 9, 8), 7, dtype=np.int16))


def _bad_nan(folder: Path) -> Path:
    data = np.random.default_rng(4).random((10, 9, 8)).astype(np.float32)
    data[3, 4, 5] = np.nan
    return _write_array(folder / "nan.nii.gz", data)


def _bad_inf(folder: Path) -> Path:
    data = np.random.default_rng(5).random((10, 9, 8)).astype(np.float32)
    data[1, 2, 3] = np.inf
    data[2, 2, 2] = -np.inf
    return _write_array(folder / "inf.nrrd", data)


def _bad_inf_nibabel(folder: Path) -> Path:
    """Big-endian float64 written by nibabel: ITK's NIfTI reader would turn these into 0."""
    path = folder / "inf_be.nii"
    data = np.random.default_rng(6).random((8, 9, 10)).astype(">f8")
    data[0, 0, 0], data[7, 8, 9], data[4, 4, 4] = np.inf, np.nan, -np.inf
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def _bad_missing(folder: Path) -> Path:
    return folder / "not-there.nii.gz"


def _bad_empty_folder(folder: Path) -> Path:
    empty = folder / "nothing_here"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images")
    return empty


@pytest.mark.parametrize(
    "make_bad, words",
    [
        (_bad_random_bytes, ("corrupt",)),
        (_bad_truncated_gzip, ("truncated",)),
        (_bad_truncated_nifti, ("truncated",)),
        (_bad_gzip_of_random_bytes, ("corrupt",)),
        (_bad_2d, ("not a 3D image", "2D")),
        (_bad_4d, ("not a 3D image", "4D")),
        (_bad_vector, ("3 components",)),
        (_bad_single_slice, ("single slice",)),
        (_bad_empty, ("empty",)),
        (_bad_constant, ("constant", "7")),
        (_bad_nan, ("1 NaN or Inf",)),
        (_bad_inf, ("2 NaN or Inf",)),
        (_bad_inf_nibabel, ("3 NaN or Inf",)),
        (_bad_missing, ("no such file",)),
        (_bad_empty_folder, ("no DICOM series",)),
    ],
    ids=lambda value: getattr(value, "__name__", "")[5:] or None,
)
def test_bad_image_gets_one_line_error_and_nothing_is_written(tmp_path, make_bad, words):
    path = make_bad(tmp_path)
    before = file_hashes(tmp_path), listing(tmp_path)
    with pytest.raises(InputError) as error:
        io.read_image(path)
    assert_input_error(error, path.name, *words)
    assert (file_hashes(tmp_path), listing(tmp_path)) == before


def test_two_dicom_series_in_one_folder(tmp_path, make_volume, write_dicom_series):
    folder = tmp_path / "mixed"
    write_dicom_series(make_volume(seed=1), folder, prefix="a")
    write_dicom_series(make_volume(seed=2), folder, prefix="b")
    with pytest.raises(InputError) as error:
        io.read_image(folder)
    assert_input_error(error, "mixed", "2 DICOM series")


def _case_with_extra(tmp_path: Path, write_brats_case, make_volume, extra_name: str) -> tuple[Path, Path]:
    folder = write_brats_case(tmp_path, sequences=(Sequence.T1N, Sequence.T2F))
    extra = folder / extra_name
    sitk.WriteImage(make_volume(seed=7), str(extra))
    return folder, extra


@pytest.mark.parametrize("read", [io.find_case_files, io.read_case, io.read_case_label])
def test_case_folder_with_unknown_sequence(tmp_path, write_brats_case, make_volume, read):
    folder, extra = _case_with_extra(tmp_path, write_brats_case, make_volume, "BraTS-GLI-00000-000-dwi.nii.gz")
    with pytest.raises(InputError) as error:
        read(folder)
    assert_input_error(error, extra.name, "unknown sequence name", "names none of")


def test_case_folder_with_ambiguous_sequence_name(tmp_path, write_brats_case, make_volume):
    folder, extra = _case_with_extra(tmp_path, write_brats_case, make_volume, "t2_t1_fusion.nii.gz")
    with pytest.raises(InputError) as error:
        io.find_case_files(folder)
    assert_input_error(error, extra.name, "unknown sequence name", "ambiguous")


def test_case_folder_with_two_files_for_one_sequence(tmp_path, write_brats_case, make_volume):
    folder, extra = _case_with_extra(tmp_path, write_brats_case, make_volume, "BraTS2021_00000_flair.nii.gz")
    with pytest.raises(InputError) as error:
        io.read_case(folder)
    assert_input_error(error, extra.name, "two files for T2-FLAIR", "BraTS-GLI-00000-000-t2f.nii.gz")


def test_case_folder_with_two_label_maps(tmp_path, write_brats_case, make_volume):
    folder, extra = _case_with_extra(tmp_path, write_brats_case, make_volume, "tumour_label.nii.gz")
    with pytest.raises(InputError) as error:
        io.find_case_files(folder)
    assert_input_error(error, extra.name, "second label map")


def test_case_folder_with_bad_image_names_the_file(tmp_path, write_brats_case):
    folder = write_brats_case(tmp_path, sequences=(Sequence.T1N, Sequence.T2W))
    bad = folder / "BraTS-GLI-00000-000-t2w.nii.gz"
    sitk.WriteImage(sitk.Image(8, 9, 10, sitk.sitkInt16), str(bad))  # all zero
    with pytest.raises(InputError) as error:
        io.read_case(folder)
    assert_input_error(error, bad.name, "empty")


@pytest.mark.parametrize("read", [io.find_case_files, io.read_case])
def test_folder_without_images(tmp_path, read):
    folder = tmp_path / "case"
    folder.mkdir()
    (folder / "report.txt").write_text("text")
    with pytest.raises(InputError) as error:
        read(folder)
    assert_input_error(error, "case", "no T1, T1c, T2 or FLAIR image")


def test_missing_case_folder(tmp_path):
    with pytest.raises(InputError) as error:
        io.find_case_files(tmp_path / "absent")
    assert_input_error(error, "absent", "not a folder")


def test_read_inputs_refuses_unknown_and_duplicate_names(tmp_path, make_volume):
    path = tmp_path / "a.nii.gz"
    sitk.WriteImage(make_volume(), str(path))
    with pytest.raises(InputError) as error:
        io.read_inputs({"dwi": path})
    assert_input_error(error, "a.nii.gz", "unknown sequence name 'dwi'")
    with pytest.raises(InputError) as error:
        io.read_inputs({"t1": path, "T1n": path})
    assert_input_error(error, "a.nii.gz", "two files for T1")


# --------------------------------------------------------------------------- writing


@pytest.mark.parametrize("extension", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".nhdr"])
def test_write_image_round_trip_leaves_no_temporary_files(tmp_path, oblique_image, extension):
    path = tmp_path / "out" / f"synthetic{extension}"
    assert io.write_image(oblique_image, path) == path
    image = io.read_image(path)
    assert_same_voxels(image, oblique_image)
    assert_geometry(image, OBLIQUE_SPACING, OBLIQUE_ORIGIN, oblique_image.GetDirection())
    names = listing(tmp_path / "out")
    assert path.name in names
    assert not [n for n in names if n.startswith(".") or "part" in n], names
    if extension in (".mhd", ".nhdr"):  # header plus data file, both under the final name
        assert len(names) == 2 and all(n.startswith("synthetic.") for n in names), names
    else:
        assert names == [path.name]


def test_write_image_files_get_normal_permissions(tmp_path, make_volume):
    path = io.write_image(make_volume(), tmp_path / "a.nii.gz")
    assert stat.S_IMODE(path.stat().st_mode) == normal_file_mode(tmp_path)


def test_write_image_overwrites_existing_file(tmp_path, make_volume):
    path = tmp_path / "a.nrrd"
    io.write_image(make_volume(seed=1), path)
    io.write_image(make_volume(seed=2), path)
    assert_same_voxels(io.read_image(path), make_volume(seed=2))
    assert listing(tmp_path) == ["a.nrrd"]


@pytest.mark.parametrize("extension", [".nii.gz", ".mhd"])
def test_failed_write_keeps_previous_file_and_leaves_nothing(tmp_path, make_volume, extension):
    path = tmp_path / f"result{extension}"
    io.write_image(make_volume(seed=1), path)
    before = file_hashes(tmp_path), listing(tmp_path)
    # A run-length label map: no image file format can store this pixel type.
    label_map = sitk.LabelImageToLabelMap(sitk.Cast(make_volume(seed=2) > 500, sitk.sitkUInt8))
    with pytest.raises(WriteError) as error:
        io.write_image(label_map, path)
    assert_input_error(error, path.name, "cannot write image")
    assert (file_hashes(tmp_path), listing(tmp_path)) == before


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write to read-only folders")
def test_write_into_read_only_folder_fails_cleanly(tmp_path, make_volume):
    path = tmp_path / "a.nii.gz"
    io.write_image(make_volume(seed=1), path)
    before = file_hashes(tmp_path)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(OSError):
            io.write_image(make_volume(seed=2), path)
    finally:
        tmp_path.chmod(0o755)
    assert file_hashes(tmp_path) == before


def test_write_image_refuses_unknown_extension(tmp_path, make_volume):
    with pytest.raises(InputError) as error:
        io.write_image(make_volume(), tmp_path / "a.png")
    assert_input_error(error, "a.png", "unsupported output extension")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("extension", [".nii.gz", ".nii"])
def test_description_lands_in_nifti_header(tmp_path, make_volume, extension):
    image = make_volume()
    image.SetMetaData("origin_note", "kept")
    keys_before = {key: image.GetMetaData(key) for key in image.GetMetaDataKeys()}
    path = tmp_path / f"t2f_synthetic{extension}"
    description = "SYNTHETIC T2-FLAIR from T1, T2 (MRISynthesis)"

    io.write_image(image, path, description=description)

    assert io.image_description(path) == description
    stored = nib.load(str(path)).header["descrip"]
    assert np.asarray(stored).item().decode("ascii") == description
    assert {key: image.GetMetaData(key) for key in image.GetMetaDataKeys()} == keys_before
    assert_same_voxels(io.read_image(path), image)


def test_long_description_is_cut_to_the_nifti_field(tmp_path, make_volume):
    path = tmp_path / "a.nii.gz"
    description = "SYNTHETIC " + "x" * 120
    io.write_image(make_volume(), path, description=description)
    stored = np.asarray(nib.load(str(path)).header["descrip"]).item().decode("ascii")
    assert stored == description[:79] == io.image_description(path)


@pytest.mark.parametrize("extension", [".nii.gz", ".nrrd"])
def test_non_ascii_and_multi_line_description_fit_the_header(tmp_path, make_volume, extension):
    path = tmp_path / f"a{extension}"
    description = "SYNTHÉTIQUE T1c\nfrom T1, T2 " + "é" * 60  # 'é' takes two bytes in UTF-8
    io.write_image(make_volume(), path, description=description)
    stored = io.image_description(path)
    assert stored.startswith("SYNTHÉTIQUE T1c from T1, T2 éé")
    assert "\n" not in stored and len(stored.encode("utf-8")) <= 79
    assert set(stored[len("SYNTHÉTIQUE T1c from T1, T2 "):]) == {"é"}  # no half character at the end
    assert_same_voxels(io.read_image(path), make_volume())


@pytest.mark.parametrize("extension", [".nrrd", ".mha"])
def test_description_round_trips_in_other_formats(tmp_path, make_volume, extension):
    path = tmp_path / f"a{extension}"
    io.write_image(make_volume(), path, description="SYNTHETIC T1")
    assert io.image_description(path) == "SYNTHETIC T1"


def test_image_description_of_plain_file_is_empty(tmp_path, make_volume):
    path = tmp_path / "plain.nrrd"
    sitk.WriteImage(make_volume(), str(path))
    assert io.image_description(path) == ""


def test_write_text_is_atomic(tmp_path):
    path = tmp_path / "reports" / "summary.txt"
    io.write_text("first\n", path)
    io.write_text("second — ünïcode\n", path)
    assert path.read_text(encoding="utf-8") == "second — ünïcode\n"
    assert listing(tmp_path / "reports") == ["summary.txt"]
    assert stat.S_IMODE(path.stat().st_mode) == normal_file_mode(tmp_path)


def test_failed_write_text_keeps_previous_file(tmp_path):
    path = tmp_path / "table.csv"
    io.write_text("a,b\n1,2\n", path)
    with pytest.raises(UnicodeEncodeError):
        io.write_text("a,b\n" + "3,4\n" * 1000 + "\ud800", path)  # fails part-way through
    assert path.read_text(encoding="utf-8") == "a,b\n1,2\n"
    assert listing(tmp_path) == ["table.csv"]


# --------------------------------------------------------------------------- inputs stay untouched


def test_reading_and_aligning_never_changes_source_files(tmp_path, write_brats_case, make_volume, write_dicom_series):
    folder = write_brats_case(tmp_path, sequences=(Sequence.T1N, Sequence.T1C, Sequence.T2W))
    # A FLAIR on another grid, as a DICOM series, so that aligning must resample it.
    write_dicom_series(make_volume(spacing=(1.2, 1.2, 2.0), origin=(0.5, -0.5, 1.0), seed=9), folder / "Ax FLAIR")
    before = file_hashes(tmp_path), listing(tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}

    images = io.read_case(folder)
    aligned = io.align_inputs(images)
    io.read_case_label(folder)

    assert len(aligned.resampled) == 1 and aligned.resampled[0].startswith("T2-FLAIR")
    assert (file_hashes(tmp_path), listing(tmp_path)) == before
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == mtimes
