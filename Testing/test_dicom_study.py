"""DICOM studies in: series found from headers, recognised as T1, T1c, T2, FLAIR (or ignored, with the
reason), chosen by the user when ambiguous, and read onto the right grid, classic and multi-frame.

Every study here is written with pydicom (real files with preamble and file meta) and read back by
the code under test; nothing is mocked.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Dict, Optional, Sequence as Seq

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402

from MRISynthesisLib.clinical.dicom_study import StudyError, read_series, scan_study  # noqa: E402
from MRISynthesisLib.clinical.series_recognition import recognise  # noqa: E402
from MRISynthesisLib.clinical.study_inputs import choose_series, study_inputs  # noqa: E402
from MRISynthesisLib.core.input_checks import InputError  # noqa: E402
from MRISynthesisLib.sequences import Sequence  # noqa: E402

MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"

#: Typical acquisition tags (classic MR Image keywords) of each contrast.
MPRAGE = dict(ScanningSequence="GR\\IR", SequenceVariant="SK\\SP\\MP", MRAcquisitionType="3D",
              RepetitionTime=2300, EchoTime=2.98, InversionTime=900, FlipAngle=9)
T2_TSE = dict(ScanningSequence="SE", SequenceVariant="SK\\SP\\OSP", MRAcquisitionType="2D",
              RepetitionTime=4000, EchoTime=100, FlipAngle=150)
FLAIR_2D = dict(ScanningSequence="SE\\IR", SequenceVariant="SK\\SP\\MP", MRAcquisitionType="2D",
                RepetitionTime=9000, EchoTime=120, InversionTime=2500, FlipAngle=150)
GADOVIST = dict(ContrastBolusAgent="Gadovist")

#: Oblique geometry: rotated 20 degrees about x and 10 about z, uneven spacing, off-centre origin.
OBLIQUE = dict(direction=Rotation.from_euler("xz", [20, 10], degrees=True).as_matrix(),
               spacing=(0.9, 1.1, 2.5), origin=(-40.5, 12.25, 30.0))
AXIAL = dict(direction=np.eye(3), spacing=(1.0, 1.0, 3.0), origin=(0.0, 0.0, 0.0))


def new_uid() -> str:
    return f"2.25.{uuid.uuid4().int}"


def decimal(values) -> list:
    """DICOM decimal strings fit 16 characters; 10 significant digits do."""
    return [f"{float(v):.10g}" for v in values]


def voxels(shape=(8, 10, 12), seed: int = 0) -> np.ndarray:
    """(slices, rows, columns) of MR-like positive 12-bit values."""
    return np.random.default_rng(seed).integers(1, 4000, size=shape).astype(np.uint16)


def _base(sop_class: str, modality: str, series_uid: str, study_uid: str, number: Optional[int],
          description: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName, ds.PatientID = "Test^Study", "TEST0001"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    if number is not None:
        ds.SeriesNumber = number
    if description:
        ds.SeriesDescription = description
    return ds


def _pixels(ds: Dataset, array: np.ndarray) -> None:
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = array.shape[-2], array.shape[-1]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.ascontiguousarray(array, dtype="<u2").tobytes()


def slice_positions(geometry: dict, count: int) -> np.ndarray:
    direction, spacing = np.asarray(geometry["direction"]), geometry["spacing"]
    return np.asarray(geometry["origin"]) + np.outer(np.arange(count) * spacing[2], direction[:, 2])


def write_classic(folder: Path, number: Optional[int], description: str = "", tags: Optional[dict] = None,
                  array: Optional[np.ndarray] = None, geometry: Optional[dict] = None, modality: str = "MR",
                  sop_class: str = MR_IMAGE, image_type: Seq[str] = ("ORIGINAL", "PRIMARY", "M", "NONE"),
                  study_uid: str = "", series_uid: str = "", skip: Seq[int] = (),
                  orientations: Optional[list] = None) -> str:
    """A classic single-frame series, one file per slice, files named in shuffled order; returns its UID.

    ``geometry`` gives direction (3x3, columns = row, column, normal), spacing (column, row, slice)
    and origin; ``skip`` leaves slices out (a gap); ``orientations`` gives each file its own plane.
    """
    folder.mkdir(parents=True, exist_ok=True)
    array = voxels() if array is None else array
    geometry = geometry or AXIAL
    direction, spacing = np.asarray(geometry["direction"]), geometry["spacing"]
    series_uid = series_uid or new_uid()
    positions = slice_positions(geometry, len(array))
    order = np.random.default_rng(len(array) + (number or 0)).permutation(len(array))
    for index in range(len(array)):
        if index in skip:
            continue
        ds = _base(sop_class, modality, series_uid, study_uid or new_uid(), number, description)
        ds.ImageType = list(image_type)
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = decimal(positions[index])
        plane = orientations[index] if orientations else [*direction[:, 0], *direction[:, 1]]
        ds.ImageOrientationPatient = decimal(plane)
        ds.PixelSpacing = decimal((spacing[1], spacing[0]))
        ds.SliceThickness = f"{spacing[2]:g}"
        for keyword, value in (tags or {}).items():
            setattr(ds, keyword, value)
        _pixels(ds, array[index])
        ds.save_as(folder / f"IM{series_uid[-5:]}{order[index]:04d}", enforce_file_format=True)
    return series_uid


def write_enhanced(path: Path, number: int, description: str = "", array: Optional[np.ndarray] = None,
                   geometry: Optional[dict] = None, shared: Optional[Dict[str, dict]] = None,
                   top: Optional[dict] = None, frame_order: Optional[Seq[int]] = None,
                   rescale: Optional[tuple] = None, skip: Seq[int] = ()) -> str:
    """One Enhanced MR Image file: frames (in ``frame_order``) with per-frame plane positions and shared
    orientation and pixel measures; ``shared`` adds functional group macros ({macro keyword: {tag: value}})."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = voxels() if array is None else array
    geometry = geometry or AXIAL
    direction, spacing = np.asarray(geometry["direction"]), geometry["spacing"]
    positions = slice_positions(geometry, len(array))
    order = [i for i in (range(len(array)) if frame_order is None else frame_order) if i not in skip]
    ds = _base(ENHANCED_MR, "MR", new_uid(), new_uid(), number, description)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.NumberOfFrames = len(order)
    ds.InstanceNumber = 1
    for keyword, value in (top or {}).items():
        setattr(ds, keyword, value)
    group = Dataset()
    measures, plane = Dataset(), Dataset()
    measures.PixelSpacing = decimal((spacing[1], spacing[0]))
    measures.SliceThickness = f"{spacing[2]:g}"
    plane.ImageOrientationPatient = decimal([*direction[:, 0], *direction[:, 1]])
    group.PixelMeasuresSequence, group.PlaneOrientationSequence = [measures], [plane]
    if rescale is not None:
        transform = Dataset()
        transform.RescaleSlope, transform.RescaleIntercept = f"{rescale[0]:g}", f"{rescale[1]:g}"
        transform.RescaleType = "US"
        group.PixelValueTransformationSequence = [transform]
    for macro, values in (shared or {}).items():
        item = Dataset()
        for keyword, value in values.items():
            setattr(item, keyword, value)
        setattr(group, macro, [item])
    ds.SharedFunctionalGroupsSequence = [group]
    frames = []
    for index in order:
        frame, position, content = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = decimal(positions[index])
        content.InStackPositionNumber = index + 1
        frame.PlanePositionSequence, frame.FrameContentSequence = [position], [content]
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = frames
    _pixels(ds, array[order])
    ds.save_as(path, enforce_file_format=True)
    return ds.SeriesInstanceUID


