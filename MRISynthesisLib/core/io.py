"""Read and write images, check that inputs share one grid, and resample them onto one.

This is the only module that touches image files. Every reader returns SimpleITK images,
so geometry (spacing, origin, direction) travels with the voxels; every writer is atomic
(write to a temporary file in the target folder, then rename), so a crash or a full disk
never leaves a half-written result where a good one is expected.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
import SimpleITK as sitk

from .file_checks import (
    check_geometry,
    check_header,
    check_input_path,
    check_nifti_voxels_finite,
    check_size,
    check_slice_spacing,
)
from .input_checks import InputError, check_voxel_values
from ..sequences import (
    SEQUENCES,
    Sequence,
    by_sequence,
    explain_guess,
    guess_sequence,
    parse_sequence,
)

#: File name endings SimpleITK reads that we accept as single-file images.
IMAGE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

#: Geometry tolerances: spacing/origin in mm, direction cosines unitless.
SPACING_TOLERANCE_MM = 1e-3
ORIGIN_TOLERANCE_MM = 1e-2
DIRECTION_TOLERANCE = 1e-4

LABEL_NAMES: tuple[str, ...] = ("seg", "label", "labels", "mask")

#: DICOM tags copied from a series' first file onto the image: Series Description and Image Type.
SERIES_TAGS_KEPT: tuple[str, ...] = ("0008|103e", "0008|0008")


class WriteError(InputError):
    """An output file could not be written (e.g. a pixel type the format cannot store)."""


def _one_line(text: str) -> str:
    """Collapse whitespace so that library messages fit on one line."""
    return " ".join(str(text).split())


def _library_reason(error: BaseException) -> str:
    """The useful tail of a SimpleITK/ITK error message, on one line."""
    return re.split(r"sitk::ERROR:|ITK ERROR:", _one_line(error))[-1].strip()


def is_image_file(path: str | Path) -> bool:
    """True if the name ends with an image extension we read (case-insensitive)."""
    name = str(path).lower()
    return any(name.endswith(ext) for ext in IMAGE_EXTENSIONS)


def strip_image_extension(name: str) -> str:
    """``"a-t1n.nii.gz"`` -> ``"a-t1n"``."""
    lower = name.lower()
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext):
            return name[: -len(ext)]
    return name


# --------------------------------------------------------------------------- reading


def _read_dicom_series(folder: Path) -> sitk.Image:
    """Read the single DICOM series in ``folder``; refuse none or several."""
    reader = sitk.ImageSeriesReader()
    series_ids = reader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise InputError(f"{folder}: folder holds no image file and no DICOM series")
    if len(series_ids) > 1:
        raise InputError(
            f"{folder}: folder holds {len(series_ids)} DICOM series; give the one to use as its own folder"
        )
    files = reader.GetGDCMSeriesFileNames(str(folder), series_ids[0])
    _check_series_size(folder, files)
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    for key in SERIES_TAGS_KEPT:  # the series' own description travels with the image (SYNTHETIC marks)
        if reader.HasMetaDataKey(0, key):
            image.SetMetaData(key, reader.GetMetaData(0, key))
    return image


def _check_series_size(folder: Path, files: Iterable[str]) -> None:
    """The series' declared size (first slice's matrix x number of files) within the input limits."""
    files = list(files)
    reader = sitk.ImageFileReader()
    reader.SetFileName(files[0])
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise InputError(f"{files[0]}: unreadable DICOM file ({_library_reason(error)})") from error
    size = tuple(reader.GetSize())
    check_size(folder, (size[0], size[1], len(files) * (size[2] if len(size) > 2 else 1)))
    if len(files) > 2 and (len(size) < 3 or size[2] == 1):
        check_slice_spacing(folder, files)


def read_image(path: str | Path, check: bool = True) -> sitk.Image:
    """Read a 3D image (NIfTI, NRRD, MHA/MHD file or DICOM series folder) with SimpleITK.

    The file type and header are checked before any voxel is read (a FIFO, a header that
    declares billions of voxels or states no voxel size fail here). With ``check`` the image
    is validated by :func:`check_image` so that bad inputs fail here, with the file's name in
    the message, rather than deep inside a model.
    """
    path = Path(path)
    check_input_path(path)
    try:
        if path.is_dir():
            image = _read_dicom_series(path)
        else:
            check_header(path)
            image = sitk.ReadImage(str(path))
    except InputError:
        raise
    except RuntimeError as error:  # SimpleITK raises RuntimeError for unreadable files
        detail = _one_line(error).split("Exception thrown in SimpleITK")[0]
        reason = "unreadable or corrupt image file"
        if "Unable to determine ImageIO" in detail or "Could not create IO object" in detail:
            reason = "unreadable or corrupt image file (format not recognised)"
        raise InputError(f"{path}: {reason}") from error
    if check:
        if path.is_file() and path.name.lower().endswith((".nii", ".nii.gz")):
            check_nifti_voxels_finite(path)
        check_image(image, str(path))
    return image


def check_image(image: sitk.Image, name: str) -> None:
    """Refuse images the synthesis cannot use: not 3D scalar, impossible geometry, empty, constant,
    NaN or Inf voxels, negative (z-scored) intensities."""
    dimension = image.GetDimension()
    size = "x".join(str(s) for s in image.GetSize())
    if dimension != 3:
        raise InputError(f"{name}: not a 3D image ({dimension}D, size {size})")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{name}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; expected a scalar volume"
        )
    if min(image.GetSize()) < 2:
        raise InputError(f"{name}: not a 3D image (size {size} has a single slice along one axis)")
    check_geometry(name, image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    array = sitk.GetArrayViewFromImage(image)
    if np.iscomplexobj(array):
        raise InputError(f"{name}: complex voxels; expected a real scalar volume (a magnitude image)")
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            bad = int(array.size - np.count_nonzero(finite))
            raise InputError(f"{name}: contains {bad} NaN or Inf voxels")
    lowest, highest = float(array.min()), float(array.max())
    if lowest == highest:
        if lowest == 0.0:
            raise InputError(f"{name}: empty volume (every voxel is 0)")
        raise InputError(f"{name}: constant volume (every voxel is {lowest:g})")
    check_voxel_values(array, name)


# --------------------------------------------------------------------------- BraTS case folders


@dataclasses.dataclass
class CaseFiles:
    """The files of one case folder: one per sequence, and the label map if present."""

    case_id: str
    folder: Path
    sequences: dict[Sequence, Path]
    label: Path | None = None

    def incomplete_reason(self, purpose: str) -> str | None:
        """Why the case cannot serve ``purpose`` (training, evaluation: all four sequences and a label map)."""
        missing = [s.display_name for s in SEQUENCES if s not in self.sequences]
        if missing:
            return f"{self.folder}: {purpose} needs all four sequences; missing {', '.join(missing)}"
        if self.label is None:
            return f"{self.folder}: no label map (*-seg file); {purpose} needs one"
        return None


def _case_entries(folder: Path) -> list[Path]:
    """Image files and DICOM sub-folders of a case folder, sorted by name."""
    entries = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and is_image_file(entry):
            entries.append(entry)
        elif entry.is_dir():
            entries.append(entry)
    return entries


def _is_label_name(stem: str) -> bool:
    """True for ``...-seg``, ``..._seg``, ``label`` and friends."""
    tokens = re.split(r"[\s_\-.]+", stem.lower())
    return bool(tokens) and tokens[-1] in LABEL_NAMES


def find_case_files(folder: str | Path) -> CaseFiles:
    """Map the files of a BraTS-style case folder to sequences (2023+ and 2021 naming).

    Raises :class:`InputError` for an image whose name names no sequence, for two files of
    one sequence, and for a folder with no image at all.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    found: dict[Sequence, Path] = {}
    label: Path | None = None
    for entry in _case_entries(folder):
        stem = strip_image_extension(entry.name)
        if _is_label_name(stem):
            if label is not None:
                raise InputError(f"{entry}: second label map in the case folder (first: {label.name})")
            label = entry
            continue
        sequence = guess_sequence(stem)
        if sequence is None:
            if entry.is_dir():
                continue  # unrelated sub-folder (e.g. outputs): not an input
            raise InputError(f"{entry}: unknown sequence name ({explain_guess(stem)})")
        if sequence in found:
            raise InputError(
                f"{entry}: two files for {sequence.display_name} ({found[sequence].name} and {entry.name})"
            )
        found[sequence] = entry
    if not found:
        raise InputError(f"{folder}: no T1, T1c, T2 or FLAIR image in the folder")
    return CaseFiles(case_id=_case_id(folder, found), folder=folder, sequences=found, label=label)


