"""Synthetic volumes as new DICOM MR series in the patient's study (``--dicom-output``).

A radiologist reads a study in a PACS, so each synthetic volume (and, on request, each map)
becomes a classic single-frame MR Image Storage series in the study of its inputs: the study's
UID and patient/study tags, the reference series' Frame of Reference and slice geometry (viewers
link it to the acquired series), new Series/SOP Instance UIDs, Image Type DERIVED\\SECONDARY, a
Series Description beginning SYNTHETIC, a Derivation Description naming the model and the source
series, references to the source images, nothing burned into the pixels.

Pixels: the float volume mapped linearly onto unsigned 16 bits, with Rescale Slope/Intercept, so
readers (GDCM/SimpleITK, Slicer, dcm2niix) give back the floats to half a step ((max - min) / 65535
/ 2). The classic MR IOD has no Modality LUT module: dciodvfy warns (no error) that the rescale
attributes are not in the IOD. MR scanners write them in classic MR images too, and without them
the series would lose its units. The series is written into a hidden staging folder beside its
final folder and renamed into place when every file is written: a failure leaves nothing.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np
import SimpleITK as sitk

try:  # pydicom is not a dependency of the engine: without it, writing DICOM says so in one line
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.errors import InvalidDicomError
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
except ImportError:  # pragma: no cover - the test environment has pydicom
    pydicom = None

from .. import __version__
from ..core.input_checks import SYNTHETIC_MARK
from ..core.io import DIRECTION_TOLERANCE, ORIGIN_TOLERANCE_MM, SPACING_TOLERANCE_MM, WriteError
from ..sequences import SEQUENCES, Sequence, parse_sequence

#: Every Series Description written here starts with this (core.input_checks refuses such inputs).
DESCRIPTION_PREFIX = SYNTHETIC_MARK
#: Said in Image Comments and Derivation Description of every image.
NOT_FOR_DIAGNOSIS = "SYNTHETIC IMAGE computed by software, not acquired: not for diagnosis."
#: The product named in descriptions and in the General Equipment module.
SOFTWARE = "MRISynthesis"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
#: Image Type: derived from other images, not acquired; value 3 OTHER (no MR defined term fits),
#: value 4 SYNTHETIC so that software reading only Image Type still sees what the image is.
IMAGE_TYPE = ("DERIVED", "SECONDARY", "OTHER", "SYNTHETIC")
#: Purpose of Reference of each Source Image Sequence item (DICOM code 121322).
SOURCE_PURPOSE = ("121322", "DCM", "Source image for image processing operation")
#: Largest stored pixel value (Bits Stored 16, unsigned).
STORED_MAX = 65535
#: Roles (as in core.result_files.ROLES) and the words they add to the description.
ROLE_WORDS = {"synthetic": "", "stage1": " stage1", "refinement_map": " refinement map",
              "tumour_map": " tumour map", "error_map": " error map"}
#: Default series numbers: 9000 + 10 x (sequence's place, 1-4) + role's place, e.g. synthetic T1c 9020.
SERIES_NUMBER_BASE = 9000

#: Copied from the reference's first file when present: patient, patient study, clinical trial,
#: general study and frame-of-reference modules, and the patient position of the general series.
COPIED_TAGS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence", "TypeOfPatientID",
    "PatientBirthDate", "PatientBirthTime", "PatientSex", "OtherPatientIDsSequence", "PatientComments",
    "PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence", "EthnicGroup",
    "PatientAge", "PatientSize", "PatientWeight", "ClinicalTrialSponsorName", "ClinicalTrialProtocolID",
    "ClinicalTrialProtocolName", "ClinicalTrialSiteID", "ClinicalTrialSiteName", "ClinicalTrialSubjectID",
    "ClinicalTrialSubjectReadingID", "ClinicalTrialTimePointID", "ClinicalTrialTimePointDescription",
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
    "IssuerOfAccessionNumberSequence", "StudyDescription", "PhysiciansOfRecord", "ProcedureCodeSequence",
    "FrameOfReferenceUID", "PositionReferenceIndicator", "PatientPosition", "BodyPartExamined",
)
#: Type 2 attributes: present, empty when the reference has no value for them.
TYPE2_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
              "ReferringPhysicianName", "StudyID", "AccessionNumber", "PositionReferenceIndicator", "PatientPosition")

PathLike = Union[str, Path]


class DicomOutputError(WriteError):
    """A synthetic series could not be written; the message is one line naming the file or field."""


@dataclasses.dataclass
class _Slice:
    """One file's header (no pixel data) and where its plane lies (None without geometry)."""

    path: Path
    header: Dataset
    position: Optional[np.ndarray] = None  # Image Position (Patient), mm, LPS
    normal: Optional[np.ndarray] = None  # unit normal of the image plane (row x column cosines)