def write_ct(folder: Path, number: int) -> None:
    write_classic(folder, number, "HEAD CT", modality="CT", sop_class=CT_IMAGE, array=voxels((4, 10, 12)))


def write_sr(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = _base(BASIC_TEXT_SR, "SR", new_uid(), new_uid(), 99, "Report")
    ds.save_as(path, enforce_file_format=True)


def labels_by_sequence(recognition) -> Dict[Sequence, str]:
    return {sequence: series.description for sequence, series in recognition.chosen.items()}


# --------------------------------------------------------------------------- recognition


def test_tags_alone_recognise_mprage_t1c_by_agent_t2_and_flair(tmp_path):
    write_classic(tmp_path / "a", 2, "SERIES 2", MPRAGE)
    write_classic(tmp_path / "a", 3, "SERIES 3", {**MPRAGE, **GADOVIST})
    write_classic(tmp_path / "b", 4, "SERIES 4", T2_TSE)
    write_classic(tmp_path / "b", 5, "SERIES 5", FLAIR_2D)
    found = recognise(scan_study(tmp_path).series)
    assert labels_by_sequence(found) == {Sequence.T1N: "SERIES 2", Sequence.T1C: "SERIES 3",
                                         Sequence.T2W: "SERIES 4", Sequence.T2F: "SERIES 5"}
    assert found.ignored == [] and found.ambiguous == {} and found.unrecognised == []
    assert found.reasons[Sequence.T1N] == "InversionTime 900 ms; RepetitionTime 2300 ms (3D inversion-prepared T1)"
    assert "ContrastBolusAgent 'Gadovist'" in found.reasons[Sequence.T1C]
    assert found.reasons[Sequence.T2W] == ("ScanningSequence SE; RepetitionTime 4000 ms; EchoTime 100 ms "
                                           "(long TR and TE: T2)")
    assert found.reasons[Sequence.T2F] == ("InversionTime 2500 ms; RepetitionTime 9000 ms "
                                           "(fluid-nulling inversion: FLAIR)")


def test_descriptions_name_the_sequences_without_tags(tmp_path):
    for number, description in enumerate(["t1_mprage_sag", "T1 MPRAGE POST GD", "AX T2 TSE", "Ax T2 FLAIR"], 1):
        write_classic(tmp_path, number, description)
    found = recognise(scan_study(tmp_path).series)
    assert labels_by_sequence(found) == {Sequence.T1N: "t1_mprage_sag", Sequence.T1C: "T1 MPRAGE POST GD",
                                         Sequence.T2W: "AX T2 TSE", Sequence.T2F: "Ax T2 FLAIR"}
    assert found.reasons[Sequence.T2F] == "SeriesDescription 'Ax T2 FLAIR'"


def test_a_description_and_the_tags_that_agree_are_both_reported(tmp_path):
    write_classic(tmp_path, 5, "AX T2 FLAIR", FLAIR_2D)
    write_classic(tmp_path, 6, "T1 MPRAGE", {**MPRAGE, **GADOVIST})
    write_classic(tmp_path, 7, "t2_tse_tra", {**FLAIR_2D})
    found = recognise(scan_study(tmp_path).series)
    assert found.reasons[Sequence.T2F] == ("SeriesDescription 'AX T2 FLAIR'; InversionTime 2500 ms; "
                                           "RepetitionTime 9000 ms (fluid-nulling inversion: FLAIR)")
    # A T1 name plus the agent is T1c: scanners keep the agent on every series after the injection.
    assert found.chosen[Sequence.T1C].number == 6
    assert found.reasons[Sequence.T1C].startswith("SeriesDescription 'T1 MPRAGE'; ContrastBolusAgent 'Gadovist'")
    # The description wins over disagreeing tags, and says so.
    assert found.chosen[Sequence.T2W].number == 7
    assert "the tags suggest FLAIR" in found.reasons[Sequence.T2W]


def test_a_t1_named_pre_contrast_stays_native_despite_the_agent(tmp_path):
    write_classic(tmp_path, 2, "T1 SE pre contrast", {**GADOVIST, "ScanningSequence": "SE",
                                                      "RepetitionTime": 500, "EchoTime": 12})
    found = recognise(scan_study(tmp_path).series)
    assert list(found.chosen) == [Sequence.T1N]
    assert "the description says pre-contrast" in found.reasons[Sequence.T1N]


def test_localizers_derived_synthetic_other_contrasts_and_ct_are_ignored_with_reasons(tmp_path):
    write_classic(tmp_path / "loc", 1, "AAHead", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
                  array=voxels((3, 10, 12)))
    write_classic(tmp_path / "loc2", 2, "3-plane loc", T2_TSE)
    write_classic(tmp_path / "t1", 3, "SERIES 3", MPRAGE)
    write_classic(tmp_path / "mpr", 4, "t1_mprage_cor MPR", MPRAGE, image_type=("DERIVED", "SECONDARY", "MPR"))
    write_classic(tmp_path / "syn", 5, "SYNTHETIC FLAIR (MRISynthesis)", FLAIR_2D)
    write_classic(tmp_path / "dwi", 6, "ep2d_diff_3scan_trace", T2_TSE)
    write_classic(tmp_path / "planes", 7, "SERIES 7", T2_TSE, array=voxels((3, 10, 12)),
                  orientations=[[1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, -1], [0, 1, 0, 0, 0, -1]])
    write_ct(tmp_path / "ct", 8)
    found = recognise(scan_study(tmp_path).series)
    assert labels_by_sequence(found) == {Sequence.T1N: "SERIES 3"}
    reasons = {series.number: reason for series, reason in found.ignored}
    assert reasons == {
        1: "ImageType LOCALIZER",
        2: "SeriesDescription '3-plane loc' names a localizer",
        4: "ImageType DERIVED\\SECONDARY\\MPR (computed from other images, not acquired)",
        5: "SeriesDescription 'SYNTHETIC FLAIR (MRISynthesis)' says SYNTHETIC (made by a synthesis, not acquired)",
        6: "SeriesDescription 'ep2d_diff_3scan_trace' names diffusion, not T1, T1c, T2 or FLAIR",
        7: "its images lie in 3 orientations (a localizer or a composite), not one volume",
        8: "modality CT, not MR",
    }


def test_non_dicom_files_in_the_tree_are_skipped_and_counted(tmp_path):
    write_classic(tmp_path / "DICOM" / "S1", 5, "SERIES 5", FLAIR_2D)
    (tmp_path / "README.TXT").write_text("Viewer CD\n")
    (tmp_path / "DICOM" / "S1" / "Thumbs.db").write_bytes(b"\x00" * 300)
    (tmp_path / "autorun.inf").write_bytes(b"\x08\x00 not really DICOM")
    write_sr(tmp_path / "SR" / "report.dcm")
    study = scan_study(tmp_path)
    assert study.non_dicom == 3 and study.unreadable == []
    assert [s.kind for s in study.series] == ["MR", "SR"]
    assert labels_by_sequence(recognise(study.series)) == {Sequence.T2F: "SERIES 5"}


def test_the_series_description_and_label(tmp_path):
    uid = write_classic(tmp_path, 3, "AX T2 FLAIR", FLAIR_2D, array=voxels((24, 10, 12)))
    (series,) = scan_study(tmp_path).series
    assert series.uid == uid and series.number == 3 and series.modality == "MR"
    assert series.label() == "#3 'AX T2 FLAIR' (24 images)"
    assert series.frames == 24 and not series.is_multiframe and len(series.files) == 24
    assert series.tags.inversion_time == 2500 and series.tags.scanning_sequence == ("SE", "IR")
    # Files are in slice order along the normal, whatever their names.
    positions = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in series.files]
    assert positions == sorted(positions)