def _case_id(folder: Path, files: Mapping[Sequence, Path]) -> str:
    """The case identifier: the file-name part before the BraTS suffix, else the folder name.

    ``BraTS-GLI-00000-000-t1n.nii.gz`` and ``BraTS2021_00000_t1ce.nii.gz`` give
    ``BraTS-GLI-00000-000`` and ``BraTS2021_00000``; the files must all agree.
    """
    prefixes = {_brats_prefix(path.name, sequence) for sequence, path in files.items()}
    if len(prefixes) == 1 and None not in prefixes:
        return prefixes.pop()
    return folder.name


def _brats_prefix(name: str, sequence: Sequence) -> str | None:
    """``"BraTS2021_00000_t1ce.nii.gz"`` -> ``"BraTS2021_00000"``; None without a BraTS suffix."""
    suffixes = {sequence.suffix, sequence.brats2021_suffix}
    match = re.fullmatch(r"(.+?)[-_]([A-Za-z0-9]+)", strip_image_extension(name))
    if match is None or match.group(2).lower() not in suffixes:
        return None
    return match.group(1)


def read_case(folder: str | Path) -> dict[Sequence, sitk.Image]:
    """Read every sequence of a BraTS case folder into ``{Sequence: image}`` (checked, not aligned)."""
    files = find_case_files(folder)
    return {seq: read_image(path) for seq, path in sorted(files.sequences.items(), key=_order)}