@dataclasses.dataclass
class _Grid:
    """The reference series' voxel grid as SimpleITK's series reader builds it from the files."""

    size: Tuple[int, int, int]
    spacing: Tuple[float, float, float]
    origin: np.ndarray
    direction: np.ndarray  # 3x3, columns are the axes


# --------------------------------------------------------------------------- reading headers


def reference_files_of(folder_or_files: Union[PathLike, Iterable[PathLike]]) -> List[Path]:
    """The DICOM files of one series: a folder's files (it must hold exactly one series) or a list.

    In a folder, files that are no DICOM image (DICOMDIR, notes) are skipped; several series are
    refused, because which one is the reference would be a guess.
    """
    if pydicom is None:
        raise DicomOutputError("writing DICOM series needs the pydicom package (pip install pydicom)")
    if not isinstance(folder_or_files, (str, Path)):
        return [Path(p) for p in folder_or_files]
    folder = Path(folder_or_files)
    if not folder.is_dir():
        return [folder]
    series: Dict[str, List[Path]] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            header = pydicom.dcmread(str(path), stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError):
            continue
        if "SeriesInstanceUID" in header and "SOPInstanceUID" in header:
            series.setdefault(str(header.SeriesInstanceUID), []).append(path)
    if len(series) != 1:
        raise DicomOutputError(f"{folder}: holds {len(series)} DICOM series, expected one")
    return next(iter(series.values()))


def _floats(values) -> List[float]:
    return [float(v) for v in values]