# --------------------------------------------------------------------------- the study as inputs


def _two_flairs(root: Path) -> tuple:
    write_classic(root / "t1", 2, "t1_mprage_sag", MPRAGE)
    first = write_classic(root / "f1", 5, "AX T2 FLAIR", FLAIR_2D, array=voxels((24, 10, 12), 1))
    second = write_classic(root / "f2", 7, "AX FLAIR 2", FLAIR_2D, array=voxels((30, 10, 12), 2))
    return first, second


def test_two_flair_candidates_are_an_ambiguity_that_lists_both(tmp_path):
    _two_flairs(tmp_path)
    with pytest.raises(StudyError) as caught:
        study_inputs(tmp_path)
    message = str(caught.value)
    assert message == (f"{tmp_path}: 2 series look like FLAIR: #5 'AX T2 FLAIR' (24 images), #7 'AX FLAIR 2' "
                       "(30 images); choose one with --input t2f=5 (series number) or "
                       "--input t2f=<SeriesInstanceUID>")
    assert "\n" not in message and isinstance(caught.value, InputError)


def test_overrides_resolve_the_ambiguity_by_series_number_and_by_uid(tmp_path):
    first, second = _two_flairs(tmp_path)
    by_number = study_inputs(tmp_path, {"t2f": "7"})
    assert by_number.series[Sequence.T2F].uid == second
    assert by_number.images[Sequence.T2F].GetSize() == (12, 10, 30)
    assert by_number.series[Sequence.T1N].description == "t1_mprage_sag"
    assert "T2-FLAIR (t2f): #7 'AX FLAIR 2' (30 images): chosen with --input t2f=7" in by_number.messages
    assert ("ignored #5 'AX T2 FLAIR' (24 images): also looks like FLAIR (SeriesDescription 'AX T2 FLAIR'; "
            "InversionTime 2500 ms; RepetitionTime 9000 ms (fluid-nulling inversion: FLAIR)); "
            "--input t2f=7 chose #7 'AX FLAIR 2' (30 images)") in by_number.messages
    by_uid = study_inputs(tmp_path, {"FLAIR": first})
    assert by_uid.series[Sequence.T2F].number == 5
    assert sitk.GetArrayFromImage(by_uid.images[Sequence.T2F]).tolist() == voxels((24, 10, 12), 1).tolist()


