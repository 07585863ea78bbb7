"""DICOM studies: find the series in a folder tree from their headers, describe them, read one as a volume.

A study exported from a PACS or a CD is a folder tree of files with any names (often none with an
extension), several series mixed in one folder, DICOMDIR and viewer files beside them. The series
are found by reading headers only (no pixel data) and grouping by SeriesInstanceUID; files that are
not DICOM are skipped and counted. Each :class:`DicomSeries` keeps what recognising its sequence
needs (:mod:`series_recognition`) and what reading it needs (:func:`read_series`).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import stat
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from ..core.file_checks import check_size, check_slice_spacing
from ..core.input_checks import InputError
from ..core.io import SERIES_TAGS_KEPT
from .enhanced_mr import ORIENTATION_TOLERANCE, frame_count, frame_orientations, group_value, read_enhanced

__all__ = [
    "StudyError", "AcquisitionTags", "SliceHeader", "DicomSeries", "DicomStudy", "scan_study", "read_series",
    "MR_IMAGE_STORAGE", "MULTIFRAME_MR_STORAGE",
]

#: SOP Class UID of a classic single-frame MR image.
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
#: SOP Class UIDs of multi-frame MR images with functional groups: Enhanced MR, Legacy Converted Enhanced MR.
MULTIFRAME_MR_STORAGE = ("1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.4.4")
#: ContrastBolusAgent values that mean "no agent" (operators type these into the field).
_NO_AGENT = frozenset({"", "NONE", "NO", "N/A", "NA", "-", "0", "NIL"})
#: Enhanced MR EchoPulseSequence values as ScanningSequence words.
_ECHO_PULSE = {"SPIN": ("SE",), "GRADIENT": ("GR",), "BOTH": ("SE", "GR")}


class StudyError(InputError):
    """A DICOM study that cannot give the inputs: the one-line message names the folder and the series."""


@dataclasses.dataclass(frozen=True)
class AcquisitionTags:
    """The acquisition parameters that say which contrast a series has (times in ms; ``None`` = not stated).

    Enhanced MR files state no ScanningSequence; it is rebuilt from EchoPulseSequence (SPIN -> SE,
    GRADIENT -> GR), InversionRecovery (YES -> IR) and EchoPlanarPulseSequence (YES -> EP).
    """

    scanning_sequence: Tuple[str, ...] = ()
    sequence_variant: Tuple[str, ...] = ()
    sequence_name: str = ""
    acquisition_type: str = ""
    repetition_time: Optional[float] = None
    echo_time: Optional[float] = None
    inversion_time: Optional[float] = None
    flip_angle: Optional[float] = None
    contrast_agent: str = ""
    diffusion_b_value: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class SliceHeader:
    """Where one file's image lies (classic files) and how to order it; ``None`` = not stated."""

    path: Path
    position: Optional[Tuple[float, float, float]]
    orientation: Optional[Tuple[float, ...]]
    instance: Optional[int]
    matrix: Tuple[int, int]


@dataclasses.dataclass
class DicomSeries:
    """One series of a study, described from its headers (no voxel read).

    ``files`` are sorted along the slice normal for a classic series (by name for multi-frame
    files); ``frames`` counts images (all frames of all files); ``orientations`` counts the distinct
    image planes among them (a 3-plane localizer has 3).
    """

    uid: str
    number: Optional[int]
    description: str
    protocol: str
    modality: str
    sop_class: str
    image_type: Tuple[str, ...]
    files: Tuple[Path, ...]
    frames: int
    is_multiframe: bool
    tags: AcquisitionTags
    orientations: int
    folder: Path
    slices: Tuple[SliceHeader, ...] = ()

    @property
    def is_mr_image(self) -> bool:
        """True for MR image storage (classic, Enhanced or Legacy Converted Enhanced), the readable kinds."""
        return self.sop_class == MR_IMAGE_STORAGE or self.sop_class in MULTIFRAME_MR_STORAGE

    @property
    def kind(self) -> str:
        """What the series is, in a word or two: its modality, or its SOP class for a non-image MR series."""
        if self.modality == "MR" and not self.is_mr_image:
            return f"MR ({_sop_name(self.sop_class)})"
        return self.modality or "no modality"

    def label(self) -> str:
        """Short name for messages: ``#3 'AX T2 FLAIR' (24 images)``."""
        number = f"#{self.number}" if self.number is not None else f"series {self.uid}"
        name = self.description or self.protocol or "no description"
        return f"{number} '{name}' ({self.frames} image{'s' if self.frames != 1 else ''})"