def read_case_label(folder: str | Path) -> sitk.Image | None:
    """Read the case folder's label map (``*-seg``), or ``None`` when the folder has none."""
    files = find_case_files(folder)
    if files.label is None:
        return None
    label = read_image(files.label, check=False)
    if label.GetDimension() != 3:
        raise InputError(f"{files.label}: label map is not 3D")
    return label


def sequence_paths(named: Iterable[tuple[str | Sequence, str | Path]],
                   known: Mapping[Sequence, Path] | None = None) -> dict[Sequence, Path]:
    """``{Sequence: Path}`` from (sequence name, path) pairs, e.g. the command line's ``SEQ=PATH``.

    ``known`` holds files found already (a case folder's); every sequence may come only once.
    """
    return by_sequence(
        ((name, Path(path)) for name, path in named), start=known,
        unknown=lambda name, path, error: InputError(f"{path}: {error}"),
        repeated=lambda sequence, name, path, earlier: InputError(
            f"{path}: two files for {sequence.display_name} (also {earlier})"))


def read_inputs(paths: Mapping[str | Sequence, str | Path]) -> dict[Sequence, sitk.Image]:
    """Read images given as ``{sequence name: path}`` (as on the command line)."""
    return {sequence: read_image(path) for sequence, path in sequence_paths(paths.items()).items()}


def _order(item: tuple[Sequence, object]) -> int:
    return SEQUENCES.index(item[0])


# --------------------------------------------------------------------------- geometry


def grid_differences(image: sitk.Image, reference: sitk.Image) -> list[str]:
    """What differs between two image grids beyond tolerance, as short phrases (empty = same grid)."""
    differences = []
    if image.GetSize() != reference.GetSize():
        differences.append(f"size {_fmt(image.GetSize())} vs {_fmt(reference.GetSize())}")
    if not np.allclose(image.GetSpacing(), reference.GetSpacing(), rtol=0, atol=SPACING_TOLERANCE_MM):
        differences.append(f"spacing {_fmt(image.GetSpacing())} vs {_fmt(reference.GetSpacing())}")
    if not np.allclose(image.GetOrigin(), reference.GetOrigin(), rtol=0, atol=ORIGIN_TOLERANCE_MM):
        differences.append(f"origin {_fmt(image.GetOrigin())} vs {_fmt(reference.GetOrigin())}")
    if not np.allclose(image.GetDirection(), reference.GetDirection(), rtol=0, atol=DIRECTION_TOLERANCE):
        differences.append("direction differs")
    return differences


def same_grid(image: sitk.Image, reference: sitk.Image) -> bool:
    """True when size, spacing, origin and direction agree within the tolerances."""
    return not grid_differences(image, reference)


def _fmt(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def resample_to(image: sitk.Image, reference: sitk.Image, interpolator: int = sitk.sitkLinear) -> sitk.Image:
    """Resample ``image`` onto ``reference``'s grid (identity transform, 0 outside), keeping its pixel type."""
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, 0.0, image.GetPixelID())


@dataclasses.dataclass
class AlignedInputs:
    """Inputs on one grid, and a line per input that had to be resampled."""

    images: dict[Sequence, sitk.Image]
    reference: Sequence
    resampled: list[str]