def test_an_override_can_move_a_series_and_take_an_ignored_one(tmp_path):
    write_classic(tmp_path / "a", 4, "SERIES 4", T2_TSE)
    write_classic(tmp_path / "b", 6, "t2_tse_tra MPR", T2_TSE, image_type=("DERIVED", "PRIMARY", "MPR"))
    found = choose_series(scan_study(tmp_path), {"t2w": "6", "t1n": "4"})
    assert found.chosen[Sequence.T2W].number == 6 and found.chosen[Sequence.T1N].number == 4
    assert found.reasons[Sequence.T2W].startswith("chosen with --input t2w=6 (it would have been ignored: ImageType")
    assert found.reasons[Sequence.T1N] == "chosen with --input t1n=4 (it looked like T2)"
    assert found.ignored == []


@pytest.mark.parametrize("overrides, expected", [
    ({"t2f": "9"}, "--input t2f=9 names no series (no SeriesNumber or SeriesInstanceUID 9); its MR series: "
                   "#2 't1_mprage_sag' (8 images), #5 'AX T2 FLAIR' (24 images), #7 'AX FLAIR 2' (30 images)"),
    ({"t2f": "1.2.3"}, "--input t2f=1.2.3 names no series"),
    ({"dwi": "5"}, "--input dwi=5: unknown sequence name 'dwi'"),
    ({"t2f": "5", "t2w": "5"}, "given for both T2-FLAIR and T2"),
])
def test_an_override_naming_no_series_is_one_line(tmp_path, overrides, expected):
    _two_flairs(tmp_path)
    with pytest.raises(StudyError) as caught:
        study_inputs(tmp_path, overrides)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_a_folder_without_mr_series_or_without_dicom_is_one_line(tmp_path):
    write_ct(tmp_path / "ct1", 1)
    write_ct(tmp_path / "ct2", 2)
    write_sr(tmp_path / "sr" / "report")
    with pytest.raises(StudyError) as caught:
        study_inputs(tmp_path)
    assert str(caught.value) == f"{tmp_path}: no MR image series (found: CT x2, SR)"
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "notes.txt").write_text("nothing")
    with pytest.raises(StudyError) as caught:
        study_inputs(empty)
    assert str(caught.value) == f"{empty}: no DICOM files found"