@dataclasses.dataclass
class DicomStudy:
    """Every series found under ``folder``, by SeriesNumber, and what was skipped.

    ``non_dicom`` counts files that are not DICOM or belong to no series (DICOMDIR, viewer
    programs, notes); ``unreadable`` lists DICOM files whose header could not be parsed;
    ``duplicates`` counts files holding an instance already seen (the same image copied twice).
    """

    folder: Path
    series: List[DicomSeries]
    non_dicom: int = 0
    unreadable: List[Tuple[Path, str]] = dataclasses.field(default_factory=list)
    duplicates: int = 0


# --------------------------------------------------------------------------- header values


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _sop_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name if uid else ""
    return name if name and name != uid else (uid or "no SOP class")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value).strip()
    return str(value).strip()


def _words(value: Any) -> Tuple[str, ...]:
    """A multi-valued code string (``SE\\IR``) as upper-case words."""
    return tuple(word.strip().upper() for word in _text(value).split("\\") if word.strip())


def _number(value: Any) -> Optional[float]:
    """The first number of a (multi-)value; ``None`` when empty, malformed or not finite."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _integer(value: Any) -> Optional[int]:
    number = _number(value)
    return int(number) if number is not None else None


def _contrast_agent(dataset: Any) -> str:
    """The agent named by ContrastBolusAgent or the Enhanced ContrastBolusAgentSequence; '' for none."""
    if _text(group_value(dataset, "ContrastBolusAgentAdministered")).upper() == "NO":
        return ""
    agent = _text(dataset.get("ContrastBolusAgent"))
    if agent.upper() in _NO_AGENT:
        agent = ""
    codes = dataset.get("ContrastBolusAgentSequence")
    if not agent and codes:
        agent = _text(codes[0].get("CodeMeaning")) or "stated in ContrastBolusAgentSequence"
    return agent


def acquisition_tags(dataset: Any) -> AcquisitionTags:
    """The recognition tags of a classic or Enhanced MR header."""
    scanning = _words(group_value(dataset, "ScanningSequence"))
    if not scanning:
        words = list(_ECHO_PULSE.get(_text(group_value(dataset, "EchoPulseSequence")).upper(), ()))
        if _text(group_value(dataset, "InversionRecovery")).upper() == "YES":
            words.append("IR")
        if _text(group_value(dataset, "EchoPlanarPulseSequence")).upper() == "YES":
            words.append("EP")
        scanning = tuple(words)
    echo = _number(group_value(dataset, "EchoTime"))
    inversion = _number(group_value(dataset, "InversionTime"))
    return AcquisitionTags(
        scanning_sequence=scanning,
        sequence_variant=_words(group_value(dataset, "SequenceVariant")),
        sequence_name=_text(group_value(dataset, "SequenceName") or group_value(dataset, "PulseSequenceName")),
        acquisition_type=_text(group_value(dataset, "MRAcquisitionType")).upper(),
        repetition_time=_number(group_value(dataset, "RepetitionTime")),
        echo_time=echo if echo is not None else _number(group_value(dataset, "EffectiveEchoTime")),
        inversion_time=inversion if inversion is not None else _number(group_value(dataset, "InversionTimes")),
        flip_angle=_number(group_value(dataset, "FlipAngle")),
        contrast_agent=_contrast_agent(dataset),
        diffusion_b_value=_number(group_value(dataset, "DiffusionBValue")),
    )


def _vector(value: Any, count: int) -> Optional[Tuple[float, ...]]:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return numbers if len(numbers) == count and np.all(np.isfinite(numbers)) else None


# --------------------------------------------------------------------------- scanning


def _read_header(path: Path) -> Any:
    """The file's header without pixel data; ``None`` when it is not DICOM.

    A file without the 128-byte preamble and ``DICM`` is read only when it starts with a group
    0x0008 tag (raw DICOM as old exports write it); anything else is not DICOM.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pydicom.dcmread(str(path), stop_before_pixels=True)
    except InvalidDicomError:
        with open(path, "rb") as stream:
            start = stream.read(4)
        if start[:2] != b"\x08\x00":
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return pydicom.dcmread(str(path), stop_before_pixels=True, force=True)
        except Exception:  # binary data that merely starts like a tag: not DICOM after all
            return None


