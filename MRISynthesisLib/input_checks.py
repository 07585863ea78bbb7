"""Checks on an input before its voxels are read, and on its voxels before a model sees them.

A broken or hostile input must fail here with one line that names it, and before it can do
harm: a 400-byte NIfTI header may declare 10^10 voxels (the reader would allocate them
first), a FIFO given as a file hangs the reader, a header without a voxel size is read as
1 mm, a z-scored volume loses every negative voxel to the model's [0, 1] scaling, and a
synthetic volume of this tool fed back as "acquired" makes a synthesis of a synthesis.

Only the raw header is trusted here: nibabel's loader "fixes" a zero voxel size to 1 mm and
ITK substitutes an identity direction, so NIfTI headers are parsed without those repairs.
"""
from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path
from typing import Hashable, Mapping, Optional, Tuple

import numpy as np
import SimpleITK as sitk

__all__ = [
    "InputError", "MAX_INPUT_VOXELS", "MAX_AXIS_VOXELS", "NEGATIVE_FRACTION_LIMIT",
    "check_input_path", "check_header", "check_size", "check_geometry", "check_voxel_values", "check_acquired",
    "is_synthetic", "find_duplicate", "declared_nifti_bytes", "stream_length",
]

#: Largest input accepted, in voxels: 2^28 (1 GiB as float32). A 0.5 mm whole-head 3D scan
#: (512 x 512 x 400 = 105 M voxels) fits 2.5 times; a BraTS volume (8.9 M) 30 times.
MAX_INPUT_VOXELS = 2 ** 28
#: Largest size along one axis; clinical matrices stop at 1024, microscopy-like data is not MR of a head.
MAX_AXIS_VOXELS = 4096
#: Voxel sizes outside this range (mm) are header errors, not scans: 1 micrometre to 10 cm.
SPACING_RANGE_MM = (1e-3, 100.0)
#: Direction cosines must be orthonormal within this tolerance (ITK's own test is 1e-4 after normalising).
ORTHONORMAL_TOLERANCE = 1e-3
#: Share of non-zero voxels that may be negative. MR magnitudes are >= 0; interpolation ringing
#: leaves well under 0.1 %; a z-scored brain has about half of them negative.
NEGATIVE_FRACTION_LIMIT = 0.01
#: Header description this tool writes into every synthetic volume (see ``outputs.description_for``).
SYNTHETIC_MARK = "SYNTHETIC"

_NIFTI_ENDINGS = (".nii", ".nii.gz")
_READ_CHUNK_BYTES = 1 << 20


class InputError(ValueError):
    """Bad input: the message is one line that names the file or image and the problem."""


# --------------------------------------------------------------------------- the file itself