def test_study_inputs_reads_the_chosen_series_and_says_what_it_did(tmp_path):
    write_classic(tmp_path / "1", 1, "localizer", T2_TSE, array=voxels((3, 10, 12)))
    write_classic(tmp_path / "2", 2, "SERIES 2", MPRAGE, geometry=OBLIQUE)
    write_enhanced(tmp_path / "3" / "enhanced.dcm", 3, "SERIES 3", top=dict(
        EchoPulseSequence="SPIN", InversionRecovery="YES", MRAcquisitionType="2D"), shared={
        "MRTimingAndRelatedParametersSequence": dict(RepetitionTime=9000, FlipAngle=150),
        "MREchoSequence": dict(EffectiveEchoTime=120), "MRModifierSequence": dict(InversionTimes=[2500])})
    write_classic(tmp_path / "9", 9, "SERIES 9", dict(ScanningSequence="GR", RepetitionTime=30, EchoTime=20))
    (tmp_path / "DICOMDIR.txt").write_text("index")
    inputs = study_inputs(tmp_path)
    assert sorted(inputs.images) == [Sequence.T1N, Sequence.T2F]
    assert inputs.series[Sequence.T2F].is_multiframe and inputs.series[Sequence.T2F].frames == 8
    assert inputs.images[Sequence.T2F].GetSize() == (12, 10, 8)
    assert np.allclose(inputs.images[Sequence.T1N].GetDirection(), OBLIQUE["direction"].ravel(), atol=1e-6)
    assert inputs.messages == [
        "T1 (t1n): #2 'SERIES 2' (8 images): InversionTime 900 ms; RepetitionTime 2300 ms "
        "(3D inversion-prepared T1)",
        "T2-FLAIR (t2f): #3 'SERIES 3' (8 images): InversionTime 2500 ms; RepetitionTime 9000 ms "
        "(fluid-nulling inversion: FLAIR)",
        "ignored #1 'localizer' (3 images): SeriesDescription 'localizer' names a localizer",
        "not recognised #9 'SERIES 9' (8 images): ScanningSequence GR; RepetitionTime 30 ms; EchoTime 20 ms; "
        "give it with --input SEQ=9 if it is T1, T1c, T2 or FLAIR",
        "skipped 1 file(s) that are not DICOM images (or belong to no series)",
    ]
    assert inputs.images[Sequence.T2F].GetMetaData("0008|103e") == "SERIES 3"