def _read_slices(files: Iterable[PathLike], what: str) -> List[_Slice]:
    """Headers of one series' files, sorted along the plane normal when every file has geometry."""
    slices = []
    for path in (Path(p) for p in files):
        try:
            header = pydicom.dcmread(str(path), stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError) as error:
            raise DicomOutputError(f"{path}: not a readable DICOM file ({' '.join(str(error).split())})") from None
        missing = [k for k in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID") if not header.get(k)]
        if missing:
            raise DicomOutputError(f"{path}: {what} file has no {missing[0]}")
        item = _Slice(path, header)
        if header.get("ImagePositionPatient") and header.get("ImageOrientationPatient"):
            try:
                item.position = np.array(_floats(header.ImagePositionPatient)).reshape(3)
                cosines = np.array(_floats(header.ImageOrientationPatient)).reshape(6)
            except ValueError:
                raise DicomOutputError(f"{path}: malformed ImagePositionPatient or ImageOrientationPatient") from None
            item.normal = np.cross(cosines[:3], cosines[3:])
        slices.append(item)
    if not slices:
        raise DicomOutputError(f"{what}: no DICOM files given")
    if len({str(s.header.SeriesInstanceUID) for s in slices}) > 1:
        raise DicomOutputError(f"{slices[0].path.parent}: {what} files belong to several series, expected one")
    if all(s.position is not None for s in slices):
        normal = slices[0].normal
        slices.sort(key=lambda s: float(np.dot(s.position, normal)))
    return slices


def _reference_grid(slices: List[_Slice]) -> _Grid:
    """The grid SimpleITK's series reader builds: in-plane axes from the orientation, the slice
    axis and spacing from the first and last positions along the normal."""
    first = slices[0]
    for item in slices:
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
            if not item.header.get(keyword):
                raise DicomOutputError(f"{item.path}: reference file has no {keyword}")
        if int(item.header.get("NumberOfFrames", 1) or 1) != 1:
            raise DicomOutputError(f"{item.path}: reference is a multi-frame image; expected single-frame files")
        if ((item.header.Rows, item.header.Columns) != (first.header.Rows, first.header.Columns)
                or not np.allclose(_floats(item.header.PixelSpacing), _floats(first.header.PixelSpacing),
                                   atol=SPACING_TOLERANCE_MM)
                or not np.allclose(item.normal, first.normal, atol=DIRECTION_TOLERANCE)):
            raise DicomOutputError(f"{item.path}: reference slice differs from {first.path.name} in Rows, "
                                   "Columns, PixelSpacing or ImageOrientationPatient")
    along = [float(np.dot(s.position, first.normal)) for s in slices]
    if len(slices) > 1 and min(np.diff(along)) < 1e-3:
        raise DicomOutputError(f"{first.path.parent}: two reference slices lie at one ImagePositionPatient")
    cosines = np.array(_floats(first.header.ImageOrientationPatient))
    row_spacing, column_spacing = _floats(first.header.PixelSpacing)  # DICOM order: between rows, columns
    step = slices[-1].position - first.position  # one slice: the normal, and its stated spacing
    axis = step / np.linalg.norm(step) if len(slices) > 1 else first.normal
    spacing = (float(np.linalg.norm(step)) / (len(slices) - 1) if len(slices) > 1 else
               float(first.header.get("SpacingBetweenSlices") or first.header.get("SliceThickness") or 1.0))
    size = (int(first.header.Columns), int(first.header.Rows), len(slices))
    direction = np.column_stack([cosines[:3], cosines[3:], axis])
    return _Grid(size, (column_spacing, row_spacing, spacing), first.position, direction)


def _check_on_grid(image: sitk.Image, grid: _Grid, reference: Path) -> None:
    """Refuse an image that does not lie on the reference series' grid (core.io's tolerances)."""
    def text(values: Iterable[float]) -> str:
        return "(" + ", ".join(f"{v:g}" for v in values) + ")"

    problems = []
    if tuple(image.GetSize()) != grid.size:
        problems.append(f"size {text(image.GetSize())} vs {text(grid.size)}")
    if not np.allclose(image.GetSpacing(), grid.spacing, rtol=0, atol=SPACING_TOLERANCE_MM):
        problems.append(f"spacing {text(image.GetSpacing())} vs {text(grid.spacing)}")
    if not np.allclose(image.GetOrigin(), grid.origin, rtol=0, atol=ORIGIN_TOLERANCE_MM):
        problems.append(f"origin {text(image.GetOrigin())} vs {text(grid.origin)}")
    if not np.allclose(np.reshape(image.GetDirection(), (3, 3)), grid.direction, rtol=0, atol=DIRECTION_TOLERANCE):
        problems.append("direction differs")
    if problems:
        raise DicomOutputError(f"{reference.parent}: image is not on the reference series' grid ({'; '.join(problems)})")


def ds(value: float) -> str:
    """A decimal string (DS) of at most 16 characters with as many significant digits as fit."""
    value = float(value) + 0.0  # no "-0"
    return next(text for text in (f"{value:.{digits}g}" for digits in range(16, 0, -1)) if len(text) <= 16)


def quantise(array: np.ndarray) -> Tuple[np.ndarray, float, float]:
    """``(stored uint16 voxels, slope, intercept)`` with ``value ~= stored * slope + intercept``.

    Slope and intercept are the values as written (16-character decimal strings read back), so
    the stored integers are exact for them. Integer volumes that fit 16 bits are stored as they are
    (slope 1; intercept 0 when they fit [0, 65535], so no rescale at all); others map [min, max]
    onto [0, 65535].
    """
    values = np.asarray(array, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    integers = bool(np.all(values == np.round(values))) and high - low <= STORED_MAX
    intercept = 0.0 if integers and low >= 0 and high <= STORED_MAX else float(ds(low))
    slope = 1.0 if integers or high <= low else float(ds((high - low) / STORED_MAX))
    stored = np.clip(np.rint((values - intercept) / slope), 0, STORED_MAX).astype("<u2")
    return stored, slope, intercept


def _lo(text: str, limit: int = 64) -> str:
    """A Long String (LO) value: one line, no backslash, at most ``limit`` characters."""
    return " ".join(text.replace("\\", "/").split())[:limit]


def default_series_number(sequence: Sequence, role: str) -> int:
    """9000 + 10 x (1-4 for T1, T1c, T2, FLAIR) + the role's place (0 synthetic ... 4 error map)."""
    return SERIES_NUMBER_BASE + 10 * (SEQUENCES.index(sequence) + 1) + list(ROLE_WORDS).index(role)


def series_description(sequence: Sequence, role: str, model_name: str) -> str:
    """``"SYNTHETIC T1c (MRISynthesis demo)"``, ``"SYNTHETIC T1c error map (MRISynthesis demo)"``; LO, 64 chars."""
    return _lo(f"{DESCRIPTION_PREFIX} {sequence.short_name}{ROLE_WORDS[role]} ({SOFTWARE} {model_name})")


def derivation_description(sequence: Sequence, role: str, model_name: str,
                           sources: Mapping[Sequence, List[_Slice]]) -> str:
    """What the image is, by which model and from which series (Short Text, 1024 characters)."""
    names = "; ".join(f'{seq.short_name} "{series[0].header.get("SeriesDescription") or "(no description)"}"'
                      f' (series {series[0].header.get("SeriesNumber", "?")})' for seq, series in sources.items())
    text = (f"{NOT_FOR_DIAGNOSIS} {sequence.display_name}{ROLE_WORDS[role]} computed by {SOFTWARE} "
            f"{__version__} with model {model_name} from the series {names or '(none named)'}.")
    return " ".join(text.replace("\\", "/").split())[:1024]


def _series_dataset(reference: Dataset, description: str, derivation: str, number: int, model: str) -> Dataset:
    """The attributes every image of the new series shares."""
    now = datetime.datetime.now()
    base = Dataset()
    if not all(text.isascii() for text in (description, derivation, model)):
        base.SpecificCharacterSet = "ISO_IR 192"  # our own text needs UTF-8; copied text is re-encoded
    elif "SpecificCharacterSet" in reference:
        base.SpecificCharacterSet = reference.SpecificCharacterSet
    base.SOPClassUID = MR_IMAGE_STORAGE
    for keyword in COPIED_TAGS:
        if keyword in reference:
            base[keyword] = copy.deepcopy(reference[keyword])
    for keyword in TYPE2_TAGS:
        if keyword not in base:
            setattr(base, keyword, "")
    base.Modality = "MR"
    base.SeriesInstanceUID = generate_uid(prefix=None)  # 2.25.<UUID>: needs no organisation root
    base.SeriesNumber, base.SeriesDescription = number, description
    base.SeriesDate = base.ContentDate = base.InstanceCreationDate = now.strftime("%Y%m%d")
    base.SeriesTime = base.ContentTime = base.InstanceCreationTime = now.strftime("%H%M%S")
    # General Equipment: the equipment that made these instances is this software, not the scanner.
    base.Manufacturer, base.ManufacturerModelName = SOFTWARE, _lo(model)
    base.SoftwareVersions = f"{SOFTWARE} {__version__}"
    base.ImageType = list(IMAGE_TYPE)
    base.DerivationDescription = derivation
    base.ImageComments = f"{NOT_FOR_DIAGNOSIS} {description}"
    base.BurnedInAnnotation = "NO"
    base.ImageLaterality = "U"  # unpaired (the brain); without it General Series' Laterality is required
    lossy = ("LossyImageCompression", "LossyImageCompressionRatio", "LossyImageCompressionMethod")
    for keyword in (k for k in lossy if k in reference and reference.get(lossy[0]) == "01"):
        base[keyword] = copy.deepcopy(reference[keyword])  # once lossy, always lossy (General Image module)
    # MR Image module for an image that no pulse sequence produced: RM (research mode) is the one
    # Scanning Sequence term that claims none of SE/IR/GR/EP, NONE the Sequence Variant; the timing
    # attributes are type 2 and stay empty, because no echo or repetition took place.
    base.ScanningSequence, base.SequenceVariant = "RM", "NONE"
    base.ScanOptions = base.MRAcquisitionType = base.RepetitionTime = base.EchoTime = base.EchoTrainLength = ""
    # Image Pixel module: unsigned 16-bit monochrome (the MR Image module allows 16 bits allocated only).
    base.SamplesPerPixel, base.PhotometricInterpretation = 1, "MONOCHROME2"
    base.BitsAllocated, base.BitsStored, base.HighBit, base.PixelRepresentation = 16, 16, 15, 0
    return base


def _nearest_slices(centre: np.ndarray, series: Iterable[List[_Slice]]) -> List[_Slice]:
    """Per source series, the slice whose plane passes nearest this slice's centre (every file of a
    series without per-file geometry, e.g. an enhanced multi-frame one)."""
    chosen = []
    for files in series:
        located = [s for s in files if s.position is not None]
        distances = [abs(float(np.dot(centre - s.position, s.normal))) for s in located]
        chosen.extend([located[int(np.argmin(distances))]] if located else files)
    return chosen


def _same_plane(source: _Slice, target: _Slice) -> bool:
    """True when ``source`` has ``target``'s position, orientation, matrix and pixel spacing."""
    a, b = source.header, target.header
    try:
        return (source.position is not None and np.allclose(source.position, target.position, atol=1e-3)
                and (a.get("Rows"), a.get("Columns")) == (b.Rows, b.Columns) and all(
                    np.allclose(_floats(a.get(k)), _floats(b.get(k)), atol=DIRECTION_TOLERANCE)
                    for k in ("ImageOrientationPatient", "PixelSpacing")))
    except (TypeError, ValueError):  # no or malformed pixel spacing
        return False


def _dataset(**attributes) -> Dataset:
    """A dataset (sequence item) with the given attributes, by keyword."""
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def _instance(header: Dataset) -> Dataset:
    return _dataset(ReferencedSOPClassUID=header.SOPClassUID, ReferencedSOPInstanceUID=header.SOPInstanceUID)


def _reference_sequences(chosen: List[_Slice], target: _Slice, study_uid: str) -> Dict[str, DicomSequence]:
    """Source Image Sequence, and the Common Instance Reference module that lists every instance
    referenced, by series (inputs of another study, e.g. a prior exam, under their study)."""
    sources, by_study = [], {}
    for item in chosen:
        entry = _instance(item.header)
        entry.PurposeOfReferenceCodeSequence = DicomSequence([_dataset(
            CodeValue=SOURCE_PURPOSE[0], CodingSchemeDesignator=SOURCE_PURPOSE[1], CodeMeaning=SOURCE_PURPOSE[2])])
        entry.SpatialLocationsPreserved = "YES" if _same_plane(item, target) else "NO"
        sources.append(entry)
        study = by_study.setdefault(str(item.header.get("StudyInstanceUID", "")) or study_uid, {})
        study.setdefault(str(item.header.SeriesInstanceUID), {})[str(item.header.SOPInstanceUID)] = item.header
    out = {"SourceImageSequence": DicomSequence(sources)}
    for uid, entries in by_study.items():
        series = DicomSequence([_dataset(SeriesInstanceUID=series_uid, ReferencedInstanceSequence=DicomSequence(
            [_instance(header) for header in instances.values()])) for series_uid, instances in entries.items()])
        if uid == study_uid:
            out["ReferencedSeriesSequence"] = series
        else:
            out.setdefault("StudiesContainingOtherReferencedInstancesSequence", DicomSequence()).append(
                _dataset(StudyInstanceUID=uid, ReferencedSeriesSequence=series))
    return out


def _image_dataset(base: Dataset, index: int, slice_: _Slice, pixels: np.ndarray, grid: _Grid,
                   scale: Tuple[float, float], references: Mapping[str, DicomSequence]) -> Dataset:
    """One image of the series: the shared attributes, this slice's geometry, references and pixels."""
    image = copy.deepcopy(base)
    image.SOPInstanceUID = generate_uid(prefix=None)
    image.InstanceNumber = index + 1
    # Geometry is the reference slice's own (same strings), so the series lies exactly on its grid:
    # Image Position per slice, Image Orientation (row then column cosines, LPS) and Pixel Spacing
    # (spacing between rows, then between columns).
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceLocation"):
        if keyword in slice_.header:
            image[keyword] = copy.deepcopy(slice_.header[keyword])
    image.SliceThickness = slice_.header.get("SliceThickness") or ds(grid.spacing[2])
    image.SpacingBetweenSlices = ds(grid.spacing[2])
    image.Rows, image.Columns = pixels.shape
    if scale != (1.0, 0.0):  # stored * slope + intercept = the synthetic values (see the module's notes)
        image.RescaleIntercept, image.RescaleSlope = ds(scale[1]), ds(scale[0])
    for keyword, value in references.items():
        setattr(image, keyword, value)
    image.add_new(0x7FE00010, "OW", np.ascontiguousarray(pixels, dtype="<u2").tobytes())
    image.file_meta = FileMetaDataset(_dataset(
        MediaStorageSOPClassUID=image.SOPClassUID, MediaStorageSOPInstanceUID=image.SOPInstanceUID,
        TransferSyntaxUID=ExplicitVRLittleEndian, ImplementationVersionName=f"MRISYNTH_{__version__}"[:16]))
    return image


def _save(image: Dataset, path: Path) -> None:
    """Write a Part 10 file (preamble, file meta, explicit VR little endian) with pydicom 2 or 3."""
    if int(pydicom.__version__.split(".")[0]) >= 3:
        pydicom.dcmwrite(str(path), image, enforce_file_format=True)
    else:  # pydicom 2 (Python 3.9): the encoding is set on the dataset
        image.is_little_endian, image.is_implicit_VR = True, False
        pydicom.dcmwrite(str(path), image, write_like_original=False)


# --------------------------------------------------------------------------- the series


def _voxels(image: sitk.Image, reference: Path) -> np.ndarray:
    """The image's voxels as a (slices, rows, columns) float array; 3D, scalar and finite only."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DicomOutputError(f"{reference.parent}: image to write is not a 3D volume of one value per voxel")
    voxels = sitk.GetArrayViewFromImage(image).astype(np.float64)
    if not np.all(np.isfinite(voxels)):
        raise DicomOutputError(f"{reference.parent}: image to write holds NaN or infinite voxels")
    return voxels


def write_synthetic_series(image: sitk.Image, reference_files: Union[PathLike, List[Path]],
                           sources: Mapping[Sequence, Union[PathLike, List[Path]]], output_dir: Path, *,
                           sequence: Sequence, model_name: str, role: str = "synthetic",
                           series_number: Optional[int] = None) -> Path:
    """Write ``image`` as a new MR series of the reference's study; returns the series folder.

    ``image`` lies on the grid of the series ``reference_files`` (its first file gives the
    patient, study and frame-of-reference tags); ``sources`` are the input series' files, which
    each image references (the slice nearest its plane, per series). Either may also be a folder
    that holds the one series (see :func:`reference_files_of`). The folder,
    ``<output_dir>/<series number>_SYNTHETIC_<sequence>[_<role>]`` (``-2``, ``-3`` ... when
    taken: every call makes a new series), appears complete or not at all.
    """
    if role not in ROLE_WORDS:
        raise DicomOutputError(f"role {role!r}: expected one of {', '.join(ROLE_WORDS)}")
    sequence = parse_sequence(sequence)
    reference_files = reference_files_of(reference_files)
    reference = _read_slices(reference_files, "reference")
    first = next(s for s in reference if s.path == reference_files[0])
    source_series = {seq: _read_slices(reference_files_of(files), f"{seq.short_name} source")
                     for seq, files in sources.items()}
    voxels = _voxels(image, reference_files[0])
    grid = _reference_grid(reference)
    _check_on_grid(image, grid, reference_files[0])
    stored, slope, intercept = quantise(voxels)
    referenced = list(source_series.values())
    if all(s[0].header.SeriesInstanceUID != first.header.SeriesInstanceUID for s in referenced):
        referenced.append(reference)  # the grid's series is a source of the image too (resampled onto it)
    number = default_series_number(sequence, role) if series_number is None else int(series_number)
    description = series_description(sequence, role, model_name)
    derivation = derivation_description(sequence, role, model_name, source_series)
    base = _series_dataset(first.header, description, derivation, number, model_name)
    low, high = (intercept + slope * float(v) for v in (stored.min(), stored.max()))
    # Window in output values (after rescale); its width must be at least 1 (PS3.3 C.11.2.1.2).
    base.WindowCenter, base.WindowWidth = ds((low + high) / 2), ds(max(high - low, 1.0))
    # From a slice's first voxel to its centre: the point whose nearest source slices it references.
    to_centre = grid.direction[:, :2] @ ((np.array(grid.size[:2]) - 1) / 2 * np.array(grid.spacing[:2]))

    def write(staging: Path) -> None:
        for index, slice_ in enumerate(reference):
            chosen = _nearest_slices(slice_.position + to_centre, referenced)
            references = _reference_sequences(chosen, slice_, str(base.StudyInstanceUID))
            dataset = _image_dataset(base, index, slice_, stored[index], grid, (slope, intercept), references)
            _save(dataset, staging / f"IM{index + 1:05d}.dcm")

    name = f"{number}_{DESCRIPTION_PREFIX}_{sequence.short_name}" + (f"_{role}" if role != "synthetic" else "")
    return _write_atomically(Path(output_dir), name, write)


def _write_atomically(output_dir: Path, name: str, write: Callable[[Path], None]) -> Path:
    """Run ``write(staging folder)``, then rename that folder to ``name`` (``name-2`` ... when taken) in
    ``output_dir``. On any failure the staging folder goes, and ``output_dir`` too when this call made it."""
    created, staging, done = not output_dir.exists(), None, False
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        # os.mkdir, not mkdtemp: the folder gets the usual permissions (umask), as the series will have.
        staging = output_dir / f".{name}.{uuid.uuid4().hex[:12]}.part"
        os.mkdir(staging)
        write(staging)
        final, count = output_dir / name, 1
        while final.exists():
            count += 1
            final = output_dir / f"{name}-{count}"
        os.rename(staging, final)
        done = True
        return final
    except (OSError, ValueError) as error:  # ValueError: pydicom refused a value copied from the inputs
        reason = " ".join((getattr(error, "strerror", None) or str(error)).split())
        raise DicomOutputError(f"{output_dir / name}: cannot write DICOM series ({reason})") from error
    finally:
        if not done:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            if created:
                with contextlib.suppress(OSError):
                    output_dir.rmdir()  # only when empty