def _distinct(orientations: List[Optional[Tuple[float, ...]]]) -> int:
    """How many different image planes the orientations describe (within :data:`ORIENTATION_TOLERANCE`)."""
    kept: List[np.ndarray] = []
    for orientation in orientations:
        if orientation is None:
            continue
        vector = np.asarray(orientation)
        if not any(np.max(np.abs(vector - other)) <= ORIENTATION_TOLERANCE for other in kept):
            kept.append(vector)
    return max(1, len(kept))


def _regular_files(folder: Path) -> List[Path]:
    """Every regular file under ``folder`` (links to files followed, folder links not), sorted."""
    found = []
    for root, folders, names in os.walk(folder):
        folders.sort()
        for name in sorted(names):
            path = Path(root) / name
            try:
                if stat.S_ISREG(os.stat(path).st_mode):
                    found.append(path)
            except OSError:
                continue
    return found


def _slice_header(path: Path, dataset: Any) -> SliceHeader:
    return SliceHeader(
        path=path,
        position=_vector(dataset.get("ImagePositionPatient"), 3),  # type: ignore[arg-type]
        orientation=_vector(dataset.get("ImageOrientationPatient"), 6),
        instance=_integer(dataset.get("InstanceNumber")),
        matrix=(int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)),
    )


def _sorted_slices(slices: List[SliceHeader]) -> List[SliceHeader]:
    """Along the slice normal of the first oriented slice; then InstanceNumber; then file name."""
    normal = next((np.cross(s.orientation[:3], s.orientation[3:]) for s in slices if s.orientation), None)

    def key(item: SliceHeader):
        depth = float(np.dot(item.position, normal)) if item.position and normal is not None else 0.0
        return (depth, item.instance if item.instance is not None else 0, str(item.path))

    return sorted(slices, key=key)


def _new_series(folder: Path, dataset: Any) -> DicomSeries:
    """A series described by its first file's header (files and counts are filled in afterwards)."""
    meta = getattr(dataset, "file_meta", None)
    sop_class = str(dataset.get("SOPClassUID") or getattr(meta, "MediaStorageSOPClassUID", "") or "")
    return DicomSeries(
        uid=str(dataset.SeriesInstanceUID),
        number=_integer(dataset.get("SeriesNumber")),
        description=_one_line(_text(dataset.get("SeriesDescription"))),
        protocol=_one_line(_text(dataset.get("ProtocolName"))),
        modality=_text(dataset.get("Modality")).upper(),
        sop_class=sop_class,
        image_type=_words(dataset.get("ImageType")),
        files=(),
        frames=0,
        is_multiframe=sop_class in MULTIFRAME_MR_STORAGE or frame_count(dataset) > 1,
        tags=acquisition_tags(dataset),
        orientations=1,
        folder=folder,
    )