def test_a_siemens_series_without_distortion_correction_gives_way_to_the_corrected_one(tmp_path):
    write_classic(tmp_path / "a", 2, "t1_mprage_sag", MPRAGE, image_type=("ORIGINAL", "PRIMARY", "M", "ND"))
    write_classic(tmp_path / "b", 3, "t1_mprage_sag", MPRAGE, image_type=("ORIGINAL", "PRIMARY", "M", "DIS3D"))
    found = recognise(scan_study(tmp_path).series)
    assert found.chosen[Sequence.T1N].number == 3 and not found.ambiguous
    assert [(s.number, r.split(";")[0]) for s, r in found.ignored] == [(2, "ImageType ND (not distortion-corrected)")]


# --------------------------------------------------------------------------- reading volumes


@pytest.mark.parametrize("geometry", [OBLIQUE, AXIAL], ids=["oblique", "axial"])
def test_a_multiframe_series_reads_onto_the_grid_and_voxels_of_the_classic_one(tmp_path, geometry):
    array = voxels((9, 10, 12), seed=4)
    write_classic(tmp_path / "classic", 1, "SERIES 1", T2_TSE, array=array, geometry=geometry)
    shuffled = [int(i) for i in np.random.default_rng(1).permutation(9)]
    write_enhanced(tmp_path / "enhanced" / "IM1", 2, "SERIES 2", array=array, geometry=geometry,
                   frame_order=shuffled)
    classic, enhanced = (read_series(s) for s in scan_study(tmp_path).series)
    assert enhanced.GetSize() == classic.GetSize() == (12, 10, 9)
    for getter in ("GetOrigin", "GetSpacing", "GetDirection"):
        assert np.allclose(getattr(enhanced, getter)(), getattr(classic, getter)(), rtol=0, atol=1e-4), getter
    assert np.allclose(classic.GetOrigin(), geometry["origin"], atol=1e-4)
    assert np.allclose(classic.GetSpacing(), geometry["spacing"], atol=1e-4)
    assert np.array_equal(sitk.GetArrayFromImage(enhanced), sitk.GetArrayFromImage(classic))
    assert np.array_equal(sitk.GetArrayFromImage(enhanced), array)


def test_a_multiframe_rescale_is_applied_per_frame(tmp_path):
    array = voxels((6, 10, 12), seed=5)
    write_enhanced(tmp_path / "IM1", 2, "SERIES 2", array=array, rescale=(0.5, 10.0))
    image = read_series(scan_study(tmp_path).series[0])
    assert image.GetPixelID() == sitk.sitkFloat32
    assert np.allclose(sitk.GetArrayFromImage(image), array * 0.5 + 10.0)


