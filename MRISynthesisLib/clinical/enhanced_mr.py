"""Enhanced (multi-frame) MR files: their tags in functional groups, their geometry and their voxels.

An Enhanced MR Image (and a Legacy Converted Enhanced MR Image) is one file holding every slice
as a frame. The tags a classic file carries at the top level live in functional groups instead:
once for all frames in the Shared Functional Groups Sequence, or per frame in the Per-frame
Functional Groups Sequence (plane position, often the orientation and rescale too). This module
reads them from where they are and builds the volume itself from the frames' positions.

Why not SimpleITK: tried on the files of Testing/test_dicom_study.py (SimpleITK 2.5.7, ITK 5.4), its
GDCM reader gets frames stored in order along the normal right (reverse order gives a mirrored,
left-handed direction); frames stored in any other order come back on 1 mm voxels at the first
stored frame's position, without a word, and nothing checks missing or uneven frames. Here the
frames are sorted along the slice normal and their gaps are checked like a classic series' slices;
the voxels come from pydicom's decoder.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from ..core.file_checks import SLICE_GAP_TOLERANCE, check_geometry, check_size
from ..core.input_checks import InputError

__all__ = ["group_value", "frame_count", "frame_orientations", "read_enhanced", "ORIENTATION_TOLERANCE"]

#: Two frames (or files) share an orientation when their direction cosines differ by less than this.
ORIENTATION_TOLERANCE = 1e-4


def _first_item(value: Any) -> Any:
    """The first item of a sequence value, or ``None`` for an empty one."""
    try:
        return value[0] if len(value) else None
    except TypeError:
        return None


def group_value(dataset: Any, keyword: str, frame: int = 0) -> Any:
    """The value of ``keyword``: at the top level, else in a functional group macro of ``frame``,
    else in the shared functional groups; ``None`` when the file has it nowhere.

    Per-frame groups come before shared ones because the standard lets a macro appear in one
    place only, and a per-frame value is the more specific one.
    """
    if keyword in dataset and dataset[keyword].value not in (None, ""):
        return dataset[keyword].value
    groups = []
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) > frame:
        groups.append(per_frame[frame])
    shared = _first_item(dataset.get("SharedFunctionalGroupsSequence") or [])
    if shared is not None:
        groups.append(shared)
    for group in groups:
        if keyword in group and group[keyword].value not in (None, ""):
            return group[keyword].value
        for element in group:
            if element.VR != "SQ":
                continue
            item = _first_item(element.value)
            if item is not None and keyword in item and item[keyword].value not in (None, ""):
                return item[keyword].value
    return None


def frame_count(dataset: Any) -> int:
    """NumberOfFrames, or 1 for a file that states none (a classic single-frame image)."""
    try:
        return max(1, int(dataset.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):
        return 1


def _numbers(value: Any, count: int, what: str, name: str) -> np.ndarray:
    """``count`` finite numbers from a DICOM multi-value, or a one-line error naming ``what``."""
    try:
        numbers = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        numbers = np.zeros(0)
    if numbers.size != count or not np.all(np.isfinite(numbers)):
        raise InputError(f"{name}: {what} is missing or malformed")
    return numbers


def _frame_geometry(dataset: Any, name: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame positions (n x 3), the common orientation (6) and the pixel spacing (row, column)."""
    frames = frame_count(dataset)
    positions = np.zeros((frames, 3))
    orientation = spacing = None
    for frame in range(frames):
        where = f"frame {frame + 1}"
        positions[frame] = _numbers(group_value(dataset, "ImagePositionPatient", frame), 3,
                                    f"ImagePositionPatient (PlanePositionSequence) of {where}", name)
        cosines = _numbers(group_value(dataset, "ImageOrientationPatient", frame), 6,
                           f"ImageOrientationPatient (PlaneOrientationSequence) of {where}", name)
        pixels = _numbers(group_value(dataset, "PixelSpacing", frame), 2,
                          f"PixelSpacing (PixelMeasuresSequence) of {where}", name)
        if orientation is None:
            orientation, spacing = cosines, pixels
        elif np.max(np.abs(cosines - orientation)) > ORIENTATION_TOLERANCE:
            raise InputError(f"{name}: frames lie in more than one orientation ({where} differs from frame 1); "
                             "not one volume")
        elif np.max(np.abs(pixels - spacing)) > 1e-6 * max(1.0, float(np.max(spacing))):
            raise InputError(f"{name}: frames have different pixel spacings ({where} differs from frame 1)")
    return positions, orientation, spacing