def scan_study(folder: str | Path) -> DicomStudy:
    """Find every DICOM series under ``folder`` from headers only (pixel data is never read here)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StudyError(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    if importlib.util.find_spec("pydicom") is None:  # imported where used; checked here for a one-line message
        raise StudyError(f"{folder}: reading a DICOM study needs the pydicom package (pip install pydicom)")
    return scan_files(_regular_files(folder), folder)


def scan_files(paths: Iterable[Path], folder: Path) -> DicomStudy:
    """The series of an explicit list of files (for example a Slicer volume's instances, found through the
    DICOM database), described exactly as :func:`scan_study` describes a folder's."""
    study = DicomStudy(folder=folder, series=[])
    found: Dict[str, DicomSeries] = {}
    slices: Dict[str, List[SliceHeader]] = {}
    orientations: Dict[str, List[Optional[Tuple[float, ...]]]] = {}
    instances: set = set()
    for path in paths:
        try:
            with warnings.catch_warnings():  # pydicom converts values lazily and warns about odd ones
                warnings.simplefilter("ignore")
                dataset = _read_header(path)
                uid = _text(dataset.get("SeriesInstanceUID")) if dataset is not None else ""
                if not uid:
                    study.non_dicom += 1
                    continue
                instance = _text(dataset.get("SOPInstanceUID"))
                if instance and instance in instances:
                    study.duplicates += 1
                    continue
                header = _slice_header(path, dataset)
                series = found.get(uid) or _new_series(folder, dataset)
                planes = (frame_orientations(dataset) if "PerFrameFunctionalGroupsSequence" in dataset
                          or "SharedFunctionalGroupsSequence" in dataset else [header.orientation])
                frames = frame_count(dataset)
        except Exception as error:  # a DICOM file with a broken header: pydicom raises many kinds
            study.unreadable.append((path, _one_line(error) or type(error).__name__))
            continue
        instances.add(instance)
        found[uid] = series
        series.frames += frames
        series.is_multiframe = series.is_multiframe or frames > 1
        slices.setdefault(uid, []).append(header)
        orientations.setdefault(uid, []).extend(planes)
    for uid, series in found.items():
        by_name = sorted(slices[uid], key=lambda s: str(s.path))
        ordered = by_name if series.is_multiframe else _sorted_slices(slices[uid])
        series.slices = tuple(ordered)
        series.files = tuple(s.path for s in ordered)
        series.orientations = _distinct(orientations[uid])
    study.series = sorted(found.values(), key=lambda s: (s.number is None, s.number or 0, s.uid))
    return study


# --------------------------------------------------------------------------- reading


def series_name(series: DicomSeries) -> str:
    """How errors name a series: ``<study folder>: series #3 'AX T2' (24 images)``."""
    return f"{series.folder}: series {series.label()}"


def read_series(series: DicomSeries) -> sitk.Image:
    """Read one MR series as a 3D image: classic files with ITK, an Enhanced MR file from its frames.

    Refuses (one line naming the series) a series that is not an MR image, mixes orientations or
    matrix sizes, has slices without a position, or has missing or unevenly spaced slices. The
    image carries the series' SeriesDescription and ImageType as metadata (``0008|103e``,
    ``0008|0008``), like a series read by :func:`core.io.read_image`, so a SYNTHETIC mark travels.
    """
    name = series_name(series)
    if not series.is_mr_image:
        raise StudyError(f"{name}: not an MR image series ({series.kind}); cannot be read as a volume")
    if series.is_multiframe:
        if len(series.files) != 1:
            raise StudyError(f"{name}: {len(series.files)} multi-frame files in one series (several stacks?); "
                             "give one file's series with --input")
        return read_enhanced(series.files[0], name)
    return _read_classic(series, name)


def _read_classic(series: DicomSeries, name: str) -> sitk.Image:
    """Single-frame files in the scan's order (along the normal), read by SimpleITK's series reader."""
    if series.orientations > 1:
        raise StudyError(f"{name}: its images lie in {series.orientations} orientations; not one volume")
    missing = [s.path.name for s in series.slices if s.position is None or s.orientation is None]
    if missing:
        raise StudyError(f"{name}: {len(missing)} image(s) state no ImagePositionPatient/ImageOrientationPatient "
                         f"(first: {missing[0]}); the series has no geometry")
    matrices = sorted({s.matrix for s in series.slices})
    if len(matrices) > 1:
        shown = ", ".join(f"{rows}x{columns}" for rows, columns in matrices)
        raise StudyError(f"{name}: images of different sizes ({shown}); not one volume")
    rows, columns = matrices[0]
    check_size(name, (columns, rows, len(series.files)))
    files = [str(path) for path in series.files]
    if len(files) > 2:
        # core's check takes a file list, so classic series get exactly the folder reader's gap rule.
        check_slice_spacing(name, files)  # type: ignore[arg-type]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise StudyError(f"{name}: unreadable DICOM series ({_one_line(error).split('ITK ERROR:')[-1].strip()})"
                         ) from None
    for key in SERIES_TAGS_KEPT:
        if reader.HasMetaDataKey(0, key):
            image.SetMetaData(key, reader.GetMetaData(0, key))
    return image