def check_input_path(path: Path) -> None:
    """Refuse what is not a regular file or a folder before anything opens it.

    A FIFO or a device would block ``open`` or never end; a broken link and an empty file
    get their own message instead of a reader's.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        broken = os.path.islink(path)
        raise InputError(f"{path}: {'broken link' if broken else 'no such file or folder'}") from None
    except OSError as error:
        raise InputError(f"{path}: cannot be opened ({error.strerror})") from None
    if stat.S_ISDIR(mode):
        return
    if not stat.S_ISREG(mode):
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        raise InputError(f"{path}: is {kind}, not an image file")
    if os.path.getsize(path) == 0:
        raise InputError(f"{path}: empty file (0 bytes)")


# --------------------------------------------------------------------------- headers


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(_NIFTI_ENDINGS)


def _open_raw(path: Path):
    """The file as a byte stream, decompressed for ``.gz`` (without reading it all)."""
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _raw_nifti_header(path: Path):
    """The NIfTI-1 or -2 header exactly as stored (nibabel's loader would repair a zero voxel size)."""
    import nibabel as nib

    try:
        with _open_raw(path) as stream:
            block = stream.read(540)
    except (OSError, EOFError) as error:
        raise InputError(f"{path}: unreadable or corrupt image file ({' '.join(str(error).split())})") from None
    sizes = {int.from_bytes(block[:4], "little"), int.from_bytes(block[:4], "big")} if len(block) >= 4 else set()
    if not sizes & {348, 540}:
        raise InputError(f"{path}: unreadable or corrupt image file (no NIfTI header: sizeof_hdr is not 348 or 540)")
    header_class = nib.Nifti2Header if 540 in sizes else nib.Nifti1Header
    size = header_class.sizeof_hdr
    if len(block) < size:
        raise InputError(f"{path}: truncated image file ({len(block)} bytes, shorter than a NIfTI header)")
    try:  # the header block only: extensions are not needed to know sizes and geometry
        return header_class(block[:size], check=False)
    except Exception as error:  # nibabel raises several kinds for a broken header block
        raise InputError(f"{path}: unreadable or corrupt image file (not a valid NIfTI header: "
                         f"{' '.join(str(error).split())})") from None


def declared_nifti_bytes(header) -> int:
    """Bytes of header and voxels a NIfTI header says its file holds."""
    shape = header.get_data_shape()
    return int(header.get_data_offset()) + int(np.prod(shape, dtype=np.int64)) * header.get_data_dtype().itemsize


def stream_length(path: Path, limit: int) -> int:
    """Length of the (decompressed) file, counted in chunks and stopped at ``limit``: constant memory."""
    if not path.name.lower().endswith(".gz"):
        return min(os.path.getsize(path), limit)
    total = 0
    try:
        with _open_raw(path) as stream:
            while total < limit:
                chunk = stream.read(min(_READ_CHUNK_BYTES, limit - total))
                if not chunk:
                    break
                total += len(chunk)
    except EOFError:
        pass  # a cut-off stream: what was counted is what there is
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: unreadable or corrupt image file ({' '.join(str(error).split())})") from None
    return total


def _check_nifti_header(path: Path) -> None:
    """Sizes, voxel size, orientation and file length from the raw NIfTI header."""
    header = _raw_nifti_header(path)
    dims = [int(d) for d in header["dim"]]
    if not 1 <= dims[0] <= 7:
        raise InputError(f"{path}: corrupt NIfTI header (invalid number of dimensions, {dims[0]})")
    shape = tuple(dims[1:1 + dims[0]])
    check_size(path, shape)
    zooms = [float(z) for z in header["pixdim"][1:4]]
    for axis, zoom in enumerate(zooms[:min(3, dims[0])]):
        if not np.isfinite(zoom) or zoom <= 0:
            raise InputError(f"{path}: voxel size along axis {axis + 1} is {zoom:g} in the header (pixdim); "
                             "the file does not state its geometry")
    if int(header["sform_code"]) > 0:
        _check_axes(path, np.asarray(header.get_sform(), dtype=float)[:3, :3], "sform")
    expected = declared_nifti_bytes(header)
    found = stream_length(path, expected)
    if found < expected:
        raise InputError(f"{path}: truncated image file ({found} of {expected} bytes of header and voxels)")


def check_size(path, shape: Tuple[int, ...]) -> None:
    """Refuse sizes that are not positive or that exceed the memory limits, before any allocation."""
    text = "x".join(str(s) for s in shape)
    if any(s < 1 for s in shape):
        raise InputError(f"{path}: invalid size {text} in the header")
    if any(s > MAX_AXIS_VOXELS for s in shape):
        raise InputError(f"{path}: size {text} in the header exceeds {MAX_AXIS_VOXELS} voxels along an axis")
    count = int(np.prod(shape, dtype=np.int64))
    if count > MAX_INPUT_VOXELS:
        raise InputError(f"{path}: size {text} ({count:.3g} voxels) in the header exceeds the limit of "
                         f"{MAX_INPUT_VOXELS:.3g} voxels")


def _check_axes(path, axes: np.ndarray, where: str) -> None:
    """The three voxel axes (columns, with their lengths) must be non-zero and perpendicular."""
    lengths = np.linalg.norm(axes, axis=0)
    for axis, length in enumerate(lengths):
        if not np.isfinite(length) or length <= 0:
            raise InputError(f"{path}: {where} axis {axis + 1} has zero length (no voxel size)")
    unit = axes / lengths
    for first in range(3):
        for second in range(first + 1, 3):
            cosine = abs(float(unit[:, first] @ unit[:, second]))
            if cosine > 1 - ORTHONORMAL_TOLERANCE:
                raise InputError(f"{path}: degenerate orientation: {where} axes {first + 1} and {second + 1} "
                                 "are parallel")
            if cosine > ORTHONORMAL_TOLERANCE:
                angle = float(np.degrees(np.arccos(min(1.0, cosine))))
                raise InputError(f"{path}: sheared orientation: {where} axes {first + 1} and {second + 1} are at "
                                 f"{angle:.1f} degrees, not 90")


def _header_information(path: Path) -> sitk.ImageFileReader:
    """ITK's header reader (reads no voxels); its errors become one line naming the file."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        detail = " ".join(str(error).split())
        if "orthonormal" in detail:
            raise InputError(f"{path}: degenerate orientation in the header (direction cosines are not "
                             "orthonormal)") from None
        reason = "format not recognised" if ("ImageIO" in detail or "IO object" in detail) else "corrupt header"
        raise InputError(f"{path}: unreadable or corrupt image file ({reason})") from None
    return reader


def check_header(path: Path) -> None:
    """Check a single-file image's header (size, voxel size, orientation, length) without its voxels."""
    if _is_nifti(path):
        _check_nifti_header(path)
    reader = _header_information(path)
    check_size(path, tuple(reader.GetSize()))
    check_geometry(path, reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())


def check_geometry(name, spacing, origin, direction) -> None:
    """Voxel size in range, finite origin, orthonormal direction: what a resampler needs."""
    low, high = SPACING_RANGE_MM
    for axis, value in enumerate(spacing):
        if not np.isfinite(value) or not low <= value <= high:
            raise InputError(f"{name}: voxel size {value:g} mm along axis {axis + 1} is outside "
                             f"[{low:g}, {high:g}] mm")
    if not np.all(np.isfinite(origin)):
        raise InputError(f"{name}: origin is not finite")
    dimension = len(spacing)
    matrix = np.asarray(direction, dtype=float).reshape(dimension, dimension)
    if dimension == 3:
        _check_axes(name, matrix, "direction")


# --------------------------------------------------------------------------- voxels


def check_voxel_values(array: np.ndarray, name: str) -> None:
    """MR magnitudes: some positive voxel, and (nearly) no negative ones.

    The model scales each volume from 0 to its brain's 99.5th percentile; a z-scored or
    otherwise signed volume would lose every negative voxel to black, so it is refused.
    """
    positive = int(np.count_nonzero(array > 0))
    negative = int(np.count_nonzero(array < 0))
    if positive == 0:
        raise InputError(f"{name}: no positive voxel (MR magnitude images are non-negative; is it z-scored "
                         "or inverted?)")
    if negative > NEGATIVE_FRACTION_LIMIT * (positive + negative):
        share = 100.0 * negative / (positive + negative)
        raise InputError(f"{name}: {share:.0f}% of its non-zero voxels are negative (minimum "
                         f"{float(array.min()):.3g}); it looks z-scored or otherwise normalised: give the "
                         "scanner's magnitude image, the model normalises it itself")


def is_synthetic(image: sitk.Image) -> bool:
    """True when the image's header description says it is a synthetic volume of this tool."""
    for key in ("descrip", "ITK_FileNotes"):
        if image.HasMetaDataKey(key) and image.GetMetaData(key).strip().upper().startswith(SYNTHETIC_MARK):
            return True
    return False


def check_acquired(image: sitk.Image, name: str) -> None:
    """Refuse a synthetic volume of this tool given as an acquired input (a synthesis of a synthesis)."""
    if is_synthetic(image):
        description = image.GetMetaData("descrip").strip() if image.HasMetaDataKey("descrip") else SYNTHETIC_MARK
        raise InputError(f"{name}: is a synthetic volume ('{description}'), not an acquired scan; "
                         "synthesis uses acquired inputs only")


def find_duplicate(images: Mapping[Hashable, sitk.Image]) -> Optional[Tuple[Hashable, Hashable]]:
    """The first two keys whose images hold identical voxels on the same grid, else None.

    The same scan given for two sequences would make the report claim inputs the case does
    not have.
    """
    keys = list(images)
    for index, first in enumerate(keys):
        for second in keys[index + 1:]:
            a, b = images[first], images[second]
            if a.GetSize() != b.GetSize() or a.GetSpacing() != b.GetSpacing():
                continue
            if np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b)):
                return first, second
    return None