def _rescale(dataset: Any, frames: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per-frame rescale slope and intercept (Pixel Value Transformation), 1 and 0 when absent."""
    slopes, intercepts = np.ones(frames), np.zeros(frames)
    for frame in range(frames):
        slope = group_value(dataset, "RescaleSlope", frame)
        intercept = group_value(dataset, "RescaleIntercept", frame)
        slopes[frame] = 1.0 if slope is None else float(slope)
        intercepts[frame] = 0.0 if intercept is None else float(intercept)
    return slopes, intercepts


def _sorted_stack(positions: np.ndarray, normal: np.ndarray, name: str) -> Tuple[np.ndarray, float]:
    """Frame order along the slice normal and the slice spacing; refuse repeated, missing or uneven frames."""
    depth = positions @ normal
    order = np.argsort(depth, kind="stable")
    if len(order) < 2:
        return order, 1.0
    gaps = np.diff(depth[order])
    median = float(np.median(gaps))
    worst = int(np.argmax(np.abs(gaps - median)))
    if median <= 0 or abs(gaps[worst] - median) > SLICE_GAP_TOLERANCE * median:
        raise InputError(f"{name}: frames are repeated, missing or unevenly spaced (gap of {gaps[worst]:.3g} mm "
                         f"after frame {worst + 1} of {len(order)} along the slice normal, usually {median:.3g} mm; "
                         "several stacks, echoes or time points in one file?); the series has no single grid")
    spacing = float(depth[order[-1]] - depth[order[0]]) / (len(order) - 1)
    return order, spacing


def _pixels(dataset: Any, frames: int, name: str) -> np.ndarray:
    """The frames' stored values as (frames, rows, columns), decoded by pydicom."""
    if int(dataset.get("SamplesPerPixel") or 1) != 1:
        raise InputError(f"{name}: colour pixel data ({dataset.get('SamplesPerPixel')} samples per pixel); "
                         "expected a greyscale MR image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = np.asarray(dataset.pixel_array)
    except Exception as error:  # pydicom raises several kinds (missing decoder, short data, bad values)
        syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
        kind = f" ({syntax.name})" if syntax is not None else ""
        raise InputError(f"{name}: cannot decode the pixel data{kind}: {' '.join(str(error).split())}") from None
    if frames == 1 and array.ndim == 2:
        array = array[np.newaxis]
    if array.ndim != 3 or array.shape[0] != frames:
        raise InputError(f"{name}: pixel data holds shape {array.shape}, not {frames} frames")
    return array


def read_enhanced(path: Path, name: str) -> sitk.Image:
    """Read one Enhanced MR file as a 3D image sorted along the slice normal.

    Geometry: origin = position of the first frame along the normal, direction = (row cosines,
    column cosines, their cross product), spacing = (column spacing, row spacing, mean gap).
    Voxels keep their stored type unless a frame has a rescale, then they become float32
    ``stored * slope + intercept``. ``name`` starts every error (it names the series).
    """
    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(str(path))
    except Exception as error:  # corrupt files raise several kinds
        raise InputError(f"{name}: unreadable DICOM file {path.name} ({' '.join(str(error).split())})") from None
    frames = frame_count(dataset)
    rows, columns = int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)
    bits = int(dataset.get("BitsAllocated") or 16)
    check_size(name, (columns, rows, frames), max(1, bits // 8))
    positions, orientation, pixel_spacing = _frame_geometry(dataset, name)
    row_cosines, column_cosines = orientation[:3], orientation[3:]
    normal = np.cross(row_cosines, column_cosines)
    order, slice_spacing = _sorted_stack(positions, normal, name)
    array = _pixels(dataset, frames, name)[order]
    slopes, intercepts = _rescale(dataset, frames)
    if np.any(slopes != 1.0) or np.any(intercepts != 0.0):
        array = (array.astype(np.float32) * slopes[order, None, None].astype(np.float32)
                 + intercepts[order, None, None].astype(np.float32))
    if frames == 1:
        thickness = dataset.get("SpacingBetweenSlices") or group_value(dataset, "SliceThickness")
        slice_spacing = float(thickness) if thickness else 1.0
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetOrigin(tuple(float(v) for v in positions[order[0]]))
    image.SetSpacing((float(pixel_spacing[1]), float(pixel_spacing[0]), slice_spacing))
    image.SetDirection(tuple(float(v) for v in np.column_stack([row_cosines, column_cosines, normal]).ravel()))
    check_geometry(name, image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    for key, keyword in (("0008|103e", "SeriesDescription"), ("0008|0008", "ImageType")):
        value = dataset.get(keyword)
        if value:
            image.SetMetaData(key, value if isinstance(value, str) else "\\".join(str(v) for v in value))
    return image


def frame_orientations(dataset: Any) -> List[Optional[Tuple[float, ...]]]:
    """Each frame's ImageOrientationPatient, ``None`` where a frame states none."""
    found: List[Optional[Tuple[float, ...]]] = []
    for frame in range(frame_count(dataset)):
        value = group_value(dataset, "ImageOrientationPatient", frame)
        try:
            found.append(tuple(float(v) for v in value))
        except (TypeError, ValueError):
            found.append(None)
    return found