def align_inputs(
    images: Mapping[Sequence, sitk.Image], reference: Sequence | None = None
) -> AlignedInputs:
    """Put all inputs on the grid of ``reference`` (default: the first in canonical order).

    Inputs already on that grid are returned as they are (same object, untouched); others are
    resampled with linear interpolation and reported, because a radiologist must know when
    the synthesis saw an interpolated input.
    """
    if not images:
        raise InputError("no input images given")
    ordered = sorted(images.items(), key=_order)
    reference = ordered[0][0] if reference is None else parse_sequence(reference)
    if reference not in images:
        raise InputError(f"reference sequence {reference.display_name} is not among the inputs")
    target_grid = images[reference]
    aligned: dict[Sequence, sitk.Image] = {}
    messages: list[str] = []
    for sequence, image in ordered:
        differences = grid_differences(image, target_grid)
        if sequence == reference or not differences:
            aligned[sequence] = image
            continue
        aligned[sequence] = resample_to(image, target_grid)
        messages.append(
            f"{sequence.display_name} resampled onto the {reference.display_name} grid "
            f"(linear; {'; '.join(differences)})"
        )
    return AlignedInputs(images=aligned, reference=reference, resampled=messages)


# --------------------------------------------------------------------------- writing


@contextlib.contextmanager
def _staging_folder(path: Path) -> Iterator[Path]:
    """A hidden temporary folder beside ``path``, removed afterwards whatever happens.

    Files are written into it under their final names (so a ``.mhd`` header names its
    ``.raw`` correctly, and the files get the usual permissions) and then renamed into place.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, path: Path) -> None:
    """Rename every staged file into ``path``'s folder; the named file goes last.

    Data files of two-file formats (``.raw``, ``.zraw``) land before the header that points
    at them, so a reader never sees a header without its data.
    """
    for staged in sorted(staging.iterdir()):
        if staged.name != path.name:
            os.replace(staged, path.parent / staged.name)
    os.replace(staging / path.name, path)


def write_image(
    image: sitk.Image, path: str | Path, description: str | None = None, compress: bool = True
) -> Path:
    """Write ``image`` atomically (temporary folder beside the target, then rename).

    ``description`` goes into the NIfTI ``descrip`` field / NRRD header so the file itself
    says what it is (synthetic volumes say SYNTHETIC). The caller's image is not modified.
    Raises :class:`WriteError` when SimpleITK cannot write the image; the previous file,
    if any, is then left as it was.
    """
    path = Path(path)
    if not is_image_file(path):
        raise InputError(f"{path}: unsupported output extension (use one of {', '.join(IMAGE_EXTENSIONS)})")
    to_write = image
    if description is not None:
        to_write = sitk.Image(image)  # copy, so the caller's metadata stays as it was
        # ITK's NIfTI writer fills the 80-byte ``descrip`` field from ITK_FileNotes.
        header_text = _fit_description(description)
        to_write.SetMetaData("ITK_FileNotes", header_text)
        to_write.SetMetaData("descrip", header_text)
    with _staging_folder(path) as staging:
        try:
            sitk.WriteImage(to_write, str(staging / path.name), compress)
        except RuntimeError as error:
            raise WriteError(f"{path}: cannot write image ({_library_reason(error)})") from error
        _move_into_place(staging, path)
    return path


def _fit_description(description: str) -> str:
    """Cut ``description`` to the 79 bytes (UTF-8) of the NIfTI ``descrip`` field, on one line."""
    encoded = _one_line(description).encode("utf-8")[:79]
    return encoded.decode("utf-8", errors="ignore")  # drops a character cut in half


def write_text(text: str, path: str | Path) -> Path:
    """Write a text file (reports, tables) atomically."""
    path = Path(path)
    with _staging_folder(path) as staging:
        (staging / path.name).write_text(text, encoding="utf-8")
        _move_into_place(staging, path)
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to; it replaces ``path`` only on success.

    For writers that take a file name (``torch.save``, ``numpy.save``): a crash or an
    exception leaves the previous file, if any, untouched and no partial file behind.
    """
    path = Path(path)
    with _staging_folder(path) as staging:
        yield staging / path.name
        _move_into_place(staging, path)


def image_description(path: str | Path) -> str:
    """The description stored in an image file's header (NIfTI ``descrip``), or ''."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader.GetMetaData("descrip").strip() if reader.HasMetaDataKey("descrip") else ""