def test_missing_slices_and_frames_are_refused_in_one_line(tmp_path):
    write_classic(tmp_path / "classic", 4, "AX T2", T2_TSE, skip=(3,))
    write_enhanced(tmp_path / "enhanced" / "IM1", 5, "AX FLAIR", skip=(5,))
    classic, enhanced = scan_study(tmp_path).series
    with pytest.raises(InputError, match=r"series #4 'AX T2' \(7 images\): DICOM slices are missing or unevenly"):
        read_series(classic)
    with pytest.raises(InputError, match=r"series #5 'AX FLAIR' \(7 images\): frames are repeated, missing or "):
        read_series(enhanced)


def test_a_study_where_no_series_looks_like_an_input_is_one_line(tmp_path):
    write_classic(tmp_path / "1", 1, "AX T2* GRE", dict(ScanningSequence="GR", RepetitionTime=600, EchoTime=20))
    write_classic(tmp_path / "2", 2, "SERIES 2", dict(ScanningSequence="GR", RepetitionTime=30, EchoTime=20))
    with pytest.raises(StudyError) as caught:
        study_inputs(tmp_path)
    assert str(caught.value) == (f"{tmp_path}: none of its 2 MR image series looks like T1, T1c, T2 or FLAIR "
                                 "(#1 'AX T2* GRE' (8 images), #2 'SERIES 2' (8 images)); give them with "
                                 "--input SEQ=<series number>")
    assert study_inputs(tmp_path, {"t1n": "2"}).series[Sequence.T1N].number == 2


def test_an_enhanced_t1_after_contrast_is_recognised_from_its_functional_groups(tmp_path):
    agent = Dataset()
    agent.CodeValue, agent.CodingSchemeDesignator, agent.CodeMeaning = "C-B0313", "SRT", "Gadobutrol"
    write_enhanced(tmp_path / "IM1", 8, "SERIES 8", top=dict(
        EchoPulseSequence="GRADIENT", InversionRecovery="YES", MRAcquisitionType="3D",
        ContrastBolusAgentSequence=[agent]), shared={
        "MRTimingAndRelatedParametersSequence": dict(RepetitionTime=2300, FlipAngle=9),
        "MREchoSequence": dict(EffectiveEchoTime=2.98), "MRModifierSequence": dict(InversionTimes=[900])})
    (series,) = scan_study(tmp_path).series
    assert series.tags.scanning_sequence == ("GR", "IR") and series.tags.echo_time == 2.98
    found = recognise([series])
    assert list(found.chosen) == [Sequence.T1C]
    assert found.reasons[Sequence.T1C] == ("InversionTime 900 ms; RepetitionTime 2300 ms (3D inversion-prepared T1); "
                                           "ContrastBolusAgent 'Gadobutrol'")


@pytest.mark.slow
def test_every_series_of_a_clinical_phantom_study_is_recognised(tmp_path):
    """The phantom's DICOM study (classic MR series, oblique 2D stacks, a 3-plane localizer) as a PACS gives it."""
    try:
        from MRISynthesisLib.phantom import generate_clinical_study, write_clinical_study
    except ImportError:
        pytest.skip("the clinical phantom (MRISynthesisLib.phantom.write_clinical_study) is not available")
    study = generate_clinical_study(3, small=True)
    folder = write_clinical_study(study, tmp_path, dicom=True) / "dicom"
    inputs = study_inputs(folder)
    truth = {series.sequence: series for series in study.series}
    assert {seq: s.number for seq, s in inputs.series.items()} == {seq: s.series_number for seq, s in truth.items()}
    assert {seq: s.description for seq, s in inputs.series.items()} == {
        seq: s.plan.description for seq, s in truth.items()}
    ignored = inputs.recognition.ignored
    assert ignored and all(s.description == "3-PLANE LOC" and r == "ImageType LOCALIZER" for s, r in ignored)
    assert not inputs.recognition.unrecognised
    assert "ContrastBolusAgent 'GADOBUTROL'" in inputs.recognition.reasons[Sequence.T1C]
    for sequence, image in inputs.images.items():
        expected = truth[sequence].image
        assert image.GetSize() == expected.GetSize()
        for getter in ("GetOrigin", "GetSpacing", "GetDirection"):
            assert np.allclose(getattr(image, getter)(), getattr(expected, getter)(), rtol=0, atol=1e-4), getter
        assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(expected))
